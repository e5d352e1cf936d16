from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cps_sim.market.balancing import (
    day_ahead_plan_wh,
    energy_per_slot_wh,
    settle_imbalance,
)

TZ = "Asia/Tokyo"


def test_energy_per_slot_from_15_min_steps():
    times = pd.date_range("2026-04-01 00:00", periods=4, freq="15min", tz=TZ)
    # 2 kW + 4 kW for 15 min each = 0.5 + 1.0 = 1.5 kWh in slot 00:00; 1 + 1 kW -> 0.5 kWh
    e = energy_per_slot_wh(times, [2000, 4000, 1000, 1000], 900)
    np.testing.assert_allclose(e.iloc[:, 0], [1500, 500])
    assert e.index[1] == pd.Timestamp("2026-04-01 00:30", tz=TZ)
    with pytest.raises(ValueError, match="must divide"):
        energy_per_slot_wh(times, [1, 1, 1, 1], 1200)


def test_settlement_shortage_and_surplus_prices():
    slots = pd.date_range("2026-04-01 00:00", periods=3, freq="30min", tz=TZ)
    plan = pd.Series([1000.0, 1000, 1000], index=slots)
    actual = pd.Series([1500.0, 800, 1000], index=slots)
    short = pd.Series([20.0, 20, 20], index=slots)
    surplus = np.array([5.0, 5, 5])
    s = settle_imbalance(plan, actual, short, surplus)
    # slot 0: shortage 0.5 kWh * 20 = 10 JPY paid; slot 1: surplus 0.2 kWh * 5 = 1 JPY received
    np.testing.assert_allclose(s.imbalance_wh[:, 0], [500, -200, 0])
    np.testing.assert_allclose(s.cost_jpy[:, 0], [10, -1, 0])
    summ = s.summary()
    assert summ["cost_jpy"].iloc[0] == pytest.approx(9.0)
    assert summ["shortage_wh"].iloc[0] == pytest.approx(500)
    assert summ["surplus_wh"].iloc[0] == pytest.approx(200)
    # 700 Wh absolute imbalance over 3000 Wh planned
    assert summ["imbalance_ratio"].iloc[0] == pytest.approx(700 / 3000)


def test_single_price_default_and_many_groups():
    times = pd.date_range("2026-04-01", periods=96, freq="15min", tz=TZ)
    rng = np.random.default_rng(1)
    forecast = rng.uniform(0, 5e6, (96, 20))
    actual = forecast + rng.normal(0, 2e5, (96, 20))
    plan = day_ahead_plan_wh(times, forecast, 900)
    act = energy_per_slot_wh(times, actual, 900)
    price = rng.uniform(5, 30, len(plan))
    s = settle_imbalance(plan, act, price)
    np.testing.assert_array_equal(s.surplus_price_jpy_per_kwh, s.shortage_price_jpy_per_kwh)
    # with a single price, cost = price * imbalance
    np.testing.assert_allclose(s.cost_jpy, s.imbalance_wh * price[:, None] / 1000)
    # one group alone settles like the same group among many
    one = settle_imbalance(plan[[3]], act[[3]], price)
    np.testing.assert_allclose(one.cost_jpy[:, 0], s.cost_jpy[:, 3])


def test_settlement_errors():
    slots = pd.date_range("2026-04-01 00:00", periods=2, freq="30min", tz=TZ)
    plan = pd.Series([1.0, 1.0], index=slots)
    with pytest.raises(ValueError, match="different slots"):
        settle_imbalance(plan, pd.Series([1.0, 1.0], index=slots + pd.Timedelta("30min")), 10.0)
    with pytest.raises(ValueError, match="no value for slot"):
        settle_imbalance(plan, plan, pd.Series([10.0], index=slots[:1]))
