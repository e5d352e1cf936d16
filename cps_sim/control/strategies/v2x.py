"""Shared guarantee of the bidirectional strategies (``v2h``, ``v2g``).

An EV may discharge only down to its *reserve* for the end of the longest
time a setpoint can be followed (``cfg.hold_time_s``, the ttl): the larger of its
SoC floor (+ margin) and the energy from which full-power charging still
reaches the departure target (``common.reserve_wh``).  Charging is planned by
the ``cost`` planner, which falls back to full power when only just enough
time is left, so the floor and the departure target both hold whenever they
were feasible when the EV arrived (up to the planning efficiency assumed in
``cfg.charge_efficiency``).
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, reserve_wh


def discharge_room_w(
    now_s: float,
    obs: Observation,
    cfg: StrategyConfig,
    departure_s: FloatArray,
    target_wh: FloatArray,
) -> FloatArray:
    """Largest discharge power [W, positive] each EV may hold for ``cfg.hold_time_s``."""
    res = reserve_wh(now_s + cfg.hold_time_s, obs, departure_s, target_wh, cfg)
    room_wh = np.maximum(obs.ev_energy_wh - res, 0.0)
    p = room_wh * cfg.discharge_efficiency * 3600.0 / cfg.hold_time_s
    ok = obs.ev_plugged & (obs.ev_v2x_w > 0) & (departure_s > now_s + cfg.hold_time_s)
    return np.where(ok, np.minimum(p, obs.ev_v2x_w), 0.0)
