"""Research-grade physics inside the engine: weather, PV, load archetypes (issue 4)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cps_sim.experiment.run import simulate
from cps_sim.world.build import build_world
from cps_sim.world.group import FLOWS
from tests.conftest import scenario


def _total(rec, flow: str) -> float:
    return float(rec.flows[: rec.ticks_done, FLOWS.index(flow)].sum())


@pytest.mark.parametrize(
    "profile",
    ["japan_residential", "bdew_h25", "office", "hospital", "retail", "factory", "data_centre"],
)
def test_every_load_profile_scales_to_its_annual_energy(profile):
    # 5 homes × 2,000 kWh over one calendar year = 10,000 kWh, whatever the shape.
    sc = scenario(
        [
            {
                "name": "s",
                "count": 5,
                "load": {
                    "annual_kwh": 2000.0,
                    "profile": profile,
                    "noise_cv": 0.0,
                    "shift_max_s": 0.0,
                },
            }
        ],
        start="2026-01-01T00:00:00+09:00",
        duration_days=365,
        tick_s=3600,
        weather={"source": "constant"},
    )
    rec = simulate(sc)
    assert _total(rec, "load_wh") == pytest.approx(10_000_000.0, rel=1e-6)


def test_office_load_follows_business_hours():
    sc = scenario(
        [
            {
                "name": "o",
                "count": 1,
                "load": {
                    "annual_kwh": 100_000.0,
                    "profile": "office",
                    "noise_cv": 0.0,
                    "shift_max_s": 0.0,
                },
            }
        ],
        duration_days=7,
        tick_s=3600,
        weather={"source": "constant"},
    )
    rec = simulate(sc)
    load = rec.flows[: rec.ticks_done, FLOWS.index("load_wh")]
    # 2026-04-06 is a Monday: 11:00 Monday well above 03:00 Monday and 11:00 Sunday.
    assert load[11] > 1.5 * load[3]
    assert load[11] > 1.5 * load[6 * 24 + 11]


def test_pvwatts_pv_in_the_engine_matches_the_model_directly():
    # One 5 kW system, south, 30°: the engine's PV energy equals models/solar.py on the
    # run's own weather (tick means), i.e. nothing is lost or double-counted on the way.
    from cps_sim.models import solar

    site = {
        "name": "h",
        "count": 1,
        "load": {"annual_kwh": 1.0, "profile": "constant", "noise_cv": 0.0},
        "pv": {"capacity_kw": 5.0, "tilt_deg": 30, "azimuth_deg": 180, "dc_ac_ratio": 1.2},
    }
    sc = scenario([site], duration_days=10)
    rec = simulate(sc)
    world = build_world(sc)
    frame = world.weather.frame
    frame.attrs.update(latitude_deg=35.68, longitude_deg=139.77, altitude_m=40.0)
    direct = solar.pv_ac_power_w(frame, [30.0], [180.0], [5000.0], [5000.0 / 1.2])[:, 0]
    direct_wh = direct.sum() * (frame.attrs["interval_s"] / 3600.0)  # one value per row
    assert _total(rec, "pv_generation_wh") == pytest.approx(direct_wh, rel=1e-9)
    assert direct_wh > 5 * 10 * 1000  # > 1 kWh/kWp/day over 10 April days in Tokyo
    assert np.max(direct) <= 5000.0 / 1.2 + 1e-9  # clipped at the inverter


def test_more_pv_capacity_never_means_less_generation():
    out = []
    for cap in (2.0, 4.0, 8.0):
        sc = scenario([{"name": "h", "count": 3, "pv": {"capacity_kw": cap}}], duration_days=3)
        out.append(_total(simulate(sc), "pv_potential_wh"))
    assert out[0] < out[1] < out[2]


def test_cloudier_weather_gives_less_pv():
    def pv(scale):
        sc = scenario(
            [{"name": "h", "count": 2, "pv": {"capacity_kw": 4.0}}],
            duration_days=20,
            weather={"source": "synthetic", "clear_sky_index_scale": scale},
        )
        return _total(simulate(sc), "pv_potential_wh")

    assert pv(0.6) < pv(1.0)


def test_weather_file_outside_the_scenario_folder_is_refused(tmp_path):
    from cps_sim.core.errors import ScenarioError

    sc = scenario(
        [{"name": "h", "count": 1}], weather={"source": "csv", "file": "../../etc/passwd"}
    )
    with pytest.raises(ScenarioError, match="outside the scenario folder"):
        build_world(sc, base_dir=tmp_path)


def test_csv_weather_is_interpolated_to_the_run(tmp_path):
    # Hourly CSV with a constant 500 W/m² GHI: every tick of the run sees 500 W/m².
    import pandas as pd

    idx = pd.date_range("2026-04-05", periods=24 * 4, freq="1h", tz="Asia/Tokyo")
    pd.DataFrame(
        {
            "timestamp": idx.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ghi_w_m2": 500.0,
            "dni_w_m2": 0.0,
            "dhi_w_m2": 500.0,
            "temp_air_c": 12.0,
            "wind_speed_m_s": 3.0,
        }
    ).to_csv(tmp_path / "w.csv", index=False)
    sc = scenario([{"name": "h", "count": 1}], weather={"source": "csv", "file": "w.csv"})
    world = build_world(sc, base_dir=tmp_path)
    assert np.allclose(world.weather.ghi_w_m2, 500.0)
    assert np.allclose(world.weather.temp_air_c, 12.0)


def _hp_run(control: str):
    site = {
        "name": "h",
        "count": 20,
        "pv": {"capacity_kw": 5.0},
        "heat_pump_water_heater": {"control": control},
    }
    sc = scenario([site], duration_days=5)
    rec = simulate(sc)
    return rec, rec.kpis(rec.events())


def test_heat_pump_water_heater_meets_draws_and_surplus_rule_uses_pv():
    night, kn = _hp_run("night")
    _, ks = _hp_run("surplus")
    for k in (kn, ks):
        assert k["hot_water_unmet_kwh_th"] == 0.0
        assert k["hot_water_delivered_kwh_th"] > 0
        assert abs(k["balance_residual_wh"]) < 1e-3
        assert 1.0 <= k["hpwh_cop_mean"] <= 6.0
    # Heating on daytime surplus raises PV self-consumption and (warmer air) the COP.
    assert ks["self_consumption"] > kn["self_consumption"]
    assert ks["hpwh_cop_mean"] > kn["hpwh_cop_mean"]
    hp_night = night.extra["heat_pump_w"][: night.ticks_done]
    hours = (np.arange(night.ticks_done) % 96) / 4.0
    # the night rule never heats in daytime unless the reserve is hit
    assert hp_night[(hours >= 9) & (hours < 16)].sum() < 0.05 * hp_night.sum()


def test_ev_fleet_mix_from_the_catalog_and_cold_weather_costs_range():
    from cps_sim.world.build import build_world

    ev = {"per_site": 1, "models": {"kei_ev_20kwh": 1.0}}
    w = build_world(scenario([{"name": "h", "count": 50, "ev": ev}]))
    evs = w.groups[0].evs
    # kei_ev_20kwh: 20 kWh, its AC limit caps the 6 kW default charger (catalog values)
    from cps_sim.models.ev_physics import load_catalog

    kei = load_catalog()["kei_ev_20kwh"]
    assert np.all(evs.capacity_wh == kei.capacity_kwh * 1000)
    assert np.all(evs.charger_w == min(6.0, kei.ac_max_kw) * 1000)
    assert np.all(evs.consumption_wh_per_km == kei.consumption_kwh_per_100km * 10)

    def driving(temp_c: float, dependent: bool) -> float:
        sc = scenario(
            [
                {
                    "name": "h",
                    "count": 20,
                    "load": {"profile": "constant"},
                    "ev": {"per_site": 1, "temperature_dependent_consumption": dependent},
                }
            ],
            duration_days=3,
            weather={"source": "constant", "constant_temp_c": temp_c},
        )
        rec = simulate(sc)
        return _total(rec, "ev_driving_wh") + _total(rec, "ev_trip_shortfall_wh")

    assert driving(-5.0, True) > 1.2 * driving(-5.0, False)
    assert driving(20.0, True) == pytest.approx(driving(20.0, False))


def test_unknown_vehicle_class_names_path_and_catalog(tmp_path):
    from cps_sim.core.errors import ScenarioError
    from cps_sim.world.build import build_world

    sc = scenario([{"name": "h", "count": 2, "ev": {"models": {"tesla": 1.0}}}])
    with pytest.raises(
        ScenarioError,
        match=r"sites\[0\]\.ev\.models: unknown vehicle class "
        r"'tesla'; the catalog has: compact_40kwh",
    ):
        build_world(sc)


def test_battery_ageing_lowers_capacity_and_keeps_the_ledger_closed():
    site = {
        "name": "h",
        "count": 10,
        "pv": {"capacity_kw": 6.0},
        "battery": {"capacity_kwh": 10, "ageing": True, "initial_soc": 1.0, "soc_max": 1.0},
    }
    sc = scenario([site], duration_days=60, tick_s=3600)
    checks = []

    def on_tick(world, r):
        assert abs(r.residual_wh) < 1e-6
        checks.append(float(world.groups[0].battery.capacity_wh.sum()))

    rec = simulate(sc, on_tick=on_tick)
    k = rec.kpis(rec.events())
    assert 0.97 < k["battery_soh_mean"] < 1.0  # a few tenths of a percent per month
    assert checks[-1] < checks[0]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(checks))  # never grows
    assert abs(k["balance_residual_wh"]) < 1e-3


@pytest.mark.parametrize("tick_s", [300, 900])
@pytest.mark.parametrize("fleet", ["scenario", "catalog"])
def test_engine_ev_charging_is_the_models_cc_cv_law_exactly(tick_s, fleet):
    # One EV charging from 70 % with a taper from 80 %: every tick's engine energy is
    # the EV model's own step (models.ev_physics.step) over the same tick, exactly.
    ev = {
        "per_site": 1,
        "initial_soc": 0.7,
        "charger_kw": 6,
        "trips": {"weekday": {"probability": 0.0}, "weekend": {"probability": 0.0}},
    }
    if fleet == "scenario":
        ev.update(capacity_kwh=40, charge_efficiency=0.9, taper_soc=0.8)
    else:  # a catalog class: its own taper (0.8) along the pack's 50 kW DC line
        ev.update(models={"compact_40kwh": 1.0})
    sc = scenario(
        [{"name": "h", "count": 1, "load": {"profile": "constant"}, "ev": ev}],
        duration_days=1,
        tick_s=tick_s,
        weather={"source": "constant"},
    )
    rec = simulate(sc)
    got = rec.flows[:, FLOWS.index("ev_charging_wh")]
    from cps_sim.models import ev_physics as evm

    if fleet == "scenario":
        spec = evm.EVSpec(
            *(
                np.array([v])
                for v in (40_000.0, 150.0, 6000.0, 6000.0, 0.0, 0.9, 0.9, 0.9, 0.8, 0.0, 1.0)
            )
        )
    else:
        spec = evm.ev_spec(evm.load_catalog(), ["compact_40kwh"], soc_min=0.0)
    state = evm.plug_in(evm.initial_state(spec, 0.7), [True], 6000.0)
    want = []
    for _ in range(sc.n_ticks):
        state, f = evm.step(state, spec, 6000.0, float(tick_s))
        want.append(f.energy_in_wh[0])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    # the taper bites: slower than 6 kW near full, and the pack never passes soc_max
    assert got.sum() <= 12_000.0 / 0.9 + 1e-6  # 30 % of 40 kWh at 90 %: never more
    assert (got[1:] <= got[:-1] + 1e-9).all()


def test_ev_cc_cv_taper_is_independent_of_the_tick():
    def charged(tick_s: int, hours: float) -> float:
        sc = scenario(
            [
                {
                    "name": "h",
                    "count": 1,
                    "load": {"profile": "constant"},
                    "ev": {
                        "per_site": 1,
                        "capacity_kwh": 40,
                        "initial_soc": 0.7,
                        "charger_kw": 6,
                        "charge_efficiency": 1.0,
                        "taper_soc": 0.8,
                        "trips": {"weekday": {"probability": 0.0}, "weekend": {"probability": 0.0}},
                    },
                }
            ],
            duration_days=1,
            tick_s=tick_s,
            weather={"source": "constant"},
        )
        rec = simulate(sc)
        n = int(hours * 3600 / tick_s)
        return float(rec.flows[:n, FLOWS.index("ev_charging_wh")].sum())

    # full power to 80 % (4 kWh, 40 min), then the exact exponential tail: tau = 8/6 h
    t1 = 4.0 / 6.0
    tail = 8000.0 * (1.0 - np.exp(-(3.0 - t1) / (8.0 / 6.0)))
    assert charged(900, 3.0) == pytest.approx(4000.0 + tail, rel=1e-12)
    assert charged(60, 3.0) == pytest.approx(4000.0 + tail, rel=1e-12)


def test_battery_self_discharge_is_a_logged_loss():
    # 10 kWh at full, idle (no PV, control idle): 2 %/month ≈ 0.0667 %/day lost.
    site = {
        "name": "h",
        "count": 1,
        "load": {"profile": "constant"},
        "battery": {
            "capacity_kwh": 10,
            "initial_soc": 1.0,
            "control": "idle",
            "self_discharge_per_month": 0.02,
        },
    }
    rec = simulate(scenario([site], duration_days=30, tick_s=3600, weather={"source": "constant"}))
    k = rec.kpis(rec.events())
    assert k["battery_loss_kwh"] == pytest.approx(10 * 0.02, rel=1e-6)
    assert abs(k["balance_residual_wh"]) < 1e-6


def test_gx_carbon_price_timeline_prices_each_tick_by_fiscal_year():
    # Import 1 kW for a day around the FY2027/FY2028 boundary (1 April 2028, JST):
    # FY2027 = ETS only 1,000 + 250 = 1,250 JPY/t; FY2028 adds the levy 300 → 1,800 JPY/t.
    site = {
        "name": "h",
        "count": 1,
        "load": {"annual_kwh": 8760, "profile": "constant", "noise_cv": 0.0},
    }
    sc = scenario(
        [site],
        start="2028-03-31T12:00:00+09:00",
        duration_days=1,
        tick_s=3600,
        weather={"source": "constant"},
        emissions={"grid_co2_g_per_kwh": 500, "carbon_price": "gx_timeline"},
    )
    rec = simulate(sc)
    price = rec.world.carbon_price_jpy_per_t
    assert set(price[:12]) == {1250.0} and set(price[12:]) == {1800.0}
    k = rec.kpis(rec.events())
    # 24 kWh × 0.5 kg/kWh = 12 kg: 6 kg at 1,250 and 6 kg at 1,800 JPY/t
    assert k["co2_kg"] == pytest.approx(12.0)
    assert k["carbon_cost_jpy"] == pytest.approx(0.006 * 1250 + 0.006 * 1800)


def _jobs(**dspec):
    site = {
        "name": "f",
        "count": 3,
        "load": {"annual_kwh": 8760.0, "profile": "constant", "noise_cv": 0.0},
        "deferrable": {
            "energy_kwh": 20.0,
            "power_kw": 10.0,
            "window_start_h": 6.5,
            "deadline_h": 22.0,
            "days": "all",
            **dspec,
        },
    }
    return scenario([site], duration_days=2, tick_s=900, weather={"source": "constant"})


def test_deferrable_process_delivers_its_energy_from_the_exact_window_start():
    # 20 kWh at 10 kW from 06:30: 2 h, i.e. 06:30–08:30; the 06:30 tick boundary is
    # exact, so 06:30–06:45 carries 2.5 kWh per site and 08:30 onwards nothing.
    checks = []
    rec = simulate(_jobs(), on_tick=lambda w, r: checks.append(abs(r.residual_wh) < 1e-6))
    assert all(checks)
    col = rec.flows[: rec.ticks_done, FLOWS.index("deferrable_wh")]
    k = rec.kpis(rec.events())
    assert k["deferrable_kwh"] == pytest.approx(2 * 3 * 20.0)
    assert k["deferrable_unmet_kwh"] == 0.0
    assert col[26] == pytest.approx(3 * 2500.0)  # 06:30–06:45
    assert col[25] == 0.0 and col[34] == 0.0  # before the window, after it is done
    assert col[26:34].sum() == pytest.approx(3 * 20_000.0)


def test_deferrable_energy_not_delivered_by_the_deadline_is_reported():
    # 20 kWh at 2 kW in a 6 h window: 12 kWh delivered, 8 kWh unmet per site and day.
    rec = simulate(_jobs(power_kw=2.0, window_start_h=10.0, deadline_h=16.0))
    k = rec.kpis(rec.events())
    assert k["deferrable_kwh"] == pytest.approx(2 * 3 * 12.0)
    assert k["deferrable_unmet_kwh"] == pytest.approx(2 * 3 * 8.0)


def test_fems_shifts_the_deferrable_process_into_pv_surplus_and_meets_the_deadline():
    # A factory with 60 kW PV and a 300 kWh/day process (60 kW rated, window 06–22 h):
    # uncontrolled it runs 06:00–11:00 (mostly before the sun peaks); the FEMS follows
    # the surplus and still finishes by 22:00.
    def run(with_fems: bool):
        site = {
            "name": "f",
            "count": 1,
            "kind": "factory",
            "load": {"annual_kwh": 100_000.0, "profile": "factory"},
            "pv": {"capacity_kw": 60.0, "tilt_deg": 20, "azimuth_deg": 180},
            "deferrable": {
                "energy_kwh": 300.0,
                "power_kw": 60.0,
                "window_start_h": 6.0,
                "deadline_h": 22.0,
            },
        }
        extra = {"ems": {"f": {"kind": "fems", "interval_s": 900}}} if with_fems else {}
        sc = scenario([site], duration_days=5, **extra)
        rec = simulate(sc, on_tick=lambda w, r: None)
        return rec.kpis(rec.events())

    plain, fems = run(False), run(True)
    for k in (plain, fems):
        assert k["deferrable_unmet_kwh"] == pytest.approx(0.0, abs=1e-6)
        assert abs(k["balance_residual_wh"]) < 1e-3
    assert fems["deferrable_kwh"] == pytest.approx(plain["deferrable_kwh"])
    assert fems["self_consumption"] > plain["self_consumption"]
    assert fems["grid_import_kwh"] < plain["grid_import_kwh"]


def test_load_noise_has_mean_one_and_the_scenario_cv():
    # constant 1 kW per site × (1 + cv·z): over 2,000 sites × 96 ticks, mean 1 kW, CV 0.2
    sc = scenario(
        [
            {
                "name": "h",
                "count": 2000,
                "load": {"annual_kwh": 8760.0, "profile": "constant", "noise_cv": 0.2},
            }
        ],
        duration_days=1,
        weather={"source": "constant"},
    )
    loads = build_world(sc).bindings[0].loads
    rows = np.stack([loads.tick(k) for k in range(96)])
    assert rows.mean() == pytest.approx(1000.0, rel=0.005)
    assert rows.std() / rows.mean() == pytest.approx(0.2, rel=0.02)
    assert rows.min() > 0
