"""Site load and rooftop PV as inputs: constant within a tick, measured members override.

Load rows come per day-block from the profile (``world/exogenous.LoadBlocks``);
PV is capacity × a unit profile per distinct orientation, computed once per run
with ``models/solar.py``.  Devices that run per tick (heat-pump water heaters,
air-conditioners) add their electric power to the site load for the tick.

Under an import limit what the connection cannot serve is unserved load; under
an export limit what it cannot take is curtailed PV
(:mod:`cps_sim.world.connection`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cps_sim.world.populations.base import F, Flow, I, Population, Segment


class SiteInputs(Population):
    """Load and PV of every site of a group (PV capacity 0 where a site has none)."""

    key: ClassVar[str] = "inputs"
    order: ClassVar[int] = 0
    segment_physics: ClassVar[bool] = True
    FLOWS: ClassVar[tuple[Flow, ...]] = (
        Flow("load_wh", "sink", "site load served (household/building and per-tick devices)"),
        Flow("pv_generation_wh", "source", "PV energy used or exported (potential − curtailed)"),
        Flow("pv_potential_wh", "info", "PV energy before curtailment"),
        Flow("curtailment_wh", "info", "PV curtailed under an export limit"),
        Flow("unserved_wh", "info", "load not served under an import limit"),
    )
    OBSERVES: ClassVar[tuple[str, ...]] = ("site_load_w", "site_pv_w")

    def __init__(
        self, n: int, pv_capacity_w: F, pv_orientation: I, pv_unit_w_per_w: F, pv_ac_limit_w: F
    ):
        self.load_w = np.zeros(n)
        self.pv_capacity_w = pv_capacity_w
        self.pv_orientation = pv_orientation  # column of pv_unit_w_per_w for each site
        self.pv_unit_w_per_w = pv_unit_w_per_w  # (n_ticks, n_orientations) AC W per DC W
        self.pv_ac_limit_w = pv_ac_limit_w
        self.any_pv_limit = bool(np.isfinite(pv_ac_limit_w).any())
        self.any_pv = bool((pv_capacity_w > 0).any())  # else PV is 0 at every site
        self.pv_w = np.zeros(n)
        # the PV model's site formula (models/solar imports pvlib: taken when a world is
        # built, not when this module is imported, e.g. by the MQTT bridge)
        from cps_sim.models.solar import site_ac_power_w

        self._site_ac_power_w = site_ac_power_w
        # members bound to external devices: measured power, NaN where the model runs
        self.load_measured_w: F | None = None
        self.pv_measured_w: F | None = None  # generation as a positive number
        self.load_model_w = np.zeros(n)  # this tick's modelled input at each site
        self.pv_model_w = np.zeros(n)
        self.measured_wh: dict[str, F] = {}
        self._load_sum = 0.0
        self._pv_sum = 0.0

    # ------------------------------------------------------------------ per tick
    def set_inputs(self, load_w: F, k: int) -> None:
        """Exogenous inputs held constant for tick ``k`` (measured members override them)."""
        self.load_w = load_w
        if self.any_pv:
            self.pv_w = self._site_ac_power_w(
                self.pv_capacity_w,
                self.pv_unit_w_per_w[k],
                self.pv_orientation,
                self.pv_ac_limit_w if self.any_pv_limit else None,
            )
        else:
            self.pv_w = np.zeros(self.load_w.size)
        if self.load_measured_w is not None:
            self.load_model_w = load_w.copy()
            m = ~np.isnan(self.load_measured_w)
            load_w[m] = self.load_measured_w[m]
        if self.pv_measured_w is not None:
            self.pv_model_w = self.pv_w.copy()
            m = ~np.isnan(self.pv_measured_w)
            self.pv_w[m] = self.pv_measured_w[m]

    def add_load_w(self, site: I, power_w: F) -> None:
        """A per-tick device's electric power joins its site's load for the tick."""
        np.add.at(self.load_w, site, power_w)

    def observe(self) -> dict[str, Any]:
        return {"site_load_w": self.load_w.copy(), "site_pv_w": self.pv_w.copy()}

    # ------------------------------------------------------------------ measured members
    def set_measured(self, kind: str, index: int, power_w: float) -> None:
        n = self.load_w.size
        if kind == "load":
            if self.load_measured_w is None:
                self.load_measured_w = np.full(n, np.nan)
                self.measured_wh["load"] = np.zeros(n)
                self.load_model_w = self.load_w.copy()
            old = self.load_measured_w[index]
            before = self.load_model_w[index] if np.isnan(old) else old
            self.load_measured_w[index] = power_w
            after = self.load_model_w[index] if np.isnan(power_w) else power_w
            self.load_w[index] += after - before  # devices added to the load stay
            return
        if self.pv_measured_w is None:
            self.pv_measured_w = np.full(n, np.nan)
            self.measured_wh["pv"] = np.zeros(n)
            self.pv_model_w = self.pv_w.copy()
        gen = np.nan if np.isnan(power_w) else max(-power_w, 0.0)
        self.pv_measured_w[index] = gen
        self.pv_w[index] = self.pv_model_w[index] if np.isnan(gen) else gen

    # ------------------------------------------------------------------ segment
    def exchange(self, seg: Segment) -> None:
        sl, h = seg.sl, seg.h
        load_w = self.load_w[sl]
        pv_w = self.pv_w[sl]
        seg.net_wh = (load_w - pv_w) * h
        self._load_sum = float(np.dot(load_w, h)) if h.ndim else float(load_w.sum() * h)
        self._pv_sum = float(np.dot(pv_w, h)) if h.ndim else float(pv_w.sum() * h)

    def commit(self, seg: Segment) -> None:
        sl, h, acc, ix = seg.sl, seg.h, seg.acc, self.group.ix
        if self.load_measured_w is not None:
            m = self.load_measured_w[sl]
            self.measured_wh["load"][sl] += np.where(np.isnan(m), 0.0, m) * h
        if self.pv_measured_w is not None:
            m = self.pv_measured_w[sl]
            self.measured_wh["pv"][sl] -= np.where(np.isnan(m), 0.0, m) * h
        acc[ix["load_wh"]] += self._load_sum - seg.unserved_wh
        acc[ix["unserved_wh"]] += seg.unserved_wh
        acc[ix["pv_potential_wh"]] += self._pv_sum
        acc[ix["pv_generation_wh"]] += self._pv_sum - seg.curtailed_wh
        acc[ix["curtailment_wh"]] += seg.curtailed_wh
