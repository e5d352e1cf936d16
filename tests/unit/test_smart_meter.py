"""The B-route smart-meter model (cps_sim/models/smart_meter.py): registers, wrap,
instantaneous power, 30-minute boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from cps_sim.models import smart_meter as sm


def test_register_truncates_to_whole_units():
    spec = sm.RegisterSpec(unit_kwh=0.1, digits=6)  # 100 Wh per count
    # 99.9 Wh is not yet one count; 100 Wh is (exactly, despite float sums); 250 Wh -> 2
    e = np.array([0.0, 99.9, 0.1 + 0.2 + 99.7, 250.0, 1e6])
    assert sm.register(e, spec).tolist() == [0, 0, 1, 2, 10000]
    assert sm.register_wh(sm.register(e, spec), spec).tolist() == [0, 0, 100, 200, 1e6]


def test_register_wraps_at_the_digit_count_and_intervals_cross_the_wrap():
    spec = sm.RegisterSpec(unit_kwh=0.1, digits=6)  # wraps after 999999 counts = 99,999.9 kWh
    before = sm.register(np.array([99_999.8e3]), spec)
    after = sm.register(np.array([99_999.8e3 + 500.0]), spec)  # + 0.5 kWh
    assert before.tolist() == [999_998]
    assert after.tolist() == [3]  # 999998 + 5 counts - 10**6
    assert sm.interval_wh(after, before, spec).tolist() == [500.0]


def test_resolution_is_unit_times_coefficient():
    assert sm.RegisterSpec(unit_kwh=0.01, coefficient=40).resolution_wh == pytest.approx(400.0)
    assert sm.RegisterSpec(unit_kwh=1.0, digits=8).modulus == 10**8


@pytest.mark.parametrize(
    "kw", [dict(unit_kwh=0.5), dict(digits=0), dict(digits=9), dict(coefficient=0)]
)
def test_register_spec_refuses_values_the_class_does_not_define(kw):
    with pytest.raises(ValueError):
        sm.RegisterSpec(**kw)


def test_instantaneous_power_is_whole_signed_watts_in_the_epc_range():
    p = sm.instantaneous_w(np.array([1234.4, -1234.6, 0.49, 3e9, -3e9]))
    assert p.tolist() == [1234, -1235, 0, sm.POWER_MAX_W, sm.POWER_MIN_W]
    assert p.dtype == np.int64


def test_boundaries_are_local_half_hours():
    s = np.array([0.0, 1800.0, 1799.0, 900.0, 86400.0 - 1800.0, 3600.0 * 13 + 1e-9])
    assert sm.is_boundary(s).tolist() == [True, True, False, False, True, True]


def test_one_meter_in_an_array_of_one_equals_the_same_meter_among_many():
    spec = sm.RegisterSpec()
    rng = np.random.default_rng(1)
    e = rng.uniform(0, 1e8, 10_000)
    many = sm.register(e, spec)
    assert sm.register(e[[1234]], spec)[0] == many[1234]
