"""``min_pv``: minimum current whenever plugged in, more from PV surplus."""

from __future__ import annotations

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, StrategyState
from cps_sim.control.strategies.surplus import follow_surplus


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    return follow_surplus(now_s, obs, state, cfg, always_on=True)
