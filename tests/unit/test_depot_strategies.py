"""Depot strategies after SpiceEV: greedy, balanced, peak_shaving (hand-computed cases)."""

from __future__ import annotations

import numpy as np
import pytest

from cps_sim.control.strategies import StrategyController
from cps_sim.control.strategies.common import StrategyConfig
from cps_sim.control.strategies.depot import fleet_power_w


def _obs(energy_wh, target_wh, dep_s, charger_w=20_000.0, limit_w=np.inf, load_w=0.0):
    from cps_sim.control.observation import Observation

    n = len(energy_wh)
    return Observation(
        now_s=0.0,
        tick_s=900.0,
        site_load_w=np.array([load_w]),
        site_pv_w=np.zeros(1),
        site_import_limit_w=np.array([limit_w]),
        battery_energy_wh=np.zeros(1),
        battery_capacity_wh=np.zeros(1),
        battery_power_w=np.zeros(1),
        ev_site=np.zeros(n, dtype=np.int64),
        ev_soc=np.asarray(energy_wh) / 75_000.0,
        ev_energy_wh=np.asarray(energy_wh, float),
        ev_capacity_wh=np.full(n, 75_000.0),
        ev_plugged=np.ones(n, dtype=bool),
        ev_charger_w=np.full(n, charger_w),
        ev_v2x_w=np.zeros(n),
        ev_soc_min=np.zeros(n),
        ev_target_wh=np.asarray(target_wh, float),
        ev_departure_s=np.asarray(dep_s, float),
        import_price_jpy_per_kwh=np.full(1, 30.0),
        export_price_jpy_per_kwh=np.full(1, 8.5),
    )


CFG = StrategyConfig(interval_s=300.0, charge_efficiency=1.0)


def decide(name, o):
    return StrategyController(name, CFG).decide(0.0, o)["ev_setpoint_w"]


def test_greedy_full_power_and_earliest_departure_first_under_the_limit():
    # three vans needing 30 kWh each, 25 kW connection: earliest departure gets 20 kW
    o = _obs([45e3] * 3, [75e3] * 3, [3 * 3600, 1 * 3600, 2 * 3600], limit_w=25e3)
    p = decide("greedy", o)
    assert p.sum() == pytest.approx(25e3 - CFG.limit_margin_w, rel=1e-6)
    assert p[1] == pytest.approx(20e3)  # departs first
    o = _obs([45e3] * 3, [75e3] * 3, [3 * 3600] * 3)
    assert np.allclose(decide("greedy", o), 20e3)


def test_balanced_spreads_each_need_over_its_standing_time():
    # 30 kWh in 10 h -> 3 kW; 10 kWh in 2 h -> 5 kW; 40 kWh in 1 h -> capped at 20 kW
    o = _obs([45e3, 65e3, 35e3], [75e3] * 3, [10 * 3600, 2 * 3600, 1 * 3600])
    assert np.allclose(decide("balanced", o), [3e3, 5e3, 20e3])


def test_peak_shaving_is_the_lowest_flat_power_that_keeps_every_departure():
    # needs 10, 10, 40 kWh by 2, 4, 10 h (+ the two-interval margin of 600 s):
    # bound = max(10/1.833, 20/3.833, 60/9.833) kW = 6.10 kW
    o = _obs([65e3, 65e3, 35e3], [75e3] * 3, [2 * 3600, 4 * 3600, 10 * 3600])
    p = decide("peak_shaving", o)
    want = max(10 / (2 - 1 / 6), 20 / (4 - 1 / 6), 60 / (10 - 1 / 6)) * 1e3
    assert p.sum() == pytest.approx(want, rel=1e-9)
    assert p[0] == pytest.approx(want)  # all of it to the earliest departure
    assert fleet_power_w(np.array([10e3, 10e3]), np.array([3600.0, 7200.0])) == pytest.approx(10e3)


def test_no_strategy_charges_beyond_the_departure_target():
    o = _obs([75e3, 70e3], [75e3, 75e3], [3600.0, 3600.0])
    for name in ("greedy", "balanced", "peak_shaving"):
        p = decide(name, o)
        assert p[0] == 0.0
        # 5 kWh left: at most what fills it within one 300 s interval
        assert p[1] <= 5e3 * 3600 / 300 + 1e-9
