"""EV charging strategies, one module each, and a controller that runs one.

Each strategy is ``setpoints_w(now_s, obs, state, cfg) -> (ev_setpoint_w,
state)`` over a whole EV population.  ``StrategyController`` adapts a
strategy to the controller interface of ``cps_sim.control.base``; every
strategy except ``now`` has its charging finally capped so that no site exceeds
its import limit (the ``load`` sharing rule), as a real breaker-aware wallbox
does.  ``now`` is uncontrolled charging: the charger knows nothing about the
site's limit, and only the site's breaker protection (the engine throttles EV
charging first, all EVs of the site in proportion) keeps the import under it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies import cost, depot, load, min_pv, now, off, pv, v2g, v2h
from cps_sim.control.strategies.common import StrategyConfig, StrategyState, WeeklyPlan

Strategy = Callable[
    [float, Observation, StrategyState, StrategyConfig], tuple[FloatArray, StrategyState]
]

STRATEGIES: dict[str, Strategy] = {
    "off": off.setpoints_w,
    "now": now.setpoints_w,
    "min_pv": min_pv.setpoints_w,
    "pv": pv.setpoints_w,
    "load": load.setpoints_w,
    "cost": cost.setpoints_w,
    "v2h": v2h.setpoints_w,
    "v2g": v2g.setpoints_w,
    # depot strategies after SpiceEV (control/strategies/depot.py)
    "greedy": depot.greedy,
    "balanced": depot.balanced,
    "peak_shaving": depot.peak_shaving,
}


class StrategyController:
    """A controller that applies one named strategy to every EV of a group."""

    def __init__(
        self,
        strategy: str,
        cfg: StrategyConfig | None = None,
        state: StrategyState | None = None,
        name: str | None = None,
        respect_import_limit: bool = True,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown EV strategy {strategy!r}; one of {sorted(STRATEGIES)}")
        self.strategy = strategy
        self.cfg = cfg or StrategyConfig()
        self.name = name or f"ev_{strategy}"
        self.interval_s = self.cfg.interval_s
        self.state = state
        self.respect_import_limit = respect_import_limit

    def decide(self, now_s: float, observation: Observation) -> dict[str, np.ndarray]:
        if self.state is None:
            self.state = StrategyState.initial(observation.n_evs)
        sp, self.state = STRATEGIES[self.strategy](now_s, observation, self.state, self.cfg)
        if (
            self.respect_import_limit
            and self.strategy != "now"
            and np.isfinite(observation.site_import_limit_w).any()
        ):
            sp = load.limit_to_site(observation, sp, self.cfg)
        return {"ev_setpoint_w": sp}


__all__ = ["STRATEGIES", "StrategyConfig", "StrategyController", "StrategyState", "WeeklyPlan"]
