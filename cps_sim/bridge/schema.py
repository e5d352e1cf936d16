"""MQTT topic and payload schema v1: every topic name and every payload rule in one module.

``docs/mqtt.md`` is the reference for people writing clients; this module is
what the bridge runs.  Summary:

* Topics live under a configurable prefix (default ``cps/<scenario name>``);
  every level of the prefix and every id is ``[A-Za-z0-9_-]{1,64}``
  (:func:`validate_id`), so no remote or scenario-supplied name can inject
  ``+``, ``#``, ``/`` or NUL into a topic (reliability matrix P7).
* Payloads are UTF-8 JSON objects of at most :data:`MAX_PAYLOAD_BYTES` (checked
  before parsing).  NaN/Infinity, duplicate keys, nesting deeper than
  :data:`MAX_DEPTH` and non-objects are rejected.  Every JSON payload carries
  the envelope ``v`` (schema version, 1), ``seq`` (int >= 0, +1 per message
  that one publisher sends on one topic) and ``ts`` (publisher's wall clock,
  UNIX seconds); optionally ``sid`` (publisher session id: a new ``sid``
  restarts the sequence).  Units are in the keys (``power_w``, ``energy_wh``,
  ``soc`` 0..1, ``current_a``, ``ttl_s``); keys that name other units
  (``power_kw``, ``unit``...) are rejected as ``wrong_unit``.
* Sign: load convention, power into the device is positive.
* Group setpoints carry the battery's built-in rule as an explicit
  ``battery_mode: "auto"`` (internally the ``battery_mode`` key,
  ``BATTERY_AUTO``); NaN is never valid, on the wire or inside.  ``null`` in
  ``import_limit_w`` means "no limit", in ``ev_setpoint_w`` "the charger's
  maximum".

Every rejection is a :class:`Reject` with a stable ``reason`` code (counted per
code by the bridge, written to ``bridge.parquet``) and a human-readable
``detail``.  Nothing here raises on bad remote input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cps_sim.core.bus import BATTERY_AUTO, BATTERY_FOLLOW, BusError
from cps_sim.world.populations import SETPOINT_DEFS

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DEPTH = 4
MAX_POWER_W = 1.0e7  # absolute sanity bound on any power on the wire (10 MW)
MAX_CURRENT_A = 1000.0
MAX_TTL_S = 86400.0
DEFAULT_MAX_SKEW_S = 60.0

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# keys that name a unit other than the schema's (P3): rejected, with a hint
WRONG_UNIT_KEYS = {
    "power_kw": "power_w (W)",
    "power_mw": "power_w (W)",
    "energy_kwh": "energy_wh (Wh)",
    "soc_pct": "soc (0..1)",
    "soc_percent": "soc (0..1)",
    "current_ma": "current_a (A)",
    "ttl_ms": "ttl_s (s)",
    "unit": "unit-suffixed keys (power_w, energy_wh)",
    "units": "unit-suffixed keys (power_w, energy_wh)",
    "power": "power_w (W)",
    "p": "power_w (W)",
}

# reason codes (stable: counters, events and bridge.parquet use them)
TOO_LARGE = "too_large"
NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
NAN_OR_INF = "nan_or_inf"
DUPLICATE_KEY = "duplicate_key"
TOO_DEEP = "too_deep"
NOT_OBJECT = "not_object"
BAD_VERSION = "bad_version"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
UNKNOWN_FIELD = "unknown_field"
WRONG_UNIT = "wrong_unit"
BAD_LENGTH = "bad_length"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
RETAINED_COMMAND = "retained_command"
EXPIRED = "expired"
NOT_EXPOSED = "not_exposed"
UNKNOWN_TOPIC = "unknown_topic"
QUEUE_FULL = "queue_full"
IMPLAUSIBLE = "implausible"
REASONS = (
    TOO_LARGE,
    NOT_UTF8,
    NOT_JSON,
    NAN_OR_INF,
    DUPLICATE_KEY,
    TOO_DEEP,
    NOT_OBJECT,
    BAD_VERSION,
    MISSING_FIELD,
    WRONG_TYPE,
    OUT_OF_RANGE,
    UNKNOWN_FIELD,
    WRONG_UNIT,
    BAD_LENGTH,
    DUPLICATE,
    OUT_OF_ORDER,
    RETAINED_COMMAND,
    EXPIRED,
    NOT_EXPOSED,
    UNKNOWN_TOPIC,
    QUEUE_FULL,
    IMPLAUSIBLE,
)


@dataclass(frozen=True)
class Reject:
    """Why a message was not used (``reason`` is one of :data:`REASONS`)."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def validate_id(value: Any, what: str = "id") -> str:
    """Return ``value`` if it is a valid topic level (``[A-Za-z0-9_-]{1,64}``), else raise."""
    if not isinstance(value, str) or not ID_RE.match(value):
        shown = (
            repr(value)
            if not isinstance(value, str) or len(value) <= 80
            else (repr(value[:80]) + f"... ({len(value)} characters)")
        )
        raise BusError(
            f"invalid {what} {shown}: 1 to 64 characters of [A-Za-z0-9_-] "
            "(no '/', '+', '#', spaces or control characters)"
        )
    return value


