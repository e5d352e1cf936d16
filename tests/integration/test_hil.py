"""cps-sim hil against a real Mosquitto: an external controller drives a simulated group,
devices (paho scripts) bound to members replace the model's power, go stale, die (last
will), receive clamped setpoints; a recorded run replays exactly.  Wall time is bounded by
running at 300x real time."""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cps_sim.bridge.hil import HilOptions, run_hil, run_replay
from cps_sim.core.errors import ScenarioError
from tests.integration.mqtt_helpers import client, stop

pytestmark = [pytest.mark.mqtt, pytest.mark.hil, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
SPEED = 300.0
TRIPS = {"probability": 1, "departure_h": 7.75, "duration_h": 0.25, "distance_km": 30}


def lab(n=3, **ev):
    return {
        "name": "lab",
        "count": n,
        "pv": {"share": 1, "capacity_kw": 4},
        "battery": {
            "share": 1,
            "capacity_kwh": 10,
            "power_kw": 3,
            "control": "idle",
            "initial_soc": 0.6,
        },
        "ev": {
            "share": 1,
            "charger_kw": 6,
            "initial_soc": 0.5,
            "trips": {"weekday": TRIPS, "weekend": TRIPS},
            **ev,
        },
    }


def write(tmp_path: Path, bridge: dict, sites=None, minutes=30, **top) -> Path:
    d = {
        "version": 1,
        "name": "hiltest",
        "seed": 7,
        "start": "2026-05-11T07:30:00+09:00",
        "duration_days": minutes / 1440,
        "tick_s": 60,
        "weather": {"source": "constant", "constant_ghi_w_m2": 300},
        "sites": sites or [lab()],
        "bridge": {"prefix": "cps/t", **bridge},
        **top,
    }
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def wait_for_controller(broker, timeout_s: float = 60.0) -> None:
    """Until examples/external_controller.py (paho's default client id: the broker names
    it auto-...) has connected, plus a moment for its SUBSCRIBE; a fixed sleep was too
    short for a Python start on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if " as auto-" in broker.log_path.read_text():
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise AssertionError("the external controller did not connect")


class AtSimTime:
    """Call ``action`` once the run's ``cps/t/clock`` reports ``sim_time_s >= t_s``."""

    def __init__(self, broker, t_s: float, action):
        self.done = threading.Event()

        def on_clock(c, _u, m):
            if not self.done.is_set() and json.loads(m.payload)["sim_time_s"] >= t_s:
                self.done.set()
                threading.Thread(target=action).start()  # not in paho's network thread

        self.c = client(broker.host, broker.port, on_message=on_clock, subscribe=["cps/t/clock"])

    def join(self, timeout_s: float) -> None:
        stop(self.c)
        assert self.done.wait(timeout_s), "the run never reached the trigger time"


def run_with_group_controller(broker, path: Path, on_obs, out: Path):
    """``cps-sim hil`` at SPEED while an external client answers each observation of group
    ``lab`` with ``on_obs(client, userdata, message)``."""
    ctl = client(
        broker.host, broker.port, on_message=on_obs, subscribe=["cps/t/group/lab/observation"]
    )
    try:
        return run_hil(path, HilOptions(broker=broker.url, speed=SPEED, quiet=True), out_dir=out)
    finally:
        stop(ctl)


def group_ts(out: Path, group: str):
    t = pq.read_table(out / "timeseries_groups.parquet").to_pandas()
    return t[t["group"] == group].reset_index(drop=True)


# ----------------------------------------------------------------------------- controller


def test_external_controller_drives_simulated_group_and_replay_equals_live(mosquitto, tmp_path):
    """The 20-line controller of docs/hil.md (examples/external_controller.py) sets every
    plugged-in EV to 3 kW; the simulated group follows exactly.  Replaying the recording
    offline gives identical KPIs and time series."""
    path = write(tmp_path, {"expose": ["lab"]})
    ctl = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples/external_controller.py"),
            mosquitto.host,
            str(mosquitto.port),
            "cps/t",
        ]
    )
    try:
        wait_for_controller(mosquitto)  # it subscribes before the run starts
        res = run_hil(
            path,
            HilOptions(
                broker=mosquitto.url, speed=SPEED, quiet=True, record=tmp_path / "rec.parquet"
            ),
            out_dir=tmp_path / "live",
        )
    finally:
        ctl.kill()
        ctl.wait(5)
    k = res.kpis
    assert k["bridge_lab_setpoints_applied"] >= 25 and k["bridge_rejected"] == 0
    assert k["bridge_lab_fallbacks"] == 1  # only before the first setpoint arrived
    g = group_ts(res.out_dir, "lab")
    # EVs return at 08:00 (t = 1800 s = tick 30) -- the run ends there, so look before:
    # while away (07:45-08:00) nothing charges; before departure the 3 EVs at 3 kW each
    # (from the tick after the controller's first answer was taken: at 300x a tick is
    # 0.2 wall s, and a loaded machine may take longer to answer the first observation;
    # until then the fallback, uncontrolled: 6 kW each)
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    taken = log[(log.direction == "in") & log.accepted]
    k0 = int(taken.sim_time_s.min() // 60) + 1
    assert k0 <= 5, k0
    p = g["ev_charging_w"].to_numpy()
    np.testing.assert_array_equal(p[1 : k0 - 1], 18000.0)  # (tick k0 - 1: a blend)
    np.testing.assert_array_equal(p[k0:15], 9000.0)
    assert (g["ev_charging_w"][16:30] == 0).all()
    assert {"hil_lag_p50_s", "hil_lag_p99_s", "hil_lag_max_s"} <= set(k)
    assert set(log["direction"]) >= {"in", "out", "conn"}
    assert (log[log.direction == "in"]["topic"] == "cps/t/group/lab/setpoint").all()

    rep = run_replay(tmp_path / "rec.parquet", tmp_path / "replay")
    assert json.loads((rep.out_dir / "kpis.json").read_text()) == json.loads(
        (res.out_dir / "kpis.json").read_text()
    )
    for name in ("timeseries.parquet", "timeseries_groups.parquet", "events.parquet"):
        assert pq.read_table(rep.out_dir / name).equals(pq.read_table(res.out_dir / name)), name


def test_external_controller_drives_water_heaters_then_the_fallback_takes_over(mosquitto, tmp_path):
    """Every control key of the engine goes over MQTT: an external controller reads the
    water heaters in the group's observation, sets them to 800 W each with a 5-minute
    ttl; the group follows exactly from the next tick, and when the ttl runs out the
    fallback puts them back on their own rule (off at 07:30: outside the night window)."""
    heaters = {
        "name": "lab",
        "count": 3,
        "heat_pump_water_heater": {"control": "night", "initial_temp_c": 50.0},
    }
    path = write(tmp_path, {"expose": [{"group": "lab", "ttl_s": 300}]}, sites=[heaters])
    seen: list[dict] = []

    def on_obs(c, _u, m):
        if seen:
            return
        seen.append(json.loads(m.payload))
        body = {
            "v": 1,
            "seq": 1,
            "ts": time.time(),
            "hpwh_mode": "setpoint",
            "hpwh_setpoint_w": [800.0] * len(seen[0]["hpwh_site"]),
        }
        c.publish("cps/t/group/lab/setpoint", json.dumps(body), qos=1)

    res = run_with_group_controller(mosquitto, path, on_obs, tmp_path / "o")
    obs = seen[0]
    assert obs["hpwh_site"] == [0, 1, 2] and len(obs["hpwh_tank_temp_c"]) == 3
    assert obs["hpwh_tank_temp_c"] == [50.0, 50.0, 50.0]
    k = res.kpis
    assert k["bridge_rejected"] == 0 and k["bridge_lab_setpoints_applied"] == 1
    assert k["bridge_lab_fallbacks"] == 2  # before the setpoint, and when its ttl ran out
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    t_taken = float(log[(log.direction == "in") & log.accepted].sim_time_s.min())
    first = int(t_taken // 60) + 1  # a per-tick device follows from the next tick
    last = int((t_taken + 300) // 60)  # the tick in which the ttl ran out
    p = group_ts(res.out_dir, "lab")["heat_pump_w"].to_numpy()
    assert (p[: first - 1] == 0).all()
    np.testing.assert_allclose(p[first:last], 2400.0, rtol=1e-12)
    assert (p[last + 1 :] == 0).all() and last + 1 < p.size


# ----------------------------------------------------------------------------- devices


class FakeDevice:
    """A device script: publishes telemetry (generic profile) and records setpoints."""

    def __init__(
        self,
        broker,
        topic: str,
        power_w: float,
        period_s: float = 0.05,
        will: bool = True,
        follow: bool = False,
    ):
        self.topic, self.power_w, self.period_s, self.follow = topic, power_w, period_s, follow
        self.setpoints: list[dict] = []
        self.c = client(
            broker.host,
            broker.port,
            will=(f"{topic}/availability", b"offline") if will else None,
            on_message=self._on_msg,
            subscribe=[f"{topic}/setpoint"],
        )
        self.c.publish(f"{topic}/availability", b"online", qos=1, retain=True)
        self.run = True
        self.th = threading.Thread(target=self._loop, daemon=True)

    def _on_msg(self, c, u, msg):
        sp = json.loads(msg.payload)
        self.setpoints.append(sp)
        if self.follow and "power_w" in sp:
            self.power_w = sp["power_w"]

    def _loop(self):
        seq = 0
        while self.run:
            body = {"v": 1, "seq": seq, "ts": time.time(), "power_w": self.power_w}
            self.c.publish(f"{self.topic}/telemetry", json.dumps(body), qos=0)
            seq += 1
            time.sleep(self.period_s)

    def start(self):
        self.th.start()
        return self

    def halt(self):
        self.run = False
        self.th.join(2)

    def die(self):
        """Crash: the connection drops without DISCONNECT, the broker sends the will."""
        self.halt()
        self.c.socket().close()
        self.c.loop_stop()


def test_bound_device_replaces_model_power_then_goes_stale(mosquitto, tmp_path):  # T11
    dev = {
        "name": "plug1",
        "binds": {"group": "lab", "site": 0, "kind": "load"},
        "emulated": True,
        "max_age_s": 150,
    }
    path = write(
        tmp_path,
        {"devices": [dev]},
        sites=[{"name": "lab", "count": 1, "load": {"annual_kwh": 4000}}],
    )
    d = FakeDevice(mosquitto, "cps/t/dev/plug1", 1234.0).start()

    # ~900 simulated seconds of telemetry, then silence (by the run's clock topic: a
    # wall-clock delay from here raced the run's start on a loaded machine)
    frozen: list[int] = []
    switch: list[float] = []
    switch_before = sys.getswitchinterval()

    def halt() -> None:
        frozen.append(gc.get_freeze_count())
        switch.append(sys.getswitchinterval())
        d.halt()

    th = AtSimTime(mosquitto, 900.0, halt)
    try:
        res = run_hil(
            path,
            HilOptions(broker=mosquitto.url, speed=SPEED, quiet=True),
            out_dir=tmp_path / "out",
        )
    finally:
        th.join(5)
        d.halt()
        stop(d.c)
    # the live run keeps what it set up out of full collections (no stall of the
    # real-time loop) and hands it back at the end
    assert frozen and frozen[0] > 1000
    assert gc.get_freeze_count() == 0
    # and paho's thread gets the GIL every 0.5 ms while live, the interval is restored after
    assert switch == [min(switch_before, 0.0005)]
    assert sys.getswitchinterval() == switch_before
    k = res.kpis
    ev = pq.read_table(res.out_dir / "bridge_events.parquet").to_pandas()
    stale = ev[ev.kind == "stale"]
    assert len(stale) == 1 and k["bridge_dev_plug1_stale"] == 1
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    tel = log[(log.topic == "cps/t/dev/plug1/telemetry") & log.accepted]
    t_first, t_last = float(tel.sim_time_s.min()), float(tel.sim_time_s.max())
    t_stale = float(stale.sim_time_s.iloc[0])
    assert t_stale == pytest.approx(t_last + 150.0)  # released exactly max_age after the last
    # the ledger booked exactly the measured power while measured
    assert k["bridge_dev_plug1_measured_energy_kwh"] == pytest.approx(
        1.234 * (t_stale - t_first) / 3600.0, rel=1e-9
    )
    g = group_ts(res.out_dir, "lab")
    k0, k1 = int(np.ceil(t_first / 60)), int(t_stale // 60)
    assert k1 - k0 >= 5
    np.testing.assert_allclose(g["load_w"][k0:k1], 1234.0, rtol=1e-12)
    assert (g["load_w"][k1 + 1 :] != 1234.0).all()  # the model again afterwards
    assert abs(k["balance_residual_wh"]) < 1e-3


def test_device_death_by_last_will_and_clamped_setpoints(mosquitto, tmp_path):  # T12, P5
    """An EV charger (script) bound to site 0: the EV strategy 'now' asks for 6 kW, the
    device is rated 3.6 kW -> it receives 3600 W (clamped, event); it reports what it
    draws; then it crashes: the will marks it offline and the model takes over at once."""
    dev = {
        "name": "ev1",
        "binds": {"group": "lab", "site": 0, "kind": "ev"},
        "emulated": True,
        "max_power_w": 3600,
        "max_age_s": 600,
        "ttl_s": 30,
    }
    path = write(tmp_path, {"devices": [dev]}, sites=[lab(n=2)], control={"ev_strategy": "now"})
    d = FakeDevice(mosquitto, "cps/t/dev/ev1", 0.0, follow=True).start()

    th = AtSimTime(mosquitto, 900.0, d.die)
    try:
        res = run_hil(
            path,
            HilOptions(broker=mosquitto.url, speed=SPEED, quiet=True),
            out_dir=tmp_path / "out",
        )
    finally:
        th.join(5)
    k = res.kpis
    powers = [sp["power_w"] for sp in d.setpoints if "power_w" in sp]
    assert powers and max(powers) == 3600.0 and min(powers) >= 0.0
    assert all(sp["ttl_s"] == 30 and sp["v"] == 1 for sp in d.setpoints)
    ev = pq.read_table(res.out_dir / "bridge_events.parquet").to_pandas()
    assert (ev.kind == "setpoint_clamped").any()
    off = ev[ev.kind == "unavailable"]
    assert len(off) == 1 and k["bridge_dev_ev1_unavailable"] == 1
    assert k["bridge_dev_ev1_stale"] == 0  # the will came long before max_age (600 s)
    # after the crash no more setpoints were published to the dead device
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    sent = log[(log.direction == "out") & (log.topic == "cps/t/dev/ev1/setpoint")]
    t_off = float(off.sim_time_s.iloc[0])
    assert (sent.sim_time_s <= t_off).all()
    assert k["bridge_dev_ev1_measured_energy_kwh"] > 0
    assert abs(k["balance_residual_wh"]) < 1e-3


# ----------------------------------------------------------------------------- refusals


def test_scaled_time_refused_for_real_hardware(tmp_path):  # T15
    dev = {"name": "plug1", "binds": {"group": "lab", "site": 0, "kind": "load"}}
    path = write(tmp_path, {"devices": [dev], "expose": ["lab"]})
    with pytest.raises(ScenarioError) as exc:
        run_hil(path, HilOptions(broker="mqtt://127.0.0.1:1", speed=10, quiet=True))
    msg = str(exc.value)
    assert "bridge.devices[0].emulated: speed 10" in msg
    path = write(tmp_path, {"devices": [dev], "expose": ["nope"]})
    with pytest.raises(
        ScenarioError,
        match=r"s\.yaml:\d+:\d+: bridge\.expose\[0\]\.group: no "
        "site group named 'nope'",
    ):
        run_hil(path, HilOptions(broker="mqtt://127.0.0.1:1", speed=1, quiet=True))


def test_cli_password_in_yaml_is_one_error_line(tmp_path):  # S5
    path = write(tmp_path, {"username": "sim", "password": "hunter2"})
    r = subprocess.run(
        [sys.executable, "-m", "cps_sim", "hil", str(path), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "bridge.password: passwords do not belong in scenario files" in r.stderr
    assert "hunter2" not in r.stderr and "Traceback" not in r.stderr


def test_demo_mixed_run_closes_the_loop_and_replays(mosquitto, tmp_path):
    """scenarios/hil_demo.yaml with --emulate: emulated charger + battery (bound to members
    of the HEMS group), a real client script (the external controller) on the exposed group
    and simulated homes on one real-time clock; the recording replays exactly."""
    ctl = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples/external_controller.py"),
            mosquitto.host,
            str(mosquitto.port),
            "cps/hil_demo",
        ]
    )
    try:
        wait_for_controller(mosquitto)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "cps_sim",
                "hil",
                str(REPO / "scenarios/hil_demo.yaml"),
                "--emulate",
                "--broker",
                mosquitto.url,
                "--duration",
                "10m",
                "--speed",
                "120",
                "--out",
                str(tmp_path / "live"),
                "--record",
                str(tmp_path / "rec.parquet"),
                # 30 simulated s = 0.25 wall s at 120x: a loaded CI machine stalls longer
                # (staleness has its own test above)
                "--set",
                "bridge.devices[0].max_age_s=300",
                "--set",
                "bridge.devices[1].max_age_s=300",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=100,
        )
    finally:
        ctl.kill()
        ctl.wait(5)
    assert r.returncode == 0, r.stderr
    assert "lag p50" in r.stdout
    k = json.loads((tmp_path / "live" / "kpis.json").read_text())
    for dev in ("charger0", "battery0"):
        # setpoints went out, the emulator acknowledged them, its power was booked
        assert k[f"bridge_dev_{dev}_setpoints_sent"] > 0
        assert k[f"bridge_dev_{dev}_measurements"] > 0
        assert k[f"bridge_dev_{dev}_ack_p50_s"] > 0
        assert k[f"bridge_dev_{dev}_stale"] == 0
    assert k["bridge_lab_setpoints_applied"] > 0  # the external controller drove the lab
    assert k["bridge_rejected"] == 0 and abs(k["balance_residual_wh"]) < 1e-3
    # sim -> emulator -> sim, exactly: every battery0 telemetry interval that lies wholly
    # between two acknowledgements reports the acknowledged setpoint's power
    log = pq.read_table(tmp_path / "live" / "bridge.parquet").to_pandas()
    base = "cps/hil_demo/dev/battery0"
    sent = {
        json.loads(p)["seq"]: json.loads(p).get("power_w")
        for p in log[(log.direction == "out") & (log.topic == f"{base}/setpoint")].payload
    }
    acks = [json.loads(p) for p in log[log.topic == f"{base}/state"].payload]
    acks = [a for a in acks if "setpoint_seq" in a and not a.get("reason")]
    tel = [json.loads(p) for p in log[log.topic == f"{base}/telemetry"].payload]
    checked = 0
    for prev, t in itertools.pairwise(tel):
        before = [a for a in acks if a["ts"] <= prev["ts"]]
        if not before or any(prev["ts"] < a["ts"] <= t["ts"] for a in acks):
            continue  # no setpoint yet, or the interval straddles a change
        want = sent[before[-1]["setpoint_seq"]]
        if want is not None and 0.05 < t["soc"] < 0.95:
            assert t["power_w"] == pytest.approx(want, rel=1e-9, abs=1e-9), (t, want)
            checked += 1
    assert checked >= 20, checked
    # `cps-sim replay` on the live run's results directory (its bridge.parquet)
    from typer.testing import CliRunner

    from cps_sim.cli import app

    rep = CliRunner().invoke(app, ["replay", str(tmp_path / "live"), "--out", str(tmp_path / "r")])
    assert rep.exit_code == 0, rep.output
    assert f"results: {tmp_path / 'r'}" in rep.output
    assert json.loads((tmp_path / "r" / "kpis.json").read_text()) == json.loads(
        (tmp_path / "live" / "kpis.json").read_text()
    )
    for name in ("timeseries.parquet", "timeseries_groups.parquet", "events.parquet"):
        assert pq.read_table(tmp_path / "r" / name).equals(
            pq.read_table(tmp_path / "live" / name)
        ), name


def test_home_assistant_discovery_of_exposed_members(mosquitto, tmp_path):
    path = write(tmp_path, {"expose": ["lab"], "homeassistant": True}, sites=[lab(n=2)], minutes=5)
    res = run_hil(
        path, HilOptions(broker=mosquitto.url, speed=SPEED, quiet=True), out_dir=tmp_path / "out"
    )
    got: dict[str, dict] = {}
    c = client(
        mosquitto.host,
        mosquitto.port,
        on_message=lambda _c, _u, m: got.__setitem__(m.topic, json.loads(m.payload)),
        subscribe=["homeassistant/#"],
    )
    time.sleep(0.5)  # the retained configs arrive
    stop(c)
    # 2 sites x (ev: 5 sensors + power number + auto button, battery: 5 + 2, pv: 1, load: 1)
    assert len(got) == 2 * 16
    numbers = {t for t in got if t.startswith("homeassistant/number/")}
    assert len(numbers) == 4  # the chargers and batteries: commands on their setpoint topic
    for t in numbers:
        assert got[t]["command_topic"] == got[t]["availability"][0]["topic"].replace(
            "/availability", "/setpoint"
        )
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    published = set(log[log.direction == "out"].topic)
    for cfg in got.values():
        if "state_topic" in cfg:
            assert cfg["state_topic"] in published  # every sensor reads a topic the run fills
        # the member's own availability and the simulator's status (its last will)
        own, status = cfg["availability"]
        assert own["topic"].startswith("cps/t/dev/lab-") and status["topic"] == "cps/t/status"
        assert cfg["availability_mode"] == "all"
        assert cfg["device"]["manufacturer"] == "cps_sim"
    assert {"cps/t/dev/lab-0-ev/telemetry", "cps/t/dev/lab-1-load/telemetry"} <= published


def test_vendor_profile_device_tasmota_plug(mosquitto, tmp_path):
    """A Tasmota plug (its own topics and payloads, no envelope) bound to a site's load."""
    dev = {
        "name": "plug9",
        "profile": "tasmota_plug",
        "topic": "plug9",
        "emulated": True,
        "binds": {"group": "lab", "site": 0, "kind": "load"},
        "max_age_s": 600,
    }
    path = write(
        tmp_path,
        {"devices": [dev]},
        minutes=10,
        sites=[{"name": "lab", "count": 1, "load": {"annual_kwh": 4000}}],
    )
    c = client(mosquitto.host, mosquitto.port, will=("tele/plug9/LWT", b"Offline"))
    c.publish("tele/plug9/LWT", b"Online", qos=1, retain=True)
    run = {"on": True}

    def loop():
        while run["on"]:
            body = {
                "Time": "2026-05-11T07:30:00",
                "ENERGY": {"Total": 1.5, "Power": 987, "Voltage": 101, "Current": 9.8},
            }
            c.publish("tele/plug9/SENSOR", json.dumps(body), qos=0)
            time.sleep(0.05)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        res = run_hil(
            path,
            HilOptions(broker=mosquitto.url, speed=SPEED, quiet=True),
            out_dir=tmp_path / "out",
        )
    finally:
        run["on"] = False
        th.join(2)
        c.publish("tele/plug9/LWT", b"", qos=1, retain=True).wait_for_publish(5)
        stop(c)
    k = res.kpis
    assert k["bridge_dev_plug9_measurements"] > 20 and k["bridge_rejected"] == 0
    g = group_ts(res.out_dir, "lab")
    np.testing.assert_allclose(g["load_w"][1:], 987.0, rtol=1e-12)  # after the first tick


fuzz_payloads = st.one_of(
    st.binary(max_size=120),
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "seq",
                "ts",
                "ttl_s",
                "power_w",
                "soc",
                "ev_setpoint_w",
                "battery_mode",
                "battery_setpoint_w",
                "import_limit_w",
                "plugged",
                "setpoint_seq",
                "x",
            ]
        ),
        st.one_of(
            st.integers(-3, 3),
            st.floats(allow_nan=False),
            st.booleans(),
            st.none(),
            st.text(max_size=4),
            st.lists(st.floats(-1e4, 1e4), max_size=4),
        ),
        max_size=7,
    ).map(lambda d: json.dumps(d).encode()),
    st.sampled_from([b"online", b"offline", b"{}", b'{"v":1,"seq":0,"ts":1e9}']),
)


