"""Device profiles: vendor payloads round-trip, setpoints encode/decode, bad input is rejected."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cps_sim.bridge.profile_spec import ROLES, SETPOINT_SIGNALS, SIGNALS, FieldSpec
from cps_sim.bridge.profiles import (
    MAX_PAYLOAD_BYTES,
    Ignored,
    Measurement,
    ProfileError,
    Reject,
    Setpoint,
    clamp_setpoint,
    list_profiles,
    load_profile,
)
from cps_sim.core.errors import BridgeError

SHIPPED = list_profiles()
TOPIC = {
    "generic": "cps/demo/dev/ev-1",
    "tasmota_plug": "tasmota_5A9AE8",
    "shelly_gen2": "shellyplusplugs-a8032ab12345",
    "openevse": "openevse-7b2c",
    "goe": "012345",
    "battery_inverter": "deye/inv1",
}


def test_the_issue_profiles_ship():
    for name in ("generic", "tasmota_plug", "shelly_gen2", "openevse", "goe", "battery_inverter"):
        assert name in SHIPPED
    for name in SHIPPED:
        assert load_profile(name).spec.sources or name == "generic", f"{name}: no sources"


# --------------------------------------------------------------------------- round trips
def _sample(signal: str, spec: FieldSpec, i: int):
    """A canonical value the field can carry exactly after its rounding."""
    if spec.mapping:
        values = [c for _, c in spec.mapping if c is not None]
        return values[i % len(values)]
    kind = SIGNALS[signal].type
    if kind == "bool":
        return i % 2 == 0
    if kind == "str":
        return f"x{i}"
    if kind == "int":
        return 7 + i
    if signal == "soc":
        return 0.42
    base = {"power": 1234.0, "current": 10.0, "voltage": 231.0, "temperature": 24.0}.get(
        SIGNALS[signal].dimension or "", 5678.0
    )
    return base * spec.sign


def _fields(node):
    if isinstance(node, FieldSpec):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _fields(v)
    elif isinstance(node, list):
        for v in node:
            yield from _fields(v)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_message_round_trips(name):
    """encode(canonical) -> decode == canonical, for every message of every profile."""
    profile = load_profile(name)
    t = TOPIC.get(name, "dev-1")
    dev = profile.bind(t)
    for role in ROLES:
        specs = [m for m in profile.spec.messages if m.role == role and not m.decode_only]
        for m in specs:
            fields = [m.raw] if m.raw is not None else list(_fields(m.template))
            values = {
                f.signal: _sample(f.signal, f, k)
                for k, f in enumerate(fields)
                if f.signal not in ("src",)
            }
            exact = m.topic.replace("{t}", t).replace("{t4}", t[-4:])
            out = [o for o in dev.encode(role, values) if o[0] == exact]
            assert out, f"{name}: {m.topic} not encoded"
            topic, payload, qos, retain = out[0]
            assert (qos, retain) == (m.qos, m.retain)
            got = dev.decode(topic, payload)
            assert isinstance(got, Measurement), got
            assert got.role == role
            merged = {**got.signals, "ts": got.ts, "seq": got.seq}
            for sig, want in values.items():
                if sig in ("v",):
                    continue
                if isinstance(want, float):
                    assert merged[sig] == pytest.approx(want, rel=1e-9), (name, sig)
                else:
                    assert merged[sig] == want and type(merged[sig]) is type(want), (name, sig)


@pytest.mark.parametrize("name", SHIPPED)
def test_availability_round_trips_and_is_retained(name):
    profile = load_profile(name)
    if profile.spec.availability is None:
        pytest.skip("no availability topic")
    dev = profile.bind(TOPIC.get(name, "dev-1"))
    for online in (True, False):
        topic, payload, qos, retain = dev.availability(online)
        assert retain and qos == 1
        assert topic in dev.subscriptions
        got = dev.decode(topic, payload)
        assert isinstance(got, Measurement) and got.signals == {"available": online}


@pytest.mark.parametrize("name", SHIPPED)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(power=st.floats(-1e5, 1e5), current=st.floats(-100, 200), on=st.booleans())
def test_setpoints_encode_then_decode_within_rating(name, power, current, on):
    """Whatever a controller asks, what reaches the device is inside the rating, never
    retained, and decodes back to the clamped request."""
    profile = load_profile(name)
    dev = profile.bind(TOPIC.get(name, "dev-1"))
    carried = profile.command_signals
    r = dev.rated
    for sp in (
        Setpoint(power_w=power, ttl_s=30.0),
        Setpoint(current_a=current, ttl_s=30.0),
        Setpoint(on=on, ttl_s=30.0),
    ):
        try:
            msgs = dev.encode_setpoint(sp)
        except BridgeError:
            assert not ({"power_w", "current_a", "on"} & carried) or (
                sp.on is not None and "on" not in carried
            )
            continue
        decoded: dict = {}
        for topic, payload, qos, retain in msgs:
            assert not retain and qos >= 1
            cmd = dev.decode_command(topic, payload)
            assert isinstance(cmd, Setpoint), cmd
            decoded.update(cmd.given())
        clamped, _ = clamp_setpoint(sp, r)
        if "power_w" in decoded:
            assert r.power_w_min - 0.5 <= decoded["power_w"] <= r.power_w_max + 0.5
            if sp.power_w is not None:
                assert decoded["power_w"] == pytest.approx(clamped.power_w, abs=0.5)
        if "current_a" in decoded:
            assert decoded["current_a"] == 0 or (
                r.min_current_a - 0.5 <= decoded["current_a"] <= r.current_a_max + 0.5
            )
        if sp.on is not None and "on" in carried:
            assert decoded["on"] is sp.on


def test_ev_current_below_iec_minimum_pauses_the_charger():
    for name in ("openevse", "goe"):
        dev = load_profile(name).bind(TOPIC[name])
        msgs = dev.encode_setpoint(Setpoint(current_a=4.0))  # 4 A < 6 A: cannot charge
        decoded = {}
        for topic, payload, _, _ in msgs:
            decoded.update(dev.decode_command(topic, payload).given())
        assert decoded.get("on") is False and "current_a" not in decoded


def test_power_setpoint_to_a_current_charger_is_converted():
    # go-e 3 phases at 230 V: 11 040 W / 690 V = 16 A
    dev = load_profile("goe").bind("012345")
    msgs = dict((t, p) for t, p, _, _ in dev.encode_setpoint(Setpoint(power_w=11040.0)))
    assert msgs["go-eCharger/012345/amp/set"] == b"16"
    assert msgs["go-eCharger/012345/frc/set"] == b"2"


def test_a_setpoint_the_device_cannot_take_is_a_clear_error():
    with pytest.raises(BridgeError, match="tasmota_plug: cannot send \\['mode'\\]"):
        load_profile("tasmota_plug").encode_setpoint("p1", Setpoint(mode="auto"))


# --------------------------------------------------------------------------- vendor payloads
def test_tasmota_real_payloads():
    p = load_profile("tasmota_plug")
    sensor = (
        b'{"Time":"2024-03-28T19:15:00","ENERGY":{"TotalStartTime":"2022-03-01T10:11:12",'
        b'"Total":12.345,"Yesterday":0.923,"Today":0.337,"Period":3,"Power":367,'
        b'"ApparentPower":507,"ReactivePower":350,"Factor":0.72,"Voltage":235,'
        b'"Current":2.156}}'
    )
    m = p.decode("tele/tasmota_5A9AE8/SENSOR", sensor)
    assert isinstance(m, Measurement) and m.device_topic == "tasmota_5A9AE8"
    assert m.signals["power_w"] == 367.0
    assert m.signals["energy_wh"] == pytest.approx(12345.0)  # 12.345 kWh
    assert m.signals["current_a"] == 2.156 and m.signals["voltage_v"] == 235.0
    assert m.tolerated_keys == ("ENERGY.Period",)  # vendor extra, tolerated and reported
    assert p.decode("stat/tasmota_5A9AE8/POWER", b"OFF").signals == {"on": False}
    assert p.decode("tele/tasmota_5A9AE8/LWT", b"Online").signals == {"available": True}
    assert p.encode_setpoint("tasmota_5A9AE8", Setpoint(on=True)) == [
        ("cmnd/tasmota_5A9AE8/POWER", b"ON", 1, False)
    ]
    # STATE messages, other sensors: not this profile's topic
    assert isinstance(p.decode("tele/tasmota_5A9AE8/STATE", b'{"POWER":"ON"}'), Ignored)


def test_shelly_gen2_real_payloads():
    p = load_profile("shelly_gen2")
    t = "shellyplusplugs-a8032ab12345"
    notify = json.dumps(
        {
            "src": t,
            "dst": f"{t}/events",
            "method": "NotifyStatus",
            "params": {
                "ts": 1714557600.52,
                "switch:0": {
                    "id": 0,
                    "apower": 1523.4,
                    "voltage": 229.8,
                    "current": 6.63,
                    "aenergy": {
                        "total": 51234.567,
                        "by_minute": [25.3, 25.1, 25.4],
                        "minute_ts": 1714557600,
                    },
                },
            },
        }
    ).encode()
    m = p.decode(f"{t}/events/rpc", notify)
    assert isinstance(m, Measurement)
    assert m.signals == {
        "power_w": 1523.4,
        "voltage_v": 229.8,
        "current_a": 6.63,
        "energy_wh": 51234.567,
    }
    assert m.ts == 1714557600.52
    partial = json.dumps(
        {
            "src": t,
            "dst": f"{t}/events",
            "method": "NotifyStatus",
            "params": {"ts": 1.0, "switch:0": {"id": 0, "output": False}},
        }
    ).encode()
    assert p.decode(f"{t}/events/rpc", partial).signals == {"on": False}
    wifi_only = json.dumps(
        {"method": "NotifyStatus", "params": {"ts": 1.0, "wifi": {"rssi": -60}}}
    ).encode()
    assert isinstance(p.decode(f"{t}/events/rpc", wifi_only), Ignored)
    assert p.decode(f"{t}/online", b"false").signals == {"available": False}
    [(topic, payload, qos, retain)] = p.encode_setpoint(t, Setpoint(on=True, seq=42))
    assert topic == f"{t}/rpc" and qos == 1 and not retain
    assert json.loads(payload) == {
        "id": 42,
        "src": "cps_sim",
        "method": "Switch.Set",
        "params": {"id": 0, "on": True},
    }
    other = json.dumps(
        {"id": 1, "src": "x", "method": "Switch.Toggle", "params": {"id": 0}}
    ).encode()
    assert isinstance(p.decode_command(f"{t}/rpc", other), Ignored)


def test_openevse_real_payloads():
    p = load_profile("openevse")
    t = "openevse-7b2c"
    assert p.decode(f"{t}/amp", b"15820").signals == {"current_a": pytest.approx(15.82)}
    assert p.decode(f"{t}/power", b"3648").signals == {"power_w": 3648.0}
    assert p.decode(f"{t}/state", b"3").signals == {"status": "charging"}
    assert p.decode(f"{t}/vehicle", b"1").signals == {"plugged": True}
    assert p.decode(f"{t}/total_energy", b"1234.5").signals == {"energy_wh": 1234500.0}
    assert p.decode(f"{t}/temp", b"247").signals == {"temperature_c": pytest.approx(24.7)}
    assert p.decode(f"{t}/battery_level", b"64").signals == {"soc": pytest.approx(0.64)}
    assert isinstance(p.decode(f"{t}/claim", b'{"state":"null"}'), Ignored)
    ann = b'{"state":"disconnected","id":"c44f330dxxad","name":"openevse-7b2c"}'
    assert p.decode("openevse/announce/7b2c", ann).signals == {"available": False}
    [(topic, payload, _, _)] = p.encode_setpoint(t, Setpoint(current_a=13.0))
    assert topic == f"{t}/claim/set"
    assert json.loads(payload) == {"state": "active", "charge_current": 13}


def test_goe_real_payloads():
    p = load_profile("goe")
    nrg = b"[230,231,229,0,10.2,10.1,10.3,2346,2333,2359,0,7038,99,99,99,0]"
    m = p.decode("go-eCharger/012345/nrg", nrg)
    assert m.signals == {"voltage_v": 230.0, "current_a": 10.2, "power_w": 7038.0}
    assert p.decode("go-eCharger/012345/eto", b"1234567").signals == {"energy_wh": 1234567.0}
    assert p.decode("go-eCharger/012345/car", b"4").signals == {
        "status": "complete",
        "plugged": True,
    }
    assert p.decode("go-eCharger/012345/mcc", b"false").signals == {"available": False}
    assert p.decode("go-eCharger/012345/amp", b"16").signals == {"current_limit_a": 16.0}


def test_battery_inverter_sign_convention():
    # deye-inverter-mqtt: + = discharge; cps_sim: + = into the device
    p = load_profile("battery_inverter")
    assert p.decode("deye/inv1/battery/power", b"2500").signals == {"power_w": -2500.0}
    assert p.decode("deye/inv1/battery/soc", b"55").signals == {"soc": pytest.approx(0.55)}
    [(topic, payload, _, _)] = p.encode_setpoint("deye/inv1", Setpoint(power_w=3000.0))
    assert (topic, payload) == ("deye/inv1/battery/power_setpoint/command", b"-3000")


def test_opendtu_inverter_real_payloads():
    p = load_profile("opendtu_inverter")
    t = "solar/114172220003"
    assert p.decode(f"{t}/0/power", b"312.4").signals == {"power_w": -312.4}
    assert p.decode(f"{t}/0/yieldtotal", b"123.456").signals == {
        "energy_out_wh": pytest.approx(123456.0)
    }
    assert p.decode(f"{t}/status/reachable", b"0").signals == {"available": False}
    assert p.decode(f"{t}/status/producing", b"1").signals == {"status": "producing"}
    # cap generation at 400 W: load convention -400 W -> OpenDTU limit 400 W
    [(topic, payload, _, _)] = p.encode_setpoint(t, Setpoint(power_w=-400.0))
    assert (topic, payload) == (f"{t}/cmd/limit_nonpersistent_absolute", b"400")
    # a cap beyond the 800 W rating is clamped to it
    [(_, payload, _, _)] = p.encode_setpoint(t, Setpoint(power_w=-5000.0))
    assert payload == b"800"


def test_generic_v1_is_decided_by_the_schema_module():
    """The generic profile is schema v1: cps_sim.bridge.schema's rules and reason codes."""
    p = load_profile("generic")
    t = TOPIC["generic"]
    ok = {"v": 1, "seq": 3, "ts": 1.7e9, "ttl_s": 30.0, "power_w": 2000.0}
    sp = p.decode_command(f"{t}/setpoint", json.dumps(ok).encode())
    assert sp == Setpoint(power_w=2000.0, ttl_s=30.0, seq=3, ts=1.7e9)
    bad = p.decode_command(f"{t}/setpoint", json.dumps({**ok, "power_kw": 2}).encode())
    assert isinstance(bad, Reject) and bad.reason == "wrong_unit" and "power_kw" in bad.detail
    two = p.decode_command(f"{t}/setpoint", json.dumps({**ok, "on": True}).encode())
    assert isinstance(two, Reject) and two.reason == "unknown_field"
    v2 = p.decode_command(f"{t}/setpoint", json.dumps({**ok, "v": 2}).encode())
    assert isinstance(v2, Reject) and v2.reason == "bad_version"
    tel = {"v": 1, "seq": 9, "ts": 1.7e9, "power_w": -300.0, "firmware": "1.2"}
    m = p.decode(f"{t}/telemetry", json.dumps(tel).encode())
    assert m.signals == {"power_w": -300.0} and m.seq == 9 and m.tolerated_keys == ("firmware",)
    assert m.envelope.seq == 9
    # state: the keys the schema module tolerates are read by the profile
    state = {
        "v": 1,
        "seq": 1,
        "ts": 1.7e9,
        "setpoint_seq": 3,
        "setpoint_power_w": 2000.0,
        "mode": "setpoint",
        "fallback": False,
    }
    st_ = p.decode(f"{t}/state", json.dumps(state).encode())
    assert st_.signals == {
        "setpoint_seq": 3,
        "setpoint_power_w": 2000.0,
        "mode": "setpoint",
        "fallback": False,
    }
    with pytest.raises(BridgeError, match="needs ttl_s"):
        p.encode_setpoint(t, Setpoint(power_w=1.0))


