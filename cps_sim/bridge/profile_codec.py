"""Message codec behind :mod:`cps_sim.bridge.profiles`: results, values, templates, decoding.

Converts between vendor payloads and canonical signals using the checked specs
of :mod:`cps_sim.bridge.profile_spec`.  Decoding never raises on bad input: it
returns :class:`Reject` with the topic, the path in the payload and the problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cps_sim.bridge import schema as S
from cps_sim.bridge.profile_spec import (
    SETPOINT_SIGNALS,
    AvailabilitySpec,
    FieldSpec,
    MessageSpec,
    Rated,
)
from cps_sim.bridge.schema import Reject
from cps_sim.core.errors import BridgeError

MAX_PAYLOAD_BYTES = 64 * 1024
PLAUSIBLE_POWER_FACTOR = 10.0  # |power| above 10 x rating: a unit mix-up (W vs kW), rejected


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Measurement:
    """Signals decoded from one message (role telemetry, state or availability)."""

    role: str
    signals: dict[str, Any]
    topic: str = ""
    device_topic: str | None = None
    ts: float | None = None  # publisher's wall clock, if the payload carries one
    seq: int | None = None
    tolerated_keys: tuple[str, ...] = ()  # unknown keys seen (telemetry tolerates them)
    envelope: S.Envelope | None = None  # schema v1 messages: v, seq, ts, sid, sim_time_s


@dataclass(frozen=True)
class Ignored:
    """A well-formed message that carries none of the profile's signals."""

    reason: str
    topic: str = ""


@dataclass(frozen=True)
class Setpoint:
    """What a controller asks of one device (load convention; None = not set)."""

    power_w: float | None = None
    current_a: float | None = None  # EV charging-current limit
    on: bool | None = None
    mode: str | None = None  # "auto" = the device's own rule
    ttl_s: float | None = None
    seq: int | None = None
    ts: float | None = None
    src: str | None = None

    def given(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SETPOINT_SIGNALS if getattr(self, k) is not None}


Outgoing = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


# --------------------------------------------------------------------------- values
class _Bad(Exception):
    """Internal: a value that cannot be decoded (message -> Reject with a schema code)."""

    def __init__(self, message: str, code: str = S.WRONG_TYPE):
        super().__init__(message)
        self.code = code


def _norm_key(x: Any) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _to_canonical(spec: FieldSpec, value: Any, where: str, rated: Rated, text: bool = False) -> Any:
    """Vendor value -> canonical value; ``text``: the value is a plain-text payload."""
    sig = spec.sig
    if spec.mapping:
        key = _norm_key(value)
        for vendor, canonical in spec.mapping:
            if _norm_key(vendor) == key:
                return canonical
        raise _Bad(
            f"{where}: {value!r} is not one of {[v for v, _ in spec.mapping]}", S.OUT_OF_RANGE
        )
    if sig.type == "bool":
        if isinstance(value, bool):
            return value
        if text and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _Bad(f"{where}: expected true/false, got {value!r}")
    if sig.type == "str":
        if not isinstance(value, str) or len(value) > 256:
            raise _Bad(f"{where}: expected a string (<= 256 chars), got {str(value)[:40]!r}")
        return value
    if text:
        try:
            value = float(value.strip())
        except ValueError:
            raise _Bad(f"{where}: not a number: {value[:40]!r}") from None
    if not is_number(value):
        raise _Bad(f"{where}: expected a number, got {type(value).__name__} {str(value)[:40]}")
    if not math.isfinite(value):
        raise _Bad(f"{where}: not a finite number ({value})", S.NAN_OR_INF)
    if sig.type == "int":
        if float(value) != int(value):
            raise _Bad(f"{where}: expected an integer, got {value}")
        out: Any = int(value)
        if out < 0:
            raise _Bad(f"{where}: must be >= 0, got {out}", S.OUT_OF_RANGE)
        return out
    out = float(value) * spec.factor * spec.sign
    name = spec.signal
    if name == "soc" and not -1e-9 <= out <= 1 + 1e-9:
        raise _Bad(f"{where}: soc {out:g} outside [0, 1] (implausible)", S.IMPLAUSIBLE)
    if name in ("energy_in_wh", "energy_out_wh", "session_energy_wh") and out < 0:
        raise _Bad(f"{where}: {name} must be >= 0, got {out:g}", S.OUT_OF_RANGE)
    if name == "power_w":
        bound = max(abs(rated.power_w_min), abs(rated.power_w_max))
        if math.isfinite(bound) and bound > 0 and abs(out) > PLAUSIBLE_POWER_FACTOR * bound:
            raise _Bad(
                f"{where}: |power_w| {abs(out):g} W > {PLAUSIBLE_POWER_FACTOR:g} x the "
                f"rating {bound:g} W (wrong unit?)",
                S.IMPLAUSIBLE,
            )
    return out


