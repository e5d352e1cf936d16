"""docs/mqtt.md seen from outside: an independent paho client subscribed to ``#`` during a
``cps-sim hil`` run (an exposed group, a HEMS group with an emulated charger bound to a
member) checks every row of the topic table -- topic, QoS, retain flag, payload -- on the
wire, publishes the page's own group and member setpoint examples and sees them taken and
acknowledged, and finds the retained ``offline`` states and the simulator's client id and
keepalive that the page promises."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.subscribeoptions import SubscribeOptions

from cps_sim.bridge import schema as S
from cps_sim.bridge.hil import HilOptions, run_hil

pytestmark = [pytest.mark.mqtt, pytest.mark.hil, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "mqtt.md").read_text()
PREFIX = "cps/c"
ID = r"[A-Za-z0-9_-]{1,64}"
TRIPS = {"probability": 1, "departure_h": 10.5, "duration_h": 0.1, "distance_km": 10}


def doc_example(name: str) -> dict:
    m = re.search(rf"<!-- example: {name} -->\n```json\n(.*?)\n```", DOC, re.S)
    assert m, name
    return json.loads(m.group(1))


def topic_table() -> list[tuple[re.Pattern[str], int, bool, str]]:
    """(topic regex, QoS, retained, pattern) for every row of the page's topic table."""
    table = DOC.split("\n## Topics\n")[1].split("\n## ")[0]
    rows = []
    for pattern, _publisher, qos, retained in re.findall(
        r"^\| `(<prefix>/[^`]+)` \| ([^|]+) \| (\d) \| ([^|]+) \|", table, re.M
    ):
        rx = re.escape(pattern).replace(re.escape("<prefix>"), re.escape(PREFIX))
        rx = re.sub(r"<\w+>", ID, rx)
        rows.append((re.compile(rx + "$"), int(qos), retained.strip() == "yes", pattern))
    return rows


def home(name: str, n: int) -> dict:
    ev = {
        "share": 1,
        "charger_kw": 6,
        "initial_soc": 0.5,
        "trips": {"weekday": TRIPS, "weekend": TRIPS},
    }
    return {
        "name": name,
        "count": n,
        "pv": {"share": 1, "capacity_kw": 4},
        "battery": {"share": 1, "capacity_kwh": 10, "power_kw": 3, "control": "idle"},
        "ev": ev,
    }


