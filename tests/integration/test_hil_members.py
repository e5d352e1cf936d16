"""Exposed groups, member by member, against a real Mosquitto: per-member setpoints (plain
JSON and Home Assistant's rendered discovery templates) combine with group setpoints as
docs/mqtt.md says (newest valid setpoint per member wins; expired -> the group's; none ->
the fallback); per-member telemetry reports the power the engine booked (CC-CV taper
included) and integrates to the booked energy; the recording replays exactly."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import jinja2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cps_sim.bridge.hil import HilOptions, run_hil, run_replay
from tests.integration.mqtt_helpers import client, stop

pytestmark = [pytest.mark.mqtt, pytest.mark.hil, pytest.mark.timeout(120)]

SPEED = 300.0
TICK = 60.0
MINUTES = 40
NO_TRIPS = {"probability": 0, "departure_h": 8, "duration_h": 1, "distance_km": 1}


def site_group(name: str, n: int, soc: float, **ev) -> dict:
    return {
        "name": name,
        "count": n,
        "battery": {"share": 1, "capacity_kwh": 10, "power_kw": 3, "initial_soc": 0.5},
        "ev": {
            "share": 1,
            "charger_kw": 6,
            "capacity_kwh": 40,
            "initial_soc": soc,
            "trips": {"weekday": NO_TRIPS, "weekend": NO_TRIPS},
            **ev,
        },
    }


def scenario_file(tmp_path: Path) -> Path:
    d = {
        "version": 1,
        "name": "members",
        "seed": 3,
        "start": "2026-05-11T10:00:00+09:00",
        "duration_days": MINUTES / 1440,
        "tick_s": TICK,
        "weather": {"source": "constant", "constant_ghi_w_m2": 0},
        "sites": [
            site_group("lab", 2, 0.3),
            site_group("full", 1, 0.9, taper_soc=0.8),  # tapers from the start
        ],
        "bridge": {
            "prefix": "cps/t",
            "homeassistant": True,
            "expose": [
                {"group": "lab", "fallback": "off"},
                {"group": "full", "fallback": "uncontrolled"},
            ],
        },
    }
    p = tmp_path / "members.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def render(template: str, value) -> str:
    env = jinja2.Environment(autoescape=False)

    class Now:
        def timestamp(self) -> float:
            return time.time()

    env.globals["now"] = Now
    return env.from_string(template).render(value=value).strip()


class Operator:
    """An external client: an EMS on the group topic, a person in Home Assistant on one
    charger and one battery, a script on a member topic — each at a simulated instant
    (read from the observations)."""

    def __init__(self, broker):
        self.configs: dict[str, dict] = {}
        self.done: set[str] = set()
        self.seq = 0
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.c = client(
            broker.host,
            broker.port,
            on_message=self.on_message,
            subscribe=["homeassistant/#", "cps/t/group/lab/observation"],
        )

    def env(self, **body) -> bytes:
        self.seq += 1
        return json.dumps({"v": 1, "seq": self.seq, "ts": time.time(), **body}).encode()

    def pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain)

    def ha(self, node: str, obj: str, value) -> None:
        comp = "number" if obj == "power_setpoint" else "button"
        cfg = self.configs[f"homeassistant/{comp}/cps_{node}/{obj}/config"]
        if comp == "button":
            value = cfg["payload_press"]
        self.pub(cfg["command_topic"], render(cfg["command_template"], value).encode())

    def on_message(self, _c, _u, msg) -> None:
        try:
            if msg.topic.startswith("homeassistant/"):
                if msg.payload:
                    self.configs[msg.topic] = json.loads(msg.payload)
                return
            t = json.loads(msg.payload)["sim_time_s"]
            with self.lock:
                self.step(t)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def once(self, name: str, t: float, at: float) -> bool:
        if t >= at and name not in self.done:
            self.done.add(name)
            return True
        return False

    def step(self, t: float) -> None:
        g = "cps/t/group/lab/setpoint"
        if self.once("G1", t, 300):
            self.pub(
                g, self.env(ttl_s=3000, ev_setpoint_w=[3000, 3000], battery_setpoint_w=[500, 500])
            )
        if self.once("HA", t, 600):
            self.ha("lab-0-ev", "power_setpoint", 1500)  # HA number: one charger
            self.ha("lab-0-battery", "auto", None)  # HA button: battery back to its rule
        if self.once("M1", t, 900):
            self.pub("cps/t/dev/lab-1-ev/setpoint", self.env(ttl_s=300, power_w=1000))
            # refused: a current limit for a simulated charger, an expired command
            self.pub("cps/t/dev/lab-1-ev/setpoint", self.env(ttl_s=300, current_a=10))
            late = json.loads(self.env(ttl_s=5, power_w=1))
            late["ts"] -= 30  # older than its ttl (but within max_skew_s)
            self.pub("cps/t/dev/lab-1-battery/setpoint", json.dumps(late).encode())
        if self.once("G2", t, 1500):
            self.pub(
                g, self.env(ttl_s=3000, ev_setpoint_w=[2000, 2000], battery_setpoint_w=[400, 400])
            )
        if self.once("M2", t, 1800):
            self.pub("cps/t/dev/lab-0-battery/setpoint", self.env(ttl_s=9000, power_w=-9000))

    def close(self) -> None:
        stop(self.c)


def expected_setpoint(rows, member: str, index: int, fallback: float):
    """The documented rule, written independently: at time t the member follows the newest
    (by arrival) of {the newest group setpoint, if within its ttl; its newest member
    setpoint, if within its ttl}; with neither, the group's fallback."""
    group, mine = [], []
    for order, (t, topic, payload) in enumerate(rows):
        body = json.loads(payload)
        if topic == "cps/t/group/lab/setpoint":
            key = "ev_setpoint_w" if member.endswith("-ev") else "battery_setpoint_w"
            group.append((t, order, t + body["ttl_s"], float(body[key][index]), "setpoint"))
        elif topic == f"cps/t/dev/{member}/setpoint":
            mode = "auto" if body.get("mode") == "auto" else "setpoint"
            mine.append((t, order, t + body["ttl_s"], float(body.get("power_w", 0.0)), mode))

    def at(t: float):
        cands = []
        for lst in (group, mine):
            past = [e for e in lst if e[0] <= t]
            if past and past[-1][2] > t:
                cands.append(past[-1])
        if not cands:
            return fallback, "fallback"
        best = max(cands, key=lambda e: e[1])
        return best[3], best[4]

    return at


