"""What an external controller sees of an exposed group's members, checked against
docs/mqtt.md (member setpoint, state) and docs/hil.md (Home Assistant) on a real broker:

* a group setpoint beyond a charger's rating is applied clamped, and the member's state
  says what it follows *after* the clamp (it said 9000 W for a 6 kW charger);
* a rejected member setpoint is answered with the reason, and later states say what the
  member follows again (the old rejection stuck to every later state);
* one clamped group setpoint is one ``setpoint_clamped`` event, however often it is
  re-applied (each member setpoint re-applied it with a new event);
* a setpoint for a load member (observed only) is refused (``unknown_field``), not lost;
* the group falls back ``ttl_s`` after its last setpoint;
* Home Assistant: a member's ``energy_wh`` (the energy in its pack) is an
  ``energy_storage`` sensor, not a ``total_increasing`` meter; its entities are available
  only while the simulator's status is ``online`` too (a killed run left them available).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cps_sim.bridge.hil import HilOptions, run_hil
from tests.integration.mqtt_helpers import client, stop

pytestmark = [pytest.mark.mqtt, pytest.mark.hil, pytest.mark.timeout(120)]

P = "cps/ms"
NO_TRIPS = {"probability": 0, "departure_h": 8, "duration_h": 1, "distance_km": 1}


def scenario_file(tmp_path: Path) -> Path:
    d = {
        "version": 1,
        "name": "member_state",
        "seed": 5,
        "start": "2026-05-11T10:00:00+09:00",
        "duration_days": 10 / 1440,
        "tick_s": 60,
        "weather": {"source": "constant", "constant_ghi_w_m2": 0},
        "sites": [
            {
                "name": "lab",
                "count": 1,
                "battery": {"share": 1, "capacity_kwh": 10, "power_kw": 3, "initial_soc": 0.5},
                "ev": {
                    "share": 1,
                    "charger_kw": 6,
                    "capacity_kwh": 40,
                    "initial_soc": 0.3,
                    "trips": {"weekday": NO_TRIPS, "weekend": NO_TRIPS},
                },
            }
        ],
        "bridge": {
            "prefix": P,
            "homeassistant": True,
            "expose": [{"group": "lab", "fallback": "off"}],
        },
    }
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


class Controller:
    def __init__(self, broker):
        self.seq = 0
        self.done: set[str] = set()
        self.ha: dict[str, dict] = {}
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.c = client(
            broker.host,
            broker.port,
            on_message=self.on_message,
            subscribe=["homeassistant/#", f"{P}/group/lab/observation"],
        )

    def send(self, topic: str, **body) -> None:
        self.seq += 1
        msg = {"v": 1, "seq": self.seq, "ts": time.time(), **body}
        self.c.publish(topic, json.dumps(msg), qos=1)

    def on_message(self, _c, _u, msg) -> None:
        try:
            if msg.topic.startswith("homeassistant/"):
                if msg.payload:
                    self.ha[msg.topic] = json.loads(msg.payload)
                return
            t = json.loads(msg.payload)["sim_time_s"]
            with self.lock:
                self.step(t)
        except BaseException as exc:
            self.errors.append(exc)

    def at(self, name: str, t: float, when: float) -> bool:
        if t >= when and name not in self.done:
            self.done.add(name)
            return True
        return False

    def step(self, t: float) -> None:
        group = f"{P}/group/lab/setpoint"
        if self.at("G1", t, 60):  # 9 kW for a 6 kW charger
            self.send(group, ttl_s=3000, ev_setpoint_w=[9000.0], battery_setpoint_w=[500.0])
        if self.at("bad", t, 180):  # a current limit: not for a simulated charger
            self.send(f"{P}/dev/lab-0-ev/setpoint", ttl_s=600, current_a=10.0)
        if self.at("load", t, 200):  # a load member is observed only
            self.send(f"{P}/dev/lab-0-load/setpoint", ttl_s=600, power_w=0.0)
        if self.at("M", t, 240):  # another member's setpoint re-applies the group's
            self.send(f"{P}/dev/lab-0-battery/setpoint", ttl_s=600, power_w=-1000.0)
        if self.at("G2", t, 300):  # then silence: the fallback ('off') after 120 s
            self.send(group, ttl_s=120, ev_setpoint_w=[2000.0])


def test_member_state_clamp_reason_fallback_and_home_assistant(mosquitto, tmp_path):
    ctl = Controller(mosquitto)
    try:
        res = run_hil(
            scenario_file(tmp_path),
            HilOptions(broker=mosquitto.url, speed=300, quiet=True),
            out_dir=tmp_path / "out",
        )
    finally:
        stop(ctl.c)
    assert not ctl.errors, ctl.errors
    assert ctl.done == {"G1", "bad", "load", "M", "G2"}
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    out = log[log.direction == "out"]

    def bodies(topic: str) -> list[dict]:
        return [json.loads(p) for p in out[out.topic == topic].payload]

    taken = log[(log.direction == "in") & log.topic.str.endswith("/setpoint")]
    t_g1, t_bad, _t_load, _t_m, t_g2 = taken.sim_time_s.tolist()
    assert taken.reason.tolist() == ["", "unknown_field", "unknown_field", "", ""]
    assert "observed only" in taken.detail.tolist()[2]
    assert res.kpis["bridge_rejected_unknown_field"] == 2

    states = bodies(f"{P}/dev/lab-0-ev/state")
    after_g1 = [s for s in states if t_g1 <= s["sim_time_s"] < t_bad]
    assert after_g1, states
    assert after_g1[0]["setpoint_power_w"] == 6000.0  # the rating, not the 9000 W asked
    assert after_g1[0]["reason"] == "following the group setpoint"
    answer = [s for s in states if s["sim_time_s"] == t_bad]
    assert len(answer) == 1 and answer[0]["reason"].startswith("unknown_field: ")
    later = [s for s in states if s["sim_time_s"] > t_bad]
    assert later and all(not s["reason"].startswith("unknown_field") for s in later), later
    assert [s["reason"] for s in later if s["sim_time_s"] == t_g2] == [
        "following the group setpoint"
    ]

    # the clamped value is what the charger got: 6 kW over the whole tick after G1
    tel = bodies(f"{P}/dev/lab-0-ev/telemetry")
    full_ticks = [m["power_w"] for m in tel if t_g1 + 60 <= m["sim_time_s"] - 60 < t_g2 - 60]
    assert full_ticks and all(p == pytest.approx(6000.0) for p in full_ticks), tel

    events = [json.loads(p) for p in out[out.topic.str.startswith(f"{P}/event/")].payload]
    clamps = [e for e in events if e["kind"] == "setpoint_clamped"]
    assert len(clamps) == 1 and clamps[0]["subject"] == "lab", clamps
    assert res.kpis["bridge_lab_setpoints_clamped"] == 1
    fallbacks = [e["sim_time_s"] for e in events if e["kind"] == "fallback"]
    assert fallbacks[0] == 0.0  # the run starts in the fallback
    assert fallbacks[-1] == pytest.approx(t_g2 + 120, abs=2.0)  # its ttl after G2

    for kind in ("ev", "battery"):
        cfg = ctl.ha[f"homeassistant/sensor/cps_lab-0-{kind}/energy_wh/config"]
        assert (cfg["device_class"], cfg["state_class"]) == ("energy_storage", "measurement")
        # available only while the simulator is: its will cannot clear the member's 'online'
        num = ctl.ha[f"homeassistant/number/cps_lab-0-{kind}/power_setpoint/config"]
        assert num["availability_mode"] == "all"
        assert [a["topic"] for a in num["availability"]] == [
            f"{P}/dev/lab-0-{kind}/availability",
            f"{P}/status",
        ]
