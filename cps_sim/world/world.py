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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import simpy

from cps_sim.control.observation import OBSERVATION_FIELDS, Observation
from cps_sim.core.calendar import is_day_off
from cps_sim.core.clock import Clock, tick_index
from cps_sim.core.ledger import EnergyLedger
from cps_sim.core.rng import RngStreams
from cps_sim.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR
from cps_sim.scenario.schema import Scenario, SiteGroupSpec
from cps_sim.world.exogenous import LoadBlocks, RunWeather
from cps_sim.world.group import FLOWS, SiteGroup
from cps_sim.world.populations import SETPOINT_DEFS, SINKS, SOURCES, TickContext
from cps_sim.world.trips import plan_day

if TYPE_CHECKING:
    from cps_sim.core.bus import Transport
    from cps_sim.world.external import ExternalMember
    from cps_sim.world.wiring import Wiring


_EMPTY_EV: dict[str, np.ndarray] = dict(
    ev_site=np.empty(0, dtype=np.int64),
    ev_soc=np.empty(0),
    ev_energy_wh=np.empty(0),
    ev_capacity_wh=np.empty(0),
    ev_plugged=np.empty(0, dtype=bool),
    ev_charger_w=np.empty(0),
    ev_v2x_w=np.empty(0),
    ev_soc_min=np.empty(0),
    ev_target_wh=np.empty(0),
    ev_departure_s=np.empty(0),
    ev_energy_max_wh=np.empty(0),
    ev_charge_efficiency=np.empty(0),
    ev_energy_taper_wh=np.empty(0),
    ev_taper_line_w=np.empty(0),
)


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
    stored_wh: float = float("nan")  # energy in every store at the end of the tick
    group_stored_wh: dict[str, float] | None = None  # the same per site group
    group_columns: dict[str, dict[str, float]] | None = None  # per-tick devices, per group
    flows: np.ndarray | None = None  # flows_wh as an array in FLOWS order


