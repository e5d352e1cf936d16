"""Depot charging strategies after SpiceEV (``greedy``, ``balanced``, ``peak_shaving``).

All three charge a vehicle only up to what it needs at departure (its target), never
beyond, and share a site's import limit (the depot's grid connection) in order of
departure (earliest first).  SpiceEV's definitions (docs: charging strategies):

* ``greedy`` — "charges one vehicle after the next with full power until the desired
  SoC is reached"; under a connection limit the earliest departures get the power first;
* ``balanced`` — "each car is charged such that it uses its complete standing time to
  reach the desired SoC": the lowest constant power that fills it by its departure
  (SpiceEV finds it by a binary search; here it is the closed form need / time left);
* ``peak_shaving`` — the depot's charging is flattened as a whole: the lowest constant
  fleet power that still meets every departure when the vehicles are served earliest
  departure first, ``P = max_k  sum_{i: d_i <= d_k} E_i / (d_k - now)`` per site (the
  EDF feasibility bound), handed out earliest-departure first.  SpiceEV's peak-load
  strategies (PeakLoadWindow, FlexWindow) shift charging out of peak windows; this is the
  window-free form of the same aim: the lowest depot peak that keeps the schedule.

Energies are on the grid side (the charger's AC power): a vehicle that needs ``E`` Wh in
its pack draws ``E / efficiency``.  A vehicle whose departure is unknown charges at full
power (greedy).  Decisions are re-taken every interval, so the plans follow arrivals.
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, StrategyState, site_headroom_w


def _need_w(
    obs: Observation, cfg: StrategyConfig, now_s: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(grid-side energy still needed [Wh], seconds to departure, charger limit [W])."""
    eff = max(float(cfg.charge_efficiency), 1e-6)
    need = np.maximum(obs.ev_target_wh - obs.ev_energy_wh, 0.0) / eff
    need = np.where(obs.ev_plugged, need, 0.0)
    left = np.maximum(np.asarray(obs.ev_departure_s, float) - now_s, 1.0)
    return need, left, np.asarray(obs.ev_charger_w, float)


def _no_overshoot(p: FloatArray, need_wh: FloatArray, cfg: StrategyConfig) -> FloatArray:
    """Never more than fills the need within one decision interval."""
    return np.minimum(p, need_wh * 3600.0 / max(cfg.interval_s, 1.0))


def greedy(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    need, left, charger = _need_w(obs, cfg, now_s)
    want = _no_overshoot(np.where(need > 0, charger, 0.0), need, cfg)
    headroom = site_headroom_w(obs, cfg)
    if not np.isfinite(headroom).any():
        return want, state
    out = np.zeros_like(want)  # one vehicle after the next, earliest departure first
    for site in np.unique(obs.ev_site[want > 0]):
        budget = max(float(headroom[site]), 0.0)
        i = np.flatnonzero((obs.ev_site == site) & (want > 0))
        for j in i[np.argsort(left[i], kind="stable")]:
            out[j] = min(want[j], budget)
            budget -= out[j]
    return out, state


def balanced(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    need, left, charger = _need_w(obs, cfg, now_s)
    known = np.isfinite(np.asarray(obs.ev_departure_s, float))
    p = np.where(known, need * 3600.0 / left, charger)
    return np.minimum(_no_overshoot(p, need, cfg), charger), state


def fleet_power_w(need_wh: FloatArray, left_s: FloatArray) -> float:
    """Lowest constant power [W] that serves every need by its deadline, earliest first."""
    if need_wh.size == 0:
        return 0.0
    order = np.argsort(left_s, kind="stable")
    cum = np.cumsum(need_wh[order])
    return float(np.max(cum * 3600.0 / left_s[order]))


def peak_shaving(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    need, left, charger = _need_w(obs, cfg, now_s)
    known = np.isfinite(np.asarray(obs.ev_departure_s, float))
    out = np.where(~known & (need > 0), charger, 0.0)  # unknown departure: charge now
    cap = _no_overshoot(charger, need, cfg)
    # plan to be done two decision intervals early (decisions are discrete and a vehicle
    # that fills up mid-interval leaves its share unused until the next one)
    left = np.maximum(left - 2.0 * cfg.interval_s, cfg.interval_s)
    # a vehicle that needs its full charger power until departure gets it regardless
    urgent = need * 3600.0 >= charger * left
    for site in np.unique(obs.ev_site[(need > 0) & known]):
        i = np.flatnonzero((obs.ev_site == site) & (need > 0) & known)
        budget = max(fleet_power_w(need[i], left[i]), float(np.sum(cap[i][urgent[i]])))
        for j in i[np.lexsort((left[i], ~urgent[i]))]:  # urgent, then earliest departure
            give = min(cap[j], budget)
            out[j] = give
            budget -= give
            if budget <= 0:
                break
    return out, state