def test_every_documented_topic_and_payload_on_the_wire(mosquitto, tmp_path):
    rows = topic_table()
    assert len(rows) == 9, [r[3] for r in rows]  # the page's table, parsed
    scenario = {
        "version": 1,
        "name": "contract",
        "seed": 3,
        "start": "2026-05-11T10:00:00+09:00",
        "duration_days": 5 / 1440,
        "tick_s": 60,
        "weather": {"source": "constant", "constant_ghi_w_m2": 300},
        "sites": [home("lab", 3), home("homes", 2)],
        "ems": {"homes": {"kind": "hems", "interval_s": 60, "ev_strategy": "now"}},
        "bridge": {
            "prefix": PREFIX,
            "expose": ["lab"],
            "devices": [
                {
                    "name": "charger0",
                    "binds": {"group": "homes", "site": 0, "kind": "ev"},
                    "emulated": True,
                    "ttl_s": 60,
                }
            ],
        },
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))

    got: list[tuple[str, int, bool, bytes, float]] = []
    first_obs = threading.Event()

    def on_message(_c, _u, m):
        got.append((m.topic, m.qos, bool(m.retain), bytes(m.payload), time.time()))
        if m.topic == f"{PREFIX}/group/lab/observation":
            first_obs.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    # QoS 2 and retain-as-published: each message arrives with the QoS and retain flag it
    # was published with
    c.subscribe("#", options=SubscribeOptions(qos=2, retainAsPublished=True))
    time.sleep(0.3)

    def controller():  # the page's own examples, as an external controller sends them
        if not first_obs.wait(90):  # (building the world takes a while on a loaded machine)
            return
        sp = {**doc_example("group_setpoint"), "ts": time.time()}
        c.publish(f"{PREFIX}/group/lab/setpoint", json.dumps(sp), qos=1).wait_for_publish(5)
        time.sleep(0.3)  # taken before the member setpoint: the member's is newer
        msp = {**doc_example("member_setpoint"), "ts": time.time()}
        c.publish(f"{PREFIX}/dev/lab-0-ev/setpoint", json.dumps(msp), qos=1).wait_for_publish(5)

    th = threading.Thread(target=controller)
    th.start()
    try:
        res = run_hil(
            path,
            HilOptions(broker=mosquitto.url, speed=120, emulate=True, quiet=True),
            out_dir=tmp_path / "out",
        )
    finally:
        th.join(95)
        time.sleep(0.3)
        c.disconnect()
        c.loop_stop()
    k = res.kpis
    assert k["bridge_rejected"] == 0 and k["bridge_lab_setpoints_applied"] == 1

    # --- every message matches one row of the table, with its QoS and retain flag
    seen: dict[str, int] = defaultdict(int)
    for topic, qos, retained, payload, _ in got:
        match = [r for r in rows if r[0].match(topic)]
        assert len(match) == 1, (topic, [r[3] for r in match])
        _, want_qos, want_retained, pattern = match[0]
        assert (qos, retained) == (want_qos, want_retained), (topic, qos, retained, payload)
        seen[pattern] += 1
    assert set(seen) == {r[3] for r in rows}, set(seen) ^ {r[3] for r in rows}

    # --- payloads: plain text where the page says so, else the JSON envelope
    streams: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    sim_sid = None
    for topic, _qos, _ret, payload, _ in got:
        if topic.endswith(("/status", "/availability")):
            assert payload in (b"online", b"offline"), (topic, payload)
            continue
        obj = S.parse_json(payload)
        assert isinstance(obj, dict), (topic, payload)
        env = S.check_envelope(obj)
        assert isinstance(env, S.Envelope), (topic, payload, env)
        streams[(topic, env.sid)].append(env.seq)
        if topic == f"{PREFIX}/clock":
            sim_sid = env.sid
    for (topic, _sid), seqs in streams.items():  # +1 per message on one topic
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (topic, seqs)
    assert sim_sid is not None and re.fullmatch(ID, sim_sid)

    def payloads(topic: str) -> list[dict]:
        return [json.loads(p) for t, _q, _r, p, _w in got if t == topic and p[:1] == b"{"]

    # clock: after every settlement tick, exactly the documented keys
    clocks = payloads(f"{PREFIX}/clock")
    assert [m["sim_time_s"] for m in clocks] == [60.0 * i for i in range(1, 6)]
    assert all(set(m) == set(doc_example("clock")) for m in clocks), clocks[0]
    assert all(m["speed"] == 120.0 and m["lag_s"] >= 0 and m["sid"] == sim_sid for m in clocks)
    assert all(m["sim_iso"].startswith("2026-05-11T10:0") for m in clocks)

    # events: kind = the topic's last level, a kind the page lists, the documented keys
    listed = set(re.findall(r"`(\w+)`", DOC.split("\n## Events\n")[1].split("\n## ")[0]))
    events = [(t, json.loads(p)) for t, _q, _r, p, _w in got if t.startswith(f"{PREFIX}/event/")]
    assert {e["kind"] for _, e in events} >= {"fallback", "fallback_end", "available"}
    for t, e in events:
        assert t.rsplit("/", 1)[1] == e["kind"] and e["kind"] in listed, (t, e)
        assert set(e) == set(doc_example("event")), e

    # observation of the exposed group from t = 0 at every tick, the example's keys
    obs = payloads(f"{PREFIX}/group/lab/observation")
    assert [m["sim_time_s"] for m in obs] == [60.0 * i for i in range(6)]
    for m in obs:
        assert set(doc_example("observation")) <= set(m), set(doc_example("observation")) - set(m)
        assert m["n_sites"] == 3 and m["n_evs"] == 3 and m["group"] == "lab"
        for key, value in m.items():
            if isinstance(value, list):
                assert len(value) == (m["n_evs"] if key.startswith("ev_") else 3), key

    # the simulator's own HEMS speaks the group setpoint schema on the homes' topic
    for m in payloads(f"{PREFIX}/group/homes/setpoint"):
        out = S.decode_group_setpoint(
            m,
            {
                "ev_setpoint_w": 2,
                "battery_setpoint_w": 2,
                "import_limit_w": 2,
                "export_limit_w": 2,
                "deferrable_setpoint_w": 2,
            },
        )
        assert not isinstance(out, S.Reject), (m, out)

    # members of the exposed group: telemetry with the documented keys and signs
    member_keys = {
        "ev": {"power_w", "soc", "energy_wh", "plugged"},
        "battery": {"power_w", "soc", "energy_wh"},
        "pv": {"power_w"},
        "load": {"power_w"},
    }
    envelope = {"v", "seq", "ts", "sid", "sim_time_s"}
    for site in range(3):
        for kind, keys in member_keys.items():
            tel = payloads(f"{PREFIX}/dev/lab-{site}-{kind}/telemetry")
            assert len(tel) == 6, (site, kind)
            for m in tel:
                assert set(m) == envelope | keys, (kind, m)
                if kind == "pv":
                    assert m["power_w"] <= 0
                if kind == "load":
                    assert m["power_w"] >= 0
    # bound device and emulator: <prefix>/dev/<name> of its bridge.devices entry
    for topic in (f"{PREFIX}/dev/charger0/{leaf}" for leaf in ("telemetry", "state")):
        assert payloads(topic), topic
    for m in payloads(f"{PREFIX}/dev/charger0/telemetry"):
        assert isinstance(S.decode_measurement(json.dumps(m).encode()), S.Measurement)
    for topic in {t for t, *_ in got if t.endswith("/state")}:
        for m in payloads(topic):
            st = S.decode_measurement(json.dumps(m).encode(), role="state")
            assert isinstance(st, S.Measurement) and st.unknown_keys == (), (topic, m)
    for m in payloads(f"{PREFIX}/dev/charger0/setpoint"):
        sp = S.decode_setpoint(json.dumps(m).encode())
        assert not isinstance(sp, S.Reject) and m["ttl_s"] == 60.0, m
        assert 0 <= m["power_w"] <= 6000.0

    # the page's member setpoint was taken and acknowledged on the member's state topic
    acks = [m for m in payloads(f"{PREFIX}/dev/lab-0-ev/state") if m.get("setpoint_seq") == 5]
    assert acks and acks[0]["setpoint_power_w"] == 1500.0 and acks[0]["mode"] == "setpoint"
    assert acks[0]["reason"] == "following the member setpoint" and not acks[0]["fallback"]
    # ... and lab-1-ev follows the page's group setpoint (0 W): acknowledged as such
    states1 = payloads(f"{PREFIX}/dev/lab-1-ev/state")
    assert any(
        m.get("setpoint_power_w") == 0.0 and m["reason"] == "following the group setpoint"
        for m in states1
    ), states1

    # --- after the run: retained offline for the simulator and every device
    ret: dict[str, bytes] = {}
    c2 = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c2.on_message = lambda _c, _u, m: ret.__setitem__(m.topic, bytes(m.payload))
    c2.connect(mosquitto.host, mosquitto.port)
    c2.loop_start()
    c2.subscribe(f"{PREFIX}/#", qos=1)
    deadline = time.monotonic() + 5
    while len(ret) < 1 + 3 * 4 + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    c2.disconnect()
    c2.loop_stop()
    assert ret[f"{PREFIX}/status"] == b"offline"
    avail = {t: p for t, p in ret.items() if t.endswith("/availability")}
    assert len(avail) == 3 * 4 + 1 and set(avail.values()) == {b"offline"}, ret
    assert set(ret) == {f"{PREFIX}/status", *avail}  # nothing else is retained

    # --- the simulator's client: id cps-sim-<12 hex>, MQTT 5, keepalive 10 s
    log = mosquitto.log_path.read_text()
    assert re.search(
        r"New client connected from \S+ as cps-sim-[0-9a-f]{12} \(p5, c\d, k10", log
    ), log
