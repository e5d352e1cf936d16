"""EV populations from charging sessions (``ev.sessions``): one vehicle per session.

Each vehicle starts away with a full pack (``soc_max``), arrives at its session's arrival
needing the session's energy from the charger (the pack is drawn down by that energy times
the charge efficiency) and leaves at its departure; it does not come back.  Its target at
departure is a full pack, so energy the session did not get is reported as unmet.  The
pack is at least large enough to take the session (``capacity >= energy x efficiency /
soc_max``); its charger power is the session's ``max_power_kw`` or the group's charger.
"""

from __future__ import annotations

import numpy as np

from cps_sim.core.rng import RngStreams
from cps_sim.data.ev_sessions import Sessions, station_sites
from cps_sim.scenario.distributions import sample
from cps_sim.scenario.sites_schema import EvSpec
from cps_sim.world.group import ARRIVAL, DEPARTURE
from cps_sim.world.populations import EvPopulation


def session_fleet(
    e: EvSpec, s: Sessions, n_sites: int, ev_id_offset: int, rng: RngStreams, base: str
) -> tuple[EvPopulation, tuple[np.ndarray, ...]]:
    """The vehicles of the sessions (sorted by site) and their events
    ``(times, vehicle index, kind, trip_wh)`` for ``SiteGroup.schedule``."""
    site = station_sites(s.station, n_sites)
    order = np.lexsort((s.arrival_s, site))  # populations are sorted by site
    site = site[order]
    arr, dep, need = s.arrival_s[order], s.departure_s[order], s.energy_wh[order]
    pmax = s.max_power_w[order]
    m = site.size
    eff = np.full(m, e.charge_efficiency)
    cap = sample(e.capacity_kwh, rng.generator(f"{base}/ev/capacity_kwh"), m) * 1000.0
    cap = np.maximum(cap, need * eff / e.soc_max)
    charger = sample(e.charger_kw, rng.generator(f"{base}/ev/charger_kw"), m) * 1000.0
    charger = np.where(np.isnan(pmax), charger, pmax)
    cons = sample(e.consumption_kwh_per_100km, rng.generator(f"{base}/ev/consumption"), m) * 10.0
    v2x = sample(e.v2x_kw, rng.generator(f"{base}/ev/v2x_kw"), m) * 1000.0
    full = cap * e.soc_max
    evs = EvPopulation(
        site=site.astype(np.int64),
        capacity_wh=cap,
        energy_wh=full.copy(),
        charger_w=charger,
        efficiency=eff,
        energy_max_wh=full,
        target_wh=full,
        consumption_wh_per_km=cons,
        plugged=np.zeros(m, dtype=bool),
        away_until_s=arr.copy(),
        ids=np.arange(ev_id_offset, ev_id_offset + m, dtype=np.int64),
        v2x_w=v2x,
        energy_min_wh=cap * e.v2x_soc_min,
        taper_soc=np.full(m, e.taper_soc if e.taper_soc is not None else 1.0),
        taper_line_w=charger.copy(),
    )
    evs.departure_s = dep.copy()  # known to controllers from the start (the user's input)
    idx = np.arange(m, dtype=np.int64)
    events = (
        np.concatenate([arr, dep]),
        np.concatenate([idx, idx]),
        np.concatenate([np.full(m, ARRIVAL, np.int8), np.full(m, DEPARTURE, np.int8)]),
        np.concatenate([need * eff, np.zeros(m)]),
    )
    return evs, events