def tick_average(at, t0: float, t1: float, changes: list[float]) -> float:
    cuts = sorted({t0, t1, *[c for c in changes if t0 < c < t1]})
    total = 0.0
    for a, b in itertools.pairwise(cuts):
        total += at(b - 1e-9)[0] * (b - a)  # value in force on (a, b]
    return total / (t1 - t0)


def out_rows(log, topic: str) -> list[dict]:
    sel = log[(log.direction == "out") & (log.topic == topic)]
    return [json.loads(p) for p in sel.payload]


def test_member_and_group_setpoints_combine_and_telemetry_is_booked(mosquitto, tmp_path):
    path = scenario_file(tmp_path)
    op = Operator(mosquitto)
    try:
        res = run_hil(
            path,
            HilOptions(broker=mosquitto.url, speed=SPEED, quiet=True, record=tmp_path / "r.pq"),
            out_dir=tmp_path / "live",
        )
    finally:
        op.close()
    assert not op.errors, op.errors
    assert op.done == {"G1", "HA", "M1", "G2", "M2"}
    k = res.kpis
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    inbound = log[log.direction == "in"]

    # Home Assistant: a power number and an auto button per charger and battery, on the
    # member setpoint topics; min/max are the member's rating
    num = op.configs["homeassistant/number/cps_lab-0-ev/power_setpoint/config"]
    assert num["command_topic"] == "cps/t/dev/lab-0-ev/setpoint"
    assert (num["min"], num["max"]) == (0.0, 6000.0)
    bnum = op.configs["homeassistant/number/cps_lab-1-battery/power_setpoint/config"]
    assert (bnum["min"], bnum["max"]) == (-3000.0, 3000.0)
    assert "homeassistant/button/cps_lab-1-battery/auto/config" in op.configs
    assert not any("lab-0-load" in t and "/number/" in t for t in op.configs)

    # what was refused, and why
    refused = inbound[~inbound.accepted]
    assert sorted(refused.reason) == ["expired", "unknown_field"]
    assert k["bridge_lab_member_setpoints"] == 4  # HA number, HA button, M1, M2
    assert k["bridge_lab_member_setpoints_expired"] == 1  # M1 after its 300 s
    assert k["bridge_lab_setpoints_applied"] == 2

    # per-member EV power, tick by tick, follows the documented rule exactly
    acc = inbound[inbound.accepted & inbound.topic.str.contains("/setpoint")]
    rows = list(zip(acc.sim_time_s, acc.topic, acc.payload, strict=True))
    changes = [r[0] for r in rows] + [json.loads(r[2])["ttl_s"] + r[0] for r in rows]
    for i in (0, 1):
        at = expected_setpoint(rows, f"lab-{i}-ev", i, fallback=0.0)
        tel = out_rows(log, f"cps/t/dev/lab-{i}-ev/telemetry")
        assert len(tel) == MINUTES + 1 and tel[0]["power_w"] == 0.0  # first: no interval yet
        for m in tel[1:]:
            t1 = m["sim_time_s"]
            want = tick_average(at, t1 - TICK, t1, changes)
            assert m["power_w"] == pytest.approx(want, rel=1e-9, abs=1e-6), (i, t1)
    # EV 0 went 0 -> 3000 (group) -> 1500 (HA) -> 2000 (the newer group setpoint wins)
    seen0 = [m["power_w"] for m in out_rows(log, "cps/t/dev/lab-0-ev/telemetry")]
    for v in (0.0, 3000.0, 1500.0, 2000.0):
        assert min(abs(x - v) for x in seen0) < 1e-6, (v, seen0)
    seen1 = [m["power_w"] for m in out_rows(log, "cps/t/dev/lab-1-ev/telemetry")]
    assert min(abs(x - 1000.0) for x in seen1) < 1e-6

    # batteries: where a tick lies wholly in a 'setpoint' spell, the booked power is it
    for i in (0, 1):
        at = expected_setpoint(rows, f"lab-{i}-battery", i, fallback=np.nan)
        checked = 0
        for m in out_rows(log, f"cps/t/dev/lab-{i}-battery/telemetry")[1:]:
            t1 = m["sim_time_s"]
            inside = [c for c in changes if t1 - TICK < c < t1]
            v, mode = at(t1 - 1e-9)
            if not inside and mode == "setpoint" and at(t1 - TICK + 1e-9)[1] == "setpoint":
                assert m["power_w"] == pytest.approx(max(v, -3000.0), rel=1e-9), (i, t1)
                checked += 1
        assert checked >= 10
    # the HA button put battery 0 on its rule: its state said so until the next setpoint
    st0 = out_rows(log, "cps/t/dev/lab-0-battery/state")
    assert any(s["mode"] == "auto" and s["reason"] == "following the member setpoint" for s in st0)
    assert st0[-1]["mode"] == "setpoint" and st0[-1]["setpoint_power_w"] == -3000.0  # clamped
    ev_clamp = log[(log.topic == "cps/t/event/setpoint_clamped")]
    assert any(json.loads(p)["subject"] == "lab-0-battery" for p in ev_clamp.payload)

    # the tapering EV of group 'full' (no setpoint: fallback 'uncontrolled' = 6 kW asked):
    # its telemetry is the booked power, below 6 kW and falling, and integrates to the
    # group's booked EV energy
    g = pq.read_table(res.out_dir / "timeseries_groups.parquet").to_pandas()
    full = g[g["group"] == "full"].reset_index(drop=True)
    tel = out_rows(log, "cps/t/dev/full-0-ev/telemetry")
    p = np.array([m["power_w"] for m in tel[1:]])
    np.testing.assert_allclose(p, full["ev_charging_w"].to_numpy(), rtol=1e-9)
    assert (p < 6000.0).all() and (np.diff(p) < 0).all() and p[-1] > 0
    assert p.sum() * TICK / 3600.0 == pytest.approx(
        full["ev_charging_w"].sum() * TICK / 3600.0, rel=1e-12
    )

    rep = run_replay(tmp_path / "r.pq", tmp_path / "replay")
    assert json.loads((rep.out_dir / "kpis.json").read_text()) == json.loads(
        (res.out_dir / "kpis.json").read_text()
    )
    for name in ("timeseries.parquet", "timeseries_groups.parquet"):
        assert pq.read_table(rep.out_dir / name).equals(pq.read_table(res.out_dir / name))
