"""Controller interface and the two SimPy processes that bind it to a world.

A controller never touches device objects.  It is an object with

* ``name`` (str) and ``interval_s`` (float, its decision interval), and
* ``decide(now_s, observation) -> dict[str, np.ndarray]`` returning setpoints
  by key: ``ev_setpoint_w`` (per EV, + charge / - discharge),
  ``battery_setpoint_w`` (per site) with ``battery_mode`` (per site:
  ``BATTERY_FOLLOW`` follows the setpoint, ``BATTERY_AUTO`` the battery's built-in
  self-consumption rule; :func:`battery_setpoints` builds both; NaN is never valid),
  ``import_limit_w`` and ``export_limit_w`` (per site; they tighten the site's own
  connection limits) and ``deferrable_setpoint_w`` (per site).

:func:`controller_process` wakes every ``interval_s`` (and, if given a
``wake_pattern``, whenever a message matching it arrives: an EV arrival, a
price change, a DR signal), asks the world for an observation and publishes
the setpoints on the transport.  :func:`device_process` is the device side:
it receives setpoint messages, keeps the newest valid one
(:class:`~cps_sim.core.bus.SetpointHolder`), applies it to the world, and
applies the *safe behaviour* once the setpoint is older than its ``ttl_s``.

**One shape for the three control loops** — observe, ``decide(now_s, observations)
-> setpoints``, publish one setpoint message per group:

* :func:`controller_process` (EV strategies, schedules, HEMS/BEMS/FEMS): one group,
  ``decide(now_s, Observation) -> setpoints`` (:class:`Controller`);
* :func:`cps_sim.control.ems.cems.cems_process` (CEMS) and
  :meth:`cps_sim.control.vpp_runtime.VppRuntime.process` (VPP aggregator): several
  groups, ``decide(now_s, {group: Observation}) -> {group: setpoints}``
  (:class:`GroupsController`).

``decide`` never publishes and never sees a ``SiteGroup``: observations carry the
device limits and the model functions (``Observation.battery_range_w``).

The world is anything with ``advance_to(t_s)``, ``observe(group) ->
Observation`` and ``apply(group, ev_setpoint_w=None, battery_setpoint_w=None,
import_limit_w=None)``; both processes integrate the world to ``env.now``
before they observe or apply, so setpoints take effect at their exact time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import simpy

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.core.bus import (
    BATTERY_AUTO,
    BATTERY_FOLLOW,
    HPWH_AUTO,
    SetpointHolder,
    Topics,
    Transport,
)


class Controller(Protocol):
    name: str
    interval_s: float

    def decide(self, now_s: float, observation: Observation) -> dict[str, np.ndarray]: ...


class GroupsController(Protocol):
    """A controller of several groups at once (CEMS, VPP aggregator)."""

    name: str
    interval_s: float

    def decide(
        self, now_s: float, observations: Mapping[str, Observation]
    ) -> dict[str, dict[str, np.ndarray]]: ...


class ControlledWorld(Protocol):
    def advance_to(self, t_s: float) -> None: ...

    def observe(self, group_name: str) -> Observation: ...

    def apply(
        self,
        group_name: str,
        ev_setpoint_w: np.ndarray | None = None,
        battery_setpoint_w: np.ndarray | None = None,
        import_limit_w: np.ndarray | None = None,
        deferrable_setpoint_w: np.ndarray | None = None,
        export_limit_w: np.ndarray | None = None,
    ) -> None: ...


Fallback = Callable[[Observation], Mapping[str, np.ndarray]]
Guard = Callable[[float, dict[str, np.ndarray]], Mapping[str, np.ndarray]]


def battery_setpoints(
    power_w: np.ndarray, follow: np.ndarray | bool = True
) -> dict[str, FloatArray]:
    """``battery_setpoint_w`` and ``battery_mode`` for sites that follow ``power_w``
    where ``follow`` is true and run the built-in rule elsewhere."""
    power = np.asarray(power_w, dtype=float)
    follow = np.broadcast_to(np.asarray(follow, dtype=bool), power.shape)
    return {
        "battery_setpoint_w": np.where(follow, power, 0.0),
        "battery_mode": np.where(follow, BATTERY_FOLLOW, BATTERY_AUTO),
    }


def battery_auto(n_sites: int) -> dict[str, FloatArray]:
    """Every site's battery on its built-in self-consumption rule."""
    return {"battery_mode": np.full(n_sites, BATTERY_AUTO)}


