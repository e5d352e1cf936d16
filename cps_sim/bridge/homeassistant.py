"""Home Assistant MQTT discovery for cps_sim devices (emulated, or simulated members).

With ``bridge.homeassistant: true`` (or ``cps-sim emulate --homeassistant``) every device
announces its entities under ``homeassistant/<component>/cps_<device id>/<signal>/config``
(retained), so Home Assistant shows it without YAML:

* sensors for what it reports: power (W, ``measurement``), energy (Wh, ``total_increasing``
  for counters that only grow, ``total`` for the net energy of a battery, a PV system or
  an EV charger that may discharge),
  state of charge (%), the energy in a store (``energy_storage``, ``measurement``: the
  ``energy_wh`` of an exposed group's EV and battery members), current, voltage,
  temperature, status text; binary sensors for
  ``plugged``, a relay state that cannot be switched, and ``fallback``;
* controls for what it accepts: a ``number`` for a power setpoint (W) or an EV current
  limit (A), a ``switch`` for a relay, a ``button`` that hands control back (``mode:
  auto``);
* one ``device`` block per device, the profile's availability topic (``online`` /
  ``offline``, the MQTT last will) and ``expire_after`` (freshness, separate from
  availability) on telemetry sensors.

Everything is derived from the device profile (``devices/profiles/*.yaml``): state topics,
``value_template`` (path into the vendor payload, converted to SI units), command topics
and ``command_template`` (the vendor's command format; schema-v1 setpoints carry ``v``,
``seq`` = milliseconds since the epoch, ``ts`` and ``ttl_s``).  Configs are re-published
when Home Assistant announces ``online`` on ``homeassistant/status`` and removed (empty
retained payload) on shutdown only when asked to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from cps_sim.bridge.profile_codec import dump_json, subst_vars
from cps_sim.bridge.profile_spec import SETPOINT_SIGNALS, FieldSpec, MessageSpec
from cps_sim.bridge.profiles import BoundDevice

if TYPE_CHECKING:
    from cps_sim.bridge.emulate import EmulatorFleet

DISCOVERY_PREFIX = "homeassistant"
STATUS_TOPIC = "homeassistant/status"
HA_COMMAND_TTL_S = 3600.0  # a setpoint from the HA UI holds for an hour (device seconds)
_SENTINEL = "__cps_sim_value__"

# signal -> (component, name, device_class, unit, state_class, scale to the HA unit)
SENSORS: dict[str, tuple[str, str, str | None, str | None, str | None, float]] = {
    "power_w": ("sensor", "Power", "power", "W", "measurement", 1.0),
    "energy_wh": ("sensor", "Energy", "energy", "Wh", "total_increasing", 1.0),
    "energy_in_wh": ("sensor", "Energy in", "energy", "Wh", "total_increasing", 1.0),
    "energy_out_wh": ("sensor", "Energy out", "energy", "Wh", "total_increasing", 1.0),
    "session_energy_wh": ("sensor", "Session energy", "energy", "Wh", "total", 1.0),
    "soc": ("sensor", "State of charge", "battery", "%", "measurement", 100.0),
    "current_a": ("sensor", "Current", "current", "A", "measurement", 1.0),
    "current_limit_a": ("sensor", "Current limit", "current", "A", "measurement", 1.0),
    "voltage_v": ("sensor", "Voltage", "voltage", "V", "measurement", 1.0),
    "temperature_c": ("sensor", "Temperature", "temperature", "°C", "measurement", 1.0),
    "status": ("sensor", "Status", None, None, None, 1.0),
    "mode": ("sensor", "Mode", None, None, None, 1.0),
    "plugged": ("binary_sensor", "Plugged in", "plug", None, None, 1.0),
    "on": ("binary_sensor", "Relay", "power", None, None, 1.0),
    "fallback": ("binary_sensor", "Fail-safe active", "problem", None, None, 1.0),
}
NET_ENERGY_KINDS = ("battery", "pv", "ev_charger")  # energy_wh may go both ways (V2X): total


def _index(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f"[{json.dumps(p)}]" for p in path)


def _paths(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple, FieldSpec]]:
    if isinstance(node, FieldSpec):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _jinja_literal(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else repr(v)


def state_template(spec: FieldSpec, path: tuple, raw: bool, scale: float = 1.0) -> str:
    """Jinja ``value_template`` selecting ``spec``'s value in SI (times ``scale``)."""
    src = "value" if raw else f"value_json{_index(path)}"
    if spec.mapping:
        if spec.sig.type == "bool":
            trues = [v for v, c in spec.mapping if c is True]
            keys = ", ".join(_jinja_literal(str(v)) for v in trues)
            return f"{{{{ 'ON' if ({src} | string) in [{keys}] else 'OFF' }}}}"
        pairs = ", ".join(
            f"{_jinja_literal(str(v))}: {_jinja_literal(c)}"
            for v, c in spec.mapping
            if c is not None
        )
        return f"{{{{ {{{pairs}}}.get({src} | string, 'unknown') }}}}"
    if spec.sig.type == "bool":
        return f"{{{{ 'ON' if ({src} | string | lower) in ['true', '1', 'on'] else 'OFF' }}}}"
    if spec.sig.type == "str":
        return f"{{{{ {src} }}}}"
    factor = spec.factor * spec.sign * scale
    if factor == 1.0:
        return f"{{{{ {src} | float }}}}"
    return f"{{{{ ({src} | float) * {factor!r} }}}}"


