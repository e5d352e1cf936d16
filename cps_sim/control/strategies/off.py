"""``off``: the charger stays off."""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, StrategyState


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    return np.zeros(obs.n_evs), state
