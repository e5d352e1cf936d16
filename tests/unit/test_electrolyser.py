"""Electrolyser + H2 tank: hand-computed cases, minimum load, tank limits, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.models import electrolyser as el


def test_rated_hour_hand_computed():
    spec = el.electrolyser_spec(1, rated_power_w=1e6, tank_capacity_kg=1000.0)
    s1, f = el.step(el.initial_state(spec), spec, 1e6, 3600.0)
    # 1 MW for 1 h at 55 kWh/kg = 18.18 kg; HHV 39.41 kWh/kg -> 716.5 kWh chemical,
    # 283.5 kWh heat (HHV efficiency 71.7 %)
    assert f.h2_produced_kg[0] == pytest.approx(1000 / 55)
    assert f.h2_hhv_wh[0] == pytest.approx(1000 / 55 * 39.41 * 1000)
    assert f.heat_loss_wh[0] == pytest.approx(1e6 - 1000 / 55 * 39_410)
    assert s1.h2_kg[0] == pytest.approx(1000 / 55)


def test_minimum_load():
    spec = el.electrolyser_spec(2, 1e6, 1000.0, preset="alkaline")
    _, f = el.step(el.initial_state(spec), spec, [150e3, 250e3], 900.0)
    # 20 % of 1 MW = 200 kW minimum: 150 kW -> off (all unmet); 250 kW runs
    np.testing.assert_allclose(f.power_w, [0.0, 250e3])
    np.testing.assert_allclose(f.unmet_w, [150e3, 0.0])
    p = el.surplus_setpoint_w(spec, el.initial_state(spec), [180e3, 2e6], 900.0)
    np.testing.assert_allclose(p, [0.0, 1e6])


def test_tank_full_cuts_production_and_offtake_unmet():
    spec = el.electrolyser_spec(1, 1e6, 10.0)
    s = el.initial_state(spec, 9.0)
    s1, f = el.step(s, spec, 1e6, 3600.0, h2_demand_kg=2.0)
    # room = 10 - 9 + 2 = 3 kg -> 165 kWh over 1 h = 165 kW average
    assert f.h2_produced_kg[0] == pytest.approx(3.0)
    assert f.power_w[0] == pytest.approx(165e3)
    assert s1.h2_kg[0] == pytest.approx(10.0)
    s2, f2 = el.step(el.initial_state(spec, 1.0), spec, 0.0, 3600.0, h2_demand_kg=2.5)
    assert f2.h2_delivered_kg[0] == pytest.approx(1.0)
    assert f2.h2_unmet_kg[0] == pytest.approx(1.5)
    assert s2.h2_kg[0] == 0.0


def test_one_unit_matches_population_of_10000():
    a = el.electrolyser_spec(1, 5e6, 500.0)
    b = el.electrolyser_spec(10_000, 5e6, 500.0)
    sa, _ = el.step(el.initial_state(a, 100.0), a, 3e6, 900.0, 1.0)
    sb, _ = el.step(el.initial_state(b, 100.0), b, 3e6, 900.0, 1.0)
    assert np.all(sb.h2_kg == sa.h2_kg[0])


@settings(max_examples=80, deadline=None)
@given(
    seq=st.lists(st.tuples(st.floats(0, 3e6), st.floats(0, 50)), min_size=1, max_size=15),
    m0=st.floats(0, 100),
    dt_s=st.sampled_from([1.0, 900.0, 3600.0]),
)
def test_property_ledger_and_tank_bounds(seq, m0, dt_s):
    spec = el.electrolyser_spec(1, 2e6, 100.0)
    s = el.initial_state(spec, m0)
    for p, dem in seq:
        _, hi = el.feasible_power_w(spec, s, dt_s, dem)
        s1, f = el.step(s, spec, p, dt_s, dem)
        np.testing.assert_allclose(f.electric_in_wh, f.h2_hhv_wh + f.heat_loss_wh, rtol=1e-12)
        assert s1.h2_kg[0] == pytest.approx(
            s.h2_kg[0] + f.h2_produced_kg[0] - f.h2_delivered_kg[0], abs=1e-9
        )
        assert -1e-9 <= s1.h2_kg[0] <= 100.0 + 1e-9
        assert f.power_w[0] <= max(p, 0) + 1e-6
        # the upper feasible bound is holdable for the whole step
        _, fh = el.step(s, spec, hi, dt_s, dem)
        assert abs(fh.unmet_w[0]) <= 1e-6 * max(1.0, hi[0])
        s = s1
