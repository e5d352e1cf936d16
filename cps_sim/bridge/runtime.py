"""The bridge inside a run: exposed groups, bound devices, the clock topic, lag, events.

:class:`BridgeRuntime` is set up after ``world.start`` (``simulate(setup=...)``)
on a world whose transport is an :class:`~cps_sim.bridge.transport.MqttTransport`:

* **Real controller, simulated world** — for each group in ``bridge.expose`` an
  :class:`~cps_sim.bridge.exposed.ExposedGroup` takes group setpoints on
  ``<prefix>/group/<group>/setpoint`` (the same setpoint holder, ttl and fallback
  as the simulator's own controllers) and member setpoints on
  ``<prefix>/dev/<group>-<site>-<kind>/setpoint`` (newest valid setpoint per
  member wins), clamps every value to the members' rated limits
  (``setpoint_clamped`` events) with the optional rate limit; every
  ``interval_s`` the group's observation goes out on
  ``<prefix>/group/<group>/observation`` and, per member, on
  ``<prefix>/dev/<group>-<site>-<kind>/telemetry`` (the booked power).
* **Real device, simulated world** — for each entry of ``bridge.devices``: the
  member is bound with ``world.bind_external``; the device's telemetry
  (decoded by its profile) replaces the model's power from the instant it is
  taken; a measurement older than ``max_age_s``, or an ``offline``
  availability, releases the member to its model (``stale`` / ``unavailable``
  events); the setpoints the scenario's controllers apply to the member are
  clamped to the device's ratings, rate-limited and sent with ``ttl_s``,
  refreshed every ``ttl_s / 3`` so the device's watchdog stays fed, and never
  sent while the device is offline.

Everything the runtime does in simulated time depends only on what the
transport delivers, so a recorded run replays exactly (``cps-sim replay``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simpy
from simpy.core import StopSimulation

from cps_sim.bridge import schema as S
from cps_sim.bridge.exposed import ExposedGroup
from cps_sim.bridge.realtime_gc import fast_switching, hold_heap, release_heap
from cps_sim.bridge.transport import MqttTransport, RawIn
from cps_sim.core.errors import Issue, ScenarioError
from cps_sim.scenario.bridge_schema import BridgeDeviceSpec, BridgeSpec

PROFILE_REJECT = "invalid_payload"


# ----------------------------------------------------------------------------- checks


def check_bridge(scenario: Any, spec: BridgeSpec, speed: float, file: str | None = None) -> None:
    """Cross-checks of ``bridge:`` against the scenario (every problem, with its path)."""
    issues: list[Issue] = []
    groups = {g.name: g for g in scenario.sites}
    ems = getattr(scenario, "ems", {}) or {}
    controlled = set(ems)
    for e in ems.values():
        controlled.update(getattr(e, "member_groups", []) or [])
    vpp = getattr(scenario, "vpp", None)
    if vpp is not None:
        controlled.update(getattr(vpp, "groups", []) or [])
    for i, e in enumerate(spec.expose):
        path = f"bridge.expose[{i}].group"
        if e.group not in groups:
            issues.append(
                Issue(path, f"unknown site group {e.group!r} (site groups: {', '.join(groups)})")
            )
        elif e.group in controlled or scenario.control.for_group(e.group).ev_strategy:
            issues.append(
                Issue(
                    path,
                    f"group {e.group!r} already has a controller in the "
                    "scenario (ems, vpp or control.ev_strategy); an exposed group "
                    "is driven by the external controller only",
                )
            )
    exposed = {e.group for e in spec.expose if e.per_device}
    for i, d in enumerate(spec.devices):
        b = d.binds
        path = f"bridge.devices[{i}].binds"
        m = re.fullmatch(r"(.+)-\d+-(ev\d*|battery|pv|load)", d.name)
        if m and m.group(1) in exposed and d.topic is None:
            issues.append(
                Issue(
                    f"bridge.devices[{i}].name",
                    f"{d.name!r} is the device id of a member of the exposed group "
                    f"{m.group(1)!r} (<prefix>/dev/{d.name}/...); choose another name",
                )
            )
        g = groups.get(b.group)
        if g is None:
            issues.append(
                Issue(
                    f"{path}.group",
                    f"unknown site group {b.group!r} (site groups: {', '.join(groups)})",
                )
            )
        elif b.site >= g.count:
            issues.append(
                Issue(f"{path}.site", f"group {b.group!r} has {g.count} sites (0..{g.count - 1})")
            )
        if speed != 1.0 and not d.emulated:  # T15
            issues.append(
                Issue(
                    f"bridge.devices[{i}].emulated",
                    f"speed {speed:g}: only "
                    "emulated devices can run faster or slower than real time; "
                    "real hardware needs speed 1 (or set emulated: true for an "
                    "emulator)",
                )
            )
    if issues:
        raise ScenarioError(file, issues)


# ----------------------------------------------------------------------------- runtime


@dataclass
class LinkStats:
    measurements: int = 0
    ignored: int = 0
    stale: int = 0
    unavailable: int = 0
    setpoints_sent: int = 0
    setpoints_withheld: int = 0  # not sent: device offline
    clamped: int = 0
    acks: int = 0
    reaction_wall_s: list[float] = field(default_factory=list)  # setpoint -> ack (wall)


class BridgeRuntime:
    """See the module docstring.  ``live=False`` in replay (no wall-clock readings)."""

    def __init__(
        self,
        spec: BridgeSpec,
        transport: MqttTransport,
        *,
        speed: float = 1.0,
        live: bool = True,
        base_dir: Path | None = None,
        max_lag_s: float | None = None,
    ):
        self.spec = spec
        # strict real time: stop when a tick settles later than this [wall s]
        self.max_lag_s = max_lag_s if max_lag_s is not None else spec.max_lag_s
        self.overrun: tuple[float, float] | None = None  # (sim time, lag) that stopped it
        self.tr = transport
        self.speed = float(speed)
        self.live = live
        self.base_dir = base_dir
        self.exposed: dict[str, ExposedGroup] = {}
        self.links: list[DeviceLink] = []
        self.lag_s: list[float] = []
        self.tick_wall_s: list[float] = []
        self.wall0: float | None = None
        self.env: simpy.Environment | None = None
        self.world: Any = None
        self._restore_switching: Callable[[], None] | None = None  # set while live

    # ------------------------------------------------------------------ set-up
    def setup(self, env: simpy.Environment, world: Any) -> None:
        """Start the bridge's processes (call after ``world.start``)."""
        self.env, self.world = env, world
        for e in self.spec.expose:
            self.exposed[e.group] = ExposedGroup(self, env, world, e)
        for i, d in enumerate(self.spec.devices):
            self.links.append(DeviceLink(self, env, world, d, i))
        self.tr.publish_wire(self.tr.topics.status(), b"online", 1, retain=True)
        if self.spec.homeassistant:
            self._ha_configs = self._discovery(world)
            self._announce()
            self.tr.subscribe_wire(f"{self.spec.discovery_prefix}/status", self._ha_status)
        self.tr.start()
        if self.live:  # no full-heap collection stalls the loop; paho is not kept waiting
            hold_heap()
            self._restore_switching = fast_switching()
            sync = getattr(env, "sync", None)  # RealtimeEnvironment: wall clock starts now
            if sync is not None:
                sync()
            self.wall0 = time.time()

    # ------------------------------------------------------------------ Home Assistant
    def _discovery(self, world: Any) -> list[tuple[str, bytes]]:
        """Discovery configs for the members of exposed groups: sensors for what they
        report; for EV chargers and batteries a power ``number`` and an ``auto`` button
        on their member setpoint topic."""
        from cps_sim.bridge.homeassistant import discovery_messages
        from cps_sim.bridge.profile_spec import Rated
        from cps_sim.bridge.profiles import load_profile

        generic = load_profile("generic")
        kinds = {"ev": "ev_charger", "battery": "battery", "pv": "pv", "load": "meter"}
        signals = {
            "ev": ["power_w", "soc", "energy_wh", "plugged", "fallback"],
            "battery": ["power_w", "soc", "energy_wh", "mode", "fallback"],
            "pv": ["power_w"],
            "load": ["power_w"],
        }
        out: list[tuple[str, bytes]] = []
        for eg in self.exposed.values():
            every = eg.spec.interval_s or world.tick_s
            for m in eg.members:
                bound = generic.bind(f"{self.tr.topics.prefix}/dev/{m.dev_id}")
                rated = None
                if m.kind == "ev":
                    ev = eg.ev
                    rated = Rated(-float(ev.v2x_w[m.index]), float(ev.charger_w[m.index]))
                elif m.kind == "battery":
                    b = eg.bat.spec
                    rated = Rated(
                        -float(b.max_discharge_power_w[m.index]),
                        float(b.max_charge_power_w[m.index]),
                    )
                out += discovery_messages(
                    bound,
                    m.dev_id,
                    kinds[m.kind],
                    signals[m.kind],
                    controls=("power_w", "mode") if rated is not None else (),
                    rated=rated,
                    expire_after_s=3 * every / self.speed,
                    prefix=self.spec.discovery_prefix,
                    stored_energy=m.kind in ("ev", "battery"),  # energy_wh: in the pack
                    status_topic=self.tr.topics.status(),  # a dead simulator: unavailable
                )
        return out

    def _announce(self) -> None:
        for topic, payload in self._ha_configs:
            self.tr.publish_wire(topic, payload, 1, retain=True)

    def _ha_status(self, raw: RawIn, now: float) -> S.Reject | None:
        if raw.payload == b"online":  # Home Assistant (re)started: announce again
            self._announce()
        return None

    # ------------------------------------------------------------------ per tick
    def on_tick(self, world: Any, result: Any) -> None:
        """Clock topic and real-time lag after every settlement tick."""
        t = float(result.t_end_s)
        lag = math.nan
        if self.live and self.wall0 is not None:
            wall = time.time()
            lag = wall - (self.wall0 + t / self.speed)
            self.lag_s.append(lag)
            self.tick_wall_s.append(wall)
        topic = self.tr.topics.clock()
        env_ = self.tr.envelope(topic)
        body = {
            "v": env_.v,
            "seq": env_.seq,
            "ts": env_.ts,
            "sid": env_.sid,
            "sim_time_s": t,
            "sim_iso": world.clock.to_datetime(t).isoformat(),
            "speed": self.speed,
        }
        if math.isfinite(lag):
            body["lag_s"] = lag
        self.tr.publish_wire(topic, S.dumps(body), 0)
        if self.max_lag_s is not None and lag > self.max_lag_s and self.overrun is None:
            self.overrun = (t, lag)
            self.tr.event("overrun", self.tr.topics.status(), self.overrun_message())
            raise StopSimulation(self.overrun_message())  # env.run returns; results written

    def overrun_message(self) -> str:
        assert self.overrun is not None
        t, lag = self.overrun
        return (
            f"real-time overrun: the tick ending at simulated {t:g} s settled {lag:.3f} s "
            f"late, more than the allowed {self.max_lag_s:g} s (--strict-lag-s / "
            "bridge.max_lag_s); the run stopped there"
        )

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Fail-safe setpoints to bound devices, members offline, then disconnect."""
        if self._restore_switching is not None:
            release_heap()
            self._restore_switching()
            self._restore_switching = None
        for link in self.links:
            link.final()
        for eg in self.exposed.values():
            eg.close()
        self.tr.close()

    def kpis(self) -> dict[str, float]:
        out = self.tr.summary()
        if self.max_lag_s is not None:
            out["hil_max_lag_s"] = float(self.max_lag_s)
            out["hil_overrun"] = float(self.overrun is not None)
            if self.overrun is not None:
                out["hil_overrun_sim_time_s"], out["hil_overrun_lag_s"] = self.overrun
        if self.lag_s:
            lag = np.asarray(self.lag_s)
            out.update(
                hil_lag_p50_s=float(np.percentile(lag, 50)),
                hil_lag_p99_s=float(np.percentile(lag, 99)),
                hil_lag_max_s=float(lag.max()),
            )
        for g, eg in sorted(self.exposed.items()):
            st = eg.stats
            d = st.device
            out[f"bridge_{g}_setpoints_applied"] = float(d.applied)
            out[f"bridge_{g}_setpoints_clamped"] = float(st.clamped)
            out[f"bridge_{g}_member_setpoints"] = float(st.member_setpoints)
            out[f"bridge_{g}_member_setpoints_expired"] = float(st.member_expired)
            out[f"bridge_{g}_fallbacks"] = float(d.fallbacks)
            now = float(self.env.now) if self.env is not None else 0.0
            out[f"bridge_{g}_fallback_time_s"] = float(d.time_in_fallback_s(now))
        for link in self.links:
            s, name = link.stats, link.spec.name
            out[f"bridge_dev_{name}_measurements"] = float(s.measurements)
            out[f"bridge_dev_{name}_stale"] = float(s.stale)
            out[f"bridge_dev_{name}_unavailable"] = float(s.unavailable)
            out[f"bridge_dev_{name}_setpoints_sent"] = float(s.setpoints_sent)
            out[f"bridge_dev_{name}_measured_energy_kwh"] = link.member.energy_wh / 1000.0
            if s.reaction_wall_s:  # setpoint published -> device's ack received (wall clock)
                r = np.asarray(s.reaction_wall_s)
                out[f"bridge_dev_{name}_ack_p50_s"] = float(np.percentile(r, 50))
                out[f"bridge_dev_{name}_ack_p99_s"] = float(np.percentile(r, 99))
        return out

    def events_table(self):
        import pyarrow as pa

        ev = self.tr.events
        return pa.table(
            {
                "sim_time_s": pa.array([e.sim_time_s for e in ev], pa.float64()),
                "kind": pa.array([e.kind for e in ev], pa.string()),
                "subject": pa.array([e.subject for e in ev], pa.string()),
                "detail": pa.array([e.detail for e in ev], pa.string()),
            }
        )

    def ticks_table(self):
        import pyarrow as pa

        return pa.table(
            {
                "wall_time_s": pa.array(self.tick_wall_s, pa.float64()),
                "lag_s": pa.array(self.lag_s, pa.float64()),
            }
        )


# ----------------------------------------------------------------------------- devices

_PROFILE_KIND = {"ev": "ev", "battery": "battery", "pv": "pv", "load": "load"}


class DeviceLink:
    """One real or emulated device bound to one member (see the module docstring)."""

    def __init__(
        self,
        rt: BridgeRuntime,
        env: simpy.Environment,
        world: Any,
        spec: BridgeDeviceSpec,
        index: int,
    ):
        from cps_sim.bridge.profiles import load_profile
        from cps_sim.core.errors import BridgeError

        self.rt, self.env, self.world, self.spec = rt, env, world, spec
        self.tr = rt.tr
        self.stats = LinkStats()
        path = f"bridge.devices[{index}]"
        b = spec.binds
        try:
            self.member = world.bind_external(b.group, b.kind, b.site)
        except ValueError as exc:
            raise ScenarioError(None, [Issue(f"{path}.binds", str(exc))]) from None
        try:
            profile = load_profile(spec.profile)
        except (BridgeError, OSError) as exc:
            raise ScenarioError(None, [Issue(f"{path}.profile", str(exc))]) from None
        state = self.member.state
        hi = spec.max_power_w if spec.max_power_w is not None else state.max_charge_w
        lo = spec.min_power_w if spec.min_power_w is not None else -state.max_discharge_w
        self.hi, self.lo = float(hi), float(lo)
        rated: dict[str, Any] = {}
        if math.isfinite(self.hi):
            rated["power_w_max"] = self.hi
        if math.isfinite(self.lo):
            rated["power_w_min"] = self.lo
        for key, attr in (
            ("current_a_max", "max_current_a"),
            ("min_current_a", "min_current_a"),
            ("voltage_v", "voltage_v"),
            ("phases", "phases"),
        ):
            v = getattr(spec, attr)
            if v is not None:
                rated[key] = v
        device_topic = (
            spec.topic if spec.topic is not None else self.tr.topics.prefix + "/dev/" + spec.name
        )
        try:
            self.bound = profile.bind(device_topic, rated)
        except BridgeError as exc:
            raise ScenarioError(None, [Issue(f"{path}.topic", str(exc))]) from None
        self.takes_mode = "mode" in profile.command_signals
        self.available: bool | None = None  # unknown until the device says
        self.last_rx = -math.inf
        self.sent_value = math.nan  # last value sent (after clamp/ramp)
        self.sent_t = math.nan
        self.pending_acks: dict[int, float] = {}
        for topic in self.bound.subscriptions:
            self.tr.subscribe_wire(topic, self._on_message)
        self.member.on_setpoint(self._on_setpoint)
        env.process(self._refresh())

    # ------------------------------------------------------------------ inbound
    def _on_message(self, raw: RawIn, now: float) -> S.Reject | None:
        from cps_sim.bridge.profile_codec import Ignored, Measurement, Reject

        r = self.bound.decode(raw.topic, raw.payload)
        if isinstance(r, Ignored):
            self.stats.ignored += 1
            return None
        if isinstance(r, Reject):
            return r if isinstance(r, S.Reject) else S.Reject(PROFILE_REJECT, str(r))
        assert isinstance(r, Measurement)
        name = self.spec.name
        if r.role == "availability":
            online = bool(r.signals.get("available", r.signals.get("online", True)))
            if online != self.available:
                self.available = online
                self.tr.event(
                    "available" if online else "unavailable", name, "retained" if raw.retain else ""
                )
                if not online:
                    self.stats.unavailable += 1
                    self.member.release(now, "device offline (availability / last will)")
                else:
                    self._send(now, self.member.setpoint_w, refresh=True)
            return None
        if r.seq is not None:
            ts = r.ts if r.ts is not None else raw.wall_s
            sid = r.envelope.sid if getattr(r, "envelope", None) is not None else None
            chk = self.tr.streams.check(
                f"{raw.topic}|{sid or ''}", S.Envelope(1, int(r.seq), float(ts), sid)
            )
            if isinstance(chk, S.Reject):
                return chk
        if r.ts is not None and abs(r.ts - raw.wall_s) > self.tr.max_skew_s:
            self.tr.counters.clock_skew += 1
            self.tr.event("clock_skew", name, f"ts {r.ts - raw.wall_s:+.1f} s from receipt")
        if r.tolerated_keys:
            self.tr.counters.unknown_keys += len(r.tolerated_keys)
        if r.role == "state":
            seq = r.signals.get("setpoint_seq")
            if seq is not None and int(seq) in self.pending_acks:
                self.stats.acks += 1
                self.stats.reaction_wall_s.append(raw.wall_s - self.pending_acks.pop(int(seq)))
            return None
        p = r.signals.get("power_w")
        if p is None:
            self.stats.ignored += 1
            return None
        kind = self.spec.binds.kind
        soc = r.signals.get("soc") if kind in ("ev", "battery") else None
        plugged = r.signals.get("plugged") if kind == "ev" else None
        try:
            self.member.set_measured_w(now, float(p), soc=soc, plugged=plugged)
        except ValueError as exc:
            return S.Reject(S.OUT_OF_RANGE, str(exc))
        self.stats.measurements += 1
        self.last_rx = now
        if self.available is None:
            self.available = True
        count = self.stats.measurements
        ev = self.env.timeout(self.spec.max_age_s)
        ev.callbacks.append(lambda _e: self._check_stale(count))
        return None

    def _check_stale(self, count: int) -> None:
        if self.stats.measurements == count and self.member.measured:
            now = float(self.env.now)
            self.stats.stale += 1
            self.member.release(now, f"stale: no measurement for {self.spec.max_age_s:g} s")
            self.tr.event(
                "stale",
                self.spec.name,
                f"no measurement for {self.spec.max_age_s:g} s: the model's power is used",
            )

    # ------------------------------------------------------------------ outbound
    def _on_setpoint(self, t_s: float, value: float) -> None:
        self._send(t_s, value)

    def _refresh(self):
        period = self.spec.ttl_s / 3.0
        while True:
            yield self.env.timeout(period)
            if math.isfinite(self.sent_t) and float(self.env.now) - self.sent_t >= period * 0.999:
                self._send(float(self.env.now), self.member.setpoint_w, refresh=True)

    def _send(self, now: float, value: float, refresh: bool = False) -> None:
        from cps_sim.bridge.profile_codec import Setpoint

        spec = self.spec
        mode = self.member.setpoint_mode
        if mode == "none":
            return  # no controller has set this member yet
        if mode == "auto":
            if not self.takes_mode:
                return  # the device keeps its own behaviour
            sp = Setpoint(mode="auto", ttl_s=spec.ttl_s)
            shown = math.nan
        else:
            v = float(min(max(value, self.lo), self.hi))
            if v != value and not refresh:
                self.stats.clamped += 1
                self.tr.event(
                    "setpoint_clamped",
                    spec.name,
                    f"{value:g} W clamped to the device rating [{self.lo:g}, {self.hi:g}] W",
                )
            ramp = spec.max_ramp_w_per_s
            if ramp is not None and math.isfinite(self.sent_value):
                step = ramp * (now - self.sent_t)
                v = self.sent_value + min(max(v - self.sent_value, -step), step)
            sp = Setpoint(power_w=v, ttl_s=spec.ttl_s)
            shown = v
        if self.available is False:
            self.stats.setpoints_withheld += 1
            return
        self._publish(sp, now)
        self.sent_value, self.sent_t = shown, now

    def _publish(self, sp: Any, now: float) -> None:
        from dataclasses import replace

        from cps_sim.core.errors import BridgeError

        sp = replace(sp, ts=self.tr.clock())
        try:
            out = self.bound.encode_setpoint(sp)
        except BridgeError as exc:
            self.tr.event("setpoint_not_sent", self.spec.name, str(exc))
            return
        for topic, payload, qos, _retain in out:
            self.tr.publish_wire(topic, payload, max(qos, 1), setpoint=True, ttl_s=self.spec.ttl_s)
        self.stats.setpoints_sent += 1
        seq = self.bound._seq
        if self.rt.live:
            self.pending_acks[seq] = self.tr.clock()
            if len(self.pending_acks) > 1000:
                self.pending_acks.pop(next(iter(self.pending_acks)))

    def final(self) -> None:
        """At the end of the run: the fail-safe setpoint (if the device is online)."""
        from cps_sim.bridge.profile_codec import Setpoint

        if self.available is not False:
            self._publish(
                Setpoint(power_w=self.spec.fail_safe_power_w, ttl_s=self.spec.ttl_s),
                float(self.env.now),
            )
