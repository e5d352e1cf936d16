"""Message bus: topic rules, MemoryTransport timing/loss/determinism, SetpointHolder."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from cps_sim.core.bus import (
    BusError,
    MemoryTransport,
    Message,
    SetpointHolder,
    Topics,
    topic_matches,
    validate_pattern,
    validate_topic,
)
from cps_sim.core.rng import RngStreams


@pytest.mark.parametrize(
    "pattern,topic,ok",
    [
        ("cps/homes/setpoints", "cps/homes/setpoints", True),
        ("cps/+/setpoints", "cps/homes/setpoints", True),
        ("cps/+/setpoints", "cps/homes/x/setpoints", False),
        ("cps/#", "cps/homes/event/arrival", True),
        ("cps/homes/#", "cps/homes", True),  # '#' also matches the parent level (MQTT)
        ("cps/homes", "cps/homes/setpoints", False),
        ("cps/homes/setpoints/x", "cps/homes/setpoints", False),
    ],
)
def test_topic_matching(pattern, topic, ok):
    assert topic_matches(validate_pattern(pattern), validate_topic(topic)) is ok


@pytest.mark.parametrize("bad", ["", "a//b", "a/+/b", "a/#", "a b", "a/é", "/a"])
def test_publish_topic_rejected(bad):
    with pytest.raises(BusError):
        validate_topic(bad)


@pytest.mark.parametrize("bad", ["a/#/b", "a/b+", "a/#x", ""])
def test_pattern_rejected(bad):
    with pytest.raises(BusError):
        validate_pattern(bad)


def test_payload_rejected_and_array_copied():
    env = simpy.Environment()
    bus = MemoryTransport(env)
    store = bus.subscribe("cps/g/setpoints")
    with pytest.raises(BusError):
        bus.publish("cps/g/setpoints", {"x": object()})
    with pytest.raises(BusError):
        bus.publish("cps/g/setpoints", {"x": np.array(["a"])})
    buf = np.array([1.0, 2.0])
    bus.publish("cps/g/setpoints", {"ev_setpoint_w": buf, "ttl_s": 60.0, "mode": "pv"})
    buf[:] = -5.0  # publisher reuses its buffer: the message in flight must not change
    env.run()
    msg = store.items[0]
    assert msg.payload["ev_setpoint_w"].tolist() == [1.0, 2.0]
    assert msg.payload["mode"] == "pv"


def _run(latency_s, jitter_s, loss, seed, n=200):
    env = simpy.Environment()
    bus = MemoryTransport(env, RngStreams(seed).generator("bus"), latency_s, jitter_s, loss)
    store = bus.subscribe("cps/+/setpoints")
    got = []

    def publisher():
        for i in range(n):
            bus.publish(Topics.setpoints("homes"), {"i": float(i)})
            yield env.timeout(10.0)

    def consumer():
        while True:
            m = yield store.get()
            got.append((m.payload["i"], m.sent_s, env.now))

    env.process(publisher())
    env.process(consumer())
    env.run(until=n * 10.0 + 100.0)
    return bus.counters, got


def test_latency_delivers_exactly_late():
    counters, got = _run(2.5, 0.0, 0.0, seed=1, n=10)
    assert counters.published == counters.delivered == 10 and counters.dropped == 0
    for _, sent, received in got:
        assert received == pytest.approx(sent + 2.5)


def test_jitter_bounded_and_loss_rate_and_determinism():
    counters, got = _run(1.0, 4.0, 0.2, seed=7, n=2000)
    delays = np.array([r - s for _, s, r in got])
    assert delays.min() >= 1.0 and delays.max() < 5.0
    assert delays.std() > 0.5  # jitter visible
    assert counters.delivered + counters.dropped == 2000
    # binomial(2000, 0.2): sd ~ 17.9; 5 sd band
    assert abs(counters.dropped - 400) < 90
    counters2, got2 = _run(1.0, 4.0, 0.2, seed=7, n=2000)
    assert got2 == got and counters2 == counters
    _, got3 = _run(1.0, 4.0, 0.2, seed=8, n=2000)
    assert got3 != got  # another seed, other draws


def test_unrouted_counted_and_rng_required():
    env = simpy.Environment()
    bus = MemoryTransport(env)
    bus.publish("cps/x/setpoints", {"a": 1.0})
    assert bus.counters.unrouted == 1
    with pytest.raises(BusError):
        MemoryTransport(env, None, loss=0.1)
    with pytest.raises(BusError):
        MemoryTransport(env, np.random.default_rng(0), loss=1.5)


def _msg(sent, seq, values, ttl=60.0):
    return Message(
        "cps/g/setpoints", {"ev_setpoint_w": np.asarray(values, float), "ttl_s": ttl}, sent, seq
    )


def test_setpoint_holder_latest_wins_ttl_and_validation():
    h = SetpointHolder({"ev_setpoint_w": 2, "battery_setpoint_w": 1}, default_ttl_s=30.0)
    assert h.is_fallback(0.0) and h.current(0.0) is None
    assert h.offer(_msg(10.0, 1, [1.0, 2.0]))
    # an older message arriving late (jitter reordering) is ignored
    assert not h.offer(_msg(5.0, 0, [9.0, 9.0]))
    assert h.rejected_stale == 1
    # wrong length is rejected with a reason
    assert not h.offer(_msg(20.0, 2, [1.0, 2.0, 3.0]))
    assert h.rejected_invalid == 1 and "length 2" in h.reasons[0]
    cur = h.current(69.9)
    assert cur is not None and cur["ev_setpoint_w"].tolist() == [1.0, 2.0]
    # ttl from the payload (60 s): stale at sent + 60
    assert h.current(70.0) is None and h.is_fallback(70.0)
    assert h.expires_s() == 70.0
    assert h.offer(_msg(80.0, 3, [3.0, 4.0], ttl=10.0))
    assert h.current(85.0)["ev_setpoint_w"].tolist() == [3.0, 4.0]
    assert h.current(90.0) is None


def test_routes_follow_subscriptions_made_after_a_publish():
    """The transport matches a topic once and keeps the answer; a new subscription made
    between two publishes on the same topic still gets the second (and only it)."""
    env = simpy.Environment()
    bus = MemoryTransport(env)
    first = bus.subscribe("cps/+/setpoints")
    bus.publish("cps/homes/setpoints", {"x": 1.0})
    bus.publish("cps/homes/status", {"x": 2.0})  # no subscriber: unrouted
    late = bus.subscribe("cps/homes/#")
    bus.publish("cps/homes/setpoints", {"x": 3.0})
    bus.publish("cps/homes/status", {"x": 4.0})
    env.run()
    assert [m.payload["x"] for m in first.items] == [1.0, 3.0]
    assert [m.payload["x"] for m in late.items] == [3.0, 4.0]
    assert bus.counters.unrouted == 1 and bus.counters.delivered == 4
    with pytest.raises(BusError):  # an invalid topic is refused every time, not cached
        bus.publish("cps/+/setpoints", {"x": 1.0})
    with pytest.raises(BusError):
        bus.publish("cps/+/setpoints", {"x": 1.0})


@pytest.mark.parametrize("where", [0, 3, 6])
def test_nan_anywhere_in_a_setpoint_array_is_refused(where):
    env = simpy.Environment()
    bus = MemoryTransport(env)
    ok = np.array([np.inf, -np.inf, 0.0, -0.0, 5.0, 1e300, -1e300])
    bus.publish("cps/homes/setpoints", {"ev_setpoint_w": ok})  # infinities are not NaN
    bad = ok.copy()
    bad[where] = np.nan
    with pytest.raises(BusError, match="ev_setpoint_w holds NaN"):
        bus.publish("cps/homes/setpoints", {"ev_setpoint_w": bad})
    bus.publish("cps/homes/status", {"ev_setpoint_w": bad})  # not a setpoint topic
    bus.publish("cps/homes/setpoints", {"ev_setpoint_w": np.empty(0)})


def test_any_nan_agrees_with_a_mask_on_every_kind_of_array():
    from cps_sim.core.types import any_nan

    rng = np.random.default_rng(5)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e308, 5e-324])
    for _ in range(500):
        a = rng.choice(specials, size=int(rng.integers(0, 12)))
        if rng.random() < 0.5:
            a = np.concatenate([a, rng.normal(size=int(rng.integers(0, 5)))])
        assert any_nan(a) == bool(np.isnan(a).any()), a
    assert not any_nan(np.empty(0)) and any_nan(np.full(3, np.nan))
