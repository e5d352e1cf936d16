"""Emulated devices against a real Mosquitto: setpoints, fail-safe, LWT, P9, energy balance."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cps_sim.bridge.emulate import EmulatorConfig, EmulatorFleet, start_emulators
from cps_sim.bridge.profiles import Measurement, Setpoint, load_profile

pytestmark = pytest.mark.mqtt


class Listener:
    """A plain paho client that records every message (topic, payload, retain, wall time)."""

    def __init__(self, url: str, pattern: str = "#"):
        import paho.mqtt.client as mqtt

        host, port = url.removeprefix("mqtt://").split(":")
        self.msgs: list[tuple[float, str, bytes, bool]] = []
        self.cv = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on
        self.c.connect(host, int(port))
        self.c.subscribe(pattern, 1)
        self.c.loop_start()
        time.sleep(0.1)

    def _on(self, client, userdata, msg):
        with self.cv:
            self.msgs.append((time.time(), msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.cv.notify_all()

    def wait_for(self, pred, timeout_s: float = 5.0):
        deadline = time.monotonic() + timeout_s
        with self.cv:
            while True:
                hits = [m for m in self.msgs if pred(m)]
                if hits:
                    return hits[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching message within {timeout_s} s; got "
                        f"{[(m[1], m[2][:60]) for m in self.msgs[-10:]]}"
                    )
                self.cv.wait(left)

    def on(self, topic: str) -> list[tuple[float, str, bytes, bool]]:
        with self.cv:
            return [m for m in self.msgs if m[1] == topic]

    def publish(self, topic: str, payload, retain: bool = False):
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self):
        self.c.disconnect()  # wakes paho's loop, so loop_stop does not wait out its select
        self.c.loop_stop()


@pytest.fixture
def listener(mosquitto):
    lst = Listener(mosquitto.url)
    yield lst
    lst.close()


def setpoint(seq: int, ttl_s: float = 30.0, **control) -> dict:
    return {"v": 1, "seq": seq, "ts": time.time(), "ttl_s": ttl_s, **control}


def telemetry(lst: Listener, topic: str) -> list[dict]:
    return [json.loads(m[2]) for m in lst.on(topic)]


# --------------------------------------------------------------------------- fail-safe (T13)
@pytest.mark.parametrize(
    ("kind", "control", "failsafe_power"),
    [
        ("battery", {"power_w": 3000.0}, 0.0),
        ("heat_pump", {"on": False}, None),
        ("plug", {"on": False}, None),
    ],
)
def test_failsafe_within_ttl_plus_one_interval(mosquitto, listener, kind, control, failsafe_power):
    ttl, interval = 0.6, 0.2
    with start_emulators(
        kind, "generic", 2, mosquitto.url, prefix="t13", interval_s=interval, seed=3
    ) as fleet:
        base = fleet.device_topics[1]
        listener.wait_for(lambda m: m[1] == f"{base}/telemetry")
        sent = time.time()
        listener.publish(f"{base}/setpoint", setpoint(1, ttl_s=ttl, **control))
        ack = listener.wait_for(
            lambda m: m[1] == f"{base}/state" and json.loads(m[2]).get("setpoint_seq") == 1
        )
        assert json.loads(ack[2])["fallback"] is False
        fb = listener.wait_for(
            lambda m: m[1] == f"{base}/state" and json.loads(m[2])["fallback"] is True, timeout_s=3
        )
        # the watchdog fires ttl after the command arrived; allow one telemetry interval
        assert fb[0] - sent <= ttl + interval, fb[0] - sent
        assert fb[0] - sent >= ttl - 0.05
        time.sleep(2 * interval)
        if failsafe_power is not None:
            after = [t for t in telemetry(listener, f"{base}/telemetry") if t["ts"] > fb[0] + 0.01]
            assert after and all(t["power_w"] == failsafe_power for t in after)
        assert fleet.stats.fallbacks == 1


# --------------------------------------------------------------------------- setpoint application
def test_battery_follows_setpoint_exactly_and_clamps(mosquitto, listener):
    with start_emulators(
        "battery", "generic", 1, mosquitto.url, prefix="sp", interval_s=0.2, seed=1
    ) as fleet:
        base = fleet.device_topics[0]
        listener.wait_for(lambda m: m[1] == f"{base}/telemetry")
        listener.publish(f"{base}/setpoint", setpoint(1, power_w=-2500.0))
        listener.publish(f"{base}/setpoint", setpoint(2, power_w=20000.0))  # over the rating
        ack = listener.wait_for(
            lambda m: m[1] == f"{base}/state" and json.loads(m[2]).get("setpoint_seq") == 2
        )
        body = json.loads(ack[2])
        assert body["setpoint_power_w"] == 5000.0  # rated 5 kW
        assert "clamped to 5000" in body["reason"]
        time.sleep(0.7)
        seq2_at = json.loads(ack[2])["ts"]
        full = [t for t in telemetry(listener, f"{base}/telemetry") if t["ts"] > seq2_at + 0.25]
        assert full and all(t["power_w"] == pytest.approx(5000.0, rel=1e-9) for t in full)
        assert gc.get_freeze_count() > 0  # a serving fleet keeps its set-up out of full GCs
    assert gc.get_freeze_count() == 0  # and hands it back when it stops


def test_retained_stale_duplicate_and_out_of_order_commands_are_ignored(mosquitto, listener):
    topic = "p9/dev/battery-0000/setpoint"
    listener.publish(topic, setpoint(7, power_w=4000.0), retain=True)  # left over from a run
    with start_emulators(
        "battery", "generic", 1, mosquitto.url, prefix="p9", interval_s=0.2
    ) as fleet:
        base = fleet.device_topics[0]
        listener.wait_for(lambda m: m[1] == f"{base}/telemetry")
        time.sleep(0.3)
        assert fleet.stats.ignored["retained"] == 1
        assert fleet.stats.commands == 0
        old = setpoint(1, power_w=1000.0)
        old["ts"] -= 3600  # an hour old
        listener.publish(topic, old)
        good = setpoint(2, power_w=1500.0)
        listener.publish(topic, good)
        listener.publish(topic, good)  # QoS 1 re-delivery
        earlier = setpoint(3, power_w=-1500.0)
        earlier["ts"] = good["ts"] - 1.0  # reordered
        listener.publish(topic, earlier)
        listener.wait_for(
            lambda m: m[1] == f"{base}/state" and json.loads(m[2]).get("setpoint_seq") == 2
        )
        time.sleep(0.3)
        s = fleet.stats
        assert (s.ignored["stale"], s.ignored["duplicate"], s.ignored["out_of_order"]) == (1, 1, 1)
        assert s.commands == 1
        assert fleet.cmd.power_w[0] == 1500.0
    listener.publish(topic, b"", retain=True)


def test_mqtt5_ignores_a_command_published_retained_while_listening(mosquitto, listener):
    """A 3.1.1 broker clears the retain flag on live delivery; under MQTT 5 the device
    subscribes with retain-as-published, so the docs' 'ignores retained commands' holds for
    a command published retained after it connected too."""
    topic = "p5/dev/battery-0000/setpoint"
    with start_emulators(
        "battery", "generic", 1, mosquitto.url, prefix="p5", interval_s=0.2, protocol="5"
    ) as fleet:
        base = fleet.device_topics[0]
        listener.wait_for(lambda m: m[1] == f"{base}/telemetry")
        listener.publish(topic, setpoint(1, power_w=4000.0), retain=True)
        listener.publish(topic, setpoint(2, power_w=1500.0))
        listener.wait_for(
            lambda m: m[1] == f"{base}/state" and json.loads(m[2]).get("setpoint_seq") == 2
        )
        assert fleet.stats.ignored["retained"] == 1 and fleet.stats.commands == 1
        assert fleet.cmd.power_w[0] == 1500.0
    listener.publish(topic, b"", retain=True)


def test_invalid_commands_are_rejected_with_a_reason_and_counted(mosquitto, listener):
    with start_emulators(
        "plug", "generic", 1, mosquitto.url, prefix="bad", interval_s=0.5
    ) as fleet:
        base = fleet.device_topics[0]
        listener.wait_for(lambda m: m[1] == f"{base}/availability")
        listener.publish(f"{base}/setpoint", b'{"v":1,"seq":1,"ts":1,"power_w":NaN}')
        listener.publish(f"{base}/setpoint", setpoint(2, current_a=10.0))  # plug: no current
        r1 = listener.wait_for(
            lambda m: m[1] == f"{base}/state" and "nan_or_inf" in json.loads(m[2]).get("reason", "")
        )
        r2 = listener.wait_for(
            lambda m: (
                m[1] == f"{base}/state"
                and "does not take ['current_a']" in json.loads(m[2]).get("reason", "")
            )
        )
        assert r1 and r2
        assert fleet.stats.commands == 0 and sum(fleet.stats.rejected.values()) == 2


# --------------------------------------------------------------------------- energy balance
@pytest.mark.parametrize("kind", ["ev_charger", "battery", "pv", "plug", "heat_pump"])
def test_reported_energy_is_the_integral_of_reported_power(mosquitto, listener, kind):
    speed = 120.0
    with start_emulators(
        kind,
        "generic",
        3,
        mosquitto.url,
        prefix="eb",
        interval_s=0.1,
        speed=speed,
        seed=5,
        start="2026-05-01T11:00:00+09:00",
    ) as fleet:
        base = fleet.device_topics[0]
        time.sleep(0.4)
        control = {
            "ev_charger": {"current_a": 16.0},
            "battery": {"power_w": -3000.0},
            "pv": {"power_w": -1000.0},
            "plug": {"on": False},
            "heat_pump": {"power_w": 800.0},
        }[kind]
        listener.publish(f"{base}/setpoint", setpoint(1, **control))
        time.sleep(0.6)
    rows = telemetry(listener, f"{base}/telemetry")
    assert len(rows) >= 8
    ts = np.array([r["ts"] for r in rows])
    p = np.array([r["power_w"] for r in rows])
    e = np.array([r["energy_wh"] for r in rows])
    assert np.all(np.diff(ts) > 0)
    # each report's power is held over the window that ends at it
    integral_wh = np.sum(p[1:] * np.diff(ts) * speed) / 3600.0
    # exact up to the float64 resolution of the UNIX timestamps (one ulp per window end)
    tol = np.sum(np.abs(p[1:])) * 2 * np.spacing(ts.max()) * speed / 3600.0 + 1e-9
    assert abs(integral_wh - (e[-1] - e[0])) <= tol
    assert np.any(p != 0.0) or kind == "plug"


# --------------------------------------------------------------------------- vendor profiles
def test_vendor_profiles_close_the_loop(mosquitto, listener):
    """A controller using the profile codec drives emulators speaking each vendor's protocol."""
    cases = [
        ("tasmota_plug", "plug", Setpoint(on=False), {"on": False}),
        ("shelly_gen2", "plug", Setpoint(on=False), {"on": False}),
        ("openevse", "ev_charger", Setpoint(current_a=10.0), {"current_limit_a": 10.0}),
        ("goe", "ev_charger", Setpoint(current_a=8.0), {"current_limit_a": 8.0}),
        ("battery_inverter", "battery", Setpoint(power_w=2000.0), {"setpoint_power_w": 2000.0}),
    ]
    fleets = [
        start_emulators(kind, prof, 1, mosquitto.url, id_prefix=f"v{k}", interval_s=0.2)
        for k, (prof, kind, _, _) in enumerate(cases)
    ]
    try:
        for fleet, (prof, _, sp, want) in zip(fleets, cases, strict=True):
            profile = load_profile(prof)
            dev = fleet.device_topics[0]
            subs = set(profile.subscriptions(dev))
            listener.wait_for(lambda m, subs=subs: m[1] in subs)
            msgs = profile.encode_setpoint(dev, sp)
            for topic, payload, qos, retain in msgs:
                assert not retain
                listener.c.publish(topic, payload, qos=qos)

            def acked(m, profile=profile, subs=subs, want=want):
                if m[1] not in subs:
                    return False
                got = profile.decode(m[1], m[2])
                return isinstance(got, Measurement) and all(
                    got.signals.get(k) == v for k, v in want.items()
                )

            listener.wait_for(acked)
            deadline = time.monotonic() + 5
            while fleet.stats.commands < len(msgs) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fleet.stats.commands == len(msgs), prof  # go-e: amp/set and frc/set
            # availability decodes as online through the profile
            avail = [
                m
                for m in listener.msgs
                if m[1] in subs
                and isinstance(profile.decode(m[1], m[2]), Measurement)
                and profile.decode(m[1], m[2]).signals.get("available") is True
            ]
            assert avail, prof
    finally:
        for f in fleets:
            f.stop()