def _with_sentinels(node: Any, values: dict[str, Any]) -> Any:
    """The template with each FieldSpec replaced by ``values[signal]`` (or dropped)."""
    if isinstance(node, FieldSpec):
        if node.signal in values:
            return values[node.signal]
        return node.default if node.has_default else _DROP
    if isinstance(node, dict):
        out = {k: _with_sentinels(v, values) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(node, list):
        return [0 if v is _DROP else v for v in (_with_sentinels(x, values) for x in node)]
    return node


_DROP = object()


def command_template(
    spec: MessageSpec,
    signal: str,
    device: BoundDevice,
    fixed: dict[str, Any] | None = None,
    ha_value: str = "value",
) -> str:
    """Jinja ``command_template``: the vendor command carrying HA's ``value`` (and, where
    the format has them, ``seq`` = ms since the epoch, ``ts`` = now, ``ttl_s``)."""
    fspec = spec.raw or next(f for _, f in _paths(spec.template) if f.signal == signal)
    expr = _value_expr(fspec, ha_value, raw=spec.raw is not None)
    if spec.raw is not None:
        return expr
    marks = {signal: f"__{signal}__", "seq": "__seq__", "ts": "__ts__"}
    values: dict[str, Any] = {"ttl_s": HA_COMMAND_TTL_S, "v": 1}
    for k, v in (fixed or {}).items():
        f = next((f for _, f in _paths(spec.template) if f.signal == k), None)
        if f is not None:
            from cps_sim.bridge.profile_codec import to_vendor

            values[k] = to_vendor(f, v)
    values.update(marks)
    body = _with_sentinels(spec.template, values)
    for path, want in spec.match:
        node = body
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = want
    text = subst_vars(dump_json(body).decode(), device.topic_vars)
    text = text.replace(json.dumps(marks[signal]), expr)
    text = text.replace('"__seq__"', "{{ (now().timestamp() * 1000) | int }}")
    return text.replace('"__ts__"', "{{ now().timestamp() }}")


def _value_expr(spec: FieldSpec, ha_value: str, raw: bool = False) -> str:
    """Jinja expression writing HA's value in the vendor's form (a JSON literal in JSON
    payloads; the bare text in plain-text payloads)."""
    if spec.mapping:
        cases = [(c, v) for v, c in spec.mapping if c is not None]
        if spec.sig.type == "bool":
            on = next(v for c, v in cases if c is True)
            off = next(v for c, v in cases if c is False)
            return (
                f"{{% if {ha_value} in ['ON', 'on', True, 'true'] %}}{_lit(on, raw)}"
                f"{{% else %}}{_lit(off, raw)}{{% endif %}}"
            )
        parts = "".join(
            f"{{% {'if' if k == 0 else 'elif'} {ha_value} == {_jinja_literal(c)} %}}{_lit(v, raw)}"
            for k, (c, v) in enumerate(cases)
        )
        return parts + "{% endif %}"
    if spec.sig.type == "bool":
        return f"{{{{ 'true' if {ha_value} in ['ON', 'on', True, 'true'] else 'false' }}}}"
    if spec.sig.type == "str":
        return f"{{{{ {ha_value} }}}}" if raw else f'"{{{{ {ha_value} }}}}"'
    factor = spec.sign / spec.factor
    expr = f"({ha_value} | float)" if factor == 1.0 else f"(({ha_value} | float) * {factor!r})"
    if spec.round == 0:
        return f"{{{{ {expr} | round(0) | int }}}}"
    if spec.round is not None:
        return f"{{{{ {expr} | round({spec.round}) }}}}"
    return f"{{{{ {expr} }}}}"


def _lit(v: Any, raw: bool = False) -> str:
    """A vendor value as it appears in the payload (bare text, or a JSON literal)."""
    if raw:
        return str(v).lower() if isinstance(v, bool) else str(v)
    return json.dumps(v)


def _device_block(device_id: str, kind: str, profile: str, name: str | None) -> dict[str, Any]:
    from cps_sim import __version__ as version

    return {
        "identifiers": [f"cps_{device_id}"],
        "name": name or device_id,
        "manufacturer": "cps_sim",
        "model": f"{kind} ({profile} profile)",
        "sw_version": str(version),
    }


def discovery_messages(
    device: BoundDevice,
    device_id: str,
    kind: str,
    signals: Iterable[str],
    *,
    controls: Iterable[str] = (),
    rated: Any = None,
    name: str | None = None,
    expire_after_s: float | None = None,
    prefix: str = DISCOVERY_PREFIX,
    stored_energy: bool = False,
    status_topic: str | None = None,
) -> list[tuple[str, bytes]]:
    """Retained discovery configs ``(topic, payload)`` for one device.

    ``signals``: the canonical signals the device publishes; ``controls``: the setpoint
    keys it accepts (power_w, current_a, on, mode); ``rated``: its :class:`Rated`.
    ``stored_energy``: its ``energy_wh`` is the energy in its store (the members of an
    exposed group), not a meter: an ``energy_storage`` sensor, kept out of the Energy
    dashboard's counters.  ``status_topic``: the publisher's own status (``online`` /
    ``offline``, its last will), which the device's availability also needs: the members
    of an exposed group are published by the simulator, whose will cannot clear their
    retained ``online`` when it dies.
    """
    prof = device.profile
    node = f"cps_{device_id}"
    dev = _device_block(device_id, kind, prof.name, name)
    avail = prof.spec.availability
    common: dict[str, Any] = {"device": dev, "origin": {"name": "cps_sim"}}
    if avail is not None:
        common["availability_topic"] = subst_vars(avail.topic, device.topic_vars)
        if isinstance(avail.online, str):
            common["payload_available"] = avail.online
            common["payload_not_available"] = avail.offline
        else:
            common["availability_template"] = (
                f"{{{{ 'online' if value_json{_index(avail.key or ())} == "
                f"{_jinja_literal(_get_path(avail.online, avail.key))} else 'offline' }}}}"
            )
            common["payload_available"] = "online"
            common["payload_not_available"] = "offline"
    if (
        status_topic is not None
        and "availability_topic" in common
        and "availability_template" not in common
    ):
        common["availability"] = [
            {
                "topic": common.pop("availability_topic"),
                "payload_available": common.pop("payload_available"),
                "payload_not_available": common.pop("payload_not_available"),
            },
            {
                "topic": status_topic,
                "payload_available": "online",
                "payload_not_available": "offline",
            },
        ]
        common["availability_mode"] = "all"
    wanted = set(signals)
    controls = [c for c in controls if c in SETPOINT_SIGNALS]
    out: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for m in prof.spec.messages:
        fields = [((), m.raw)] if m.raw is not None else list(_paths(m.template))
        for path, f in fields:
            sig = f.signal
            if sig not in SENSORS or sig not in wanted or sig in seen:
                continue
            if sig == "on" and "on" in controls:
                continue  # shown as the switch below
            seen.add(sig)
            comp, label, dclass, unit, sclass, scale = SENSORS[sig]
            if sig == "energy_wh" and stored_energy:
                label, dclass, sclass = "Stored energy", "energy_storage", "measurement"
            elif sig == "energy_wh" and kind in NET_ENERGY_KINDS:
                sclass = "total"
            cfg: dict[str, Any] = {
                "name": label,
                "unique_id": f"{node}_{sig}",
                "object_id": f"{node}_{sig}",
                "state_topic": subst_vars(m.topic, device._subst),
                "value_template": state_template(f, path, m.raw is not None, scale),
                **common,
            }
            if dclass:
                cfg["device_class"] = dclass
            if unit:
                cfg["unit_of_measurement"] = unit
            if sclass:
                cfg["state_class"] = sclass
            if comp == "binary_sensor":
                cfg["payload_on"], cfg["payload_off"] = "ON", "OFF"
            if expire_after_s and m.role == "telemetry":
                cfg["expire_after"] = int(max(expire_after_s, 1))
            out.append((f"{prefix}/{comp}/{node}/{sig}/config", dump_json(cfg)))
    out += _controls(device, node, kind, controls, rated, common, prefix, wanted)
    return out


def _get_path(body: Any, path: tuple | None) -> Any:
    for p in path or ():
        body = body[p]
    return body


def _command_for(device: BoundDevice, signal: str) -> MessageSpec | None:
    for c in device.profile.spec.commands:
        if signal in c.signals:
            return c
    return None


def _controls(
    device: BoundDevice,
    node: str,
    kind: str,
    controls: list[str],
    rated: Any,
    common: dict[str, Any],
    prefix: str,
    wanted: set[str],
) -> list[tuple[str, bytes]]:
    out = []
    sub = device.topic_vars

    def add(comp: str, obj: str, cfg: dict[str, Any]) -> None:
        out.append(
            (
                f"{prefix}/{comp}/{node}/{obj}/config",
                dump_json(
                    {"unique_id": f"{node}_{obj}", "object_id": f"{node}_{obj}", **cfg, **common}
                ),
            )
        )

    c = _command_for(device, "current_a")
    if "current_a" in controls and c is not None and rated is not None:
        add(
            "number",
            "current_setpoint",
            {
                "name": "Current limit",
                "command_topic": subst_vars(c.topic, sub),
                "command_template": command_template(c, "current_a", device, _on_for(c, device)),
                "min": 0,
                "max": float(rated.current_a_max),
                "step": 1,
                "unit_of_measurement": "A",
                "device_class": "current",
                "mode": "box",
                "qos": 1,
                "retain": False,
            },
        )
    c = _command_for(device, "power_w")
    if "power_w" in controls and c is not None and rated is not None and kind != "plug":
        lo, hi, sign, label = rated.power_w_min, rated.power_w_max, 1.0, "Power setpoint"
        if kind == "pv":  # show the generation cap as a positive number
            lo, hi, sign, label = 0.0, -rated.power_w_min, -1.0, "Generation limit"
        value = "value" if sign == 1.0 else "(-(value | float))"
        add(
            "number",
            "power_setpoint",
            {
                "name": label,
                "command_topic": subst_vars(c.topic, sub),
                "command_template": command_template(c, "power_w", device, ha_value=value),
                "min": float(lo),
                "max": float(hi),
                "step": 10,
                "unit_of_measurement": "W",
                "device_class": "power",
                "mode": "box",
                "qos": 1,
                "retain": False,
            },
        )
    c = _command_for(device, "on")
    if "on" in controls and c is not None:
        cfg: dict[str, Any] = {
            "name": "Relay",
            "command_topic": subst_vars(c.topic, sub),
            "command_template": command_template(c, "on", device),
            "payload_on": "ON",
            "payload_off": "OFF",
            "qos": 1,
            "retain": False,
        }
        state = _state_of(device, "on")
        if state is not None and "on" in wanted:
            m, path, f = state
            cfg["state_topic"] = subst_vars(m.topic, sub)
            cfg["value_template"] = state_template(f, path, m.raw is not None)
            cfg["state_on"], cfg["state_off"] = "ON", "OFF"
        else:
            cfg["optimistic"] = True
        add("switch", "relay", cfg)
    c = _command_for(device, "mode")
    if "mode" in controls and c is not None:
        add(
            "button",
            "auto",
            {
                "name": "Hand back to the device (auto)",
                "command_topic": subst_vars(c.topic, sub),
                "command_template": command_template(c, "mode", device, {"mode": "auto"}),
                "payload_press": "auto",
                "qos": 1,
                "retain": False,
            },
        )
    return out


def _on_for(c: MessageSpec, device: BoundDevice) -> dict[str, Any] | None:
    """A vendor command that also carries on/off (OpenEVSE claim): enable with the current.
    (Schema v1 setpoints carry exactly one control.)"""
    if device.profile.spec.schema == "v1" or "on" not in c.signals:
        return None
    return {"on": True}


def _state_of(device: BoundDevice, signal: str):
    for m in device.profile.spec.messages:
        fields = [((), m.raw)] if m.raw is not None else list(_paths(m.template))
        for path, f in fields:
            if f.signal == signal:
                return m, path, f
    return None


def removal_messages(configs: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Empty retained payloads that delete the entities of ``configs``."""
    return [(topic, b"") for topic, _ in configs]


# --------------------------------------------------------------------------- emulator fleets
def _fleet_configs(fleet: EmulatorFleet) -> list[tuple[int, str, bytes]]:
    sample = fleet.telemetry_signals()
    controls = list(fleet.model.accepts)
    out = []
    for i, b in enumerate(fleet.bound):
        for topic, payload in discovery_messages(
            b,
            fleet.device_ids[i],
            fleet.kind,
            sample,
            controls=controls,
            rated=fleet.rated,
            expire_after_s=3 * fleet.cfg.interval_s + 5,
            prefix=fleet.cfg.ha_prefix,
        ):
            out.append((i, topic, payload))
    return out


def fleet_discovery(fleet: EmulatorFleet) -> list[tuple[int, str, bytes]]:
    """(device index, topic, retained payload) for every entity of every device."""
    return _fleet_configs(fleet)


def fleet_removal(fleet: EmulatorFleet) -> list[tuple[int, str, bytes]]:
    return [(i, topic, b"") for i, topic, _ in _fleet_configs(fleet)]
