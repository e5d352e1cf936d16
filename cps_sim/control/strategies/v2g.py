"""``v2g``: vehicle-to-grid — discharge to the grid when the export price reaches
``cfg.v2g_price_jpy_per_kwh`` (full available power) or when the grid asks for
supply (``state.grid_request_w`` per site, e.g. from the VPP aggregator,
shared among the site's EVs by available power); same guarantees as ``v2h``
(floor, departure target); charging as ``cost``, and an EV the plan charges
now does not discharge."""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import (
    StrategyConfig,
    StrategyState,
    departure_and_target,
    share_by_weight,
)
from cps_sim.control.strategies.cost import charge_plan_w
from cps_sim.control.strategies.v2x import discharge_room_w


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    dep, target = departure_and_target(now_s, obs, state, cfg)
    charge = charge_plan_w(now_s, obs, state, cfg, dep, target)
    room = discharge_room_w(now_s, obs, cfg, dep, target)
    room = np.where(charge > 0, 0.0, room)  # the charging plan comes first
    price_hit = (obs.export_price_jpy_per_kwh >= cfg.v2g_price_jpy_per_kwh)[obs.ev_site]
    want = np.where(price_hit, room, 0.0)
    if state.grid_request_w is not None:
        req = np.maximum(np.asarray(state.grid_request_w, float), 0.0)
        want = np.maximum(want, share_by_weight(obs, req, room))
    dis = np.minimum(want, room)
    return np.where(dis > 0, -dis, charge), state
