"""Room air-conditioners / space-heating heat pumps at sites (``space_conditioning:``).

A per-tick population: at the start of every tick each unit decides the heat
that keeps its room inside the comfort band over the tick
(:func:`cps_sim.models.hvac.decide`: 1R1C thermal mass, COP vs outdoor
temperature, set-point band), its electric power joins its site's load for the
tick, and the room temperature advances at the end of the tick.

Demand response: the band widens by ``shift_k`` during the scenario's
``dr_windows`` and narrows by ``precondition_k`` in the ``precondition_h`` before
each (pre-cooling / pre-heating, which shifts consumption ahead of the event);
a controller can shift the band further with the ``hvac_shift_k`` setpoint (per
site, K; + wider = less power), from the next tick on.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import hvac
from cps_sim.world.populations.base import (
    BuildContext,
    F,
    I,
    Population,
    SetpointKey,
    TickContext,
)


class HvacPopulation(Population):
    key: ClassVar[str] = "hvac"
    order: ClassVar[int] = 50
    SETPOINTS: ClassVar[tuple[SetpointKey, ...]] = (
        SetpointKey(
            "hvac_shift_k",
            "site",
            "comfort band shift per site [K] (+ wider: less "
            "power, a DR reduction; − narrower: pre-conditioning); from the next tick",
        ),
    )

    def __init__(
        self,
        site: I,
        spec: hvac.HvacSpec,
        indoor_c: F,
        dr: tuple[tuple[float, float, float], ...] = (),
        precondition_s: float = 0.0,
        precondition_k: float = 0.0,
    ):
        self.site = site  # site index (within the group) of each unit
        self.spec = spec
        self.state = hvac.HvacState(indoor_c=indoor_c)
        self.dr = dr  # (start_s, end_s, shift_k)
        self.precondition_s = precondition_s
        self.precondition_k = precondition_k
        self.shift_k = np.zeros(0)  # per site, set in attach
        self.step: hvac.HvacStep | None = None

    @classmethod
    def build(cls, ctx: BuildContext) -> HvacPopulation | None:
        s = getattr(ctx.spec, "space_conditioning", None)
        if s is None:
            return None
        site = np.flatnonzero(ctx.has("hvac", s.share)).astype(np.int64)
        m = site.size
        area = ctx.sample(s.floor_area_m2, "hvac/floor_area_m2", m)
        spec = hvac.hvac_spec(
            m,
            floor_area_m2=area,
            ua_w_per_k_m2=s.ua_w_per_k_m2,
            capacitance_wh_per_k_m2=s.capacitance_wh_per_k_m2,
            gains_w=s.gains_w,
            heat_max_w=s.heat_kw * 1000.0,
            cool_max_w=s.cool_kw * 1000.0,
            heat_setpoint_c=s.heat_setpoint_c,
            cool_setpoint_c=s.cool_setpoint_c,
            carnot_fraction=s.carnot_fraction,
            approach_k=s.approach_k,
        )
        t0 = (
            s.initial_temp_c
            if s.initial_temp_c is not None
            else 0.5 * (s.heat_setpoint_c + s.cool_setpoint_c)
        )
        start = ctx.scenario.start
        dr = tuple(
            ((w.start - start).total_seconds(), (w.end - start).total_seconds(), w.shift_k)
            for w in s.dr_windows
        )
        return cls(
            site,
            spec,
            np.full(m, float(t0)),
            dr,
            s.precondition_h * SECONDS_PER_HOUR,
            s.precondition_k,
        )

    def attach(self, group) -> None:
        super().attach(group)
        self.shift_k = np.zeros(group.n)

    @property
    def n_devices(self) -> int:
        return int(self.site.size)

    def apply(self, key: str, value: F) -> None:
        self.shift_k = value

    def observe(self) -> dict[str, Any]:
        p = self.step.electric_w if self.step is not None else np.zeros(self.site.size)
        return {
            "hvac_site": self.site.copy(),
            "hvac_indoor_temp_c": self.state.indoor_c.copy(),
            "hvac_power_w": p.copy(),
        }

    def dr_shift_k(self, t_mid_s: float) -> float:
        """The scenario's DR shift at an instant: + during an event, − before it."""
        shift = 0.0
        for a, b, k in self.dr:
            if a <= t_mid_s < b:
                shift = max(shift, k)
            elif a - self.precondition_s <= t_mid_s < a and shift <= 0.0:
                shift = -self.precondition_k
        return shift

    # ------------------------------------------------------------------ per tick
    def begin_tick(self, ctx: TickContext) -> None:
        shift = self.shift_k[self.site] + self.dr_shift_k(ctx.t0_s + 0.5 * ctx.tick_s)
        self.step = hvac.decide(self.spec, self.state, ctx.temp_air_c, ctx.tick_s, shift)
        self.group.inputs.add_load_w(self.site, self.step.electric_w)

    def end_tick(self, ctx: TickContext) -> dict[str, float]:
        st = self.step
        if st is None:
            return {}
        self.state = hvac.advance(self.state, st)
        mean = float(st.indoor_mean_c.mean()) if st.indoor_mean_c.size else float("nan")
        # per-tick columns; the KPIs are their sums (experiment/kpis.py)
        return {
            "hvac_w": float(st.electric_w.sum()),
            "hvac_heat_w_th": float(st.heat_w.sum()),
            "hvac_heating_w_th": float(np.maximum(st.heat_w, 0.0).sum()),
            "hvac_cooling_w_th": float(np.maximum(-st.heat_w, 0.0).sum()),
            "hvac_discomfort_kh": float(st.discomfort_kh.sum()),
            "hvac_indoor_temp_mean_c": mean,
        }
