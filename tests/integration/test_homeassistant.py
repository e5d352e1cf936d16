"""Home Assistant MQTT discovery against a real Mosquitto: configs HA accepts, templates that
select the published values, controls that reach the device, birth and removal."""

from __future__ import annotations

import json
import threading
import time

import jinja2
import pytest

from cps_sim.bridge.emulate import start_emulators
from cps_sim.bridge.homeassistant import SENSORS
from cps_sim.bridge.profiles import Measurement, load_profile

pytestmark = pytest.mark.mqtt

CASES = [
    ("generic", "battery"),
    ("generic", "ev_charger"),
    ("tasmota_plug", "plug"),
    ("shelly_gen2", "plug"),
    ("openevse", "ev_charger"),
    ("goe", "ev_charger"),
    ("battery_inverter", "battery"),
    ("generic", "pv"),
    ("opendtu_inverter", "pv"),
]
REQUIRED = {
    "sensor": ("state_topic",),
    "binary_sensor": ("state_topic",),
    "number": ("command_topic",),
    "switch": ("command_topic",),
    "button": ("command_topic",),
}
UNITS = {
    "power": {"W", "kW"},
    "energy": {"Wh", "kWh"},
    "energy_storage": {"Wh", "kWh"},
    "battery": {"%"},
    "current": {"A"},
    "voltage": {"V"},
    "temperature": {"°C"},
}


class Recorder:
    def __init__(self, url: str):
        import paho.mqtt.client as mqtt

        host, port = url.removeprefix("mqtt://").split(":")
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = lambda cl, u, m: self._add(m)
        self.c.connect(host, int(port))
        self.c.subscribe("#", 1)
        self.c.loop_start()
        time.sleep(0.1)

    def _add(self, m) -> None:
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain)))

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            hits = [p for t, p, _ in self.msgs if t == topic]
        return hits[-1] if hits else None

    def configs(self) -> dict[str, dict]:
        with self.lock:
            found = {
                t: p
                for t, p, _ in self.msgs
                if t.startswith("homeassistant/") and t.endswith("/config")
            }
        return {t: json.loads(p) for t, p in found.items() if p}

    def close(self) -> None:
        self.c.disconnect()  # wakes paho's loop, so loop_stop does not wait out its select
        self.c.loop_stop()


def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=False)

    class Now:
        def timestamp(self) -> float:
            return time.time()

    env.globals["now"] = Now
    return env


def _render(template: str, payload: bytes) -> str:
    text = payload.decode()
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return _jinja().from_string(template).render(value=text, value_json=value_json).strip()


@pytest.fixture
def recorder(mosquitto):
    r = Recorder(mosquitto.url)
    yield r
    r.close()


