"""FEMS: factory with shift load, deferrable processes and on-site PV/battery.

Deferrable processes are the group's EV slots (the engine hook used, see
``docs/ems.md``): a slot is *plugged* while its process window is open, its
``ev_target_wh`` is the energy the process must receive, ``ev_departure_s``
its deadline, ``ev_charger_w`` its rated power.  Per decision (all processes at
once):

* **deadline first** — a process runs at rated power once its laxity is gone:
  ``remaining_wh / eff * 3600 / (rate_factor * P) >= time_left - margin_s``
  (``margin_s`` covers the decision interval, so the check is never too late);
* **PV surplus** — otherwise it takes the site's PV surplus (PV - load),
  shared among the site's processes in proportion to rated power;
* **cheap hours** — and runs at rated power when the import price is at or
  below ``cheap_price_jpy_per_kwh``.

The battery (``rule``) then does self-consumption on what is left:
``clip(-(load - pv + processes), lo, hi)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cps_sim.control.base import battery_setpoints
from cps_sim.control.ems.common import ev_effective_w, site_sum
from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import share_by_weight
from cps_sim.core.units import SECONDS_PER_HOUR


@dataclass(frozen=True)
class FemsConfig:
    process_efficiency: FloatArray  # per process slot (EV charge efficiency)
    interval_s: float = 60.0
    cheap_price_jpy_per_kwh: float = 0.0
    deadline_margin_s: float | None = None
    rate_factor: float = 0.95
    battery_mode: str = "rule"

    @property
    def margin_s(self) -> float:
        if self.deadline_margin_s is not None:
            return float(self.deadline_margin_s)
        return 2.0 * self.interval_s + 900.0


class FemsController:
    def __init__(self, cfg: FemsConfig, name: str = "fems"):
        self.cfg = cfg
        self.name = name
        self.interval_s = cfg.interval_s
        self.must_run_decisions = 0

    def process_setpoints_w(self, now_s: float, obs: Observation) -> FloatArray:
        cfg = self.cfg
        rated = obs.ev_charger_w
        remaining_ac_wh = (
            np.maximum(obs.ev_target_wh - obs.ev_energy_wh, 0.0) / cfg.process_efficiency
        )
        active = obs.ev_plugged & (remaining_ac_wh > 1e-6)
        time_left_s = obs.ev_departure_s - now_s
        need_s = remaining_ac_wh * SECONDS_PER_HOUR / (cfg.rate_factor * rated)
        must = active & (need_s >= time_left_s - cfg.margin_s)
        self.must_run_decisions += int(must.sum())
        surplus = np.maximum(obs.site_pv_w - obs.site_load_w, 0.0)
        share = share_by_weight(obs, surplus, np.where(active, rated, 0.0))
        cheap = obs.import_price_jpy_per_kwh[obs.ev_site] <= cfg.cheap_price_jpy_per_kwh
        # never more than the energy still needed within one interval
        cap_w = remaining_ac_wh * SECONDS_PER_HOUR / cfg.interval_s
        sp = np.where(must | cheap, rated, np.minimum(share, rated))
        sp = np.where(must, rated, np.minimum(sp, cap_w))  # a full process stops by itself
        return np.where(active, sp, 0.0)

    def site_process_setpoints_w(
        self, now_s: float, obs: Observation, used_w: FloatArray
    ) -> FloatArray | None:
        """The same rule for the engine's per-site deferrable processes (``deferrable:``):
        must-run when the laxity is gone, else PV surplus left after ``used_w``, or
        full power in cheap hours; never more than the energy still needed."""
        rated = obs.deferrable_max_w
        if rated is None or not np.any(rated > 0):
            return None
        cfg = self.cfg
        remaining = obs.deferrable_remaining_wh
        active = (rated > 0) & (remaining > 1e-6)
        need_s = remaining * SECONDS_PER_HOUR / (cfg.rate_factor * np.where(rated > 0, rated, 1.0))
        must = active & (need_s >= obs.deferrable_deadline_s - now_s - cfg.margin_s)
        self.must_run_decisions += int(must.sum())
        surplus = np.maximum(obs.site_pv_w - obs.site_load_w - used_w, 0.0)
        cheap = obs.import_price_jpy_per_kwh <= cfg.cheap_price_jpy_per_kwh
        cap_w = remaining * SECONDS_PER_HOUR / cfg.interval_s
        sp = np.where(must | cheap, rated, np.minimum(surplus, rated))
        sp = np.where(must, rated, np.minimum(sp, cap_w))
        return np.where(active, sp, 0.0)

    def decide(self, now_s: float, obs: Observation) -> dict[str, np.ndarray]:
        sp = self.process_setpoints_w(now_s, obs)
        out: dict[str, np.ndarray] = {"ev_setpoint_w": sp}
        slot_w = site_sum(obs, ev_effective_w(obs, sp))
        site_sp = self.site_process_setpoints_w(now_s, obs, slot_w)
        if site_sp is not None:
            out["deferrable_setpoint_w"] = site_sp
            slot_w = slot_w + site_sp
        if self.cfg.battery_mode == "rule":
            net = obs.site_load_w - obs.site_pv_w + slot_w
            lo, hi = obs.battery_range_w(self.cfg.interval_s)
            out.update(battery_setpoints(np.clip(-net, lo, hi), obs.battery_capacity_wh > 0))
        return out
