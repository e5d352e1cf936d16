"""``pv``: solar-optimised — charge only from PV surplus, with on/off hysteresis
and 1p/3p switching timers (see ``surplus.py``)."""

from __future__ import annotations

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, StrategyState
from cps_sim.control.strategies.surplus import follow_surplus


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    return follow_surplus(now_s, obs, state, cfg, always_on=False)