def to_vendor(spec: FieldSpec, value: Any) -> Any:
    if spec.mapping:
        for vendor, canonical in spec.mapping:
            if canonical is not None and canonical == value and type(canonical) is type(value):
                return vendor
        raise BridgeError(
            f"signal {spec.signal}: value {value!r} has no vendor value in {dict(spec.mapping)}"
        )
    if spec.sig.type in ("bool", "str"):
        return value
    if spec.sig.type == "int":
        return int(value)
    v = float(value) / spec.factor * spec.sign
    if not math.isfinite(v):
        raise BridgeError(f"signal {spec.signal}: {value!r} is not finite")
    if spec.round is not None:
        v = round(v, spec.round)
        if spec.round == 0:
            return int(v)
    return v + 0.0  # no "-0.0" on the wire


def raw_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


# --------------------------------------------------------------------------- templates
def fill_template(
    node: Any, values: Mapping[str, Any], subst: Mapping[str, str]
) -> tuple[Any, bool]:
    """Encode a template: (payload, whether it holds any value); missing signals omitted."""
    if isinstance(node, FieldSpec):
        if node.signal in values and values[node.signal] is not None:
            return to_vendor(node, values[node.signal]), True
        if node.has_default:
            return node.default, False
        return _MISSING, False
    if isinstance(node, dict):
        out = {}
        any_value = False
        for k, sub in node.items():
            v, got = fill_template(sub, values, subst)
            if v is not _MISSING:
                out[k] = v
            any_value |= got
        if node and not out:
            return _MISSING, False  # an object of signals none of which is given
        return out, any_value
    if isinstance(node, list):
        items = [fill_template(sub, values, subst) for sub in node]
        return [0 if v is _MISSING else v for v, _ in items], any(g for _, g in items)
    if isinstance(node, str) and "{" in node:
        return subst_vars(node, subst), False
    return node, False


_MISSING = object()


def subst_vars(text: str, subst: Mapping[str, str]) -> str:
    for k, v in subst.items():
        text = text.replace("{" + k + "}", v)
    return text


def _walk(
    node: Any, value: Any, where: str, out: dict[str, Any], rated: Rated, strict: bool
) -> None:
    if isinstance(node, FieldSpec):
        v = _to_canonical(node, value, where or "payload", rated)
        if v is not None:
            out[node.signal] = v
        return
    if isinstance(node, dict):
        if not isinstance(value, dict):
            raise _Bad(
                f"{where or 'payload'}: expected a JSON object, got {type(value).__name__}",
                S.NOT_OBJECT,
            )
        if strict:
            extra = sorted(set(value) - set(node))
            if extra:
                raise _Bad(f"{where or 'payload'}: unknown key(s) {extra[:5]}", S.UNKNOWN_FIELD)
        for k, sub in node.items():
            if k in value:
                _walk(sub, value[k], f"{where}.{k}" if where else k, out, rated, strict)
        return
    if isinstance(node, list):
        if not isinstance(value, list):
            raise _Bad(f"{where or 'payload'}: expected a JSON array, got {type(value).__name__}")
        for i, sub in enumerate(node):
            if i < len(value):
                _walk(sub, value[i], f"{where}[{i}]", out, rated, strict)


def _unknown_keys(node: Any, value: Any, where: str, found: list[str]) -> None:
    if isinstance(node, dict) and isinstance(value, dict):
        for k, v in value.items():
            path = f"{where}.{k}" if where else k
            if k not in node:
                found.append(path)
            else:
                _unknown_keys(node[k], v, path, found)


def _get(value: Any, path: tuple[str | int, ...]) -> Any:
    for p in path:
        if isinstance(p, int) and isinstance(value, list) and -len(value) <= p < len(value):
            value = value[p]
        elif isinstance(value, dict) and str(p) in value:
            value = value[str(p)]
        else:
            return _MISSING
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _json_code(exc: ValueError) -> str:
    text = str(exc)
    if "is not valid JSON" in text:
        return S.NAN_OR_INF
    if "duplicate key" in text:
        return S.DUPLICATE_KEY
    if "not parsed" in text:
        return S.TOO_LARGE
    return S.NOT_JSON


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(payload: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, <= 64 KiB (ValueError)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES} (not parsed)")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    text = payload.decode("utf-8")
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=pairs)


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def _preview(payload: bytes) -> str:
    return repr(payload[:100])[2:-1]