def test_schema_module_setpoints_are_accepted():
    from cps_sim.bridge import schema

    [(_, payload, _, _)] = load_profile("generic").encode_setpoint(
        "cps/x/dev/d1", schema.Setpoint(ttl_s=10.0, current_a=16.0)
    )
    sp, env = schema.decode_setpoint(payload)
    assert (sp.current_a, sp.ttl_s, env.v) == (16.0, 10.0, 1)
    [(_, payload, _, _)] = load_profile("openevse").encode_setpoint(
        "openevse-1", schema.Setpoint(ttl_s=10.0, current_a=16.0)
    )
    assert json.loads(payload) == {"state": "active", "charge_current": 16}


# --------------------------------------------------------------------------- bad input
BAD = [
    (b'{"v":1,"seq":1,"ts":1,"power_w":NaN}', "nan_or_inf"),
    (b'{"v":1,"seq":1,"ts":1,"power_w":Infinity}', "nan_or_inf"),
    (b'{"v":1,"seq":1,"ts":1,"power_w":1e309}', "nan_or_inf"),
    (b'{"v":1,"seq":1,"ts":1,"power_w":"12kW"}', "wrong_type"),
    (b'{"v":1,"seq":1,"ts":1,"power_w":true}', "wrong_type"),
    (b'{"v":1,"seq":1,"ts":1,"power_w":1,"soc":1.4}', "out_of_range"),
    (b'{"v":1,"seq":-1,"ts":1,"power_w":1}', "out_of_range"),
    (b'{"v":1,"seq":1.5,"ts":1,"power_w":1}', "wrong_type"),
    (b'{"v":1,"seq":1,"ts":1,"power_w":1,"power_w":2}', "duplicate_key"),
    (b'{"v":1,"seq":1,"ts":1,"power_w": 12', "not_json"),
    (b"\xff\xfe", "not_utf8"),
    (b"", "not_json"),
    (b"[1,2,3]", "not_object"),
]