@settings(
    max_examples=2, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["group/lab/setpoint", "dev/d1/telemetry", "dev/d1/state", "dev/d1/availability"]
            ),
            fuzz_payloads,
        ),
        min_size=30,
        max_size=80,
    )
)
def test_fuzzed_traffic_never_stops_a_run_and_is_all_counted(mosquitto, tmp_path_factory, msgs):
    tmp = tmp_path_factory.mktemp("fuzz")
    dev = {"name": "d1", "binds": {"group": "lab", "site": 0, "kind": "load"}, "emulated": True}
    path = write(tmp, {"expose": ["lab"], "devices": [dev]}, sites=[lab(n=2)], minutes=10)
    c = client(mosquitto.host, mosquitto.port)
    status = threading.Event()
    # the first observation comes after the run subscribed to its setpoint topic
    c.message_callback_add("cps/t/group/lab/observation", lambda *_: status.set())
    c.subscribe("cps/t/group/lab/observation", qos=1)

    def fuzz():
        status.wait(10)  # the run has subscribed
        for topic, data in msgs:
            c.publish(f"cps/t/{topic}", data, qos=1)

    th = threading.Thread(target=fuzz)
    th.start()
    try:
        res = run_hil(
            path, HilOptions(broker=mosquitto.url, speed=SPEED, quiet=True), out_dir=tmp / "out"
        )
    finally:
        th.join(10)
        c.publish("cps/t/dev/d1/availability", b"", qos=1, retain=True).wait_for_publish(5)
        stop(c)
    k = res.kpis
    assert k["ticks"] == 10 and abs(k["balance_residual_wh"]) < 1e-3  # the run completed
    assert k["bridge_received"] == len(msgs)  # every message arrived and was counted
    assert k["bridge_accepted"] + k["bridge_rejected"] == k["bridge_received"]
    assert (
        sum(v for n, v in k.items() if n.startswith("bridge_rejected_")) == (k["bridge_rejected"])
    )
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    inbound = log[log.direction == "in"]
    assert len(inbound) == len(msgs) and (inbound.accepted | (inbound.reason != "")).all()


