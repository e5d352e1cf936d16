"""EV model: catalog, charger limits, taper, V2X, driving energy, shortfall."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.core.errors import ScenarioError
from cps_sim.models import ev_physics as ev


@pytest.fixture(scope="module")
def catalog():
    return ev.load_catalog()


def test_catalog_has_the_classes(catalog):
    caps = {k: m.capacity_kwh for k, m in catalog.items()}
    assert caps["kei_ev_20kwh"] == 20.0
    assert caps["compact_40kwh"] == 40.0
    assert caps["mid_60kwh"] == 60.0
    assert caps["suv_80kwh"] == 80.0
    assert {"light_van_20kwh", "light_truck_80kwh"} <= set(caps)
    for m in catalog.values():
        assert m.source.startswith("assumption")


def test_catalog_errors_name_file_and_field(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "name: x\nsegment: s\ncapacity_kwh: -5\nconsumption_kwh_per_100km: 15\n"
        "ac_max_kw: 6\ndc_max_kw: 50\nv2x: none\nv2x_max_kw: 0\n"
    )
    with pytest.raises(ScenarioError, match=r"bad.yaml: capacity_kwh: must be > 0, got -5"):
        ev.load_catalog(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: x\ncapacity_kwhh: 5\n")
    with pytest.raises(ScenarioError, match="capacity_kwhh: unknown field"):
        ev.load_catalog(tmp_path)


def test_ac_charge_limited_by_onboard_charger(catalog):
    spec = ev.ev_spec(catalog, ["compact_40kwh"])
    s = ev.plug_in(ev.initial_state(spec, 0.2), [True], charger_max_w=7400.0)  # 7.4 kW EVSE
    s1, f = ev.step(s, spec, 22_000.0, 3600.0)
    # on-board 6 kW < EVSE 7.4 kW: 6 kW for 1 h, 6 kWh in, 0.9 * 6 = 5.4 kWh stored
    assert f.power_w[0] == pytest.approx(6000.0)
    assert f.unmet_w[0] == pytest.approx(16_000.0)
    assert f.stored_change_wh[0] == pytest.approx(5400.0)
    assert f.loss_wh[0] == pytest.approx(600.0)
    assert s1.energy_wh[0] == pytest.approx(8000.0 + 5400.0)


def test_dc_fast_charge_tapers_above_80(catalog):
    spec = ev.ev_spec(catalog, ["compact_40kwh"])
    s = ev.plug_in(ev.initial_state(spec, 0.5), [True], charger_max_w=50_000.0, dc=True)
    _, f = ev.step(s, spec, 50_000.0, 1800.0)
    # CC 50 kW (47 kW stored) from 20 to 32 kWh takes 12/47 h = 15.3 min; then the tail
    # E = 40 - 8 exp(-(0.5 - 12/47) / tau), tau = 8 kWh / 47 kW = 0.1702 h -> 37.7 kWh
    t1 = 12 / 47
    e_end = 40 - 8 * np.exp(-(0.5 - t1) / (8 / 47))
    assert 20.0 + f.stored_change_wh[0] / 1000 == pytest.approx(e_end, rel=1e-9)
    assert f.power_w[0] < 50_000.0


def test_unplugged_and_v2x_limits(catalog):
    spec = ev.ev_spec(catalog, ["kei_ev_20kwh", "light_van_20kwh", "mid_60kwh"])
    s = ev.initial_state(spec, 0.8)
    _, f = ev.step(s, spec, 3000.0, 900.0)
    np.testing.assert_array_equal(f.power_w, 0.0)  # nobody plugged in
    s = ev.plug_in(s, [True, True, True], charger_max_w=6000.0, charger_v2x_w=6000.0)
    lo, _ = ev.feasible_power_w(spec, s, 900.0)
    # kei V2H 6 kW; van has no V2X; mid V2G 10 kW limited by the 6 kW charger
    np.testing.assert_allclose(lo, [-6000.0, 0.0, -6000.0])


def test_v2h_stops_at_reserve(catalog):
    spec = ev.ev_spec(catalog, ["kei_ev_20kwh"], soc_min=0.3)
    s = ev.plug_in(ev.initial_state(spec, 0.4), [True], 6000.0, charger_v2x_w=6000.0)
    s1, f = ev.step(s, spec, -6000.0, 3600.0)
    # 10 % of 20 kWh above the reserve = 2 kWh stored -> 1.8 kWh delivered at 90 %
    assert f.energy_in_wh[0] == pytest.approx(-1800.0)
    assert s1.soc(spec)[0] == pytest.approx(0.3)


def test_trip_energy_and_temperature(catalog):
    spec = ev.ev_spec(catalog, ["compact_40kwh"])
    # 40 km at 150 Wh/km at 20 degC = 6 kWh
    assert ev.trip_energy_wh(spec, 40.0, 20.0)[0] == pytest.approx(6000.0)
    # at -5 degC: 1 + 0.025 * 20 = 1.5 -> 9 kWh
    assert ev.trip_energy_wh(spec, 40.0, -5.0)[0] == pytest.approx(9000.0)
    # at 35 degC: 1 + 0.015 * 10 = 1.15
    assert ev.consumption_factor(35.0) == pytest.approx(1.15)


def test_drive_shortfall_and_departure(catalog):
    spec = ev.ev_spec(catalog, ["kei_ev_20kwh"])
    s = ev.initial_state(spec, 0.25)  # 5 kWh
    s1, d = ev.drive(s, spec, 60.0)  # 60 km x 125 Wh/km = 7.5 kWh needed
    assert d.energy_wh[0] == pytest.approx(5000.0)
    assert d.shortfall_wh[0] == pytest.approx(2500.0)
    assert s1.energy_wh[0] == 0.0
    assert ev.departure_shortfall_wh(spec, s, 0.8)[0] == pytest.approx(11_000.0)


def test_one_vehicle_matches_population_of_10000(catalog):
    one = ev.ev_spec(catalog, ["suv_80kwh"])
    many = ev.ev_spec(catalog, ["suv_80kwh"] * 10_000)
    s1 = ev.plug_in(ev.initial_state(one, 0.7), True, 50_000.0, dc=True)
    sn = ev.plug_in(ev.initial_state(many, 0.7), True, 50_000.0, dc=True)
    a, _ = ev.step(s1, one, 50_000.0, 900.0)
    b, _ = ev.step(sn, many, 50_000.0, 900.0)
    assert np.all(b.energy_wh == a.energy_wh[0])


@settings(max_examples=60, deadline=None)
@given(
    reqs=st.lists(st.floats(-30_000, 150_000), min_size=1, max_size=15),
    soc0=st.floats(0.0, 1.0),
    dc=st.booleans(),
    charger=st.floats(0.0, 150_000),
    dt_s=st.sampled_from([1.0, 60.0, 900.0, 3600.0]),
)
def test_property_conservation_bounds_feasible(catalog, reqs, soc0, dc, charger, dt_s):
    spec = ev.ev_spec(catalog, ["mid_60kwh"])
    s = ev.plug_in(ev.initial_state(spec, soc0), True, charger, dc=dc, charger_v2x_w=charger)
    for p in reqs:
        lo, hi = ev.feasible_power_w(spec, s, dt_s)
        s_next, f = ev.step(s, spec, p, dt_s)
        np.testing.assert_allclose(f.energy_in_wh, f.stored_change_wh + f.loss_wh, atol=1e-6)
        assert f.loss_wh[0] >= -1e-9
        assert -1e-6 <= s_next.energy_wh[0] <= spec.capacity_wh[0] + 1e-6
        # the feasible range is actually holdable
        _, fh = ev.step(s, spec, hi, dt_s)
        _, fl = ev.step(s, spec, lo, dt_s)
        assert abs(fh.unmet_w[0]) <= 1e-6 * max(1.0, hi[0])
        assert abs(fl.unmet_w[0]) <= 1e-6 * max(1.0, -lo[0])
        s = s_next
