"""A population of similar sites (e.g. 10,000 homes) as a struct of numpy arrays.

Each site has a load, optionally PV and a battery, a grid connection with
optional import/export limits, and any number of EVs (stored sorted by site,
so that the EVs of a set of sites are found without a search).

Integration is *exact between events*: every site carries the time it was
last advanced to (``t_s``).  Scheduled EV arrivals and departures are applied
at their exact times: each touched site is integrated from its own ``t_s`` to
the event time with the state it had, the event changes the state, and the
site goes on from there.  Sites are independent within a settlement tick, so
events at different sites are processed together in vectorised *rounds*
(round r = the r-th event of each site in this stretch), and the number of
numpy calls per tick does not grow with the number of devices.

Within one segment the inputs are constant; devices that reach a limit
part-way (a full battery, a full EV) take exactly the energy that fits.  The
one approximation: within a segment the battery sees the EV's *average* power
when the EV fills up part-way through it (energy is still conserved exactly).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cps_sim.models import battery as bat
from cps_sim.models import ev_physics as ev_model
from cps_sim.world.populations import EventLog, EvPopulation

F = NDArray[np.float64]
I = NDArray[np.int64]  # noqa: E741

# Per-tick energy accumulators [Wh], one slot each.
FLOWS = (
    "load_wh", "pv_generation_wh", "pv_potential_wh", "curtailment_wh", "ev_charging_wh",
    "battery_charge_wh", "battery_discharge_wh", "grid_import_wh", "grid_export_wh",
    "unserved_wh", "battery_loss_wh", "ev_loss_wh", "ev_driving_wh", "ev_trip_shortfall_wh",
    "ev_discharge_wh", "battery_fade_wh", "deferrable_wh", "deferrable_unmet_wh",
    "measured_correction_wh",
)
IX = {name: i for i, name in enumerate(FLOWS)}

DEPARTURE = 0
ARRIVAL = 1


class SiteGroup:
    """Sites of one group and all their devices; advanced by the World."""

    def __init__(self, name: str, n_sites: int, site_offset: int, *,
                 pv_capacity_w: F, pv_orientation: I, pv_unit_w_per_w: F, pv_ac_limit_w: F,
                 battery: bat.BatterySpec, battery_energy_wh: F, battery_control: str,
                 import_limit_w: F, export_limit_w: F, evs: EvPopulation | None):
        self.name = name
        self.n = n_sites
        self.site_offset = site_offset  # global index of this group's first site
        self.t_s = np.zeros(n_sites)
        self.t_all = 0.0  # time every site was last advanced to together
        self.load_w = np.zeros(n_sites)
        self.pv_capacity_w = pv_capacity_w
        self.pv_orientation = pv_orientation  # column of pv_unit_w_per_w for each site
        self.pv_unit_w_per_w = pv_unit_w_per_w  # (n_ticks, n_orientations) AC W per DC W
        self.pv_ac_limit_w = pv_ac_limit_w
        self.any_pv_limit = bool(np.isfinite(pv_ac_limit_w).any())
        self.pv_w = np.zeros(n_sites)
        self.battery = battery
        self.battery_energy_wh = battery_energy_wh
        self.battery_active = battery_control == "self_consumption"
        # NaN = built-in self-consumption rule; finite = a controller's power setpoint
        self.battery_setpoint_w = np.full(n_sites, np.nan)
        self.battery_setpoints = False
        self.battery_power_w = np.zeros(n_sites)  # average of the latest segment, + charge
        self.track_battery_power = False  # switched on when a controller observes the group
        self.battery_ageing = None  # world.ageing.BatteryAgeing when capacity fade is modelled
        self.battery_throughput_wh = None  # AC charge + discharge since the last ageing step
        self.has_battery = battery.capacity_wh > 0
        # the site's own connection limits (inf: none); a controller's limits only tighten
        # them: the limits in force are import_limit_w / export_limit_w
        self.grid_import_limit_w = import_limit_w.copy()
        self.grid_export_limit_w = export_limit_w.copy()
        self.import_limit_w = import_limit_w
        self.export_limit_w = export_limit_w
        self.any_import_limit = bool(np.isfinite(import_limit_w).any())
        self.any_export_limit = bool(np.isfinite(export_limit_w).any())
        self.evs = evs
        self.any_v2x = bool(evs is not None and evs.n and (evs.v2x_w > 0).any())
        self.any_ev_taper = bool(evs is not None and evs.n and
                                 (evs.energy_taper_wh < evs.energy_max_wh).any())
        self.track_site_net = False
        self.update_coupling()
        self.hpwh = None  # HpwhPopulation when the group has heat-pump water heaters
        # deferrable processes (dense per site; max power 0 where none)
        self.jobs = False
        self.job_max_w = np.zeros(n_sites)
        self.job_remaining_wh = np.zeros(n_sites)
        self.job_setpoint_w = np.full(n_sites, np.inf)  # +inf: as fast as allowed
        self.job_deadline_s = np.full(n_sites, np.inf)
        self.last_site_net_wh: F | None = None
        # members bound to external devices (world.external): measured power [W] per EV /
        # per site, NaN where the model runs; None while nothing of that kind is bound
        self.ev_measured_w: F | None = None
        self.battery_measured_w: F | None = None
        self.load_measured_w: F | None = None
        self.pv_measured_w: F | None = None  # generation as a positive number
        self.load_model_w = np.zeros(n_sites)  # this tick's modelled input at each site
        self.pv_model_w = np.zeros(n_sites)
        self.measured_wh: dict[str, F] = {}  # kind -> energy booked while measured [Wh]
        if evs is not None and evs.n:
            counts = np.bincount(evs.site, minlength=n_sites)
            self.ev_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            if np.any(np.diff(evs.site) < 0):
                raise ValueError("EVs must be sorted by site")
        else:
            self.ev_start = np.zeros(n_sites + 1, dtype=np.int64)
        self.acc = np.zeros(len(FLOWS))
        self.site_import_wh = np.zeros(n_sites)
        self.site_net_wh = np.zeros(n_sites)
        # pending scheduled events, sorted by time
        self.pending_t = np.empty(0)
        self.pending_ev = np.empty(0, dtype=np.int64)
        self.pending_kind = np.empty(0, dtype=np.int8)
        self.pending_trip_wh = np.empty(0)
        self.log = EventLog()

    # ------------------------------------------------------------------ inputs
    def set_inputs(self, load_w: F, k: int) -> None:
        """Exogenous inputs held constant for tick ``k`` (measured members override them)."""
        self.load_w = load_w
        pv = self.pv_capacity_w * self.pv_unit_w_per_w[k][self.pv_orientation]
        self.pv_w = np.minimum(pv, self.pv_ac_limit_w, out=pv) if self.any_pv_limit else pv
        if self.load_measured_w is not None:
            self.load_model_w = load_w.copy()
            m = ~np.isnan(self.load_measured_w)
            load_w[m] = self.load_measured_w[m]
        if self.pv_measured_w is not None:
            self.pv_model_w = self.pv_w.copy()
            m = ~np.isnan(self.pv_measured_w)
            self.pv_w[m] = self.pv_measured_w[m]

    # ------------------------------------------------------------------ measured members
    def set_measured(self, kind: str, index: int, power_w: float) -> None:
        """From now on, device ``index`` of ``kind`` runs at the measured ``power_w``
        (load convention; NaN: back to its model).  The caller integrates to now first."""
        if kind == "ev":
            if self.ev_measured_w is None:
                self.ev_measured_w = np.full(self.evs.n, np.nan)
                self.measured_wh["ev"] = np.zeros(self.evs.n)
            self.ev_measured_w[index] = power_w
            return
        if kind == "battery":
            if self.battery_measured_w is None:
                self.battery_measured_w = np.full(self.n, np.nan)
                self.measured_wh["battery"] = np.zeros(self.n)
                if not self.battery_active:  # the others stay idle (0 W)
                    self.battery_active = True
                    self.battery_setpoint_w = np.zeros(self.n)
                    self.battery_setpoints = True
                    self.update_coupling()
            self.battery_measured_w[index] = power_w
            return
        if kind == "load":
            if self.load_measured_w is None:
                self.load_measured_w = np.full(self.n, np.nan)
                self.measured_wh["load"] = np.zeros(self.n)
                self.load_model_w = self.load_w.copy()
            old = self.load_measured_w[index]
            before = self.load_model_w[index] if np.isnan(old) else old
            self.load_measured_w[index] = power_w
            after = self.load_model_w[index] if np.isnan(power_w) else power_w
            self.load_w[index] += after - before  # devices added to the load stay
            return
        if kind == "pv":
            if self.pv_measured_w is None:
                self.pv_measured_w = np.full(self.n, np.nan)
                self.measured_wh["pv"] = np.zeros(self.n)
                self.pv_model_w = self.pv_w.copy()
            gen = np.nan if np.isnan(power_w) else max(-power_w, 0.0)
            self.pv_measured_w[index] = gen
            self.pv_w[index] = self.pv_model_w[index] if np.isnan(gen) else gen
            return
        raise ValueError(f"unknown member kind {kind!r}")

    def stored_wh(self) -> tuple[float, float]:
        ev = float(self.evs.energy_wh.sum()) if self.evs is not None else 0.0
        return float(self.battery_energy_wh.sum()), ev

    def correct_energy(self, kind: str, index: int, energy_wh: float) -> float:
        """Set a measured stored energy (a bound EV's or battery's SoC); the difference
        to the integrated one is booked as ``measured_correction_wh``.  Returns it."""
        store = self.evs.energy_wh if kind == "ev" else self.battery_energy_wh
        delta = float(energy_wh) - float(store[index])
        store[index] = float(energy_wh)
        self.acc[IX["measured_correction_wh"]] += delta
        return delta

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

    def _apply_events(self, t: F, ev: I, kind: NDArray[np.int8], trip_wh: F) -> None:
        evs = self.evs
        dep = kind == DEPARTURE
        if dep.any():
            i = ev[dep]
            soc = evs.energy_wh[i] / evs.capacity_wh[i]
            unmet = np.maximum(evs.target_wh[i] - evs.energy_wh[i], 0.0)
            evs.plugged[i] = False
            evs.departure_s[i] = np.inf
            self.log.append(t[dep], evs.ids[i], evs.site[i] + self.site_offset,
                            np.full(i.size, DEPARTURE), soc, np.zeros(i.size), unmet)
        arr = ~dep
        if arr.any():
            i = ev[arr]
            need = trip_wh[arr]
            from_battery = np.minimum(need, evs.energy_wh[i])
            evs.energy_wh[i] -= from_battery
            shortfall = need - from_battery
            evs.plugged[i] = True
            evs.away_until_s[i] = -np.inf
            self.acc[IX["ev_driving_wh"]] += from_battery.sum()
            self.acc[IX["ev_trip_shortfall_wh"]] += shortfall.sum()
            self.log.append(t[arr], evs.ids[i], evs.site[i] + self.site_offset,
                            np.full(i.size, ARRIVAL), evs.energy_wh[i] / evs.capacity_wh[i],
                            need, shortfall)

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
                self._apply_events(te, eev[sel], ekind[sel], etrip[sel])
        elif t == self.t_all:
            return  # everybody is already at t (a controller and the tick at one instant)
        dt = t - self.t_s
        self._segment(None, dt)
        self.t_s.fill(t)
        self.t_all = t

    def update_coupling(self) -> None:
        """Sites whose devices interact within a segment (a battery or a grid limit)."""
        self.coupled_sites = ((self.battery_active & self.has_battery)
                              | np.isfinite(self.import_limit_w)
                              | np.isfinite(self.export_limit_w))
        evs = self.evs
        self.ev_coupled_idx = (np.flatnonzero(self.coupled_sites[evs.site])
                               if evs is not None and evs.n else np.empty(0, dtype=np.int64))

    def open_jobs(self, energy_wh: F, deadline_s: float) -> None:
        """A process window opens: each process site needs ``energy_wh`` by the deadline."""
        has = self.job_max_w > 0
        self.job_remaining_wh = np.where(has, energy_wh, 0.0)
        self.job_deadline_s = np.where(has, deadline_s, np.inf)

    def close_jobs(self) -> float:
        """The deadline passes: what is left is unmet (booked); returns it [Wh]."""
        unmet = float(self.job_remaining_wh.sum())
        self.acc[IX["deferrable_unmet_wh"]] += unmet
        self.job_remaining_wh = np.zeros(self.n)
        self.job_deadline_s = np.full(self.n, np.inf)
        return unmet

    def _ev_power_w(self, ei, e: F) -> F:
        """Requested AC power of EVs ``ei`` over the coming segment: the setpoint within
        the charger's limit and the V2X limit; 0 when not plugged.  (The CC-CV taper
        is part of the charging law, ``models.ev_physics.charging_ac_wh``.)"""
        evs = self.evs
        p = np.minimum(evs.setpoint_w[ei], evs.charger_w[ei])
        if self.any_v2x:
            p = np.maximum(p, -evs.v2x_w[ei])
        p = np.where(evs.plugged[ei], p, 0.0)
        if self.ev_measured_w is not None:  # a bound EV draws what was measured
            m = self.ev_measured_w[ei]
            p = np.where(np.isnan(m), p, m)
        return p

    def _ev_indices(self, s: I) -> tuple[I, I]:
        """EV indices at sites ``s`` and each one's position in ``s`` (EVs are sorted by site)."""
        counts = self.ev_start[s + 1] - self.ev_start[s]
        total = int(counts.sum())
        offs = np.cumsum(counts) - counts
        ei = np.arange(total) - np.repeat(offs, counts) + np.repeat(self.ev_start[s], counts)
        return ei, np.repeat(np.arange(s.size), counts)

    def _internal_events(self, s: I | None, dt_s: F) -> F:
        """Per-site time [s] until the first internal event within the segment (inf if none).

        Internal events change a site's power part-way through a segment: an EV
        that becomes full, and — where an import or export limit makes timing
        matter — a battery that becomes full or empty.  Without a limit the grid
        takes any power, and energy totals are exact whatever the timing.
        """
        nloc = self.n if s is None else s.size
        t_next = np.full(nloc, np.inf)
        dts = np.broadcast_to(dt_s, (nloc,))
        evs = self.evs
        ev_power = None
        if evs is not None and evs.n:
            # Only where the EV's power feeds back (a battery follows the site's net
            # power, or a grid limit binds) does its filling up need its own segment;
            # elsewhere min(P·dt, room) is already exact.  So only coupled EVs are looked at.
            if s is None:
                ei = self.ev_coupled_idx
                local = evs.site[ei]
            else:
                ei, local = self._ev_indices(s)
                keep = self.coupled_sites[s][local]
                ei, local = ei[keep], local[keep]
        if evs is not None and evs.n and ei.size:
            eff = evs.efficiency[ei]
            e = evs.energy_wh[ei]
            p = self._ev_power_w(ei, e)
            # energy (AC side) until the EV reaches its window's edge at power p, or
            # where charging meets the CC-CV taper line (its power falls from there)
            top = (bat.taper_start_wh(evs.energy_max_wh[ei], evs.energy_taper_wh[ei],
                                      evs.taper_line_w[ei], np.maximum(p, 0.0))
                   if self.any_ev_taper else evs.energy_max_wh[ei])
            room = np.where(p > 0, (top - e) / eff, (e - evs.energy_min_wh[ei]) * eff)
            moving = (p != 0) & (room > 1e-6)
            if self.ev_measured_w is not None:
                moving &= np.isnan(self.ev_measured_w[ei])
            t_full = np.where(moving, room * 3600.0 / np.where(moving, np.abs(p), 1.0), np.inf)
            cand = t_full < dts[local]
            if cand.any():
                np.minimum.at(t_next, local[cand], t_full[cand])
            if self.battery_active and (self.any_import_limit or self.any_export_limit):
                ev_power = np.bincount(local, weights=p * moving, minlength=nloc)
        if self.jobs:  # a process finishing part-way changes a coupled site's power
            sl = slice(None) if s is None else s
            pj = np.maximum(np.minimum(self.job_setpoint_w[sl], self.job_max_w[sl]), 0.0)
            rem = self.job_remaining_wh[sl]
            running = (pj > 0) & (rem > 1e-6) & (self.coupled_sites[sl])
            if running.any():
                t_done = np.where(running, rem * 3600.0 / np.where(running, pj, 1.0), np.inf)
                np.minimum(t_next, t_done, out=t_next)
                if self.battery_active and (self.any_import_limit or self.any_export_limit):
                    ev_power = (ev_power if ev_power is not None else 0.0) + \
                        np.where(running, pj, 0.0)
        if self.battery_active and (self.any_import_limit or self.any_export_limit):
            sl = slice(None) if s is None else s
            net_w = self.load_w[sl] - self.pv_w[sl]
            if ev_power is not None:
                net_w = net_w + ev_power
            b = self.battery
            e = self.battery_energy_wh[sl]
            charging = net_w < 0
            want = np.abs(net_w)
            if self.battery_setpoints:
                sp = self.battery_setpoint_w[sl]
                fixed = ~np.isnan(sp)
                charging = np.where(fixed, sp > 0, charging)
                want = np.where(fixed, np.abs(np.nan_to_num(sp)), want)
            rate = np.minimum(want, np.where(charging, b.max_charge_power_w[sl],
                                             b.max_discharge_power_w[sl]))
            # a charging battery changes its power where it meets the CC-CV taper line
            top = (bat.taper_start_wh(b.energy_max_wh[sl], b.energy_taper_wh[sl],
                                      b.max_charge_power_w[sl], rate)
                   if b.any_taper else b.energy_max_wh[sl])
            room = np.where(charging, (top - e) / b.charge_efficiency[sl],
                            (e - b.energy_min_wh[sl]) * b.discharge_efficiency[sl])
            active = (rate > 0) & (room > 1e-6)
            if self.battery_measured_w is not None:
                active &= np.isnan(self.battery_measured_w[sl])
            t_bat = np.where(active, room * 3600.0 / np.where(active, rate, 1.0), np.inf)
            np.minimum(t_next, t_bat, out=t_next)
        return t_next

    def _segment(self, s: I | None, dt_s: F, depth: int = 0) -> None:
        """Advance sites ``s`` (None = all) by per-site ``dt_s``, split at internal events.

        Splitting at the instant an EV fills up (or a battery reaches a limit
        that matters) keeps the integration exact; the split sites go on from
        there, the others advance in one vectorised step.
        """
        dt_s = np.asarray(dt_s, dtype=float)
        if depth < 64 and ((self.evs is not None and self.evs.n) or self.battery_active
                           or self.jobs):
            t_split = self._internal_events(s, dt_s)
            dts = np.broadcast_to(dt_s, t_split.shape)
            need = t_split < dts * (1.0 - 1e-12) - 1e-9
            if need.any():
                loc = np.flatnonzero(need)
                full_dt = dts.copy()
                ss = loc if s is None else s[loc]
                first = t_split[loc]
                self._segment_raw(ss, first)
                self._segment(ss, full_dt[loc] - first, depth + 1)
                full_dt[loc] = 0.0
                self._segment_raw(s, full_dt)
                return
        self._segment_raw(s, dt_s)

    def _segment_raw(self, s: I | None, dt_s: F) -> None:
        """Advance sites ``s`` (None = all) over per-site durations ``dt_s`` with constant inputs.

        Site balance of the segment, in Wh: ``net = load + EV − PV``; the battery
        follows its setpoint, or by default charges from −net and discharges
        into +net; import/export are what is left; an import limit throttles EV
        charging first and then leaves load unserved; an export limit curtails PV.
        """
        allsites = s is None
        sl = slice(None) if allsites else s
        h = dt_s * (1.0 / 3600.0)
        load_w = self.load_w[sl]
        pv_w = self.pv_w[sl]
        net_wh = (load_w - pv_w) * h
        acc = self.acc
        load_sum = float(np.dot(load_w, h)) if h.ndim else float(load_w.sum() * h)
        pv_pot_sum = float(np.dot(pv_w, h)) if h.ndim else float(pv_w.sum() * h)

        evs = self.evs
        ev_ch = ev_dis = ev_meas = None
        if evs is not None and evs.n:
            if allsites:
                ei, local, nloc = slice(None), evs.site, self.n
            else:
                ei, local = self._ev_indices(s)
                nloc = s.size
                if ei.size == 0:
                    ei = None
            if ei is not None:
                eff = evs.efficiency[ei]
                e = evs.energy_wh[ei]
                hl = h[local] if h.ndim else h
                p = self._ev_power_w(ei, e)
                # the model's charging law (p is already within the charger's limit)
                ev_ch = ev_model.charging_ac_wh(
                    e, evs.energy_max_wh[ei], evs.energy_taper_wh[ei], evs.taper_line_w[ei],
                    np.inf, eff, np.maximum(p, 0.0) * hl,
                    dt_s[local] if np.ndim(dt_s) else dt_s, self.any_ev_taper)
                if self.ev_measured_w is not None:  # measured: what the device drew
                    ev_meas = ~np.isnan(self.ev_measured_w[ei])
                    ev_ch = np.where(ev_meas, np.maximum(p, 0.0) * hl, ev_ch)
                ev_site_wh = np.bincount(local, weights=ev_ch, minlength=nloc)
                net_wh += ev_site_wh
                if self.any_v2x or ev_meas is not None:
                    avail_ac = np.maximum(e - evs.energy_min_wh[ei], 0.0) * eff
                    ev_dis = np.minimum(np.maximum(-p, 0.0) * hl, avail_ac)
                    if ev_meas is not None:
                        ev_dis = np.where(ev_meas, np.maximum(-p, 0.0) * hl, ev_dis)
                    dis_site = np.bincount(local, weights=ev_dis, minlength=nloc)
                    if self.any_export_limit:
                        # discharge may serve the site and export up to the limit, no more
                        room = np.maximum(net_wh + self.export_limit_w[sl] * h, 0.0)
                        keep = np.minimum(1.0, room / np.where(dis_site > 0, dis_site, 1.0))
                        if ev_meas is None:
                            ev_dis = ev_dis * keep[local]
                            dis_site = dis_site * keep
                        else:  # a measured device is not throttled
                            ev_dis = ev_dis * np.where(ev_meas, 1.0, keep[local])
                            dis_site = np.bincount(local, weights=ev_dis, minlength=nloc)
                    net_wh -= dis_site

        job_wh = None
        if self.jobs:
            pj = np.minimum(self.job_setpoint_w[sl], self.job_max_w[sl])
            job_wh = np.minimum(np.maximum(pj, 0.0) * h, self.job_remaining_wh[sl])
            net_wh += job_wh

        if self.battery_active:
            if self.battery_setpoints:  # NaN: the built-in self-consumption rule
                sp = self.battery_setpoint_w[sl]
                desired = np.where(np.isnan(sp), -net_wh, sp * h)
                if self.any_export_limit:  # forced discharge must not export beyond it
                    floor = np.minimum(-(net_wh + self.export_limit_w[sl] * h), 0.0)
                    desired = np.maximum(desired, floor)
            else:
                desired = -net_wh
            bat_meas_wh = None
            if self.battery_measured_w is not None:
                bm = self.battery_measured_w[sl]
                bat_meas = ~np.isnan(bm)
                desired = np.where(bat_meas, 0.0, desired)
                bat_meas_wh = np.where(bat_meas, bm, 0.0) * h
            bw, bat_loss = bat.exchange_wh(self.battery, self.battery_energy_wh, desired, dt_s,
                                           sl)
            if bat_meas_wh is not None:  # measured: what the device exchanged, unclipped
                bw_m, loss_m, corr = bat.measured_exchange_wh(
                    self.battery, self.battery_energy_wh, bat_meas_wh, sl)
                bw = bw + bw_m
                bat_loss = bat_loss + loss_m
                acc[IX["measured_correction_wh"]] += corr.sum()
                self.measured_wh["battery"][sl] += bw_m
            net_wh += bw
            if self.track_battery_power:  # only controllers read it
                moved = h > 0
                if np.ndim(moved) == 0 or moved.all():
                    self.battery_power_w[sl] = bw / h
                else:
                    idx = np.flatnonzero(moved) if allsites else s[moved]
                    self.battery_power_w[idx] = bw[moved] / h[moved]
            if self.battery_throughput_wh is not None:
                self.battery_throughput_wh[sl] += np.abs(bw)
            ch_sum = float(np.maximum(bw, 0.0).sum())
            acc[IX["battery_charge_wh"]] += ch_sum
            acc[IX["battery_discharge_wh"]] += ch_sum - float(bw.sum())
            acc[IX["battery_loss_wh"]] += bat_loss.sum()

        if self.battery.any_self_discharge:  # exponential decay of what is stored
            sd = bat.self_discharge_wh(self.battery, self.battery_energy_wh, dt_s, sl)
            acc[IX["battery_loss_wh"]] += sd.sum()

        imp = np.maximum(net_wh, 0.0)
        exp = imp - net_wh
        unserved_sum = 0.0
        if self.any_import_limit:
            excess = np.maximum(imp - self.import_limit_w[sl] * h, 0.0)
            if ev_ch is not None:
                # The breaker protects the home first: EV charging is throttled before load.
                # (A measured EV is not: it drew what was measured.)
                ctl_site = ev_site_wh if ev_meas is None else np.bincount(
                    local, weights=np.where(ev_meas, 0.0, ev_ch), minlength=nloc)
                cut = np.minimum(excess, ctl_site)
                keep = 1.0 - cut / np.where(ctl_site > 0, ctl_site, 1.0)
                k_ev = keep[local]
                if ev_meas is not None:
                    k_ev = np.where(ev_meas, 1.0, k_ev)
                ev_ch = ev_ch * k_ev
                excess -= cut
                imp -= cut
            if job_wh is not None:  # then deferrable processes (the deadline may still hold)
                cut = np.minimum(excess, job_wh)
                job_wh = job_wh - cut
                excess -= cut
                imp -= cut
            imp -= excess
            unserved_sum = float(excess.sum())
        curtail_sum = 0.0
        if self.any_export_limit:
            curtail = np.maximum(exp - self.export_limit_w[sl] * h, 0.0)
            exp -= curtail
            curtail_sum = float(curtail.sum())

        if ev_ch is not None:
            stored = ev_ch * eff
            loss = ev_ch - stored
            if ev_dis is not None:
                drop = ev_dis / eff
                stored -= drop
                loss += drop - ev_dis
                acc[IX["ev_discharge_wh"]] += ev_dis.sum()
            new_e = e + stored
            if ev_meas is not None:
                # a measured EV's model may leave [0, capacity]: the clip is booked
                ac_wh = ev_ch if ev_dis is None else ev_ch - ev_dis
                self.measured_wh["ev"][ei] += np.where(ev_meas, ac_wh, 0.0)
                clipped = np.where(ev_meas, np.clip(new_e, 0.0, evs.capacity_wh[ei]), new_e)
                acc[IX["measured_correction_wh"]] += (clipped - new_e).sum()
                new_e = clipped
            evs.energy_wh[ei] = new_e
            acc[IX["ev_charging_wh"]] += ev_ch.sum()
            acc[IX["ev_loss_wh"]] += loss.sum()

        if job_wh is not None:
            self.job_remaining_wh[sl] -= job_wh
            acc[IX["deferrable_wh"]] += job_wh.sum()
        if self.load_measured_w is not None:
            m = self.load_measured_w[sl]
            self.measured_wh["load"][sl] += np.where(np.isnan(m), 0.0, m) * h
        if self.pv_measured_w is not None:
            m = self.pv_measured_w[sl]
            self.measured_wh["pv"][sl] -= np.where(np.isnan(m), 0.0, m) * h
        acc[IX["load_wh"]] += load_sum - unserved_sum
        acc[IX["unserved_wh"]] += unserved_sum
        acc[IX["pv_potential_wh"]] += pv_pot_sum
        acc[IX["pv_generation_wh"]] += pv_pot_sum - curtail_sum
        acc[IX["curtailment_wh"]] += curtail_sum
        acc[IX["grid_import_wh"]] += imp.sum()
        acc[IX["grid_export_wh"]] += exp.sum()
        if allsites:
            self.site_import_wh += imp
            if self.track_site_net:
                self.site_net_wh += imp - exp
        else:
            self.site_import_wh[s] += imp
            if self.track_site_net:
                self.site_net_wh[s] += imp - exp

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
