"""Room air-conditioner / space-heating heat pump model (models/hvac.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.models import hvac


def test_1r1c_is_exact_and_step_independent():
    spec = hvac.hvac_spec(3, floor_area_m2=[40.0, 60.0, 120.0])
    t0 = np.array([15.0, 22.0, 30.0])
    q = np.array([2000.0, 0.0, -1500.0])
    one = hvac.indoor_temp_c(spec, t0, 5.0, q, 3600.0)
    t = t0.copy()
    for _ in range(60):  # the same hour in one-minute steps: the exponential composes
        t = hvac.indoor_temp_c(spec, t, 5.0, q, 60.0)
    np.testing.assert_allclose(t, one, rtol=0, atol=1e-10)
    # hand value: tau = R C = C/UA = 30/2 = 15 h; T_eq = T_out + (g + q)/UA
    ua = 2.0 * 60.0
    t_eq = 5.0 + (300.0 + 0.0) / ua
    assert one[1] == pytest.approx(t_eq + (22.0 - t_eq) * np.exp(-1.0 / 15.0), rel=1e-12)
    # the inverse gives the heat that reaches a target exactly
    target = np.array([20.0, 21.0, 26.0])
    need = hvac.heat_to_reach_w(spec, t0, 5.0, target, 900.0)
    np.testing.assert_allclose(
        hvac.indoor_temp_c(spec, t0, 5.0, need, 900.0), target, rtol=0, atol=1e-9
    )


def test_mean_temperature_is_the_integral_of_the_path():
    spec = hvac.hvac_spec(1)
    t0, out, q = np.array([25.0]), 0.0, np.array([1000.0])
    path = [hvac.indoor_temp_c(spec, t0, out, q, s)[0] for s in np.linspace(0, 3600, 3601)]
    mean = hvac.mean_indoor_temp_c(spec, t0, out, q, 3600.0)[0]
    assert mean == pytest.approx(np.trapezoid(path, dx=1.0) / 3600.0, rel=1e-9)


def test_cop_rating_points_and_trend():
    spec = hvac.hvac_spec(1)
    assert hvac.cop(spec, 20.0, 7.0, True)[0] == pytest.approx(4.67, abs=0.01)
    assert hvac.cop(spec, 20.0, -7.0, True)[0] == pytest.approx(3.15, abs=0.01)
    assert hvac.cop(spec, 27.0, 35.0, False)[0] == pytest.approx(5.48, abs=0.01)
    outs = np.linspace(-15.0, 15.0, 31)
    heat = hvac.cop(hvac.hvac_spec(31), 20.0, outs, True)
    assert np.all(np.diff(heat) >= 0) and heat[-1] > heat[0]  # warmer outdoors: better COP
    cool = hvac.cop(hvac.hvac_spec(31), 27.0, outs + 20.0, False)
    assert np.all(np.diff(cool) <= 0) and cool[-1] < cool[0]  # hotter: worse EER
    assert heat.min() >= 1.0 and cool.max() <= 7.0  # within [cop_min, cop_max]


def test_band_control_holds_the_edge_and_floats_inside():
    spec = hvac.hvac_spec(3)
    state = hvac.HvacState(np.array([20.05, 24.0, 27.95]))
    # winter night: the first room would drop below 20 °C, the middle one not within 15 min
    st_w = hvac.decide(spec, state, 0.0, 900.0)
    assert st_w.heat_w[0] > 0 and st_w.indoor_end_c[0] == pytest.approx(20.0, abs=1e-9)
    assert st_w.heat_w[1] == 0.0 and st_w.electric_w[1] == 0.0
    # summer afternoon: the last room is held at 28 °C by cooling
    st_s = hvac.decide(spec, state, 36.0, 900.0)
    assert st_s.heat_w[2] < 0 and st_s.indoor_end_c[2] == pytest.approx(28.0, abs=1e-9)
    assert np.all(st_s.electric_w >= 0)
    # electric = heat / EER at the step's mean indoor temperature
    eer = hvac.cop(spec, st_s.indoor_mean_c, 36.0, False)
    assert st_s.electric_w[2] == pytest.approx(-st_s.heat_w[2] / eer[2], rel=1e-12)


def test_a_wider_band_draws_less_and_capacity_limits_show_as_discomfort():
    spec = hvac.hvac_spec(1, heat_max_w=800.0)
    cold = hvac.HvacState(np.array([20.0]))
    base = hvac.decide(spec, cold, -10.0, 900.0)
    wide = hvac.decide(spec, cold, -10.0, 900.0, shift_k=2.0)
    assert wide.electric_w[0] < base.electric_w[0]
    # 800 W cannot hold 20 °C at −10 °C (loss ~3.6 kW): it runs flat out and the room cools
    assert base.heat_w[0] == pytest.approx(800.0)
    assert base.indoor_end_c[0] < 20.0 and base.discomfort_kh[0] > 0


@settings(max_examples=60, deadline=None)
@given(
    t0=st.floats(5.0, 35.0),
    out=st.floats(-15.0, 40.0),
    shift=st.floats(-1.0, 4.0),
    dt=st.sampled_from([60.0, 300.0, 900.0, 3600.0]),
)
def test_property_heat_within_capacity_and_room_moves_towards_the_band(t0, out, shift, dt):
    spec = hvac.hvac_spec(1)
    step = hvac.decide(spec, hvac.HvacState(np.array([t0])), out, dt, shift)
    assert -spec.cool_max_w[0] - 1e-9 <= step.heat_w[0] <= spec.heat_max_w[0] + 1e-9
    assert step.electric_w[0] >= 0.0
    low, high = hvac.band_c(spec, shift)
    free = hvac.indoor_temp_c(spec, np.array([t0]), out, np.zeros(1), dt)[0]
    end = step.indoor_end_c[0]
    if low[0] <= free <= high[0]:
        assert step.heat_w[0] == 0.0
    elif free < low[0]:
        assert end >= free - 1e-9 and end <= low[0] + 1e-9
    else:
        assert end <= free + 1e-9 and end >= high[0] - 1e-9
