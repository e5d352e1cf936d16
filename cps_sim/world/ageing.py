"""Battery capacity fade in the engine: calendar + cycle ageing once a day.

The daily step calls ``models.storage.age`` (NREL BLAST-Lite-form power laws,
which advance by the equivalent-time rule, so a daily cadence agrees with a
per-step one for constant stress) with the equivalent full cycles counted from
the day's AC throughput, the SoC at the step, and the day's mean air
temperature.  The shrunken capacity narrows the SoC window; energy stranded
above the new window is logged as ``battery_fade_wh`` so the ledger closes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cps_sim.models import storage
from cps_sim.world.group import IX, SiteGroup


@dataclass
class BatteryAgeing:
    idx: np.ndarray  # sites with a battery
    spec: storage.BatterySpec
    state: storage.BatteryState
    nominal_wh: np.ndarray
    soc_min: float
    soc_max: float

    @classmethod
    def for_group(cls, group: SiteGroup, preset: str, soc_min: float, soc_max: float
                  ) -> BatteryAgeing:
        idx = np.flatnonzero(group.battery.capacity_wh > 0)
        cap = group.battery.capacity_wh[idx].copy()
        spec = storage.battery_spec(idx.size, preset, capacity_wh=cap)
        state = storage.initial_state(spec, 0.5)
        state = replace(state, energy_wh=group.battery_energy_wh[idx].copy())
        group.battery_throughput_wh = np.zeros(group.n)
        return cls(idx, spec, state, cap, soc_min, soc_max)

    def step(self, group: SiteGroup, elapsed_s: float, temperature_c: float) -> float:
        """Age by ``elapsed_s``; returns the stranded energy [Wh] (already booked)."""
        i = self.idx
        if i.size == 0:
            return 0.0
        d_efc = group.battery_throughput_wh[i] / (2.0 * self.nominal_wh)
        group.battery_throughput_wh[i] = 0.0
        state = replace(self.state, energy_wh=group.battery_energy_wh[i].copy())
        soc = state.energy_wh / np.maximum(state.capacity_wh, 1e-9)
        new, _ = storage.age(state, self.spec, elapsed_s, d_efc, soc, temperature_c)
        self.state = replace(new, efc=new.efc + d_efc, age_s=new.age_s + elapsed_s)
        cap = new.capacity_wh
        b = group.battery
        b.capacity_wh[i] = cap
        b.energy_max_wh[i] = cap * self.soc_max
        b.energy_min_wh[i] = cap * self.soc_min
        e = group.battery_energy_wh[i]
        stranded = np.maximum(e - b.energy_max_wh[i], 0.0)
        group.battery_energy_wh[i] = e - stranded
        lost = float(stranded.sum())
        group.acc[IX["battery_fade_wh"]] += lost
        return lost

    def state_of_health(self) -> np.ndarray:
        return self.state.capacity_wh / self.nominal_wh
