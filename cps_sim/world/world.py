"""The World: site groups, exogenous inputs, clock and ledger, bound into SimPy processes.

SimPy decides *when*; the populations decide *what*:

* ``settlement`` process — every tick: integrate every site to the tick end
  (applying scheduled EV events at their exact times), close the tick in the
  ledger and hand the aggregates to the recorder;
* ``trip_planner`` process — at each local midnight: sample the day's trips of
  every EV population and schedule their departures and arrivals;
* controllers (later layers) wake at their own times and call
  :meth:`World.advance_to` before they observe, so they always see state
  integrated exactly to *now*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import simpy

from cps_sim.core.calendar import is_day_off
from cps_sim.core.clock import Clock
from cps_sim.core.ledger import EnergyLedger
from cps_sim.core.rng import RngStreams
from cps_sim.scenario.schema import Scenario, SiteGroupSpec
from cps_sim.world.exogenous import LoadBlocks, RunWeather
from cps_sim.world.group import FLOWS, SiteGroup
from cps_sim.world.trips import plan_day

if TYPE_CHECKING:
    from cps_sim.control.observation import Observation
    from cps_sim.core.bus import Transport
    from cps_sim.world.external import ExternalMember
    from cps_sim.world.wiring import Wiring


class TickHook(Protocol):
    """A part of the world that settles after the sites every tick (e.g. the bulk
    power system: dispatch, curtailment, CO2).  It returns extra time-series
    columns for the tick and contributes KPIs at the end of the run."""

    name: str

    def on_tick(self, world: World, result: TickResult) -> dict[str, float]: ...

    def kpis(self) -> dict[str, float]: ...


@dataclass
class GroupBinding:
    spec: SiteGroupSpec
    group: SiteGroup
    loads: LoadBlocks


@dataclass
class TickResult:
    k: int
    t_end_s: float
    flows_wh: dict[str, float]
    by_group: dict[str, np.ndarray]
    peak_site_import_wh: float
    battery_soc_mean: float
    ev_soc_mean: float
    ev_plugged: int
    residual_wh: float
    site_net_wh: np.ndarray | None
    extra: dict[str, float] | None = None  # columns from tick hooks


class World:
    def __init__(self, scenario: Scenario, clock: Clock, rng: RngStreams,
                 bindings: list[GroupBinding], weather: RunWeather):
        self.scenario = scenario
        self.clock = clock
        self.rng = rng
        self.bindings = bindings
        self.groups = [b.group for b in bindings]
        self.tick_s = scenario.tick_s
        self.n_ticks = scenario.n_ticks
        self.weather = weather
        self.irradiance_w_m2 = weather.ghi_w_m2
        self.import_price_jpy_per_kwh = np.full(self.n_ticks, scenario.tariff.import_jpy_per_kwh)
        self.export_price_jpy_per_kwh = np.full(self.n_ticks, scenario.tariff.export_jpy_per_kwh)
        self.carbon_price_jpy_per_t = np.full(self.n_ticks,
                                              scenario.emissions.carbon_price_jpy_per_t)
        self.k = -1  # current tick
        self.now_s = 0.0
        self.ledger = EnergyLedger(self.stored_wh())
        self.record_sites = np.asarray(scenario.record.sites, dtype=np.int64)
        self.tick_hooks: list[TickHook] = []
        self.base_dir: Path | None = None  # resolves the scenario's data files
        self.env: simpy.Environment | None = None
        self.wiring: Wiring | None = None  # set by start(): transport, controllers, stats
        self.external: list[ExternalMember] = []  # members bound to external devices
        self._applied_keys: dict[str, set[str]] = {}  # setpoint keys applied per group
        for g in self.groups:
            g.track_site_net = bool(self.record_sites.size)  # hooks may switch it on too
        self._bat_cap_total = sum(float(g.battery.capacity_wh.sum()) for g in self.groups)
        self._ev_cap_total = sum(float(g.evs.capacity_wh.sum()) for g in self.groups
                                 if g.evs is not None)

    # ------------------------------------------------------------------ state
    def stored_wh(self) -> float:
        return sum(sum(g.stored_wh()) for g in self.groups)

    def begin_tick(self, k: int) -> None:
        self.k = k
        t0 = k * self.tick_s
        hour = None
        for b in self.bindings:
            g = b.group
            g.set_inputs(b.loads.tick(k), k)
            if g.hpwh is not None:  # the water heaters' power joins the sites' load
                if hour is None:
                    hour = float(self.clock.hour_of_day(np.array([t0 + 0.5 * self.tick_s]))[0])
                hp_w = g.hpwh.decide(hour, self.tick_s, float(self.weather.temp_air_c[k]),
                                     g.load_w, g.pv_w)
                np.add.at(g.load_w, g.hpwh.site, hp_w)

    def advance_to(self, t_s: float) -> None:
        """Integrate all sites to ``t_s`` (within the current tick), events included.

        Calls after the end of the run (a controller still waking) integrate
        nothing further.
        """
        t_s = min(t_s, self.scenario.duration_s)
        if t_s < self.now_s - 1e-9:
            raise ValueError(f"cannot advance backwards from {self.now_s} to {t_s}")
        tick_end = (self.k + 1) * self.tick_s
        if t_s > tick_end + 1e-9:
            raise ValueError(f"advance_to({t_s}) beyond the current tick end {tick_end}")
        for g in self.groups:
            g.advance_to(t_s)
        self.now_s = t_s

    def end_tick(self, stored_before_wh: float) -> TickResult:
        flows = np.zeros(len(FLOWS))
        by_group: dict[str, np.ndarray] = {}
        peak_site = 0.0
        nets = []
        for g in self.groups:
            f, peak, net = g.take_tick()
            flows += f
            by_group[g.name] = f
            peak_site = max(peak_site, peak)
            nets.append(net)
        flows_d = dict(zip(FLOWS, flows.tolist(), strict=True))
        stored_after = self.stored_wh()
        residual = self.ledger.add_tick(flows_d, stored_before_wh, stored_after)
        bat_e = sum(float(g.battery_energy_wh.sum()) for g in self.groups)
        ev_e = sum(float(g.evs.energy_wh.sum()) for g in self.groups if g.evs is not None)
        plugged = sum(int(g.evs.plugged.sum()) for g in self.groups if g.evs is not None)
        site_net = (np.concatenate(nets)[self.record_sites] if self.record_sites.size
                    else None)
        return TickResult(
            k=self.k, t_end_s=(self.k + 1) * self.tick_s, flows_wh=flows_d, by_group=by_group,
            peak_site_import_wh=peak_site,
            battery_soc_mean=bat_e / self._bat_cap_total if self._bat_cap_total else float("nan"),
            ev_soc_mean=ev_e / self._ev_cap_total if self._ev_cap_total else float("nan"),
            ev_plugged=plugged, residual_wh=residual, site_net_wh=site_net)

    # ------------------------------------------------------------------ control hooks
    def _sync(self) -> None:
        """Integrate to the environment's now (controllers call in between ticks)."""
        env = self.env
        if env is not None and env.now > self.now_s and self.k >= 0:
            self.advance_to(min(float(env.now), (self.k + 1) * self.tick_s))

    def group(self, name: str) -> SiteGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no site group named {name!r}")

    def observe(self, group_name: str) -> Observation:
        """What a controller sees of a group now (state integrated exactly to now)."""
        from cps_sim.control.observation import Observation

        self._sync()
        g = self.group(group_name)
        g.track_battery_power = True
        evs = g.evs
        k = max(self.k, 0)
        n = g.n
        empty_f = np.empty(0)
        if evs is not None and evs.n:
            cap = evs.capacity_wh
            ev = dict(ev_site=evs.site.copy(), ev_soc=evs.energy_wh / cap,
                      ev_energy_wh=evs.energy_wh.copy(), ev_capacity_wh=cap.copy(),
                      ev_plugged=evs.plugged.copy(), ev_charger_w=evs.charger_w.copy(),
                      ev_v2x_w=evs.v2x_w.copy(), ev_soc_min=evs.energy_min_wh / cap,
                      ev_target_wh=evs.target_wh.copy(), ev_departure_s=evs.departure_s.copy(),
                      ev_energy_max_wh=evs.energy_max_wh.copy(),
                      ev_charge_efficiency=evs.efficiency.copy(),
                      ev_energy_taper_wh=evs.energy_taper_wh.copy(),
                      ev_taper_line_w=evs.taper_line_w.copy())
        else:
            ev = dict(ev_site=np.empty(0, dtype=np.int64), ev_soc=empty_f,
                      ev_energy_wh=empty_f, ev_capacity_wh=empty_f,
                      ev_plugged=np.empty(0, dtype=bool), ev_charger_w=empty_f,
                      ev_v2x_w=empty_f, ev_soc_min=empty_f, ev_target_wh=empty_f,
                      ev_departure_s=empty_f, ev_energy_max_wh=empty_f,
                      ev_charge_efficiency=empty_f, ev_energy_taper_wh=empty_f,
                      ev_taper_line_w=empty_f)
        return Observation(
            now_s=self.now_s, tick_s=self.tick_s,
            site_load_w=g.load_w.copy(), site_pv_w=g.pv_w.copy(),
            site_import_limit_w=g.import_limit_w.copy(),
            site_export_limit_w=g.export_limit_w.copy(), battery_spec=g.battery,
            battery_energy_wh=g.battery_energy_wh.copy(),
            battery_capacity_wh=g.battery.capacity_wh.copy(),
            battery_power_w=g.battery_power_w.copy(), **ev,
            import_price_jpy_per_kwh=np.full(n, self.import_price_jpy_per_kwh[k]),
            export_price_jpy_per_kwh=np.full(n, self.export_price_jpy_per_kwh[k]),
            deferrable_max_w=g.job_max_w.copy(),
            deferrable_remaining_wh=g.job_remaining_wh.copy(),
            deferrable_deadline_s=g.job_deadline_s.copy())

    def apply(self, group_name: str, ev_setpoint_w: np.ndarray | None = None,
              battery_setpoint_w: np.ndarray | None = None,
              import_limit_w: np.ndarray | None = None,
              deferrable_setpoint_w: np.ndarray | None = None,
              export_limit_w: np.ndarray | None = None, *,
              t_s: float | None = None) -> None:
        """Apply setpoints from now on (the group is integrated to now first).

        EV setpoints [W] are + charge / − discharge, clipped by the engine to
        the charger and V2X limits, the SoC window and the plugged state;
        battery setpoints NaN = built-in self-consumption rule; import and export
        limits [W] per site (a CEMS allocating a point of common coupling; 0 export
        while islanded) tighten the site's own connection limits (inf: only those).
        """
        g = self.group(group_name)
        if t_s is not None and t_s > self.now_s:
            self.advance_to(t_s)
        else:
            self._sync()
        if ev_setpoint_w is not None and g.evs is not None:
            sp = np.asarray(ev_setpoint_w, dtype=float)
            if sp.shape != (g.evs.n,) or np.isnan(sp).any():
                raise ValueError(f"ev_setpoint_w must be {g.evs.n} finite-or-inf values")
            g.evs.setpoint_w = sp.copy()
            if (sp < 0).any() and not g.any_v2x:
                pass  # discharge requests are clipped to v2x_w = 0 by the engine
        if battery_setpoint_w is not None:
            sp = np.asarray(battery_setpoint_w, dtype=float)
            if sp.shape != (g.n,):
                raise ValueError(f"battery_setpoint_w must have {g.n} values")
            g.battery_setpoint_w = sp.copy()
            g.battery_setpoints = bool(np.isfinite(sp).any())
            if g.battery_setpoints:
                g.battery_active = True
            g.update_coupling()
        if deferrable_setpoint_w is not None:
            sp = np.asarray(deferrable_setpoint_w, dtype=float)
            if sp.shape != (g.n,) or np.isnan(sp).any():
                raise ValueError(f"deferrable_setpoint_w must be {g.n} values")
            g.job_setpoint_w = sp.copy()
        if import_limit_w is not None:
            lim = np.asarray(import_limit_w, dtype=float)
            if lim.shape != (g.n,) or np.isnan(lim).any() or (lim < 0).any():
                raise ValueError(f"import_limit_w must be {g.n} values >= 0")
            g.import_limit_w = np.minimum(g.grid_import_limit_w, lim)
            g.any_import_limit = bool(np.isfinite(g.import_limit_w).any())
            g.update_coupling()
        if export_limit_w is not None:
            lim = np.asarray(export_limit_w, dtype=float)
            if lim.shape != (g.n,) or np.isnan(lim).any() or (lim < 0).any():
                raise ValueError(f"export_limit_w must be {g.n} values >= 0")
            g.export_limit_w = np.minimum(g.grid_export_limit_w, lim)
            g.any_export_limit = bool(np.isfinite(g.export_limit_w).any())
            g.update_coupling()
        keys = {k for k, v in (("ev_setpoint_w", ev_setpoint_w),
                               ("battery_setpoint_w", battery_setpoint_w)) if v is not None}
        if keys:
            self._notify_setpoints(group_name, keys)

    # ------------------------------------------------------------------ external devices
    def bind_external(self, group: str, kind: str, site: int, ev_index: int = 0
                      ) -> ExternalMember:
        """Bind one member of ``group`` to an external device (the MQTT bridge's hook).

        ``kind`` is ``"ev"``, ``"battery"``, ``"pv"`` or ``"load"``; ``site`` the
        site's index within the group; for an EV, ``ev_index`` picks the site's
        n-th vehicle.  See :mod:`cps_sim.world.external` for what the returned
        member does.  A member can be bound once.
        """
        from cps_sim.world.external import KINDS, ExternalMember, member_setpoint_w

        g = self.group(group)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not (isinstance(site, (int, np.integer)) and 0 <= site < g.n):
            raise ValueError(f"site must be an index 0..{g.n - 1} of group {group!r}, "
                             f"got {site!r}")
        site = int(site)
        index = site
        if kind == "ev":
            first, last = int(g.ev_start[site]), int(g.ev_start[site + 1])
            if not 0 <= ev_index < last - first:
                raise ValueError(f"site {site} of group {group!r} has {last - first} EV(s); "
                                 f"no ev_index {ev_index}")
            index = first + int(ev_index)
        elif kind == "battery" and not g.battery.capacity_wh[site] > 0:
            raise ValueError(f"site {site} of group {group!r} has no battery")
        elif kind == "pv" and not g.pv_capacity_w[site] > 0:
            raise ValueError(f"site {site} of group {group!r} has no PV")
        for m in self.external:
            if m.group is g and m.kind == kind and m.index == index:
                raise ValueError(f"{m.name} is already bound")
        member = ExternalMember(self, g, kind, site, index)
        applied = self._applied_keys.get(group, set())
        if member.kind in ("ev", "battery") and f"{kind}_setpoint_w" in applied:
            member.setpoint_w = member_setpoint_w(g, kind, index)
        self.external.append(member)
        return member

    def _notify_setpoints(self, group: str, keys: set[str]) -> None:
        from cps_sim.world.external import SETPOINT_KEY, member_setpoint_w

        self._applied_keys.setdefault(group, set()).update(keys)
        if not self.external:
            return
        for m in self.external:
            if m.group.name == group and SETPOINT_KEY[m.kind] in keys:
                m._offer_setpoint(self.now_s, member_setpoint_w(m.group, m.kind, m.index))

    # ------------------------------------------------------------------ processes
    def start(self, env: simpy.Environment, on_tick: Callable[[TickResult], None],
              transport: Transport | None = None) -> Wiring:
        """Register the world's SimPy processes on ``env`` (trip planners, process
        windows, the settlement tick, battery ageing), then wire the scenario's
        controllers (:func:`cps_sim.world.wiring.wire`) on ``transport`` (default:
        the in-memory bus of ``control.transport``).  Returns the wiring."""
        from cps_sim.world.wiring import wire

        self.env = env
        for b in self.bindings:
            if b.group.evs is not None and b.group.evs.n:
                env.process(self._trip_planner(env, b))
            if b.group.jobs:
                env.process(self._process_windows(env, b))
        env.process(self._settlement(env, on_tick))
        if any(g.battery_ageing is not None for g in self.groups):
            env.process(self._battery_ageing(env))
        return wire(env, self, transport, base_dir=self.base_dir)

    def _settlement(self, env: simpy.Environment, on_tick: Callable[[TickResult], None]):
        for k in range(self.n_ticks):
            self.begin_tick(k)
            stored_before = self.stored_wh()
            t_end = (k + 1) * self.tick_s
            yield env.timeout(t_end - env.now)
            self.advance_to(t_end)
            result = self.end_tick(stored_before)
            hp_cols = self._hpwh_end_tick(k)
            if hp_cols:
                result.extra = dict(hp_cols)
            if self.tick_hooks:
                result.extra = result.extra or {}
                for hook in self.tick_hooks:
                    result.extra.update(hook.on_tick(self, result))
            on_tick(result)

    def _battery_ageing(self, env: simpy.Environment):
        """Once a day: capacity fade of every ageing battery population."""
        day = 86400.0
        t = day
        while t <= self.scenario.duration_s:
            yield env.timeout(t - env.now)
            self.advance_to(t)
            k0 = int((t - day) // self.tick_s)
            temp = float(self.weather.temp_air_c[k0: int(t // self.tick_s)].mean())
            for g in self.groups:
                if g.battery_ageing is not None:
                    g.battery_ageing.step(g, day, temp)
            t += day

    def _process_windows(self, env: simpy.Environment, b: GroupBinding):
        """Each (working) day: open the deferrable processes' window, then close it at the
        deadline, booking what was not delivered.  Both instants are exact."""
        d = b.spec.deferrable
        g = b.group
        end = self.scenario.duration_s
        midnight = self.clock.local_midnight_s(0.0)
        while midnight < end:
            t_open = midnight + d.window_start_h * 3600.0
            t_close = midnight + d.deadline_h * 3600.0
            working = d.days == "all" or not bool(is_day_off(
                self.clock.index(np.array([max(t_open, 0.0)])), self.scenario.holidays)[0])
            if working and t_open >= 0.0 and t_close <= end:
                yield env.timeout(t_open - env.now)
                self.advance_to(t_open)
                g.open_jobs(g.job_energy_wh, t_close)
                yield env.timeout(t_close - env.now)
                self.advance_to(t_close)
                g.close_jobs()
            nxt = self.clock.local_midnight_s(midnight + 36 * 3600.0)
            if nxt >= end:
                return
            yield env.timeout(max(nxt - env.now, 0.0))
            midnight = nxt

    def _temp_at(self, t_s: np.ndarray) -> np.ndarray:
        """Tick-mean air temperature [°C] at simulation times (held beyond the run)."""
        k = np.clip((np.asarray(t_s) // self.tick_s).astype(np.int64), 0, self.n_ticks - 1)
        return self.weather.temp_air_c[k]

    def _hpwh_end_tick(self, k: int) -> dict[str, float]:
        cols: dict[str, float] = {}
        t0 = k * self.tick_s
        groups = [g for g in self.groups if g.hpwh is not None]
        if not groups:
            return cols
        t0_local = t0 - self.clock.local_midnight_s(t0)
        for g in groups:
            for name, v in g.hpwh.end_tick(t0_local, self.tick_s,
                                           float(self.weather.temp_air_c[k])).items():
                cols[name] = cols.get(name, 0.0) + v
        if len(groups) > 1:
            cols["hpwh_tank_temp_mean_c"] /= len(groups)
        return cols

    def _trip_planner(self, env: simpy.Environment, b: GroupBinding):
        spec = b.spec.ev
        stream = f"sites/{b.spec.name}/ev/trips"
        end = self.scenario.duration_s
        midnight = self.clock.local_midnight_s(0.0)
        start_date = self.clock.to_datetime(0.0).date()
        while midnight < end:
            local_day = self.clock.to_datetime(max(midnight, 0.0))
            day_index = (local_day.date() - start_date).days
            off = bool(is_day_off(self.clock.index(np.array([max(midnight, 0.0)])),
                                  self.scenario.holidays)[0])
            plan_day(b.group, spec.trips.weekend if off else spec.trips.weekday, day_index,
                     midnight, 0.0, self.rng, stream,
                     self._temp_at if spec.temperature_dependent_consumption else None)
            nxt = self.clock.local_midnight_s(midnight + 36 * 3600.0)  # DST-safe next midnight
            if nxt >= end:
                return
            yield env.timeout(nxt - env.now)
            midnight = nxt
