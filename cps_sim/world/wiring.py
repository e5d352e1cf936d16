"""The one assembly point between the world and its controllers.

:func:`wire` (called by :meth:`World.start <cps_sim.world.world.World.start>`)

1. creates the transport: a :class:`~cps_sim.core.bus.MemoryTransport` with the
   scenario's ``control.transport`` latency, jitter and loss, unless the caller
   hands in any object that implements :class:`~cps_sim.core.bus.Transport`
   (e.g. the MQTT transport of ``cps_sim.bridge``);
2. builds every controller from plain configuration objects (EV strategies:
   :class:`~cps_sim.control.strategies.StrategyConfig`; EMS: ``HemsConfig`` ...;
   VPP: :class:`~cps_sim.control.vpp_runtime.VppConfig`).  This module is the only
   place that reads both the scenario and the site groups for control; the
   controllers see observations, never a ``SiteGroup``, and the control package
   imports nothing from ``cps_sim.scenario``;
3. starts the device/controller SimPy process pairs, in a fixed order (EV
   strategies, VPP, EMS — results depend on it at shared instants).

Everything it creates is kept on the returned :class:`Wiring` (``world.wiring``):
the transport, controller and device statistics, the EMS controllers and the
VPP runtime.

Members bound to external devices (:meth:`World.bind_external
<cps_sim.world.world.World.bind_external>`) are the other half of the bridge's
interface; see :mod:`cps_sim.world.external`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from cps_sim.control.base import (
    ControllerStats,
    DeviceStats,
    controller_process,
    device_process,
)
from cps_sim.control.strategies import StrategyConfig, StrategyController
from cps_sim.core.bus import MemoryTransport, Transport
from cps_sim.core.clock import tick_index
from cps_sim.core.errors import ScenarioError
from cps_sim.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR

if TYPE_CHECKING:
    from cps_sim.control.vpp_runtime import VppRuntime
    from cps_sim.scenario.ems_schema import EmsSpec, HemsSpec
    from cps_sim.scenario.vpp_schema import VppSpec
    from cps_sim.world.group import SiteGroup
    from cps_sim.world.world import World


@dataclass
class Wiring:
    """What :func:`wire` created for one run (``world.wiring``)."""

    env: simpy.Environment
    world: World
    transport: Transport
    controller_stats: dict[str, ControllerStats] = field(default_factory=dict)
    device_stats: dict[str, DeviceStats] = field(default_factory=dict)
    # EMS: group -> (ControllerStats or None for CEMS members, DeviceStats)
    ems_stats: dict[str, tuple[ControllerStats | None, DeviceStats]] = field(default_factory=dict)
    controllers: dict[str, Any] = field(default_factory=dict)  # EV strategies by group
    ems_controllers: dict[str, Any] = field(default_factory=dict)
    vpp: VppRuntime | None = None


def make_transport(
    env: simpy.Environment, world: World, transport: Transport | None = None
) -> Transport:
    """``transport`` if given, else the scenario's in-memory bus (seeded stream
    ``control/transport`` for jitter and loss)."""
    if transport is not None:
        for attr in ("publish", "subscribe"):
            if not callable(getattr(transport, attr, None)):
                raise TypeError(
                    f"transport {type(transport).__name__} has no {attr}() "
                    "(see cps_sim.core.bus.Transport)"
                )
        return transport
    t = world.scenario.control.transport
    return MemoryTransport(
        env,
        world.rng.generator("control/transport"),
        latency_s=t.latency_s,
        jitter_s=t.jitter_s,
        loss=t.loss,
    )


def wire(
    env: simpy.Environment,
    world: World,
    transport: Transport | None = None,
    *,
    base_dir: Path | None = None,
) -> Wiring:
    """Create the transport and start every controller of the world's scenario."""
    w = Wiring(env, world, make_transport(env, world, transport))
    world.wiring = w
    _start_strategies(w)
    if world.scenario.vpp is not None:
        start_vpp(env, world, world.scenario.vpp, base_dir)
    # last: at a shared instant the settlement tick must run before the EMS observes
    start_ems(env, world)
    return w


def _wiring(env: simpy.Environment, world: World) -> Wiring:
    w = getattr(world, "wiring", None)
    if w is None:
        w = Wiring(env, world, make_transport(env, world))
        world.wiring = w
    return w


# ---------------------------------------------------------------------- EV strategies
def price_forecast(world: World):
    """Tariff import price at simulation times (the tick's price, held at the ends)."""
    return _tick_series(world, world.import_price_jpy_per_kwh)


