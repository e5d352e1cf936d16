from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cps_sim.market.carbon import (
    CarbonComponent,
    CarbonPriceTimeline,
    carbon_cost_jpy,
    default_timeline,
    fiscal_year,
)


def test_fiscal_year_boundaries():
    idx = pd.DatetimeIndex(
        ["2026-03-31 23:30", "2026-04-01 00:00", "2027-03-31", "2027-04-01"], tz="Asia/Tokyo"
    )
    np.testing.assert_array_equal(fiscal_year(idx), [2025, 2026, 2026, 2027])
    # 2026-03-31 15:30 UTC is 2026-04-01 00:30 JST -> FY2026
    utc = pd.DatetimeIndex(["2026-03-31 15:30"], tz="UTC")
    assert fiscal_year(utc)[0] == 2026


def test_milestones_switch_on_at_their_fiscal_years():
    tl = default_timeline(
        ets_start_jpy_per_t=1000,
        ets_increase_jpy_per_t_per_fy=200,
        levy_start_jpy_per_t=300,
        levy_increase_jpy_per_t_per_fy=0,
        auction_start_jpy_per_t=500,
        auction_increase_jpy_per_t_per_fy=0,
        cap_jpy_per_t=np.inf,
    )
    fy = np.array([2025, 2026, 2027, 2028, 2032, 2033])
    # FY2025: nothing; FY2026: ETS 1000; FY2027: 1200; FY2028: 1400 + levy 300 = 1700;
    # FY2032: 1000 + 6*200 = 2200 + 300 = 2500; FY2033: 2400 + 300 + auction 500 = 3200
    np.testing.assert_allclose(tl.price_for_fy_jpy_per_t(fy), [0, 1000, 1200, 1700, 2500, 3200])
    np.testing.assert_allclose(
        tl.price_for_fy_jpy_per_t(fy, include=("levy",)), [0, 0, 0, 300, 300, 300]
    )


def test_default_is_non_decreasing_and_capped():
    tl = default_timeline(cap_jpy_per_t=3000)
    p = tl.price_for_fy_jpy_per_t(np.arange(2020, 2060))
    assert np.all(np.diff(p) >= 0)
    assert p.max() == 3000
    assert all(c.assumption for c in tl.components)


def test_price_by_timestamp_and_unknown_component():
    tl = CarbonPriceTimeline((CarbonComponent("ets", 2026, 1500.0),))
    idx = pd.date_range("2026-03-31 23:00", periods=4, freq="30min", tz="Asia/Tokyo")
    np.testing.assert_allclose(tl.carbon_price_jpy_per_t(idx), [0, 0, 1500, 1500])
    with pytest.raises(ValueError, match="unknown carbon component"):
        tl.price_for_fy_jpy_per_t(2026, include=("tax",))


def test_carbon_cost():
    # 1 MWh at 450 g/kWh = 0.45 t; at 2000 JPY/t -> 900 JPY
    assert carbon_cost_jpy(1_000_000, 450, 2000) == pytest.approx(900.0)
