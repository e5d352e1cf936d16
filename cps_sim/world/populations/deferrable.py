"""Deferrable processes (a factory batch, a wash): per-site daily energy in a window.

Each process site must receive ``energy_wh`` between the window start and the
deadline, at up to its rated power.  Without control it runs at full power from
the window start; a controller (the FEMS) steers it with
``deferrable_setpoint_w``.  Energy not delivered by the deadline is booked as
``deferrable_unmet_wh``.  Under an import limit processes are throttled after
EV charging and before load (:mod:`cps_sim.world.connection`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.world.populations.base import (
    BuildContext,
    Cut,
    F,
    Flow,
    Population,
    Segment,
    SetpointKey,
)


class DeferrablePopulation(Population):
    key: ClassVar[str] = "deferrable"
    order: ClassVar[int] = 20
    segment_physics: ClassVar[bool] = True
    FLOWS: ClassVar[tuple[Flow, ...]] = (
        Flow("deferrable_wh", "sink", "energy delivered to deferrable processes"),
        Flow("deferrable_unmet_wh", "info", "process energy not delivered by the deadline"),
    )
    SETPOINTS: ClassVar[tuple[SetpointKey, ...]] = (
        SetpointKey(
            "deferrable_setpoint_w",
            "site",
            "process power per site (+inf = as fast "
            "as allowed; clipped to the rated power and what is left)",
        ),
    )
    OBSERVES: ClassVar[tuple[str, ...]] = (
        "deferrable_max_w",
        "deferrable_remaining_wh",
        "deferrable_deadline_s",
    )

    def __init__(self, max_w: F, energy_wh: F):
        n = max_w.size
        self.max_w = max_w  # 0 where a site has no process
        self.energy_wh = energy_wh  # per window
        self.remaining_wh = np.zeros(n)
        self.setpoint_w = np.full(n, np.inf)  # +inf: as fast as allowed
        self.deadline_s = np.full(n, np.inf)
        self.any = bool((max_w > 0).any())
        self._wh: F | None = None

    @classmethod
    def build(cls, ctx: BuildContext) -> DeferrablePopulation | None:
        d = ctx.spec.deferrable
        if d is None:
            return None
        has = ctx.has("deferrable", d.share)
        max_w = np.where(has, ctx.sample(d.power_kw, "deferrable/power_kw", ctx.n) * 1000.0, 0.0)
        energy = np.where(
            has, ctx.sample(d.energy_kwh, "deferrable/energy_kwh", ctx.n) * 1000.0, 0.0
        )
        return cls(max_w, energy)

    def observe(self) -> dict[str, Any]:
        return dict(
            deferrable_max_w=self.max_w.copy(),
            deferrable_remaining_wh=self.remaining_wh.copy(),
            deferrable_deadline_s=self.deadline_s.copy(),
        )

    def apply(self, key: str, value: F) -> None:
        self.setpoint_w = value

    def open(self, deadline_s: float) -> None:
        """A process window opens: each process site needs its energy by the deadline."""
        has = self.max_w > 0
        self.remaining_wh = np.where(has, self.energy_wh, 0.0)
        self.deadline_s = np.where(has, deadline_s, np.inf)

    def close(self) -> float:
        """The deadline passes: what is left is unmet (booked); returns it [Wh]."""
        unmet = float(self.remaining_wh.sum())
        self.group.acc[self.group.ix["deferrable_unmet_wh"]] += unmet
        n = self.max_w.size
        self.remaining_wh = np.zeros(n)
        self.deadline_s = np.full(n, np.inf)
        return unmet

    # ------------------------------------------------------------------ segment
    def next_event_s(self, seg: Segment, t_next: F) -> None:
        """A process finishing part-way changes a coupled site's power."""
        if not self.any:
            return
        sl = seg.sl
        pj = np.maximum(np.minimum(self.setpoint_w[sl], self.max_w[sl]), 0.0)
        rem = self.remaining_wh[sl]
        running = (pj > 0) & (rem > 1e-6) & (self.group.coupled_sites[sl])
        if running.any():
            t_done = np.where(running, rem * SECONDS_PER_HOUR / np.where(running, pj, 1.0), np.inf)
            np.minimum(t_next, t_done, out=t_next)
            if seg.power_w is not None:
                seg.power_w += np.where(running, pj, 0.0)

    def exchange(self, seg: Segment) -> None:
        self._wh = None
        if not self.any:
            return
        sl, h = seg.sl, seg.h
        pj = np.minimum(self.setpoint_w[sl], self.max_w[sl])
        wh = np.minimum(np.maximum(pj, 0.0) * h, self.remaining_wh[sl])
        seg.net_wh += wh
        self._wh = wh
        if self.group.any_import_limit:
            seg.cuts.append(Cut(wh, self._cut))

    def _cut(self, cut: F) -> None:
        self._wh = self._wh - cut

    def commit(self, seg: Segment) -> None:
        if self._wh is None:
            return
        self.remaining_wh[seg.sl] -= self._wh
        seg.acc[self.group.ix["deferrable_wh"]] += self._wh.sum()
        self._wh = None