def validate_prefix(prefix: Any) -> str:
    """A topic prefix: 1 to 8 levels, each a valid id."""
    if not isinstance(prefix, str) or not prefix:
        raise BusError(f"invalid topic prefix {prefix!r}")
    levels = prefix.split("/")
    if len(levels) > 8:
        raise BusError(f"topic prefix {prefix!r} has {len(levels)} levels (at most 8)")
    for lv in levels:
        validate_id(lv, "topic prefix level")
    return prefix


def member_id(group: str, site: int, kind: str) -> str:
    """Device id of a simulated member: ``<group>-<site>-<kind>`` (e.g. ``lab-3-ev``)."""
    return validate_id(f"{group}-{int(site)}-{kind}", "device id")


# ----------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class Topics:
    """The wire topics of one run (``prefix`` is validated)."""

    prefix: str

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    def status(self) -> str:
        return f"{self.prefix}/status"

    def clock(self) -> str:
        return f"{self.prefix}/clock"

    def event(self, kind: str) -> str:
        return f"{self.prefix}/event/{validate_id(kind, 'event kind')}"

    def dev(self, device_id: str, leaf: str) -> str:
        if leaf not in ("telemetry", "setpoint", "state", "availability"):
            raise BusError(f"unknown device topic {leaf!r}")
        return f"{self.prefix}/dev/{validate_id(device_id, 'device id')}/{leaf}"

    def group(self, group: str, leaf: str) -> str:
        if leaf not in ("observation", "setpoint"):
            raise BusError(f"unknown group topic {leaf!r}")
        return f"{self.prefix}/group/{validate_id(group, 'group name')}/{leaf}"

    # --- the internal bus (core.bus.Topics, root "cps") on the wire -------------
    # internal  cps/<group>/setpoints      <->  <prefix>/group/<group>/setpoint
    # internal  cps/<group>/<rest...>      <->  <prefix>/group/<group>/<rest...>
    def from_bus(self, topic_or_pattern: str) -> str:
        levels = topic_or_pattern.split("/")
        if levels[0] == "#":
            return f"{self.prefix}/group/#"
        if levels[0] != "cps" or len(levels) < 2:
            raise BusError(f"bus topic {topic_or_pattern!r} is not under 'cps/'")
        rest = levels[1:]
        if len(rest) >= 2 and rest[1] == "setpoints":
            rest = [rest[0], "setpoint", *rest[2:]]
        if rest == ["#"]:
            return f"{self.prefix}/group/#"
        return "/".join([self.prefix, "group", *rest])

    def to_bus(self, wire_topic: str) -> str | None:
        """The internal bus topic of a wire topic under ``<prefix>/group/``, else None."""
        head = f"{self.prefix}/group/"
        if not wire_topic.startswith(head):
            return None
        rest = wire_topic[len(head) :].split("/")
        if len(rest) < 2 or rest[1] == "observation":
            return None
        if rest[1] == "setpoint":
            rest = [rest[0], "setpoints", *rest[2:]]
        return "/".join(["cps", *rest])

    def parse(self, wire_topic: str) -> tuple[str, str, str] | None:
        """``(area, id, leaf)`` for ``<prefix>/dev/<id>/<leaf>`` and
        ``<prefix>/group/<id>/<leaf>``; ``("status"|"clock", "", "")``; else None."""
        head = self.prefix + "/"
        if not wire_topic.startswith(head):
            return None
        rest = wire_topic[len(head) :].split("/")
        if rest in (["status"], ["clock"]):
            return rest[0], "", ""
        if len(rest) == 3 and rest[0] in ("dev", "group") and ID_RE.match(rest[1]):
            return rest[0], rest[1], rest[2]
        return None


