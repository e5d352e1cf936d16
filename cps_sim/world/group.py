"""A population of similar sites (e.g. 10,000 homes): clocks, event rounds, accumulators.

The devices of the sites are *populations* (``world/populations/``): the site
inputs (load, PV), EVs, deferrable processes, batteries, heat-pump water heaters.
The site group itself only keeps

* the per-site clocks: every site carries the time it was last advanced to
  (``t_s``); integration is *exact between events*;
* the event rounds: scheduled EV arrivals and departures are applied at their
  exact times — each touched site is integrated from its own ``t_s`` to the
  event time with the state it had, the event changes the state, and the site
  goes on from there.  Sites are independent within a settlement tick, so
  events at different sites are processed together in vectorised *rounds*
  (round r = the r-th event of each site in this stretch), and the number of
  numpy calls per tick does not grow with the number of devices;
* the segments: within one segment the inputs are constant; the populations
  report internal events (a device whose power changes by itself part-way, see
  :meth:`Population.next_event_s`) and the segment is split there; then each
  population exchanges its energy, the connection applies the import and
  export limits (:func:`cps_sim.world.connection.settle`) and each population
  books its flows;
* the per-tick accumulators (``FLOWS``, derived from the registered populations).

The one approximation: within a segment a battery sees an EV's *average* power
when the EV fills up part-way through it (energy is still conserved exactly).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import battery as bat
from cps_sim.world.connection import settle
from cps_sim.world.populations import (
    ARRIVAL,
    DEPARTURE,
    FLOWS,
    IX,
    REGISTRY,
    BatteryPopulation,
    DeferrablePopulation,
    EventLog,
    EvPopulation,
    Population,
    Segment,
    SiteInputs,
)

F = NDArray[np.float64]
I = NDArray[np.int64]  # noqa: E741

__all__ = ["ARRIVAL", "DEPARTURE", "FLOWS", "IX", "SiteGroup"]

_ORDER = {cls: i for i, cls in enumerate(REGISTRY)}


class SiteGroup:
    """Sites of one group and all their device populations; advanced by the World."""

    def __init__(
        self,
        name: str,
        n_sites: int,
        site_offset: int,
        populations: list[Population],
        *,
        import_limit_w: F,
        export_limit_w: F,
    ):
        self.name = name
        self.n = n_sites
        self.site_offset = site_offset  # global index of this group's first site
        self.t_s = np.zeros(n_sites)
        self.t_all = 0.0  # time every site was last advanced to together
        self.ix = IX
        self.acc = np.zeros(len(FLOWS))
        pops = list(populations)
        if not any(isinstance(p, BatteryPopulation) for p in pops):  # capacity 0 everywhere
            pops.append(BatteryPopulation(bat.no_batteries(n_sites), np.zeros(n_sites), "idle"))
        pops.sort(key=lambda p: _ORDER[type(p)])
        self.populations: list[Population] = pops
        self.by_key: dict[str, Population] = {p.key: p for p in pops}
        if len(self.by_key) != len(pops):
            raise ValueError(f"site group {name!r}: one population per device family")
        inputs = self.by_key.get("inputs")
        if not isinstance(inputs, SiteInputs):
            raise ValueError(f"site group {name!r} needs its SiteInputs population")
        self.inputs: SiteInputs = inputs
        self.batteries: BatteryPopulation = self.by_key["battery"]  # type: ignore[assignment]
        evs = self.by_key.get("ev")
        self.evs: EvPopulation | None = evs  # type: ignore[assignment]
        dfr = self.by_key.get("deferrable")
        self.deferrable: DeferrablePopulation | None = dfr  # type: ignore[assignment]
        self.segment_pops = [p for p in pops if p.segment_physics]
        self.tick_pops = [p for p in pops if not p.segment_physics]
        # the site's own connection limits (inf: none); a controller's limits only tighten
        # them: the limits in force are import_limit_w / export_limit_w
        self.grid_import_limit_w = import_limit_w.copy()
        self.grid_export_limit_w = export_limit_w.copy()
        self.import_limit_w = import_limit_w
        self.export_limit_w = export_limit_w
        self.any_import_limit = bool(np.isfinite(import_limit_w).any())
        self.any_export_limit = bool(np.isfinite(export_limit_w).any())
        self.meter = None  # a smart-meter population sees every segment's grid flows
        for p in pops:
            p.attach(self)
        # control key -> the population that accepts it; array size of every key
        self._key_pop: dict[str, Population] = {k.name: p for p in pops for k in p.SETPOINTS}
        sizes = {"import_limit_w": n_sites, "export_limit_w": n_sites}
        for p in pops:
            for k in p.SETPOINTS:
                sizes[k.name] = n_sites if k.per == "site" else p.n_devices
        self._sizes = sizes
        self.log = EventLog()  # discrete events (EV departures and arrivals)
        self.track_site_net = False
        self.last_site_net_wh: F | None = None
        self.site_import_wh = np.zeros(n_sites)
        self.site_net_wh = np.zeros(n_sites)
        # pending scheduled events, sorted by time
        self.pending_t = np.empty(0)
        self.pending_ev = np.empty(0, dtype=np.int64)
        self.pending_kind = np.empty(0, dtype=np.int8)
        self.pending_trip_wh = np.empty(0)
        self.update_coupling()

    # ------------------------------------------------------------------ views
    # (what the world, the wiring and the recorder read; the state lives in the
    # populations)
    @property
    def battery(self) -> bat.BatterySpec:
        return self.batteries.spec

    @battery.setter
    def battery(self, spec: bat.BatterySpec) -> None:
        self.batteries.spec = spec

    @property
    def battery_energy_wh(self) -> F:
        return self.batteries.energy_wh

    @property
    def battery_active(self) -> bool:
        return self.batteries.active

    @property
    def battery_ageing(self):
        return self.batteries.ageing

    @battery_ageing.setter
    def battery_ageing(self, ageing) -> None:
        self.batteries.ageing = ageing

    @property
    def battery_throughput_wh(self) -> F | None:
        return self.batteries.throughput_wh

    @battery_throughput_wh.setter
    def battery_throughput_wh(self, v: F | None) -> None:
        self.batteries.throughput_wh = v

    @property
    def battery_power_w(self) -> F:
        return self.batteries.power_w

    @property
    def has_battery(self) -> np.ndarray:
        return self.batteries.has

    @property
    def load_w(self) -> F:
        return self.inputs.load_w

    @property
    def pv_w(self) -> F:
        return self.inputs.pv_w

    @property
    def pv_capacity_w(self) -> F:
        return self.inputs.pv_capacity_w

    @property
    def pv_ac_limit_w(self) -> F:
        return self.inputs.pv_ac_limit_w

    @property
    def pv_unit_w_per_w(self) -> F:
        return self.inputs.pv_unit_w_per_w

    @property
    def pv_orientation(self) -> I:
        return self.inputs.pv_orientation

    @property
    def hpwh(self):
        return self.by_key.get("hpwh")

    @property
    def jobs(self) -> bool:
        return self.deferrable is not None and self.deferrable.any

    @property
    def ev_start(self) -> I:
        if self.evs is not None:
            return self.evs.start
        return np.zeros(self.n + 1, dtype=np.int64)

    @property
    def measured_wh(self) -> dict[str, F]:
        out = dict(self.inputs.measured_wh)
        if self.evs is not None and self.evs.measured_wh is not None:
            out["ev"] = self.evs.measured_wh
        if self.batteries.measured_wh is not None:
            out["battery"] = self.batteries.measured_wh
        return out

    # ------------------------------------------------------------------ inputs
    def set_inputs(self, load_w: F, k: int) -> None:
        """Exogenous inputs held constant for tick ``k`` (measured members override them)."""
        self.inputs.set_inputs(load_w, k)

    def stored_wh(self) -> float:
        """Energy stored in every population of the group [Wh]."""
        return self.stored_parts_wh()[0]

    def stored_parts_wh(self) -> tuple[float, float, float]:
        """(every population, the batteries, the EVs) stored energy [Wh], each population
        asked once (the tick's end needs all three)."""
        total = battery = ev = 0.0
        for p in self.populations:
            v = p.stored_wh()
            total += v
            if p is self.batteries:
                battery = v
            elif p is self.evs:
                ev = v
        return total, battery, ev

    def set_measured(self, kind: str, index: int, power_w: float) -> None:
        """From now on, device ``index`` of ``kind`` runs at the measured ``power_w``
        (load convention; NaN: back to its model).  The caller integrates to now first."""
        if kind == "ev":
            self.evs.set_measured(index, power_w)
        elif kind == "battery":
            self.batteries.set_measured(index, power_w)
        elif kind in ("load", "pv"):
            self.inputs.set_measured(kind, index, power_w)
        else:
            raise ValueError(f"unknown member kind {kind!r}")

    def correct_energy(self, kind: str, index: int, energy_wh: float) -> float:
        """Set a measured stored energy (a bound EV's or battery's SoC); the difference
        to the integrated one is booked as ``measured_correction_wh``.  Returns it."""
        store = self.evs.energy_wh if kind == "ev" else self.batteries.energy_wh
        delta = float(energy_wh) - float(store[index])
        store[index] = float(energy_wh)
        if kind == "ev":
            self.evs.changed()
        self.acc[IX["measured_correction_wh"]] += delta
        return delta

    # ------------------------------------------------------------------ control
    def apply(self, key: str, value: F) -> None:
        """A checked setpoint array for one control key (``World.apply``)."""
        if key == "import_limit_w":
            self.import_limit_w = np.minimum(self.grid_import_limit_w, value)
            self.any_import_limit = bool(np.isfinite(self.import_limit_w).any())
            self.update_coupling()
        elif key == "export_limit_w":
            self.export_limit_w = np.minimum(self.grid_export_limit_w, value)
            self.any_export_limit = bool(np.isfinite(self.export_limit_w).any())
            self.update_coupling()
        else:
            self._key_pop[key].apply(key, value)  # KeyError: a key no population accepts

    def setpoint_sizes(self) -> dict[str, int]:
        """Expected array length of every control key this group accepts (a new dict)."""
        return dict(self._sizes)

    # ------------------------------------------------------------------ events
    def schedule(self, t: F, ev: I, kind: NDArray[np.int8], trip_wh: F) -> None:
        """Add scheduled events (any order); the queue stays sorted by time (stable)."""
        if t.size == 0:
            return
        all_t = np.concatenate([self.pending_t, t])
        order = np.argsort(all_t, kind="stable")
        self.pending_t = all_t[order]
        self.pending_ev = np.concatenate([self.pending_ev, ev])[order]
        self.pending_kind = np.concatenate([self.pending_kind, kind])[order]
        self.pending_trip_wh = np.concatenate([self.pending_trip_wh, trip_wh])[order]

    def open_jobs(self, energy_wh: F, deadline_s: float) -> None:
        """A process window opens (kept for callers; see DeferrablePopulation.open)."""
        self.deferrable.energy_wh = energy_wh
        self.deferrable.open(deadline_s)

    def close_jobs(self) -> float:
        return self.deferrable.close()

    # ------------------------------------------------------------------ integration
    def advance_to(self, t: float) -> None:
        """Integrate every site to time ``t``, applying scheduled events before it exactly."""
        n_due = int(np.searchsorted(self.pending_t, t, side="left"))
        if n_due:
            et = self.pending_t[:n_due]
            eev = self.pending_ev[:n_due]
            ekind = self.pending_kind[:n_due]
            etrip = self.pending_trip_wh[:n_due]
            self.pending_t = self.pending_t[n_due:]
            self.pending_ev = self.pending_ev[n_due:]
            self.pending_kind = self.pending_kind[n_due:]
            self.pending_trip_wh = self.pending_trip_wh[n_due:]
            site = self.evs.site[eev]
            order = np.lexsort((np.arange(n_due), et, site))  # by site, then time, then FIFO
            site_o = site[order]
            first = np.ones(n_due, dtype=bool)
            first[1:] = site_o[1:] != site_o[:-1]
            run_start = np.maximum.accumulate(np.where(first, np.arange(n_due), 0))
            rank = np.arange(n_due) - run_start
            for r in range(int(rank.max()) + 1):
                sel = order[rank == r]
                s = site[sel]
                te = et[sel]
                self._segment(s, te - self.t_s[s])
                self.t_s[s] = te
                self.evs.apply_events(te, eev[sel], ekind[sel], etrip[sel])
        elif t == self.t_all:
            return  # everybody is already at t (a controller and the tick at one instant)
        dt = t - self.t_s
        self._segment(None, dt)
        self.t_s.fill(t)
        self.t_all = t

    def update_coupling(self) -> None:
        """Sites whose devices interact within a segment (a battery or a grid limit)."""
        b = self.batteries
        self.coupled_sites = (
            (b.active & b.has) | np.isfinite(self.import_limit_w) | np.isfinite(self.export_limit_w)
        )
        self.any_coupled = bool(self.coupled_sites.any())

    def _may_split(self) -> bool:
        """Internal events matter only where devices interact (:attr:`coupled_sites`:
        every population's ``next_event_s`` looks at those sites only)."""
        return self.any_coupled and bool(
            (self.evs is not None and self.evs.n) or self.batteries.active or self.jobs
        )

    def _internal_events(self, s: I | None, dt_s: F) -> F:
        """Per-site time [s] until the first internal event within the segment (inf if none)."""
        seg = Segment(self, s, dt_s, dt_s * (1.0 / SECONDS_PER_HOUR), self.acc)
        t_next = np.full(seg.nloc, np.inf)
        if self.batteries.active and (self.any_import_limit or self.any_export_limit):
            seg.power_w = np.zeros(seg.nloc)  # power that feeds back into the battery
        for p in self.segment_pops:
            p.next_event_s(seg, t_next)
        return t_next

    def _segment(self, s: I | None, dt_s: F, depth: int = 0) -> None:
        """Advance sites ``s`` (None = all) by per-site ``dt_s``, split at internal events.

        Splitting at the instant an EV fills up (or a battery reaches a limit
        that matters) keeps the integration exact; the split sites go on from
        there, the others advance in one vectorised step.
        """
        dt_s = np.asarray(dt_s, dtype=float)
        if depth < 64 and self._may_split():
            t_split = self._internal_events(s, dt_s)
            dts = dt_s if dt_s.shape == t_split.shape else np.broadcast_to(dt_s, t_split.shape)
            need = t_split < dts * (1.0 - 1e-12) - 1e-9
            if need.any():
                # every site advances in one step, the split ones only to their event;
                # then the split ones go on from there (sites are independent within
                # a segment, so the order of the two steps does not matter)
                loc = np.flatnonzero(need)
                first_dt = dts.copy()
                first_dt[loc] = t_split[loc]
                self._segment_raw(s, first_dt)
                ss = loc if s is None else s[loc]
                self._segment(ss, dts[loc] - t_split[loc], depth + 1)
                return
        self._segment_raw(s, dt_s)

    def _segment_raw(self, s: I | None, dt_s: F) -> None:
        """Advance sites ``s`` (None = all) over per-site durations ``dt_s`` with constant
        inputs: every population exchanges its energy (in registry order), the
        connection settles the limits, every population books its flows."""
        seg = Segment(self, s, dt_s, dt_s * (1.0 / SECONDS_PER_HOUR), self.acc)
        for p in self.segment_pops:
            p.exchange(seg)
        imp, exp = settle(seg)
        for p in self.segment_pops:
            p.commit(seg)
        acc = self.acc
        acc[IX["grid_import_wh"]] += imp.sum()
        acc[IX["grid_export_wh"]] += exp.sum()
        if s is None:
            self.site_import_wh += imp
            if self.track_site_net:
                self.site_net_wh += imp - exp
        else:
            self.site_import_wh[s] += imp
            if self.track_site_net:
                self.site_net_wh[s] += imp - exp
        if self.meter is not None:
            self.meter.on_segment(s, imp, exp, dt_s)

    def take_tick(self) -> tuple[np.ndarray, float, F | None]:
        """Return and reset this tick's accumulators: (flows, max site import Wh, site net Wh)."""
        flows = self.acc.copy()
        peak_site = float(self.site_import_wh.max()) if self.n else 0.0
        net = None
        if self.track_site_net:
            net = self.site_net_wh.copy()
            self.site_net_wh.fill(0.0)
        self.last_site_net_wh = net  # per-site net import [Wh] of the tick just closed
        self.acc.fill(0.0)
        self.site_import_wh.fill(0.0)
        return flows, peak_site, net
