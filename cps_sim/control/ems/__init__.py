"""Energy-management systems: HEMS, BEMS, FEMS and CEMS controllers.

Each EMS observes its group(s) through ``world.observe`` and acts only through
setpoint messages on the transport (``ev_setpoint_w``, ``battery_setpoint_w``,
``import_limit_w``), applied by ``control.base.device_process`` — the same path
as the EV strategies, so an EMS can drive MQTT devices unchanged.

:func:`start_ems` starts the processes of every group that has an EMS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import simpy

from cps_sim.control.ems.bems import BemsConfig, BemsController
from cps_sim.control.ems.cems import CemsConfig, CemsController, cems_process
from cps_sim.control.ems.common import BatteryConfig, Calendar, EvDelegate
from cps_sim.control.ems.fems import FemsConfig, FemsController
from cps_sim.control.ems.hems import HemsConfig, HemsController, MpcConfig
from cps_sim.control.strategies import StrategyConfig
from cps_sim.core.errors import ScenarioError
from cps_sim.scenario.ems_schema import BemsSpec, CemsSpec, EmsSpec, FemsSpec, HemsSpec

__all__ = ["BemsController", "CemsController", "FemsController", "HemsController", "start_ems"]


def _err(path: str, message: str) -> ScenarioError:
    return ScenarioError.single(None, path, message)


def _seconds(world, t) -> float:
    return (t - world.scenario.start).total_seconds()


def _strategy_cfg(world, group, interval_s: float) -> StrategyConfig:
    return world.strategy_config(group, interval_s)


def _tick_series(world, series: np.ndarray):
    tick = world.tick_s

    def at(times_s: np.ndarray) -> np.ndarray:
        k = np.clip((np.asarray(times_s) // tick).astype(np.int64), 0, series.size - 1)
        return series[k]

    return at


def _pv_forecast(world, group, spec: HemsSpec, name: str):
    tick = world.tick_s
    unit = group.pv_unit_w_per_w
    rng = world.rng.generator(f"ems/{name}/forecast") if spec.forecast == "noisy" else None

    def pv(times_s: np.ndarray) -> np.ndarray:
        k = np.clip((np.asarray(times_s) // tick).astype(np.int64), 0, unit.shape[0] - 1)
        out = group.pv_capacity_w[:, None] * unit[k][:, group.pv_orientation].T
        out = np.minimum(out, group.pv_ac_limit_w[:, None])
        if rng is not None:
            from cps_sim.control.optimise import noisy_forecast

            out = noisy_forecast(out, rng, spec.forecast_noise_rel_sigma)
        return out

    return pv


def build_controller(world, name: str, spec: EmsSpec):
    """The controller object for one group's EMS spec (CEMS: for all its members)."""
    g = world.group(name)
    interval = spec.interval_s
    if isinstance(spec, HemsSpec):
        mpc = None
        if spec.battery_mode == "mpc":
            steps = max(1, round(spec.mpc_horizon_h * 3600.0 / spec.mpc_step_s))
            mpc = MpcConfig(pv_forecast=_pv_forecast(world, g, spec, name),
                            import_price_forecast=_tick_series(world,
                                                               world.import_price_jpy_per_kwh),
                            export_price_forecast=_tick_series(world,
                                                               world.export_price_jpy_per_kwh),
                            horizon_steps=steps, step_s=spec.mpc_step_s,
                            replan_s=spec.mpc_replan_s, final_soc=spec.mpc_final_soc)
        dr = tuple((_seconds(world, w.start), _seconds(world, w.end), w.reduce_kw * 1000.0)
                   for w in spec.dr_windows)
        cfg = HemsConfig(battery=BatteryConfig.from_group(g),
                         ev=EvDelegate(spec.ev_strategy, _strategy_cfg(world, g, interval)),
                         interval_s=interval, battery_mode=spec.battery_mode, dr_windows=dr,
                         dr_precharge_s=spec.dr_precharge_h * 3600.0, mpc=mpc)
        return HemsController(cfg, name=f"hems_{name}")
    if isinstance(spec, BemsSpec):
        cfg = BemsConfig(battery=BatteryConfig.from_group(g),
                         ev=EvDelegate(spec.ev_strategy, _strategy_cfg(world, g, interval)),
                         calendar=Calendar.from_clock(world.clock),
                         initial_threshold_w=spec.initial_threshold_kw * 1000.0,
                         interval_s=interval, demand_interval_s=spec.demand_interval_s,
                         recharge_soc=spec.recharge_soc,
                         headroom_fraction=spec.headroom_fraction)
        return BemsController(cfg, name=f"bems_{name}")
    if isinstance(spec, FemsSpec):
        has_slots = g.evs is not None and g.evs.n
        if not has_slots and not g.jobs:
            raise _err(f"ems.{name}", "a FEMS needs deferrable processes: a 'deferrable:' "
                       "block on the site group (or EV-like slots, see docs/ems.md)")
        eff = g.evs.efficiency.copy() if has_slots else np.empty(0)
        cfg = FemsConfig(battery=BatteryConfig.from_group(g),
                         process_efficiency=eff, interval_s=interval,
                         cheap_price_jpy_per_kwh=spec.cheap_price_jpy_per_kwh,
                         deadline_margin_s=spec.deadline_margin_s, rate_factor=spec.rate_factor,
                         battery_mode=spec.battery_mode)
        return FemsController(cfg, name=f"fems_{name}")
    if isinstance(spec, CemsSpec):
        if world.tick_s % interval > 1e-9 * world.tick_s:
            raise _err(f"ems.{name}.interval_s", f"must divide the tick ({world.tick_s:g} s), "
                       f"got {interval:g}")
        members = [name] + [m for m in spec.member_groups if m != name]
        known = {x.name for x in world.groups}
        bad = [m for m in members + list(spec.shared_battery_groups) if m not in known]
        if bad:
            raise _err(f"ems.{name}", f"unknown site groups {bad} (site groups: "
                       f"{sorted(known)})")
        groups = [world.group(m) for m in members]
        n = sum(x.n for x in groups)
        if isinstance(spec.priority, dict):  # one class per member group
            unknown = sorted(set(spec.priority) - set(members))
            if unknown:
                raise _err(f"ems.{name}.priority", f"names groups that are not members: "
                           f"{unknown} (members: {members})")
            pr = np.concatenate([np.full(x.n, int(spec.priority.get(m, 0)))
                                 for m, x in zip(members, groups, strict=True)])
        else:
            pr = np.asarray(spec.priority, dtype=np.int64)
        if pr.ndim == 0:
            pr = np.full(n, int(pr))
        elif pr.size != n:
            raise _err(f"ems.{name}.priority", f"{pr.size} values for {n} sites of {members}")
        shared = tuple(m in spec.shared_battery_groups for m in members)
        cfg = CemsConfig(
            groups=tuple(members), batteries=tuple(BatteryConfig.from_group(x) for x in groups),
            shared=shared, priority=pr,
            evs=tuple(EvDelegate(spec.ev_strategy, _strategy_cfg(world, x, interval))
                      for x in groups),
            interval_s=interval,
            pcc_import_limit_w=(spec.pcc_import_limit_kw * 1000.0
                                if spec.pcc_import_limit_kw is not None else np.inf),
            outages_s=tuple((_seconds(world, a), _seconds(world, b)) for a, b in spec.outages),
            margin_w=spec.margin_w, shared_reserve_soc=spec.shared_battery_reserve_soc)
        return CemsController(cfg, name=f"cems_{name}")
    raise TypeError(f"unknown EMS spec {type(spec).__name__}")