# ----------------------------------------------------------------------------- JSON


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _no_constant(name: str) -> Any:
    raise _Bad(NAN_OR_INF, f"{name} is not a number JSON allows")


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _Bad(NAN_OR_INF, f"number {text[:40]} overflows a float")
    return v


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(DUPLICATE_KEY, f"key {k[:64]!r} appears twice")
        out[k] = v
    return out


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of containers (1 for a flat object), stopping past ``limit``."""
    stack = [(obj, 1)]
    deepest = 0
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values() if isinstance(v, (dict, list)))
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return deepest


def excerpt(payload: bytes, n: int = 100) -> str:
    """First ``n`` bytes, escaped, for logs."""
    head = payload[:n].decode("utf-8", errors="backslashreplace")
    text = head.encode("unicode_escape").decode("ascii")
    return text + ("..." if len(payload) > n else "")


def parse_json(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any] | Reject:
    """Strictly parse one payload into a JSON object (size checked before parsing)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return Reject(WRONG_TYPE, f"payload is {type(payload).__name__}, not bytes")
    payload = bytes(payload)
    if len(payload) > max_bytes:
        return Reject(TOO_LARGE, f"{len(payload):,} bytes > limit {max_bytes:,}")
    if not payload:
        return Reject(NOT_JSON, "empty payload")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reject(NOT_UTF8, f"byte 0x{payload[exc.start]:02x} at offset {exc.start}")
    try:
        obj = json.loads(
            text, parse_constant=_no_constant, parse_float=_float, object_pairs_hook=_pairs
        )
    except _Bad as bad:
        return Reject(bad.reason, bad.detail)
    except RecursionError:
        return Reject(TOO_DEEP, "nesting too deep to parse")
    except (json.JSONDecodeError, ValueError) as exc:
        return Reject(NOT_JSON, str(exc)[:200])
    if not isinstance(obj, dict):
        return Reject(NOT_OBJECT, f"top level is a JSON {type(obj).__name__}, not an object")
    if _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        return Reject(TOO_DEEP, f"nesting deeper than {MAX_DEPTH}")
    return obj


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact JSON; refuses NaN/inf (a publisher bug, never sent)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------- envelope


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Envelope:
    v: int
    seq: int
    ts: float
    sid: str | None = None
    sim_time_s: float | None = None


ENVELOPE_KEYS = ("v", "seq", "ts", "sid", "sim_time_s")


def check_envelope(obj: Mapping[str, Any]) -> Envelope | Reject:
    for key in ("v", "seq", "ts"):
        if key not in obj:
            return Reject(MISSING_FIELD, f"envelope field {key!r} missing")
    v, seq, ts = obj["v"], obj["seq"], obj["ts"]
    if not _is_int(v):
        return Reject(WRONG_TYPE, f"v must be an integer, got {type(v).__name__}")
    if v != SCHEMA_VERSION:
        return Reject(BAD_VERSION, f"schema version {v}, this bridge speaks {SCHEMA_VERSION}")
    if not _is_int(seq):
        return Reject(WRONG_TYPE, f"seq must be an integer, got {type(seq).__name__}")
    if not 0 <= seq < 2**63:
        return Reject(OUT_OF_RANGE, f"seq {seq} outside 0..2^63-1")
    if not _is_num(ts):
        return Reject(WRONG_TYPE, f"ts must be a number (UNIX seconds), got {type(ts).__name__}")
    if not 0 < ts < 1e11:
        return Reject(OUT_OF_RANGE, f"ts {ts} is not UNIX seconds")
    sid = obj.get("sid")
    if sid is not None and (not isinstance(sid, str) or not ID_RE.match(sid)):
        return Reject(WRONG_TYPE, "sid must be 1-64 characters of [A-Za-z0-9_-]")
    sim = obj.get("sim_time_s")
    if sim is not None and not _is_num(sim):
        return Reject(WRONG_TYPE, "sim_time_s must be a number")
    return Envelope(int(v), int(seq), float(ts), sid, None if sim is None else float(sim))


def wrong_unit(obj: Mapping[str, Any]) -> Reject | None:
    for key, use in WRONG_UNIT_KEYS.items():
        if key in obj:
            return Reject(WRONG_UNIT, f"key {key!r}: units are in the keys, use {use}")
    return None


