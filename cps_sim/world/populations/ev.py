"""EVs parked at their sites' chargers between trips.

The charging law is the EV model's (:func:`cps_sim.models.ev_physics.charging_ac_wh`:
charger limit, room below ``soc_max``, the pack's CC-CV taper integrated exactly);
V2X discharge goes down to ``energy_min_wh``.  Departures and arrivals are
scheduled events the site group applies at their exact times
(:meth:`EvPopulation.apply_events`): a departure records SoC and the energy
unmet at departure, an arrival deducts the trip energy.

EVs are stored sorted by site, so the EVs of a set of sites are found without
a search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import battery as bat
from cps_sim.models import ev_physics as ev_model
from cps_sim.world.populations.base import (
    Cut,
    F,
    Flow,
    I,
    Population,
    Segment,
    SetpointKey,
)

DEPARTURE = 0
ARRIVAL = 1


EVENT_FIELDS = ("time_s", "ev_id", "site", "kind", "soc", "energy_wh", "unmet_wh")


@dataclass
class EventLog:
    """Columnar log of discrete events (appended per round).  The recorder takes the
    events out as their times become final (:meth:`take`), so the log holds about a
    simulated day of them, not the run's."""

    time_s: list[F] = field(default_factory=list)
    ev_id: list[I] = field(default_factory=list)
    site: list[I] = field(default_factory=list)
    kind: list[NDArray[np.int8]] = field(default_factory=list)
    soc: list[F] = field(default_factory=list)
    energy_wh: list[F] = field(default_factory=list)  # trip energy (arrival)
    unmet_wh: list[F] = field(default_factory=list)  # below target (departure) / shortfall

    def append(self, t, ev_id, site, kind, soc, energy_wh, unmet_wh) -> None:
        self.time_s.append(np.asarray(t, dtype=float))
        self.ev_id.append(np.asarray(ev_id, dtype=np.int64))
        self.site.append(np.asarray(site, dtype=np.int64))
        self.kind.append(np.asarray(kind, dtype=np.int8))
        self.soc.append(np.asarray(soc, dtype=float))
        self.energy_wh.append(np.asarray(energy_wh, dtype=float))
        self.unmet_wh.append(np.asarray(unmet_wh, dtype=float))

    def columns(self) -> dict[str, np.ndarray]:
        def cat(parts, dtype):
            return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

        return {
            "time_s": cat(self.time_s, float),
            "ev_id": cat(self.ev_id, np.int64),
            "site": cat(self.site, np.int64),
            "kind": cat(self.kind, np.int8),
            "soc": cat(self.soc, float),
            "energy_wh": cat(self.energy_wh, float),
            "unmet_wh": cat(self.unmet_wh, float),
        }

    @property
    def rows(self) -> int:
        """Events held."""
        return sum(int(p.size) for p in self.time_s)

    def take(self, before_s: float) -> dict[str, np.ndarray]:
        """Remove the events logged with a time before ``before_s`` and return them as
        :meth:`columns` (in their logged order); later ones stay logged, in their order."""
        cols = self.columns()
        for name in EVENT_FIELDS:
            getattr(self, name).clear()
        later = cols["time_s"] >= before_s
        if later.any():
            self.append(*(cols[name][later] for name in EVENT_FIELDS))
            cols = {name: v[~later] for name, v in cols.items()}
        return cols