# --------------------------------------------------------------------------- topics
def topic_regex(template: str) -> re.Pattern[str]:
    parts = []
    for level in template.split("/"):
        if level == "{t}":
            parts.append("(?P<t>.+?)")
        elif level == "{t4}":
            parts.append("(?P<t4>[^/]+)")
        else:
            parts.append(re.escape(level))
    return re.compile("^" + "/".join(parts) + "$")


def device_subst(device_topic: str) -> dict[str, str]:
    return {"t": device_topic, "t4": device_topic[-4:]}


def check_device_topic(device_topic: str) -> str:
    if (
        not isinstance(device_topic, str)
        or not device_topic
        or len(device_topic) > 256
        or any(c in device_topic for c in "+#\0")
        or device_topic.startswith("/")
        or device_topic.endswith("/")
        or "//" in device_topic
    ):
        raise BridgeError(
            f"invalid device topic {device_topic!r}: no wildcards (+ #), NUL, "
            "empty levels or leading/trailing '/'"
        )
    return device_topic


def set_path(body: Any, path: tuple[str | int, ...], value: Any) -> None:
    node = body
    for p in path[:-1]:
        node = node[p] if isinstance(node, list) else node.setdefault(str(p), {})
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[str(last)] = value


def _v1_reject(r: Reject, topic: str) -> Reject:
    return Reject(r.reason, f"{topic}: {r.detail}")


def decode_v1(
    spec: MessageSpec | AvailabilitySpec,
    topic: str,
    payload: bytes,
    rated: Rated,
    device_topic: str | None,
) -> Measurement | Reject | Ignored:
    """Schema v1 (generic profile): the rules of :mod:`cps_sim.bridge.schema` decide; the
    profile's template adds the signals that module leaves to the tolerated keys."""
    if isinstance(spec, AvailabilitySpec):
        a = S.decode_availability(payload)
        if isinstance(a, Reject):
            return _v1_reject(a, topic)
        return Measurement("availability", {"available": a}, topic, device_topic)
    m = S.decode_measurement(payload, spec.role)
    if isinstance(m, Reject):
        return _v1_reject(m, topic)
    extra = _decode_with(spec, topic, payload, rated, device_topic)
    if isinstance(extra, Reject):
        return extra
    signals: dict[str, Any] = dict(m.signals)
    if isinstance(extra, Measurement):
        for k, v in extra.signals.items():
            signals.setdefault(k, v)
    tolerated = tuple(k for k in m.unknown_keys if k not in spec.signals)
    env = m.envelope
    return Measurement(spec.role, signals, topic, device_topic, env.ts, env.seq, tolerated, env)


def decode_command_v1(topic: str, payload: bytes) -> Setpoint | Reject:
    r = S.decode_setpoint(payload)
    if isinstance(r, Reject):
        return _v1_reject(r, topic)
    sp, env = r
    return Setpoint(
        power_w=sp.power_w,
        current_a=sp.current_a,
        on=sp.on,
        mode=sp.mode,
        ttl_s=sp.ttl_s,
        seq=env.seq,
        ts=env.ts,
    )


def as_setpoint(sp: Any) -> Setpoint:
    """A :class:`Setpoint` from ours or from :class:`cps_sim.bridge.schema.Setpoint`."""
    if isinstance(sp, Setpoint):
        return sp
    return Setpoint(
        power_w=getattr(sp, "power_w", None),
        current_a=getattr(sp, "current_a", None),
        on=getattr(sp, "on", None),
        mode=getattr(sp, "mode", None),
        ttl_s=getattr(sp, "ttl_s", None),
        seq=getattr(sp, "seq", None),
        ts=getattr(sp, "ts", None),
    )


def decode_many(
    specs: list[MessageSpec | AvailabilitySpec],
    topic: str,
    payload: bytes,
    rated: Rated,
    device_topic: str | None,
    v1: bool = False,
) -> Measurement | Reject | Ignored:
    """Decode with every spec of a topic and merge (one vendor value, several signals)."""
    if v1:
        return decode_v1(specs[0], topic, payload, rated, device_topic)
    if len(specs) == 1:
        return _decode_with(specs[0], topic, payload, rated, device_topic)
    results = [_decode_with(sp, topic, payload, rated, device_topic) for sp in specs]
    for r in results:
        if isinstance(r, Reject):
            return r
    found = [r for r in results if isinstance(r, Measurement)]
    if not found:
        return results[0]
    merged: dict[str, Any] = {}
    for r in found:
        merged.update(r.signals)
    first = found[0]
    return replace(first, signals=merged)