@dataclass
class StreamState:
    seq: int
    ts: float
    sid: str | None


@dataclass
class StreamTracker:
    """Sequence checks per stream (one publisher on one topic): duplicates (T9),
    out-of-order (T10), gaps (T6: messages the broker dropped), restarts.

    A message whose ``sid`` differs from the last one starts a new session.
    Without ``sid``, a lower ``seq`` with a newer ``ts`` is a publisher restart
    (accepted); a lower or equal ``seq`` otherwise is out of order or a duplicate.
    """

    gaps: int = 0  # times a gap was seen
    missing: int = 0  # messages missing in those gaps
    restarts: int = 0
    streams: dict[str, StreamState] = field(default_factory=dict)

    def check(self, stream: str, env: Envelope) -> Reject | int:
        """Reject, or the number of messages missing before this one (0 normally)."""
        last = self.streams.get(stream)
        if last is None or (env.sid is not None and env.sid != last.sid):
            if last is not None:
                self.restarts += 1
            self.streams[stream] = StreamState(env.seq, env.ts, env.sid)
            return 0
        if env.seq == last.seq:
            return Reject(DUPLICATE, f"seq {env.seq} already received")
        if env.seq < last.seq:
            if env.ts > last.ts and env.sid is None:
                self.restarts += 1
                self.streams[stream] = StreamState(env.seq, env.ts, env.sid)
                return 0
            return Reject(OUT_OF_ORDER, f"seq {env.seq} after {last.seq}")
        missing = env.seq - last.seq - 1
        if missing:
            self.gaps += 1
            self.missing += missing
        self.streams[stream] = StreamState(env.seq, env.ts, env.sid)
        return missing


# ----------------------------------------------------------------------------- devices

TELEMETRY_FIELDS: dict[str, tuple[str, float, float]] = {
    # key: (type, min, max); type "num" | "bool" | "str"
    "power_w": ("num", -MAX_POWER_W, MAX_POWER_W),
    "energy_wh": ("num", -1e12, 1e12),
    "energy_in_wh": ("num", 0.0, 1e12),
    "energy_out_wh": ("num", 0.0, 1e12),
    "soc": ("num", 0.0, 1.0),
    "current_a": ("num", -MAX_CURRENT_A, MAX_CURRENT_A),
    "voltage_v": ("num", 0.0, 1e5),
    "temperature_c": ("num", -100.0, 300.0),
    "plugged": ("bool", 0, 0),
    "on": ("bool", 0, 0),
    "status": ("str", 0, 64),
}
# device state (``<prefix>/dev/<id>/state``): the ack of a setpoint and the device's mode
STATE_FIELDS: dict[str, tuple[str, float, float]] = {
    "setpoint_seq": ("int", 0, 2**63 - 1),
    "setpoint_power_w": ("num", -MAX_POWER_W, MAX_POWER_W),
    "setpoint_current_a": ("num", 0.0, MAX_CURRENT_A),
    "current_limit_a": ("num", 0.0, MAX_CURRENT_A),
    "session_energy_wh": ("num", 0.0, 1e12),
    "mode": ("str", 0, 32),
    "fallback": ("bool", 0, 0),
    "reason": ("str", 0, 200),
    "on": ("bool", 0, 0),
}
SETPOINT_CONTROLS = ("power_w", "current_a", "on", "mode")
SETPOINT_MODES = ("auto",)


@dataclass(frozen=True)
class Measurement:
    """A decoded device message (telemetry or state) in canonical signals."""

    role: str  # "telemetry" | "state"
    signals: dict[str, float | bool | str]
    envelope: Envelope
    unknown_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setpoint:
    """One command to one device (exactly one control: power_w, current_a, on or mode)."""

    ttl_s: float
    power_w: float | None = None
    current_a: float | None = None
    on: bool | None = None
    mode: str | None = None  # "auto": the device's own built-in behaviour

    def to_json(
        self, seq: int, ts: float, sid: str | None = None, sim_time_s: float | None = None
    ) -> bytes:
        body: dict[str, Any] = {"v": SCHEMA_VERSION, "seq": int(seq), "ts": float(ts)}
        if sid is not None:
            body["sid"] = sid
        if sim_time_s is not None:
            body["sim_time_s"] = float(sim_time_s)
        body["ttl_s"] = float(self.ttl_s)
        for key in SETPOINT_CONTROLS:
            val = getattr(self, key)
            if val is not None:
                body[key] = val
        return dumps(body)