@pytest.mark.parametrize(("payload", "code"), BAD)
def test_bad_generic_payloads_are_rejected_with_a_code(payload, code):
    got = load_profile("generic").decode("cps/x/dev/d1/telemetry", payload)
    assert isinstance(got, Reject) and got.reason == code, got
    assert got.detail.startswith("cps/x/dev/d1/telemetry")


VENDOR_BAD = [
    ("tasmota_plug", "tele/p/SENSOR", b'{"ENERGY":{"Power":NaN}}', "nan_or_inf"),
    ("tasmota_plug", "tele/p/SENSOR", b'{"ENERGY":{"Power":"12"}}', "wrong_type"),
    ("tasmota_plug", "tele/p/SENSOR", b'{"ENERGY":[1]}', "not_object"),
    ("tasmota_plug", "stat/p/POWER", b"MAYBE", "out_of_range"),
    ("openevse", "openevse-1/power", b"abc", "wrong_type"),
    ("openevse", "openevse-1/power", b"nan", "nan_or_inf"),
    ("openevse", "openevse-1/battery_level", b"140", "implausible"),
    ("goe", "go-eCharger/1/nrg", b'{"a":1}', "wrong_type"),
    ("goe", "go-eCharger/1/eto", b'{"a":1,"a":2}', "duplicate_key"),
    ("shelly_gen2", "s1/events/rpc", b"\xff", "not_utf8"),
    ("shelly_gen2", "s1/online", b"maybe", "out_of_range"),
    ("battery_inverter", "inv/battery/total_charge", b"-5", "out_of_range"),
]


