"""BEMS: monthly peak-demand-charge minimisation for buildings with PV, battery
and EV parking.

A demand charge is billed on the month's highest demand-interval average
import (Japan: 30-min demand, 最大需要電力).  Once a peak is set in a month,
shaving below it saves nothing, so each site keeps an import *threshold*
``thr = max(initial, month's peak so far)`` (reset to ``initial`` at each local
month start) and, per decision (all sites at once):

1. EVs: the named strategy decides (``now`` by default); then charging is
   throttled so that ``load - pv + ev <= thr + battery discharge available``
   (shared by ``strategies.common.allocate_under_limit``: earliest departure
   first at minimum current, the rest in proportion);
2. battery: above the threshold it discharges ``net - thr``; with PV surplus it
   charges from it; below the threshold and under ``recharge_soc`` it
   recharges from the grid within ``headroom_fraction * thr - net``; it never
   discharges below the threshold (its energy is kept for the peaks);
3. the demand-interval average of the resulting import (as decided) updates
   the month's peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cps_sim.control.base import battery_setpoints
from cps_sim.control.ems.common import (
    Calendar,
    EvDelegate,
    ev_effective_w,
    site_sum,
)
from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import allocate_under_limit
from cps_sim.core.units import SECONDS_PER_HOUR


@dataclass(frozen=True)
class BemsConfig:
    ev: EvDelegate
    calendar: Calendar
    initial_threshold_w: float | FloatArray = 0.0
    interval_s: float = 60.0
    demand_interval_s: float = 1800.0
    recharge_soc: float = 0.9
    headroom_fraction: float = 0.9
    min_ev_w: float = 1200.0  # minimum charging power (6 A x 200 V)


@dataclass
class BemsState:
    month: int = -1
    peak_w: FloatArray | None = None  # month's peak demand-interval average so far, per site
    window: int = -1
    window_wh: FloatArray | None = None
    window_h: float = 0.0
    last_t_s: float = np.nan
    last_import_w: FloatArray | None = None
    history_thr_w: list[float] = field(default_factory=list)


class BemsController:
    def __init__(self, cfg: BemsConfig, name: str = "bems"):
        self.cfg = cfg
        self.name = name
        self.interval_s = cfg.interval_s
        self.state = BemsState()

    def _meter(self, now_s: float, n: int) -> None:
        """Integrate the last decided import into the demand window; close windows."""
        st = self.state
        cfg = self.cfg
        if st.window_wh is None:
            st.window_wh = np.zeros(n)
            st.peak_w = np.zeros(n)
        if st.last_import_w is not None and np.isfinite(st.last_t_s):
            t = st.last_t_s
            while t < now_s - 1e-9:  # at most a few windows per decision
                w_end = (np.floor(t / cfg.demand_interval_s + 1e-9) + 1) * cfg.demand_interval_s
                seg_end = min(w_end, now_s)
                st.window_wh += st.last_import_w * (seg_end - t) / SECONDS_PER_HOUR
                st.window_h += (seg_end - t) / SECONDS_PER_HOUR
                t = seg_end
                if t >= w_end - 1e-9:
                    avg = st.window_wh / (cfg.demand_interval_s / SECONDS_PER_HOUR)
                    np.maximum(st.peak_w, avg, out=st.peak_w)
                    st.window_wh.fill(0.0)
                    st.window_h = 0.0
        month = cfg.calendar.month_of(now_s)
        if month != st.month:
            st.month = month
            st.peak_w.fill(0.0)

    def decide(self, now_s: float, obs: Observation) -> dict[str, np.ndarray]:
        cfg = self.cfg
        n = obs.n_sites
        self._meter(now_s, n)
        st = self.state
        thr = np.maximum(
            np.broadcast_to(np.asarray(cfg.initial_threshold_w, float), (n,)), st.peak_w
        )
        lo, hi = obs.battery_range_w(cfg.interval_s)
        base = obs.site_load_w - obs.site_pv_w
        out: dict[str, np.ndarray] = {}
        ev_sp = cfg.ev(now_s, obs)
        if ev_sp is None:
            ev_sp = np.where(obs.ev_plugged & (obs.ev_soc < 1.0), obs.ev_charger_w, 0.0)
        want = np.maximum(ev_effective_w(obs, ev_sp), 0.0)
        budget = thr - lo - base  # -lo = discharge available
        key = obs.ev_departure_s + 1e-3 * obs.ev_soc
        charge = allocate_under_limit(obs, budget, want, cfg.min_ev_w, key)
        ev_sp = np.where(ev_sp < 0, ev_sp, charge)
        out["ev_setpoint_w"] = ev_sp
        net = base + site_sum(obs, ev_effective_w(obs, ev_sp))
        cap = obs.battery_capacity_wh
        soc = np.divide(obs.battery_energy_wh, cap, out=np.ones(n), where=cap > 0)
        recharge = np.where(
            soc < cfg.recharge_soc, np.maximum(cfg.headroom_fraction * thr - net, 0.0), 0.0
        )
        bat = np.where(net > thr, thr - net, np.where(net < 0, -net, recharge))
        bat = np.clip(bat, lo, hi)
        out.update(battery_setpoints(bat, cap > 0))
        st.last_import_w = np.maximum(net + np.where(cap > 0, bat, 0.0), 0.0)
        st.last_t_s = now_s
        st.history_thr_w.append(float(thr.max()))
        return out