def test_no_broker_given_starts_an_embedded_one(tmp_path):
    from cps_sim.bridge.broker import mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed")
    path = write(tmp_path, {"expose": ["lab"]}, minutes=3)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "hil",
            str(path),
            "--speed",
            "300",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert re.search(
        r"broker embedded mosquitto mqtt://127\.0\.0\.1:\d+ \(MQTT 5\), topic prefix cps/t/",
        r.stderr,
    )
    k = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert k["ticks"] == 3 and k["bridge_lab_fallbacks"] == 1  # no controller: fallback


def test_strict_real_time_stops_cleanly_on_overrun(mosquitto, tmp_path):  # T15 / C4 OVERRUN
    """A run that cannot keep up (400 exposed homes publish ~1,600 member messages every
    simulated second; at speed 1000 a tick has 1 ms of wall time) stops at the first tick
    settled more than --strict-lag-s late: results up to it written, the reason in
    kpis.json and bridge_events.parquet, one error line, exit 4."""
    sites = [lab(n=400)]
    path = write(tmp_path, {"expose": ["lab"]}, sites=sites, minutes=60, tick_s=1)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "hil",
            str(path),
            "--broker",
            mosquitto.url,
            "--speed",
            "1000",
            "--strict-lag-s",
            "0.5",
            "--out",
            str(tmp_path / "out"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "CI": "true"},
    )
    assert r.returncode == 4, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "real-time overrun" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    k = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert k["hil_overrun"] == 1 and k["hil_max_lag_s"] == 0.5
    assert k["hil_overrun_lag_s"] > 0.5 and k["hil_lag_max_s"] == k["hil_overrun_lag_s"]
    assert 0 < k["ticks"] < 3600 and k["hil_overrun_sim_time_s"] == k["ticks"] * 1.0
    ticks = pq.read_table(tmp_path / "out" / "hil_ticks.parquet").to_pandas()
    assert len(ticks) == k["ticks"] and (ticks.lag_s[:-1] <= 0.5).all()
    ev = pq.read_table(tmp_path / "out" / "bridge_events.parquet").to_pandas()
    over = ev[ev.kind == "overrun"]
    assert len(over) == 1 and float(over.sim_time_s.iloc[0]) == k["hil_overrun_sim_time_s"]
    assert abs(k["balance_residual_wh"]) < 1e-3  # the books of what ran close