@pytest.mark.parametrize(("name", "topic", "payload", "code"), VENDOR_BAD)
def test_bad_vendor_payloads_get_the_schema_reason_codes(name, topic, payload, code):
    from cps_sim.bridge.schema import REASONS

    got = load_profile(name).decode(topic, payload)
    assert isinstance(got, Reject) and got.reason == code, got
    assert got.reason in REASONS and got.detail.startswith(topic)


def test_oversized_payload_is_rejected_before_parsing():
    big = b'{"v":1,"pad":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    got = load_profile("generic").decode("cps/x/dev/d1/telemetry", big)
    assert isinstance(got, Reject) and got.reason == "too_large"


def test_unit_mixup_is_caught_by_the_plausibility_bound():
    # a 3.68 kW plug reporting 50 000 "W" (someone sent mW or a kW value scaled twice)
    got = load_profile("tasmota_plug").decode("tele/p/SENSOR", b'{"ENERGY":{"Power":50000}}')
    assert isinstance(got, Reject) and got.reason == "implausible" and "wrong unit" in got.detail


def test_unknown_enum_value_is_rejected():
    got = load_profile("openevse").decode("openevse-1/vehicle", b"7")
    assert isinstance(got, Reject) and got.reason == "out_of_range" and "not one of" in got.detail


