"""``cost``: cost-optimised — charge in the cheapest slots before departure.

For each plugged EV the planner takes its next departure and target
(``common.departure_and_target``: the world's departure, else the repeating
weekly plan; a known upcoming trip raises the target), lays the horizon
``[now, departure)`` out in price slots (``cfg.slot_s``, prices from
``cfg.price_forecast``), and fills the cheapest slots first (ties: earlier
first) up to the energy needed — the optimum of this linear problem.  The
setpoint is the power that delivers the current slot's share in what is left
of the slot (at least the minimum current).  Re-planned at every decision, so
a late arrival, a changed target or a missed slot is absorbed.  When the
target cannot be reached (not enough time) every slot is used, i.e. full
power until departure.  With no known departure the horizon is
``cfg.horizon_s``.
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import (
    StrategyConfig,
    StrategyState,
    departure_and_target,
    planning_rate_w,
    wants_energy,
)


def plan_charge_w(now_s: float, obs: Observation, cfg: StrategyConfig, departure_s: FloatArray,
                  target_wh: FloatArray) -> FloatArray:
    """Charging power now [W] per EV from the cheapest-slots plan."""
    n = obs.n_evs
    active = wants_energy(obs) & (target_wh > obs.ev_energy_wh + 1.0)
    if n == 0 or not active.any():
        return np.zeros(n)
    needed_grid_wh = np.where(active, (target_wh - obs.ev_energy_wh) / cfg.charge_efficiency,
                              0.0)
    end = np.minimum(departure_s, now_s + cfg.horizon_s)
    overdue = active & (end <= now_s)  # departure passed but still plugged: full power
    last = float(np.max(np.where(active & ~overdue, end, now_s)))
    t0 = np.floor(now_s / cfg.slot_s) * cfg.slot_s
    n_slots = max(1, int(np.ceil((last - t0) / cfg.slot_s - 1e-9)))
    starts = t0 + cfg.slot_s * np.arange(n_slots)
    if cfg.price_forecast is not None:
        prices = np.asarray(cfg.price_forecast(starts), float).reshape(n_slots)
    else:
        prices = np.full(n_slots, float(np.mean(obs.import_price_jpy_per_kwh)))
    order = np.argsort(prices, kind="stable")
    # hours available in each slot for each EV (n_evs x n_slots)
    lo = np.maximum(starts, now_s)[None, :]
    hi = np.minimum(starts + cfg.slot_s, end[:, None])
    avail_h = np.clip(hi - lo, 0.0, None) / 3600.0
    # slot capacity at the planning rate (import headroom, derating), so that a
    # plan that just fits is still met when the home load takes some of the limit
    cap_wh = np.where(active[:, None], planning_rate_w(obs, cfg)[:, None] * avail_h, 0.0)
    cap_sorted = cap_wh[:, order]
    before = np.cumsum(cap_sorted, axis=1) - cap_sorted
    alloc_sorted = np.clip(needed_grid_wh[:, None] - before, 0.0, cap_sorted)
    pos_now = int(np.flatnonzero(order == 0)[0])
    alloc_now = alloc_sorted[:, pos_now]
    h_now = avail_h[:, 0]
    p = np.divide(alloc_now, h_now, out=np.zeros(n), where=h_now > 0)
    # a slot planned full runs at full power (the derating is the planner's margin)
    p = np.where(p >= planning_rate_w(obs, cfg) - 1e-6, obs.ev_charger_w, p)
    p = np.where(p > 1e-6, np.maximum(p, cfg.min_1p_w), 0.0)
    p = np.where(overdue, obs.ev_charger_w, p)
    return np.where(active, np.minimum(p, obs.ev_charger_w), 0.0)


def setpoints_w(now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
                ) -> tuple[FloatArray, StrategyState]:
    dep, target = departure_and_target(now_s, obs, state, cfg)
    return plan_charge_w(now_s, obs, cfg, dep, target), state