def strategy_config(
    world: World, group: SiteGroup, interval_s: float, **options: Any
) -> StrategyConfig:
    """EV-strategy settings bound to this run: the tariff as the price forecast (import
    and export), the group's PV from the run's own PV profiles as the PV forecast (the
    ``cost`` planner's surplus; load is forecast by persistence inside the strategy),
    the local week offset of t = 0, and the group's EV efficiency."""
    start = world.clock.to_datetime(0.0)
    week_offset = (
        start.weekday() * SECONDS_PER_DAY
        + start.hour * SECONDS_PER_HOUR
        + start.minute * 60.0
        + start.second
    )
    eff = float(group.evs.efficiency.mean()) if group.evs is not None and group.evs.n else 0.9
    return StrategyConfig(
        interval_s=interval_s,
        price_forecast=price_forecast(world),
        export_price_forecast=_tick_series(world, world.export_price_jpy_per_kwh),
        pv_forecast=_pv_forecast(world, group),
        week_offset_s=week_offset,
        charge_efficiency=eff,
        discharge_efficiency=eff,
        **options,
    )


def _start_strategies(w: Wiring) -> None:
    world, env = w.world, w.env
    ctl = world.scenario.control
    for b in world.bindings:
        g = b.group
        spec = ctl.for_group(b.spec.name)
        if g.evs is None or not g.evs.n or spec.ev_strategy is None:
            continue
        interval = spec.interval_s or world.tick_s
        extra = {"hold_s": spec.ttl_s} if spec.ttl_s is not None else {}
        cfg = strategy_config(
            world,
            g,
            interval,
            **extra,
            enable_delay_s=spec.enable_delay_s,
            disable_delay_s=spec.disable_delay_s,
            min_current_a=spec.min_current_a,
            voltage_v=spec.voltage_v,
            priority=spec.priority,
            v2h_hours=(spec.v2h_start_h, spec.v2h_end_h),
            v2g_price_jpy_per_kwh=spec.v2g_price_jpy_per_kwh,
        )
        name = b.spec.name
        controller = w.controllers[name] = StrategyController(spec.ev_strategy, cfg)
        cs = w.controller_stats[name] = ControllerStats()
        ds = w.device_stats[name] = DeviceStats()
        env.process(device_process(env, world, w.transport, name, stats=ds))
        env.process(
            controller_process(
                env, world, controller, w.transport, name, ttl_s=spec.ttl_s, stats=cs
            )
        )


# ---------------------------------------------------------------------- EMS
def _err(path: str, message: str) -> ScenarioError:
    return ScenarioError.single(None, path, message)


def _seconds(world: World, t) -> float:
    return (t - world.scenario.start).total_seconds()


def _tick_series(world: World, series: np.ndarray):
    tick = world.tick_s

    def at(times_s: np.ndarray) -> np.ndarray:
        return series[tick_index(times_s, tick, series.size)]

    return at


def _pv_forecast(
    world: World, group: SiteGroup, spec: HemsSpec | None = None, name: str | None = None
):
    """The group's PV at simulation times from the run's PV profiles (tick means); with a
    HEMS spec asking for ``noisy``, with seeded noise growing with lead time."""
    from cps_sim.models.solar import site_ac_power_w

    tick = world.tick_s
    unit = group.pv_unit_w_per_w
    cap_w = group.pv_capacity_w.copy()
    orient = group.pv_orientation.copy()
    ac_w = group.pv_ac_limit_w.copy() if np.isfinite(group.pv_ac_limit_w).any() else None
    noisy = spec is not None and spec.forecast == "noisy"
    rng = world.rng.generator(f"ems/{name}/forecast") if noisy else None

    def pv(times_s: np.ndarray, sites: np.ndarray | None = None) -> np.ndarray:
        k = tick_index(times_s, tick, unit.shape[0])
        # the asked sites only, but every site when noise is drawn (it is drawn for all)
        sel = slice(None) if sites is None or rng is not None else sites
        out = site_ac_power_w(cap_w[sel], unit[k], orient[sel], None if ac_w is None else ac_w[sel])
        if rng is None:
            return out
        from cps_sim.control.optimise import noisy_forecast

        out = noisy_forecast(out, rng, spec.forecast_noise_rel_sigma)
        return out if sites is None else out[sites]

    pv.takes_sites = True  # type: ignore[attr-defined]  # observation.site_forecast
    return pv


