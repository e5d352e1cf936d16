"""Array-level helpers for control tests: build Observations and step EV energies.

``step_evs`` is deliberately simple physics (constant efficiency, clipped at 0
and capacity but NOT at the SoC floor) so that tests see what a strategy asks
for, not what an engine would have saved it from.
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import Observation


def make_obs(n_sites: int = 1, ev_site=(0,), **over) -> Observation:
    ev_site = np.asarray(ev_site, dtype=np.int64)
    n_evs = ev_site.size
    cap = np.full(n_evs, 40_000.0)
    base = dict(
        now_s=0.0,
        tick_s=900.0,
        site_load_w=np.full(n_sites, 500.0),
        site_pv_w=np.zeros(n_sites),
        site_import_limit_w=np.full(n_sites, np.inf),
        battery_energy_wh=np.zeros(n_sites),
        battery_capacity_wh=np.zeros(n_sites),
        battery_power_w=np.zeros(n_sites),
        ev_site=ev_site,
        ev_soc=np.full(n_evs, 0.5),
        ev_energy_wh=0.5 * cap,
        ev_capacity_wh=cap,
        ev_plugged=np.ones(n_evs, bool),
        ev_charger_w=np.full(n_evs, 6000.0),
        ev_v2x_w=np.zeros(n_evs),
        ev_soc_min=np.full(n_evs, 0.2),
        ev_target_wh=0.8 * cap,
        ev_departure_s=np.full(n_evs, np.inf),
        import_price_jpy_per_kwh=np.full(n_sites, 30.0),
        export_price_jpy_per_kwh=np.full(n_sites, 8.0),
        battery_spec=None,
    )
    for k, v in over.items():
        if k not in base:
            raise KeyError(k)
        plain = k in ("now_s", "battery_spec")
        base[k] = v if plain else np.asarray(v, dtype=np.asarray(base[k]).dtype)
    if "ev_energy_wh" in over and "ev_soc" not in over:
        base["ev_soc"] = base["ev_energy_wh"] / base["ev_capacity_wh"]
    return Observation(**base)


def with_(obs: Observation, **over) -> Observation:
    """A copy of ``obs`` with some fields replaced (soc kept consistent with energy)."""
    d = {k: getattr(obs, k) for k in obs.__dataclass_fields__}
    d.update(over)
    if "ev_energy_wh" in over:
        d["ev_soc"] = d["ev_energy_wh"] / d["ev_capacity_wh"]
    return Observation(**d)


def step_evs(energy_wh, setpoint_w, plugged, capacity_wh, dt_s, eff=0.9):
    """Energy after dt_s at setpoint (+charge at eff, -discharge at 1/eff); grid power."""
    sp = np.where(plugged, setpoint_w, 0.0)
    d_wh = np.where(sp > 0, sp * eff, sp / eff) * dt_s / 3600.0
    e = np.clip(energy_wh + d_wh, 0.0, capacity_wh)
    # grid-side power actually drawn (after clipping at full / empty)
    real = np.where(sp > 0, (e - energy_wh) / eff, (e - energy_wh) * eff) * 3600.0 / dt_s
    return e, real
