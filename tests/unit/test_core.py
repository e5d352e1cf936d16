"""Core: RNG streams, clock, environment factory, battery segment model."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from cps_sim.core.clock import Clock
from cps_sim.core.environment import make_env
from cps_sim.core.rng import RngStreams
from cps_sim.models import battery as bat


# ----------------------------------------------------------------------------- RNG
def test_same_name_same_numbers_other_name_other_numbers():
    a = RngStreams(3).generator("homes/pv").random(5)
    b = RngStreams(3).generator("homes/pv").random(5)
    c = RngStreams(3).generator("homes/battery").random(5)
    d = RngStreams(4).generator("homes/pv").random(5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)


def test_appending_devices_keeps_earlier_draws():
    r = RngStreams(11)
    for draw in (
        lambda g, n: g.random(n),
        lambda g, n: g.normal(2, 1, n),
        lambda g, n: g.lognormal(0, 0.5, n),
    ):
        small = draw(r.generator("x"), 100)
        big = draw(r.generator("x"), 101)
        assert np.array_equal(small, big[:100])


def test_streams_independent_of_python_hash_seed():
    code = (
        "from cps_sim.core.rng import RngStreams;"
        "print(RngStreams(5).generator('sites/homes/pv/has').integers(0, 10**9))"
    )
    outs = set()
    for hs in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    assert len(outs) == 1


def test_negative_seed_rejected():
    with pytest.raises(ValueError):
        RngStreams(-1)


# ----------------------------------------------------------------------------- clock
def test_clock_maps_seconds_to_tokyo_time_and_back():
    c = Clock(dt.datetime.fromisoformat("2026-04-01T00:00:00+09:00"))
    t = c.to_datetime(7 * 3600 + 13 * 60 + 20)
    assert t.isoformat() == "2026-04-01T07:13:20+09:00"
    assert c.to_sim(t) == 26000.0
    assert c.utc_index(np.array([0.0]))[0].isoformat() == "2026-03-31T15:00:00+00:00"
    assert c.hour_of_day(np.array([26000.0]))[0] == pytest.approx(7 + 13 / 60 + 20 / 3600)


def test_clock_is_dst_aware_for_other_zones():
    # Europe/Berlin switches to CEST on 2026-03-29 at 02:00 local: that day has 23 hours.
    c = Clock(dt.datetime.fromisoformat("2026-03-29T00:00:00+01:00"), "Europe/Berlin")
    assert c.local_midnight_s(30 * 3600) == 23 * 3600
    assert c.hour_of_day(np.array([3 * 3600.0]))[0] == 4.0


@pytest.mark.parametrize(
    "start, zone",
    [
        ("2026-03-28T21:30:00+01:00", "Europe/Berlin"),  # through the spring DST change
        ("2026-10-24T22:00:00+02:00", "Europe/Berlin"),  # through the autumn one
        ("2026-04-06T00:00:00+09:00", "Asia/Tokyo"),
        ("2026-03-07T23:00:00-05:00", "America/New_York"),
    ],
)
def test_local_hour_equals_hour_of_day(start, zone):
    """The scalar fast path gives exactly what the vectorised one gives (per-tick devices
    and the RL observation use it), whole, fractional and odd seconds included."""
    c = Clock(dt.datetime.fromisoformat(start), zone)
    rng = np.random.default_rng(3)
    t = np.concatenate(
        [np.arange(0.0, 3 * 86400, 450.0), rng.uniform(0, 3 * 86400, 200), [0.5, 59.999]]
    )
    want = c.hour_of_day(t)
    got = np.array([c.local_hour(x) for x in t])
    np.testing.assert_array_equal(got, want)


def test_clock_requires_aware_start():
    with pytest.raises(ValueError):
        Clock(dt.datetime(2026, 1, 1))


# ----------------------------------------------------------------------------- env
def test_fast_env_runs_instantly_and_events_are_exact():
    env = make_env("fast")
    seen = []

    def p():
        yield env.timeout(26000.0)
        seen.append(env.now)

    env.process(p())
    t0 = time.perf_counter()
    env.run()
    assert seen == [26000.0]
    assert time.perf_counter() - t0 < 0.5


def test_realtime_env_paces_against_the_wall_clock():
    # speed 100 simulated s per wall s: 20 simulated s take ~0.2 wall s.
    env = make_env("realtime", speed=100.0)
    t0 = time.perf_counter()
    env.run(until=20.0)
    wall = time.perf_counter() - t0
    assert 0.15 < wall < 1.0


def test_realtime_strict_raises_when_behind():
    env = make_env("realtime", speed=1000.0, strict=True)

    def slow():
        yield env.timeout(0.001)
        time.sleep(0.2)  # 200 simulated s of work in one step: the sim falls behind
        yield env.timeout(0.001)

    env.process(slow())
    with pytest.raises(RuntimeError):
        env.run()


def test_unknown_mode_rejected():
    with pytest.raises(ValueError):
        make_env("warp")


# ----------------------------------------------------------------------------- battery
def _spec(n=1, cap_wh=10_000.0, p_w=5000.0, eta=0.95, soc_min=0.1, soc_max=1.0, **kw):
    return bat.make_spec(
        np.full(n, cap_wh),
        np.full(n, p_w),
        charge_efficiency=eta,
        discharge_efficiency=eta,
        soc_min=soc_min,
        soc_max=soc_max,
        **kw,
    )


def test_battery_charge_hand_arithmetic():
    spec = _spec()
    e = np.array([5000.0])
    # 5 kW for 30 min: 2.5 kWh AC taken, 2.5 × 0.95 = 2.375 kWh stored, 0.125 kWh lost.
    ac, loss = bat.exchange_wh(spec, e, np.array([2500.0]), 1800.0)
    assert ac[0] == pytest.approx(2500.0)
    assert e[0] == pytest.approx(7375.0)
    assert loss[0] == pytest.approx(125.0)


def test_battery_stops_exactly_at_full_and_empty():
    spec = _spec()
    e = np.array([9500.0])
    # Room 500 Wh stored = 500/0.95 = 526.3 Wh AC, although 5 kWh were asked for.
    ac, _ = bat.exchange_wh(spec, e, np.array([5000.0]), 3600.0)
    assert ac[0] == pytest.approx(500 / 0.95)
    assert e[0] == pytest.approx(10_000.0)
    e = np.array([1500.0])
    # Above soc_min (1 kWh) there are 500 Wh stored → 475 Wh AC out.
    ac, _ = bat.exchange_wh(spec, e, np.array([-5000.0]), 3600.0)
    assert ac[0] == pytest.approx(-475.0)
    assert e[0] == pytest.approx(1000.0)


def test_battery_feasible_range():
    spec = _spec()
    lo, hi = bat.feasible_power_w(spec, np.array([9500.0]), 3600.0)
    assert hi[0] == pytest.approx(500 / 0.95)
    assert lo[0] == pytest.approx(-5000.0)


def test_one_battery_alone_equals_one_in_ten_thousand():
    rng = np.random.default_rng(1)
    n = 10_000
    spec = _spec(n, taper_soc=0.8)
    e = rng.uniform(1000, 10_000, n)
    desired = rng.uniform(-6000, 6000, n)
    e1 = e[:1].copy()
    ac_all, _ = bat.exchange_wh(spec, e, desired, 900.0)
    ac1, _ = bat.exchange_wh(_spec(1, taper_soc=0.8), e1, desired[:1], 900.0)
    assert ac1[0] == ac_all[0] and e1[0] == e[0]


@pytest.mark.parametrize("taper", [1.0, 0.8])
def test_engine_exchange_is_the_model_step(taper):
    # The engine's per-segment exchange and the model's whole step are one law: same
    # energies, and with a taper the exact CC-CV integral (split or not).
    rng = np.random.default_rng(3)
    n = 5000
    spec = _spec(n, taper_soc=taper)
    e0 = rng.uniform(1000, 10_000, n)
    desired = rng.uniform(-3000, 3000, n)  # Wh over 900 s
    e_eng = e0.copy()
    ac, loss = bat.exchange_wh(spec, e_eng, desired, 900.0)
    e_mod, f = bat.step(spec, e0, desired * 4.0, 900.0)
    np.testing.assert_allclose(ac, f.energy_in_wh, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(e_eng, e_mod, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(loss, f.loss_conversion_wh, rtol=1e-12, atol=1e-9)
    # the same constant request in 15 one-minute pieces ends in the same state
    e_split = e0.copy()
    for _ in range(15):
        bat.exchange_wh(spec, e_split, desired / 15.0, 60.0)
    np.testing.assert_allclose(e_split, e_eng, rtol=1e-9, atol=1e-6)