def _load_forecast(world: World, name: str, spec: HemsSpec):
    """The group's load at simulation times from a copy of the run's own load blocks (same
    named noise streams, so the same values; the run's cache is not touched); ``noisy``
    adds seeded noise growing with lead time (stream ``ems/<group>/load_forecast``)."""
    import copy

    binding = next(b for b in world.bindings if b.spec.name == name)
    blocks = copy.copy(binding.loads)
    blocks.block, blocks.values = -1, None
    tick = world.tick_s
    n_ticks = world.n_ticks
    rng = world.rng.generator(f"ems/{name}/load_forecast") if spec.forecast == "noisy" else None

    def load(times_s: np.ndarray) -> np.ndarray:
        k = tick_index(times_s, tick, n_ticks)
        out = np.stack([blocks.tick(int(i)) for i in k], axis=1)
        if rng is not None:
            from cps_sim.control.optimise import noisy_forecast

            out = noisy_forecast(out, rng, spec.forecast_noise_rel_sigma)
        return out

    return load


def _draw_forecast(world: World, group: SiteGroup, spec: HemsSpec, name: str):
    """The water heaters' hot-water heat demand per MPC step [Wh_th] at simulation times,
    ``(n_units, T)``, from the units' own daily draw and hourly shape (the model's
    :func:`~cps_sim.models.heat_pump.draw_energy_wh_th`); ``noisy`` adds seeded noise
    (stream ``ems/<group>/draw_forecast``).  None when the group has no water heaters."""
    from cps_sim.models.heat_pump import draw_energy_wh_th

    pop = next((p for p in group.populations if p.key == "hpwh"), None)
    if pop is None:
        return None
    daily = pop.daily_draw_wh_th.copy()
    clock = world.clock
    step = spec.mpc_step_s
    rng = world.rng.generator(f"ems/{name}/draw_forecast") if spec.forecast == "noisy" else None

    def draw(times_s: np.ndarray) -> np.ndarray:
        t = np.asarray(times_s, dtype=float)
        local = t - np.array([clock.local_midnight_s(float(x)) for x in t])
        out = np.asarray(draw_energy_wh_th(local, step, daily)).reshape(t.size, -1).T
        if rng is not None:
            from cps_sim.control.optimise import noisy_forecast

            out = noisy_forecast(out, rng, spec.forecast_noise_rel_sigma)
        return out

    return draw


def _temp_forecast(world: World, spec: HemsSpec):
    """Outdoor air temperature at simulation times: the run's own (perfect, noisy) or the
    same time the day before (persistence; the first day: the run's start value)."""
    lag = SECONDS_PER_DAY if spec.forecast == "persistence" else 0.0

    def temp(times_s: np.ndarray) -> np.ndarray:
        return world._temp_at(np.maximum(np.asarray(times_s, dtype=float) - lag, 0.0))

    return temp


