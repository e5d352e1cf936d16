"""The population protocol: what a device family declares and does in the engine.

A *population* is every device of one family in one site group (all its EVs,
all its home batteries, ...), stored as numpy arrays.  The site group
(:class:`~cps_sim.world.group.SiteGroup`) keeps only the per-site clocks, the
event rounds and the accumulators; in every segment of constant inputs it asks
its populations, in registry order, to

1. ``next_event_s(seg)`` — report when a site's power changes by itself within
   the segment (an EV full, a battery at a limit), so the segment is split there;
2. ``exchange(seg)`` — add the energy they draw (+) or give (−) at each site to
   ``seg.net_wh``, by calling pure functions in ``models/``, and register what
   may be cut under an import limit (:class:`Cut`);

then settles the connection (:func:`cps_sim.world.connection.settle`: import and
export limits, in one documented priority order) and calls ``commit(seg)``, where
each population books its flows and updates its state.

Everything the rest of the program needs is derived from the declarations:
``FLOWS`` (accumulator slots, ledger sources and sinks, one time-series column
each), ``SETPOINTS`` (the control keys a group accepts, with their sizes and
checks) and ``observe()`` (the fields a controller sees).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from cps_sim.core.types import any_nan

if TYPE_CHECKING:
    from cps_sim.world.group import SiteGroup

F = NDArray[np.float64]
I = NDArray[np.int64]  # noqa: E741

Role = Literal["source", "sink", "info"]


@dataclass(frozen=True)
class Flow:
    """One energy accumulator [Wh per tick].

    ``source``/``sink``: a term of the ledger identity (sources = sinks + Δstored);
    ``info``: a transfer inside the books (e.g. EV charging, which ends up stored or
    lost) reported for analysis.  Every flow gets a time-series column
    (``<name without _wh>_w``, the tick-average power).
    """

    name: str
    role: Role
    description: str = ""


@dataclass(frozen=True)
class SetpointKey:
    """A control key a population accepts (``World.apply(group, key=array)``).

    ``per``: one value per ``"site"`` of the group, or per ``"device"`` of the
    population.  NaN is never a valid value (a mode is a key of its own, e.g.
    ``battery_mode``); ``min_w``: lower bound; ``choices``: the only values allowed.
    """

    name: str
    per: Literal["site", "device"]
    description: str = ""
    min_w: float | None = None
    choices: tuple[float, ...] | None = None

    def check(self, value: F, size: int) -> F:
        v = np.asarray(value, dtype=float)
        if v.shape != (size,):
            raise ValueError(f"{self.name} must have {size} values, got shape {v.shape}")
        if any_nan(v):
            raise ValueError(f"{self.name}: NaN is not a valid setpoint value")
        if self.min_w is not None and (v < self.min_w).any():
            raise ValueError(f"{self.name} must be >= {self.min_w:g}")
        if self.choices is not None and not np.isin(v, self.choices).all():
            bad = v[~np.isin(v, self.choices)][0]
            raise ValueError(f"{self.name}: {bad:g} is not one of {list(self.choices)}")
        return v.copy()


@dataclass
class Cut:
    """Energy [Wh] at each site of a segment that an import limit may cut, and how.

    ``apply(cut_wh)`` is called with the energy actually cut at each site
    (0 <= cut <= site_wh) before the population commits.
    """

    site_wh: F
    apply: Callable[[F], None]


_EMPTY = np.zeros(0)
_EMPTY.flags.writeable = False
_ALL = slice(None)


class Segment:
    """One stretch of constant inputs for sites ``s`` of a group (None: every site)."""

    __slots__ = (
        "acc",
        "curtailed_wh",
        "cuts",
        "dt_s",
        "group",
        "h",
        "net_wh",
        "nloc",
        "power_w",
        "s",
        "sl",
        "unserved_wh",
    )

    def __init__(self, group: SiteGroup, s: I | None, dt_s: F, h: F, acc: F):
        self.group = group
        self.s = s
        self.dt_s = dt_s  # scalar or per site of s
        self.h = h  # hours, dt_s / 3600 (the same array or scalar)
        self.acc = acc  # the group's per-tick accumulators
        self.net_wh: F = _EMPTY  # + import at each site
        self.cuts: list[Cut] = []  # import-limit order (first cut first)
        self.unserved_wh = 0.0  # set by the connection
        self.curtailed_wh = 0.0
        self.power_w: F | None = None  # next_event_s: power that feeds back (EVs, processes)
        # the sites as an index (a slice for every site) and their number
        self.sl: slice | I = _ALL if s is None else s
        self.nloc: int = group.n if s is None else int(s.size)

    @property
    def allsites(self) -> bool:
        return self.s is None

    def export_room_wh(self) -> F:
        """Energy the sites may still export within their export limits (what a
        discharge may add beyond the site's own demand)."""
        g = self.group
        return np.maximum(self.net_wh + g.export_limit_w[self.sl] * self.h, 0.0)


@dataclass(frozen=True)
class BuildContext:
    """What a population needs to build itself for one site group (``Population.build``):
    the group's scenario block, its size, the stem of its random streams
    (``sites/<group>``), the run's streams, scenario and weather."""

    spec: Any  # scenario.sites_schema.SiteGroupSpec
    n: int
    stream: str
    rng: Any  # core.rng.RngStreams
    scenario: Any
    weather: Any
    path: str = "sites[0]"

    def has(self, name: str, share: float) -> np.ndarray:
        """Which sites have the device (seeded stream ``<stream>/<name>/has``)."""
        return self.rng.generator(f"{self.stream}/{name}/has").random(self.n) < share

    def sample(self, quantity: Any, name: str, size: int) -> np.ndarray:
        """``size`` draws of a scenario quantity from stream ``<stream>/<name>``."""
        from cps_sim.scenario.distributions import sample

        return sample(quantity, self.rng.generator(f"{self.stream}/{name}"), size)


class TickContext:
    """What per-tick devices need to know about the tick: its index, start, length,
    local hour (mid-tick) and outdoor air temperature (computed once, on demand)."""

    def __init__(self, world: Any, k: int):
        self.world = world
        self.k = k
        self.tick_s = float(world.tick_s)
        self.t0_s = k * self.tick_s
        self._hour: float | None = None

    @property
    def hour(self) -> float:
        """Local hour of day at the middle of the tick."""
        if self._hour is None:
            self._hour = self.world.clock.local_hour(self.t0_s + 0.5 * self.tick_s)
        return self._hour

    @property
    def t0_local_s(self) -> float:
        """Seconds since local midnight at the start of the tick."""
        return self.t0_s - self.world.clock.local_midnight_s(self.t0_s)

    @property
    def temp_air_c(self) -> float:
        return float(self.world.weather.temp_air_c[self.k])


class Population:
    """Base class of every device population (see the module docstring).

    Subclasses set ``key``, ``FLOWS``, ``SETPOINTS`` and override what they need;
    the defaults do nothing.  ``build(ctx)`` creates the population of one site
    group from the scenario (None when the group has none of these devices).
    """

    key: ClassVar[str] = ""
    # position in the site balance (registry order; see world/populations/__init__.py)
    order: ClassVar[int] = 100
    FLOWS: ClassVar[tuple[Flow, ...]] = ()
    SETPOINTS: ClassVar[tuple[SetpointKey, ...]] = ()
    # observation fields this population fills (names of Observation fields; others
    # go to Observation.extra)
    OBSERVES: ClassVar[tuple[str, ...]] = ()
    # the physics is in segments (next_event_s/exchange/commit) or per tick only
    # (begin_tick/end_tick: its power joins the site load for the tick)
    segment_physics: ClassVar[bool] = False

    group: SiteGroup

    @classmethod
    def build(cls, ctx: Any) -> Population | None:  # pragma: no cover - interface
        return None

    def attach(self, group: SiteGroup) -> None:
        self.group = group

    @property
    def n_devices(self) -> int:
        return self.group.n

    def stored_wh(self) -> float:
        return 0.0

    def observe(self) -> dict[str, Any]:
        """What a controller sees now: field name -> value.  A controller may keep or
        modify what it gets, so state is returned as copies; arrays fixed for the run may
        be returned themselves if they are read-only (the EVs' parameters are)."""
        return {}

    def apply(self, key: str, value: F) -> None:  # pragma: no cover - interface
        raise KeyError(key)

    def begin_tick(self, ctx: TickContext) -> None:
        return None

    def next_event_s(self, seg: Segment, t_next: F) -> None:
        return None

    def exchange(self, seg: Segment) -> None:
        return None

    def commit(self, seg: Segment) -> None:
        return None

    def end_tick(self, ctx: TickContext) -> dict[str, float]:
        """Time-series columns of the tick (summed over groups; columns whose name
        contains ``mean`` are averaged)."""
        return {}

    def kpis(self, prefix: str) -> dict[str, float]:
        """Not used by runs: every KPI is computed from the recorded columns in one place,
        :mod:`cps_sim.experiment.kpis` (a family's per-tick columns come from
        ``end_tick``; add its KPI definitions to :mod:`cps_sim.experiment.kpi_registry`)."""
        return {}
