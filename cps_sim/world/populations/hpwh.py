"""Heat-pump water heaters (EcoCute-like) at sites: a rule controller and the tank model.

Each tick the rule decides, for the whole population at once, whether each
unit heats; the power is the largest that the tank can take for the whole
tick (``models.heat_pump.feasible_power_w``), so the electric energy is exact
and it is added to the site's load for the tick.  At the end of the tick the
mixed-tank model (``models.heat_pump.step``) advances with that power, the
ambient temperature and the hot-water draw of the tick.

Rules (seed L1063-1064: units that *use daytime surplus RE* earn an extra
subsidy; the night rule is today's EcoCute default):

* ``night`` — heat between ``night_start_h`` and ``night_end_h`` until full;
* ``surplus`` — heat in the daytime window while the site's PV surplus covers at
  least ``surplus_fraction`` of the unit's electric power; top up at night only
  when the tank is below ``night_topup_fraction`` of its usable heat;
* always heat when the usable heat falls below ``reserve_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import heat_pump as hp
from cps_sim.world.populations.base import BuildContext, Population, TickContext


@dataclass
class HpwhPopulation(Population):
    """Per tick: the rule decides each unit's power, which joins its site's load
    (``begin_tick``); the tank model advances at the end of the tick (``end_tick``)."""

    key: ClassVar[str] = "hpwh"
    order: ClassVar[int] = 40

    site: np.ndarray  # site index (within the group) of each unit
    spec: hp.HeatPumpSpec
    state: hp.HeatPumpState
    daily_draw_wh_th: np.ndarray
    control: str
    night: tuple[float, float]
    window: tuple[float, float]
    surplus_fraction: float
    reserve_fraction: float
    night_topup_fraction: float
    power_w: np.ndarray = None  # electric power held over the current tick

    @classmethod
    def build(cls, ctx: BuildContext) -> HpwhPopulation | None:
        h = ctx.spec.heat_pump_water_heater
        if h is None:
            return None
        site = np.flatnonzero(ctx.has("hpwh", h.share)).astype(np.int64)
        m = site.size
        hspec = hp.ecocute_spec(m, tank_volume_l=h.tank_volume_l, setpoint_c=h.setpoint_c,
                                heat_output_max_w=h.heat_output_kw * 1000.0)
        draw = ctx.sample(h.daily_draw_kwh_th, "hpwh/daily_draw", m) * 1000.0
        return cls(site=site, spec=hspec, state=hp.initial_state(hspec, h.initial_temp_c),
                   daily_draw_wh_th=draw, control=h.control,
                   night=(h.night_start_h, h.night_end_h),
                   window=(h.surplus_start_h, h.surplus_end_h),
                   surplus_fraction=h.surplus_fraction, reserve_fraction=h.reserve_fraction,
                   night_topup_fraction=h.night_topup_fraction)

    @property
    def n_devices(self) -> int:
        return int(self.site.size)

    def begin_tick(self, ctx: TickContext) -> None:
        g = self.group
        hp_w = self.decide(ctx.hour, ctx.tick_s, ctx.temp_air_c, g.inputs.load_w, g.inputs.pv_w)
        g.inputs.add_load_w(self.site, hp_w)

    def end_tick(self, ctx: TickContext) -> dict[str, float]:
        return self.step_tank(ctx.t0_local_s, ctx.tick_s, ctx.temp_air_c)

    def observe(self) -> dict[str, Any]:
        return {"hpwh_site": self.site.copy(), "hpwh_tank_temp_c":
                self.state.tank_temp_c.copy(), "hpwh_power_w": self.power_w.copy()}

    def __post_init__(self) -> None:
        self.power_w = np.zeros(self.site.size)
        self.last = {"heat_pump_w": 0.0, "heat_pump_heat_w_th": 0.0,
                     "hot_water_delivered_w_th": 0.0, "hot_water_unmet_w_th": 0.0,
                     "hpwh_tank_loss_w_th": 0.0,
                     "hpwh_tank_temp_mean_c": float(self.state.tank_temp_c.mean())}

    def _usable_fraction(self) -> np.ndarray:
        s = self.spec
        full = s.setpoint_c - s.min_usable_c
        return np.clip((self.state.tank_temp_c - s.min_usable_c) / full, 0.0, 1.0)

    def decide(self, hour: float, tick_s: float, ambient_c: float, site_load_w: np.ndarray,
               site_pv_w: np.ndarray) -> np.ndarray:
        """Electric power [W] of every unit for the coming tick (vectorised rule)."""
        _, hi = hp.feasible_power_w(self.spec, self.state, tick_s, ambient_c)
        usable = self._usable_fraction()

        def in_window(a: float, b: float) -> bool:
            return (a <= hour < b) if a <= b else (hour >= a or hour < b)

        night = in_window(*self.night)
        if self.control == "night":
            run = np.full(self.site.size, night)
        else:
            surplus = site_pv_w[self.site] - site_load_w[self.site]
            run = (in_window(*self.window) & (surplus >= self.surplus_fraction * hi)) | \
                (night & (usable < self.night_topup_fraction))
        run |= usable < self.reserve_fraction
        self.power_w = np.where(run, hi, 0.0)
        return self.power_w

    def step_tank(self, t0_local_s: float, tick_s: float, ambient_c: float) -> dict[str, float]:
        draw = hp.draw_energy_wh_th(t0_local_s, tick_s, self.daily_draw_wh_th)
        self.state, f = hp.step(self.state, self.spec, self.power_w, tick_s, ambient_c, draw)
        to_w = SECONDS_PER_HOUR / tick_s
        # per-tick columns; the KPIs are their sums (experiment/kpis.py)
        self.last = {"heat_pump_w": float(f.electric_in_wh.sum()) * to_w,
                     "heat_pump_heat_w_th": float(f.heat_in_wh_th.sum()) * to_w,
                     "hot_water_delivered_w_th": float(f.draw_delivered_wh_th.sum()) * to_w,
                     "hot_water_unmet_w_th": float(f.draw_unmet_wh_th.sum()) * to_w,
                     "hpwh_tank_loss_w_th": float(f.loss_wh_th.sum()) * to_w,
                     "hpwh_tank_temp_mean_c": float(self.state.tank_temp_c.mean())}
        return self.last
