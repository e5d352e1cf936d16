"""MqttTransport against a real Mosquitto started on a free port (reliability matrix T1, T2,
T6, T9, T10, T14, P1-P9, S1, S2, S4).  Every test bounds its wall time."""

from __future__ import annotations

import json
import logging
import math
import socket
import ssl
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cps_sim.bridge import schema as S
from cps_sim.bridge.broker import MosquittoBroker, MosquittoConfig, free_port, make_password_file
from cps_sim.bridge.transport import ConnectionConfig, TlsConfig, connect, poll_period
from cps_sim.core.environment import make_env
from cps_sim.core.errors import BridgeAuthError, BridgeTlsError, BridgeUnavailable
from cps_sim.experiment.recorder import Recorder
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from tests.conftest import BASE, fixed_trip
from tests.integration.mqtt_helpers import client, envelope, rt_env, run_until, send, stop
from tests.integration.mqtt_helpers import transport as make_transport

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(90)]

PREFIX = "cps/test"


def hems_scenario(minutes: int = 45, ttl_s: float | None = None) -> Scenario:
    """Four homes from 07:30: EVs leave at 07:45 and are back at 08:00, then charge ('now');
    the batteries (1 kW) cover part of the load, the rest is imported."""
    ems = {"kind": "hems", "interval_s": 60, "ev_strategy": "now"}
    if ttl_s is not None:
        ems["ttl_s"] = ttl_s
    return Scenario.model_validate(
        {
            **BASE,
            "start": "2026-05-11T07:30:00+09:00",
            "duration_days": minutes / 1440,
            "tick_s": 60,
            "weather": {"source": "constant", "constant_ghi_w_m2": 0},
            "sites": [
                {
                    "name": "homes",
                    "count": 4,
                    "pv": {"share": 1, "capacity_kw": 4},
                    "battery": {
                        "share": 1,
                        "capacity_kwh": 10,
                        "power_kw": 1,
                        "control": "idle",
                        "initial_soc": 0.6,
                    },
                    "ev": {
                        "share": 1,
                        "charger_kw": 6,
                        "initial_soc": 0.5,
                        "trips": fixed_trip(7.75, 0.25, 30.0),
                    },
                }
            ],
            "ems": {"homes": ems},
        }
    )


def run_world(sc: Scenario, env, transport):
    world = build_world(sc)
    rec = Recorder(world)
    wiring = world.start(env, rec.on_tick, transport=transport)
    if hasattr(transport, "start"):
        transport.start()
    env.run(until=sc.duration_s + 0.5 * sc.tick_s)
    return world, rec, wiring


# ----------------------------------------------------------------------------- same controller


def test_same_controller_over_memory_and_mqtt_gives_identical_run(mosquitto):
    """The HEMS and its devices talk through a real broker; the run equals the in-memory one."""
    sc = hems_scenario(45)
    _, mem, _ = run_world(sc, make_env("fast"), None)  # the scenario's MemoryTransport
    env = rt_env(speed=1000)
    tr = make_transport(env, mosquitto, poll_s=poll_period(1000))
    try:
        _, mq, wiring = run_world(sc, env, tr)
    finally:
        tr.close()
    assert mq.ticks_done == mem.ticks_done == 45
    np.testing.assert_array_equal(mq.flows, mem.flows)  # every flow of every tick, exactly
    km, kq = mem.kpis(mem.events()), mq.kpis(mq.events())
    assert json.dumps(km, sort_keys=True) == json.dumps(kq, sort_keys=True)  # NaN-aware
    assert km["grid_import_kwh"] > 0 and km["ev_charging_kwh"] > 0  # a run with something in it
    c = tr.counters
    # 46 HEMS decisions went out and came back through the broker, all accepted
    assert c.published == 46 and c.received == 46 and c.accepted == 46 and c.rejected == 0
    assert c.loopback_timeouts == 0
    cs, ds = wiring.ems_stats["homes"]
    assert ds.applied == cs.decisions == 46
    rows = tr.log.table().to_pydict()
    assert rows["direction"].count("out") == 46 and rows["direction"].count("in") == 46


