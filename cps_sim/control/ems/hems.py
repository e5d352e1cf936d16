"""HEMS: PV self-consumption with the home battery, EV strategy, DR response.

Per decision (all homes of a group at once, no per-home loop):

1. EVs: the named strategy of ``control/strategies`` decides (``pv`` by default).
2. Battery (``battery_mode``):
   * ``rule`` — after the EVs, the battery charges from the PV surplus and
     discharges into the deficit: ``p = clip(-(load - pv + ev), lo, hi)`` with
     ``lo/hi`` the power it can hold for one decision interval;
   * ``mpc`` — receding-horizon co-planning of the battery, the plugged-in EVs and the
     heat-pump water heaters
     (``hems_mpc.HomeMpc``: the oracle's per-site LP over ``horizon_steps`` with
     price, PV and load forecasts, departure targets; re-planned every ``replan_s``
     and, per home, when its plugged-in EVs change); between re-plans the plan's
     current step is followed.  With ``plan_evs`` off the EVs follow their strategy
     and only the battery is planned;
   * ``none`` — no battery setpoints.

   With ``observe="meter"`` the rule balances the home's net demand as the smart
   meter lets the HEMS estimate it (``meter_view.own_net_w``: polled B-route power
   minus its own battery and EVs, else the last 30-minute registers) instead of the
   tick's true load and PV.
3. DR (reduce import by ``X`` W per site during ``[start, end)``): the battery
   first discharges up to ``X`` more (never into export), then EV charging at
   the site is cut by what is still missing.  In the ``precharge_s`` before a
   window the battery does not discharge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cps_sim.control.base import battery_setpoints
from cps_sim.control.ems.common import (
    EvDelegate,
    ev_effective_w,
    site_sum,
)
from cps_sim.control.ems.hems_mpc import HomeMpc, MpcConfig, MpcState
from cps_sim.control.ems.meter_view import own_net_w
from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import (
    StrategyConfig,
    StrategyState,
    departure_and_target,
    reserve_wh,
)


@dataclass(frozen=True)
class HemsConfig:
    ev: EvDelegate
    interval_s: float = 60.0
    battery_mode: str = "rule"  # rule | mpc | none
    dr_windows: tuple[tuple[float, float, float], ...] = ()  # (start_s, end_s, reduce_w/site)
    dr_precharge_s: float = 3 * 3600.0
    mpc: MpcConfig | None = None
    observe: str = "truth"  # truth | meter: the home's net demand from the smart meter


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
        if cfg.observe not in ("truth", "meter"):
            raise ValueError(f"observe must be truth or meter, got {cfg.observe!r}")
        if cfg.observe == "meter" and cfg.battery_mode == "mpc":
            raise ValueError("observe 'meter' works with battery_mode 'rule' (or 'none')")
        if cfg.battery_mode == "mpc" and cfg.mpc is None:
            raise ValueError("battery_mode 'mpc' needs an MpcConfig")
        self.cfg = cfg
        self.name = name
        self.interval_s = cfg.interval_s
        self.mpc = HomeMpc(cfg.mpc, self._departures) if cfg.battery_mode == "mpc" else None
        self.stats = HemsStats()

    @property
    def mpc_state(self) -> MpcState | None:
        return self.mpc.state if self.mpc is not None else None

    def _strategy_cfg(self) -> StrategyConfig:
        """The delegated EV strategy's configuration (defaults without one)."""
        d = self.cfg.ev
        return d.cfg if isinstance(d, EvDelegate) and d.cfg is not None else StrategyConfig()

    def _departures(self, now_s: float, obs: Observation) -> tuple[FloatArray, FloatArray]:
        """Each EV's next departure and target, as its delegated strategy assumes them."""
        d = self.cfg.ev
        cfg = self._strategy_cfg()
        state = (
            d.state
            if isinstance(d, EvDelegate) and d.state is not None
            else StrategyState.initial(obs.n_evs)
        )
        return departure_and_target(now_s, obs, state, cfg)

    # ------------------------------------------------------------------ DR
    def _dr(self, now_s: float) -> tuple[float, float, bool]:
        """(reduction requested now [W per site], end of the active window [s],
        a window starts within the precharge time)."""
        red, end, pre = 0.0, now_s, False
        for a, b, x in self.cfg.dr_windows:
            if a <= now_s < b:
                red, end = max(red, x), max(end, b)
            elif 0.0 < a - now_s <= self.cfg.dr_precharge_s:
                pre = True
        return red, end, pre

    def _ev_floor_w(self, now_s: float, end_s: float, obs: Observation) -> FloatArray:
        """Least charging power [W] per EV during a DR window that keeps its departure
        target reachable: the energy it must hold at the window's end (or at its
        departure, if earlier) under ``reserve_wh``, spread over the time to then."""
        scfg = self._strategy_cfg()
        dep, target = self._departures(now_s, obs)
        t = np.minimum(dep, end_s)
        must_wh = reserve_wh(end_s, obs, dep, target, scfg)
        must_wh = np.where(dep <= end_s, target, must_wh)
        short_wh = np.maximum(must_wh - obs.ev_soc * obs.ev_capacity_wh, 0.0)
        left_s = np.maximum(t - now_s, self.cfg.interval_s)
        floor_w = short_wh / scfg.charge_efficiency / left_s * 3600.0
        return np.where(obs.ev_plugged, np.minimum(floor_w, obs.ev_charger_w), 0.0)

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
        own_w = own_net_w(obs) if cfg.observe == "meter" else obs.site_load_w - obs.site_pv_w
        net_w = own_w + ev_site_w
        lo, hi = obs.battery_range_w(cfg.interval_s)
        if cfg.battery_mode == "rule":
            bat = np.clip(-net_w, lo, hi)
        elif cfg.battery_mode == "mpc":
            plan_b, plan_ev = self.mpc.step(now_s, obs, ev_sp if ev_controlled else None, ev_site_w)
            if plan_ev is not None:
                ev_sp, ev_controlled = plan_ev, True
                ev_site_w = site_sum(obs, ev_effective_w(obs, ev_sp))
                net_w = obs.site_load_w - obs.site_pv_w + ev_site_w
            bat = np.clip(plan_b, lo, hi)
        else:
            bat = None
        red_w, end_s, precharge = self._dr(now_s)
        if precharge and bat is not None:
            bat = np.maximum(bat, 0.0)
        if red_w > 0:
            # A DR window: EV charging pauses down to what departures still need (it
            # is the deferrable load: it catches up after the window), then the
            # battery covers what the home still imports and is not charged from
            # the grid.  The battery never feeds EV charging that could wait, so its
            # energy lasts the window.
            b0 = bat if bat is not None else np.zeros(obs.n_sites)
            want = np.minimum(red_w, np.maximum(net_w + b0, 0.0))
            eff = ev_effective_w(obs, ev_sp)
            keep = np.minimum(np.maximum(eff, 0.0), self._ev_floor_w(now_s, end_s, obs))
            new_sp = np.where(eff > 0, keep, ev_sp)
            cut = site_sum(obs, np.maximum(eff, 0.0) - np.where(eff > 0, keep, 0.0))
            if cut.any():
                ev_sp, ev_controlled = new_sp, True
                net_w = net_w - cut
            more = np.zeros(obs.n_sites)
            if bat is not None:
                cover = np.clip(-net_w, lo, hi)  # discharge to cover the import
                bat = np.where(net_w > 0, cover, np.clip(np.minimum(b0, -net_w), lo, hi))
                more = np.maximum(b0 - bat, 0.0)
            self.stats.dr_requested_w.append(float(want.sum()))
            self.stats.dr_battery_w.append(float(np.sum(more)))
            self.stats.dr_ev_cut_w.append(float(cut.sum()))
        if ev_controlled:
            out["ev_setpoint_w"] = ev_sp
        if bat is not None:
            out.update(battery_setpoints(bat, obs.battery_capacity_wh > 0))
        if self.mpc is not None:  # the planned water heaters (hpwh_setpoint_w, hpwh_mode)
            out.update(self.mpc.device_setpoints(now_s, obs))
        return out
