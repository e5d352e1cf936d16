"""Pieces shared by the EMS controllers: EV strategy delegation, per-site sums
and the local calendar.

An EMS is configured with what an installer enters (EV charger efficiencies,
the site's time zone); everything that changes, and the devices' limits
(``Observation.battery_spec``, whose feasible range the model computes:
``Observation.battery_range_w``), comes with the
:class:`~cps_sim.control.observation.Observation`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies import STRATEGIES, StrategyConfig, StrategyState
from cps_sim.control.strategies import load as load_strategy


def site_sum(obs: Observation, per_ev: FloatArray) -> FloatArray:
    return np.bincount(obs.ev_site, weights=per_ev, minlength=obs.n_sites).astype(float)


def ev_effective_w(obs: Observation, ev_sp: FloatArray) -> FloatArray:
    """The power each EV will actually draw at setpoint ``ev_sp`` (charger/V2X
    limits, plugged state); not the SoC window."""
    p = np.minimum(ev_sp, obs.ev_charger_w)
    p = np.maximum(p, -obs.ev_v2x_w)
    return np.where(obs.ev_plugged, p, 0.0)


class EvDelegate:
    """Runs one named strategy of ``control/strategies`` inside an EMS."""

    def __init__(self, strategy: str | None, cfg: StrategyConfig):
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"unknown EV strategy {strategy!r}; one of {sorted(STRATEGIES)}")
        self.strategy = strategy
        self.cfg = cfg
        self.state: StrategyState | None = None

    def __call__(self, now_s: float, obs: Observation) -> FloatArray | None:
        if self.strategy is None:
            return None
        if self.state is None:
            self.state = StrategyState.initial(obs.n_evs)
        sp, self.state = STRATEGIES[self.strategy](now_s, obs, self.state, self.cfg)
        if self.strategy != "now" and np.isfinite(obs.site_import_limit_w).any():
            sp = load_strategy.limit_to_site(obs, sp, self.cfg)  # 'now': uncontrolled
        return np.asarray(sp, float)


@dataclass(frozen=True)
class Calendar:
    """Local time of simulation seconds (built from the world's clock)."""

    month_of: Callable[[float], int]  # year*12 + month, changes at local month starts

    @classmethod
    def from_clock(cls, clock) -> Calendar:
        def month_of(t_s: float) -> int:
            d = clock.to_datetime(float(t_s))
            return d.year * 12 + d.month

        return cls(month_of=month_of)


def windows_s(windows, clock_start) -> list[tuple[float, float]]:
    """Datetime windows [start, end) as seconds since the scenario start."""
    return [
        ((a - clock_start).total_seconds(), (b - clock_start).total_seconds()) for a, b in windows
    ]
