"""The battery's built-in rule is an explicit ``battery_mode``; NaN is never a valid setpoint:
World.apply, both transports, the device process and the MQTT wire all refuse it."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.bridge import schema as S
from cps_sim.bridge.transport import MqttTransport, ReplayLink
from cps_sim.control.base import DeviceStats, battery_setpoints, device_process
from cps_sim.core.bus import (
    BATTERY_AUTO,
    BATTERY_FOLLOW,
    BusError,
    MemoryTransport,
    Message,
    Topics,
)
from cps_sim.core.environment import make_env
from cps_sim.experiment.recorder import Recorder
from cps_sim.experiment.run import simulate
from cps_sim.world.build import build_world
from cps_sim.world.populations import SETPOINT_DEFS
from cps_sim.world.wiring import start_controller
from tests.conftest import scenario


def homes(n: int = 3, hours: float = 6.0):
    return scenario(
        [
            {
                "name": "homes",
                "count": n,
                "pv": {"share": 1, "capacity_kw": 4},
                "battery": {"share": 1, "capacity_kwh": 10, "power_kw": 3, "initial_soc": 0.7},
                "ev": {"share": 1, "charger_kw": 6, "initial_soc": 0.7},
            }
        ],
        start="2026-05-11T06:00:00+09:00",
        duration_days=hours / 24,
        tick_s=300,
    )


def started_world(sc):
    world = build_world(sc)
    env = make_env("fast")
    world.start(env, Recorder(world).on_tick)
    return world, env


def test_nan_is_refused_by_world_apply_for_every_key():
    world, _ = started_world(homes())
    sizes = world.setpoint_sizes("homes")
    assert sizes["battery_mode"] == sizes["battery_setpoint_w"] == 3
    for key, n in sizes.items():
        assert key in SETPOINT_DEFS
        with pytest.raises(ValueError, match=f"{key}: NaN is not a valid setpoint value"):
            world.apply("homes", **{key: np.full(n, np.nan)})
    with pytest.raises(ValueError, match=r"battery_mode: 0\.5 is not one of"):
        world.apply("homes", battery_mode=np.full(3, 0.5))
    # atomic: a NaN in one key applies nothing of the call
    ev_before = world.group("homes").evs.setpoint_w.copy()
    with pytest.raises(ValueError):
        world.apply("homes", ev_setpoint_w=np.zeros(3), battery_setpoint_w=np.full(3, np.nan))
    np.testing.assert_array_equal(world.group("homes").evs.setpoint_w, ev_before)


@pytest.mark.parametrize("which", ["memory", "mqtt"])
def test_nan_setpoint_refused_at_publish_by_both_transports(which):
    env = simpy.Environment()
    tr = (
        MemoryTransport(env)
        if which == "memory"
        else MqttTransport(env, S.Topics("cps/t"), ReplayLink({}))
    )
    for payload in (
        {"battery_setpoint_w": np.array([1.0, np.nan])},
        {"ev_setpoint_w": np.array([np.nan])},
        {"import_limit_w": np.array([np.nan]), "ttl_s": 30.0},
        {"ev_setpoint_w": np.array([1.0]), "ttl_s": float("nan")},
    ):
        with pytest.raises(BusError, match="NaN"):
            tr.publish(Topics.setpoints("g"), payload)
    # NaN is fine elsewhere (an event field meaning "unknown") on the memory bus
    if which == "memory":
        tr.publish("cps/g/event/x", {"soc": float("nan")})


def test_device_process_rejects_a_nan_message_and_keeps_the_valid_one():
    """A NaN setpoint that reaches a device process from elsewhere is not applied."""
    world, env = started_world(homes())
    bus = MemoryTransport(env)
    stats = DeviceStats()
    env.process(device_process(env, world, bus, "homes", default_ttl_s=600.0, stats=stats))
    env.run(until=1.0)
    topic = Topics.setpoints("homes")
    (store,) = [s for p, s in bus._subs if p == topic]  # straight into the device's store
    good = battery_setpoints(np.array([1000.0, -500.0, 0.0]), np.array([True, True, False]))
    store.put(Message(topic, good, 1.0, 0))
    env.run(until=2.0)
    store.put(Message(topic, {"battery_setpoint_w": np.array([np.nan, 1.0, 1.0])}, 2.0, 1))
    env.run(until=3.0)
    b = world.group("homes").batteries
    assert stats.holder.rejected_invalid == 1 and "NaN" in stats.holder.reasons[0]
    assert stats.applied == 1
    np.testing.assert_array_equal(b.mode, [BATTERY_FOLLOW, BATTERY_FOLLOW, BATTERY_AUTO])
    np.testing.assert_array_equal(b.target_w, [1000.0, -500.0, 0.0])


def test_nan_never_crosses_the_wire():
    sizes = {"battery_setpoint_w": 2, "battery_mode": 2, "ev_setpoint_w": 1}
    env = {"v": 1, "seq": 0, "ts": 1.7e9}
    for raw, reason in [
        (b'{"v":1,"seq":0,"ts":1.7e9,"battery_setpoint_w":[NaN,1]}', S.NAN_OR_INF),
        (b'{"v":1,"seq":0,"ts":1.7e9,"power_w":NaN,"ttl_s":5}', S.NAN_OR_INF),
    ]:
        r = S.parse_json(raw)
        assert isinstance(r, S.Reject) and r.reason == reason
    # null in a battery setpoint is not "auto" (battery_mode is)
    r = S.decode_group_setpoint({**env, "battery_setpoint_w": [None, 1.0]}, sizes)
    assert isinstance(r, S.Reject) and r.reason == S.WRONG_TYPE and "battery_mode" in r.detail


def test_battery_mode_per_site_auto_equals_the_rule_and_follow_is_exact():
    """Site 0 on battery_mode auto runs exactly like the uncontrolled self-consumption
    battery; site 1 follows its setpoint exactly; site 2 switches between the two."""
    sc = homes(3, hours=4)
    ref = []
    simulate(sc, on_tick=lambda w, r: ref.append(w.group("homes").battery_energy_wh.copy()))

    class Ctl:
        name = "modes"
        interval_s = 300.0

        def decide(self, now_s, obs):
            follow = np.array([False, True, now_s >= 3600.0])
            return battery_setpoints(np.array([0.0, 500.0, -400.0]), follow)

    got, power = [], []

    def setup(env, world):
        start_controller(env, world, "homes", Ctl(), ttl_s=900.0)

    def on_tick(w, r):
        got.append(w.group("homes").battery_energy_wh.copy())
        power.append(w.group("homes").batteries.power_w.copy())

    simulate(sc, setup=setup, on_tick=on_tick)
    ref, got, power = np.array(ref), np.array(got), np.array(power)
    np.testing.assert_array_equal(got[:, 0], ref[:, 0])  # auto == the built-in rule, exactly
    np.testing.assert_allclose(power[:, 1], 500.0, rtol=1e-12)  # follows (never full in 4 h)
    k = int(3600.0 / 300.0)
    np.testing.assert_array_equal(got[:k, 2], ref[:k, 2])  # auto until 1 h
    np.testing.assert_allclose(power[k:, 2], -400.0, rtol=1e-12)  # then follows


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["setpoint", "mode", "both"]),
            st.lists(st.floats(-3000, 3000), min_size=3, max_size=3),
            st.lists(st.booleans(), min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_mode_and_setpoint_combine_as_documented(calls):
    """battery_setpoint_w alone puts every site on 'follow'; battery_mode alone changes only
    the mode; both in one call: the given modes.  The engine's internal setpoint is the
    target where a site follows and the rule (NaN inside) where it does not."""
    world, _ = started_world(homes())
    mode = np.full(3, BATTERY_AUTO)
    target = np.zeros(3)
    for kind, values, auto in calls:
        v = np.array(values)
        m = np.where(auto, BATTERY_AUTO, BATTERY_FOLLOW)
        if kind == "setpoint":
            world.apply("homes", battery_setpoint_w=v)
            target, mode = v, np.full(3, BATTERY_FOLLOW)
        elif kind == "mode":
            world.apply("homes", battery_mode=m)
            mode = m
        else:  # the mode key first in the call: the order of keys does not matter
            world.apply("homes", battery_mode=m, battery_setpoint_w=v)
            target, mode = v, m
        b = world.group("homes").batteries
        np.testing.assert_array_equal(b.mode, mode)
        np.testing.assert_array_equal(b.target_w, target)
        np.testing.assert_array_equal(np.isnan(b.setpoint_w), mode == BATTERY_AUTO)
        assert b.setpoints == bool((mode == BATTERY_FOLLOW).any())
