"""Daily EV trip planning: one departure and one return per driving day, sampled per vehicle.

Each quantity is drawn from its own named stream per day
(``sites/<group>/ev/trips/day<d>/<quantity>``), so a vehicle's trips do not
change when vehicles are appended to the population.  Event times are
rounded to the millisecond.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cps_sim.core.rng import RngStreams
from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.scenario.distributions import sample
from cps_sim.scenario.schema import TripDaySpec
from cps_sim.world.group import ARRIVAL, DEPARTURE, SiteGroup


def plan_day(group: SiteGroup, spec: TripDaySpec, day_index: int, midnight_s: float,
             not_before_s: float, rng: RngStreams, stream: str,
             temp_at: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
    """Schedule the trips of local day ``day_index`` (starting at ``midnight_s``).

    A vehicle drives with probability ``spec.probability``; it leaves at the
    sampled local hour if it is home by then (a vehicle still away from an
    earlier trip skips the day) and not before ``not_before_s`` (the run
    start).  Returns the number of trips scheduled.
    """
    evs = group.evs
    n = evs.n
    base = f"{stream}/day{day_index}"
    drives = rng.generator(f"{base}/drives").random(n) < spec.probability
    dep_h = sample(spec.departure_h, rng.generator(f"{base}/departure_h"), n)
    dur_h = sample(spec.duration_h, rng.generator(f"{base}/duration_h"), n)
    dist_km = sample(spec.distance_km, rng.generator(f"{base}/distance_km"), n)
    t_dep = np.round((midnight_s + dep_h * SECONDS_PER_HOUR) * 1000.0) / 1000.0
    t_arr = np.round((t_dep + dur_h * SECONDS_PER_HOUR) * 1000.0) / 1000.0
    ok = drives & (t_dep >= not_before_s) & (t_dep > evs.away_until_s)
    i = np.flatnonzero(ok)
    if i.size == 0:
        return 0
    evs.away_until_s[i] = t_arr[i]
    evs.departure_s[i] = t_dep[i]  # a known upcoming trip, visible to controllers
    trip_wh = dist_km[i] * evs.consumption_wh_per_km[i]
    if temp_at is not None:  # colder or hotter air costs range (heating, cooling)
        from cps_sim.models.ev_physics import consumption_factor

        trip_wh = trip_wh * consumption_factor(temp_at(t_dep[i]))
    m = i.size
    group.schedule(np.concatenate([t_dep[i], t_arr[i]]), np.concatenate([i, i]),
                   np.concatenate([np.full(m, DEPARTURE, np.int8), np.full(m, ARRIVAL, np.int8)]),
                   np.concatenate([np.zeros(m), trip_wh]))
    return m
