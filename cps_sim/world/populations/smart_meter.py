"""Smart meters at the sites of a group (``sites[i].smart_meter``), read over the B-route.

The meter measures the truth of each site's grid connection: the group hands it the
import and export of every segment (:meth:`SmartMeterPopulation.on_segment`), so its
cumulative energies are exact integrals, and the power of the last segment before
an instant is the site's instantaneous power there.  What it shows is the model of
:mod:`cps_sim.models.smart_meter`: registers in whole units that wrap, fixed at every
local 30-minute boundary (a tick end: the loader refuses a tick that does not divide
30 minutes or ticks that do not end on local boundaries), and the instantaneous power
in whole watts when a HEMS polls it (``poll``, a process of ``world/wiring.py``).

It books no energy (no ``FLOWS``) and changes nothing in the sites' physics.  Besides
the grid flows it follows the AC energy of the site's battery and EVs, which a HEMS
reads from those devices itself (ECHONET Lite storage battery / EV charger classes),
so that the HEMS can tell its own devices' power from the rest of the home's.
Observation fields (``Observation.extra``; NaN until the first reading):

* ``meter_power_w`` — polled instantaneous power (0xE7) [W, + import], per site;
  ``meter_devices_w`` — battery + EV power at the same instant; ``meter_poll_s``;
* ``meter_interval_import_wh`` / ``meter_interval_export_wh`` — energy of the last
  complete 30-minute interval from the registers (0xEA / 0xEB), at their resolution;
  ``meter_interval_devices_wh`` — the battery's and EVs' AC energy in it;
  ``meter_interval_end_s``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import smart_meter as sm
from cps_sim.world.populations.base import BuildContext, F, I, Population, TickContext


class SmartMeterPopulation(Population):
    key: ClassVar[str] = "smart_meter"
    order: ClassVar[int] = 90  # per tick, after every device

    def __init__(
        self,
        n: int,
        spec: sm.RegisterSpec,
        initial_import_wh: float = 0.0,
        initial_export_wh: float = 0.0,
        poll_s: float | None = None,
    ):
        self.n = n
        self.spec = spec
        self.poll_s = poll_s
        self.import_wh = np.full(n, float(initial_import_wh))  # counted since the register read 0
        self.export_wh = np.full(n, float(initial_export_wh))
        self.grid_w = np.zeros(n)  # last segment's net grid power [W, + import]
        self.devices_w = np.zeros(n)  # last segment's battery + EV AC power [W, + charge]
        self._dev_last = np.zeros(n)
        self._all = np.arange(n, dtype=np.int64)
        # readings at 30-minute boundaries: (t_s, import counts, export counts, power W)
        self.readings: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []
        self._boundary: list[tuple[float, np.ndarray, np.ndarray, F]] = []  # last two + devices
        self.poll_t = float("nan")
        self.poll_w = np.full(n, np.nan)
        self.poll_devices_w = np.full(n, np.nan)

    @classmethod
    def build(cls, ctx: BuildContext) -> SmartMeterPopulation | None:
        m = getattr(ctx.spec, "smart_meter", None)
        if m is None or not m.enabled:
            return None
        tick = float(ctx.scenario.tick_s)
        if sm.INTERVAL_S % tick != 0.0:
            raise ValueError(
                f"{ctx.path}.smart_meter: tick_s must divide 1800 s (the "
                f"registers are fixed every 30 minutes), got {tick:g}"
            )
        spec = sm.RegisterSpec(unit_kwh=float(m.resolution_kwh), digits=int(m.digits))
        return cls(
            ctx.n,
            spec,
            m.initial_import_kwh * 1000.0,
            m.initial_export_kwh * 1000.0,
            m.instantaneous_poll_s,
        )

    def attach(self, group) -> None:
        super().attach(group)
        group.meter = self
        group.batteries.track_ac_energy()
        if group.evs is not None:
            group.evs.track_ac_energy()

    # ------------------------------------------------------------------ measurement
    def _device_wh(self) -> F:
        """AC energy booked by each site's battery and EVs so far [Wh, + charge]."""
        g = self.group
        out = np.array(g.batteries.ac_energy_wh, dtype=float, copy=True)
        evs = g.evs
        if evs is not None and evs.n and evs.ac_energy_wh is not None:
            out += np.bincount(evs.site, weights=evs.ac_energy_wh, minlength=self.n)
        return out

    def on_segment(self, s: I | None, imp_wh: F, exp_wh: F, dt_s: F) -> None:
        """Book one segment of sites ``s`` (None: all): exact integrals, and the
        segment's power as the instantaneous power from its end on."""
        idx = self._all if s is None else s
        self.import_wh[idx] += imp_wh
        self.export_wh[idx] += exp_wh
        dt = np.broadcast_to(np.asarray(dt_s, dtype=float), np.shape(imp_wh))
        moved = dt > 1e-9
        if not moved.any():
            return
        dev = self._device_wh()[idx]
        d_dev = dev - self._dev_last[idx]
        self._dev_last[idx] = dev
        i = idx[moved]
        to_w = SECONDS_PER_HOUR / dt[moved]
        self.grid_w[i] = (imp_wh - exp_wh)[moved] * to_w
        self.devices_w[i] = d_dev[moved] * to_w

    def registers(self) -> tuple[np.ndarray, np.ndarray]:
        """(import, export) register counts now."""
        return sm.register(self.import_wh, self.spec), sm.register(self.export_wh, self.spec)

    def poll(self, t_s: float) -> None:
        """A HEMS reads the instantaneous power (0xE7) and its own devices' power now."""
        self.poll_t = float(t_s)
        self.poll_w = sm.instantaneous_w(self.grid_w).astype(float)
        self.poll_devices_w = self.devices_w.copy()

    def _read(self, t_s: float) -> None:
        imp, exp = self.registers()
        self.readings.append(
            (t_s, imp.astype(np.int32), exp.astype(np.int32), sm.instantaneous_w(self.grid_w))
        )
        self._boundary = [*self._boundary[-1:], (t_s, imp, exp, self._device_wh())]

    # ------------------------------------------------------------------ per tick
    def begin_tick(self, ctx: TickContext) -> None:
        if ctx.k == 0 and not self.readings and self._is_boundary(ctx, 0.0):
            self._read(0.0)  # the registers where the run starts

    def end_tick(self, ctx: TickContext) -> dict[str, float]:
        t_end = ctx.t0_s + ctx.tick_s
        if self._is_boundary(ctx, t_end):
            self._read(t_end)
        return {}

    @staticmethod
    def _is_boundary(ctx: TickContext, t_s: float) -> bool:
        clock = ctx.world.clock
        local = t_s - clock.local_midnight_s(t_s)
        return bool(sm.is_boundary(np.array([local]))[0])

    def observe(self) -> dict[str, Any]:
        nan = np.full(self.n, np.nan)
        out: dict[str, Any] = {
            "meter_power_w": self.poll_w.copy(),
            "meter_devices_w": self.poll_devices_w.copy(),
            "meter_poll_s": self.poll_t,
        }
        if len(self._boundary) == 2:
            (t0, i0, e0, d0), (t1, i1, e1, d1) = self._boundary
            out.update(
                meter_interval_import_wh=sm.interval_wh(i1, i0, self.spec),
                meter_interval_export_wh=sm.interval_wh(e1, e0, self.spec),
                meter_interval_devices_wh=d1 - d0,
                meter_interval_end_s=t1,
                meter_interval_s=t1 - t0,
            )
        else:
            out.update(
                meter_interval_import_wh=nan,
                meter_interval_export_wh=nan.copy(),
                meter_interval_devices_wh=nan.copy(),
                meter_interval_end_s=float("nan"),
                meter_interval_s=float("nan"),
            )
        return out