def _check_field(key: str, value: Any, kind: str, lo: float, hi: float) -> Reject | None:
    if kind == "num":
        if not _is_num(value):
            return Reject(WRONG_TYPE, f"{key} must be a number, got {type(value).__name__}")
        if not lo <= value <= hi:
            return Reject(OUT_OF_RANGE, f"{key} = {value} outside [{lo:g}, {hi:g}]")
    elif kind == "int":
        if not _is_int(value):
            return Reject(WRONG_TYPE, f"{key} must be an integer, got {type(value).__name__}")
        if not lo <= value <= hi:
            return Reject(OUT_OF_RANGE, f"{key} = {value} outside [{lo:g}, {hi:g}]")
    elif kind == "bool":
        if not isinstance(value, bool):
            return Reject(WRONG_TYPE, f"{key} must be true/false, got {type(value).__name__}")
    elif kind == "str" and (not isinstance(value, str) or len(value) > hi):
        return Reject(WRONG_TYPE, f"{key} must be a string of at most {int(hi)} characters")
    return None


def decode_measurement(payload: bytes, role: str = "telemetry") -> Measurement | Reject:
    """Telemetry (``power_w`` required) or state: known keys checked, unknown tolerated.

    Telemetry keys: :data:`TELEMETRY_FIELDS`; state keys: :data:`STATE_FIELDS` (and the
    telemetry keys, which a state message may repeat)."""
    obj = parse_json(payload)
    if isinstance(obj, Reject):
        return obj
    env = check_envelope(obj)
    if isinstance(env, Reject):
        return env
    bad = wrong_unit(obj)
    if bad is not None:
        return bad
    if role == "telemetry" and "power_w" not in obj:
        return Reject(MISSING_FIELD, "telemetry needs power_w")
    signals: dict[str, float | bool | str] = {}
    unknown = []
    for key, value in obj.items():
        if key in ENVELOPE_KEYS:
            continue
        spec = TELEMETRY_FIELDS.get(key)
        if role == "state":
            spec = STATE_FIELDS.get(key, spec)
        if spec is None:
            unknown.append(key[:64])
            continue
        problem = _check_field(key, value, *spec)
        if problem is not None:
            return problem
        signals[key] = (
            float(value) if spec[0] == "num" else (int(value) if spec[0] == "int" else value)
        )
    return Measurement(role, signals, env, tuple(unknown))


def decode_setpoint(payload: bytes) -> tuple[Setpoint, Envelope] | Reject:
    """A per-device setpoint: ``ttl_s`` and exactly one control; unknown keys rejected."""
    obj = parse_json(payload)
    if isinstance(obj, Reject):
        return obj
    env = check_envelope(obj)
    if isinstance(env, Reject):
        return env
    sp = decode_setpoint_obj(obj)
    return sp if isinstance(sp, Reject) else (sp, env)


def decode_setpoint_obj(obj: Mapping[str, Any]) -> Setpoint | Reject:
    """:func:`decode_setpoint` of a parsed object whose envelope was checked."""
    bad = wrong_unit(obj)
    if bad is not None:
        return bad
    extra = sorted(set(obj) - set(ENVELOPE_KEYS) - {"ttl_s", *SETPOINT_CONTROLS})
    if extra:
        return Reject(
            UNKNOWN_FIELD,
            f"unknown keys {extra[:5]} (setpoints accept ttl_s and "
            f"one of {list(SETPOINT_CONTROLS)})",
        )
    if "ttl_s" not in obj:
        return Reject(MISSING_FIELD, "setpoint needs ttl_s")
    ttl = obj["ttl_s"]
    if not _is_num(ttl) or not 0 < ttl <= MAX_TTL_S:
        return Reject(
            OUT_OF_RANGE if _is_num(ttl) else WRONG_TYPE,
            f"ttl_s must be a number in (0, {MAX_TTL_S:g}]",
        )
    controls = [k for k in SETPOINT_CONTROLS if k in obj]
    if len(controls) != 1:
        return Reject(
            MISSING_FIELD if not controls else UNKNOWN_FIELD,
            f"exactly one of {list(SETPOINT_CONTROLS)} expected, got {controls}",
        )
    key = controls[0]
    value = obj[key]
    if key == "power_w":
        problem = _check_field(key, value, "num", -MAX_POWER_W, MAX_POWER_W)
    elif key == "current_a":
        problem = _check_field(key, value, "num", 0.0, MAX_CURRENT_A)
    elif key == "on":
        problem = _check_field(key, value, "bool", 0, 0)
    else:
        problem = (
            None
            if value in SETPOINT_MODES
            else Reject(
                OUT_OF_RANGE, f"mode must be one of {list(SETPOINT_MODES)}, got {str(value)[:40]!r}"
            )
        )
    if problem is not None:
        return problem
    val = float(value) if key in ("power_w", "current_a") else value
    return Setpoint(ttl_s=float(ttl), **{key: val})