# ----------------------------------------------------------------------------- connection errors


def test_no_broker_fails_fast_with_clear_error():  # T1
    port = free_port()
    env = rt_env(10)
    t0 = time.monotonic()
    with pytest.raises(BridgeUnavailable, match=f"127.0.0.1:{port}.*is it running"):
        connect(env, ConnectionConfig(url=f"mqtt://127.0.0.1:{port}", connect_timeout_s=2), PREFIX)
    assert time.monotonic() - t0 < 5


def test_silent_port_times_out_with_hint():  # a listener that never answers MQTT
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        with pytest.raises(BridgeUnavailable, match=r"no CONNACK.*mqtts://"):
            connect(
                rt_env(10),
                ConnectionConfig(url=f"mqtt://127.0.0.1:{port}", connect_timeout_s=1),
                PREFIX,
            )
    finally:
        srv.close()


@pytest.fixture
def auth_broker(tmp_path):
    folder = tmp_path / "auth"
    pw = make_password_file(folder, {"sim": "s3cret-pw"})
    with MosquittoBroker(folder, MosquittoConfig(allow_anonymous=False, password_file=pw)) as b:
        yield b


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_refused_and_never_logged(auth_broker, caplog, protocol):  # S1, S2
    caplog.set_level(logging.DEBUG)
    env = rt_env(10)
    with pytest.raises(BridgeAuthError, match="refused the login of user 'sim'") as exc:
        connect(
            env,
            ConnectionConfig(
                url=auth_broker.url, username="sim", password="wrong-pw-XYZ", protocol=protocol
            ),
            PREFIX,
        )
    assert "wrong-pw-XYZ" not in str(exc.value) and "wrong-pw-XYZ" not in caplog.text
    with pytest.raises(BridgeAuthError, match="anonymous"):
        connect(env, ConnectionConfig(url=auth_broker.url, protocol=protocol), PREFIX)
    tr = connect(
        env,
        ConnectionConfig(
            url=auth_broker.url, username="sim", password="s3cret-pw", protocol=protocol
        ),
        PREFIX,
    )
    assert "s3cret-pw" not in repr(tr.link.cfg)
    tr.close()


