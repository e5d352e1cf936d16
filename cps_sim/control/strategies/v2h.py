"""``v2h``: vehicle-to-home — discharge to cover the home's load in the evening
window (``cfg.v2h_hours``, local time), never exporting, never below the SoC
floor and keeping the departure target reachable; charging as ``cost``.

Home battery vs EV: with ``cfg.priority == "battery"`` the home battery covers
the first ``cfg.battery_reserve_w`` of the evening load while it holds energy
(SoC > ``battery_priority_soc``), the EV the rest; with ``"ev"`` the EV covers
the load first and the battery's built-in rule the remainder.
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import (
    StrategyConfig,
    StrategyState,
    departure_and_target,
    local_time,
    share_by_weight,
)
from cps_sim.control.strategies.cost import charge_plan_w
from cps_sim.control.strategies.v2x import discharge_room_w


def home_need_w(obs: Observation, cfg: StrategyConfig) -> FloatArray:
    """Per-site load not covered by PV (and, with battery priority, by the battery)."""
    need = np.maximum(obs.site_load_w - obs.site_pv_w, 0.0)
    if cfg.priority == "battery":
        cap = obs.battery_capacity_wh
        soc = np.divide(obs.battery_energy_wh, cap, out=np.zeros_like(cap), where=cap > 0)
        has = (cap > 0) & (soc > cfg.battery_priority_soc)
        need = need - np.where(has, np.minimum(need, cfg.battery_reserve_w), 0.0)
    return need


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    dep, target = departure_and_target(now_s, obs, state, cfg)
    charge = charge_plan_w(now_s, obs, state, cfg, dep, target)
    _, sod = local_time(cfg, now_s)
    h0, h1 = cfg.v2h_hours
    hour = sod / 3600.0
    in_window = (h0 <= hour < h1) if h0 <= h1 else (hour >= h0 or hour < h1)
    if not in_window:
        return charge, state
    room = discharge_room_w(now_s, obs, cfg, dep, target)
    room = np.where(charge > 0, 0.0, room)
    share = share_by_weight(obs, home_need_w(obs, cfg), room)
    dis = np.minimum(share, room)
    return np.where(dis > 0, -dis, charge), state
