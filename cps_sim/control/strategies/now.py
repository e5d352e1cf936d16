"""``now``: uncontrolled charging, full charger power from arrival until full."""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, StrategyState, wants_energy


def setpoints_w(now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
                ) -> tuple[FloatArray, StrategyState]:
    return np.where(wants_energy(obs), obs.ev_charger_w, 0.0), state