def build_controller(world: World, name: str, spec: EmsSpec):
    """The controller object for one group's EMS spec (CEMS: for all its members)."""
    # the EMS modules (the HEMS MPC, the oracle's LP) are imported by runs that have one
    from cps_sim.control.ems import (
        BemsConfig,
        BemsController,
        Calendar,
        CemsConfig,
        CemsController,
        EvDelegate,
        FemsConfig,
        FemsController,
        HemsConfig,
        HemsController,
        MpcConfig,
    )
    from cps_sim.scenario.ems_schema import BemsSpec, CemsSpec, FemsSpec, HemsSpec

    g = world.group(name)
    interval = spec.interval_s
    if isinstance(spec, HemsSpec):
        mpc = None
        if spec.battery_mode == "mpc":
            steps = max(1, round(spec.mpc_horizon_h * SECONDS_PER_HOUR / spec.mpc_step_s))
            known = spec.forecast != "persistence"
            mpc = MpcConfig(
                pv_forecast=_pv_forecast(world, g, spec, name) if known else None,
                load_forecast=_load_forecast(world, name, spec) if known else None,
                import_price_forecast=_tick_series(world, world.import_price_jpy_per_kwh),
                export_price_forecast=_tick_series(world, world.export_price_jpy_per_kwh),
                horizon_steps=steps,
                step_s=spec.mpc_step_s,
                replan_s=spec.mpc_replan_s,
                final_soc=spec.mpc_final_soc,
                plan_evs=spec.mpc_plan_evs,
                forecast_name=spec.forecast,
                plan_hpwh=spec.mpc_plan_hpwh,
                draw_forecast=_draw_forecast(world, g, spec, name) if known else None,
                temp_forecast=_temp_forecast(world, spec),
            )
        dr = tuple(
            (_seconds(world, w.start), _seconds(world, w.end), w.reduce_kw * 1000.0)
            for w in spec.dr_windows
        )
        cfg = HemsConfig(
            ev=EvDelegate(spec.ev_strategy, strategy_config(world, g, interval)),
            interval_s=interval,
            battery_mode=spec.battery_mode,
            dr_windows=dr,
            dr_precharge_s=spec.dr_precharge_h * SECONDS_PER_HOUR,
            mpc=mpc,
            observe=spec.observe,
        )
        if spec.observe == "meter" and g.meter is None:
            raise _err(
                f"ems.{name}.observe",
                f"observe: meter needs a smart meter on site group {name!r} (sites[].smart_meter)",
            )
        return HemsController(cfg, name=f"hems_{name}")
    if isinstance(spec, BemsSpec):
        cfg = BemsConfig(
            ev=EvDelegate(spec.ev_strategy, strategy_config(world, g, interval)),
            calendar=Calendar.from_clock(world.clock),
            initial_threshold_w=spec.initial_threshold_kw * 1000.0,
            interval_s=interval,
            demand_interval_s=spec.demand_interval_s,
            recharge_soc=spec.recharge_soc,
            headroom_fraction=spec.headroom_fraction,
        )
        return BemsController(cfg, name=f"bems_{name}")
    if isinstance(spec, FemsSpec):
        has_slots = g.evs is not None and g.evs.n
        if not has_slots and not g.jobs:
            raise _err(
                f"ems.{name}",
                "a FEMS needs deferrable processes: a 'deferrable:' "
                "block on the site group (or EV-like slots, see docs/ems.md)",
            )
        eff = g.evs.efficiency.copy() if has_slots else np.empty(0)
        cfg = FemsConfig(
            process_efficiency=eff,
            interval_s=interval,
            cheap_price_jpy_per_kwh=spec.cheap_price_jpy_per_kwh,
            deadline_margin_s=spec.deadline_margin_s,
            rate_factor=spec.rate_factor,
            battery_mode=spec.battery_mode,
        )
        return FemsController(cfg, name=f"fems_{name}")
    if isinstance(spec, CemsSpec):
        if world.tick_s % interval > 1e-9 * world.tick_s:
            raise _err(
                f"ems.{name}.interval_s",
                f"must divide the tick ({world.tick_s:g} s), got {interval:g}",
            )
        members = [name] + [m for m in spec.member_groups if m != name]
        known = {x.name for x in world.groups}
        bad = [m for m in members + list(spec.shared_battery_groups) if m not in known]
        if bad:
            raise _err(f"ems.{name}", f"unknown site groups {bad} (site groups: {sorted(known)})")
        groups = [world.group(m) for m in members]
        n = sum(x.n for x in groups)
        if isinstance(spec.priority, dict):  # one class per member group
            unknown = sorted(set(spec.priority) - set(members))
            if unknown:
                raise _err(
                    f"ems.{name}.priority",
                    f"names groups that are not members: {unknown} (members: {members})",
                )
            pr = np.concatenate(
                [
                    np.full(x.n, int(spec.priority.get(m, 0)))
                    for m, x in zip(members, groups, strict=True)
                ]
            )
        else:
            pr = np.asarray(spec.priority, dtype=np.int64)
        if pr.ndim == 0:
            pr = np.full(n, int(pr))
        elif pr.size != n:
            raise _err(f"ems.{name}.priority", f"{pr.size} values for {n} sites of {members}")
        shared = tuple(m in spec.shared_battery_groups for m in members)
        cfg = CemsConfig(
            groups=tuple(members),
            shared=shared,
            priority=pr,
            evs=tuple(
                EvDelegate(spec.ev_strategy, strategy_config(world, x, interval)) for x in groups
            ),
            interval_s=interval,
            pcc_import_limit_w=(
                spec.pcc_import_limit_kw * 1000.0
                if spec.pcc_import_limit_kw is not None
                else np.inf
            ),
            outages_s=tuple((_seconds(world, a), _seconds(world, b)) for a, b in spec.outages),
            margin_w=spec.margin_w,
            shared_reserve_soc=spec.shared_battery_reserve_soc,
        )
        return CemsController(cfg, name=f"cems_{name}")
    raise TypeError(f"unknown EMS spec {type(spec).__name__}")


