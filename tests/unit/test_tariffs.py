from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cps_sim.market.carbon import CarbonComponent, CarbonPriceTimeline
from cps_sim.market.tariffs import (
    DynamicTariff,
    FlatTariff,
    Tariff,
    TouPeriod,
    TouTariff,
    bill_jpy,
    day_type,
    example_tou_tariff,
    monthly_peak_import_w,
    tariff_from_config,
)

TZ = "Asia/Tokyo"


def test_day_types_use_japanese_holidays():
    # 2026-05-04..06 are Golden Week holidays (Mon-Wed; 05-06 is a substitute holiday),
    # 2026-05-09 Saturday, 2026-05-07 Thursday a normal weekday.
    idx = pd.DatetimeIndex(
        ["2026-05-04 12:00", "2026-05-06 12:00", "2026-05-07 12:00", "2026-05-09 12:00"], tz=TZ
    )
    assert list(day_type(idx)) == ["holiday", "holiday", "weekday", "weekend"]
    ye = pd.DatetimeIndex(["2026-12-30 10:00"], tz=TZ)  # Wednesday
    assert day_type(ye)[0] == "weekday"
    assert day_type(ye, year_end_holidays=True)[0] == "holiday"


def test_flat_tariff_and_protocol():
    t = FlatTariff(30.0, 8.0)
    assert isinstance(t, Tariff)
    idx = pd.date_range("2026-01-01", periods=3, freq="h", tz=TZ)
    np.testing.assert_array_equal(t.import_price_jpy_per_kwh(idx), [30, 30, 30])
    np.testing.assert_array_equal(t.export_price_jpy_per_kwh(idx), [8, 8, 8])


def test_tou_periods_hours_wrap_seasons_and_holidays():
    t = example_tou_tariff()
    idx = pd.DatetimeIndex(
        [
            "2026-07-15 02:00",  # Wed night -> 27
            "2026-07-15 14:00",  # Wed summer peak -> 45
            "2026-07-15 22:59",  # Wed day -> 36
            "2026-07-15 23:00",  # night (wrap) -> 27
            "2026-07-20 14:00",  # Marine Day (holiday, Monday) -> weekend_day 31
            "2026-01-14 14:00",  # Wed in January, no summer peak -> 36
            "2026-07-18 14:00",  # Saturday -> 31
        ],
        tz=TZ,
    )
    np.testing.assert_array_equal(t.import_price_jpy_per_kwh(idx), [27, 45, 36, 27, 31, 36, 31])
    assert list(t.period_names(idx[:2])) == ["night", "summer_peak"]


def test_tou_without_catch_all_raises_with_timestamp():
    t = TouTariff((TouPeriod("day", 30, 7, 23, ("weekday",)),))
    idx = pd.DatetimeIndex(["2026-07-15 12:00", "2026-07-18 12:00"], tz=TZ)
    with pytest.raises(ValueError, match="no period covers 2026-07-18 12:00"):
        t.import_price_jpy_per_kwh(idx)
    with pytest.raises(ValueError, match="unknown day type"):
        TouPeriod("x", 1, day_types=("sunday",))


def test_dynamic_tariff_step_hold_adder_and_range():
    s = pd.Series(
        [10.0, 0.01, 20.0], index=pd.date_range("2026-04-01", periods=3, freq="30min", tz=TZ)
    )
    t = DynamicTariff(s, import_adder_jpy_per_kwh=15, export_multiplier=1.0)
    q = pd.DatetimeIndex(["2026-04-01 00:15", "2026-04-01 00:30", "2026-04-01 01:29"], tz=TZ)
    # held prices 10, 0.01, 20 -> import +15 = 25, 15.01, 35
    np.testing.assert_allclose(t.import_price_jpy_per_kwh(q), [25, 15.01, 35])
    np.testing.assert_allclose(t.export_price_jpy_per_kwh(q), [10, 0.01, 20])
    # UTC query of the same instant gives the same price
    np.testing.assert_allclose(t.spot_jpy_per_kwh(q.tz_convert("UTC")), [10, 0.01, 20])
    with pytest.raises(ValueError, match="no price for 2026-04-01 01:30"):
        t.spot_jpy_per_kwh(pd.DatetimeIndex(["2026-04-01 01:30"], tz=TZ))