@pytest.fixture
def tls_material(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    other = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {}
    for name, blob in [("ca.pem", ca.cert_pem), ("other.pem", other.cert_pem)]:
        p = tmp_path / name
        blob.write_to_path(str(p))
        paths[name] = p
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    paths["cert"], paths["key"] = tmp_path / "cert.pem", tmp_path / "key.pem"
    return paths


def test_tls_bad_certificate_refused_good_one_accepted(tmp_path, tls_material):  # S4
    cfg = MosquittoConfig(certfile=tls_material["cert"], keyfile=tls_material["key"])
    with MosquittoBroker(tmp_path / "tls", cfg) as b:
        assert b.url.startswith("mqtts://")
        env = rt_env(10)
        with pytest.raises(
            BridgeTlsError,
            match=r"certificate of broker 127.0.0.1.*not "
            r"accepted.*ca_file",
        ):
            connect(
                env,
                ConnectionConfig(url=b.url, tls=TlsConfig(ca_file=tls_material["other.pem"])),
                PREFIX,
            )
        with pytest.raises(BridgeTlsError, match="set-up"):
            connect(
                env,
                ConnectionConfig(url=b.url, tls=TlsConfig(ca_file=tmp_path / "missing.pem")),
                PREFIX,
            )
        tr = connect(
            env, ConnectionConfig(url=b.url, tls=TlsConfig(ca_file=tls_material["ca.pem"])), PREFIX
        )
        store = tr.subscribe("cps/g/event/#")
        tr.start()
        tr.publish("cps/g/event/x", {"a": 1.0})
        assert run_until(env, lambda: len(store.items) == 1, 0.5, 10)
        assert store.items[0].payload == {"a": 1.0}
        tr.close()
        # plain MQTT against the TLS port: no CONNACK, with a hint
        with pytest.raises(BridgeUnavailable):
            connect(
                env,
                ConnectionConfig(url=b.url.replace("mqtts", "mqtt"), connect_timeout_s=1),
                PREFIX,
            )
    assert ssl.HAS_SNI


# ----------------------------------------------------------------------------- bad traffic


def _bus_setup(mosquitto, exposed=("ext",), **kw):
    env = rt_env(20)
    tr = make_transport(env, mosquitto, exposed=set(exposed), **kw)
    events = tr.subscribe("cps/g/event/#")
    ext_sp = tr.subscribe("cps/ext/setpoints")
    own_sp = tr.subscribe("cps/int/setpoints")
    tr.group_sizes["ext"] = {"ev_setpoint_w": 2, "battery_setpoint_w": 2}
    tr.start()
    return env, tr, events, ext_sp, own_sp


def test_duplicates_reorder_skew_retained_and_unexposed(mosquitto):  # T9 T10 T14 P8 P9
    c = client(mosquitto.host, mosquitto.port)
    sp = {**envelope(7), "ttl_s": 30, "ev_setpoint_w": [1000, 2000]}
    send(c, f"{PREFIX}/group/ext/setpoint", sp, retain=True)  # P9: left by an earlier run
    env, tr, events, ext_sp, own_sp = _bus_setup(mosquitto)
    ev = f"{PREFIX}/group/g/event/x"
    try:
        now = time.time()
        for seq, payload in [
            (0, {"a": 0}),
            (1, {"a": 1}),
            (1, {"a": 1}),  # duplicate
            (3, {"a": 3}),
            (2, {"a": 2}),  # gap of 1, then late 2
            (4, {"a": 4}),
        ]:
            send(c, ev, {**envelope(seq, now), **payload})
        send(c, ev, {**envelope(5, now + 3600), "a": 5})  # clock 1 h ahead: flagged, used
        sp = {**envelope(0), "ttl_s": 30, "ev_setpoint_w": [1000, 2000]}
        send(c, f"{PREFIX}/group/int/setpoint", sp)  # P8: group not exposed
        send(c, f"{PREFIX}/group/ext/setpoint", {**sp, "seq": 1})  # accepted
        send(c, f"{PREFIX}/group/ext/setpoint", {**sp, "seq": 2, "ts": now - 40})  # expired
        # published retained while the run listens: MQTT 5 keeps the flag (retain as
        # published), so it is refused like one left on the broker
        send(c, f"{PREFIX}/group/ext/setpoint", {**sp, "seq": 3}, retain=True)
        assert run_until(env, lambda: tr.counters.received == 12, 1.0, 10), (
            tr.counters.received,
            tr.log.table().to_pydict()["topic"],
            tr.log.table().to_pydict()["reason"],
        )
    finally:
        send(c, f"{PREFIX}/group/ext/setpoint", b"", retain=True)  # clear the retained one
        stop(c)
        tr.close()
    got = [m.payload["a"] for m in events.items]
    assert got == [0, 1, 3, 4, 5]  # never regresses to 2, 1 only once
    r = tr.counters.reasons
    assert r == {
        S.DUPLICATE: 1,
        S.OUT_OF_ORDER: 1,
        S.NOT_EXPOSED: 1,
        S.RETAINED_COMMAND: 2,
        S.EXPIRED: 1,
    }
    assert tr.counters.clock_skew == 1 and tr.streams.missing == 1
    assert len(ext_sp.items) == 1 and len(own_sp.items) == 0
    m = ext_sp.items[0]
    np.testing.assert_array_equal(m.payload["ev_setpoint_w"], [1000, 2000])
    assert m.sent_s == m.delivered_s  # external: ttl counts from reception
    kinds = [e.kind for e in tr.events]
    assert kinds.count("rejected") == 6 and kinds.count("clock_skew") == 1


payloads = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "seq",
                "ts",
                "a",
                "ttl_s",
                "ev_setpoint_w",
                "battery_mode",
                "battery_setpoint_w",
                "sid",
            ]
        ),
        st.one_of(
            st.integers(-5, 5),
            st.floats(allow_nan=False),
            st.text(max_size=5),
            st.lists(st.floats(-1e4, 1e4), max_size=3),
            st.none(),
        ),
        max_size=6,
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(
    max_examples=3, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "group/g/event/x",
                    "group/ext/setpoint",
                    "group/int/setpoint",
                    "group/nobody/setpoint",
                    "dev/x/telemetry",
                ]
            ),
            payloads,
        ),
        min_size=20,
        max_size=60,
    )
)
def test_fuzzed_traffic_never_crashes_and_is_all_counted(mosquitto, msgs):  # P1-P4
    env, tr, *_ = _bus_setup(mosquitto, queue_size=25)
    telemetry = []

    def on_telemetry(raw, now):  # a device-side handler: strict decode, stream checks
        m = S.decode_measurement(raw.payload)
        if isinstance(m, S.Reject):
            return m
        checked = tr.check(raw)
        if isinstance(checked, S.Reject):
            return checked
        telemetry.append(m)
        return None

    tr.subscribe_wire(f"{PREFIX}/dev/+/telemetry", on_telemetry)
    c = client(mosquitto.host, mosquitto.port)
    try:
        for topic, data in msgs:
            c.publish(f"{PREFIX}/{topic}", data, qos=1)
        send(c, f"{PREFIX}/group/g/event/end", {**envelope(0), "done": True})
        n = sum(not t.startswith("group/nobody") for t, _ in msgs) + 1
        ok = run_until(env, lambda: tr.counters.received >= n, 0.5, 15)
    finally:
        stop(c)
        tr.close()
    c_ = tr.counters
    # received = taken from the queue or dropped because it was full; each one is
    # either accepted or rejected with a reason; nothing unaccounted
    assert ok, c_
    assert c_.accepted + c_.rejected == c_.received
    assert sum(c_.reasons.values()) == c_.rejected
    assert c_.received == n and c_.queue_drops == tr.inbound_queue.drops_total
    assert set(c_.reasons) <= set(S.REASONS)
    assert all(
        math.isfinite(v) for m in telemetry for v in m.signals.values() if isinstance(v, float)
    )