def _decode_with(
    spec: MessageSpec | AvailabilitySpec,
    topic: str,
    payload: bytes,
    rated: Rated,
    device_topic: str | None,
) -> Measurement | Reject | Ignored:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(
            S.TOO_LARGE,
            f"{topic}: payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES} (not parsed)",
        )
    if isinstance(spec, AvailabilitySpec):
        return _decode_availability(spec, topic, payload, device_topic)
    try:
        if spec.raw is not None:
            try:
                text = payload.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise _Bad(f"not UTF-8: {_preview(payload)}", S.NOT_UTF8) from None
            if not text:
                raise _Bad("empty payload")
            v = _to_canonical(spec.raw, text, "payload", rated, text=True)
            signals = {} if v is None else {spec.raw.signal: v}
            tolerated: list[str] = []
        else:
            try:
                doc = parse_json(payload)
            except UnicodeDecodeError:
                raise _Bad(f"not UTF-8: {_preview(payload)}", S.NOT_UTF8) from None
            except ValueError as exc:
                raise _Bad(
                    f"malformed JSON ({exc}): {_preview(payload)}", _json_code(exc)
                ) from None
            if isinstance(spec.template, dict) and not isinstance(doc, dict):
                raise _Bad(f"expected a JSON object, got {type(doc).__name__}", S.NOT_OBJECT)
            for path, want in spec.match:
                got = _get(doc, path)
                where = ".".join(map(str, path))
                if got is _MISSING:
                    raise _Bad(f"{where} is missing (must be {want!r})", S.MISSING_FIELD)
                if not _same(got, want):
                    return Ignored(f"{topic}: {where} is {got!r}, not {want!r}", topic)
            signals = {}
            _walk(spec.template, doc, "", signals, rated, spec.unknown_keys == "reject")
            tolerated = []
            _unknown_keys(spec.template, doc, "", tolerated)
    except _Bad as exc:
        return Reject(exc.code, f"{topic}: {exc}")
    ts = signals.pop("ts", None)
    seq = signals.pop("seq", None)
    signals.pop("v", None)
    signals.pop("src", None)
    if not signals:
        return Ignored(f"{topic}: none of {list(spec.signals)} in the payload", topic)
    return Measurement(spec.role, signals, topic, device_topic, ts, seq, tuple(tolerated))


def _decode_availability(
    a: AvailabilitySpec, topic: str, payload: bytes, device_topic: str | None
) -> Measurement | Reject:
    if a.key is None:
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            return Reject(S.NOT_UTF8, f"{topic}: availability payload not UTF-8")
        if text == a.online:
            return Measurement("availability", {"available": True}, topic, device_topic)
        if text == a.offline:
            return Measurement("availability", {"available": False}, topic, device_topic)
        return Reject(
            S.OUT_OF_RANGE,
            f"{topic}: availability payload {text[:40]!r} is neither "
            f"{a.online!r} nor {a.offline!r}",
        )
    try:
        doc = parse_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return Reject(S.NOT_JSON, f"{topic}: malformed availability JSON ({exc})")
    got = _get(doc, a.key)
    for body, state in ((a.online, True), (a.offline, False)):
        if _same(got, _get(body, a.key)):
            return Measurement("availability", {"available": state}, topic, device_topic)
    return Reject(
        S.OUT_OF_RANGE,
        f"{topic}: availability {'.'.join(map(str, a.key))}={got!r} is neither online nor offline",
    )


def first_command(results: list[Setpoint | Reject | Ignored]) -> Setpoint | Reject | Ignored:
    """Several command specs on one topic: the one that decodes wins, else the first Reject."""
    for kind in (Setpoint, Reject):
        for r in results:
            if isinstance(r, kind):
                return r
    return results[0]


def decode_command_with(
    spec: MessageSpec, topic: str, payload: bytes, rated: Rated
) -> Setpoint | Reject | Ignored:
    result = _decode_with(spec, topic, payload, rated, None)
    if not isinstance(result, Measurement):
        return result
    s = result.signals
    try:
        return Setpoint(
            power_w=s.get("power_w"),
            current_a=s.get("current_a"),
            on=s.get("on"),
            mode=s.get("mode"),
            ttl_s=s.get("ttl_s"),
            seq=result.seq,
            ts=result.ts,
            src=None,
        )
    except TypeError as exc:  # pragma: no cover - signals are typed by the spec
        return Reject(S.WRONG_TYPE, f"{topic}: {exc}")
