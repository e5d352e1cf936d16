"""Emulated-device physics and command holding, without a broker (fast, exhaustive)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cps_sim.bridge.emulate import EmulatorConfig, EmulatorFleet
from cps_sim.bridge.emulator_models import Commands, make_fleet
from cps_sim.bridge.profiles import Setpoint
from cps_sim.models import battery as bat

START = "2026-05-01T10:00:00+09:00"
CONTROLLABLE = ["ev_charger", "battery", "pv", "plug", "heat_pump"]
_FLEETS: dict[str, EmulatorFleet] = {}


def fleet_of(kind: str, profile: str = "generic") -> EmulatorFleet:
    """A fleet that is built but never connected: hold() and the models only."""
    key = f"{kind}/{profile}"
    if key not in _FLEETS:
        _FLEETS[key] = EmulatorFleet(
            EmulatorConfig(profile=profile, kind=kind, count=4, start=START, seed=2)
        )
    return _FLEETS[key]


setpoints = st.builds(
    Setpoint,
    power_w=st.none() | st.floats(-1e6, 1e6, allow_nan=False),
    current_a=st.none() | st.floats(-500, 500, allow_nan=False),
    on=st.none() | st.booleans(),
    mode=st.none() | st.sampled_from(["auto", "setpoint", "boost"]),
    ttl_s=st.none() | st.floats(0.1, 1e4),
)


@pytest.mark.parametrize("kind", CONTROLLABLE)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(setpoints, min_size=20, max_size=20), dt=st.floats(0.5, 30))
def test_rating_holds_for_any_setpoint(kind, batch, dt):
    """5 kinds x 100 examples x 20 = 10^4 random setpoints: what a device holds and the power
    it draws stay inside its rating; an EV current is 0 or within [6 A, max]."""
    f = fleet_of(kind)
    r = f.rated
    for sp in batch:
        i = int(abs(hash(sp)) % f.n)
        held, reason = f.hold(i, sp)
        if held:
            p, c = f.cmd.power_w[i], f.cmd.current_a[i]
            assert np.isnan(p) or r.power_w_min <= p <= r.power_w_max
            assert np.isnan(c) or c == 0 or r.min_current_a <= c <= r.current_a_max
        else:
            assert reason
        f.model.advance(f.t_s, dt, f.cmd)
        f.t_s += dt
        pw = f.model.last_power_w
        assert np.all(pw >= r.power_w_min - 1e-6) and np.all(pw <= r.power_w_max + 1e-6)
        if kind == "ev_charger":
            lim = f.model.limit_current_a(f.cmd)
            assert np.all((lim == 0) | ((lim >= r.min_current_a) & (lim <= r.current_a_max)))


@pytest.mark.parametrize("kind", [*CONTROLLABLE, "meter"])
def test_energy_counters_close(kind):
    """energy_wh (net) = energy_in_wh - energy_out_wh, and equals sum(power x dt)."""
    f = make_fleet(kind, 5, np.random.default_rng(1), pd.Timestamp(START))
    cmd = Commands.none(5)
    rng = np.random.default_rng(2)
    total = np.zeros(5)
    t = 0.0
    for _ in range(50):
        cmd.active[:] = rng.random(5) < 0.7
        cmd.power_w[:] = rng.uniform(f.rated.power_w_min, f.rated.power_w_max, 5)
        dt = float(rng.uniform(1, 900))
        f.advance(t, dt, cmd)
        total += f.last_power_w * dt / 3600.0
        t += dt
    assert np.allclose(f.energy_wh, f.energy_in_wh - f.energy_out_wh, rtol=1e-12, atol=1e-9)
    assert np.allclose(f.energy_wh, total, rtol=1e-9, atol=1e-9)


def test_battery_is_the_battery_model():
    """The emulated battery's SoC moves exactly as models.battery says (+ never leaves the
    SoC window under aggressive commands)."""
    f = make_fleet("battery", 3, np.random.default_rng(0), pd.Timestamp(START))
    e0 = f.stored_wh.copy()
    cmd = Commands.none(3)
    cmd.active[:] = True
    cmd.power_w[:] = [5000.0, -5000.0, 2000.0]
    f.advance(0.0, 3600.0, cmd)
    ref = e0.copy()
    ac, _ = bat.exchange_wh(f.spec, ref, np.array([5000.0, -5000.0, 2000.0]), 3600.0)
    assert np.allclose(f.stored_wh, ref) and np.allclose(f.energy_wh, ac)
    for _ in range(30):  # 30 h at full power each way: SoC stays in [10 %, 95 %]
        f.advance(0.0, 3600.0, cmd)
    soc = f.signals()["soc"]
    assert np.all(soc >= 0.10 - 1e-12) and np.all(soc <= 0.95 + 1e-12)


def test_ev_cars_come_and_go_and_charge_only_when_plugged():
    f = make_fleet("ev_charger", 50, np.random.default_rng(4), pd.Timestamp(START))
    cmd = Commands.none(50)
    cmd.active[:] = True
    cmd.current_a[:] = 32.0
    for k in range(2 * 24 * 12):  # two days in 5-min steps
        plugged_before = f.state.plugged.copy()
        f.advance(k * 300.0, 300.0, cmd)
        # 32 A x 230 V = 7.36 kW is the most a plugged car can take
        assert np.all(f.last_power_w <= 7360.0 + 1e-6)
        assert np.all(f.last_power_w[~f.state.plugged & ~plugged_before] == 0.0)
        soc = f.state.soc(f.spec)
        assert np.all((soc >= -1e-12) & (soc <= 1 + 1e-12))
    assert f.arrivals > 20 and f.departures > 20
    # a compact car on a 7.4 kW charger is limited by its 6 kW on-board charger
    assert f.last_power_w.max() == pytest.approx(6000.0, rel=1e-9)


def test_pv_cap_and_relay():
    f = make_fleet("pv", 3, np.random.default_rng(1), pd.Timestamp(START), weather="clear")
    cmd = Commands.none(3)
    f.advance(0.0, 600.0, cmd)
    free = f.last_power_w.copy()
    assert np.all(free < -500.0)  # 10:00 in May, clear sky: every system produces
    cmd.active[:] = True
    cmd.power_w[:] = -300.0
    f.advance(600.0, 600.0, cmd)
    assert np.allclose(f.last_power_w, -300.0)
    cmd.on[:] = 0
    f.advance(1200.0, 600.0, cmd)
    assert np.all(f.last_power_w == 0.0)


def test_same_seed_same_devices():
    a = make_fleet("meter", 3, np.random.default_rng(9), pd.Timestamp(START))
    b = make_fleet("meter", 3, np.random.default_rng(9), pd.Timestamp(START))
    c = Commands.none(3)
    for f in (a, b):
        f.advance(0.0, 3600.0, c)
    assert np.array_equal(a.energy_wh, b.energy_wh)


def test_meter_takes_no_commands():
    f = fleet_of("meter")
    held, reason = f.hold(0, Setpoint(on=False))
    assert not held and "takes no commands" in reason


def test_vendor_profile_rating_is_the_devices():
    goe = fleet_of("ev_charger", "goe")
    assert (goe.rated.current_a_max, goe.rated.phases) == (16.0, 3)
    held, note = goe.hold(0, Setpoint(current_a=40.0))
    assert held and goe.cmd.current_a[0] == 16.0 and "clamped to 16" in note
