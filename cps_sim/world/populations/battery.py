"""Stationary batteries at sites (capacity 0 where a site has none).

The battery responds to what the other devices of its site did in the segment:
by default (``control: self_consumption``) it charges from the site's surplus
and discharges into its deficit; a controller's ``battery_setpoint_w`` fixes its
power instead, never exporting a forced discharge beyond the site's export
limit.  ``battery_mode`` (per site) says which applies: ``BATTERY_FOLLOW`` (0)
follows ``battery_setpoint_w``, ``BATTERY_AUTO`` (1) the built-in rule; a
``battery_setpoint_w`` applied without ``battery_mode`` puts every site on
``BATTERY_FOLLOW``.  NaN is never a valid setpoint.  The step is the battery model's own
(:func:`cps_sim.models.battery.exchange_wh`: power limits, energy window,
efficiencies, exact CC-CV taper), followed by self-discharge.  Capacity fade
runs once a day (``world/ageing.py``) and replaces the spec.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cps_sim.core.bus import BATTERY_AUTO, BATTERY_FOLLOW
from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import battery as bat
from cps_sim.world.populations.base import F, Flow, Population, Segment, SetpointKey


class BatteryPopulation(Population):
    key: ClassVar[str] = "battery"
    order: ClassVar[int] = 30
    segment_physics: ClassVar[bool] = True
    FLOWS: ClassVar[tuple[Flow, ...]] = (
        Flow("battery_charge_wh", "info", "AC energy into batteries"),
        Flow("battery_discharge_wh", "info", "AC energy out of batteries"),
        Flow("battery_loss_wh", "sink", "conversion losses and self-discharge"),
        Flow("battery_fade_wh", "sink", "energy stranded above an aged battery's window"),
    )
    SETPOINTS: ClassVar[tuple[SetpointKey, ...]] = (
        SetpointKey(
            "battery_setpoint_w",
            "site",
            "AC power per site, + charge / − discharge "
            "(sites whose battery_mode is BATTERY_FOLLOW)",
        ),
        SetpointKey(
            "battery_mode",
            "site",
            "BATTERY_FOLLOW (0) = follow battery_setpoint_w, "
            "BATTERY_AUTO (1) = the built-in self-consumption rule",
            choices=(BATTERY_FOLLOW, BATTERY_AUTO),
        ),
    )
    OBSERVES: ClassVar[tuple[str, ...]] = (
        "battery_energy_wh",
        "battery_capacity_wh",
        "battery_power_w",
        "battery_spec",
    )

    def __init__(self, spec: bat.BatterySpec, energy_wh: F, control: str):
        n = spec.n
        self.spec = spec
        self.energy_wh = energy_wh
        self.active = control == "self_consumption"
        self.target_w = np.zeros(n)  # battery_setpoint_w as applied
        self.mode = np.full(n, BATTERY_AUTO)  # battery_mode as applied
        # internal: the setpoint where a site follows one, NaN where it runs the rule
        self.setpoint_w = np.full(n, np.nan)
        self.setpoints = False  # some site follows a setpoint
        self.power_w = np.zeros(n)  # average of the latest segment, + charge
        self.track_power = False  # switched on when a controller observes the group
        self.ageing = None  # world.ageing.BatteryAgeing when capacity fade is modelled
        self.throughput_wh: F | None = None  # AC charge + discharge since the last ageing
        self.measured_w: F | None = None  # bound to external devices: NaN where modelled
        self.measured_wh: F | None = None
        # AC energy booked per site since track_ac_energy() (+ charge / − discharge)
        self.ac_energy_wh: F | None = None
        self._has_for: bat.BatterySpec | None = None  # the spec _bidx was computed for
        self._bidx: np.ndarray | None = None  # sites with a battery (None: nearly all)
        self._bspec: bat.BatterySpec | None = None  # the spec of the _bidx sites

    @property
    def has(self) -> np.ndarray:
        return self.spec.capacity_wh > 0

    def stored_wh(self) -> float:
        return float(self.energy_wh.sum())

    def observe(self) -> dict[str, Any]:
        self.track_power = True
        return dict(
            battery_energy_wh=self.energy_wh.copy(),
            battery_capacity_wh=self.spec.capacity_wh.copy(),
            battery_power_w=self.power_w.copy(),
            battery_spec=self.spec,
        )

    def apply(self, key: str, value: F) -> None:
        """``World.apply`` calls ``battery_setpoint_w`` before ``battery_mode``."""
        if key == "battery_setpoint_w":
            self.target_w = value
            self.mode = np.full(self.spec.n, BATTERY_FOLLOW)
        else:
            self.mode = value
        self._derive()
        if self.setpoints and not self.active:
            self.active = True
            self.group.update_coupling()  # active batteries couple their sites

    def _derive(self) -> None:
        self.setpoint_w = np.where(self.mode == BATTERY_AUTO, np.nan, self.target_w)
        self.setpoints = bool((self.mode == BATTERY_FOLLOW).any())

    def track_ac_energy(self) -> F:
        """Start keeping :attr:`ac_energy_wh` (booked AC energy per site) and return it."""
        if self.ac_energy_wh is None:
            self.ac_energy_wh = np.zeros(self.spec.n)
        return self.ac_energy_wh

    def set_measured(self, index: int, power_w: float) -> None:
        if self.measured_w is None:
            n = self.spec.n
            self.measured_w = np.full(n, np.nan)
            self.measured_wh = np.zeros(n)
            if not self.active:  # the others stay idle (0 W)
                self.active = True
                self.target_w = np.zeros(n)
                self.mode = np.full(n, BATTERY_FOLLOW)
                self._derive()
                self.group.update_coupling()
        self.measured_w[index] = power_w

    # ------------------------------------------------------------------ segment
    def next_event_s(self, seg: Segment, t_next: F) -> None:
        """A battery that becomes full or empty (or meets its taper line) where an import
        or export limit makes the timing matter; without a limit the grid takes any
        power, and energy totals are exact whatever the timing."""
        g = self.group
        if not (self.active and (g.any_import_limit or g.any_export_limit)):
            return
        sl = seg.sl
        net_w = g.inputs.load_w[sl] - g.inputs.pv_w[sl]
        if seg.power_w is not None:
            net_w = net_w + seg.power_w
        b = self.spec
        e = self.energy_wh[sl]
        charging = net_w < 0
        want = np.abs(net_w)
        if self.setpoints:
            sp = self.setpoint_w[sl]
            fixed = ~np.isnan(sp)
            charging = np.where(fixed, sp > 0, charging)
            want = np.where(fixed, np.abs(np.nan_to_num(sp)), want)
        rate = np.minimum(
            want, np.where(charging, b.max_charge_power_w[sl], b.max_discharge_power_w[sl])
        )
        # a charging battery changes its power where it meets the CC-CV taper line
        top = (
            bat.taper_start_wh(
                b.energy_max_wh[sl], b.energy_taper_wh[sl], b.max_charge_power_w[sl], rate
            )
            if b.any_taper
            else b.energy_max_wh[sl]
        )
        room = np.where(
            charging,
            (top - e) / b.charge_efficiency[sl],
            (e - b.energy_min_wh[sl]) * b.discharge_efficiency[sl],
        )
        active = (rate > 0) & (room > 1e-6)
        if self.measured_w is not None:
            active &= np.isnan(self.measured_w[sl])
        t_bat = np.where(active, room * SECONDS_PER_HOUR / np.where(active, rate, 1.0), np.inf)
        np.minimum(t_next, t_bat, out=t_next)

    def _battery_sites(self, seg: Segment) -> tuple[Any, Any]:
        """(sites, positions in the segment's arrays) of the segment's sites that have a
        battery (or a bound one): the others exchange nothing, so the step skips them.
        ``(seg.sl, None)`` when (nearly) every site has one."""
        spec = self.spec
        if self._has_for is not spec:  # the spec is replaced by ageing and by controllers
            self._has_for = spec
            has = self.has
            self._bidx = np.flatnonzero(has) if has.mean() < 0.75 else None
            # the full segment's batteries as one compact spec (no gathers per step)
            self._bspec = spec.take(self._bidx) if self._bidx is not None else None
        if self._bidx is None or self.measured_w is not None:
            return seg.sl, None
        if seg.s is None:
            return self._bidx, self._bidx
        loc = np.flatnonzero(spec.capacity_wh[seg.s] > 0)
        return seg.s[loc], loc

    def exchange(self, seg: Segment) -> None:
        g, acc, ix = self.group, seg.acc, self.group.ix
        sl, loc = self._battery_sites(seg)
        h, dt_s = seg.h, seg.dt_s
        if loc is not None and np.ndim(h):
            h, dt_s = h[loc], dt_s[loc]
        # the full segment with batteries at some sites: their compact spec and energies
        compact = self._bspec is not None and sl is self._bidx
        spec, e_arr, sel = (
            (self._bspec, self.energy_wh[sl], bat.ALL)
            if compact
            else (self.spec, self.energy_wh, sl)
        )
        if self.active:
            net_wh = seg.net_wh if loc is None else seg.net_wh[loc]
            if self.setpoints:  # NaN (battery_mode auto): the built-in rule
                sp = self.setpoint_w[sl]
                desired = np.where(np.isnan(sp), -net_wh, sp * h)
                if g.any_export_limit:  # forced discharge must not export beyond it
                    floor = np.minimum(-(net_wh + g.export_limit_w[sl] * h), 0.0)
                    desired = np.maximum(desired, floor)
            else:
                desired = -net_wh
            meas_wh = None
            if self.measured_w is not None:
                bm = self.measured_w[sl]
                meas = ~np.isnan(bm)
                desired = np.where(meas, 0.0, desired)
                meas_wh = np.where(meas, bm, 0.0) * h
            bw, loss = bat.exchange_wh(spec, e_arr, desired, dt_s, sel)
            if meas_wh is not None:  # measured: what the device exchanged, unclipped
                bw_m, loss_m, corr = bat.measured_exchange_wh(
                    self.spec, self.energy_wh, meas_wh, sl
                )
                bw = bw + bw_m
                loss = loss + loss_m
                acc[ix["measured_correction_wh"]] += corr.sum()
                self.measured_wh[sl] += bw_m
            if loc is None:
                seg.net_wh = net_wh + bw
            else:
                seg.net_wh[loc] += bw
            if self.ac_energy_wh is not None:
                self.ac_energy_wh[sl] += bw
            if self.track_power:  # only controllers read it
                moved = h > 0
                if np.ndim(moved) == 0 or moved.all():
                    self.power_w[sl] = bw / h
                else:
                    idx = np.flatnonzero(moved) if isinstance(sl, slice) else np.asarray(sl)[moved]
                    self.power_w[idx] = bw[moved] / h[moved]
            if self.throughput_wh is not None:
                self.throughput_wh[sl] += np.abs(bw)
            ch_sum = float(np.maximum(bw, 0.0).sum())
            acc[ix["battery_charge_wh"]] += ch_sum
            acc[ix["battery_discharge_wh"]] += ch_sum - float(bw.sum())
            acc[ix["battery_loss_wh"]] += loss.sum()
        if spec.any_self_discharge:  # exponential decay of what is stored
            sd = bat.self_discharge_wh(spec, e_arr, dt_s, sel)
            acc[ix["battery_loss_wh"]] += sd.sum()
        if compact:
            self.energy_wh[sl] = e_arr