def test_full_inbound_queue_drops_are_counted(mosquitto):
    env, tr, events, *_ = _bus_setup(mosquitto, queue_size=10)
    c = client(mosquitto.host, mosquitto.port)
    try:
        for i in range(100):  # a burst between two polls
            c.publish(f"{PREFIX}/group/g/event/x", json.dumps({**envelope(i), "i": i}), qos=1)
        send(c, f"{PREFIX}/group/g/event/x", {**envelope(100), "i": 100})
        deadline = time.monotonic() + 5
        while (
            tr.inbound_queue.drops_total + tr.inbound_queue.messages < 101
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert run_until(env, lambda: tr.counters.received == 101, 0.5, 10)
    finally:
        stop(c)
        tr.close()
    assert tr.counters.queue_drops == 91 == tr.counters.reasons[S.QUEUE_FULL]
    assert len(events.items) == 10
    # the later messages show the loss as a sequence gap as well
    assert tr.streams.missing == 91 - (100 - max(m.payload["i"] for m in events.items))


def test_broker_side_loss_detected_as_sequence_gap(tmp_path):  # T6 (+T4 session resumed)
    cfg = MosquittoConfig(max_queued_messages=20)
    with MosquittoBroker(tmp_path / "q", cfg) as b:
        env = rt_env(20)
        tr = make_transport(env, b, reconnect_min_s=1, reconnect_max_s=1)
        events = tr.subscribe("cps/g/event/#")
        tr.start()
        c = client(b.host, b.port)
        try:
            run_until(env, lambda: True, 0.5, 1)
            tr.link.client.socket().shutdown(socket.SHUT_RDWR)  # network drop
            deadline = time.monotonic() + 2
            while tr.link.client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.01)
            for i in range(300):  # while the bridge is offline: broker keeps 20 for it
                c.publish(f"{PREFIX}/group/g/event/x", json.dumps({**envelope(i), "i": i}), qos=1)
            time.sleep(0.3)
            assert run_until(env, lambda: tr.counters.reconnects == 1, 0.5, 10)
            send(c, f"{PREFIX}/group/g/event/x", {**envelope(300), "i": 300})
            assert run_until(env, lambda: any(m.payload["i"] == 300 for m in events.items), 0.5, 10)
        finally:
            stop(c)
            tr.close()
    got = [m.payload["i"] for m in events.items]
    assert got == [*range(20), 300]  # the oldest 20 were queued; the rest lost by the broker
    assert tr.streams.gaps == 1 and tr.streams.missing == 280
    assert tr.counters.disconnects == 1