def test_monthly_peak_uses_30_min_average():
    # 15-min steps: 4 kW then 2 kW in one half hour -> 3 kW 30-min demand; a later
    # half hour at 2.5 kW.  Peak for January = 3 kW, not the 4 kW instantaneous value.
    idx = pd.date_range("2026-01-10 10:00", periods=4, freq="15min", tz=TZ)
    peaks = monthly_peak_import_w(idx, [4000, 2000, 2500, 2500], 900)
    assert peaks.iloc[0, 0] == pytest.approx(3000)


def test_bill_splits_energy_demand_and_carbon():
    # Two sites, 2 h at 1-h steps on 2026-04-01 (FY2026, carbon 2000 JPY/t from the timeline).
    idx = pd.date_range("2026-04-01 10:00", periods=2, freq="h", tz=TZ)
    imp = np.array([[1000.0, 0.0], [3000.0, 0.0]])
    exp = np.array([[0.0, 2000.0], [0.0, 2000.0]])
    tariff = FlatTariff(30.0, 8.0, demand_charge_jpy_per_kw_month=1000.0)
    tl = CarbonPriceTimeline((CarbonComponent("ets", 2026, 2000.0),))
    b = bill_jpy(tariff, idx, imp, exp, 3600, co2_g_per_kwh=500.0, carbon_price_jpy_per_t=tl)
    # site 0: 4 kWh * 30 = 120 JPY; peak 3 kW * 1000 = 3000 JPY;
    #         carbon 4 kWh * 500 g = 2 kg = 0.002 t * 2000 = 4 JPY; total 3124 JPY
    # site 1: export 4 kWh * 8 = 32 JPY credit; total -32 JPY
    np.testing.assert_allclose(b.import_energy_jpy, [120, 0])
    np.testing.assert_allclose(b.export_credit_jpy, [0, 32])
    np.testing.assert_allclose(b.demand_charge_jpy, [3000, 0])
    np.testing.assert_allclose(b.carbon_jpy, [4, 0])
    np.testing.assert_allclose(b.total_jpy, [3124, -32])


def test_bill_one_site_equals_same_site_among_many():
    idx = pd.date_range("2026-06-01", periods=96 * 3, freq="15min", tz=TZ)
    rng = np.random.default_rng(0)
    imp = rng.uniform(0, 5000, (len(idx), 50))
    exp = rng.uniform(0, 1000, (len(idx), 50))
    t = example_tou_tariff(demand_charge_jpy_per_kw_month=500)
    many = bill_jpy(t, idx, imp, exp, 900)
    one = bill_jpy(t, idx, imp[:, 7], exp[:, 7], 900)
    assert many.total_jpy[7] == pytest.approx(one.total_jpy[0])


def test_tariff_from_config():
    t = tariff_from_config(
        {
            "type": "tou",
            "export_jpy_per_kwh": 8,
            "periods": [
                {"name": "night", "price_jpy_per_kwh": 20, "start_hour": 22, "end_hour": 8},
                {"name": "day", "price_jpy_per_kwh": 35},
            ],
        }
    )
    idx = pd.DatetimeIndex(["2026-04-01 03:00", "2026-04-01 12:00"], tz=TZ)
    np.testing.assert_array_equal(t.import_price_jpy_per_kwh(idx), [20, 35])
    with pytest.raises(ValueError, match="tariff type"):
        tariff_from_config({"type": "spot"})


@pytest.mark.parametrize("years", [(2025, 2025), (2026, 2028), (2049, 2051)])
def test_day_type_holidays_are_the_japanese_calendar(years):
    """day_type takes the holidays from the shared, cached calendar: the same days as
    ``holidays.Japan`` (national and substitute holidays) over any span of years."""
    import holidays

    from cps_sim.market.tariffs import day_type

    start = pd.Timestamp(f"{years[0]}-01-01", tz="Asia/Tokyo")
    end = pd.Timestamp(f"{years[1] + 1}-01-01", tz="Asia/Tokyo")
    times = pd.date_range(start, end, freq="6h", inclusive="left")
    jp = set(holidays.Japan(years=range(years[0], years[1] + 1)).keys())
    want = np.array(
        [
            "holiday" if t.date() in jp else "weekend" if t.day_of_week >= 5 else "weekday"
            for t in times
        ],
        dtype=object,
    )
    np.testing.assert_array_equal(day_type(times), want)