def _cems_fallback(ctl: CemsController):
    """Safe behaviour of a member group that lost its CEMS: EVs stop, batteries on
    their own rule, and no import at all while islanded or under a PCC limit."""
    limited = ctl.islanded

    def fallback(obs) -> dict[str, np.ndarray]:
        closed = limited(obs.now_s) or np.isfinite(ctl.cfg.pcc_import_limit_w)
        return {"ev_setpoint_w": np.zeros(obs.n_evs),
                "battery_setpoint_w": np.full(obs.n_sites, np.nan),
                "import_limit_w": np.zeros(obs.n_sites) if closed
                else np.full(obs.n_sites, np.inf)}

    return fallback


def start_ems(env: simpy.Environment, world: Any, ems: Mapping[str, EmsSpec] | None = None
              ) -> dict[str, Any]:
    """Start controller + device processes for every group with an EMS.

    ``ems`` maps site-group names to specs (default: ``world.scenario.ems`` when the
    scenario has that field).  Call after ``world.start`` (the settlement process
    must run first at equal times, so controllers see the current tick's inputs).
    Returns the controllers by group name; stats are kept on ``world.ems_stats``.
    """
    from cps_sim.control.base import (
        ControllerStats,
        DeviceStats,
        controller_process,
        device_process,
    )
    from cps_sim.core.bus import MemoryTransport

    if ems is None:
        ems = getattr(world.scenario, "ems", None) or {}
    if not ems:
        return {}
    ctl_spec = world.scenario.control
    members_of: dict[str, str] = {}
    for name, spec in ems.items():
        for m in [name, *(spec.member_groups if isinstance(spec, CemsSpec) else [])]:
            if m in members_of:
                raise _err("ems", f"site group {m!r} belongs to two EMS ({members_of[m]!r} and "
                           f"{name!r})")
            members_of[m] = name
            try:
                world.group(m)
            except KeyError:
                raise _err(f"ems.{name}", f"unknown site group {m!r}") from None
            if ctl_spec.for_group(m).ev_strategy is not None:
                raise _err(f"ems.{name}", f"site group {m!r} also has control.ev_strategy set; the "
                           "EMS delegates EV decisions itself (ev_strategy in the EMS spec)")
    transport = getattr(world, "transport", None)
    if transport is None:
        t = ctl_spec.transport
        transport = world.transport = MemoryTransport(
            env, world.rng.generator("control/transport"), latency_s=t.latency_s,
            jitter_s=t.jitter_s, loss=t.loss)
    world.ems_stats = {}
    controllers: dict[str, Any] = {}
    for name, spec in ems.items():
        ctl = build_controller(world, name, spec)
        controllers[name] = ctl
        if isinstance(ctl, CemsController):
            fb = _cems_fallback(ctl)
            for m in ctl.cfg.groups:
                ds = DeviceStats()
                world.ems_stats[m] = (None, ds)
                env.process(device_process(env, world, transport, m, fallback=fb, stats=ds))
            env.process(cems_process(env, world, ctl, transport, ttl_s=spec.ttl_s))
        else:
            cs, ds = ControllerStats(), DeviceStats()
            world.ems_stats[name] = (cs, ds)
            env.process(device_process(env, world, transport, name, stats=ds))
            env.process(controller_process(env, world, ctl, transport, name, ttl_s=spec.ttl_s,
                                           stats=cs))
    world.ems_controllers = controllers
    return controllers