# ----------------------------------------------------------------------------- broker crash


def test_broker_killed_and_restarted_mid_run(mosquitto):  # T2, T7
    sc = hems_scenario(30, ttl_s=120)
    env = rt_env(speed=300)
    tr = make_transport(
        env, mosquitto, poll_s=poll_period(300), reconnect_min_s=0.25, reconnect_max_s=0.5
    )

    def outage():
        time.sleep(1.5)
        mosquitto.kill()
        time.sleep(2.0)  # 600 simulated seconds without a broker
        mosquitto.restart()

    th = threading.Thread(target=outage)
    th.start()
    try:
        _world, rec, wiring = run_world(sc, env, tr)
    finally:
        th.join(10)
        tr.close()
    assert rec.ticks_done == 30  # the run completed
    k = rec.kpis(rec.events())
    assert abs(k["balance_residual_wh"]) < 1e-3
    c = tr.counters
    assert c.disconnects == 1 and c.reconnects == 1
    cs, ds = wiring.ems_stats["homes"]
    # fail-safe during the outage: the start + once when the setpoints ran out
    assert ds.fallbacks == 2 and ds.fallback_time_s > 300
    # losses counted: decisions made while offline were held (latest per topic) and the
    # superseded ones counted; nothing vanished unaccounted
    assert c.held_offline >= 5 and c.superseded == c.held_offline - 1
    assert c.published + c.held_offline + c.publish_failed >= cs.decisions
    assert ds.applied < cs.decisions
    kinds = [e.kind for e in tr.events]
    assert "disconnected" in kinds and "reconnected" in kinds
    # subscribed again on the fresh broker (no persistence): the HEMS's setpoints come
    # back through it after the reconnect and are applied
    t_re = max(e.sim_time_s for e in tr.events if e.kind == "reconnected")
    rows = tr.log.table().to_pydict()
    back = [
        t
        for d, t, ok in zip(rows["direction"], rows["sim_time_s"], rows["accepted"], strict=True)
        if d == "in" and t > t_re and ok
    ]
    assert len(back) >= 3, (t_re, back)


def test_frozen_broker_detected_by_keepalive_and_run_keeps_going(mosquitto):  # T3
    env = rt_env(10)
    tr = make_transport(env, mosquitto, keepalive_s=2, reconnect_min_s=0.25, reconnect_max_s=0.5)
    store = tr.subscribe("cps/g/event/#")
    tr.start()
    try:
        mosquitto.freeze()  # half-open: only the keepalive can tell
        t0 = time.monotonic()
        sim0 = env.now
        assert run_until(env, lambda: tr.counters.disconnects == 1, 0.5, 15)
        detected = time.monotonic() - t0
        assert env.now - sim0 >= 10 * (detected - 1.0)  # the simulation never blocked
        before = tr.counters.dropped_offline  # (the disconnect event itself is one)
        tr.publish("cps/g/event/x", {"a": 1.0})  # while down: counted, not sent
        assert tr.counters.dropped_offline == before + 1
        mosquitto.thaw()
        assert run_until(env, lambda: tr.counters.reconnects == 1, 0.5, 15)
        tr.publish("cps/g/event/x", {"a": 2.0})
        assert run_until(env, lambda: len(store.items) == 1, 0.5, 10)
    finally:
        mosquitto.thaw()
        tr.close()
    assert 2.0 <= detected <= 8.0  # about 1.5-2 x keepalive
    assert [m.payload["a"] for m in store.items] == [2.0]
