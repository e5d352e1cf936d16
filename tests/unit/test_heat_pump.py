"""Heat-pump water heater: COP, tank physics, draws, ledger, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.models import heat_pump as hp


def _ledger_ok(f):
    np.testing.assert_allclose(
        f.electric_in_wh + f.ambient_heat_wh_th, f.heat_in_wh_th, rtol=1e-12, atol=1e-9
    )
    np.testing.assert_allclose(
        f.heat_in_wh_th - f.draw_delivered_wh_th - f.loss_wh_th,
        f.stored_change_wh_th,
        rtol=1e-12,
        atol=1e-7,
    )


def test_cop_hand_values():
    spec = hp.ecocute_spec(1)
    # 16 degC air: 0.45 * 319.15 / (319.15 - 284.15) = 4.103
    assert hp.cop(spec, 16.0)[0] == pytest.approx(0.45 * 319.15 / 35.0)
    # 2 degC air: 0.45 * 319.15 / 49 = 2.931
    assert hp.cop(spec, 2.0)[0] == pytest.approx(0.45 * 319.15 / 49.0)
    assert hp.cop(spec, 2.0)[0] < hp.cop(spec, 16.0)[0] < hp.cop(spec, 30.0)[0]


def test_heating_without_losses_hand_computed():
    spec = hp.ecocute_spec(1, tank_ua_w_per_k=0.0)
    s = hp.initial_state(spec, 30.0)
    k = hp.cop(spec, 16.0)[0]
    s1, f = hp.step(s, spec, 1000.0, 3600.0, ambient_c=16.0)
    # 1 kW_e x 4.103 = 4103 W_th for 1 h into 370 L x 1.1628 Wh/K = 430.2 Wh/K: +9.54 K
    assert f.heat_in_wh_th[0] == pytest.approx(1000.0 * k)
    assert s1.tank_temp_c[0] == pytest.approx(30.0 + 1000.0 * k / (370 * 4186 / 3600))
    _ledger_ok(f)


def test_heating_stops_at_setpoint_and_unmet_power():
    spec = hp.ecocute_spec(1)
    s = hp.initial_state(spec, 64.0)
    s1, f = hp.step(s, spec, 1500.0, 3600.0, ambient_c=10.0)
    assert s1.tank_temp_c[0] == pytest.approx(65.0)
    assert f.unmet_w[0] > 0
    lo, hi = hp.feasible_power_w(spec, s, 3600.0, ambient_c=10.0)
    assert lo[0] == 0.0
    assert f.power_w[0] == pytest.approx(hi[0])
    _ledger_ok(f)


def test_standby_loss_exponential():
    spec = hp.ecocute_spec(1)
    s = hp.initial_state(spec, 65.0)
    s1, f = hp.step(s, spec, 0.0, 86400.0, ambient_c=15.0)
    # tau = 430.2 Wh/K / 1.5 W/K = 286.8 h; 24 h: 15 + 50 exp(-24/286.8) = 60.99 degC
    tau_h = 370 * 4186 / 3600 / 1.5
    assert s1.tank_temp_c[0] == pytest.approx(15 + 50 * np.exp(-24 / tau_h))
    # ~1.7 kWh/day standby loss, the order of catalogue figures for 370 L tanks
    assert 1500 < f.loss_wh_th[0] < 2000
    _ledger_ok(f)


def test_draw_unmet_when_tank_cold():
    spec = hp.ecocute_spec(1, tank_ua_w_per_k=0.0, min_usable_c=40.0)
    s = hp.initial_state(spec, 42.0)
    s1, f = hp.step(s, spec, 0.0, 3600.0, ambient_c=10.0, draw_wh_th=3000.0)
    # only 2 K x 430.2 Wh/K = 860 Wh above the 40 degC floor is deliverable
    assert f.draw_delivered_wh_th[0] == pytest.approx(2 * 370 * 4186 / 3600)
    assert f.draw_unmet_wh_th[0] == pytest.approx(3000 - 2 * 370 * 4186 / 3600)
    assert s1.tank_temp_c[0] == pytest.approx(40.0)


def test_daily_draw_profile_integrates_to_daily_total():
    t = np.arange(0, 2 * 86400, 900.0)
    d = hp.draw_energy_wh_th(t, 900.0, 12_000.0)
    assert d.sum() == pytest.approx(24_000.0)
    # evening 20-21 h carries 14 %
    assert hp.draw_energy_wh_th(20 * 3600.0, 3600.0, 12_000.0) == pytest.approx(1680.0)
    # odd step lengths are exact too
    assert hp.draw_energy_wh_th(0.0, 86400.0 * 3, 12_000.0) == pytest.approx(36_000.0)


def test_daytime_surplus_heating_vs_night():
    """Heating at 13 h (warm air) takes less electricity than at 2 h (cold air)."""
    spec = hp.ecocute_spec(2)
    s = hp.initial_state(spec, 40.0)
    _, f = hp.step(s, spec, 5000.0, 3 * 3600.0, ambient_c=np.array([18.0, 4.0]))
    assert f.heat_in_wh_th[0] == pytest.approx(f.heat_in_wh_th[1], rel=0.02)
    assert f.electric_in_wh[0] < f.electric_in_wh[1]


def test_one_unit_matches_population_of_10000():
    a = hp.ecocute_spec(1)
    b = hp.ecocute_spec(10_000)
    sa, _ = hp.step(hp.initial_state(a, 50.0), a, 900.0, 900.0, 8.0, 300.0)
    sb, _ = hp.step(hp.initial_state(b, 50.0), b, 900.0, 900.0, 8.0, 300.0)
    assert np.all(sb.tank_temp_c == sa.tank_temp_c[0])


@settings(max_examples=60, deadline=None)
@given(
    seq=st.lists(
        st.tuples(st.floats(0, 3000), st.floats(0, 5000), st.floats(-10, 35)),
        min_size=1,
        max_size=12,
    ),
    t0=st.floats(10, 65),
    dt_s=st.sampled_from([60.0, 900.0, 3600.0, 6 * 3600.0]),
    ua=st.floats(0.0, 5.0),
)
def test_property_ledger_and_bounds(seq, t0, dt_s, ua):
    spec = hp.ecocute_spec(1, tank_ua_w_per_k=ua)
    s = hp.initial_state(spec, t0)
    for p, draw, amb in seq:
        s1, f = hp.step(s, spec, p, dt_s, ambient_c=amb, draw_wh_th=draw)
        _ledger_ok(f)
        assert f.power_w[0] <= p + 1e-9
        assert f.draw_delivered_wh_th[0] <= draw + 1e-9
        assert s1.tank_temp_c[0] <= max(65.0, s.tank_temp_c[0]) + 1e-9
        s = s1
