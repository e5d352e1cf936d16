"""HEMS: PV self-consumption with the home battery, EV strategy, DR response.

Per decision (all homes of a group at once, no per-home loop):

1. EVs: the named strategy of ``control/strategies`` decides (``pv`` by default).
2. Battery (``battery_mode``):
   * ``rule`` — after the EVs, the battery charges from the PV surplus and
     discharges into the deficit: ``p = clip(-(load - pv + ev), lo, hi)`` with
     ``lo/hi`` the power it can hold for one decision interval;
   * ``mpc`` — every ``replan_s`` one batched LP (``optimise.schedule_homes_chunked``)
     over ``horizon_steps`` with import/export prices, a PV forecast (perfect or
     noisy) and a persistence load forecast; between re-plans the plan's battery
     power of the current step is followed;
   * ``none`` — no battery setpoints.
3. DR (reduce import by ``X`` W per site during ``[start, end)``): the battery
   first discharges up to ``X`` more (never into export), then EV charging at
   the site is cut by what is still missing.  In the ``precharge_s`` before a
   window the battery does not discharge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cps_sim.control.ems.common import (
    EvDelegate,
    ev_effective_w,
    scale_ev_charging,
    site_sum,
)
from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.optimise import BatteryParams, HomeProblem, schedule_homes_chunked

# times_s (T,) -> (n_sites, T) PV power [W]; times_s (T,) -> (T,) price [JPY/kWh]
PvForecast = Callable[[FloatArray], FloatArray]
PriceForecast = Callable[[FloatArray], FloatArray]


@dataclass(frozen=True)
class MpcConfig:
    pv_forecast: PvForecast
    import_price_forecast: PriceForecast
    export_price_forecast: PriceForecast
    horizon_steps: int = 96
    step_s: float = 900.0
    replan_s: float = 3600.0
    final_soc: float = 0.3
    chunk_homes: int = 50


@dataclass(frozen=True)
class HemsConfig:
    ev: EvDelegate
    interval_s: float = 60.0
    battery_mode: str = "rule"  # rule | mpc | none
    dr_windows: tuple[tuple[float, float, float], ...] = ()  # (start_s, end_s, reduce_w/site)
    dr_precharge_s: float = 3 * 3600.0
    mpc: MpcConfig | None = None


@dataclass
class _MpcState:
    plan_start_s: float = np.nan
    battery_w: FloatArray | None = None  # (n_sites, T)
    load_hist_w: FloatArray | None = None  # (steps_per_day, n_sites) persistence
    solves: int = 0
    solve_time_s: float = 0.0


@dataclass
class HemsStats:
    dr_requested_w: list[float] = field(default_factory=list)
    dr_battery_w: list[float] = field(default_factory=list)
    dr_ev_cut_w: list[float] = field(default_factory=list)


class HemsController:
    """HEMS of a whole home group (``Controller`` protocol of ``control.base``)."""

    def __init__(self, cfg: HemsConfig, name: str = "hems"):
        if cfg.battery_mode not in ("rule", "mpc", "none"):
            raise ValueError(f"battery_mode must be rule, mpc or none, got {cfg.battery_mode!r}")
        if cfg.battery_mode == "mpc" and cfg.mpc is None:
            raise ValueError("battery_mode 'mpc' needs an MpcConfig")
        self.cfg = cfg
        self.name = name
        self.interval_s = cfg.interval_s
        self.mpc_state = _MpcState()
        self.stats = HemsStats()

    # ------------------------------------------------------------------ DR
    def _dr(self, now_s: float) -> tuple[float, bool]:
        """(reduction requested now [W per site], a window starts within the precharge time)."""
        red, pre = 0.0, False
        for a, b, x in self.cfg.dr_windows:
            if a <= now_s < b:
                red = max(red, x)
            elif 0.0 < a - now_s <= self.cfg.dr_precharge_s:
                pre = True
        return red, pre

    # ------------------------------------------------------------------ MPC
    def _mpc_battery_w(self, now_s: float, obs: Observation, ev_site_w: FloatArray) -> FloatArray:
        m = self.cfg.mpc
        st = self.mpc_state
        n = obs.n_sites
        per_day = max(1, round(86400.0 / m.step_s))
        if st.load_hist_w is None:
            st.load_hist_w = np.full((per_day, n), np.nan)
        slot = int(now_s // m.step_s) % per_day
        st.load_hist_w[slot] = obs.site_load_w
        due = (st.battery_w is None or not np.isfinite(st.plan_start_s)
               or now_s - st.plan_start_s >= m.replan_s - 1e-9)
        if due:
            t = now_s + m.step_s * np.arange(m.horizon_steps)
            slots = (t // m.step_s).astype(np.int64) % per_day
            hist = st.load_hist_w[slots].T  # (n, T)
            load = np.where(np.isnan(hist), obs.site_load_w[:, None], hist)
            load[:, 0] = obs.site_load_w + ev_site_w  # now is measured, EVs decided
            pv = np.asarray(m.pv_forecast(t), float).reshape(n, -1)
            pv[:, 0] = obs.site_pv_w
            b = obs.battery_spec
            cap = obs.battery_capacity_wh
            has = np.flatnonzero(cap > 0)
            plan = np.zeros((n, m.horizon_steps))
            if has.size:
                c = cap[has]
                soc = np.clip(obs.battery_energy_wh[has] / c, 0.0, 1.0)
                smin = b.energy_min_wh[has] / c
                smax = b.energy_max_wh[has] / c
                batt = BatteryParams(
                    capacity_wh=c, max_charge_w=b.max_charge_power_w[has],
                    max_discharge_w=b.max_discharge_power_w[has],
                    soc_init=np.clip(soc, smin, smax), soc_min=smin, soc_max=smax,
                    efficiency_charge=b.charge_efficiency[has],
                    efficiency_discharge=b.discharge_efficiency[has],
                    final_soc_min=np.clip(m.final_soc, smin, smax), wear_jpy_per_kwh=0.01)
                prob = HomeProblem(
                    dt_s=m.step_s, load_w=load[has], pv_w=pv[has],
                    import_price_jpy_per_kwh=np.asarray(m.import_price_forecast(t), float),
                    export_price_jpy_per_kwh=np.asarray(m.export_price_forecast(t), float),
                    battery=batt)
                sched = schedule_homes_chunked(prob, m.chunk_homes)
                plan[has] = sched.battery_power_w
                st.solve_time_s += sched.solve_time_s
            st.battery_w = plan
            st.plan_start_s = now_s
            st.solves += 1
        step = min(int((now_s - st.plan_start_s) // m.step_s), st.battery_w.shape[1] - 1)
        return st.battery_w[:, step]

    # ------------------------------------------------------------------ decide
    def decide(self, now_s: float, obs: Observation) -> dict[str, np.ndarray]:
        cfg = self.cfg
        out: dict[str, np.ndarray] = {}
        ev_sp = cfg.ev(now_s, obs)
        if ev_sp is None:  # EVs not controlled: assume they draw what their chargers allow
            ev_sp = np.where(obs.ev_plugged & (obs.ev_soc < 1.0), obs.ev_charger_w, 0.0)
            ev_controlled = False
        else:
            ev_controlled = True
        ev_site_w = site_sum(obs, ev_effective_w(obs, ev_sp))
        net_w = obs.site_load_w - obs.site_pv_w + ev_site_w
        lo, hi = obs.battery_range_w(cfg.interval_s)
        if cfg.battery_mode == "rule":
            bat = np.clip(-net_w, lo, hi)
        elif cfg.battery_mode == "mpc":
            bat = np.clip(self._mpc_battery_w(now_s, obs, ev_site_w), lo, hi)
        else:
            bat = None
        red_w, precharge = self._dr(now_s)
        if precharge and bat is not None:
            bat = np.maximum(bat, 0.0)
        if red_w > 0:
            b0 = bat if bat is not None else np.zeros(obs.n_sites)
            imp0 = np.maximum(net_w + b0, 0.0)
            want = np.minimum(red_w, imp0)
            # battery first: discharge more, but never into export
            more = np.minimum(want, np.maximum(b0 - lo, 0.0)) if bat is not None else 0.0 * b0
            if bat is not None:
                bat = b0 - more
            still = want - more
            ev_pos = site_sum(obs, np.maximum(ev_effective_w(obs, ev_sp), 0.0))
            cut = np.minimum(still, ev_pos)
            if cut.any():
                ev_sp = scale_ev_charging(obs, ev_sp, cut)
                ev_controlled = True
            self.stats.dr_requested_w.append(float(want.sum()))
            self.stats.dr_battery_w.append(float(np.sum(more)))
            self.stats.dr_ev_cut_w.append(float(cut.sum()))
        if ev_controlled:
            out["ev_setpoint_w"] = ev_sp
        if bat is not None:
            out["battery_setpoint_w"] = np.where(obs.battery_capacity_wh > 0, bat, np.nan)
        return out
