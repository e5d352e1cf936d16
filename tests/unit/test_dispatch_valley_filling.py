"""Valley filling: storage charged from cheap running plants (grid/dispatch.py step 4).

Without it, grid storage in a thermal system charges only from renewable surplus, which
a 2022-like mix almost never has, so pumped hydro sat empty and added nothing at the
evening peak (issue 10 item 6).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.grid import dispatch as dp
from cps_sim.models import plants as pl

MW = 1e6


def fleet():
    return pl.plant_fleet(
        [
            {"technology": "nuclear", "capacity_w": 10 * MW},
            {"technology": "coal", "capacity_w": 50 * MW},
            {"technology": "gas_ccgt", "capacity_w": 60 * MW},
            {"technology": "oil", "capacity_w": 40 * MW},
        ]
    )


def hydro(soc: float):
    spec = pl.pumped_hydro_spec(1, 20 * MW, 160 * MW)
    return pl.grid_storage([("pumped_hydro", spec, soc)])


def test_cheap_running_plants_pump_up_to_the_storage_room_hand_computed():
    s0 = hydro(0.0)
    prev = np.array([10, 30, 0, 0]) * MW  # coal running at 30 MW, CCGT off
    # demand 40 MW: nuclear 10 + coal 30; coal has 20 MW headroom (ramp 1.5 %/min x
    # 50 MW x 15 min = 11.25 MW, so it can reach 41.25 MW): it pumps 11.25 MW
    r, s1 = dp.dispatch_tick(
        fleet(),
        prev,
        40 * MW,
        0.0,
        900.0,
        s0,
        storage_discharge_cost_jpy_per_kwh=20.0,
        storage_charge_cost_jpy_per_kwh=6.0,
    )
    np.testing.assert_allclose(r.plant_generation_w, np.array([10, 41.25, 0, 0]) * MW)
    assert r.storage_power_w == pytest.approx(11.25 * MW)
    # 11.25 MW x 0.25 h x sqrt(0.75) stored
    assert s1.energy_wh[0] == pytest.approx(11.25e6 * 0.25 * np.sqrt(0.75))
    # the pumped energy is generated coal: its CO2 and cost are in this tick
    assert r.co2_g == pytest.approx((10 * 12 + 41.25 * 820) * 1e3 * 0.25)
    assert abs(r.balance_error_w) < 1e-6 and r.unserved_w == 0 and r.overgeneration_w == 0


def test_no_pumping_from_dear_or_off_plants_or_while_discharging_or_when_full():
    s0 = hydro(0.0)
    prev = np.array([10, 50, 30, 0]) * MW  # coal full, CCGT (9.5 JPY/kWh) running
    r, _ = dp.dispatch_tick(
        fleet(),
        prev,
        90 * MW,
        0.0,
        900.0,
        s0,
        storage_discharge_cost_jpy_per_kwh=20.0,
        storage_charge_cost_jpy_per_kwh=6.0,
    )
    assert r.storage_power_w == 0.0  # only CCGT has headroom, above the 6 JPY/kWh price
    np.testing.assert_allclose(r.plant_generation_w.sum(), 90 * MW)
    # no ramp history: coal is free to 50 MW, but an off plant never starts to pump
    r, _ = dp.dispatch_tick(
        fleet(),
        None,
        10 * MW,
        0.0,
        900.0,
        s0,
        storage_discharge_cost_jpy_per_kwh=20.0,
        storage_charge_cost_jpy_per_kwh=6.0,
    )
    assert r.storage_power_w == 0.0
    # demand above coal + CCGT: storage discharges, so nothing pumps in that tick
    full = hydro(1.0)
    r, _ = dp.dispatch_tick(
        fleet(),
        None,
        130 * MW,
        0.0,
        900.0,
        full,
        storage_discharge_cost_jpy_per_kwh=20.0,
        storage_charge_cost_jpy_per_kwh=6.0,
    )
    assert r.storage_power_w == pytest.approx(-10 * MW)  # 130 - 10 - 50 - 60
    np.testing.assert_allclose(r.plant_generation_w, np.array([10, 50, 60, 0]) * MW)
    # full storage has no room
    r, _ = dp.dispatch_tick(
        fleet(),
        np.array([10, 30, 0, 0]) * MW,
        40 * MW,
        0.0,
        900.0,
        full,
        storage_discharge_cost_jpy_per_kwh=20.0,
        storage_charge_cost_jpy_per_kwh=6.0,
    )
    assert r.storage_power_w == 0.0


def test_charge_price_must_be_below_the_discharge_price():
    s0 = hydro(0.5)
    with pytest.raises(ValueError, match="must be below the discharge price"):
        dp.dispatch_tick(
            fleet(), None, 40 * MW, 0.0, 900.0, s0, storage_charge_cost_jpy_per_kwh=6.0
        )


def _day(valley: bool):
    # night 40 MW, day 100 MW, evening peak 150 MW for 3 h (above the 160 MW of plants
    # minus what is not running): hourly steps, 15-min ticks
    hours = np.array([40] * 7 + [100] * 10 + [150] * 3 + [100] * 2 + [40] * 2, dtype=float)
    demand = np.repeat(hours, 4) * MW
    s0 = hydro(0.0)
    kw = {"storage_discharge_cost_jpy_per_kwh": 20.0}
    if valley:
        kw["storage_charge_cost_jpy_per_kwh"] = 6.0
    fleet_no_oil = pl.plant_fleet(
        [
            {"technology": "nuclear", "capacity_w": 10 * MW},
            {"technology": "coal", "capacity_w": 50 * MW},
            {"technology": "gas_ccgt", "capacity_w": 60 * MW},
            {"technology": "oil", "capacity_w": 15 * MW},
        ]
    )
    return dp.dispatch_series(fleet_no_oil, demand, np.zeros_like(demand), 900.0, s0, **kw)


def test_a_day_pumped_at_night_serves_the_evening_peak():
    without, _ = _day(False)
    with_vf, s_with = _day(True)
    mwh = 0.25 / 1e6
    # without valley filling storage charges only from the odd ramp-down surplus, and
    # the morning step and the evening peak go unserved (measured ~51 MWh)
    assert without.storage_power_w.clip(min=0).sum() * mwh < 5.0
    assert without.unserved_w.sum() * mwh > 40.0
    # with it, coal pumps through the night (20 MW, the pump rating) and storage
    # covers the morning step and the peak; what is left is the first peak tick, where
    # oil can only start at its ramp limit (measured 0.81 MWh)
    assert with_vf.storage_power_w[:28] == pytest.approx(20 * MW)
    assert with_vf.unserved_w.sum() * mwh < 1.0
    assert with_vf.plant_generation_w[:, 3].sum() < without.plant_generation_w[:, 3].sum()
    assert np.abs(with_vf.balance_error_w).max() < 1e-6
    # energy: what storage delivered is at most what it took times the round trip
    took = with_vf.storage_power_w.clip(min=0).sum() * 0.25
    gave = -with_vf.storage_power_w.clip(max=0).sum() * 0.25
    stored = s_with.energy_wh[0]
    assert took * np.sqrt(0.75) == pytest.approx(gave / np.sqrt(0.75) + stored, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    demand=st.lists(st.floats(0, 170), min_size=4, max_size=24),
    renew=st.floats(0, 80),
    soc=st.floats(0, 1),
    price=st.sampled_from([4.0, 6.0, 10.0]),
)
def test_valley_filling_keeps_the_balance_and_the_soc_window(demand, renew, soc, price):
    s0 = hydro(soc)
    d = np.asarray(demand) * MW
    res, s1 = dp.dispatch_series(
        fleet(),
        d,
        np.full_like(d, renew * MW),
        900.0,
        s0,
        storage_discharge_cost_jpy_per_kwh=20.0,
        storage_charge_cost_jpy_per_kwh=price,
    )
    assert np.abs(res.balance_error_w).max() < 1e-6 * 170 * MW
    assert 0.0 <= s1.energy_wh[0] <= s1.spec.capacity_wh[0] + 1e-6
    assert (res.plant_generation_w <= fleet().available_w + 1e-6).all()
    assert (res.storage_power_w <= 20 * MW + 1e-6).all()


def test_scenario_needs_the_charge_price_below_a_discharge_price():
    from cps_sim.core.errors import ScenarioError
    from cps_sim.scenario.loader import load_scenario
    from tests.conftest import REPO

    base = REPO / "scenarios" / "demand_growth_2022_mix.yaml"
    for bad, expected in (
        (["system.storage_charge_cost_jpy_per_kwh=22"], "charge 22, discharge 21"),
        (
            ["system.storage_discharge_cost_jpy_per_kwh=null"],
            "needs storage_discharge_cost_jpy_per_kwh",
        ),
    ):
        with pytest.raises(ScenarioError, match=expected) as err:
            load_scenario(base, bad)
        assert "system" in str(err.value)
