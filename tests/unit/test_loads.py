"""Load profiles (cps_sim.models.loads): exact annual scaling, shapes, deferrable loads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cps_sim.models import loads

YEAR_15MIN = pd.date_range(
    "2026-01-01", "2027-01-01", freq="15min", tz="Asia/Tokyo", inclusive="left"
)
DT_H = 0.25

PROFILES = [
    (loads.household_power_w, {}),
    (loads.household_power_w, {"profile": "japan"}),
    (loads.office_power_w, {}),
    (loads.hospital_power_w, {}),
    (loads.retail_power_w, {}),
    (loads.factory_power_w, {"shifts": 1}),
    (loads.factory_power_w, {"shifts": 2}),
    (loads.factory_power_w, {"shifts": 3, "operating_days": "all"}),
    (loads.data_centre_power_w, {"annual_growth_rate": 0.05}),
]


@pytest.mark.parametrize(("fn", "kwargs"), PROFILES)
def test_integral_equals_annual_energy(fn, kwargs):
    # 35040 quarter-hours x 0.25 h x mean power = annual kWh; required within 0.1 %
    annual_kwh = np.array([3000.0, 4500.0, 120_000.0])
    p = fn(YEAR_15MIN, annual_kwh, np.random.default_rng(1), **kwargs)
    assert p.shape == (35040, 3)
    assert np.all(p >= 0)
    energy_kwh = p.sum(axis=0) * DT_H / 1000
    np.testing.assert_allclose(energy_kwh, annual_kwh, rtol=1e-3)
    np.testing.assert_allclose(energy_kwh, annual_kwh, rtol=1e-9)  # measured: exact


@pytest.mark.parametrize("freq", ["1h", "5min", "30min"])
def test_integral_exact_at_other_resolutions(freq):
    idx = pd.date_range("2026-01-01", "2027-01-01", freq=freq, tz="Asia/Tokyo", inclusive="left")
    p = loads.household_power_w(idx, [3600.0], np.random.default_rng(0), profile="japan")
    dt_h = pd.Timedelta(freq).total_seconds() / 3600
    assert p.sum() * dt_h / 1000 == pytest.approx(3600.0, rel=1e-9)


def test_partial_year_gets_seasonal_share_and_years_concatenate():
    rng = np.random.default_rng(0)
    jan = pd.date_range("2026-01-01", "2026-02-01", freq="1h", tz="Asia/Tokyo", inclusive="left")
    may = pd.date_range("2026-05-01", "2026-06-01", freq="1h", tz="Asia/Tokyo", inclusive="left")
    kw = {"profile": "japan", "noise_std": 0.0, "shift_std_s": 0.0}
    e_jan = loads.household_power_w(jan, [3650.0], rng, **kw).sum() / 1000
    e_may = loads.household_power_w(may, [3650.0], rng, **kw).sum() / 1000
    # monthly factors 1.30 (Jan) vs 0.82 (May) of a ~310 kWh/month mean
    assert e_jan > 1.4 * e_may
    two = pd.date_range("2026-01-01", "2028-01-01", freq="1h", tz="Asia/Tokyo", inclusive="left")
    p = loads.household_power_w(two, [2000.0], rng, **kw)
    assert p[:8760].sum() / 1000 == pytest.approx(2000.0)
    assert p[8760:].sum() / 1000 == pytest.approx(2000.0)


def test_data_centre_growth_per_year_and_continuity():
    # 1000 kWh in 2026, growth 10 %/yr -> 1100 kWh in 2027; P(t) = P0 1.1^t is continuous
    idx = pd.date_range("2026-01-01", "2028-01-01", freq="1h", tz="Asia/Tokyo", inclusive="left")
    p = loads.data_centre_power_w(
        idx, [1000.0], np.random.default_rng(0), annual_growth_rate=0.10, noise_std=0.0
    )[:, 0]
    assert p[:8760].sum() / 1000 == pytest.approx(1000.0, rel=1e-9)
    assert p[8760:].sum() / 1000 == pytest.approx(1100.0, rel=1e-9)
    assert p[8760] / p[8759] == pytest.approx(1.0, abs=1e-4)
    # mean power in 2026: 1e6 Wh / 8760 h = 114.2 W; P0 = 114.2 x ln1.1/0.1 = 108.8 W
    assert p[0] == pytest.approx(1e6 / 8760 * np.log(1.1) / 0.1, rel=1e-3)


def test_office_weekday_vs_weekend_and_holiday():
    idx = pd.date_range("2026-01-01", "2026-02-01", freq="1h", tz="Asia/Tokyo", inclusive="left")
    p = loads.office_power_w(
        idx, [100_000.0], np.random.default_rng(0), noise_std=0.0, shift_std_s=0.0
    )[:, 0]
    s = pd.Series(p, index=idx)
    # 2026-01-07 Wednesday 11:00 open (1.0) vs 03:00 closed (base 0.3): ratio 1/0.3
    assert s["2026-01-07 11:00"] / s["2026-01-07 03:00"] == pytest.approx(1 / 0.3, rel=1e-2)
    # Saturday 2026-01-10 11:00 and New Year's Day (holiday, Thursday) 11:00 are at base
    assert s["2026-01-10 11:00"] == pytest.approx(s["2026-01-10 03:00"], rel=1e-2)
    assert s["2026-01-01 11:00"] == pytest.approx(s["2026-01-01 03:00"], rel=1e-2)
    # Coming-of-Age Day, Monday 2026-01-12, is a Japanese public holiday
    assert s["2026-01-12 11:00"] == pytest.approx(s["2026-01-12 03:00"], rel=1e-2)


@pytest.mark.parametrize(("shifts", "on_hours"), [(1, 9), (2, 16), (3, 24)])
def test_factory_shift_hours(shifts, on_hours):
    idx = pd.date_range("2026-03-02", periods=24, freq="1h", tz="Asia/Tokyo")  # a Monday
    p = loads.factory_power_w(idx, [1e6], np.random.default_rng(0), shifts=shifts, noise_std=0.0)[
        :, 0
    ]
    # 1 shift 8-17 = 9 h, 2 shifts 6-22 = 16 h, 3 shifts = 24 h at the top level
    assert int(np.sum(np.isclose(p, p.max()))) == on_hours
    if shifts < 3:
        assert p.min() == pytest.approx(0.15 * p.max())


def test_per_site_variation_is_seeded_and_off_when_zero():
    idx = YEAR_15MIN[: 96 * 7]
    a = loads.household_power_w(idx, [3000.0] * 5, np.random.default_rng(3))
    b = loads.household_power_w(idx, [3000.0] * 5, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[:, 0], a[:, 1])
    c = loads.household_power_w(
        idx, [3000.0] * 1000, np.random.default_rng(3), noise_std=0.0, shift_std_s=0.0
    )
    one = loads.household_power_w(
        idx, [3000.0], np.random.default_rng(9), noise_std=0.0, shift_std_s=0.0
    )
    # one site in an array of one == the same site in an array of 1000
    np.testing.assert_allclose(c[:, 517], one[:, 0], rtol=1e-12)


def test_bdew_h25_matches_demandlib_shape():
    import holidays
    from demandlib import bdew

    from cps_sim.models.weather import library_deprecations_ignored

    with library_deprecations_ignored():
        ref = np.asarray(bdew.H25(YEAR_15MIN, holidays=dict(holidays.Japan(years=2026))))
    p = loads.household_power_w(
        YEAR_15MIN, [3000.0], np.random.default_rng(0), noise_std=0.0, shift_std_s=0.0
    )[:, 0]
    # scaled copy of demandlib's H25: ratio constant = 3e6 Wh / (sum(ref) x 0.25 h)
    np.testing.assert_allclose(p / ref, 3e6 / (ref.sum() * DT_H), rtol=1e-9)


@pytest.mark.parametrize("policy", ["earliest", "latest", "uniform"])
def test_deferrable_energy_within_window(policy):
    idx = YEAR_15MIN[:96]
    # 1.5 kWh at <= 1 kW between 10:01:40 and 16:00 -> 1.5 h run; energy exact
    p = loads.deferrable_load_power_w(
        idx, [1500.0, 500.0], [36100.0, 0.0], [57600.0, 7200.0], [1000.0, 2000.0], policy=policy
    )
    np.testing.assert_allclose(p.sum(axis=0) * DT_H, [1500.0, 500.0], rtol=1e-12)
    t_start = np.arange(96) * 900.0
    active = t_start[p[:, 0] > 0]
    assert active.min() >= 36000.0 and active.max() + 900 <= 57600.0
    assert p[:, 0].max() <= 1000.0 + 1e-9 and p[:, 1].max() <= 2000.0 + 1e-9
    if policy == "latest":
        assert active.max() == 57600.0 - 900.0


def test_deferrable_infeasible_names_load():
    with pytest.raises(ValueError, match="deferrable load 1"):
        loads.deferrable_load_power_w(YEAR_15MIN[:96], [100.0, 5000.0], 0.0, 3600.0, 1000.0)


def test_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        loads.household_power_w(YEAR_15MIN[:10], [-1.0], rng)
    with pytest.raises(ValueError):
        loads.household_power_w(YEAR_15MIN[:10], [1.0], rng, profile="nope")
    with pytest.raises(ValueError):
        loads.factory_power_w(YEAR_15MIN[:10], [1.0], rng, shifts=4)