class World:
    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        rng: RngStreams,
        bindings: list[GroupBinding],
        weather: RunWeather,
    ):
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
        self.carbon_price_jpy_per_t = np.full(
            self.n_ticks, scenario.emissions.carbon_price_jpy_per_t
        )
        self.k = -1  # current tick
        self.now_s = 0.0
        # ticks of the warm-up at the start of the run: simulated, not recorded (set by
        # the caller that stretched the scenario, experiment.run.simulate)
        self.warmup_ticks = 0
        self.ledger = EnergyLedger(self.stored_wh(), sources=SOURCES, sinks=SINKS)
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
        self._ev_cap_total = sum(
            float(g.evs.capacity_wh.sum()) for g in self.groups if g.evs is not None
        )

    # ------------------------------------------------------------------ state
    def stored_wh(self) -> float:
        return sum(g.stored_wh() for g in self.groups)

    def begin_tick(self, k: int) -> None:
        self.k = k
        ctx = TickContext(self, k)
        for b in self.bindings:
            g = b.group
            g.set_inputs(b.loads.tick(k), k)
            for p in g.tick_pops:  # per-tick devices: their power joins the sites' load
                p.begin_tick(ctx)

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
        group_stored: dict[str, float] = {}
        bat_e = ev_e = 0.0
        plugged = 0
        for g in self.groups:
            f, peak, net = g.take_tick()
            flows += f
            by_group[g.name] = f
            peak_site = max(peak_site, peak)
            nets.append(net)
            group_stored[g.name], bat, ev = g.stored_parts_wh()
            bat_e += bat
            ev_e += ev
            if g.evs is not None:
                plugged += int(np.count_nonzero(g.evs.plugged))
        flows_d = dict(zip(FLOWS, flows.tolist(), strict=True))
        stored_after = sum(group_stored.values())
        residual = self.ledger.add_tick(flows_d, stored_before_wh, stored_after)
        site_net = np.concatenate(nets)[self.record_sites] if self.record_sites.size else None
        return TickResult(
            k=self.k,
            t_end_s=(self.k + 1) * self.tick_s,
            flows_wh=flows_d,
            by_group=by_group,
            peak_site_import_wh=peak_site,
            battery_soc_mean=bat_e / self._bat_cap_total if self._bat_cap_total else float("nan"),
            ev_soc_mean=ev_e / self._ev_cap_total if self._ev_cap_total else float("nan"),
            ev_plugged=plugged,
            residual_wh=residual,
            site_net_wh=site_net,
            stored_wh=stored_after,
            group_stored_wh=group_stored,
            flows=flows,
        )

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
        """What a controller sees of a group now (state integrated exactly to now).

        The fields come from the group's populations (``Population.observe``);
        fields no :class:`Observation` attribute declares go to ``Observation.extra``.
        """
        self._sync()
        g = self.group(group_name)
        k = max(self.k, 0)
        n = g.n
        fields: dict[str, Any] = dict(_EMPTY_EV)
        if g.deferrable is None:
            deadline = np.empty(n)
            deadline.fill(np.inf)
            fields.update(
                deferrable_max_w=np.zeros(n),
                deferrable_remaining_wh=np.zeros(n),
                deferrable_deadline_s=deadline,
            )
        for p in g.populations:
            fields.update(p.observe())
        extra = {f: fields.pop(f) for f in [f for f in fields if f not in OBSERVATION_FIELDS]}
        imp = np.empty(n)
        imp.fill(self.import_price_jpy_per_kwh[k])
        exp = np.empty(n)
        exp.fill(self.export_price_jpy_per_kwh[k])
        fields.update(
            now_s=self.now_s,
            tick_s=self.tick_s,
            site_import_limit_w=g.import_limit_w.copy(),
            site_export_limit_w=g.export_limit_w.copy(),
            import_price_jpy_per_kwh=imp,
            export_price_jpy_per_kwh=exp,
            setpoint_sizes=g.setpoint_sizes(),
            extra=extra,
        )
        return Observation.from_fields(fields)

    def setpoint_sizes(self, group_name: str) -> dict[str, int]:
        """Control keys the group accepts and the array length of each."""
        return self.group(group_name).setpoint_sizes()

    def apply(
        self, group_name: str, t_s: float | None = None, **setpoints: np.ndarray | None
    ) -> None:
        """Apply setpoints from now on (the group is integrated to now first).

        Keys are those of the group's populations (``SETPOINT_KEYS``, e.g.
        ``ev_setpoint_w`` [W] per EV, + charge / − discharge, clipped by the engine
        to the charger and V2X limits, the SoC window and the plugged state;
        ``battery_setpoint_w`` per site and ``battery_mode`` per site (``BATTERY_FOLLOW``
        follows the setpoint, ``BATTERY_AUTO`` the built-in self-consumption rule; NaN
        is never valid);
        ``deferrable_setpoint_w``) and the connection's ``import_limit_w`` and
        ``export_limit_w`` per site (a CEMS allocating a point of common coupling;
        0 export while islanded), which tighten the site's own limits.  A key of a
        device family the group does not have is ignored; an unknown key or an
        array of the wrong size is a ``ValueError``.
        """
        g = self.group(group_name)
        if t_s is not None and t_s > self.now_s:
            self.advance_to(t_s)
        else:
            self._sync()
        sizes = g.setpoint_sizes()
        checked = {}
        for key, value in setpoints.items():
            if value is None:
                continue
            if key not in SETPOINT_DEFS:
                raise ValueError(f"unknown setpoint key {key!r}; one of {sorted(SETPOINT_DEFS)}")
            if key not in sizes:
                continue  # e.g. EV setpoints for a group without EVs
            checked[key] = SETPOINT_DEFS[key][1].check(value, sizes[key])
        # every value checked before any is applied; keys in declaration order
        # (battery_setpoint_w before battery_mode)
        for key in SETPOINT_DEFS:
            if key in checked:
                g.apply(key, checked[key])
        keys = set(checked) & {"ev_setpoint_w", "battery_setpoint_w", "battery_mode"}
        if keys:
            self._notify_setpoints(group_name, keys)

    # ------------------------------------------------------------------ external devices
    def bind_external(self, group: str, kind: str, site: int, ev_index: int = 0) -> ExternalMember:
        """Bind one member of ``group`` to an external device (the MQTT bridge's hook).

        ``kind`` is ``"ev"``, ``"battery"``, ``"pv"`` or ``"load"``; ``site`` the
        site's index within the group; for an EV, ``ev_index`` picks the site's
        n-th vehicle.  See :mod:`cps_sim.world.external` for what the returned
        member does.  A member can be bound once.
        """
        from cps_sim.world.external import KINDS, SETPOINT_KEYS_OF, ExternalMember, member_setpoint

        g = self.group(group)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not (isinstance(site, (int, np.integer)) and 0 <= site < g.n):
            raise ValueError(f"site must be an index 0..{g.n - 1} of group {group!r}, got {site!r}")
        site = int(site)
        index = site
        if kind == "ev":
            first, last = int(g.ev_start[site]), int(g.ev_start[site + 1])
            if not 0 <= ev_index < last - first:
                raise ValueError(
                    f"site {site} of group {group!r} has {last - first} EV(s); "
                    f"no ev_index {ev_index}"
                )
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
        if any(k in applied for k in SETPOINT_KEYS_OF[kind]):
            member.setpoint_w, member.setpoint_mode = member_setpoint(g, kind, index)
        self.external.append(member)
        return member

    def _notify_setpoints(self, group: str, keys: set[str]) -> None:
        self._applied_keys.setdefault(group, set()).update(keys)
        if not self.external:
            return
        from cps_sim.world.external import SETPOINT_KEYS_OF, member_setpoint

        for m in self.external:
            if m.group.name == group and keys.intersection(SETPOINT_KEYS_OF[m.kind]):
                m._offer_setpoint(self.now_s, *member_setpoint(m.group, m.kind, m.index))

    # ------------------------------------------------------------------ processes
    def start(
        self,
        env: simpy.Environment,
        on_tick: Callable[[TickResult], None],
        transport: Transport | None = None,
    ) -> Wiring:
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
            cols, result.group_columns = self._tick_columns(k)
            if cols:
                result.extra = cols
            if self.tick_hooks:
                result.extra = result.extra or {}
                for hook in self.tick_hooks:
                    result.extra.update(hook.on_tick(self, result))
            on_tick(result)

    def _battery_ageing(self, env: simpy.Environment):
        """Once a day: capacity fade of every ageing battery population."""
        day = SECONDS_PER_DAY
        t = day
        while t <= self.scenario.duration_s:
            yield env.timeout(t - env.now)
            self.advance_to(t)
            k0 = int((t - day) // self.tick_s)
            temp = float(self.weather.temp_air_c[k0 : int(t // self.tick_s)].mean())
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
            t_open = midnight + d.window_start_h * SECONDS_PER_HOUR
            t_close = midnight + d.deadline_h * SECONDS_PER_HOUR
            working = d.days == "all" or not bool(
                is_day_off(self.clock.index(np.array([max(t_open, 0.0)])), self.scenario.holidays)[
                    0
                ]
            )
            if working and t_open >= 0.0 and t_close <= end:
                yield env.timeout(t_open - env.now)
                self.advance_to(t_open)
                g.deferrable.open(t_close)
                yield env.timeout(t_close - env.now)
                self.advance_to(t_close)
                g.deferrable.close()
            nxt = self.clock.local_midnight_s(midnight + 36 * SECONDS_PER_HOUR)
            if nxt >= end:
                return
            yield env.timeout(max(nxt - env.now, 0.0))
            midnight = nxt

    def _temp_at(self, t_s: np.ndarray) -> np.ndarray:
        """Tick-mean air temperature [°C] at simulation times (held beyond the run)."""
        return self.weather.temp_air_c[tick_index(t_s, self.tick_s, self.n_ticks)]

    def _tick_columns(self, k: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Close the tick of every per-tick population (e.g. advance water-heater tanks).
        Returns their columns over all groups (summed, those named ``*mean*`` averaged)
        and per group; with ageing batteries also their state of health."""
        ctx = TickContext(self, k)
        cols: dict[str, float] = {}
        count: dict[str, int] = {}
        per_group: dict[str, dict[str, float]] = {}
        for g in self.groups:
            for p in g.tick_pops:
                for name, v in p.end_tick(ctx).items():
                    cols[name] = cols.get(name, 0.0) + v
                    count[name] = count.get(name, 0) + 1
                    per_group.setdefault(g.name, {})[name] = v
        for name, c in count.items():
            if "mean" in name and c > 1:
                cols[name] /= c
        aged = [g for g in self.groups if g.battery_ageing is not None]
        if aged:
            soh = np.concatenate([g.battery_ageing.state_of_health(g) for g in aged])
            if soh.size:
                cols["battery_soh_mean"] = float(soh.mean())
                cols["battery_soh_min"] = float(soh.min())
        return cols, per_group

    def _trip_planner(self, env: simpy.Environment, b: GroupBinding):
        spec = b.spec.ev
        stream = f"sites/{b.spec.name}/ev/trips"
        end = self.scenario.duration_s
        midnight = self.clock.local_midnight_s(0.0)
        start_date = self.clock.to_datetime(0.0).date()
        while midnight < end:
            local_day = self.clock.to_datetime(max(midnight, 0.0))
            day_index = (local_day.date() - start_date).days
            off = bool(
                is_day_off(
                    self.clock.index(np.array([max(midnight, 0.0)])), self.scenario.holidays
                )[0]
            )
            plan_day(
                b.group,
                spec.trips.weekend if off else spec.trips.weekday,
                day_index,
                midnight,
                0.0,
                self.rng,
                stream,
                self._temp_at if spec.temperature_dependent_consumption else None,
            )
            # DST-safe next midnight
            nxt = self.clock.local_midnight_s(midnight + 36 * SECONDS_PER_HOUR)
            if nxt >= end:
                return
            yield env.timeout(nxt - env.now)
            midnight = nxt