def decode_availability(payload: bytes) -> bool | Reject:
    """``online`` -> True, ``offline`` -> False (plain strings, as Home Assistant expects)."""
    if payload == b"online":
        return True
    if payload == b"offline":
        return False
    return Reject(
        OUT_OF_RANGE,
        f"availability must be 'online' or 'offline', got {excerpt(bytes(payload), 40)!r}",
    )


# ----------------------------------------------------------------------------- group arrays

# The group setpoint keys are the engine's (every key a registered device population or
# the grid connection accepts, world.populations.SETPOINT_DEFS): arrays of numbers, and
# the mode keys (a key with a fixed set of values), which go on the wire as strings.
MODE_KEYS = tuple(k for k, (_, sk) in SETPOINT_DEFS.items() if sk.choices is not None)
GROUP_SETPOINT_KEYS = tuple(k for k in SETPOINT_DEFS if k not in MODE_KEYS)
# every mode is "follow the setpoint" (0) or "the device's own rule" (1), like battery_mode
MODE_CODE = {"auto": BATTERY_AUTO, "setpoint": BATTERY_FOLLOW}
BATTERY_MODES = ("auto", "setpoint")
# the setpoint each mode selects (battery_mode -> battery_setpoint_w), and back
MODE_TARGET = {k: k.replace("_mode", "_setpoint_w") for k in MODE_KEYS}
MODE_OF = {sp: k for k, sp in MODE_TARGET.items()}
for _mode, _sp in MODE_TARGET.items():
    assert set(SETPOINT_DEFS[_mode][1].choices or ()) == set(MODE_CODE.values()), _mode
    assert _sp in GROUP_SETPOINT_KEYS, _mode
LIMIT_KEYS = ("import_limit_w", "export_limit_w")  # >= 0, null = no limit
NULLABLE_KEYS = (*LIMIT_KEYS, "ev_setpoint_w")  # null = +inf (no limit / as much as allowed)
MAX_SHIFT_K = 20.0  # bound on a temperature shift on the wire [K]


def _value_range(key: str) -> tuple[float, float, str]:
    """(lowest, highest, unit) a group setpoint key accepts on the wire: the key's own
    lower bound (SetpointKey.min_w), else the sanity bound of its unit."""
    unit = "K" if key.endswith("_k") else "W"
    bound = MAX_SHIFT_K if unit == "K" else MAX_POWER_W
    low = SETPOINT_DEFS[key][1].min_w
    return (-bound if low is None else float(low)), bound, unit


def _array_to_json(key: str, arr: np.ndarray) -> list[Any]:
    """One internal setpoint array on the wire (NaN never; +inf limits -> ``null``)."""
    a = np.asarray(arr, dtype=float)
    if np.isnan(a).any():
        raise BusError(f"{key}: NaN is not a valid setpoint")
    if key in MODE_KEYS:
        if not np.isin(a, (BATTERY_AUTO, BATTERY_FOLLOW)).all():
            raise BusError(f"{key} values must be 1 (auto) or 0 (follow the setpoint)")
        return ["auto" if x == BATTERY_AUTO else "setpoint" for x in a.tolist()]
    if key in NULLABLE_KEYS:
        if (a == -np.inf).any():
            raise BusError(f"{key}: -inf is not a valid setpoint")
        return [None if math.isinf(x) else x for x in a.tolist()]
    if np.isinf(a).any():
        raise BusError(f"{key}: infinite values cannot be sent")
    return a.tolist()