class EvPopulation(Population):
    """The EVs of one site group (arrays over vehicles, sorted by site)."""

    key: ClassVar[str] = "ev"
    order: ClassVar[int] = 10
    segment_physics: ClassVar[bool] = True
    FLOWS: ClassVar[tuple[Flow, ...]] = (
        Flow("ev_charging_wh", "info", "AC energy into EVs"),
        Flow("ev_discharge_wh", "info", "AC energy out of EVs (V2H/V2G)"),
        Flow("ev_loss_wh", "sink", "charger and pack conversion losses"),
        Flow("ev_driving_wh", "sink", "trip energy taken from the packs"),
        Flow("ev_trip_shortfall_wh", "info", "trip energy the packs could not give"),
    )
    SETPOINTS: ClassVar[tuple[SetpointKey, ...]] = (
        SetpointKey(
            "ev_setpoint_w",
            "device",
            "AC power per EV, + charge / − discharge; "
            "+inf = as much as allowed (clipped to the charger, V2X limit, SoC window "
            "and plugged state)",
        ),
    )
    OBSERVES: ClassVar[tuple[str, ...]] = (
        "ev_site",
        "ev_soc",
        "ev_energy_wh",
        "ev_capacity_wh",
        "ev_plugged",
        "ev_charger_w",
        "ev_v2x_w",
        "ev_soc_min",
        "ev_target_wh",
        "ev_departure_s",
        "ev_energy_max_wh",
        "ev_charge_efficiency",
        "ev_energy_taper_wh",
        "ev_taper_line_w",
    )

    def __init__(
        self,
        site: I,
        capacity_wh: F,
        energy_wh: F,
        charger_w: F,
        efficiency: F,
        energy_max_wh: F,
        target_wh: F,
        consumption_wh_per_km: F,
        plugged: NDArray[np.bool_],
        away_until_s: F,
        ids: I,
        setpoint_w: F | None = None,
        v2x_w: F | None = None,
        energy_min_wh: F | None = None,
        departure_s: F | None = None,
        taper_soc: F | None = None,
        taper_line_w: F | None = None,
    ):
        n = site.size
        self.site = site
        self.capacity_wh = capacity_wh
        self.energy_wh = energy_wh
        self.charger_w = charger_w
        self.efficiency = efficiency
        self.energy_max_wh = energy_max_wh
        self.target_wh = target_wh
        self.consumption_wh_per_km = consumption_wh_per_km
        self.plugged = plugged
        self.away_until_s = away_until_s  # time of the pending arrival; -inf when at home
        self.ids = ids  # global EV ids (for event records)
        # requested AC power, + charge / − discharge; +inf = as much as allowed
        self.setpoint_w = np.full(n, np.inf) if setpoint_w is None else setpoint_w
        self.v2x_w = np.zeros(n) if v2x_w is None else v2x_w  # 0 = not bidirectional
        self.energy_min_wh = np.zeros(n) if energy_min_wh is None else energy_min_wh
        # next planned departure; inf when none is planned
        self.departure_s = np.full(n, np.inf) if departure_s is None else departure_s
        self.taper_soc = np.ones(n) if taper_soc is None else taper_soc  # >= soc_max: none
        # CC power of the pack's taper line (default: the charger's)
        self.taper_line_w = charger_w.copy() if taper_line_w is None else taper_line_w
        # where the taper starts [Wh] (>= energy_max_wh: none)
        self.energy_taper_wh = np.minimum(self.taper_soc * capacity_wh, energy_max_wh)
        self.any_v2x = bool(n and (self.v2x_w > 0).any())
        self.any_taper = bool(n and (self.energy_taper_wh < energy_max_wh).any())
        # what stays fixed for the run is made read-only (a write anywhere raises), so an
        # observation hands out these arrays themselves instead of a copy per decision
        self.soc_min = self.energy_min_wh / capacity_wh
        self._fixed = {
            "ev_site": self.site,
            "ev_capacity_wh": self.capacity_wh,
            "ev_charger_w": self.charger_w,
            "ev_v2x_w": self.v2x_w,
            "ev_soc_min": self.soc_min,
            "ev_energy_max_wh": self.energy_max_wh,
            "ev_charge_efficiency": self.efficiency,
            "ev_energy_taper_wh": self.energy_taper_wh,
            "ev_taper_line_w": self.taper_line_w,
        }
        for a in (*self._fixed.values(), self.energy_min_wh, self.taper_soc):
            a.setflags(write=False)
        self.measured_w: F | None = None  # bound to external devices: NaN where modelled
        self.measured_wh: F | None = None
        # AC energy booked per EV since track_ac_energy() (+ charge / − discharge); the
        # MQTT bridge differences it into each member's power (None: not kept)
        self.ac_energy_wh: F | None = None
        self._seg: dict[str, Any] = {}
        # the EVs that can move energy, kept between segments (see _movable_set):
        # requested power of every EV (None: to be found again), who can move, and
        # (indices, power, sites) of those
        self._p_all: F | None = None
        self._can: NDArray[np.bool_] = np.zeros(n, dtype=bool)
        self._mov: tuple[I, F, I] | None = None
        # the last few-sites answer of _movable_at: (sites, answer); the event search and
        # the exchange of one segment ask it for the same sites
        self._at: tuple[I, tuple[I, I, F]] | None = None

    @property
    def n(self) -> int:
        return int(self.site.size)

    @property
    def n_devices(self) -> int:
        return self.n

    def attach(self, group) -> None:
        super().attach(group)
        counts = np.bincount(self.site, minlength=group.n)
        self.start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if np.any(np.diff(self.site) < 0):
            raise ValueError("EVs must be sorted by site")

    def stored_wh(self) -> float:
        return float(self.energy_wh.sum())

    # ------------------------------------------------------------------ control
    def apply(self, key: str, value: F) -> None:
        old = self.setpoint_w
        self.setpoint_w = value  # discharge requests beyond v2x_w are clipped in the engine
        if self._p_all is None or value is old or np.shape(old) != np.shape(value):
            self.changed()
            return
        # a controller re-sends most setpoints unchanged: look again at the EVs whose
        # setpoint changed only (the kept set is what a full scan would give: _refresh)
        diff = np.flatnonzero(value != old)
        if diff.size:
            self._refresh(diff)

    def observe(self) -> dict[str, Any]:
        """The EVs' state (copies) and their fixed parameters (the read-only arrays)."""
        return dict(
            self._fixed,
            ev_soc=self.energy_wh / self.capacity_wh,
            ev_energy_wh=self.energy_wh.copy(),
            ev_plugged=self.plugged.copy(),
            ev_target_wh=self.target_wh.copy(),
            ev_departure_s=self.departure_s.copy(),
        )

    def track_ac_energy(self) -> F:
        """Start keeping :attr:`ac_energy_wh` (booked AC energy per EV) and return it."""
        if self.ac_energy_wh is None:
            self.ac_energy_wh = np.zeros(self.n)
        return self.ac_energy_wh

    def set_measured(self, index: int, power_w: float) -> None:
        if self.measured_w is None:
            self.measured_w = np.full(self.n, np.nan)
            self.measured_wh = np.zeros(self.n)
        self.measured_w[index] = power_w

    # ------------------------------------------------------------------ events
    def apply_events(self, t: F, ev: I, kind: NDArray[np.int8], trip_wh: F) -> None:
        """Departures and arrivals at their exact times (the site is integrated to t)."""
        acc, ix, log = self.group.acc, self.group.ix, self.group.log
        offset = self.group.site_offset
        dep = kind == DEPARTURE
        if dep.any():
            i = ev[dep]
            soc = self.energy_wh[i] / self.capacity_wh[i]
            unmet = np.maximum(self.target_wh[i] - self.energy_wh[i], 0.0)
            self.plugged[i] = False
            self.departure_s[i] = np.inf
            log.append(
                t[dep],
                self.ids[i],
                self.site[i] + offset,
                np.full(i.size, DEPARTURE),
                soc,
                np.zeros(i.size),
                unmet,
            )
        arr = ~dep
        if arr.any():
            i = ev[arr]
            need = trip_wh[arr]
            from_battery = np.minimum(need, self.energy_wh[i])
            self.energy_wh[i] -= from_battery
            shortfall = need - from_battery
            self.plugged[i] = True
            self.away_until_s[i] = -np.inf
            acc[ix["ev_driving_wh"]] += from_battery.sum()
            acc[ix["ev_trip_shortfall_wh"]] += shortfall.sum()
            log.append(
                t[arr],
                self.ids[i],
                self.site[i] + offset,
                np.full(i.size, ARRIVAL),
                self.energy_wh[i] / self.capacity_wh[i],
                need,
                shortfall,
            )
        self._refresh(ev)

    # ------------------------------------------------------------------ movable set
    def changed(self) -> None:
        """Setpoints, plug states or stored energies were changed outside the segment
        step: the EVs that can move energy are found again before the next segment."""
        self._p_all = None
        self._mov = None
        self._at = None

    def _refresh(self, i: I) -> None:
        """EVs ``i`` changed state (an event): look at them again."""
        if self._p_all is None:
            return
        p = self.power_w(i)
        self._p_all[i] = p
        self._can[i] = self.movable(i, p, self.energy_wh[i])
        self._mov = None
        self._at = None

    def _movable_set(self) -> tuple[I, F, I]:
        """(indices, requested power, sites) of the EVs that can move energy
        (:meth:`movable`), in index order.  Kept between segments: the requested
        power changes only with setpoints, events and plug states (:meth:`changed`,
        :meth:`_refresh`), and an EV leaves the set when a segment brings it to its
        energy limit (:meth:`commit`).  Not used for bound EVs (measured power)."""
        if self._mov is None:
            p = self._scan()
            idx = np.flatnonzero(self._can)
            self._mov = (idx, p[idx], self.site[idx])
        return self._mov

    def _scan(self) -> F:
        """Requested power of every EV, and who can move energy (:attr:`_can`)."""
        if self._p_all is None:
            self._p_all = self.power_w(slice(None))
            self._can = self.movable(slice(None), self._p_all, self.energy_wh)
        return self._p_all

    def _movable_at(self, s: I | None) -> tuple[I, I, F]:
        """Movable EVs at the segment's sites ``s`` (None: every site): (EV indices,
        positions in the segment, requested power)."""
        if s is None:
            mov, p, site = self._movable_set()
            return mov, site, p
        if self._at is not None and self._at[0] is s:
            return self._at[1]
        p_all = self._scan()  # a few sites (events, splits): look at their EVs only
        ei, local = self.indices(s)
        keep = self._can[ei]
        ei = ei[keep]
        self._at = (s, (ei, local[keep], p_all[ei]))
        return self._at[1]

    def _leave(self, ei: I, p: F, e: F) -> None:
        """EVs ``ei`` moved energy in a segment: those at their limit leave the set."""
        if self._p_all is None:
            return
        still = self.movable(ei, p, e)
        if still.all():
            return
        gone = ei[~still]
        self._can[gone] = False
        self._at = None
        if self._mov is None:
            return
        mov, pm, site = self._mov
        keep = np.ones(mov.size, dtype=bool)
        keep[np.searchsorted(mov, gone)] = False
        self._mov = (mov[keep], pm[keep], site[keep])

    def _bound_at(self, s: I | None) -> tuple[I, I, F]:
        """Like :meth:`_movable_at` where EVs are bound to devices: every EV at the
        sites that can move energy or runs at a measured power."""
        assert self.measured_w is not None
        if s is None:
            ei: I | slice = slice(None)
            local = self.site
        else:
            ei, local = self.indices(s)
        p = self.power_w(ei)
        moving = self.movable(ei, p, self.energy_wh[ei]) | ~np.isnan(self.measured_w[ei])
        sub = np.flatnonzero(moving)
        if s is None:
            return sub, self.site[sub], p[sub]
        return ei[sub], local[sub], p[sub]

    # ------------------------------------------------------------------ segment
    def indices(self, s: I) -> tuple[I, I]:
        """EV indices at sites ``s`` and each one's position in ``s``."""
        counts = self.start[s + 1] - self.start[s]
        total = int(counts.sum())
        offs = np.cumsum(counts) - counts
        ei = np.arange(total) - np.repeat(offs, counts) + np.repeat(self.start[s], counts)
        return ei, np.repeat(np.arange(s.size), counts)

    def power_w(self, ei) -> F:
        """Requested AC power of EVs ``ei`` over the coming segment: the setpoint within
        the charger's limit and the V2X limit; 0 when not plugged; a bound EV draws
        what was measured.  (The CC-CV taper is part of the charging law.)"""
        p = np.minimum(self.setpoint_w[ei], self.charger_w[ei])
        if self.any_v2x:
            p = np.maximum(p, -self.v2x_w[ei])
        p = np.where(self.plugged[ei], p, 0.0)
        if self.measured_w is not None:
            m = self.measured_w[ei]
            p = np.where(np.isnan(m), p, m)
        return p

    def movable(self, ei: I | slice, p: F, e: F) -> NDArray[np.bool_]:
        """EVs ``ei`` (power ``p``, energy ``e``) that can move energy: asked to charge
        with room below ``energy_max_wh`` or to discharge above ``energy_min_wh``.  The
        others exchange exactly 0 and meet no limit, so the charging law and the
        internal-event search skip them."""
        return ((p > 0) & (e < self.energy_max_wh[ei])) | ((p < 0) & (e > self.energy_min_wh[ei]))

    def next_event_s(self, seg: Segment, t_next: F) -> None:
        """An EV that fills up (or meets its taper line) where its power feeds back (a
        battery follows the site's net power, or a grid limit binds); elsewhere
        min(P·dt, room) is already exact, so only coupled EVs are looked at."""
        ei, local, p = self._movable_at(seg.s) if self.measured_w is None else self._bound_at(seg.s)
        if not ei.size:
            return
        keep = self.group.coupled_sites[self.site[ei]]
        if not keep.all():
            ei, local, p = ei[keep], local[keep], p[keep]
            if not ei.size:
                return
        e = self.energy_wh[ei]
        eff = self.efficiency[ei]
        top = (
            bat.taper_start_wh(
                self.energy_max_wh[ei],
                self.energy_taper_wh[ei],
                self.taper_line_w[ei],
                np.maximum(p, 0.0),
            )
            if self.any_taper
            else self.energy_max_wh[ei]
        )
        room = np.where(p > 0, (top - e) / eff, (e - self.energy_min_wh[ei]) * eff)
        moving = (p != 0) & (room > 1e-6)
        if self.measured_w is not None:
            moving &= np.isnan(self.measured_w[ei])
        t_full = np.where(
            moving, room * SECONDS_PER_HOUR / np.where(moving, np.abs(p), 1.0), np.inf
        )
        dt_s = seg.dt_s
        cand = t_full < (dt_s[local] if dt_s.ndim else dt_s)
        if cand.any():
            np.minimum.at(t_next, local[cand], t_full[cand])
        if seg.power_w is not None:
            seg.power_w += np.bincount(local, weights=p * moving, minlength=seg.nloc)

    def exchange(self, seg: Segment) -> None:
        self._seg = {}
        if not self.n:
            return
        # the EVs that can move energy (and bound EVs: they drew what was measured)
        ei, local, p = self._movable_at(seg.s) if self.measured_w is None else self._bound_at(seg.s)
        if ei.size == 0:
            return
        h, dt_s, nloc = seg.h, seg.dt_s, seg.nloc
        e = self.energy_wh[ei]
        eff = self.efficiency[ei]
        hl = h[local] if h.ndim else h
        # the model's charging law (p is already within the charger's limit)
        ev_ch = ev_model.charging_ac_wh(
            e,
            self.energy_max_wh[ei],
            self.energy_taper_wh[ei],
            self.taper_line_w[ei],
            np.inf,
            eff,
            np.maximum(p, 0.0) * hl,
            dt_s[local] if np.ndim(dt_s) else dt_s,
            self.any_taper,
        )
        meas = None
        if self.measured_w is not None:  # measured: what the device drew
            meas = ~np.isnan(self.measured_w[ei])
            ev_ch = np.where(meas, np.maximum(p, 0.0) * hl, ev_ch)
        site_wh = np.bincount(local, weights=ev_ch, minlength=nloc)
        seg.net_wh += site_wh
        ev_dis = None
        if self.any_v2x or meas is not None:
            avail_ac = np.maximum(e - self.energy_min_wh[ei], 0.0) * eff
            ev_dis = np.minimum(np.maximum(-p, 0.0) * hl, avail_ac)
            if meas is not None:
                ev_dis = np.where(meas, np.maximum(-p, 0.0) * hl, ev_dis)
            dis_site = np.bincount(local, weights=ev_dis, minlength=nloc)
            if self.group.any_export_limit:
                # discharge may serve the site and export up to the limit, no more
                room = seg.export_room_wh()
                keep = np.minimum(1.0, room / np.where(dis_site > 0, dis_site, 1.0))
                if meas is None:
                    ev_dis = ev_dis * keep[local]
                    dis_site = dis_site * keep
                else:  # a measured device is not throttled
                    ev_dis = ev_dis * np.where(meas, 1.0, keep[local])
                    dis_site = np.bincount(local, weights=ev_dis, minlength=nloc)
            seg.net_wh -= dis_site
        st = self._seg
        st.update(ei=ei, local=local, e=e, p=p, eff=eff, ch=ev_ch, dis=ev_dis, meas=meas)
        if self.group.any_import_limit:
            ctl = (
                site_wh
                if meas is None
                else np.bincount(local, weights=np.where(meas, 0.0, ev_ch), minlength=nloc)
            )
            st["ctl"] = ctl
            seg.cuts.append(Cut(ctl, self._cut))

    def _cut(self, cut: F) -> None:
        """The breaker protects the home first: EV charging is throttled before load
        (a measured EV is not: it drew what was measured)."""
        st = self._seg
        local, meas, ctl = st["local"], st["meas"], st["ctl"]
        keep = 1.0 - cut / np.where(ctl > 0, ctl, 1.0)
        k_ev = keep[local]
        if meas is not None:
            k_ev = np.where(meas, 1.0, k_ev)
        st["ch"] = st["ch"] * k_ev

    def commit(self, seg: Segment) -> None:
        st = self._seg
        if not st:
            return
        acc, ix = seg.acc, self.group.ix
        ei, e, eff, ev_ch, ev_dis, meas = (
            st["ei"],
            st["e"],
            st["eff"],
            st["ch"],
            st["dis"],
            st["meas"],
        )
        stored = ev_ch * eff
        loss = ev_ch - stored
        if ev_dis is not None:
            drop = ev_dis / eff
            stored -= drop
            loss += drop - ev_dis
            acc[ix["ev_discharge_wh"]] += ev_dis.sum()
        new_e = e + stored
        if meas is not None:
            # a measured EV's model may leave [0, capacity]: the clip is booked
            ac_wh = ev_ch if ev_dis is None else ev_ch - ev_dis
            self.measured_wh[ei] += np.where(meas, ac_wh, 0.0)
            clipped = np.where(meas, np.clip(new_e, 0.0, self.capacity_wh[ei]), new_e)
            acc[ix["measured_correction_wh"]] += (clipped - new_e).sum()
            new_e = clipped
        self.energy_wh[ei] = new_e
        if meas is None:
            self._leave(ei, st["p"], new_e)
        if self.ac_energy_wh is not None:
            self.ac_energy_wh[ei] += ev_ch if ev_dis is None else ev_ch - ev_dis
        acc[ix["ev_charging_wh"]] += ev_ch.sum()
        acc[ix["ev_loss_wh"]] += loss.sum()
        self._seg = {}