def test_exposed_group_ramp_goes_on_without_new_setpoints(mosquitto, tmp_path):  # item 8
    """A controller that sends 6000 W once and 0 W once (long ttl, then silence): the rate
    limit (10 W/s) carries the EV down to 0 W tick by tick, never faster, without waiting
    for another setpoint."""
    no_trips = {"probability": 0, "departure_h": 8, "duration_h": 1, "distance_km": 1}
    ev = {"share": 1, "charger_kw": 6, "initial_soc": 0.3}
    sites = [{**lab(n=1), "ev": {**ev, "trips": {"weekday": no_trips, "weekend": no_trips}}}]
    path = write(tmp_path, {"expose": [{"group": "lab", "max_ramp_w_per_s": 10}]}, sites=sites)
    sent: list[float] = []

    def on_obs(c, _u, m):
        w = 6000.0 if json.loads(m.payload)["sim_time_s"] < 600 else 0.0
        if sent[-1:] == [w]:
            return  # each value once: no refresh
        sp = {"v": 1, "seq": len(sent), "ts": time.time(), "ttl_s": 3600, "ev_setpoint_w": [w]}
        c.publish("cps/t/group/lab/setpoint", json.dumps(sp), qos=1)
        sent.append(w)

    res = run_with_group_controller(mosquitto, path, on_obs, tmp_path / "o")
    assert sent == [6000.0, 0.0]
    p = group_ts(res.out_dir, "lab")["ev_charging_w"].to_numpy()
    t_end = 60.0 * np.arange(1, len(p) + 1)
    floor = 6000.0 - 10.0 * np.clip(t_end - 600.0, 0.0, None)
    assert (p >= floor - 1e-6).all(), p  # never faster than the ramp
    # 600 s on the ramp after the 0 W arrived (at 600 s + one observation interval at most)
    assert (p[t_end >= 600.0 + 600.0 + 2 * 60.0] == 0.0).all(), p
    assert ((p > 1.0) & (p < 5999.0)).sum() >= 8, p