def encode_bus_payload(payload: Mapping[str, Any], env: Envelope) -> bytes:
    """An internal bus payload (``core.bus.validate_payload`` output) as wire JSON.

    Setpoint arrays follow the group-setpoint rules (``battery_mode`` codes ->
    ``"auto"`` / ``"setpoint"``, infinite limits -> ``null``); other arrays must be
    finite, other floats finite.  Raises :class:`BusError` on what cannot be sent.
    """
    body: dict[str, Any] = {"v": env.v, "seq": env.seq, "ts": env.ts}
    if env.sid is not None:
        body["sid"] = env.sid
    if env.sim_time_s is not None:
        body["sim_time_s"] = env.sim_time_s
    for key, value in payload.items():
        if key in ENVELOPE_KEYS:
            raise BusError(f"payload key {key!r} is reserved by the wire schema")
        if isinstance(value, np.ndarray):
            body[key] = _array_to_json(key, value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise BusError(f"payload[{key!r}] = {value}: only finite numbers can be sent")
        else:
            body[key] = value
    return dumps(body)


def decode_group_setpoint(
    obj: Mapping[str, Any],
    sizes: Mapping[str, int] | None = None,
) -> dict[str, Any] | Reject:
    """A group setpoint object (envelope already checked) -> internal bus payload.

    ``sizes`` (expected array length per key) rejects wrong lengths as
    ``bad_length``; unknown keys are rejected.  Internal form: float arrays,
    ``battery_mode`` as codes (``BATTERY_AUTO`` / ``BATTERY_FOLLOW``), ``null``
    limits -> inf, plus ``ttl_s`` when given.
    """
    bad = wrong_unit(obj)
    if bad is not None:
        return bad
    extra = sorted(set(obj) - set(ENVELOPE_KEYS) - {"ttl_s", *MODE_KEYS, *GROUP_SETPOINT_KEYS})
    if extra:
        return Reject(
            UNKNOWN_FIELD,
            f"unknown keys {[k[:64] for k in extra[:5]]} (group "
            f"setpoints accept ttl_s, {', '.join((*GROUP_SETPOINT_KEYS, *MODE_KEYS))})",
        )
    out: dict[str, Any] = {}
    if "ttl_s" in obj:
        ttl = obj["ttl_s"]
        if not _is_num(ttl) or not 0 < ttl <= MAX_TTL_S:
            return Reject(
                OUT_OF_RANGE if _is_num(ttl) else WRONG_TYPE,
                f"ttl_s must be a number in (0, {MAX_TTL_S:g}]",
            )
        out["ttl_s"] = float(ttl)
    keys = [k for k in GROUP_SETPOINT_KEYS if k in obj]
    if not keys and not any(m in obj for m in MODE_KEYS):
        return Reject(MISSING_FIELD, f"no setpoint key among {[*GROUP_SETPOINT_KEYS, *MODE_KEYS]}")
    for key in keys:
        arr = obj[key]
        if not isinstance(arr, list):
            return Reject(WRONG_TYPE, f"{key} must be an array, got {type(arr).__name__}")
        if sizes is not None and key in sizes and len(arr) != sizes[key]:
            return Reject(BAD_LENGTH, f"{key}: {len(arr)} values, the group has {sizes[key]}")
        nullable = key in NULLABLE_KEYS
        low, high, unit = _value_range(key)
        vals = np.empty(len(arr))
        for i, x in enumerate(arr):
            if x is None and nullable:
                vals[i] = np.inf
            elif not _is_num(x):
                mode = MODE_OF.get(key)
                hint = (
                    f" ({mode} 'auto' selects the device's own rule)"
                    if (x is None and mode is not None)
                    else ""
                )
                return Reject(
                    WRONG_TYPE, f"{key}[{i}] must be a number, got {type(x).__name__}{hint}"
                )
            elif not -high <= x <= high:
                return Reject(OUT_OF_RANGE, f"{key}[{i}] = {x} outside ±{high:g} {unit}")
            else:
                vals[i] = x
        if (vals < low).any():
            null = " (null = no limit)" if key in LIMIT_KEYS else ""
            return Reject(OUT_OF_RANGE, f"{key} must be >= {low:g}{null}")
        out[key] = vals
    for mode_key in MODE_KEYS:
        if mode_key in obj:
            codes = _decode_mode(obj[mode_key], mode_key, out, sizes)
            if isinstance(codes, Reject):
                return codes
            out[mode_key] = codes
    return out


def _decode_mode(
    mode: Any, key: str, out: Mapping[str, Any], sizes: Mapping[str, int] | None
) -> np.ndarray | Reject:
    """One mode key (``battery_mode``, ``hpwh_mode``): a string for every site or an
    array of strings, ``"setpoint"`` (follow the key's setpoint) or ``"auto"``."""
    target = MODE_TARGET[key]
    n = (sizes or {}).get(target)
    if isinstance(mode, str):
        if mode not in BATTERY_MODES:
            return Reject(OUT_OF_RANGE, f"{key} must be one of {list(BATTERY_MODES)}")
        if n is None:
            n = len(out[target]) if target in out else None
        if n is None:
            return Reject(
                MISSING_FIELD,
                f"a scalar {key} needs {target} or a known group size",
            )
        modes = [mode] * n
    elif isinstance(mode, list):
        if n is not None and len(mode) != n:
            return Reject(BAD_LENGTH, f"{key}: {len(mode)} values, the group has {n}")
        if any(m not in BATTERY_MODES for m in mode):
            return Reject(OUT_OF_RANGE, f"{key} entries must be one of {list(BATTERY_MODES)}")
        modes = mode
    else:
        return Reject(WRONG_TYPE, f"{key} must be a string or an array of strings")
    codes = np.array([MODE_CODE[m] for m in modes], dtype=float)
    sp = out.get(target)
    if sp is None:
        if (codes != BATTERY_AUTO).any():
            return Reject(MISSING_FIELD, f"{key} 'setpoint' needs {target}")
    elif sp.shape[0] != codes.shape[0]:
        return Reject(BAD_LENGTH, f"{key} and {target} differ in length")
    return codes


def observation_json(obs: Any, group: str, env: Envelope, sim_iso: str) -> bytes:
    """A group's Observation on ``<prefix>/group/<group>/observation``.

    Every array of the observation, as lists; non-finite values (no import limit,
    unknown departure) as ``null``.  ``ev_plugged`` as booleans, ``ev_site`` as ints.
    """
    body: dict[str, Any] = {"v": env.v, "seq": env.seq, "ts": env.ts}
    if env.sid is not None:
        body["sid"] = env.sid
    body.update(
        sim_time_s=float(obs.now_s),
        sim_iso=sim_iso,
        group=group,
        tick_s=float(obs.tick_s),
        n_sites=obs.n_sites,
        n_evs=obs.n_evs,
    )
    # the fixed fields, then the arrays of the group's other device families (hpwh_*,
    # hvac_*: Observation.extra), by name
    extra = getattr(obs, "extra", None) or {}
    more = sorted(k for k, v in extra.items() if isinstance(v, np.ndarray) and k not in body)
    for name in (*OBSERVATION_ARRAYS, *more):
        arr = getattr(obs, name, None) if name in OBSERVATION_ARRAYS else extra[name]
        if arr is None:
            continue
        a = np.asarray(arr)
        if a.dtype.kind == "b":
            body[name] = a.tolist()
        elif a.dtype.kind in "iu":
            body[name] = a.astype(np.int64).tolist()
        else:
            body[name] = [x if math.isfinite(x) else None for x in a.astype(float).tolist()]
    return dumps(body)


OBSERVATION_ARRAYS = (
    "site_load_w",
    "site_pv_w",
    "site_import_limit_w",
    "battery_energy_wh",
    "battery_capacity_wh",
    "battery_power_w",
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
    "import_price_jpy_per_kwh",
    "export_price_jpy_per_kwh",
    "deferrable_max_w",
    "deferrable_remaining_wh",
    "deferrable_deadline_s",
    "site_export_limit_w",
    "ev_energy_max_wh",
    "ev_charge_efficiency",
)


def decode_bus_payload(obj: Mapping[str, Any]) -> dict[str, Any] | Reject:
    """A non-setpoint internal bus message (events, reports) from wire JSON.

    Numbers, booleans and strings stay scalars; arrays of numbers become float
    arrays (``null`` -> NaN); anything else is rejected.
    """
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ENVELOPE_KEYS:
            continue
        if not ID_RE.match(key):
            return Reject(WRONG_TYPE, f"key {key[:64]!r} is not [A-Za-z0-9_-]{{1,64}}")
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, list):
            if not all(x is None or _is_num(x) for x in value):
                return Reject(WRONG_TYPE, f"{key} must be an array of numbers")
            out[key] = np.array([np.nan if x is None else x for x in value], dtype=float)
        else:
            return Reject(WRONG_TYPE, f"{key}: {type(value).__name__} not allowed")
    return out
