"""Plants and merit-order dispatch: hand cases, carbon price, ramps, storage, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.grid import dispatch as dp
from cps_sim.models import battery as bat
from cps_sim.models import plants as pl

GW = 1e9


def fleet():
    return pl.plant_fleet(
        [
            {"technology": "nuclear", "capacity_w": 1 * GW},
            {"technology": "coal", "capacity_w": 2 * GW},
            {"technology": "gas_ccgt", "capacity_w": 2 * GW},
            {"technology": "gas_ocgt", "capacity_w": 1 * GW},
        ]
    )


def tick(demand, renewable, **kw):
    return dp.dispatch_tick(fleet(), None, demand, renewable, 3600.0, **kw)[0]


def test_marginal_cost_with_carbon_price():
    f = fleet()
    # coal 5 + 820 g x 10,000 JPY/t / 1e6 = 13.2 JPY/kWh
    np.testing.assert_allclose(pl.marginal_cost_jpy_per_kwh(f, 10_000.0)[1], 13.2)
    assert pl.TECHNOLOGIES["gas_ccgt"].co2_g_per_kwh == 490.0  # IPCC AR5 median


def test_merit_order_with_minimum_load_hand_computed():
    r = tick(4 * GW, 0.5 * GW)
    # residual 3.5 GW: nuclear 1 (must-run) + coal 2 + CCGT 0.5 -> CCGT minimum is
    # 40 % of 2 GW = 0.8 GW, so CCGT 0.8 and coal backs off to 1.7
    np.testing.assert_allclose(r.plant_generation_w, [1 * GW, 1.7 * GW, 0.8 * GW, 0.0])
    # 1 h: CO2 = 1e6 kWh x 12 + 1.7e6 x 820 + 0.8e6 x 490 = 1.798e9 g
    assert r.co2_g == pytest.approx(1e6 * 12 + 1.7e6 * 820 + 0.8e6 * 490)
    # cost = 1e6 x 1.5 + 1.7e6 x 5 + 0.8e6 x 9.5 = 17.6e6 JPY
    assert r.cost_jpy == pytest.approx(17.6e6)
    assert r.co2_intensity_g_per_kwh == pytest.approx(r.co2_g / 4e6)
    assert abs(r.balance_error_w) < 1e-3


def test_carbon_price_switches_coal_and_gas():
    # 20,000 JPY/t: coal 5 + 16.4 = 21.4 > CCGT 9.5 + 9.8 = 19.3 JPY/kWh
    r = tick(3 * GW, 0.0, carbon_price_jpy_per_t_co2=20_000.0)
    np.testing.assert_allclose(r.plant_generation_w, [1 * GW, 0.0, 2 * GW, 0.0])


def test_surplus_storage_export_curtail_and_overgeneration():
    sspec = pl.pumped_hydro_spec(1, 0.5 * GW, 4 * 0.5 * GW)
    sstate = pl.grid_storage([("pumped_hydro", sspec, 0.0)])
    r, s1 = dp.dispatch_tick(
        fleet(), None, 1 * GW, 3 * GW, 3600.0, sstate, export_capacity_w=0.5 * GW
    )
    # surplus 3 GW (nuclear 1 + RE 3 - demand 1): pump 0.5, export 0.5, curtail 2
    assert r.storage_power_w == pytest.approx(0.5 * GW)
    assert r.export_w == pytest.approx(0.5 * GW)
    assert r.curtailment_w == pytest.approx(2 * GW)
    assert r.overgeneration_w == 0.0
    # pumping 0.5 GWh at sqrt(0.75) stores 0.433 GWh
    assert s1.energy_wh[0] == pytest.approx(0.5e9 * np.sqrt(0.75))
    r = tick(0.5 * GW, 0.0)
    assert r.overgeneration_w == pytest.approx(0.5 * GW)  # must-run nuclear above demand


def test_unserved_when_short():
    r = tick(7.5 * GW, 0.0)
    assert r.unserved_w == pytest.approx(1.5 * GW)
    assert abs(r.balance_error_w) < 1e-3


def test_storage_discharges_before_plants_unless_priced():
    sspec = pl.grid_battery_spec(1, 0.2 * GW, 0.8 * GW)
    s0 = pl.grid_storage([("battery", sspec, 0.5)])
    r, _ = dp.dispatch_tick(fleet(), None, 2 * GW, 0.0, 900.0, s0)
    assert r.storage_power_w == pytest.approx(-0.2 * GW)
    np.testing.assert_allclose(r.plant_generation_w[:2], [1 * GW, 0.8 * GW])
    r, _ = dp.dispatch_tick(
        fleet(), None, 2 * GW, 0.0, 900.0, s0, storage_discharge_cost_jpy_per_kwh=12.0
    )
    assert r.storage_power_w == 0.0  # coal at 5 JPY/kWh is cheaper than the 12 threshold


def test_ramp_limits_from_previous_tick():
    f = fleet()
    lo, hi, smin = pl.output_bounds_w(f, [1 * GW, 1.8 * GW, 0.8 * GW, 0.0], 900.0)
    # CCGT 3 %/min x 2 GW = 1 MW/s; 900 s -> +/-0.9 GW: hi 1.7 GW, may shut down (lo 0)
    assert hi[2] == pytest.approx(1.7 * GW)
    assert lo[2] == 0.0 and smin[2] == pytest.approx(0.8 * GW)
    # coal 1.5 %/min x 2 GW = 0.5 MW/s; 900 s -> 0.45 GW: 1.8 -> [1.35, 2.0] GW
    assert lo[1] == pytest.approx(1.35 * GW) and hi[1] == pytest.approx(2.0 * GW)
    # from 1.0 GW coal can reach its 0.8 GW minimum within the tick, so it may shut down
    lo, _, smin = pl.output_bounds_w(f, [1 * GW, 1 * GW, 0.0, 0.0], 900.0)
    assert lo[1] == 0.0 and smin[1] == pytest.approx(0.8 * GW)
    res, _ = dp.dispatch_series(
        f, [2 * GW, 5.5 * GW], [0.0, 0.0], 900.0, initial_output_w=[1 * GW, 1 * GW, 0.0, 0.0]
    )
    # tick 2 wants 4.5 GW from fossil but coal can reach only 1.45 + 0.45 = 1.9 etc.
    g = res.plant_generation_w
    assert np.all(np.abs(np.diff(g[:, 1])) <= 0.45 * GW + 1)
    np.testing.assert_allclose(res.balance_error_w, 0.0, atol=1e-3)


def test_vectorised_series_matches_tick_loop():
    rng = np.random.default_rng(1)
    demand = rng.uniform(0, 7 * GW, 200)
    renew = rng.uniform(0, 3 * GW, 200)
    vec, _ = dp.dispatch_series(
        fleet(), demand, renew, 900.0, ramp_limits=False, export_capacity_w=0.3 * GW
    )
    for k in (0, 57, 199):
        r, _ = dp.dispatch_tick(
            fleet(), None, demand[k], renew[k], 900.0, export_capacity_w=0.3 * GW
        )
        np.testing.assert_allclose(vec.plant_generation_w[k], r.plant_generation_w)
        assert vec.curtailment_w[k] == pytest.approx(r.curtailment_w)
    np.testing.assert_allclose(vec.balance_error_w, 0.0, atol=1e-3)


def test_one_plant_equals_10000_small_identical_plants():
    one = pl.plant_fleet([{"technology": "coal", "capacity_w": 2 * GW}])
    many = pl.plant_fleet([{"technology": "coal", "capacity_w": 2 * GW / 10_000}] * 10_000)
    # above the big unit's 0.8 GW minimum (below it granularity legitimately differs)
    for d in (0.8 * GW, 1.234 * GW, 2.5 * GW):
        a, _ = dp.dispatch_tick(one, None, d, 0.0, 900.0)
        b, _ = dp.dispatch_tick(many, None, d, 0.0, 900.0)
        assert b.plant_generation_w.sum() == pytest.approx(a.plant_generation_w.sum())
        assert b.unserved_w == pytest.approx(a.unserved_w)


def test_pumped_hydro_round_trip():
    s = pl.pumped_hydro_spec(1, 100e6, 800e6)
    st1, f1 = bat.step(s, bat.initial_energy_wh(s, 0.0), 100e6, 3600.0)
    _, f2 = bat.step(s, st1, -200e6, 3600.0)
    # 100 MWh pumped at 75 % round trip -> 75 MWh back
    assert -f2.energy_in_wh[0] == pytest.approx(0.75 * f1.energy_in_wh[0])


@settings(max_examples=40, deadline=None)
@given(
    demand=st.lists(st.floats(0, 8e9), min_size=2, max_size=12),
    renew_frac=st.floats(0, 1.5),
    soc0=st.floats(0.05, 0.95),
    export=st.floats(0, 1e9),
    price=st.floats(0, 30_000),
)
def test_property_balance_bounds_with_storage_and_ramps(demand, renew_frac, soc0, export, price):
    f = fleet()
    sspec = pl.grid_battery_spec(2, [0.3 * GW, 0.1 * GW], [1.2 * GW, 0.4 * GW])
    s0 = pl.grid_storage([("battery", sspec, soc0)])
    d = np.array(demand)
    renew = d * renew_frac
    res, s1 = dp.dispatch_series(
        f,
        d,
        renew,
        900.0,
        s0,
        export_capacity_w=export,
        carbon_price_jpy_per_t_co2=price,
        initial_output_w=[1 * GW, 1 * GW, 0.0, 0.0],
    )
    np.testing.assert_allclose(res.balance_error_w, 0.0, atol=1e-2)
    g = res.plant_generation_w
    assert np.all(g >= -1e-6) and np.all(g <= f.available_w + 1e-6)
    for a in (res.export_w, res.curtailment_w, res.unserved_w, res.overgeneration_w):
        assert np.all(a >= -1e-6)
    assert np.all(res.curtailment_w <= renew + 1e-6)
    assert np.all(s1.energy_wh <= sspec.soc_max * s1.spec.capacity_wh + 1e-3)
    # self-discharge may take a pack parked at soc_min slightly below it (1 %/month)
    assert np.all(s1.energy_wh >= sspec.soc_min * s1.spec.capacity_wh * (1 - 1e-4))
    # a running plant never goes below its minimum stable load
    on = g > 1.0
    assert np.all(g[on] >= np.broadcast_to(f.min_stable_w, g.shape)[on] - 1e-3)


@settings(max_examples=40, deadline=None)
@given(d=st.floats(0, 9e9), extra=st.floats(0, 2))
def test_property_more_capacity_never_more_unserved(d, extra):
    base = fleet()
    big = pl.plant_fleet(
        [
            {"technology": "nuclear", "capacity_w": 1 * GW},
            {"technology": "coal", "capacity_w": 2 * GW * (1 + extra)},
            {"technology": "gas_ccgt", "capacity_w": 2 * GW},
            {"technology": "gas_ocgt", "capacity_w": 1 * GW},
        ]
    )
    a, _ = dp.dispatch_tick(base, None, d, 0.0, 900.0)
    b, _ = dp.dispatch_tick(big, None, d, 0.0, 900.0)
    assert b.unserved_w <= a.unserved_w + 1e-6
