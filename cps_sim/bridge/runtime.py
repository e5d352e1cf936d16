"""The bridge inside a run: exposed groups, bound devices, the clock topic, lag, events.

:class:`BridgeRuntime` is set up after ``world.start`` (``simulate(setup=...)``)
on a world whose transport is an :class:`~cps_sim.bridge.transport.MqttTransport`:

* **Real controller, simulated world** — for each group in ``bridge.expose``:
  a ``control.base.device_process`` (the same setpoint holder, ttl and
  fallback as the simulator's own controllers) listens on
  ``<prefix>/group/<group>/setpoint``; a guard clamps every received setpoint to
  the members' rated limits (``setpoint_clamped`` events) and applies the
  optional rate limit; every ``interval_s`` the group's observation goes out on
  ``<prefix>/group/<group>/observation`` and, per member, on
  ``<prefix>/dev/<group>-<site>-<kind>/telemetry``.
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from cps_sim.bridge import schema as S
from cps_sim.bridge.transport import MqttTransport, RawIn
from cps_sim.control.base import (
    DeviceStats,
    device_process,
    fallback_off,
    fallback_uncontrolled,
    setpoint_sizes,
)
from cps_sim.core.errors import Issue, ScenarioError
from cps_sim.scenario.bridge_schema import BridgeDeviceSpec, BridgeSpec, ExposeSpec

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
    for i, d in enumerate(spec.devices):
        b = d.binds
        path = f"bridge.devices[{i}].binds"
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
class GroupStats:
    clamped: int = 0  # setpoint values changed by the rating clamp
    ramped: int = 0  # setpoint values changed by the rate limit
    observations: int = 0
    device: DeviceStats = field(default_factory=DeviceStats)


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
    ):
        self.spec = spec
        self.tr = transport
        self.speed = float(speed)
        self.live = live
        self.base_dir = base_dir
        self.groups: dict[str, GroupStats] = {}
        self.links: list[DeviceLink] = []
        self.lag_s: list[float] = []
        self.tick_wall_s: list[float] = []
        self.wall0: float | None = None
        self.env: simpy.Environment | None = None
        self.world: Any = None

    # ------------------------------------------------------------------ set-up
    def setup(self, env: simpy.Environment, world: Any) -> None:
        """Start the bridge's processes (call after ``world.start``)."""
        self.env, self.world = env, world
        for e in self.spec.expose:
            self._expose(env, world, e)
        for i, d in enumerate(self.spec.devices):
            self.links.append(DeviceLink(self, env, world, d, i))
        self.tr.publish_wire(self.tr.topics.status(), b"online", 1, retain=True)
        if self.spec.homeassistant:
            self._ha_configs = self._discovery(world)
            self._announce()
            self.tr.subscribe_wire(f"{self.spec.discovery_prefix}/status", self._ha_status)
        self.tr.start()
        if self.live:
            sync = getattr(env, "sync", None)  # RealtimeEnvironment: wall clock starts now
            if sync is not None:
                sync()
            self.wall0 = time.time()

    def _expose(self, env: simpy.Environment, world: Any, e: ExposeSpec) -> None:
        g = e.group
        obs = world.observe(g)
        self.tr.group_sizes[g] = setpoint_sizes(obs)
        stats = self.groups[g] = GroupStats()
        fb = fallback_uncontrolled if e.fallback == "uncontrolled" else fallback_off
        guard = _Guard(self, world, g, e, stats)

        def on_fallback(t: float, active: bool) -> None:
            self.tr.event(
                "fallback" if active else "fallback_end",
                g,
                "no valid setpoint: the group's fallback applies" if active else "setpoints again",
            )

        env.process(
            device_process(
                env,
                world,
                self.tr,
                g,
                fallback=fb,
                default_ttl_s=e.ttl_s,
                stats=stats.device,
                guard=guard,
                on_fallback=on_fallback,
            )
        )
        members = _members(world, g) if e.per_device else []
        for dev_id, _kind, _i in members:
            self.tr.publish_wire(
                self.tr.topics.dev(dev_id, "availability"), b"online", 1, retain=True
            )
        env.process(self._observe(env, world, g, e.interval_s or world.tick_s, members, stats))

    # ------------------------------------------------------------------ Home Assistant
    def _discovery(self, world: Any) -> list[tuple[str, bytes]]:
        """Discovery configs for the members of exposed groups (sensors; they are
        controlled through the group topic, so no controls)."""
        from cps_sim.bridge.homeassistant import discovery_messages
        from cps_sim.bridge.profiles import load_profile

        generic = load_profile("generic")
        kinds = {"ev": "ev_charger", "battery": "battery", "pv": "pv", "load": "meter"}
        signals = {
            "ev": ["power_w", "soc", "energy_wh", "plugged"],
            "battery": ["power_w", "soc", "energy_wh"],
            "pv": ["power_w"],
            "load": ["power_w"],
        }
        out: list[tuple[str, bytes]] = []
        for e in self.spec.expose:
            if not e.per_device:
                continue
            every = e.interval_s or world.tick_s
            for dev_id, kind, _i in _members(world, e.group):
                bound = generic.bind(f"{self.tr.topics.prefix}/dev/{dev_id}")
                out += discovery_messages(
                    bound,
                    dev_id,
                    kinds[kind],
                    signals[kind],
                    expire_after_s=3 * every / self.speed,
                    prefix=self.spec.discovery_prefix,
                )
        return out

    def _announce(self) -> None:
        for topic, payload in self._ha_configs:
            self.tr.publish_wire(topic, payload, 1, retain=True)

    def _ha_status(self, raw: RawIn, now: float) -> S.Reject | None:
        if raw.payload == b"online":  # Home Assistant (re)started: announce again
            self._announce()
        return None

    def _observe(self, env, world, g: str, interval: float, members, stats: GroupStats):
        k = 0
        topic = self.tr.topics.group(g, "observation")
        while True:
            obs = world.observe(g)
            iso = world.clock.to_datetime(float(env.now)).isoformat()
            data = S.observation_json(obs, g, self.tr.envelope(topic), iso)
            self.tr.publish_wire(topic, data, 0)
            stats.observations += 1
            if members:
                self._member_telemetry(world, g, obs, members)
            k += 1
            yield env.timeout(max(k * interval - env.now, 0.0))

    def _member_telemetry(self, world, g: str, obs, members) -> None:
        ev_p = _ev_power_w(world.group(g), obs)
        for dev_id, kind, i in members:
            body: dict[str, Any]
            if kind == "ev":
                body = {
                    "power_w": float(ev_p[i]),
                    "soc": float(obs.ev_soc[i]),
                    "energy_wh": float(obs.ev_energy_wh[i]),
                    "plugged": bool(obs.ev_plugged[i]),
                }
            elif kind == "battery":
                cap = float(obs.battery_capacity_wh[i])
                body = {
                    "power_w": float(obs.battery_power_w[i]),
                    "soc": float(obs.battery_energy_wh[i]) / cap,
                    "energy_wh": float(obs.battery_energy_wh[i]),
                }
            elif kind == "pv":
                body = {"power_w": -float(obs.site_pv_w[i])}
            else:
                body = {"power_w": float(obs.site_load_w[i])}
            topic = self.tr.topics.dev(dev_id, "telemetry")
            env_ = self.tr.envelope(topic)
            self.tr.publish_wire(
                topic,
                S.dumps(
                    {
                        "v": env_.v,
                        "seq": env_.seq,
                        "ts": env_.ts,
                        "sid": env_.sid,
                        "sim_time_s": env_.sim_time_s,
                        **body,
                    }
                ),
                0,
            )

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

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Fail-safe setpoints to bound devices, members offline, then disconnect."""
        for link in self.links:
            link.final()
        for e in self.spec.expose:
            if e.per_device and self.world is not None:
                for dev_id, _k, _i in _members(self.world, e.group):
                    self.tr.publish_wire(
                        self.tr.topics.dev(dev_id, "availability"), b"offline", 1, retain=True
                    )
        self.tr.close()

    def kpis(self) -> dict[str, float]:
        out = self.tr.summary()
        if self.lag_s:
            lag = np.asarray(self.lag_s)
            out.update(
                hil_lag_p50_s=float(np.percentile(lag, 50)),
                hil_lag_p99_s=float(np.percentile(lag, 99)),
                hil_lag_max_s=float(lag.max()),
            )
        for g, st in sorted(self.groups.items()):
            d = st.device
            out[f"bridge_{g}_setpoints_applied"] = float(d.applied)
            out[f"bridge_{g}_setpoints_clamped"] = float(st.clamped)
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


# ----------------------------------------------------------------------------- exposed groups


def _members(world: Any, g: str) -> list[tuple[str, str, int]]:
    """(device id, kind, index) of every member of group ``g`` (index: EV or site)."""
    group = world.group(g)
    out = []
    evs = group.evs
    if evs is not None and evs.n:
        seen: dict[int, int] = {}
        for k, s in enumerate(evs.site.tolist()):
            j = seen.get(s, 0)
            seen[s] = j + 1
            out.append((S.member_id(g, s, "ev" if j == 0 else f"ev{j}"), "ev", k))
    for s in range(group.n):
        if group.battery.capacity_wh[s] > 0:
            out.append((S.member_id(g, s, "battery"), "battery", s))
        if group.pv_capacity_w[s] > 0:
            out.append((S.member_id(g, s, "pv"), "pv", s))
        out.append((S.member_id(g, s, "load"), "load", s))
    return out


def _ev_power_w(group: Any, obs: Any) -> np.ndarray:
    """EV power now: the applied setpoint within the charger/V2X limits, 0 when
    unplugged (the CC-CV taper and a full battery are not included)."""
    if not obs.n_evs:
        return np.zeros(0)
    sp = np.asarray(group.evs.setpoint_w, dtype=float)
    p = np.clip(sp, -np.asarray(obs.ev_v2x_w, float), np.asarray(obs.ev_charger_w, float))
    return np.where(obs.ev_plugged, p, 0.0)


class _Guard:
    """Clamp an exposed group's setpoints to its members' ratings; optional rate limit."""

    def __init__(self, rt: BridgeRuntime, world: Any, g: str, spec: ExposeSpec, stats: GroupStats):
        self.rt, self.world, self.g, self.spec, self.stats = rt, world, g, spec, stats
        self.last: dict[str, np.ndarray] = {}
        self.last_t = math.nan

    def __call__(self, now: float, sp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = self.world.observe(self.g)
        group = self.world.group(self.g)
        out: dict[str, np.ndarray] = {}
        notes = []
        for key, x in sp.items():
            x = np.asarray(x, dtype=float)
            if key == "ev_setpoint_w":
                lo, hi = -np.asarray(obs.ev_v2x_w, float), np.asarray(obs.ev_charger_w, float)
                x = np.where(np.isposinf(x), hi, x)
            elif key == "battery_setpoint_w":
                b = group.battery
                lo = -np.asarray(b.max_discharge_power_w, float)
                hi = np.asarray(b.max_charge_power_w, float)
            elif key == "deferrable_setpoint_w":
                lo = np.zeros(obs.n_sites)
                hi = np.asarray(obs.deferrable_max_w, float)
                x = np.where(np.isposinf(x), hi, x)
            else:
                out[key] = x
                continue
            y = np.where(np.isnan(x), x, np.clip(x, lo, hi))
            changed = ~np.isnan(x) & (y != x)
            if changed.any():
                i = int(np.flatnonzero(changed)[0])
                self.stats.clamped += int(changed.sum())
                notes.append(
                    f"{key}: {int(changed.sum())} value(s) clamped to the rating, "
                    f"e.g. [{i}] {x[i]:g} -> {y[i]:g} W"
                )
            out[key] = y
        ramp = self.spec.max_ramp_w_per_s
        if ramp is not None and math.isfinite(self.last_t):
            step = ramp * (now - self.last_t)
            for key, y in out.items():
                prev = self.last.get(key)
                if prev is None or prev.shape != y.shape or key in S.LIMIT_KEYS:
                    continue
                both = ~np.isnan(y) & ~np.isnan(prev)
                z = np.where(both, prev + np.clip(y - prev, -step, step), y)
                n = int((z != y)[both].sum())
                if n:
                    self.stats.ramped += n
                    notes.append(f"{key}: {n} value(s) rate-limited to {ramp:g} W/s")
                out[key] = z
        self.last = {k: v.copy() for k, v in out.items()}
        self.last_t = now
        for note in notes:
            self.rt.tr.event("setpoint_clamped", self.g, note)
        return out


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