@pytest.mark.parametrize("name", SHIPPED)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none()
            | st.booleans()
            | st.floats(allow_nan=False)
            | st.integers()
            | st.text(max_size=20),
            lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
            max_leaves=20,
        ).map(lambda x: json.dumps(x).encode()),
    ),
    which=st.integers(0, 50),
)
def test_fuzzed_payloads_never_raise(name, payload, which):
    profile = load_profile(name)
    dev = profile.bind(TOPIC.get(name, "dev-1"))
    topics = dev.subscriptions + dev.command_topics
    topic = topics[which % len(topics)]
    got = dev.decode(topic, payload)
    assert isinstance(got, (Measurement, Reject, Ignored))
    if isinstance(got, Measurement):
        for k, v in got.signals.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, v)
    cmd = dev.decode_command(topic, payload)
    assert isinstance(cmd, (Setpoint, Reject, Ignored))


@pytest.mark.parametrize("bad", ["ev1/+/#", "a/#", "", "/x", "x/", "a//b", "a\0b"])
def test_device_topics_with_wildcards_are_refused(bad):
    with pytest.raises(BridgeError, match="invalid device topic"):
        load_profile("generic").subscriptions(bad)


# --------------------------------------------------------------------------- profile files
def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_a_new_profile_needs_no_code(tmp_path):
    path = _write(
        tmp_path,
        "my_meter",
        """
name: my_meter
kinds: [meter]
sources: [my own meter]
messages:
  - topic: "home/{t}/power"
    raw: {signal: power_w, unit: kW}
  - topic: "home/{t}/energy"
    payload: {import: {signal: energy_wh, unit: kWh}}
""",
    )
    p = load_profile(path)
    assert p.subscriptions("m1") == ["home/m1/power", "home/m1/energy"]
    assert p.decode("home/m1/power", b"1.5").signals == {"power_w": 1500.0}
    assert p.decode("home/m1/energy", b'{"import": 2}').signals == {"energy_wh": 2000.0}