def start_ems(env: simpy.Environment, world: World, ems: Any = None) -> dict[str, Any]:
    """Start controller + device processes for every group with an EMS.

    ``ems`` maps site-group names to specs (default: the scenario's ``ems:``).
    Runs after the world's own processes (the settlement process must run first at
    equal times, so controllers see the current tick's inputs).  Returns the
    controllers by group name; statistics are on ``world.wiring.ems_stats``.
    """
    from cps_sim.scenario.ems_schema import CemsSpec

    if ems is None:
        ems = getattr(world.scenario, "ems", None) or {}
    if not ems:
        return {}
    from cps_sim.control.ems import CemsController, cems_fallback, cems_process

    ctl_spec = world.scenario.control
    members_of: dict[str, str] = {}
    for name, spec in ems.items():
        for m in [name, *(spec.member_groups if isinstance(spec, CemsSpec) else [])]:
            if m in members_of:
                raise _err(
                    "ems", f"site group {m!r} belongs to two EMS ({members_of[m]!r} and {name!r})"
                )
            members_of[m] = name
            try:
                world.group(m)
            except KeyError:
                raise _err(f"ems.{name}", f"unknown site group {m!r}") from None
            if ctl_spec.for_group(m).ev_strategy is not None:
                raise _err(
                    f"ems.{name}",
                    f"site group {m!r} also has control.ev_strategy set; the "
                    "EMS delegates EV decisions itself (ev_strategy in the EMS spec)",
                )
    w = _wiring(env, world)
    transport = w.transport
    controllers: dict[str, Any] = {}
    for name, spec in ems.items():
        ctl = build_controller(world, name, spec)
        controllers[name] = ctl
        if isinstance(ctl, CemsController):
            fb = cems_fallback(ctl)
            for m in ctl.cfg.groups:
                ds = DeviceStats()
                w.ems_stats[m] = (None, ds)
                env.process(device_process(env, world, transport, m, fallback=fb, stats=ds))
            env.process(cems_process(env, world, ctl, transport, ttl_s=spec.ttl_s))
        else:
            meter = world.group(name).meter
            if (
                getattr(getattr(ctl, "cfg", None), "observe", "truth") == "meter"
                and meter is not None
                and meter.poll_s is not None
            ):
                env.process(meter_poll_process(env, world, meter))  # before the HEMS
            cs, ds = ControllerStats(), DeviceStats()
            w.ems_stats[name] = (cs, ds)
            env.process(device_process(env, world, transport, name, stats=ds))
            env.process(
                controller_process(env, world, ctl, transport, name, ttl_s=spec.ttl_s, stats=cs)
            )
    w.ems_controllers.update(controllers)
    return controllers


def meter_poll_process(env: simpy.Environment, world: World, meter: Any):
    """A HEMS polls its smart meters' instantaneous power every ``meter.poll_s`` from
    the start (the world is integrated to the poll instant first; started before the
    HEMS, so a poll and a decision at one instant see the same reading)."""
    end = world.scenario.duration_s
    k = 0
    while True:
        t = k * meter.poll_s
        if t > end:
            return
        if t > env.now:
            yield env.timeout(t - env.now)
        world._sync()
        meter.poll(float(env.now))
        k += 1


def start_controller(
    env: simpy.Environment,
    world: World,
    group: str,
    controller: Any,
    *,
    ttl_s: float | None = None,
) -> tuple[ControllerStats, DeviceStats]:
    """Start one controller for ``group`` on a started world (e.g. the oracle's
    schedule replay): its device process and its controller process on the world's
    transport, the same path as the scenario's own controllers.  The group must not
    have another controller.  Returns the controller's and the device's statistics
    (also on ``world.wiring.controller_stats`` / ``device_stats``)."""
    w = _wiring(env, world)
    world.group(group)  # KeyError for an unknown group
    if group in w.device_stats or group in w.ems_stats:
        raise ValueError(f"site group {group!r} already has a controller")
    cs, ds = ControllerStats(), DeviceStats()
    w.controller_stats[group] = cs
    w.device_stats[group] = ds
    w.controllers[group] = controller
    env.process(device_process(env, world, w.transport, group, stats=ds))
    env.process(
        controller_process(env, world, controller, w.transport, group, ttl_s=ttl_s, stats=cs)
    )
    return cs, ds