def test_rate_limits_on_exposed_group_and_bound_device(mosquitto, tmp_path):  # item 8
    """max_ramp_w_per_s = 10 W/s: the exposed group's EV goes 6000 -> 0 W (a controller
    answering every observation switches at 600 s) no faster than 10 W/s; the bound charger
    (rated 3.6 kW) gets its HEMS setpoint 3600 -> 0 W at departure in steps of at most
    10 W/s x the time since the previous setpoint (refreshed every ttl/3 = 10 s)."""
    no_trips = {"probability": 0, "departure_h": 8, "duration_h": 1, "distance_km": 1}
    ev = {"share": 1, "charger_kw": 6, "initial_soc": 0.3}
    sites = [
        {**lab(n=1), "ev": {**ev, "trips": {"weekday": no_trips, "weekend": no_trips}}},
        {**lab(n=1), "name": "homes"},  # its EV leaves at 07:45
    ]
    dev = {
        "name": "ev1",
        "binds": {"group": "homes", "site": 0, "kind": "ev"},
        "emulated": True,
        "max_power_w": 3600,
        "max_age_s": 600,
        "ttl_s": 30,
        "max_ramp_w_per_s": 10,
    }
    path = write(
        tmp_path,
        {"expose": [{"group": "lab", "max_ramp_w_per_s": 10}], "devices": [dev]},
        sites=sites,
        ems={"homes": {"kind": "hems", "interval_s": 60, "ev_strategy": "now"}},
    )
    seq = [0]

    def on_obs(c, _u, m):
        w = 6000.0 if json.loads(m.payload)["sim_time_s"] < 600 else 0.0
        sp = {"v": 1, "seq": seq[0], "ts": time.time(), "ttl_s": 300, "ev_setpoint_w": [w]}
        c.publish("cps/t/group/lab/setpoint", json.dumps(sp), qos=1)
        seq[0] += 1

    ctl = client(
        mosquitto.host, mosquitto.port, on_message=on_obs, subscribe=["cps/t/group/lab/observation"]
    )
    d = FakeDevice(mosquitto, "cps/t/dev/ev1", 0.0, follow=True).start()
    try:
        res = run_hil(
            path, HilOptions(broker=mosquitto.url, speed=SPEED, quiet=True), out_dir=tmp_path / "o"
        )
    finally:
        d.halt()
        stop(d.c)
        stop(ctl)
    assert res.kpis["bridge_rejected"] == 0
    # the exposed group: never below the 10 W/s ramp from 6000 W starting at 600 s
    p = group_ts(res.out_dir, "lab")["ev_charging_w"].to_numpy()
    t_end = 60.0 * np.arange(1, len(p) + 1)
    floor = 6000.0 - 10.0 * np.clip(t_end - 600.0, 0.0, None)
    assert (p >= floor - 1e-6).all(), p
    assert np.allclose(p[:9], 6000.0) and p[-1] == 0.0
    assert ((p > 1.0) & (p < 5999.0)).sum() >= 8  # ~10 minutes on the ramp
    ev = pq.read_table(res.out_dir / "bridge_events.parquet").to_pandas()
    assert ev[ev.kind == "setpoint_clamped"].detail.str.contains("rate-limited to 10 W/s").any()
    # the bound device: every step within 10 W/s of the previous setpoint sent
    log = pq.read_table(res.out_dir / "bridge.parquet").to_pandas()
    out = log[(log.direction == "out") & (log.topic == "cps/t/dev/ev1/setpoint")]
    t = out.sim_time_s.to_numpy()
    w = np.array([json.loads(x)["power_w"] for x in out.payload])
    assert w[0] == 3600.0 and w[-1] == 0.0  # clamped to the rating, then down to 0 W
    assert (np.abs(np.diff(w)) <= 10.0 * np.diff(t) + 1e-6).all()
    assert ((w > 0) & (w < 3600)).sum() >= 30  # 360 s on the ramp, a setpoint every 10 s
