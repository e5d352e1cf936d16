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

A controller (the HEMS MPC) can set each unit's electric power instead:
``hpwh_setpoint_w`` (per site, W >= 0) with ``hpwh_mode`` (per site:
``HPWH_FOLLOW`` 0 follows the setpoint, ``HPWH_AUTO`` 1 runs the rule above; a
``hpwh_setpoint_w`` applied without ``hpwh_mode`` puts every site on FOLLOW).  A
followed setpoint is capped by the model at the rated output and at what the tank
can take this tick (setpoint temperature, the tick's draw counted); the reserve
rule still overrides it (safety: a low tank heats at full power).  Like the room
air-conditioners' key, the power of a tick is decided at its start: a setpoint
applied exactly at a tick start (no energy integrated yet in the tick) re-decides
that tick, one applied later takes effect at the next tick.  When the
setpoint expires the device process's fallback puts the units back on their rule
(``control.base.fallback_*``: ``hpwh_mode`` AUTO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cps_sim.core.bus import HPWH_AUTO, HPWH_FOLLOW
from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import heat_pump as hp
from cps_sim.world.populations.base import BuildContext, Population, SetpointKey, TickContext


@dataclass
class HpwhPopulation(Population):
    """Per tick: the rule decides each unit's power, which joins its site's load
    (``begin_tick``); the tank model advances at the end of the tick (``end_tick``)."""

    key: ClassVar[str] = "hpwh"
    order: ClassVar[int] = 40
    SETPOINTS: ClassVar[tuple[SetpointKey, ...]] = (
        SetpointKey(
            "hpwh_setpoint_w",
            "site",
            "heat-pump water heater electric power per site "
            "[W] (sites whose hpwh_mode is HPWH_FOLLOW; capped at the rated output and "
            "the tank's room; the reserve rule overrides); from the tick it is applied "
            "at the start of, else the next",
            min_w=0.0,
        ),
        SetpointKey(
            "hpwh_mode",
            "site",
            "HPWH_FOLLOW (0) = follow hpwh_setpoint_w, HPWH_AUTO "
            "(1) = the unit's own rule (night / surplus)",
            choices=(HPWH_FOLLOW, HPWH_AUTO),
        ),
    )

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
    target_w: np.ndarray = None  # hpwh_setpoint_w per site as applied
    mode: np.ndarray = None  # hpwh_mode per site as applied
    draw_w_th: np.ndarray = None  # hot-water heat demanded in the current tick (tick mean)
    _tick: TickContext | None = None  # the tick being decided (None before the first)

    @classmethod
    def build(cls, ctx: BuildContext) -> HpwhPopulation | None:
        h = ctx.spec.heat_pump_water_heater
        if h is None:
            return None
        site = np.flatnonzero(ctx.has("hpwh", h.share)).astype(np.int64)
        m = site.size
        hspec = hp.ecocute_spec(
            m,
            tank_volume_l=h.tank_volume_l,
            setpoint_c=h.setpoint_c,
            heat_output_max_w=h.heat_output_kw * 1000.0,
        )
        draw = ctx.sample(h.daily_draw_kwh_th, "hpwh/daily_draw", m) * 1000.0
        return cls(
            site=site,
            spec=hspec,
            state=hp.initial_state(hspec, h.initial_temp_c),
            daily_draw_wh_th=draw,
            control=h.control,
            night=(h.night_start_h, h.night_end_h),
            window=(h.surplus_start_h, h.surplus_end_h),
            surplus_fraction=h.surplus_fraction,
            reserve_fraction=h.reserve_fraction,
            night_topup_fraction=h.night_topup_fraction,
        )

    @property
    def n_devices(self) -> int:
        return int(self.site.size)

    def attach(self, group) -> None:
        super().attach(group)
        self.target_w = np.zeros(group.n)
        self.mode = np.full(group.n, HPWH_AUTO)

    def apply(self, key: str, value: np.ndarray) -> None:
        """``World.apply`` calls ``hpwh_setpoint_w`` before ``hpwh_mode``."""
        if key == "hpwh_setpoint_w":
            self.target_w = value
            self.mode = np.full(self.group.n, HPWH_FOLLOW)
        else:
            self.mode = value
        ctx = self._tick
        g = self.group
        if ctx is not None and g.t_all <= ctx.t0_s + 1e-9 and np.all(g.t_s <= ctx.t0_s + 1e-9):
            # at the tick start, nothing integrated yet: this tick follows the new setpoint
            old = self.power_w.copy()
            load = g.inputs.load_w.copy()
            np.subtract.at(load, self.site, old)
            self.decide(ctx.hour, ctx.tick_s, ctx.temp_air_c, load, g.inputs.pv_w)
            g.inputs.add_load_w(self.site, self.power_w - old)

    def begin_tick(self, ctx: TickContext) -> None:
        g = self.group
        self._tick = ctx
        self.draw_w_th = (
            hp.draw_energy_wh_th(ctx.t0_local_s, ctx.tick_s, self.daily_draw_wh_th)
            * SECONDS_PER_HOUR
            / ctx.tick_s
        )
        hp_w = self.decide(ctx.hour, ctx.tick_s, ctx.temp_air_c, g.inputs.load_w, g.inputs.pv_w)
        g.inputs.add_load_w(self.site, hp_w)

    def end_tick(self, ctx: TickContext) -> dict[str, float]:
        return self.step_tank(ctx.t0_local_s, ctx.tick_s, ctx.temp_air_c)

    def observe(self) -> dict[str, Any]:
        draw = self.draw_w_th if self.draw_w_th is not None else np.zeros(self.site.size)
        return {
            "hpwh_site": self.site.copy(),
            "hpwh_tank_temp_c": self.state.tank_temp_c.copy(),
            "hpwh_power_w": self.power_w.copy(),
            "hpwh_spec": self.spec,
            "hpwh_daily_draw_wh_th": self.daily_draw_wh_th.copy(),
            "hpwh_draw_w_th": draw.copy(),
            "hpwh_reserve_fraction": self.reserve_fraction,
        }

    def __post_init__(self) -> None:
        self.power_w = np.zeros(self.site.size)
        self.last = {
            "heat_pump_w": 0.0,
            "heat_pump_heat_w_th": 0.0,
            "hot_water_delivered_w_th": 0.0,
            "hot_water_unmet_w_th": 0.0,
            "hpwh_tank_loss_w_th": 0.0,
            "hpwh_tank_temp_mean_c": float(self.state.tank_temp_c.mean()),
        }

    def _usable_fraction(self) -> np.ndarray:
        s = self.spec
        full = s.setpoint_c - s.min_usable_c
        return np.clip((self.state.tank_temp_c - s.min_usable_c) / full, 0.0, 1.0)

    def decide(
        self,
        hour: float,
        tick_s: float,
        ambient_c: float,
        site_load_w: np.ndarray,
        site_pv_w: np.ndarray,
    ) -> np.ndarray:
        """Electric power [W] of every unit for the coming tick (vectorised rule; units on
        ``HPWH_FOLLOW`` follow their setpoint within what the tank can take)."""
        _, hi = hp.feasible_power_w(self.spec, self.state, tick_s, ambient_c)
        usable = self._usable_fraction()
        follow = self.mode[self.site] == HPWH_FOLLOW if self.mode is not None else None

        def in_window(a: float, b: float) -> bool:
            return (a <= hour < b) if a <= b else (hour >= a or hour < b)

        night = in_window(*self.night)
        if self.control == "night":
            run = np.full(self.site.size, night)
        else:
            surplus = site_pv_w[self.site] - site_load_w[self.site]
            run = (in_window(*self.window) & (surplus >= self.surplus_fraction * hi)) | (
                night & (usable < self.night_topup_fraction)
            )
        low = usable < self.reserve_fraction
        run |= low
        power = np.where(run, hi, 0.0)
        if follow is not None and follow.any():
            # the tank's room with this tick's draw counted (what the model will accept)
            draw = self.draw_w_th if self.draw_w_th is not None else 0.0
            _, hi_d = hp.feasible_power_w(self.spec, self.state, tick_s, ambient_c, draw_w_th=draw)
            sp = np.clip(self.target_w[self.site], 0.0, hi_d)
            # a plan that keeps the tank exactly at the reserve is not overridden
            low_f = usable < self.reserve_fraction - 1e-6
            power = np.where(follow, np.where(low_f, hi_d, sp), power)
        self.power_w = power
        return self.power_w

    def step_tank(self, t0_local_s: float, tick_s: float, ambient_c: float) -> dict[str, float]:
        draw = hp.draw_energy_wh_th(t0_local_s, tick_s, self.daily_draw_wh_th)
        self.state, f = hp.step(self.state, self.spec, self.power_w, tick_s, ambient_c, draw)
        to_w = SECONDS_PER_HOUR / tick_s
        # per-tick columns; the KPIs are their sums (experiment/kpis.py)
        self.last = {
            "heat_pump_w": float(f.electric_in_wh.sum()) * to_w,
            "heat_pump_heat_w_th": float(f.heat_in_wh_th.sum()) * to_w,
            "hot_water_delivered_w_th": float(f.draw_delivered_wh_th.sum()) * to_w,
            "hot_water_unmet_w_th": float(f.draw_unmet_wh_th.sum()) * to_w,
            "hpwh_tank_loss_w_th": float(f.loss_wh_th.sum()) * to_w,
            "hpwh_tank_temp_mean_c": float(self.state.tank_temp_c.mean()),
        }
        return self.last