BAD_PROFILES = [
    (
        "unit of the wrong dimension",
        "raw: {signal: power_w, unit: kWh}",
        "messages[0].raw.unit: 'kWh' is an energy unit; signal power_w needs a power unit",
    ),
    ("unknown signal", "raw: {signal: pwr}", "messages[0].raw.signal: unknown signal 'pwr'"),
    ("bad sign", "raw: {signal: power_w, sign: 2}", "messages[0].raw.sign: must be 1 or -1"),
    (
        "map to wrong type",
        "raw: {signal: on, map: {ON: 1}}",
        "messages[0].raw.map.ON: canonical value 1 is not a bool",
    ),
    ("no signal", "payload: {a: 1}", "messages[0]: carries no signal"),
]


@pytest.mark.parametrize(("what", "field", "message"), BAD_PROFILES)
def test_bad_profiles_name_file_path_and_problem(tmp_path, what, field, message):
    path = _write(
        tmp_path,
        "p",
        f"""
name: p
kinds: [meter]
messages:
  - topic: "x/{{t}}/y"
    {field}
""",
    )
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert f"{path}: {message}" in str(exc.value), str(exc.value)


def test_profile_file_errors_are_all_listed(tmp_path):
    path = _write(
        tmp_path,
        "q",
        """
name: other
kinds: [toaster]
rated: {power_w_max: -1, power_w_min: 5}
messages:
  - topic: "x/y"
    raw: {signal: power_w}
commands:
  - topic: "{t}/set"
    retain: true
    raw: {signal: soc}
""",
    )
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    text = str(exc.value)
    for part in (
        "name: 'other' must equal the file name 'q'",
        "kinds: must be a non-empty list",
        "rated: power_w_min 5.0 > power_w_max -1.0",
        "messages[0].topic: topic template 'x/y' must contain {t}",
        "commands[0].retain: commands are never retained",
        "commands[0]: signal soc cannot be commanded",
    ):
        assert part in text, (part, text)


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(ProfileError, match=r"unknown device profile; known: .*tasmota_plug"):
        load_profile("tasmota")


