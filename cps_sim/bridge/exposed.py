"""Site groups exposed to external controllers (``bridge.expose``): setpoints in, state out.

An external controller drives an exposed group in two ways, which combine:

* **group setpoints** on ``<prefix>/group/<group>/setpoint`` (arrays over the group;
  decoded by the transport into the internal bus topic ``cps/<group>/setpoints``);
* **member setpoints** on ``<prefix>/dev/<group>-<site>-<kind>/setpoint`` for one EV
  charger or one battery (schema-v1 device setpoints: ``ttl_s`` and one of ``power_w``,
  ``mode: "auto"``, EVs also ``on``) — what a Home Assistant ``number`` or a Node-RED
  flow setting one charger sends.

How they combine, per member and key (documented in ``docs/mqtt.md``): the **newest
valid setpoint wins** — a member setpoint taken after the group setpoint that last set
the member's key overrides it for that member; a later group setpoint carrying the key
overrides it again.  A member setpoint is valid for its ``ttl_s`` from the instant it
was taken; after that the member follows the group setpoint again, or, when the group
has none, the group's fallback.  A member setpoint stays valid while the group is in
its fallback.  Group setpoints keep the semantics of
:func:`~cps_sim.control.base.device_process` (the same :class:`SetpointHolder`, ttl,
fallback and keys that keep their last value).  Every value, group or member, passes
the same rating clamp (``setpoint_clamped`` events) and optional rate limit before
:meth:`World.apply`.

Each member is also published as a device: ``telemetry`` (its power is the average AC
power the engine *booked* since the previous message — the CC-CV taper and a full or
empty battery included — so the telemetry integrates exactly to the booked energy),
``availability`` (retained) and, for controllable members, ``state`` after each member
setpoint (the ``setpoint_seq`` taken, the value in force, the mode, a reject reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from cps_sim.bridge import schema as S
from cps_sim.bridge.transport import RawIn
from cps_sim.control.base import (
    DeviceStats,
    fallback_off,
    fallback_uncontrolled,
    setpoint_sizes,
)
from cps_sim.core.bus import BATTERY_AUTO, BATTERY_FOLLOW, SetpointHolder, Topics
from cps_sim.scenario.bridge_schema import ExposeSpec

if TYPE_CHECKING:
    from cps_sim.bridge.runtime import BridgeRuntime

CONTROLLABLE = ("ev", "battery")
MEMBER_KEYS = ("ev_setpoint_w", "battery_setpoint_w", "battery_mode")
_FALLBACK_STAMP = -1  # the fallback sets a key with the lowest precedence


@dataclass(frozen=True)
class Member:
    """One member of an exposed group: device id, kind, index (EV index or site)."""

    dev_id: str
    kind: str  # ev, battery, pv, load
    index: int


def members(world: Any, g: str) -> list[Member]:
    """Every member of group ``g``: its EVs (``<g>-<site>-ev``, a second EV at one site
    ``ev1``...), then per site its battery (if any), PV (if any) and load."""
    group = world.group(g)
    out = []
    evs = group.evs
    if evs is not None and evs.n:
        seen: dict[int, int] = {}
        for k, s in enumerate(evs.site.tolist()):
            j = seen.get(s, 0)
            seen[s] = j + 1
            out.append(Member(S.member_id(g, s, "ev" if j == 0 else f"ev{j}"), "ev", k))
    for s in range(group.n):
        if group.battery.capacity_wh[s] > 0:
            out.append(Member(S.member_id(g, s, "battery"), "battery", s))
        if group.pv_capacity_w[s] > 0:
            out.append(Member(S.member_id(g, s, "pv"), "pv", s))
        out.append(Member(S.member_id(g, s, "load"), "load", s))
    return out


@dataclass
class MemberSetpoint:
    """A member setpoint in force: ``value_w`` (EV: +inf = the charger's maximum), or
    ``auto`` (a battery's built-in rule)."""

    value_w: float
    auto: bool
    taken_s: float
    expires_s: float
    stamp: int  # arrival order (comparable with the group messages' Message.seq)
    seq: int


@dataclass
class GroupStats:
    clamped: int = 0  # setpoint values changed by the rating clamp
    ramped: int = 0  # setpoint values changed by the rate limit
    observations: int = 0
    member_setpoints: int = 0  # member setpoints taken
    member_expired: int = 0  # member setpoints that ran out
    device: DeviceStats = field(default_factory=DeviceStats)


class ExposedGroup:
    """The device side of one exposed group (see the module docstring)."""

    def __init__(self, rt: BridgeRuntime, env: simpy.Environment, world: Any, spec: ExposeSpec):
        self.rt, self.tr, self.env, self.world, self.spec = rt, rt.tr, env, world, spec
        g = self.g = spec.group
        obs = world.observe(g)
        self.sizes = setpoint_sizes(obs)
        self.tr.group_sizes[g] = self.sizes
        self.stats = GroupStats()
        self.fallback = fallback_uncontrolled if spec.fallback == "uncontrolled" else fallback_off
        self.guard = _Guard(self)
        self.holder = SetpointHolder(self.sizes, spec.ttl_s)
        self.stats.device.holder = self.holder
        self.store = self.tr.subscribe(Topics.setpoints(g))
        self.wake = simpy.Store(env)
        self.dirty: set[str] = set()  # members with a new setpoint since the last wake-up
        self.members = members(world, g) if spec.per_device else []
        self.overrides: dict[str, MemberSetpoint] = {}
        self.base: dict[str, np.ndarray] = {}  # group-level values in force per key
        self.stamp: dict[str, int] = {}  # arrival stamp of what set base[key]
        self.ev = world.group(g).evs
        self.bat = world.group(g).batteries
        for m in self.members:
            self.tr.publish_wire(
                self.tr.topics.dev(m.dev_id, "availability"), b"online", 1, retain=True
            )
            if m.kind in CONTROLLABLE:
                self.tr.subscribe_wire(
                    self.tr.topics.dev(m.dev_id, "setpoint"),
                    lambda raw, now, m=m: self._on_member(m, raw, now),
                )
            else:  # observed only: a setpoint for it is refused, not silently lost
                self.tr.subscribe_wire(
                    self.tr.topics.dev(m.dev_id, "setpoint"),
                    lambda raw, now, m=m: S.Reject(
                        S.UNKNOWN_FIELD,
                        f"the {m.kind} member {m.dev_id} is observed only: it takes no setpoints",
                    ),
                )
        if any(m.kind == "ev" for m in self.members):
            self.ev.track_ac_energy()
        if any(m.kind == "battery" for m in self.members):
            self.bat.track_ac_energy()
        env.process(self._run())
        env.process(self._observe(spec.interval_s or world.tick_s))

    # ------------------------------------------------------------------ member setpoints
    def _on_member(self, m: Member, raw: RawIn, now: float) -> S.Reject | None:
        r = self._decode_member(m, raw, now)
        if isinstance(r, S.Reject):
            self._state(m, now, reject=str(r))  # the answer to this message only
            return r
        self.overrides[m.dev_id] = r
        self.stats.member_setpoints += 1
        if not self.dirty:  # one wake-up for every member setpoint taken at this instant
            self.wake.put(True)
        self.dirty.add(m.dev_id)
        return None

    def _decode_member(self, m: Member, raw: RawIn, now: float) -> MemberSetpoint | S.Reject:
        if raw.retain:
            return S.Reject(
                S.RETAINED_COMMAND,
                "a retained setpoint (stale command from an earlier session); "
                "setpoints are never retained",
            )
        checked = self.tr.check(raw)
        if isinstance(checked, S.Reject):
            return checked
        obj, env, ts = checked
        sp = S.decode_setpoint_obj(obj)
        if isinstance(sp, S.Reject):
            return sp
        if raw.wall_s - ts > sp.ttl_s:
            return S.Reject(S.EXPIRED, f"sent {raw.wall_s - ts:.1f} s ago, ttl_s {sp.ttl_s:g}")
        auto = False
        if m.kind == "ev":
            if sp.power_w is not None:
                value = sp.power_w
            elif sp.mode is not None or sp.on is True:
                value = math.inf  # the charger's own behaviour: its maximum
            elif sp.on is False:
                value = 0.0
            else:
                return S.Reject(
                    S.UNKNOWN_FIELD,
                    "a simulated EV charger takes power_w, on or mode, not current_a",
                )
            hi = float(self.ev.charger_w[m.index])
            lo = -float(self.ev.v2x_w[m.index])
        else:
            if sp.power_w is not None:
                value = sp.power_w
            elif sp.mode is not None:
                value, auto = 0.0, True
            else:
                key = "on" if sp.on is not None else "current_a"
                return S.Reject(
                    S.UNKNOWN_FIELD, f"a simulated battery takes power_w or mode, not {key}"
                )
            hi = float(self.bat.spec.max_charge_power_w[m.index])
            lo = -float(self.bat.spec.max_discharge_power_w[m.index])
        if math.isfinite(value):
            clamped = min(max(value, lo), hi)
            if clamped != value:
                self.stats.clamped += 1
                self.tr.event(
                    "setpoint_clamped",
                    m.dev_id,
                    f"{value:g} W clamped to the member's rating [{lo:g}, {hi:g}] W",
                )
                value = clamped
        return MemberSetpoint(value, auto, now, now + sp.ttl_s, self.tr.arrival(), env.seq)

    # ------------------------------------------------------------------ the device process
    def _run(self):
        env, holder, d = self.env, self.holder, self.stats.device
        self._apply(float(env.now), self._enter_fallback(float(env.now)))
        for m in self.members:  # what each controllable member follows from the start
            if m.kind in CONTROLLABLE:
                self._state(m, float(env.now))
        in_fallback = True
        get = self.store.get()
        woke = self.wake.get()
        while True:
            now = float(env.now)
            due = [o.expires_s for o in self.overrides.values()]
            if not in_fallback:
                due.append(holder.expires_s())
            if self.guard.pending():  # a rate-limited setpoint still moving to its target
                due.append(now + self.world.tick_s)
            t_next = min(due, default=math.inf)
            if math.isfinite(t_next):
                yield get | woke | env.timeout(max(t_next - now, 0.0))
            else:
                yield get | woke
            now = float(env.now)
            changed: set[str] = set()  # members whose setpoint may have changed
            carried: dict[str, np.ndarray] = {}  # non-member keys to apply
            group_new = False
            if get.triggered:
                batch = [get.value, *self.store.items]
                self.store.items.clear()
                get = self.store.get()
                d.messages += len(batch)
                newest = [msg for msg in batch if holder.offer(msg)]
                current = holder.current(now)
                if newest and current is not None:
                    stamp = newest[-1].seq
                    for key, value in current.items():
                        if key in MEMBER_KEYS:
                            self._set_base(key, value, stamp)
                        else:
                            carried[key] = value
                    if "battery_setpoint_w" in current and "battery_mode" not in current:
                        n = self.sizes["battery_mode"]
                        self._set_base("battery_mode", np.full(n, BATTERY_FOLLOW), stamp)
                    d.applied += 1
                    group_new = True
                    if in_fallback:
                        self._leave_fallback(now)
                        in_fallback = False
            if woke.triggered:
                changed.update(self.dirty)
                self.dirty.clear()
                self.wake.items.clear()
                woke = self.wake.get()
            for dev_id, o in list(self.overrides.items()):
                if o.expires_s <= now:
                    del self.overrides[dev_id]
                    changed.add(dev_id)
                    self.stats.member_expired += 1
                    back = "group setpoint" if not holder.is_fallback(now) else "group's fallback"
                    self.tr.event("setpoint_expired", dev_id, f"ran out: back to the {back}")
            if not in_fallback and holder.is_fallback(now):
                carried = self._enter_fallback(now)
                in_fallback = True
                group_new = True
            if group_new or changed:
                self._apply(now, carried)
                for m in self.members:
                    if m.kind in CONTROLLABLE and (group_new or m.dev_id in changed):
                        self._state(m, now)
            elif self.guard.pending():
                # no new setpoint: the rate limit moves on towards the last target
                self._apply_guarded(now, self.guard.targets())

    def _set_base(self, key: str, value: np.ndarray, stamp: int) -> None:
        self.base[key] = np.asarray(value, dtype=float).copy()
        self.stamp[key] = stamp

    def _enter_fallback(self, now: float) -> dict[str, np.ndarray]:
        """The group's fallback becomes its base (lowest precedence: a valid member setpoint
        keeps its member); returns the fallback's other keys to apply."""
        d = self.stats.device
        fb = self.fallback(self.world.observe(self.g))
        other = {}
        for key, value in fb.items():
            if key in MEMBER_KEYS and key in self.sizes:
                self._set_base(key, value, _FALLBACK_STAMP)
            elif key in self.sizes:
                other[key] = np.asarray(value, dtype=float)
        d.fallbacks += 1
        d.fallback_since_s = now
        self.tr.event("fallback", self.g, "no valid setpoint: the group's fallback applies")
        return other

    def _leave_fallback(self, now: float) -> None:
        d = self.stats.device
        if not math.isnan(d.fallback_since_s):
            d.fallback_time_s += now - d.fallback_since_s
            d.fallback_since_s = math.nan
        self.tr.event("fallback_end", self.g, "setpoints again")

    def effective(self) -> dict[str, np.ndarray]:
        """The member keys in force: the group's values, each member's own setpoint where
        it is newer (see the module docstring)."""
        out: dict[str, np.ndarray] = {}
        for key in MEMBER_KEYS:
            if key in self.sizes and key in self.base:
                out[key] = self.base[key].copy()
        for m in self.members:
            o = self.overrides.get(m.dev_id)
            if o is None:
                continue
            if m.kind == "ev" and "ev_setpoint_w" in out:
                if o.stamp > self.stamp.get("ev_setpoint_w", _FALLBACK_STAMP):
                    out["ev_setpoint_w"][m.index] = o.value_w
            elif m.kind == "battery" and "battery_mode" in out:
                newer = o.stamp > max(
                    self.stamp.get("battery_setpoint_w", _FALLBACK_STAMP),
                    self.stamp.get("battery_mode", _FALLBACK_STAMP),
                )
                if newer:
                    out["battery_mode"][m.index] = BATTERY_AUTO if o.auto else BATTERY_FOLLOW
                    if not o.auto:
                        sp = out.setdefault(
                            "battery_setpoint_w", np.zeros(self.sizes["battery_setpoint_w"])
                        )
                        sp[m.index] = o.value_w
        return out

    def _apply(self, now: float, carried: dict[str, np.ndarray]) -> None:
        sp = {k: v for k, v in carried.items() if k not in MEMBER_KEYS}
        sp.update(self.effective())
        self._apply_guarded(now, sp)

    def _apply_guarded(self, now: float, sp: dict[str, np.ndarray]) -> None:
        """Integrate the world to ``now``, clamp and rate-limit ``sp``, apply it."""
        self.world.advance_to(now)
        sp = self.guard(now, sp)
        self.world.apply(self.g, **{k: v for k, v in sp.items() if k in self.sizes})

    # ------------------------------------------------------------------ state out
    def _state(self, m: Member, now: float, reject: str = "") -> None:
        """``<prefix>/dev/<member>/state``: what the member follows now, after the clamp
        to its rating; ``reject``: the reason this answers a rejected member setpoint."""
        o = self.overrides.get(m.dev_id)
        eff = self.effective()
        body: dict[str, Any] = {}
        i = m.index
        if m.kind == "ev":
            keys: tuple[str, ...] = ("ev_setpoint_w",)
            hi = float(self.ev.charger_w[i])
            v = float(eff["ev_setpoint_w"][i]) if "ev_setpoint_w" in eff else math.inf
            body["setpoint_power_w"] = min(max(v, -float(self.ev.v2x_w[i])), hi)
            mode = "setpoint"
        else:
            keys = ("battery_setpoint_w", "battery_mode")
            auto = "battery_mode" not in eff or eff["battery_mode"][i] == BATTERY_AUTO
            mode = "auto" if auto else "setpoint"
            if not auto:
                b = self.bat.spec
                v = float(eff["battery_setpoint_w"][i])
                lo, hi = -float(b.max_discharge_power_w[i]), float(b.max_charge_power_w[i])
                body["setpoint_power_w"] = min(max(v, lo), hi)
        newest_group = max(self.stamp.get(k, _FALLBACK_STAMP) for k in keys)
        if o is not None and o.stamp > newest_group:
            source = "member"
        else:
            source = "fallback" if self.holder.is_fallback(now) else "group"
        if o is not None:
            body["setpoint_seq"] = o.seq
        body.update(
            mode=mode,
            fallback=source == "fallback",
            reason=reject or f"following the {source} setpoint",
        )
        topic = self.tr.topics.dev(m.dev_id, "state")
        e = self.tr.envelope(topic)
        head = {"v": e.v, "seq": e.seq, "ts": e.ts, "sid": e.sid, "sim_time_s": e.sim_time_s}
        self.tr.publish_wire(topic, S.dumps({**head, **body}), 1)

    def _observe(self, interval: float):
        env, world, tr = self.env, self.world, self.tr
        topic = tr.topics.group(self.g, "observation")
        k = 0
        last_t = float(env.now)
        ev_prev = bat_prev = None
        while True:
            obs = world.observe(self.g)
            now = float(env.now)
            iso = world.clock.to_datetime(now).isoformat()
            tr.publish_wire(topic, S.observation_json(obs, self.g, tr.envelope(topic), iso), 0)
            self.stats.observations += 1
            if self.members:
                # booked AC energy since the previous message -> its average power
                ev_e = None if self.ev is None else self.ev.ac_energy_wh
                bat_e = self.bat.ac_energy_wh
                dt_h = (now - last_t) / 3600.0
                ev_p = _average_w(ev_e, ev_prev, dt_h)
                bat_p = _average_w(bat_e, bat_prev, dt_h)
                self._member_telemetry(obs, ev_p, bat_p)
                ev_prev = None if ev_e is None else ev_e.copy()
                bat_prev = None if bat_e is None else bat_e.copy()
            last_t = now
            k += 1
            yield env.timeout(max(k * interval - env.now, 0.0))

    def _member_telemetry(self, obs: Any, ev_p: Any, bat_p: Any) -> None:
        tr = self.tr
        for m in self.members:
            i = m.index
            body: dict[str, Any]
            if m.kind == "ev":
                body = {
                    "power_w": float(ev_p[i]),
                    "soc": float(obs.ev_soc[i]),
                    "energy_wh": float(obs.ev_energy_wh[i]),
                    "plugged": bool(obs.ev_plugged[i]),
                }
            elif m.kind == "battery":
                cap = float(obs.battery_capacity_wh[i])
                body = {
                    "power_w": float(bat_p[i]),
                    "soc": float(obs.battery_energy_wh[i]) / cap,
                    "energy_wh": float(obs.battery_energy_wh[i]),
                }
            elif m.kind == "pv":
                body = {"power_w": -float(obs.site_pv_w[i])}
            else:
                body = {"power_w": float(obs.site_load_w[i])}
            topic = tr.topics.dev(m.dev_id, "telemetry")
            e = tr.envelope(topic)
            head = {"v": e.v, "seq": e.seq, "ts": e.ts, "sid": e.sid, "sim_time_s": e.sim_time_s}
            tr.publish_wire(topic, S.dumps({**head, **body}), 0)

    def close(self) -> None:
        for m in self.members:
            self.tr.publish_wire(
                self.tr.topics.dev(m.dev_id, "availability"), b"offline", 1, retain=True
            )


def _average_w(e_wh: np.ndarray | None, prev: np.ndarray | None, dt_h: float) -> Any:
    """Average power [W] from two readings of a booked-energy counter (0 for the first)."""
    if e_wh is None:
        return None
    if prev is None or not dt_h > 0:
        return np.zeros_like(e_wh)
    return (e_wh - prev) / dt_h


class _Guard:
    """Clamp an exposed group's setpoints to its members' ratings; optional rate limit."""

    def __init__(self, eg: ExposedGroup):
        self.eg = eg
        self.last: dict[str, np.ndarray] = {}  # values applied (after clamp and ramp)
        self.target: dict[str, np.ndarray] = {}  # values wanted (after clamp, before ramp)
        self.last_t = math.nan
        self.asked: dict[str, np.ndarray] = {}  # values asked for (before the clamp)

    def pending(self) -> bool:
        """A rate-limited value has not reached its target yet."""
        return any(
            key in self.last and not np.array_equal(self.last[key], y, equal_nan=True)
            for key, y in self.target.items()
        )

    def targets(self) -> dict[str, np.ndarray]:
        """The last setpoints wanted, every key (re-offered while a ramp is under way)."""
        return {key: y.copy() for key, y in self.target.items()}

    def __call__(self, now: float, sp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        eg = self.eg
        obs = eg.world.observe(eg.g)
        group = eg.world.group(eg.g)
        stats = eg.stats
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
            y = np.clip(x, lo, hi)
            # a value clamped when it is asked for, not again on every re-application of
            # the same setpoint (another member's setpoint, a ramp step)
            prev = self.asked.get(key)
            fresh = (
                np.ones(x.shape, dtype=bool)
                if prev is None or prev.shape != x.shape
                else ~((prev == x) | (np.isnan(prev) & np.isnan(x)))
            )
            self.asked[key] = x.copy()
            changed = (y != x) & fresh
            if changed.any():
                i = int(np.flatnonzero(changed)[0])
                stats.clamped += int(changed.sum())
                notes.append(
                    f"{key}: {int(changed.sum())} value(s) clamped to the rating, "
                    f"e.g. [{i}] {x[i]:g} -> {y[i]:g} W"
                )
            out[key] = y
        before = self.target  # what was wanted at the previous call
        self.target = {key: y.copy() for key, y in out.items()}
        ramp = eg.spec.max_ramp_w_per_s
        if ramp is not None and math.isfinite(self.last_t):
            # A value at rest (it had reached what was wanted) starts its ramp now and
            # moves at the next re-evaluation (pending ramps are re-applied every tick);
            # a value already on its ramp moves by ramp x the time since the last call.
            # So the applied value never runs ahead of the ramp line from the moment its
            # new target arrived.
            moving = ramp * (now - self.last_t)
            for key, y in out.items():
                prev = self.last.get(key)
                if (
                    prev is None
                    or prev.shape != y.shape
                    or key in S.LIMIT_KEYS
                    or not key.endswith("_w")  # the ramp is in W/s: powers only
                ):
                    continue
                was = before.get(key)
                at_rest = (
                    np.isclose(was, prev, rtol=0.0, atol=1e-9)
                    if was is not None and was.shape == prev.shape
                    else np.zeros(prev.shape, dtype=bool)
                )
                step = np.where(at_rest, 0.0, moving)
                z = prev + np.clip(y - prev, -step, step)
                n = int((z != y).sum())
                if n:
                    stats.ramped += n
                    notes.append(f"{key}: {n} value(s) rate-limited to {ramp:g} W/s")
                out[key] = z
        for key, value in out.items():
            self.last[key] = value.copy()
        self.last_t = now
        for note in notes:
            eg.tr.event("setpoint_clamped", eg.g, note)
        return out
