"""The no-setup broker: Mosquitto when installed, else amqtt in-process (forced here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cps_sim.bridge import embedded_broker as eb
from cps_sim.bridge.emulate import start_emulators
from cps_sim.core.errors import BridgeError

pytestmark = pytest.mark.mqtt

REPO = Path(__file__).resolve().parents[2]


def _client(url: str, client_id: str, will: tuple[str, bytes] | None = None):
    import paho.mqtt.client as mqtt

    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    got = []
    c.on_message = lambda cl, u, m: got.append((m.topic, bytes(m.payload), bool(m.retain)))
    c.connect(host, int(port), keepalive=5)
    c.loop_start()
    return c, got


def _wait(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_amqtt_fallback_works_without_mosquitto(tmp_path, monkeypatch):
    pytest.importorskip("amqtt")
    monkeypatch.setattr(eb, "mosquitto_binary", lambda: None)  # as on a machine without it
    broker = eb.start_embedded_broker(tmp_path / "b")
    try:
        assert broker.kind == "amqtt" and broker.running()
        # retained QoS 1 message (an HA discovery config) reaches a later subscriber
        pub, _ = _client(broker.url, "pub")
        pub.publish(
            "homeassistant/sensor/x/config", json.dumps({"name": "x"}), qos=1, retain=True
        ).wait_for_publish(5)
        sub, got = _client(broker.url, "sub")
        sub.subscribe("#", qos=1)
        assert _wait(lambda: ("homeassistant/sensor/x/config", b'{"name": "x"}', True) in got)
        # emulators run on it (MQTT 3.1.1) and their commands round-trip
        with start_emulators(
            "battery", "generic", 2, broker.url, prefix="am", interval_s=0.2
        ) as fleet:
            base = fleet.device_topics[0]
            assert _wait(lambda: any(t == f"{base}/telemetry" for t, _, _ in got))
            pub.publish(
                f"{base}/setpoint",
                json.dumps({"v": 1, "seq": 1, "ts": time.time(), "ttl_s": 30, "power_w": 1000.0}),
                qos=1,
            )
            assert _wait(
                lambda: any(t == f"{base}/state" and b'"setpoint_seq":1' in p for t, p, _ in got)
            )
        # a client that vanishes without DISCONNECT gets its last will published
        dying, _ = _client(broker.url, "dying", will=("am/dying/availability", b"offline"))
        time.sleep(0.2)
        dying._sock.close()  # no DISCONNECT: like a killed process
        dying.loop_stop()
        assert _wait(
            lambda: (
                ("am/dying/availability", b"offline", False) in got
                or ("am/dying/availability", b"offline", True) in got
            ),
            10,
        )
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
    finally:
        broker.stop()
    assert not broker.running()


def test_hil_demo_on_the_python_broker_without_mosquitto(tmp_path, monkeypatch, capsys):
    """`cps-sim hil scenarios/hil_demo.yaml --emulate` on a machine without Mosquitto: the
    amqtt broker starts, the simulator connects with MQTT 3.1.1 (all amqtt speaks), the
    emulated charger and battery follow the HEMS's setpoints and their power is booked."""
    pytest.importorskip("amqtt")
    from cps_sim.bridge.hil import HilOptions, run_hil

    monkeypatch.setattr(eb, "mosquitto_binary", lambda: None)
    res = run_hil(
        REPO / "scenarios" / "hil_demo.yaml",
        HilOptions(speed=120, duration_s=300, emulate=True, quiet=False),
        # 30 simulated s = 0.25 wall s at 120x: too short on a loaded machine
        overrides=["bridge.devices[0].max_age_s=300", "bridge.devices[1].max_age_s=300"],
        out_dir=tmp_path / "out",
    )
    assert "broker embedded amqtt mqtt://127.0.0.1:" in capsys.readouterr().err
    k = res.kpis
    assert k["ticks"] == 5 and k["bridge_rejected"] == 0
    for dev in ("charger0", "battery0"):
        assert k[f"bridge_dev_{dev}_setpoints_sent"] > 0  # the loop closed: sent, acked,
        assert k[f"bridge_dev_{dev}_ack_p50_s"] > 0  # measured and booked
        assert k[f"bridge_dev_{dev}_measurements"] > 0 and k[f"bridge_dev_{dev}_stale"] == 0
    assert abs(k["balance_residual_wh"]) < 1e-3


def test_prefers_mosquitto_when_installed(tmp_path):
    if eb.mosquitto_binary() is None:
        pytest.skip("mosquitto not installed")
    broker = eb.start_embedded_broker(tmp_path / "b")
    try:
        assert broker.kind == "mosquitto" and broker.running()
    finally:
        broker.stop()


def test_no_broker_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(eb, "mosquitto_binary", lambda: None)
    monkeypatch.setattr(eb.importlib.util, "find_spec", lambda name: None)  # no amqtt
    with pytest.raises(BridgeError, match=r"install Mosquitto .*cps-sim\[broker\]"):
        eb.start_embedded_broker(tmp_path / "b")