def hpwh_auto(n_sites: int) -> dict[str, FloatArray]:
    """Every site's heat-pump water heater on its own rule (night / surplus)."""
    return {"hpwh_mode": np.full(n_sites, HPWH_AUTO)}


def own_rules(n_sites: int) -> dict[str, FloatArray]:
    """Batteries and water heaters on their own rules, no comfort-band shift of the
    air-conditioners: what every fallback gives the site devices."""
    return {**battery_auto(n_sites), **hpwh_auto(n_sites), "hvac_shift_k": np.zeros(n_sites)}


def fallback_uncontrolled(obs: Observation) -> dict[str, FloatArray]:
    """Safe behaviour of a charger that lost its EMS: charge at its own limit;
    the home battery returns to its built-in self-consumption rule, the water heater
    to its own rule, the air-conditioners to their own comfort band (no shift)."""
    return {
        "ev_setpoint_w": np.asarray(obs.ev_charger_w, dtype=float).copy(),
        **own_rules(obs.n_sites),
    }


def fallback_off(obs: Observation) -> dict[str, FloatArray]:
    """Safe behaviour 'stop': no EV power; battery, water heater and air-conditioners on
    their own rules."""
    return {
        "ev_setpoint_w": np.zeros(obs.n_evs),
        **own_rules(obs.n_sites),
    }


def setpoint_sizes(obs: Observation) -> dict[str, int]:
    """Expected array length of each setpoint key the group accepts: what the world
    derived from the group's populations (``Observation.setpoint_sizes``), or, for an
    observation built by hand, the keys of the built-in device families."""
    if obs.setpoint_sizes is not None:
        return dict(obs.setpoint_sizes)
    return {
        "ev_setpoint_w": obs.n_evs,
        "battery_setpoint_w": obs.n_sites,
        "battery_mode": obs.n_sites,
        "import_limit_w": obs.n_sites,
        "deferrable_setpoint_w": obs.n_sites,
        "export_limit_w": obs.n_sites,
    }


@dataclass
class ControllerStats:
    decisions: int = 0
    event_wakeups: int = 0
    decision_times_s: list[float] = field(default_factory=list)


@dataclass
class DeviceStats:
    messages: int = 0  # messages taken from the store
    applied: int = 0  # setpoint messages applied to the world
    fallbacks: int = 0  # times the device entered its safe behaviour
    fallback_time_s: float = 0.0  # total time spent in the safe behaviour (closed spells)
    fallback_since_s: float = math.nan  # start of the current fallback spell (NaN if none)
    holder: SetpointHolder | None = None

    def time_in_fallback_s(self, now_s: float) -> float:
        """Closed spells plus the current one, up to ``now_s``."""
        open_s = 0.0 if math.isnan(self.fallback_since_s) else now_s - self.fallback_since_s
        return self.fallback_time_s + open_s