# --------------------------------------------------------------------------- LWT (T12)
def test_last_will_marks_devices_offline_when_the_process_is_killed(mosquitto, listener):
    cmd = [
        sys.executable,
        "-m",
        "cps_sim",
        "emulate",
        "tasmota_plug",
        "--count",
        "3",
        "--broker",
        mosquitto.url,
        "--id-prefix",
        "lwt",
        "--duration",
        "60s",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CI": "true"}
    )
    try:
        topics = [f"tele/lwt-{i:04d}/LWT" for i in range(3)]
        for t in topics:
            listener.wait_for(lambda m, t=t: m[1] == t and m[2] == b"Online", timeout_s=60)
        killed = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for t in topics:
            off = listener.wait_for(lambda m, t=t: m[1] == t and m[2] == b"Offline", timeout_s=15)
            assert off[0] - killed < 15  # keepalive 10 s x 1.5 at most; a reset is immediate
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_clean_stop_publishes_offline_and_shared_mode_has_a_fleet_will(mosquitto, listener):
    fleet = EmulatorFleet(
        EmulatorConfig(
            profile="generic",
            kind="meter",
            count=4,
            broker_url=mosquitto.url,
            prefix="sh",
            clients="shared",
            interval_s=0.2,
        )
    ).start()
    status = fleet.links.fleet_status
    listener.wait_for(lambda m: m[1] == status and m[2] == b"online")
    fleet.stop()
    listener.wait_for(lambda m: m[1] == status and m[2] == b"offline")
    for t in fleet.device_topics:
        listener.wait_for(lambda m, t=t: m[1] == f"{t}/availability" and m[2] == b"offline")
    assert len(fleet.links.clients) == 1