# ---------------------------------------------------------------------- VPP
def _vpp_requests(world: World, spec: VppSpec, base_dir: Path | None):
    from cps_sim.control.vpp_runtime import VppRequest

    clock = world.clock
    out = []
    for i, r in enumerate(spec.requests):
        out.append(
            VppRequest(
                r.id or f"req{i}",
                r.kind,
                clock.to_sim(r.start),
                clock.to_sim(r.end),
                r.power_kw * 1000.0,
            )
        )
    if spec.requests_file:
        from cps_sim.market.dr import load_dr_events
        from cps_sim.scenario.loader import resolve_data_path

        path = resolve_data_path(
            spec.requests_file, base_dir or Path.cwd(), field="vpp.requests_file"
        )
        sched = load_dr_events(path, world.scenario.timezone)
        for e in sched.events:
            out.append(
                VppRequest(
                    e.event_id,
                    "absorb" if e.kind == "absorb" else "dr_reduce",
                    clock.to_sim(e.start.to_pydatetime()),
                    clock.to_sim(e.end.to_pydatetime()),
                    e.requested_w,
                )
            )
    ids = [r.id for r in out]
    if len(set(ids)) != len(ids):
        raise ScenarioError.single(
            None, "vpp.requests", "request ids (including those of requests_file) must be unique"
        )
    return out


def _vpp_group(world: World, spec: VppSpec, name: str, interval_s: float):
    from cps_sim.control.vpp_runtime import VppGroup

    try:
        g = world.group(name)
    except KeyError:
        known = ", ".join(x.name for x in world.groups)
        raise ScenarioError.single(
            None, "vpp.groups", f"no site group named {name!r} (groups: {known})"
        ) from None
    ctl = world.scenario.control.for_group(name)
    if ctl.ev_strategy is not None and g.evs is not None and g.evs.n:
        raise ScenarioError.single(
            None,
            "vpp.groups",
            f"group {name!r} already has the EV strategy "
            f"{ctl.ev_strategy!r} under control:; two controllers cannot drive one group — "
            "remove it there and set vpp.base_strategy instead",
        )
    evs = g.evs
    e0 = np.empty(0)
    b = g.battery
    base = None
    if spec.base_strategy is not None:
        eff = float(evs.efficiency.mean()) if evs is not None and evs.n else 0.9
        cfg = StrategyConfig(
            interval_s=interval_s,
            price_forecast=price_forecast(world),
            charge_efficiency=eff,
            discharge_efficiency=eff,
        )
        base = StrategyController(spec.base_strategy, cfg)
    return VppGroup(
        name=name,
        ev_eff=evs.efficiency.copy() if evs is not None else e0,
        ev_max_wh=evs.energy_max_wh.copy() if evs is not None else e0,
        ev_min_wh=evs.energy_min_wh.copy() if evs is not None else e0,
        bat_power_w=b.max_charge_power_w.copy(),
        bat_eta_c=b.charge_efficiency.copy(),
        bat_eta_d=b.discharge_efficiency.copy(),
        bat_min_wh=b.energy_min_wh.copy(),
        bat_max_wh=b.energy_max_wh.copy(),
        has_battery=b.capacity_wh > 0,
        bat_rule=bool(g.battery_active),
        base=base,
    )


def start_vpp(
    env: simpy.Environment, world: World, spec: VppSpec, base_dir: Path | None = None
) -> VppRuntime:
    """Start the aggregator of ``spec`` on a started world.

    Registers the runtime as a tick hook (for curtailment and KPIs), a device
    process for every aggregated group that has none yet, and the aggregator's
    SimPy process; returns the runtime (``report()``, ``intervals()``, ``kpis()``).
    """
    from cps_sim.control.vpp_runtime import CurtailmentAbsorption, VppConfig, VppRuntime

    interval = float(spec.interval_s or world.tick_s)
    a = spec.absorb_system_curtailment
    cfg = VppConfig(
        name=spec.name,
        interval_s=interval,
        tick_s=float(world.tick_s),
        end_s=float(world.scenario.duration_s),
        ttl_s=spec.ttl_s,
        full_delivery_ratio=spec.full_delivery_ratio,
        absorb_system_curtailment=None
        if a is None
        else CurtailmentAbsorption(share=a.share, max_kw=a.max_kw, min_kw=a.min_kw),
    )
    requests = _vpp_requests(world, spec, base_dir)
    groups = [_vpp_group(world, spec, g, interval) for g in spec.groups]
    w = _wiring(env, world)
    for gs in groups:
        if gs.name in w.device_stats:
            continue  # a device process already listens on this group's topic
        ds = w.device_stats[gs.name] = DeviceStats()
        env.process(device_process(env, world, w.transport, gs.name, stats=ds))
    rt = VppRuntime(env, world, cfg, groups, requests, w.transport)
    w.vpp = rt
    world.tick_hooks.append(rt)
    env.process(rt.process())
    return rt