def controller_process(
    env: simpy.Environment,
    world: ControlledWorld,
    controller: Controller,
    transport: Transport,
    group: str,
    *,
    ttl_s: float | None = None,
    wake_pattern: str | None = None,
    stats: ControllerStats | None = None,
) -> Generator[simpy.Event, Any, None]:
    """Observe -> decide -> publish, every ``controller.interval_s`` and on wake messages.

    ``ttl_s`` (default: 3 decision intervals) travels in each message: the
    device follows a setpoint for at most that long after it was sent.
    """
    interval = float(controller.interval_s)
    if not interval > 0:
        raise ValueError(f"controller {controller.name!r}: interval_s must be > 0, got {interval}")
    ttl = float(ttl_s) if ttl_s is not None else 3.0 * interval
    topic = Topics.setpoints(group)
    wake_store = transport.subscribe(wake_pattern) if wake_pattern else None
    pending: simpy.Event | None = None
    while True:
        world.advance_to(float(env.now))
        obs = world.observe(group)
        setpoints = controller.decide(float(env.now), obs)
        payload: dict[str, Any] = {k: np.asarray(v, dtype=float) for k, v in setpoints.items()}
        payload["ttl_s"] = ttl
        transport.publish(topic, payload)
        if stats is not None:
            stats.decisions += 1
            stats.decision_times_s.append(float(env.now))
        timer = env.timeout(interval)
        if wake_store is None:
            yield timer
            continue
        if pending is None:
            pending = wake_store.get()
        yield timer | pending
        if pending.triggered:
            pending = None
            wake_store.items.clear()  # one decision answers every wake message queued now
            if stats is not None:
                stats.event_wakeups += 1


def device_process(
    env: simpy.Environment,
    world: ControlledWorld,
    transport: Transport,
    group: str,
    *,
    fallback: Fallback = fallback_uncontrolled,
    default_ttl_s: float = math.inf,
    stats: DeviceStats | None = None,
    guard: Guard | None = None,
    on_fallback: Callable[[float, bool], None] | None = None,
) -> Generator[simpy.Event, Any, None]:
    """Apply delivered setpoints to ``group``; switch to ``fallback`` when they go stale.

    Starts in the safe behaviour (no setpoint received yet).  ``guard(now_s,
    setpoints) -> setpoints`` sees every received setpoint before it is applied
    (the MQTT bridge clamps to rated limits and rate-limits there);
    ``on_fallback(now_s, active)`` is told when the safe behaviour starts and ends.
    """
    stats = stats if stats is not None else DeviceStats()
    store = transport.subscribe(Topics.setpoints(group))
    holder = SetpointHolder(setpoint_sizes(world.observe(group)), default_ttl_s)
    stats.holder = holder
    keys = tuple(holder.sizes)  # the control keys this group accepts

    def enter_fallback() -> None:
        world.advance_to(float(env.now))
        world.apply(group, **_only_keys(fallback(world.observe(group)), keys))
        stats.fallbacks += 1
        stats.fallback_since_s = float(env.now)
        if on_fallback is not None:
            on_fallback(float(env.now), True)

    def leave_fallback() -> None:
        if not math.isnan(stats.fallback_since_s):
            stats.fallback_time_s += float(env.now) - stats.fallback_since_s
            stats.fallback_since_s = math.nan
            if on_fallback is not None:
                on_fallback(float(env.now), False)

    enter_fallback()
    in_fallback = True
    get = store.get()
    while True:
        expiry = holder.expires_s()
        if not in_fallback and math.isfinite(expiry):
            yield get | env.timeout(max(expiry - float(env.now), 0.0))
        else:
            yield get
        now = float(env.now)
        if get.triggered:
            batch = [get.value, *store.items]
            store.items.clear()
            get = store.get()
            stats.messages += len(batch)
            newest = [m for m in batch if holder.offer(m)]
            current = holder.current(now)
            if newest and current is not None:
                world.advance_to(now)
                setpoints = _only_keys(current, keys)
                if guard is not None:
                    setpoints = _only_keys(guard(now, setpoints), keys)
                world.apply(group, **setpoints)
                stats.applied += 1
                if in_fallback:
                    leave_fallback()
                    in_fallback = False
        if not in_fallback and holder.is_fallback(now):
            enter_fallback()
            in_fallback = True


def _only_keys(setpoints: Mapping[str, Any], keys) -> dict[str, np.ndarray]:
    return {k: np.asarray(setpoints[k], dtype=float) for k in keys if k in setpoints}
