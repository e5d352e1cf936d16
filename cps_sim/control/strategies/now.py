"""``now``: uncontrolled charging, full charger power from arrival until full.

It knows nothing about the site's import limit: the site's breaker protection (the
engine throttles EV charging first, every EV of the site in the same proportion)
keeps the import under it.  ``load`` is the breaker-aware wallbox: it shares the
headroom itself, at the minimum current or not at all, earliest departure first."""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, StrategyState, wants_energy


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    return np.where(wants_energy(obs), obs.ev_charger_w, 0.0), state
