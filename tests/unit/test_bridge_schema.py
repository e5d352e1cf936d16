"""MQTT schema v1 (cps_sim/bridge/schema.py): strict decoding never raises, rejects with a
reason, and round-trips what the simulator sends (reliability matrix P1-P7, T9, T10)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cps_sim.bridge import schema as S
from cps_sim.core.bus import BATTERY_AUTO, BATTERY_FOLLOW, BusError, validate_payload

ENV = {"v": 1, "seq": 0, "ts": 1.7e9}


def obj(**kw) -> bytes:
    return json.dumps({**ENV, **kw}).encode()


# ----------------------------------------------------------------------------- P1 / P4


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b'{"p": 12', S.NOT_JSON),
        (b"", S.NOT_JSON),
        (b"\xff\xfe", S.NOT_UTF8),
        (b'{"power_w": NaN}', S.NAN_OR_INF),
        (b'{"power_w": Infinity}', S.NAN_OR_INF),
        (b'{"power_w": -Infinity}', S.NAN_OR_INF),
        (b'{"power_w": 1e309}', S.NAN_OR_INF),
        (b'{"a": 1, "a": 2}', S.DUPLICATE_KEY),
        (b"[1, 2]", S.NOT_OBJECT),
        (b"12", S.NOT_OBJECT),
        (b'"online"', S.NOT_OBJECT),
        (b'{"a": [[[[[1]]]]]}', S.TOO_DEEP),
        (b"[" * 60000 + b"]" * 60000, S.TOO_LARGE),
        (b'{"a":' * 20000 + b"1" + b"}" * 20000, S.TOO_LARGE),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, S.TOO_DEEP),
    ],
)
def test_bad_payloads_rejected_with_reason(payload, reason):
    r = S.parse_json(payload)
    assert isinstance(r, S.Reject) and r.reason == reason, r


def test_oversized_payload_rejected_before_parsing():
    big = b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}'  # 10 MB of valid JSON
    t0 = time.perf_counter()
    r = S.parse_json(big)
    assert isinstance(r, S.Reject) and r.reason == S.TOO_LARGE
    assert "10,485,7" in r.detail  # the size is reported
    assert time.perf_counter() - t0 < 0.05  # not parsed (parsing 10 MB takes far longer)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    for decode in (S.parse_json, S.decode_measurement, S.decode_setpoint, S.decode_availability):
        r = decode(data)
        if isinstance(r, S.Reject):
            assert r.reason in S.REASONS and r.detail


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "seq",
                "ts",
                "power_w",
                "soc",
                "ttl_s",
                "mode",
                "current_a",
                "on",
                "plugged",
                "sid",
                "power_kw",
                "ev_setpoint_w",
                "battery_mode",
                "battery_setpoint_w",
                "import_limit_w",
                "x",
            ]
        ),
        json_values,
        max_size=8,
    )
)
def test_fuzzed_json_objects_decode_or_reject(d):
    """Any JSON object: decoded into valid, finite values, or rejected with a known reason."""
    data = json.dumps(d).encode()
    m = S.decode_measurement(data)
    if isinstance(m, S.Measurement):
        assert math.isfinite(m.signals["power_w"])
        assert all(math.isfinite(v) for v in m.signals.values() if isinstance(v, float))
    else:
        assert m.reason in S.REASONS
    sp = S.decode_setpoint(data)
    if not isinstance(sp, S.Reject):
        setpoint, _env = sp
        assert 0 < setpoint.ttl_s <= S.MAX_TTL_S
    else:
        assert sp.reason in S.REASONS
    g = S.decode_group_setpoint(
        d,
        {
            "ev_setpoint_w": 2,
            "battery_setpoint_w": 3,
            "import_limit_w": 3,
            "deferrable_setpoint_w": 3,
        },
    )
    if not isinstance(g, S.Reject):
        for key, arr in g.items():
            if key == "ttl_s":
                continue
            assert arr.shape[0] == (2 if key == "ev_setpoint_w" else 3)
            if key != "battery_setpoint_w":
                assert not np.isnan(arr).any()
    else:
        assert g.reason in S.REASONS


# ----------------------------------------------------------------------------- envelope


@pytest.mark.parametrize(
    "bad,reason",
    [
        ({"seq": 0, "ts": 1.7e9}, S.MISSING_FIELD),
        ({"v": 2, "seq": 0, "ts": 1.7e9}, S.BAD_VERSION),
        ({"v": True, "seq": 0, "ts": 1.7e9}, S.WRONG_TYPE),
        ({"v": 1, "seq": True, "ts": 1.7e9}, S.WRONG_TYPE),
        ({"v": 1, "seq": 1.5, "ts": 1.7e9}, S.WRONG_TYPE),
        ({"v": 1, "seq": -1, "ts": 1.7e9}, S.OUT_OF_RANGE),
        ({"v": 1, "seq": 0, "ts": "now"}, S.WRONG_TYPE),
        ({"v": 1, "seq": 0, "ts": 1.7e12}, S.OUT_OF_RANGE),  # milliseconds, not seconds
        ({"v": 1, "seq": 0, "ts": 1.7e9, "sid": "a/b"}, S.WRONG_TYPE),
    ],
)
def test_envelope_checked(bad, reason):
    r = S.check_envelope(bad)
    assert isinstance(r, S.Reject) and r.reason == reason


def test_stream_tracker_duplicates_reorder_gaps_restarts():
    t = S.StreamTracker()

    def env(seq, ts=100.0, sid=None):
        return S.Envelope(1, seq, ts, sid)

    assert t.check("a", env(0)) == 0
    assert t.check("a", env(1)) == 0
    assert t.check("a", env(1)).reason == S.DUPLICATE  # T9: QoS 1 redelivery
    assert t.check("a", env(5)) == 3  # T6: 2, 3, 4 lost on the way
    assert t.check("a", env(4)).reason == S.OUT_OF_ORDER  # T10: late, older than held
    assert (t.gaps, t.missing) == (1, 3)
    assert t.check("b", env(9)) == 0  # streams are independent
    assert t.check("a", env(0, ts=200.0)) == 0  # seq back to 0 with a newer ts: restart
    assert t.restarts == 1
    assert t.check("a", env(7, sid="s2")) == 0  # a new session id restarts too
    assert t.check("a", env(3, sid="s2")).reason == S.OUT_OF_ORDER
    assert t.restarts == 2


# ----------------------------------------------------------------------------- devices


def test_measurement_decoding():
    m = S.decode_measurement(obj(power_w=1500, soc=0.5, plugged=True, vendor_x=3))
    assert m.signals == {"power_w": 1500.0, "soc": 0.5, "plugged": True}
    assert m.unknown_keys == ("vendor_x",)  # tolerated and reported (P2)
    for bad, reason in [
        (obj(soc=0.5), S.MISSING_FIELD),
        (obj(power_w="12kW"), S.WRONG_TYPE),
        (obj(power_w=True), S.WRONG_TYPE),
        (obj(power_w=1, soc=1.4), S.OUT_OF_RANGE),  # P6
        (obj(power_w=1, soc=-0.05), S.OUT_OF_RANGE),
        (obj(power_w=2e7), S.OUT_OF_RANGE),
        (obj(power_kw=1.2), S.WRONG_UNIT),  # P3
        (obj(power_w=1200, unit="W"), S.WRONG_UNIT),
        (obj(power_w=1, plugged="yes"), S.WRONG_TYPE),
    ]:
        r = S.decode_measurement(bad)
        assert isinstance(r, S.Reject) and r.reason == reason, (bad, r)


def test_setpoint_decoding_is_strict():
    sp, env = S.decode_setpoint(obj(ttl_s=30, power_w=-2000))
    assert sp == S.Setpoint(ttl_s=30.0, power_w=-2000.0) and env.seq == 0
    sp, _ = S.decode_setpoint(obj(ttl_s=30, mode="auto"))
    assert sp.mode == "auto"
    for bad, reason in [
        (obj(power_w=1000), S.MISSING_FIELD),  # no ttl
        (obj(ttl_s=0, power_w=1), S.OUT_OF_RANGE),
        (obj(ttl_s=30), S.MISSING_FIELD),  # no control
        (obj(ttl_s=30, power_w=1, current_a=6), S.UNKNOWN_FIELD),  # two controls
        (obj(ttl_s=30, power_w=1, extra=1), S.UNKNOWN_FIELD),  # P2: strict on commands
        (obj(ttl_s=30, current_a=-1), S.OUT_OF_RANGE),
        (obj(ttl_s=30, mode="turbo"), S.OUT_OF_RANGE),
        (obj(ttl_s=30, on="true"), S.WRONG_TYPE),
        (obj(ttl_s=30, power_kw=3), S.WRONG_UNIT),
    ]:
        r = S.decode_setpoint(bad)
        assert isinstance(r, S.Reject) and r.reason == reason, (bad, r)


def test_setpoint_never_serialises_nan():
    with pytest.raises(ValueError):
        S.Setpoint(ttl_s=10, power_w=math.nan).to_json(0, 1.7e9)
    body = json.loads(S.Setpoint(ttl_s=10, current_a=16.0).to_json(3, 1.7e9, "abc"))
    assert body == {"v": 1, "seq": 3, "ts": 1.7e9, "sid": "abc", "ttl_s": 10.0, "current_a": 16.0}


def test_availability():
    assert S.decode_availability(b"online") is True
    assert S.decode_availability(b"offline") is False
    assert S.decode_availability(b"ONLINE").reason == S.OUT_OF_RANGE


# ----------------------------------------------------------------------------- topics (P7)


@pytest.mark.parametrize(
    "bad", ["ev1/+/#", "../x", "a\x00b", "x" * 70000, "", "a b", "a+", "#", "é"]
)
def test_ids_with_topic_syntax_rejected(bad):
    with pytest.raises(BusError):
        S.validate_id(bad)
    with pytest.raises(BusError):
        S.Topics("cps/run").dev(bad, "telemetry")


def test_topic_layout_and_bus_mapping():
    t = S.Topics("cps/lab1")
    assert t.dev("plug-1", "telemetry") == "cps/lab1/dev/plug-1/telemetry"
    assert t.group("homes", "setpoint") == "cps/lab1/group/homes/setpoint"
    assert t.from_bus("cps/homes/setpoints") == "cps/lab1/group/homes/setpoint"
    assert t.to_bus("cps/lab1/group/homes/setpoint") == "cps/homes/setpoints"
    assert t.from_bus("cps/+/setpoints") == "cps/lab1/group/+/setpoint"
    assert t.from_bus("cps/homes/event/#") == "cps/lab1/group/homes/event/#"
    assert t.to_bus("cps/lab1/group/homes/event/arrival") == "cps/homes/event/arrival"
    assert t.to_bus("cps/lab1/group/homes/observation") is None
    assert t.to_bus("cps/other/group/homes/setpoint") is None
    assert t.parse("cps/lab1/dev/plug-1/setpoint") == ("dev", "plug-1", "setpoint")
    assert t.parse("cps/lab1/dev/a/b/setpoint") is None
    for bad in ["", "a//b", "a/+", "/a", "a/", "/".join(["a"] * 9)]:
        with pytest.raises(BusError):
            S.Topics(bad)


# ----------------------------------------------------------------------------- group arrays


def test_group_setpoint_explicit_battery_mode_and_null_limits():
    sizes = {"ev_setpoint_w": 2, "battery_setpoint_w": 3, "import_limit_w": 3}
    d = {
        **ENV,
        "ttl_s": 60,
        "ev_setpoint_w": [3000, None],
        "battery_setpoint_w": [1000, 0, -500],
        "battery_mode": ["setpoint", "auto", "setpoint"],
        "import_limit_w": [None, 4000, 0],
    }
    out = S.decode_group_setpoint(d, sizes)
    assert out["ttl_s"] == 60
    np.testing.assert_array_equal(out["ev_setpoint_w"], [3000, np.inf])
    np.testing.assert_array_equal(out["battery_setpoint_w"], [1000, 0, -500])
    modes = [BATTERY_FOLLOW, BATTERY_AUTO, BATTERY_FOLLOW]
    np.testing.assert_array_equal(out["battery_mode"], modes)
    np.testing.assert_array_equal(out["import_limit_w"], [np.inf, 4000, 0])
    assert not any(np.isnan(v).any() for v in out.values() if isinstance(v, np.ndarray))
    all_auto = S.decode_group_setpoint({**ENV, "battery_mode": "auto"}, sizes)
    assert "battery_setpoint_w" not in all_auto
    np.testing.assert_array_equal(all_auto["battery_mode"], np.full(3, BATTERY_AUTO))
    for bad, reason in [
        ({**ENV, "ev_setpoint_w": [1, 2, 3]}, S.BAD_LENGTH),
        ({**ENV, "battery_setpoint_w": [1, None, 2]}, S.WRONG_TYPE),  # NaN/null never valid
        ({**ENV, "battery_mode": "setpoint"}, S.MISSING_FIELD),
        ({**ENV, "battery_mode": ["auto"]}, S.BAD_LENGTH),
        ({**ENV, "import_limit_w": [1, -1, 2]}, S.OUT_OF_RANGE),
        ({**ENV, "ev_setpoint_w": ["1", 2]}, S.WRONG_TYPE),
        ({**ENV, "ev_setpoint_w": [1e8, 2]}, S.OUT_OF_RANGE),
        ({**ENV, "ttl_s": -1, "ev_setpoint_w": [1, 2]}, S.OUT_OF_RANGE),
        ({**ENV, "speed": 3}, S.UNKNOWN_FIELD),
        ({**ENV}, S.MISSING_FIELD),
        ({**ENV, "ev_setpoint_w": 5}, S.WRONG_TYPE),
    ]:
        r = S.decode_group_setpoint(bad, sizes)
        assert isinstance(r, S.Reject) and r.reason == reason, (bad, r)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(finite, st.booleans(), finite, st.booleans(), finite), min_size=1, max_size=6
    )
)
def test_bus_payload_round_trip(rows):
    """What an internal controller publishes arrives unchanged (battery_mode, inf limit)."""
    bat = np.array([v for v, *_ in rows])
    mode = np.array([BATTERY_AUTO if auto else BATTERY_FOLLOW for _, auto, *_ in rows])
    lim = np.array([np.inf if nolim else abs(v) for *_, v, nolim, _ in rows])
    ev = np.array([r[4] for r in rows])
    body = validate_payload(
        {
            "battery_setpoint_w": bat,
            "battery_mode": mode,
            "import_limit_w": lim,
            "ev_setpoint_w": ev,
            "ttl_s": 30.0,
        }
    )
    data = S.encode_bus_payload(body, S.Envelope(1, 4, 1.7e9, "me", 12.5))
    parsed = S.parse_json(data)
    assert isinstance(parsed, dict) and parsed["sim_time_s"] == 12.5
    assert S.check_envelope(parsed) == S.Envelope(1, 4, 1.7e9, "me", 12.5)
    out = S.decode_group_setpoint(parsed, {k: len(rows) for k in S.GROUP_SETPOINT_KEYS})
    np.testing.assert_array_equal(out["battery_setpoint_w"], bat)
    np.testing.assert_array_equal(out["battery_mode"], mode)
    assert parsed["battery_mode"] == ["auto" if m == BATTERY_AUTO else "setpoint" for m in mode]
    np.testing.assert_array_equal(out["import_limit_w"], lim)
    np.testing.assert_array_equal(out["ev_setpoint_w"], ev)  # floats round-trip exactly
    assert out["ttl_s"] == 30.0


def test_unsendable_payloads_refused_at_publish():
    env = S.Envelope(1, 0, 1.7e9)
    for bad in [
        {"ev_setpoint_w": np.array([np.nan])},
        {"battery_setpoint_w": np.array([np.nan])},  # the rule is battery_mode, never NaN
        {"battery_mode": np.array([0.5])},
        {"battery_setpoint_w": np.array([np.inf])},
        {"x": float("nan")},
        {"seq": 1},
        {"deferrable_setpoint_w": np.array([np.inf])},
    ]:
        with pytest.raises(BusError):
            S.encode_bus_payload(bad, env)


def test_state_fields_checked():
    m = S.decode_measurement(
        obj(setpoint_seq=4, setpoint_power_w=3600.0, mode="setpoint", fallback=False, reason=""),
        role="state",
    )
    assert m.signals["setpoint_seq"] == 4 and isinstance(m.signals["setpoint_seq"], int)
    assert m.unknown_keys == ()
    for bad in [
        obj(setpoint_seq=1.5),
        obj(setpoint_seq=-1),
        obj(fallback="no"),
        obj(setpoint_current_a=-3),
    ]:
        assert isinstance(S.decode_measurement(bad, role="state"), S.Reject), bad


def test_export_limit_null_is_no_limit():
    sizes = {"export_limit_w": 2}
    out = S.decode_group_setpoint({**ENV, "export_limit_w": [None, 0]}, sizes)
    np.testing.assert_array_equal(out["export_limit_w"], [np.inf, 0])
    assert S.decode_group_setpoint({**ENV, "export_limit_w": [-1, 0]}, sizes).reason == (
        S.OUT_OF_RANGE
    )


def test_group_setpoint_keys_are_the_engines():
    """Every control key of the registered device populations and the grid connection goes
    over MQTT (none kept by hand): numbers, or a mode as strings."""
    from cps_sim.world.populations import SETPOINT_DEFS

    assert set(S.GROUP_SETPOINT_KEYS) | set(S.MODE_KEYS) == set(SETPOINT_DEFS)
    assert {"hpwh_setpoint_w", "hvac_shift_k"} <= set(S.GROUP_SETPOINT_KEYS)
    assert set(S.MODE_KEYS) == {"battery_mode", "hpwh_mode"}


def test_group_setpoint_water_heaters_and_air_conditioners():
    sizes = {"hpwh_setpoint_w": 3, "hpwh_mode": 3, "hvac_shift_k": 3}
    out = S.decode_group_setpoint(
        {"hpwh_setpoint_w": [800, 0, 1200.5], "hpwh_mode": "setpoint", "hvac_shift_k": [2, 0, -1]},
        sizes,
    )
    assert not isinstance(out, S.Reject), out
    np.testing.assert_array_equal(out["hpwh_setpoint_w"], [800, 0, 1200.5])
    np.testing.assert_array_equal(out["hpwh_mode"], [BATTERY_FOLLOW] * 3)
    np.testing.assert_array_equal(out["hvac_shift_k"], [2, 0, -1])
    mixed = S.decode_group_setpoint(
        {"hpwh_setpoint_w": [1, 2, 3], "hpwh_mode": ["auto", "setpoint", "auto"]}, sizes
    )
    np.testing.assert_array_equal(mixed["hpwh_mode"], [BATTERY_AUTO, BATTERY_FOLLOW, BATTERY_AUTO])
    for bad, reason, words in [
        ({"hpwh_setpoint_w": [-1, 0, 0]}, S.OUT_OF_RANGE, "hpwh_setpoint_w must be >= 0"),
        ({"hvac_shift_k": [0, 21, 0]}, S.OUT_OF_RANGE, "±20 K"),
        ({"hvac_shift_k": [0, None, 0]}, S.WRONG_TYPE, "hvac_shift_k[1]"),
        ({"hpwh_setpoint_w": [0, None, 0]}, S.WRONG_TYPE, "hpwh_mode 'auto'"),
        ({"hpwh_mode": "setpoint"}, S.MISSING_FIELD, "needs hpwh_setpoint_w"),
        ({"hpwh_mode": "eco"}, S.OUT_OF_RANGE, "hpwh_mode must be one of"),
        ({"hpwh_mode": ["auto"]}, S.BAD_LENGTH, "hpwh_mode: 1 values"),
        ({"hpwh_setpoint_w": [1, 2]}, S.BAD_LENGTH, "hpwh_setpoint_w: 2 values"),
    ]:
        r = S.decode_group_setpoint(bad, sizes)
        assert isinstance(r, S.Reject) and r.reason == reason and words in r.detail, (bad, r)
    # only a mode: every site back on its own rule
    auto = S.decode_group_setpoint({"hpwh_mode": "auto"}, sizes)
    np.testing.assert_array_equal(auto["hpwh_mode"], [BATTERY_AUTO] * 3)


def test_hpwh_mode_round_trips_as_strings():
    body = validate_payload(
        {"hpwh_setpoint_w": np.array([500.0, 0.0]), "hpwh_mode": np.array([0.0, 1.0])}
    )
    parsed = S.parse_json(S.encode_bus_payload(body, S.Envelope(1, 0, 1.7e9)))
    assert parsed["hpwh_mode"] == ["setpoint", "auto"]
    out = S.decode_group_setpoint(parsed, {"hpwh_setpoint_w": 2})
    np.testing.assert_array_equal(out["hpwh_mode"], [0.0, 1.0])
    with pytest.raises(BusError, match="hpwh_mode"):
        S.encode_bus_payload({"hpwh_mode": np.array([0.5])}, S.Envelope(1, 0, 1.7e9))