# --------------------------------------------------------------------------- broker restart
def test_emulators_reconnect_after_a_broker_crash(mosquitto, listener):
    with start_emulators(
        "battery", "generic", 3, mosquitto.url, prefix="rc", interval_s=0.2
    ) as fleet:
        base = fleet.device_topics[0]
        listener.wait_for(lambda m: m[1] == f"{base}/telemetry")
        mosquitto.kill()
        time.sleep(0.3)
        mosquitto.restart()
        fresh = Listener(mosquitto.url, "rc/#")
        try:
            fresh.wait_for(
                lambda m: m[1] == f"{base}/availability" and m[2] == b"online", timeout_s=10
            )
            fresh.wait_for(lambda m: m[1] == f"{base}/telemetry", timeout_s=5)
            fresh.publish(f"{base}/setpoint", setpoint(1, power_w=1000.0))
            fresh.wait_for(
                lambda m: m[1] == f"{base}/state" and json.loads(m[2]).get("setpoint_seq") == 1,
                timeout_s=5,
            )
        finally:
            fresh.close()
        assert fleet.stats.reconnects >= 3


def test_cli_errors_are_clear_and_start_nothing():
    out = subprocess.run(
        [sys.executable, "-m", "cps_sim", "emulate", "generic", "--count", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "error: the generic profile needs --kind" in out.stderr
    assert "Traceback" not in out.stderr and "embedded" not in out.stdout


EMULATE = [sys.executable, "-m", "cps_sim", "emulate", "generic"]


def test_first_id_spreads_one_rig_over_processes():
    """--first-id N numbers the devices from N and gives them their own population, so
    two processes of 3 devices serve the ids of one rig of 6 without a clash."""
    a = EmulatorFleet(EmulatorConfig(profile="generic", kind="battery", count=3, id_prefix="b"))
    b = EmulatorFleet(
        EmulatorConfig(profile="generic", kind="battery", count=3, id_prefix="b", first_id=3)
    )
    assert a.device_ids == ["b-0000", "b-0001", "b-0002"]
    assert b.device_ids == ["b-0003", "b-0004", "b-0005"]
    assert not np.array_equal(a.model.stored_wh, b.model.stored_wh)
    wide = EmulatorFleet(
        EmulatorConfig(profile="generic", kind="battery", count=2, id_prefix="b", first_id=99_999)
    )
    assert wide.device_ids == ["b-099999", "b-100000"]  # one width per fleet
    for bad in (-1, 10_000_001):
        with pytest.raises(Exception, match=r"first id must be an integer in 0\.\.10000000"):
            EmulatorFleet(EmulatorConfig(kind="battery", first_id=bad))
    out = subprocess.run(
        [*EMULATE, "--kind", "battery", "--first-id", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "first id must be an integer" in out.stderr and "Traceback" not in out.stderr
