"""A controller that follows a precomputed schedule, one set-point set per tick.

The oracle (``control/oracle/``) computes per-tick set-points over the
whole run; :class:`ScheduleController` sends them through the ordinary
controller path (``control.base.controller_process`` -> transport ->
``device_process`` -> ``World.apply``), deciding at every tick start, so that
the schedule is replayed by the same engine, with the same physics, as every
other strategy.
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.core.bus import BATTERY_AUTO, BATTERY_FOLLOW, HPWH_AUTO, HPWH_FOLLOW


class ScheduleController:
    """Sends column ``k`` of each schedule at the start of tick ``k``.

    ``ev_setpoint_w`` is (n_evs, T), ``battery_setpoint_w`` and
    ``deferrable_setpoint_w`` and ``hpwh_setpoint_w`` are (n_sites, T); any of them may
    be None (the key is not sent).  A NaN in the battery schedule stands for the built-in
    rule: it is sent as ``battery_mode`` = ``BATTERY_AUTO`` (NaN never goes on the bus);
    likewise ``hpwh_mode`` = ``HPWH_AUTO`` for a NaN in the water-heater schedule.  Sent
    at the tick start, a water-heater setpoint decides that tick.
    """

    def __init__(
        self,
        tick_s: float,
        *,
        ev_setpoint_w: FloatArray | None = None,
        battery_setpoint_w: FloatArray | None = None,
        deferrable_setpoint_w: FloatArray | None = None,
        hpwh_setpoint_w: FloatArray | None = None,
        name: str = "schedule",
    ):
        self.name = name
        self.interval_s = float(tick_s)
        self.tick_s = float(tick_s)
        self.plans = {
            k: np.asarray(v, float)
            for k, v in (
                ("ev_setpoint_w", ev_setpoint_w),
                ("battery_setpoint_w", battery_setpoint_w),
                ("deferrable_setpoint_w", deferrable_setpoint_w),
                ("hpwh_setpoint_w", hpwh_setpoint_w),
            )
            if v is not None
        }
        bat = self.plans.get("battery_setpoint_w")
        if bat is not None:
            auto = np.isnan(bat)
            self.plans["battery_setpoint_w"] = np.where(auto, 0.0, bat)
            self.plans["battery_mode"] = np.where(auto, BATTERY_AUTO, BATTERY_FOLLOW)
        hw = self.plans.get("hpwh_setpoint_w")
        if hw is not None:
            auto = np.isnan(hw)
            self.plans["hpwh_setpoint_w"] = np.where(auto, 0.0, hw)
            self.plans["hpwh_mode"] = np.where(auto, HPWH_AUTO, HPWH_FOLLOW)
        lengths = {v.shape[1] for v in self.plans.values()}
        if len(lengths) > 1:
            raise ValueError(f"schedules of different lengths: {sorted(lengths)} ticks")
        self.n_ticks = lengths.pop() if lengths else 0

    def decide(self, now_s: float, observation: Observation) -> dict[str, np.ndarray]:
        k = min(max(round(now_s / self.tick_s), 0), max(self.n_ticks - 1, 0))
        return {key: plan[:, k].copy() for key, plan in self.plans.items()}
