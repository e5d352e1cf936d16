"""Battery capacity fade in the engine: calendar + cycle ageing once a day.

The daily step calls :func:`cps_sim.models.battery_ageing.age` (NREL BLAST-Lite
form power laws, which advance by the equivalent-time rule, so a daily cadence
agrees with a per-step one for constant stress) with the equivalent full cycles
counted from the day's AC throughput, the SoC at the step, and the day's mean air
temperature.  The model returns a new battery spec with the shrunken capacity
(the SoC window shrinks with it); the group takes it, and the energy stranded
above the new window is logged as ``battery_fade_wh`` so the ledger closes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cps_sim.models import battery as bat
from cps_sim.models import battery_ageing as ag
from cps_sim.world.group import IX, SiteGroup


@dataclass
class BatteryAgeing:
    idx: np.ndarray  # sites with a battery
    params: ag.AgeingSpec
    state: ag.AgeingState

    @classmethod
    def for_group(cls, group: SiteGroup, preset: str) -> BatteryAgeing:
        idx = np.flatnonzero(group.battery.capacity_wh > 0)
        sub = _subset(group.battery, idx)
        group.battery_throughput_wh = np.zeros(group.n)
        return cls(idx, ag.ageing_spec(idx.size, preset), ag.initial_state(sub))

    def step(self, group: SiteGroup, elapsed_s: float, temperature_c: float) -> float:
        """Age by ``elapsed_s``; returns the stranded energy [Wh] (already booked)."""
        i = self.idx
        if i.size == 0:
            return 0.0
        d_efc = group.battery_throughput_wh[i] / (2.0 * self.state.nominal_capacity_wh)
        group.battery_throughput_wh[i] = 0.0
        spec = group.battery
        sub = _subset(spec, i)
        e = group.battery_energy_wh[i]
        soc = e / np.maximum(sub.capacity_wh, 1e-9)
        new_sub, self.state, e_end, stranded = ag.age(
            sub, self.params, self.state, e, elapsed_s, d_efc, soc, temperature_c
        )
        cap = spec.capacity_wh.copy()
        cap[i] = new_sub.capacity_wh
        group.battery = replace(spec, capacity_wh=cap)  # a new spec, never written into
        group.battery_energy_wh[i] = e_end
        lost = float(stranded.sum())
        group.acc[IX["battery_fade_wh"]] += lost
        return lost

    def state_of_health(self, group: SiteGroup) -> np.ndarray:
        return group.battery.capacity_wh[self.idx] / self.state.nominal_capacity_wh


def _subset(spec: bat.BatterySpec, idx: np.ndarray) -> bat.BatterySpec:
    names = (
        "capacity_wh",
        "max_charge_power_w",
        "max_discharge_power_w",
        "charge_efficiency",
        "discharge_efficiency",
        "soc_min",
        "soc_max",
        "taper_soc",
        "self_discharge_per_month",
    )
    return bat.BatterySpec(**{k: getattr(spec, k)[idx] for k in names})
