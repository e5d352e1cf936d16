"""Device-profile files: signals, units, field specs, and validation with clear errors.

A profile (``devices/profiles/<name>.yaml``) maps a vendor's MQTT topics and
payloads onto cps_sim's canonical signals.  This module reads and checks the
file; :mod:`cps_sim.bridge.profiles` encodes and decodes messages with it.

Payload templates
-----------------
A JSON payload is written as a template: the vendor's JSON with every value
that carries a signal replaced by a *field spec*, a mapping with a ``signal``
key::

    ENERGY:
      Total: {signal: energy_wh, unit: kWh, round: 3}
      Power: {signal: power_w, unit: W}

Other leaves are constants: written as they are when cps_sim encodes the
message, ignored when it decodes one (vendors send partial payloads).
Conditions that a decoded message must meet go in ``match:`` (``path: value``,
dots separate keys, integers index lists).  A field spec may also stand alone
(``raw:`` for a plain-text payload such as Tasmota's ``ON``, or ``payload:``
for a JSON scalar such as go-e's ``16``).

Field spec keys: ``signal`` (canonical name, required), ``unit`` (vendor unit,
converted to the signal's SI unit), ``sign`` (+1/-1, for generation-positive
vendors), ``map`` (vendor value -> canonical value, for enums and booleans),
``round`` (decimals written on encode), ``default`` (written when the signal
is not given on encode; otherwise the key is left out).  A ``map`` entry with
the canonical value ``null`` means "no value" (e.g. OpenEVSE's released claim
``{"state": "null"}``).  A message spec marked ``decode_only: true`` is a
second reading of a topic that another spec encodes (go-e's ``car`` gives
both ``status`` and ``plugged``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cps_sim.core.errors import Issue, ScenarioError

PROFILE_DIR = Path(__file__).resolve().parents[2] / "devices" / "profiles"
NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")
MAX_PROFILE_BYTES = 256 * 1024

# dimension -> {unit: factor to the SI unit of the dimension}
UNITS: dict[str, dict[str, float]] = {
    "power": {"W": 1.0, "kW": 1e3, "mW": 1e-3},
    "energy": {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6, "Ws": 1 / 3600, "J": 1 / 3600},
    "fraction": {"fraction": 1.0, "%": 0.01},
    "current": {"A": 1.0, "mA": 1e-3, "dA": 0.1},
    "voltage": {"V": 1.0},
    "time": {"s": 1.0, "ms": 1e-3},
    "temperature": {"degC": 1.0, "ddegC": 0.1},
    "count": {"1": 1.0},
}


@dataclass(frozen=True)
class SignalDef:
    type: str  # float | int | bool | str
    dimension: str | None = None  # for float/int: key of UNITS


# The canonical signals (units in the names, SI, load convention: + into the device).
SIGNALS: dict[str, SignalDef] = {
    "power_w": SignalDef("float", "power"),
    "energy_wh": SignalDef("float", "energy"),  # cumulative ∫ power dt (net, load convention)
    "energy_in_wh": SignalDef("float", "energy"),  # cumulative energy into the device
    "energy_out_wh": SignalDef("float", "energy"),  # cumulative energy out of it
    "session_energy_wh": SignalDef("float", "energy"),  # EV: since the car plugged in
    "soc": SignalDef("float", "fraction"),
    "current_a": SignalDef("float", "current"),  # measured (telemetry) / limit (setpoint)
    "current_limit_a": SignalDef("float", "current"),  # the limit the device applies now
    "voltage_v": SignalDef("float", "voltage"),
    "temperature_c": SignalDef("float", "temperature"),
    "plugged": SignalDef("bool"),
    "on": SignalDef("bool"),
    "available": SignalDef("bool"),
    "fallback": SignalDef("bool"),  # device applies its own fail-safe
    "status": SignalDef("str"),
    "mode": SignalDef("str"),
    "reason": SignalDef("str"),
    "device_time": SignalDef("str"),  # vendor clock text (informational)
    "src": SignalDef("str"),  # JSON-RPC caller id (ignored on decode)
    "sid": SignalDef("str"),  # publisher session id
    "v": SignalDef("int", "count"),
    "seq": SignalDef("int", "count"),
    "setpoint_seq": SignalDef("int", "count"),  # seq of the setpoint a state message acks
    "ts": SignalDef("float", "time"),  # publisher wall clock, UNIX s
    "ttl_s": SignalDef("float", "time"),
    "setpoint_power_w": SignalDef("float", "power"),
    "setpoint_current_a": SignalDef("float", "current"),
}
SETPOINT_SIGNALS = ("power_w", "current_a", "on", "mode")
KINDS = ("ev_charger", "battery", "pv", "plug", "meter", "heat_pump")
ROLES = ("telemetry", "state")
_SPEC_KEYS = {"signal", "unit", "sign", "map", "round", "default"}


class ProfileError(ScenarioError):
    """A device-profile file cannot be used (file, path inside it, problem)."""


@dataclass(frozen=True)
class FieldSpec:
    signal: str
    factor: float = 1.0  # vendor value * factor * sign = canonical value
    sign: float = 1.0
    mapping: tuple[tuple[Any, Any], ...] = ()  # (vendor, canonical) pairs
    round: int | None = None
    default: Any = None
    has_default: bool = False

    @property
    def sig(self) -> SignalDef:
        return SIGNALS[self.signal]


@dataclass(frozen=True)
class MessageSpec:
    """One topic template and how its payload carries signals."""

    topic: str
    role: str  # telemetry | state | command
    qos: int
    retain: bool
    raw: FieldSpec | None  # plain-text payload
    template: Any  # JSON template (with FieldSpec leaves) when raw is None
    match: tuple[tuple[tuple[str | int, ...], Any], ...]
    unknown_keys: str  # tolerate | reject
    signals: tuple[str, ...]
    decode_only: bool = False  # a second reading of a topic another message spec encodes


@dataclass(frozen=True)
class AvailabilitySpec:
    topic: str
    online: Any  # str (raw payload) or a JSON template
    offline: Any
    key: tuple[str | int, ...] | None  # path compared when payloads are JSON
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Rated:
    """Rated limits of a device (load convention: + into the device)."""

    power_w_min: float = -math.inf
    power_w_max: float = math.inf
    current_a_max: float = math.inf
    min_current_a: float = 0.0  # EV: below this the charger pauses (IEC 61851: 6 A)
    voltage_v: float = 230.0
    phases: int = 1

    def merged(self, overrides: Mapping[str, Any] | None) -> Rated:
        if not overrides:
            return self
        values = {**self.__dict__, **dict(overrides)}
        return Rated(**values)


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    title: str
    kinds: tuple[str, ...]
    rated: Rated
    availability: AvailabilitySpec | None
    messages: tuple[MessageSpec, ...]
    commands: tuple[MessageSpec, ...]
    command_ttl_s: float | None
    schema: str | None
    path: Path
    sources: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- reading
class _Checker:
    def __init__(self, file: str):
        self.file = file
        self.issues: list[Issue] = []

    def err(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def done(self) -> None:
        if self.issues:
            raise ProfileError(self.file, self.issues)


def parse_path(text: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in str(text).split("."))


def _field_spec(ck: _Checker, where: str, d: Mapping[str, Any]) -> FieldSpec | None:
    unknown = set(d) - _SPEC_KEYS
    if unknown:
        ck.err(where, f"unknown field-spec keys {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}")
        return None
    name = d["signal"]
    if name not in SIGNALS:
        ck.err(f"{where}.signal", f"unknown signal {name!r}; known: {sorted(SIGNALS)}")
        return None
    sig = SIGNALS[name]
    factor = 1.0
    if "unit" in d:
        unit = str(d["unit"])
        if sig.dimension is None:
            ck.err(f"{where}.unit", f"signal {name} ({sig.type}) takes no unit")
            return None
        table = UNITS[sig.dimension]
        if unit not in table:
            other = [dim for dim, t in UNITS.items() if unit in t]
            art = "an" if other and other[0][0] in "aeiou" else "a"
            hint = f"'{unit}' is {art} {other[0]} unit; " if other else ""
            ck.err(
                f"{where}.unit",
                f"{hint}signal {name} needs a {sig.dimension} unit, one of {sorted(table)}",
            )
            return None
        factor = table[unit]
    sign = d.get("sign", 1)
    if sign not in (1, -1):
        ck.err(f"{where}.sign", f"must be 1 or -1, got {sign!r}")
        return None
    mapping: tuple[tuple[Any, Any], ...] = ()
    if "map" in d:
        m = d["map"]
        if not isinstance(m, Mapping) or not m:
            ck.err(f"{where}.map", "must be a non-empty mapping vendor value -> canonical value")
            return None
        for k, v in m.items():
            if v is not None and not _type_ok(sig.type, v):
                ck.err(
                    f"{where}.map.{k}", f"canonical value {v!r} is not a {sig.type} (signal {name})"
                )
                return None
        mapping = tuple(m.items())
    rnd = d.get("round")
    if rnd is not None and (not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0):
        ck.err(f"{where}.round", f"must be an integer >= 0, got {rnd!r}")
        return None
    return FieldSpec(name, factor, float(sign), mapping, rnd, d.get("default"), "default" in d)


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond any float (10**400)
        return False


def _template(ck: _Checker, where: str, node: Any, found: list[str]) -> Any:
    """Replace field-spec mappings by FieldSpec objects (recursively)."""
    if isinstance(node, Mapping):
        if "signal" in node:
            spec = _field_spec(ck, where, node)
            if spec is not None:
                found.append(spec.signal)
            return spec
        out = {}
        for k, v in node.items():
            if not isinstance(k, str):
                hint = (
                    " (YAML reads on/off/yes/no/true/false as booleans: quote the key)"
                    if isinstance(k, bool)
                    else ""
                )
                ck.err(where, f"JSON object keys must be strings, got {k!r}{hint}")
                continue
            out[k] = _template(ck, f"{where}.{k}", v, found)
        return out
    if isinstance(node, list):
        return [_template(ck, f"{where}[{i}]", v, found) for i, v in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        if isinstance(node, float) and not math.isfinite(node):
            ck.err(where, "NaN/inf cannot be sent as JSON")
        return node
    ck.err(where, f"unsupported value {node!r}")
    return None


_TOPIC_LEVEL = re.compile(r"^(\{t\}|\{t4\}|[A-Za-z0-9_:$.-]+)$")


def _topic(ck: _Checker, where: str, t: Any) -> str | None:
    if not isinstance(t, str) or not t:
        ck.err(where, "topic template must be a non-empty string")
        return None
    if "{t}" not in t and "{t4}" not in t:
        ck.err(where, f"topic template {t!r} must contain {{t}} (the device topic)")
        return None
    for lvl in t.split("/"):
        if not _TOPIC_LEVEL.match(lvl):
            ck.err(
                where,
                f"topic level {lvl!r} of {t!r}: letters, digits, _ : $ . - only, "
                "or {t} / {t4}; no wildcards",
            )
            return None
    return t


def _message(ck: _Checker, where: str, d: Any, command: bool) -> MessageSpec | None:
    if not isinstance(d, Mapping):
        ck.err(where, "must be a mapping with topic and payload or raw")
        return None
    known = {
        "topic",
        "role",
        "qos",
        "retain",
        "raw",
        "payload",
        "match",
        "unknown_keys",
        "decode_only",
    }
    unknown = set(d) - known
    if unknown:
        ck.err(where, f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return None
    topic = _topic(ck, f"{where}.topic", d.get("topic"))
    role = "command" if command else d.get("role", "telemetry")
    if command and "role" in d:
        ck.err(f"{where}.role", "commands have no role")
    if role not in (*ROLES, "command"):
        ck.err(f"{where}.role", f"must be one of {ROLES}, got {role!r}")
    qos = d.get("qos", 1 if command else 0)
    if qos not in (0, 1, 2):
        ck.err(f"{where}.qos", f"must be 0, 1 or 2, got {qos!r}")
    retain = d.get("retain", False)
    if command and retain:
        ck.err(
            f"{where}.retain",
            "commands are never retained (a stale retained command "
            "would be replayed to the device)",
        )
    if ("raw" in d) == ("payload" in d):
        ck.err(where, "give exactly one of raw: (plain-text value) or payload: (JSON)")
        return None
    found: list[str] = []
    raw = None
    template = None
    if "raw" in d:
        if not isinstance(d["raw"], Mapping) or "signal" not in d["raw"]:
            ck.err(f"{where}.raw", "must be a field spec {signal: ..., ...}")
            return None
        raw = _field_spec(ck, f"{where}.raw", d["raw"])
        if raw is not None:
            found.append(raw.signal)
    else:
        template = _template(ck, f"{where}.payload", d["payload"], found)
    if not found:
        ck.err(where, "carries no signal (no {signal: ...} in raw/payload)")
    dup = {s for s in found if found.count(s) > 1}
    if dup:
        ck.err(where, f"signal(s) {sorted(dup)} appear more than once")
    match = d.get("match", {}) or {}
    if not isinstance(match, Mapping):
        ck.err(f"{where}.match", "must be a mapping path -> value")
        match = {}
    if match and raw is not None:
        ck.err(f"{where}.match", "only JSON payloads can have match conditions")
    unknown_keys = d.get("unknown_keys", "tolerate")
    if unknown_keys not in ("tolerate", "reject"):
        ck.err(f"{where}.unknown_keys", f"must be tolerate or reject, got {unknown_keys!r}")
    if command:
        for s in found:
            if s not in (*SETPOINT_SIGNALS, "seq", "ts", "ttl_s", "v", "src", "sid"):
                ck.err(
                    where,
                    f"signal {s} cannot be commanded; setpoint signals: "
                    f"{SETPOINT_SIGNALS} (+ seq, ts, ttl_s, v, src, sid)",
                )
    if topic is None:
        return None
    return MessageSpec(
        topic,
        role,
        int(qos),
        bool(retain),
        raw,
        template,
        tuple((parse_path(k), v) for k, v in match.items()),
        unknown_keys,
        tuple(found),
        bool(d.get("decode_only", False)),
    )


def _availability(ck: _Checker, d: Any) -> AvailabilitySpec | None:
    where = "availability"
    if not isinstance(d, Mapping):
        ck.err(where, "must be a mapping with topic, online, offline")
        return None
    known = {"topic", "online", "offline", "key", "qos", "retain"}
    unknown = set(d) - known
    if unknown:
        ck.err(where, f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
    topic = _topic(ck, f"{where}.topic", d.get("topic"))
    for k in ("online", "offline"):
        if k not in d:
            ck.err(f"{where}.{k}", "required")
    on, off = d.get("online"), d.get("offline")
    key = None
    if isinstance(on, Mapping) or isinstance(off, Mapping):
        if not (isinstance(on, Mapping) and isinstance(off, Mapping) and "key" in d):
            ck.err(
                where,
                "JSON online/offline payloads need both as mappings and a key: "
                "(the path that tells them apart)",
            )
            return None
        key = parse_path(d["key"])
    elif not (isinstance(on, str) and isinstance(off, str)) or on == off:
        ck.err(where, "online and offline must be two different strings (raw payloads)")
        return None
    if topic is None:
        return None
    return AvailabilitySpec(topic, on, off, key, int(d.get("qos", 1)), bool(d.get("retain", True)))


def _rated(ck: _Checker, d: Any) -> Rated:
    if d is None:
        return Rated()
    if not isinstance(d, Mapping):
        ck.err("rated", "must be a mapping")
        return Rated()
    known = set(Rated.__dataclass_fields__)
    values: dict[str, Any] = {}
    for k, v in d.items():
        if k not in known:
            ck.err(f"rated.{k}", f"unknown rating; known: {sorted(known)}")
            continue
        if not _type_ok("float", v):
            ck.err(f"rated.{k}", f"must be a finite number, got {v!r}")
            continue
        values[k] = int(v) if k == "phases" else float(v)
    r = Rated(**values)
    if r.power_w_min > r.power_w_max:
        ck.err("rated", f"power_w_min {r.power_w_min} > power_w_max {r.power_w_max}")
    if r.voltage_v <= 0 or r.phases not in (1, 2, 3):
        ck.err("rated", "voltage_v must be > 0 and phases 1, 2 or 3")
    if r.min_current_a < 0 or r.min_current_a > r.current_a_max:
        ck.err("rated.min_current_a", "must be within [0, current_a_max]")
    return r


def read_profile_file(path: Path, shown: str | None = None) -> ProfileSpec:
    """Read and check one profile file; raise :class:`ProfileError` listing every problem
    (naming the file as ``shown``, default ``path``)."""
    file = shown or str(path)
    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import read_input
    from cps_sim.scenario.loader import parse_yaml

    try:
        data = read_input(path, max_bytes=MAX_PROFILE_BYTES, what="device profile file")
    except InputFileError as exc:
        raise ProfileError.single(file, "", exc.reason) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError.single(file, "", f"not UTF-8 (byte {exc.start})") from None
    try:  # the scenario loader's limits (depth, aliases, tags); only true/false are bools
        doc, _ = parse_yaml(text, file)
    except ScenarioError as exc:
        raise ProfileError(exc.file, exc.issues) from None
    ck = _Checker(file)
    if not isinstance(doc, Mapping):
        ck.err("", "must be a mapping (name, kinds, messages, commands, ...)")
        ck.done()
    known = {
        "name",
        "title",
        "kinds",
        "rated",
        "availability",
        "messages",
        "commands",
        "command_ttl_s",
        "schema",
        "sources",
    }
    for k in doc:
        if k not in known:
            ck.err(str(k), f"unknown key; known: {sorted(known)}")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        ck.err("name", f"must match {NAME_RE.pattern}, got {name!r}")
    elif name != path.stem:
        ck.err("name", f"{name!r} must equal the file name {path.stem!r}")
    kinds = doc.get("kinds") or []
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        ck.err("kinds", f"must be a non-empty list from {KINDS}, got {kinds!r}")
        kinds = []
    rated = _rated(ck, doc.get("rated"))
    avail = _availability(ck, doc["availability"]) if doc.get("availability") else None
    msgs_doc = doc.get("messages") or []
    cmds_doc = doc.get("commands") or []
    if not isinstance(msgs_doc, list) or not msgs_doc:
        ck.err("messages", "must be a non-empty list of device -> controller messages")
        msgs_doc = []
    if not isinstance(cmds_doc, list):
        ck.err("commands", "must be a list of controller -> device messages")
        cmds_doc = []
    messages = [_message(ck, f"messages[{i}]", m, False) for i, m in enumerate(msgs_doc)]
    commands = [_message(ck, f"commands[{i}]", m, True) for i, m in enumerate(cmds_doc)]
    ttl = doc.get("command_ttl_s")
    if ttl is not None and not (_type_ok("float", ttl) and ttl > 0):
        ck.err("command_ttl_s", f"must be > 0 or null, got {ttl!r}")
    schema = doc.get("schema")
    if schema not in (None, "v1"):
        ck.err("schema", f"only v1 is known, got {schema!r}")
    sources = doc.get("sources") or []
    ck.done()
    return ProfileSpec(
        name=str(name),
        title=str(doc.get("title", name)),
        kinds=tuple(kinds),
        rated=rated,
        availability=avail,
        messages=tuple(m for m in messages if m is not None),
        commands=tuple(c for c in commands if c is not None),
        command_ttl_s=None if ttl is None else float(ttl),
        schema=schema,
        path=path,
        sources=tuple(str(s) for s in sources),
    )