def test_yaml_syntax_error_has_line(tmp_path):
    path = _write(tmp_path, "s", "name: s\nkinds: [meter\n")
    with pytest.raises(ProfileError, match=rf"{path}:\d+:\d+: invalid YAML"):
        load_profile(path)


def test_setpoint_signals_match_the_contract():
    assert set(SETPOINT_SIGNALS) == {"power_w", "current_a", "on", "mode"}


def test_the_profile_example_in_docs_hil_md_loads_and_round_trips(tmp_path):
    """docs/hil.md's "Write your own profile" example is a working profile."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "hil.md").read_text()
    section = text[text.index("### Write your own profile") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "my_meter.yaml"
    path.write_text(block)
    p = load_profile(path)
    assert p.decode("home/m1/power", b"2.5").signals == {"power_w": 2500.0}
    got = p.decode("home/m1/state", b'{"counters": {"import": 1.5}, "relay": "1"}')
    assert got.signals == {"energy_wh": 1500.0, "on": True}
    assert p.decode("home/m1/status", b"down").signals == {"available": False}
    assert p.encode_setpoint("m1", Setpoint(on=False)) == [("home/m1/relay/set", b"0", 1, False)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7e3", 7000.0), ("7_400", 7400.0), ("0x1F40", 8000.0), ("7.4e3", 7400.0), ("7:30", None)],
)
def test_profile_numbers_are_read_as_in_scenario_files(tmp_path, value, expected):
    """One YAML dialect for every input file (the scenario loader's YAML 1.2 scalars):
    ``7e3`` is a number in a profile as in a scenario, a base-60 ``7:30`` is text, not
    450 (YAML 1.1), so it is refused with the field named."""
    from cps_sim.scenario.loader import parse_yaml

    path = _write(
        tmp_path,
        "r",
        f"""
name: r
kinds: [meter]
rated: {{power_w_max: {value}}}
messages:
  - topic: "x/{{t}}/y"
    raw: {{signal: power_w}}
""",
    )
    in_scenario, _ = parse_yaml(f"x: {value}\n")
    if expected is None:
        assert in_scenario == {"x": value}
        with pytest.raises(ProfileError, match=r"rated\.power_w_max"):
            load_profile(path)
    else:
        assert in_scenario == {"x": expected}
        assert load_profile(path).rated.power_w_max == expected
