"""Device profiles: encode and decode a vendor's MQTT messages as canonical signals.

A profile file (``devices/profiles/<name>.yaml``, read by
:mod:`cps_sim.bridge.profile_spec`) maps a device's own topics and payloads
onto cps_sim's signals (``power_w``, ``energy_wh``, ``soc``, ``plugged``, ...).
Adding a profile takes no code.  The same file serves both sides:

* the controller side (the bridge, binding a real device) subscribes to
  :meth:`Profile.subscriptions`, turns each message into a
  :class:`Measurement` with :meth:`Profile.decode` (or a :class:`Reject` with
  the reason, or :class:`Ignored` for a vendor message that carries none of
  the mapped signals) and sends setpoints with :meth:`Profile.encode_setpoint`;
* the device side (the emulators) publishes with :meth:`Profile.encode` and
  reads commands with :meth:`Profile.decode_command`.

``Profile.bind(device_topic)`` returns a :class:`BoundDevice` with the topics
resolved (exact-topic lookup instead of template matching).

Decoding never raises on bad input: malformed JSON, NaN/inf, wrong types,
out-of-range values, oversized payloads and unknown enum values give a
:class:`Reject` naming the topic, the path inside the payload and the problem.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cps_sim.bridge import schema as S
from cps_sim.bridge.profile_codec import (
    MAX_PAYLOAD_BYTES,
    Ignored,
    Measurement,
    Outgoing,
    Reject,
    Setpoint,
    as_setpoint,
    check_device_topic,
    decode_command_v1,
    decode_command_with,
    decode_many,
    device_subst,
    dump_json,
    fill_template,
    first_command,
    is_number,
    raw_text,
    set_path,
    subst_vars,
    to_vendor,
    topic_regex,
)
from cps_sim.bridge.profile_spec import (
    PROFILE_DIR,
    SETPOINT_SIGNALS,
    AvailabilitySpec,
    FieldSpec,
    MessageSpec,
    ProfileError,
    ProfileSpec,
    Rated,
    read_profile_file,
)
from cps_sim.core.errors import BridgeError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "BoundDevice",
    "Ignored",
    "Measurement",
    "Profile",
    "ProfileError",
    "Rated",
    "Reject",
    "Setpoint",
    "clamp_setpoint",
    "list_profiles",
    "load_profile",
]


# --------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class Profile:
    """A loaded, checked device profile (see module docstring)."""

    spec: ProfileSpec
    _regex: tuple[tuple[re.Pattern[str], MessageSpec | AvailabilitySpec], ...] = field(
        default=(), repr=False
    )
    _cmd_regex: tuple[tuple[re.Pattern[str], MessageSpec], ...] = field(default=(), repr=False)

    @classmethod
    def from_spec(cls, spec: ProfileSpec) -> Profile:
        items: list[tuple[re.Pattern[str], MessageSpec | AvailabilitySpec]] = []
        if spec.availability is not None:
            items.append((topic_regex(spec.availability.topic), spec.availability))
        items += [(topic_regex(m.topic), m) for m in spec.messages]
        cmds = tuple((topic_regex(c.topic), c) for c in spec.commands)
        return cls(spec, tuple(items), cmds)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def rated(self) -> Rated:
        return self.spec.rated

    @property
    def command_signals(self) -> set[str]:
        return {s for c in self.spec.commands for s in c.signals if s in SETPOINT_SIGNALS}

    @property
    def message_signals(self) -> set[str]:
        return {s for m in self.spec.messages for s in m.signals}

    def bind(self, device_topic: str, rated: Mapping[str, Any] | None = None) -> BoundDevice:
        return BoundDevice(self, check_device_topic(device_topic), self.rated.merged(rated))

    # ---- controller side
    def subscriptions(self, device_topic: str) -> list[str]:
        """Topics to subscribe to for one device (its telemetry, state and availability)."""
        sub = device_subst(check_device_topic(device_topic))
        topics = [subst_vars(m.topic, sub) for m in self.spec.messages]
        if self.spec.availability is not None:
            topics.append(subst_vars(self.spec.availability.topic, sub))
        return list(dict.fromkeys(topics))

    def decode(
        self, topic: str, payload: bytes, rated: Rated | Mapping[str, Any] | None = None
    ) -> Measurement | Reject | Ignored:
        """Decode one device -> controller message (never raises on bad input)."""
        r = rated if isinstance(rated, Rated) else self.rated.merged(rated)
        specs = []
        dev = None
        for rx, spec in self._regex:
            m = rx.match(topic)
            if m is not None:
                dev = m.groupdict().get("t")
                specs.append(spec)
        if not specs:
            return Ignored(f"topic {topic!r} is not one of profile {self.name}'s topics", topic)
        return decode_many(specs, topic, payload, r, dev, self.spec.schema == "v1")

    def encode_setpoint(
        self, device_topic: str, setpoint: Setpoint, rated: Mapping[str, Any] | None = None
    ) -> list[Outgoing]:
        """The vendor messages that carry ``setpoint`` (clamped to the rating first)."""
        return self.bind(device_topic, rated).encode_setpoint(setpoint)

    # ---- device side
    def command_subscriptions(self, device_topic: str) -> list[str]:
        sub = device_subst(check_device_topic(device_topic))
        return list(dict.fromkeys(subst_vars(c.topic, sub) for c in self.spec.commands))

    def decode_command(self, topic: str, payload: bytes) -> Setpoint | Reject | Ignored:
        if self.spec.schema == "v1" and any(rx.match(topic) for rx, _ in self._cmd_regex):
            return decode_command_v1(topic, payload)
        results = [
            decode_command_with(spec, topic, payload, self.rated)
            for rx, spec in self._cmd_regex
            if rx.match(topic) is not None
        ]
        if not results:
            return Ignored(f"topic {topic!r} is not a command topic of profile {self.name}", topic)
        return first_command(results)

    def encode(self, device_topic: str, role: str, signals: Mapping[str, Any]) -> list[Outgoing]:
        return self.bind(device_topic).encode(role, signals)


def clamp_setpoint(sp: Setpoint | Any, rated: Rated) -> tuple[Setpoint, list[str]]:
    """Clamp to the rated limits; EV currents below ``min_current_a`` become 0 (IEC 61851)."""
    sp = as_setpoint(sp)
    notes: list[str] = []
    power, current = sp.power_w, sp.current_a
    for name, v in (("power_w", power), ("current_a", current), ("ttl_s", sp.ttl_s)):
        if v is not None and (not is_number(v) or not math.isfinite(v)):
            raise BridgeError(f"setpoint {name} must be a finite number, got {v!r}")
    if power is not None:
        c = min(max(float(power), rated.power_w_min), rated.power_w_max)
        if c != power:
            notes.append(f"power_w {power:g} clamped to {c:g}")
        power = c
    if current is not None:
        c = min(max(float(current), 0.0), rated.current_a_max)
        if 0 < c < rated.min_current_a:
            c = 0.0
        if c != current:
            notes.append(f"current_a {current:g} clamped to {c:g}")
        current = c
    return replace(sp, power_w=power, current_a=current), notes


def _derive(sp: Setpoint, carried: set[str], rated: Rated, profile: str) -> dict[str, Any]:
    """Setpoint values in the signals this device takes (power <-> current <-> on/off)."""
    vals = sp.given()
    explicit_on = "on" in vals
    va = rated.voltage_v * rated.phases
    if "power_w" in vals and "power_w" not in carried:
        p = vals.pop("power_w")
        if "current_a" in carried and "current_a" not in vals:
            i = max(p, 0.0) / va
            vals["current_a"] = 0.0 if i < rated.min_current_a else min(i, rated.current_a_max)
        elif "on" in carried and not explicit_on:
            vals["on"] = p > 0
        else:
            vals["power_w"] = p
    if "current_a" in vals and "current_a" not in carried:
        i = vals.pop("current_a")
        if "power_w" in carried and "power_w" not in vals:
            vals["power_w"] = i * va
        elif "on" in carried and not explicit_on:
            vals["on"] = i > 0
        else:
            vals["current_a"] = i
    if "current_a" in vals and "on" in carried and not explicit_on:
        vals["on"] = vals["current_a"] > 0
        if vals["current_a"] == 0:
            del vals["current_a"]  # a paused charger keeps its last current setting
    missing = sorted(set(vals) - carried)
    if missing:
        raise BridgeError(
            f"profile {profile}: cannot send {missing} to this device (it takes "
            f"{sorted(carried) or 'no commands'})"
        )
    return vals


@dataclass
class BoundDevice:
    """A profile bound to one device topic: resolved topics, exact lookup, seq counters."""

    profile: Profile
    device_topic: str
    rated: Rated
    _by_topic: dict[str, list[MessageSpec | AvailabilitySpec]] = field(init=False, repr=False)
    _cmd_by_topic: dict[str, list[MessageSpec]] = field(init=False, repr=False)
    _seq: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        sub = device_subst(self.device_topic)
        self._subst = sub
        self._by_topic = {}
        spec = self.profile.spec
        if spec.availability is not None:
            self._by_topic.setdefault(subst_vars(spec.availability.topic, sub), []).append(
                spec.availability
            )
        for m in spec.messages:
            self._by_topic.setdefault(subst_vars(m.topic, sub), []).append(m)
        self._cmd_by_topic = {}
        for c in spec.commands:
            self._cmd_by_topic.setdefault(subst_vars(c.topic, sub), []).append(c)

    @property
    def topic_vars(self) -> dict[str, str]:
        """Values of the topic placeholders: ``{t}`` and ``{t4}``."""
        return dict(self._subst)

    @property
    def subscriptions(self) -> list[str]:
        return list(self._by_topic)

    @property
    def command_topics(self) -> list[str]:
        return list(self._cmd_by_topic)

    def decode(self, topic: str, payload: bytes) -> Measurement | Reject | Ignored:
        specs = self._by_topic.get(topic)
        if not specs:
            return Ignored(f"topic {topic!r} does not belong to {self.device_topic}", topic)
        return decode_many(
            specs, topic, payload, self.rated, self.device_topic, self.profile.spec.schema == "v1"
        )

    def decode_command(self, topic: str, payload: bytes) -> Setpoint | Reject | Ignored:
        specs = self._cmd_by_topic.get(topic)
        if not specs:
            return Ignored(f"topic {topic!r} is not a command topic of {self.device_topic}", topic)
        if self.profile.spec.schema == "v1":
            return decode_command_v1(topic, payload)
        return first_command([decode_command_with(s, topic, payload, self.rated) for s in specs])

    def encode_setpoint(self, setpoint: Setpoint | Any) -> list[Outgoing]:
        """Vendor messages for ``setpoint`` (ours or a :class:`cps_sim.bridge.schema.Setpoint`)."""
        sp, _ = clamp_setpoint(as_setpoint(setpoint), self.rated)
        if self.profile.spec.schema == "v1":
            return [self._encode_v1(sp)]
        vals = _derive(sp, self.profile.command_signals, self.rated, self.profile.name)
        derived, _ = clamp_setpoint(
            Setpoint(power_w=vals.get("power_w"), current_a=vals.get("current_a")), self.rated
        )
        for key in ("power_w", "current_a"):
            if key in vals:
                vals[key] = getattr(derived, key)
        if sp.seq is None:
            self._seq += 1
        extra = {
            "seq": sp.seq if sp.seq is not None else self._seq,
            "ts": sp.ts,
            "ttl_s": sp.ttl_s,
            "src": sp.src,
            "v": 1,
        }
        out: list[Outgoing] = []
        for c in self.profile.spec.commands:
            carried = [s for s in c.signals if s in SETPOINT_SIGNALS and s in vals]
            if not carried:
                continue
            out.append(self._encode_one(c, {**extra, **vals}))
        return out

    def _encode_v1(self, sp: Setpoint) -> Outgoing:
        """Schema v1: exactly one control and a ttl_s, written by schema.Setpoint.to_json."""
        given = sp.given()
        if len(given) != 1 or sp.ttl_s is None:
            raise BridgeError(
                f"a schema v1 setpoint needs ttl_s and exactly one of {list(SETPOINT_SIGNALS)}, "
                f"got {sorted(given)} with ttl_s={sp.ttl_s!r}"
            )
        if sp.seq is None:
            self._seq += 1
        body = S.Setpoint(ttl_s=float(sp.ttl_s), **given).to_json(
            sp.seq if sp.seq is not None else self._seq, sp.ts if sp.ts is not None else time.time()
        )
        [c] = self.profile.spec.commands
        return subst_vars(c.topic, self._subst), body, c.qos, False

    def encode(self, role: str, signals: Mapping[str, Any]) -> list[Outgoing]:
        """Device -> controller messages of ``role`` holding the given signals."""
        out = []
        for m in self.profile.spec.messages:
            if m.role != role or m.decode_only:
                continue
            if not any(
                s in signals and signals[s] is not None
                for s in m.signals
                if s not in ("seq", "ts", "v", "sid", "src")
            ):
                continue
            out.append(self._encode_one(m, signals))
        return out

    def availability(self, online: bool) -> Outgoing | None:
        a = self.profile.spec.availability
        if a is None:
            return None
        body = a.online if online else a.offline
        payload = (
            subst_vars(body, self._subst).encode()
            if isinstance(body, str)
            else dump_json(fill_template(body, {}, self._subst)[0])
        )
        return subst_vars(a.topic, self._subst), payload, a.qos, a.retain

    def _encode_one(self, m: MessageSpec, values: Mapping[str, Any]) -> Outgoing:
        topic = subst_vars(m.topic, self._subst)
        flat = _flat_identity(m)
        if flat is not None:  # schema v1: keys are the signals, values as they are
            consts, keys = flat
            body = dict(consts)
            for k in keys:
                v = values.get(k)
                if v is not None:
                    body[k] = v if not isinstance(v, float) else v + 0.0
            return topic, dump_json(body), m.qos, m.retain
        if m.raw is not None:
            payload = raw_text(to_vendor(m.raw, values[m.raw.signal])).encode()
        else:
            body, _ = fill_template(m.template, values, self._subst)
            for path, want in m.match:
                set_path(body, path, want)
            payload = dump_json(body)
        return topic, payload, m.qos, m.retain


_FLAT: dict[int, tuple[dict[str, Any], tuple[str, ...]] | None] = {}


def _flat_identity(m: MessageSpec) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """(constants, signal keys) when ``m``'s payload is a flat object whose keys are the
    signals themselves, unconverted (the schema-v1 layout); else None."""
    key = id(m)
    if key not in _FLAT:
        t = m.template
        ok = (
            m.raw is None
            and isinstance(t, dict)
            and all(
                not isinstance(v, (dict, list))
                and (
                    not isinstance(v, FieldSpec)
                    or (
                        v.signal == k
                        and v.factor == 1.0
                        and v.sign == 1.0
                        and not v.mapping
                        and v.round is None
                        and not v.has_default
                    )
                )
                for k, v in t.items()
            )
        )
        if ok:
            consts = {k: v for k, v in t.items() if not isinstance(v, FieldSpec)}
            for path, want in m.match:
                consts[str(path[0])] = want
            keys = tuple(k for k, v in t.items() if isinstance(v, FieldSpec))
            _FLAT[key] = (consts, keys)
        else:
            _FLAT[key] = None
    return _FLAT[key]


# --------------------------------------------------------------------------- loading
_CACHE: dict[Path, tuple[float, Profile]] = {}


def list_profiles(directory: str | Path | None = None) -> list[str]:
    root = Path(directory) if directory is not None else PROFILE_DIR
    return sorted(p.stem for p in root.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (``devices/profiles/<name>.yaml``) or by path to a YAML file.

    Raises :class:`ProfileError` (file, path inside it, problem) for a bad file and
    for an unknown name (listing the known ones).
    """
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or isinstance(name_or_path, Path):
        path = Path(name_or_path)
    else:
        path = PROFILE_DIR / f"{text}.yaml"
        if not path.exists():
            raise ProfileError.single(
                text,
                "",
                f"unknown device profile; known: "
                f"{list_profiles()} (or give a path to a .yaml file)",
            )
    shown = str(path)  # errors name the file as the user gave it (not a link's target)
    path = path.resolve()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        raise ProfileError.single(shown, "", "file not found (no such profile file)") from None
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    profile = Profile.from_spec(read_profile_file(path, shown))
    _CACHE[path] = (mtime, profile)
    return profile