def _wait(cond, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_discovery_configs_are_valid_and_templates_select_the_values(mosquitto, recorder):
    fleets = [
        start_emulators(
            kind,
            prof,
            1,
            mosquitto.url,
            id_prefix=f"ha{k}",
            prefix="ha",
            interval_s=0.2,
            homeassistant=True,
            start="2026-05-01T11:00+09:00",
        )
        for k, (prof, kind) in enumerate(CASES)
    ]
    try:
        time.sleep(1.0)
        configs = recorder.configs()
        assert configs
        ids = [c["unique_id"] for c in configs.values()]
        assert len(ids) == len(set(ids)), "unique_id must be unique"
        for f, (prof, kind) in zip(fleets, CASES, strict=True):
            profile = load_profile(prof)
            node = f"cps_{f.device_ids[0]}"
            mine = {t: c for t, c in configs.items() if f"/{node}/" in t}
            comps = {t.split("/")[1] for t in mine}
            assert "sensor" in comps, (prof, kind)
            assert {"number", "switch", "button"} & comps or kind == "meter", (prof, kind)
            for topic, cfg in mine.items():
                comp = topic.split("/")[1]
                assert topic == f"homeassistant/{comp}/{node}/{topic.split('/')[3]}/config"
                for key in ("name", "unique_id", "device", *REQUIRED[comp]):
                    assert key in cfg, (topic, key)
                assert cfg["device"]["identifiers"] == [node]
                assert cfg.get("retain", False) is False
                if "availability_topic" in cfg:  # the profile's own availability, online now
                    payload = recorder.last(cfg["availability_topic"])
                    assert payload is not None
                    if "availability_template" in cfg:
                        assert _render(cfg["availability_template"], payload) == "online"
                    else:
                        assert payload.decode() == cfg["payload_available"]
                dc = cfg.get("device_class")
                if dc in UNITS and comp == "sensor":
                    assert cfg["unit_of_measurement"] in UNITS[dc], topic
                if dc == "energy":
                    assert cfg["state_class"] in ("total", "total_increasing")
                if dc == "energy_storage":  # what is in a store goes up and down
                    assert cfg["state_class"] == "measurement"
                if comp not in ("sensor", "binary_sensor") or "value_template" not in cfg:
                    continue
                payload = recorder.last(cfg["state_topic"])
                if payload is None:
                    continue  # e.g. a state topic that carries nothing before a command
                rendered = _render(cfg["value_template"], payload)
                decoded = profile.decode(cfg["state_topic"], payload)
                assert isinstance(decoded, Measurement), decoded
                sig = topic.split("/")[3]
                want = decoded.signals[sig]
                if comp == "binary_sensor":
                    assert rendered == ("ON" if want else "OFF"), (topic, rendered, want)
                elif isinstance(want, str):
                    assert rendered == want, (topic, rendered, want)
                else:
                    scale = SENSORS[sig][5]
                    assert float(rendered) == pytest.approx(want * scale, rel=1e-9, abs=1e-9), (
                        topic,
                        rendered,
                        want,
                    )
    finally:
        for f in fleets:
            f.stop()


def _command(cfg: dict, value) -> tuple[str, bytes]:
    tpl = cfg.get("command_template")
    payload = _jinja().from_string(tpl).render(value=value) if tpl else str(value)
    return cfg["command_topic"], payload.encode()


CONTROLS = [
    ("generic", "battery", "power_setpoint", 2500, lambda f: f.cmd.power_w[0] == 2500.0),
    ("generic", "pv", "power_setpoint", 1200, lambda f: f.cmd.power_w[0] == -1200.0),
    ("generic", "plug", "relay", "OFF", lambda f: f.cmd.on[0] == 0),
    ("generic", "ev_charger", "current_setpoint", 10, lambda f: f.cmd.current_a[0] == 10.0),
    ("generic", "heat_pump", "auto", "auto", lambda f: f.mode_auto[0]),
    ("tasmota_plug", "plug", "relay", "OFF", lambda f: f.cmd.on[0] == 0),
    ("shelly_gen2", "plug", "relay", "OFF", lambda f: f.cmd.on[0] == 0),
    ("openevse", "ev_charger", "current_setpoint", 12, lambda f: f.cmd.current_a[0] == 12.0),
    ("goe", "ev_charger", "auto", "auto", lambda f: f.mode_auto[0]),
    ("battery_inverter", "battery", "power_setpoint", -3000, lambda f: f.cmd.power_w[0] == -3000.0),
    ("opendtu_inverter", "pv", "power_setpoint", 300, lambda f: f.cmd.power_w[0] == -300.0),
]
COMPONENT = {
    "power_setpoint": "number",
    "current_setpoint": "number",
    "relay": "switch",
    "auto": "button",
}


def test_controls_reach_the_device(mosquitto, recorder):
    """Render each control's command_template as HA would and publish it: the device acts
    (one emulated device per case, all running at once)."""
    fleets = [
        start_emulators(
            kind,
            prof,
            1,
            mosquitto.url,
            id_prefix=f"ctl{k}",
            prefix="ctl",
            interval_s=0.5,
            homeassistant=True,
        )
        for k, (prof, kind, *_) in enumerate(CONTROLS)
    ]
    try:
        for fleet, (prof, kind, obj, value, check) in zip(fleets, CONTROLS, strict=True):
            node = f"cps_{fleet.device_ids[0]}"
            comp = COMPONENT[obj]
            topic = f"homeassistant/{comp}/{node}/{obj}/config"
            assert _wait(lambda topic=topic: topic in recorder.configs()), (prof, kind, obj)
            cfg = recorder.configs()[topic]
            if obj == "auto":
                value = cfg["payload_press"]
            elif comp == "number":
                assert cfg["min"] <= value <= cfg["max"]
            t, payload = _command(cfg, value)
            recorder.c.publish(t, payload, qos=1).wait_for_publish(5)
            assert _wait(lambda fleet=fleet, check=check: check(fleet)), (
                prof,
                kind,
                t,
                payload,
                fleet.summary(),
            )
    finally:
        for f in fleets:
            f.stop()


def test_birth_message_republishes_and_removal_only_when_asked(mosquitto, recorder):
    with start_emulators(
        "plug", "tasmota_plug", 2, mosquitto.url, id_prefix="hb", interval_s=0.5, homeassistant=True
    ) as fleet:

        def own() -> int:  # this fleet's configs (the broker may hold other tests' too)
            return len([m for m in recorder.msgs if m[0].endswith("/config") and "cps_hb-" in m[0]])

        assert _wait(lambda: fleet.stats.ha_announcements == 1 and own() > 0)
        time.sleep(0.3)
        n = own()
        recorder.c.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        assert _wait(lambda: own() >= 2 * n)
        assert _wait(lambda: fleet.stats.ha_announcements == 2)
    time.sleep(0.3)
    assert not [m for m in recorder.msgs if m[0].endswith("/config") and m[1] == b""]
    kept = recorder.configs()
    with start_emulators(
        "plug",
        "tasmota_plug",
        2,
        mosquitto.url,
        id_prefix="hr",
        interval_s=0.5,
        homeassistant=True,
        ha_remove_on_stop=True,
    ):
        assert _wait(lambda: any("cps_hr-" in t for t in recorder.configs()))

    def removed() -> set[str]:
        return {m[0] for m in recorder.msgs if m[0].endswith("/config") and m[1] == b""}

    # the same profile and count as the first fleet: as many entities to remove as it kept
    assert _wait(lambda: len(removed()) >= len(kept))  # empty configs travel via the broker
    assert all("cps_hr-" in t for t in removed())
    assert all(t in recorder.configs() for t in kept)  # the first fleet's entities stay
