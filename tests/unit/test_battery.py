"""Battery model (models/battery.py) and its ageing (models/battery_ageing.py):
hand-computed cases, the exact CC-CV taper, ageing, and property tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.models import battery as bat
from cps_sim.models import battery_ageing as ag


def _plain(n=1, **kw):
    """Home battery without taper or self-discharge unless asked."""
    base = dict(taper_soc=1.0, self_discharge_per_month=0.0)
    base.update(kw)
    return bat.battery_spec(n, "home", **base)


def _pop(spec, soc, preset="home", **ageing):
    return ag.aged_population(spec, soc, ag.ageing_spec(spec.n, preset, **ageing))


def _ledger_ok(f):
    np.testing.assert_allclose(
        f.energy_in_wh,
        f.stored_change_wh + f.loss_conversion_wh + f.loss_self_discharge_wh + f.loss_fade_wh,
        rtol=0,
        atol=1e-9 * max(1.0, float(np.max(np.abs(f.energy_in_wh)))),
    )


def test_hand_computed_charge_and_discharge():
    spec = _plain()
    e0 = bat.initial_energy_wh(spec, 0.5)  # 5 kWh in a 10 kWh pack
    e1, f = bat.step(spec, e0, 5000.0, 1800.0)
    # 5 kW for 30 min at 95 % = 2.5 kWh in, 2.375 kWh stored, 0.125 kWh lost
    assert f.energy_in_wh[0] == pytest.approx(2500.0)
    assert f.stored_change_wh[0] == pytest.approx(2375.0)
    assert f.loss_conversion_wh[0] == pytest.approx(125.0)
    assert e1[0] == pytest.approx(7375.0)
    _, f2 = bat.step(spec, e1, -5000.0, 1800.0)
    # 5 kW out for 30 min at 95 % = 2.5 kWh delivered, 2.5/0.95 = 2.6316 kWh drawn
    assert f2.energy_in_wh[0] == pytest.approx(-2500.0)
    assert f2.stored_change_wh[0] == pytest.approx(-2500.0 / 0.95)
    _ledger_ok(f)
    _ledger_ok(f2)


def test_clip_to_energy_available_returns_unmet():
    spec = _plain()
    e0 = bat.initial_energy_wh(spec, 0.10)  # 1 kWh stored, soc_min 5 % = 0.5 kWh
    _, f = bat.step(spec, e0, -5000.0, 3600.0)
    # usable 0.5 kWh stored * 0.95 = 0.475 kWh delivered over 1 h = 475 W average
    assert f.power_w[0] == pytest.approx(-475.0)
    assert f.unmet_w[0] == pytest.approx(-4525.0)
    e1, f = bat.step(spec, bat.initial_energy_wh(spec, 0.98), 5000.0, 3600.0)
    # headroom 0.2 kWh stored -> 0.2/0.95 = 210.5 Wh drawn
    assert f.energy_in_wh[0] == pytest.approx(200.0 / 0.95)
    assert e1[0] / spec.capacity_wh[0] == pytest.approx(1.0)


def test_taper_exact_against_fine_euler():
    spec = _plain(taper_soc=0.8)
    _, f = bat.step(spec, bat.initial_energy_wh(spec, 0.6), 5000.0, 3600.0)
    # reference: explicit Euler with 1 s steps of dE/dt = eta * min(p, P_lim(E))
    e, cap, pmax, eta = 6000.0, 10_000.0, 5000.0, 0.95
    for _ in range(3600):
        lim = pmax * np.clip((cap - e) / (cap - 0.8 * cap), 0, 1)
        e += eta * min(5000.0, lim) / 3600.0
    assert 6000.0 + f.stored_change_wh[0] == pytest.approx(e, rel=2e-4)
    # tail: 2000 Wh -> 0.8 point after 2000/4750 h; the rest decays with tau=2000/4750 h
    t1 = 2000 / 4750
    e_exact = 10_000 - 2000 * np.exp(-(1 - t1) / (2000 / 4750))
    assert 6000.0 + f.stored_change_wh[0] == pytest.approx(e_exact, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    dt_s=st.sampled_from([0.0, 1.0, 60.0, 900.0, 3600.0]),
    per_device_dt=st.booleans(),
)
def test_charge_ac_wh_equals_the_exact_law_on_every_device(seed, dt_s, per_device_dt):
    """charge_ac_wh takes the exact CC-CV law only where it can bind (near or inside the
    taper, or a request above the taper line's power); everywhere it must equal the law
    applied to every device: min(charge_exact, power limit, room)."""
    rng = np.random.default_rng(seed)
    n = 64
    e_max = rng.uniform(5e3, 80e3, n)
    e_taper = e_max * rng.choice([0.7, 0.9, 1.0, 1.1], n)  # >= e_max: no taper
    e0 = e_max * rng.uniform(0.0, 1.05, n)
    p_line = rng.choice([0.0, 2e3, 7e3, 50e3], n)
    limit = rng.choice([np.inf, 3e3, 11e3], n)
    eta = rng.uniform(0.8, 1.0, n)
    dt = rng.choice([0.0, 30.0, 900.0], n) if per_device_dt else dt_s
    request_wh = rng.choice([0.0, 1.0, 3e3, 7e3, 1e5], n) * np.asarray(dt) / 3600.0
    got = bat.charge_ac_wh(e0, e_max, e_taper, p_line, limit, eta, request_wh, dt)
    # the reference: every device through the exact law
    h = np.asarray(dt, dtype=float) / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):  # inf limit x 0 s: no limit
        ac = np.minimum(np.fmin(request_wh, limit * h), np.maximum(e_max - e0, 0.0) / eta)
        c = np.minimum(np.where(h > 0, request_wh / np.where(h > 0, h, 1.0), 0.0), limit)
    e_end = bat.charge_exact(e0, e_max, e_taper, p_line, eta, c, dt)
    ref = np.where(e_taper < e_max, np.minimum((e_end - e0) / eta, ac), ac)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)
    assert np.all(got >= 0.0)
    assert np.all(e0 + got * eta <= np.maximum(e_max, e0) + 1e-9)  # never above the top


def test_feasible_upper_bound_is_holdable():
    spec = _plain(n=5, taper_soc=0.85)
    e0 = bat.initial_energy_wh(spec, np.array([0.1, 0.5, 0.84, 0.9, 0.999]))
    lo, hi = bat.feasible_power_w(spec, e0, 900.0)
    _, f = bat.step(spec, e0, hi, 900.0)
    np.testing.assert_allclose(f.unmet_w, 0.0, atol=1e-6)
    _, f = bat.step(spec, e0, lo, 900.0)
    np.testing.assert_allclose(f.unmet_w, 0.0, atol=1e-6)


def test_self_discharge_month():
    spec = _plain(self_discharge_per_month=0.03)
    e1, f = bat.step(spec, bat.initial_energy_wh(spec, 1.0), 0.0, 30 * 86400.0)
    # 3 %/month of 10 kWh = 300 Wh lost over 30 days
    assert f.loss_self_discharge_wh[0] == pytest.approx(300.0)
    assert e1[0] == pytest.approx(9700.0)


def test_graphite_potential_reference():
    # BLAST-Lite normalises by U_a(50 % SoC) = 0.123 V
    assert ag.graphite_potential_v(0.5) == pytest.approx(0.123, abs=1e-3)


def test_calendar_ageing_blast_kokam_hand_value():
    spec = bat.battery_spec(1, "grid", self_discharge_per_month=0.0)
    params = ag.ageing_spec(1, "grid", ageing_scale=1.0)
    # q1 at 35 degC, SoC 50 %: 2.66e7 * exp(-17.8) * exp(-5.21 * 1.0025) = 2.6833e-3 per day^0.357
    q1 = ag.calendar_rate(params, 0.5, 35.0)[()]
    assert q1 == pytest.approx(2.66e7 * np.exp(-17.8) * np.exp(-5.21 * 0.12330 / 0.123), rel=1e-3)
    pop = ag.aged_population(spec, 0.5, params)
    for _ in range(10):  # 10 years in 1-year steps at rest: q = q1 * 3650 ** 0.357
        pop, _ = ag.step(pop, 0.0, 365 * 86400.0, temperature_c=35.0)
    # SoC creeps up as capacity fades (energy kept, capacity shrinks), so only ~close
    assert pop.state.q_loss_cal[0] == pytest.approx(q1 * 3650**0.357, rel=0.05)
    assert 0.03 < pop.state.q_loss_cal[0] < 0.07
    # ageing returns a new spec and never writes into the old one
    assert spec.capacity_wh[0] == 40_000_000.0 and pop.spec.capacity_wh[0] < 40_000_000.0


def test_equivalent_time_rule_is_step_independent():
    # empty pack: SoC stays 0, so the stress is constant and the rule must be exact
    spec = bat.battery_spec(1, "home", self_discharge_per_month=0.0, soc_min=0.0)
    a = _pop(spec, 0.0)
    b = _pop(spec, 0.0)
    a, _ = ag.step(a, 0.0, 365 * 86400.0)
    for _ in range(365):
        b, _ = ag.step(b, 0.0, 86400.0)
    assert a.state.q_loss_cal[0] == pytest.approx(b.state.q_loss_cal[0], rel=1e-9)


def test_multi_year_cycling_lowers_capacity_and_hotter_is_worse():
    spec = bat.battery_spec(2, "home")
    s = _pop(spec, 0.5)
    temps = np.array([25.0, 40.0])
    for _ in range(3 * 365):  # one full cycle a day for 3 years, 12 h steps
        s, f = ag.step(s, 5000.0, 12 * 3600.0, temperature_c=temps)
        _ledger_ok(f)
        s, f = ag.step(s, -5000.0, 12 * 3600.0, temperature_c=temps)
        _ledger_ok(f)
    assert np.all(s.spec.capacity_wh < spec.capacity_wh)
    assert s.spec.capacity_wh[1] < s.spec.capacity_wh[0]
    # window 5..100 % of 10 kWh = 9.5 kWh each way per day -> 0.95 EFC/day (less as it fades)
    assert s.state.efc[0] == pytest.approx(3 * 365 * 0.95, rel=0.05)


def test_rainflow_full_cycles():
    params = ag.ageing_spec(2, "home")
    t = np.linspace(0, 100 * 2 * np.pi, 20_001)
    hist = np.stack([0.5 + 0.4 * np.sin(t), 0.5 + 0.1 * np.sin(t)], axis=1)
    q = ag.rainflow_cycle_fade(params, hist)
    # 100 cycles at depth 0.8: (k3(0.8)^(1/q4) * 100 * 0.8) ** q4 = k3 * 80 ** q4
    k3 = ag.cycle_rate(params, 0.8, 25.0) * 0.7
    assert q[0] == pytest.approx(k3 * 80.0**0.778, rel=0.02)
    assert q[1] < q[0]  # shallow cycles age less


def test_one_device_matches_population_of_10000():
    spec1 = bat.battery_spec(1, "home")
    specn = bat.battery_spec(10_000, "home")
    s1, _ = ag.step(_pop(spec1, 0.3), 3000.0, 900.0)
    sn, _ = ag.step(_pop(specn, 0.3), 3000.0, 900.0)
    assert np.all(sn.energy_wh == s1.energy_wh[0])
    assert np.all(sn.spec.capacity_wh == s1.spec.capacity_wh[0])


@settings(max_examples=60, deadline=None)
@given(
    setpoints=st.lists(st.floats(-20_000, 20_000), min_size=1, max_size=20),
    soc0=st.floats(0.05, 1.0),
    dt_s=st.sampled_from([1.0, 60.0, 900.0, 3600.0, 86400.0]),
    taper=st.floats(0.5, 1.0),
)
def test_property_conservation_and_bounds(setpoints, soc0, dt_s, taper):
    spec = bat.battery_spec(1, "home", taper_soc=taper)
    s = _pop(spec, soc0)
    for p in setpoints:
        lo, hi = bat.feasible_power_w(s.spec, s.energy_wh, dt_s)
        s, f = ag.step(s, p, dt_s)
        _ledger_ok(f)
        cap = s.spec.capacity_wh[0]
        assert -1e-9 <= s.energy_wh[0] <= spec.soc_max[0] * cap + 1e-6
        assert f.power_w[0] <= spec.max_charge_power_w[0] + 1e-6
        assert f.power_w[0] >= -spec.max_discharge_power_w[0] - 1e-6
        assert lo[0] <= 0 <= hi[0]
        assert abs(f.power_w[0]) <= abs(p) + 1e-6


@settings(max_examples=40, deadline=None)
@given(soc0=st.floats(0.05, 1.0), extra=st.floats(0.0, 2.0))
def test_property_more_capacity_more_headroom(soc0, extra):
    small = bat.battery_spec(1, "home")
    big = bat.battery_spec(1, "home", capacity_wh=10_000.0 * (1 + extra))
    lo_s, hi_s = bat.feasible_power_w(small, bat.initial_energy_wh(small, soc0), 900.0)
    lo_b, hi_b = bat.feasible_power_w(big, bat.initial_energy_wh(big, soc0), 900.0)
    # same SoC, more capacity: never less charge or discharge headroom
    assert hi_b[0] >= hi_s[0] - 1e-9
    assert lo_b[0] <= lo_s[0] + 1e-9


def test_coarse_daily_ageing_matches_per_step_ageing():
    spec = bat.battery_spec(1, "home", self_discharge_per_month=0.0, soc_min=0.0)
    fine = _pop(spec, 0.0)
    coarse = _pop(spec, 0.0)
    for _ in range(96):  # one day of 15-min rest steps at constant (empty) SoC
        fine, _ = ag.step(fine, 0.0, 900.0)
        coarse, _ = ag.step(coarse, 0.0, 900.0, ageing=False)
    st0 = replace(coarse.state, efc=np.zeros(1), age_s=np.zeros(1))
    _, aged, _, lost = ag.age(
        coarse.spec, coarse.params, st0, coarse.energy_wh, 86400.0, coarse.state.efc, 0.0
    )
    assert aged.q_loss_cal[0] == pytest.approx(fine.state.q_loss_cal[0], rel=1e-12)
    assert lost[0] == 0.0
    # efc is counted even without ageing: 5 kW for 1 h stores 4.75 kWh = 0.2375 EFC
    s, _ = ag.step(_pop(spec, 0.0), 5000.0, 3600.0, ageing=False)
    assert s.state.efc[0] == pytest.approx(4750.0 / 20_000.0)
