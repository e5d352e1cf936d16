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


def plan_day(
    group: SiteGroup,
    spec: TripDaySpec,
    day_index: int,
    midnight_s: float,
    not_before_s: float,
    rng: RngStreams,
    stream: str,
    temp_at: Callable[[np.ndarray], np.ndarray] | None = None,
) -> int:
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
    group.schedule(
        np.concatenate([t_dep[i], t_arr[i]]),
        np.concatenate([i, i]),
        np.concatenate([np.full(m, DEPARTURE, np.int8), np.full(m, ARRIVAL, np.int8)]),
        np.concatenate([np.zeros(m), trip_wh]),
    )
    return m


def place_at_start(
    group: SiteGroup,
    trips: Callable[[float], TripDaySpec],
    midnights: list[tuple[int, float]],
    rng: RngStreams,
    stream: str,
    temp_at: Callable[[np.ndarray], np.ndarray] | None = None,
) -> int:
    """Put the vehicles where their trip schedule has them at the run start (t = 0).

    The trips of the local days that begin before the start (``midnights``: ``(day
    index, local midnight [s])``, oldest first, e.g. the day before and the start's own
    day when the start is not a midnight) are drawn from the same streams as
    :func:`plan_day` draws them, so the start day's plan agrees.  A vehicle whose trip
    left before the start and returns after it starts away (unplugged, its return
    scheduled with the trip's energy); every other vehicle starts at home.  Returns the
    number of vehicles away at the start.
    """
    evs = group.evs
    n = evs.n
    away = np.zeros(n, dtype=bool)
    t_back = np.full(n, -np.inf)
    trip_wh = np.zeros(n)
    for day_index, midnight_s in midnights:
        spec = trips(midnight_s)
        base = f"{stream}/day{day_index}"
        drives = rng.generator(f"{base}/drives").random(n) < spec.probability
        dep_h = sample(spec.departure_h, rng.generator(f"{base}/departure_h"), n)
        dur_h = sample(spec.duration_h, rng.generator(f"{base}/duration_h"), n)
        dist_km = sample(spec.distance_km, rng.generator(f"{base}/distance_km"), n)
        t_dep = np.round((midnight_s + dep_h * SECONDS_PER_HOUR) * 1000.0) / 1000.0
        t_arr = np.round((t_dep + dur_h * SECONDS_PER_HOUR) * 1000.0) / 1000.0
        # out at the start: left before it, back after it, and home when it left
        out = drives & (t_dep < 0.0) & (t_arr > 0.0) & (t_dep > t_back)
        if not out.any():
            continue
        wh = dist_km * evs.consumption_wh_per_km
        if temp_at is not None:
            from cps_sim.models.ev_physics import consumption_factor

            wh = wh * consumption_factor(temp_at(np.maximum(t_dep, 0.0)))
        away |= out
        t_back = np.where(out, t_arr, t_back)
        trip_wh = np.where(out, wh, trip_wh)
    i = np.flatnonzero(away)
    if i.size:
        evs.plugged[i] = False
        evs.changed()
        evs.away_until_s[i] = t_back[i]
        group.schedule(t_back[i], i, np.full(i.size, ARRIVAL, np.int8), trip_wh[i])
    return int(i.size)
