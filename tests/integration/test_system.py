"""The bulk power system tick hook (cps_sim.grid.system) on small real worlds."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from cps_sim.core.environment import make_env
from cps_sim.experiment.recorder import Recorder
from cps_sim.grid.system import SystemHook, build_system
from cps_sim.scenario.schema import Scenario
from cps_sim.scenario.system_schema import SystemSpec
from cps_sim.world.build import build_world

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

FLEET = [
    {"technology": "nuclear", "capacity_mw": 10},
    {"technology": "coal", "capacity_mw": 50, "units": 2},
    {"technology": "gas_ccgt", "capacity_mw": 80, "units": 4},
    {"technology": "gas_ocgt", "capacity_mw": 40, "units": 4},
]


def small_scenario(days: float = 2.0, **kw) -> Scenario:
    return Scenario(
        name="sys",
        seed=kw.pop("seed", 7),
        start="2026-04-06T00:00:00+09:00",
        duration_days=days,
        sites=[
            {
                "name": "homes",
                "count": 30,
                "pv": {"share": 0.6},
                "battery": {"share": 0.3},
                "ev": {"share": 0.5},
            }
        ],
        **kw,
    )


def run(
    spec: dict | SystemSpec, scenario: Scenario | None = None
) -> tuple[SystemHook, dict[str, np.ndarray]]:
    """Build a world, append the system hook, run it; return the hook and its columns."""
    sc = scenario or small_scenario()
    spec = spec if isinstance(spec, SystemSpec) else SystemSpec(**spec)
    world = build_world(sc)
    ran = sc.with_warmup()  # what the engine runs: the built-ins have a warm-up day
    hook = build_system(ran, world, spec)
    world.tick_hooks.append(hook)
    env = make_env()
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    env.run(until=ran.duration_s + sc.tick_s * 0.5)
    assert rec.ticks_done == sc.n_ticks
    return hook, rec.extra


def close(a, b, tol=1e-6):
    return np.allclose(a, b, rtol=1e-9, atol=tol)


# --------------------------------------------------------------------------- balance


def test_energy_balance_closes_every_tick():
    spec = dict(
        utility_pv=[{"capacity_mw": 300}],
        wind=[{"n_turbines": 20}],
        plants=FLEET,
        storage=[
            {"power_mw": 30, "energy_mwh": 120},
            {"kind": "pumped_hydro", "power_mw": 20, "energy_mwh": 160},
        ],
        electrolysers=[{"power_mw": 15}],
        export_capacity_mw=10,
        data_centres={"annual_gwh": 50},
    )
    hook, c = run(spec)
    # recomputed from the columns, independently of the hook's own check
    plants = sum(c[f"system_{t}_w"] for t in ("nuclear", "coal", "gas_ccgt", "gas_ocgt"))
    supply = (
        plants
        + c["system_wind_w"]
        + c["system_utility_pv_w"]
        + c["system_site_export_w"]
        - c["system_curtailment_w"]
        - c["system_storage_w"]
        + c["system_unserved_w"]
    )
    use = (
        c["system_background_demand_w"]
        + c["system_data_centre_w"]
        + c["system_site_import_w"]
        + c["system_electrolyser_w"]
        + c["system_export_w"]
        + c["system_overgeneration_w"]
    )
    assert np.max(np.abs(supply - use)) < 1e-3  # W, on flows of ~1e8 W
    assert close(
        c["system_demand_w"],
        c["system_background_demand_w"] + c["system_data_centre_w"] + c["system_site_import_w"],
    )
    k = hook.kpis()
    assert k["system_max_balance_error_w"] < 1e-3
    # every sink was exercised by this mix, so the identity is not trivially 0 = 0
    for key in (
        "system_storage_charge_mwh",
        "system_storage_discharge_mwh",
        "system_electrolyser_mwh",
        "system_coal_mwh",
        "system_wind_mwh",
    ):
        assert k[key] > 0, key
    # directional columns are non-negative
    for col in (
        "system_wind_w",
        "system_utility_pv_w",
        "system_curtailment_w",
        "system_unserved_w",
        "system_export_w",
        "system_electrolyser_w",
    ):
        assert c[col].min() >= 0, col
    assert 0.0 <= np.nanmin(c["system_storage_soc"]) <= np.nanmax(c["system_storage_soc"]) <= 1


def test_same_seed_same_columns():
    spec = dict(utility_pv=[{"capacity_mw": 100}], wind=[{"n_turbines": 5}], plants=FLEET)
    _, a = run(spec, small_scenario(days=1))
    _, b = run(spec, small_scenario(days=1))
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name


# --------------------------------------------------------------------------- surplus chain


def test_curtailment_only_after_storage_electrolyser_and_export_are_full():
    # 1.5 GW of PV against ~11 MW of demand (100 GWh/yr): midday surplus far beyond
    # 5 MW storage + 10 MW electrolyser + 5 MW export
    spec = dict(
        demand={"annual_gwh": 100},
        utility_pv=[{"capacity_mw": 1500}],
        plants=[{"technology": "gas_ocgt", "capacity_mw": 40, "units": 4}],
        storage=[{"power_mw": 5, "energy_mwh": 10}],
        electrolysers=[{"power_mw": 10}],
        export_capacity_mw=5,
    )
    hook, c = run(spec)
    curt = c["system_curtailment_w"] > 1.0
    assert curt.any()
    assert close(c["system_electrolyser_w"][curt], 10e6, tol=1.0)
    assert close(c["system_export_w"][curt], 5e6, tol=1.0)
    # storage charges at its limit or is full (its feasible charge power is then ~0)
    assert np.all((c["system_storage_w"][curt] > 4.5e6) | (c["system_storage_soc"][curt] > 0.9))
    # while curtailing, no plant runs (all are flexible OCGTs with no must-run)
    assert np.all(c["system_gas_ocgt_w"][curt] == 0)
    assert hook.kpis()["system_curtailed_mwh"] > 0


def test_without_sinks_surplus_is_curtailed_and_balance_holds():
    spec = dict(demand={"annual_gwh": 100}, utility_pv=[{"capacity_mw": 500}])
    _, c = run(spec, small_scenario(days=1))
    surplus = c["system_utility_pv_w"] + c["system_site_export_w"] - c["system_demand_w"]
    assert close(c["system_curtailment_w"], np.maximum(surplus, 0.0), tol=1e-3)
    assert close(c["system_unserved_w"], np.maximum(-surplus, 0.0), tol=1e-3)


def test_substation_overload_is_reported_not_enforced():
    # 30 homes draw ~15-60 kW together; a 10 kW substation limit is exceeded most ticks
    spec = dict(plants=FLEET, distribution={"import_capacity_mw": 0.01, "export_capacity_mw": 0.01})
    hook, c = run(spec, small_scenario(days=1))
    net = c["system_site_import_w"] - c["system_site_export_w"]
    expected = np.maximum(net - 1e4, 0.0) + np.maximum(-net - 1e4, 0.0)
    assert close(c["system_substation_overload_w"], expected, tol=1e-6)
    assert expected.max() > 0
    assert hook.kpis()["system_substation_overload_mwh"] == pytest.approx(
        expected.sum() * 0.25 / 1e6, rel=1e-9
    )
    # a report, not a limit: dispatch is the same as without the substation check
    _, free = run(dict(plants=FLEET), small_scenario(days=1))
    assert np.array_equal(c["system_unserved_w"], free["system_unserved_w"])
    assert np.array_equal(c["system_plants_w"], free["system_plants_w"])


# --------------------------------------------------------------------------- shortage


def test_unserved_energy_when_capacity_is_short():
    # ~114 MW mean demand (1 TWh/yr) against 50 MW of gas with fast ramps and no RE
    spec = dict(
        plants=[
            {"technology": "gas_ocgt", "capacity_mw": 50, "units": 5, "ramp_percent_per_min": 100}
        ]
    )
    hook, c = run(spec)
    # the homes' rooftop feed-in counts as supply too
    expected = np.maximum(c["system_demand_w"] - c["system_site_export_w"] - 50e6, 0.0)
    assert close(c["system_unserved_w"], expected, tol=1e-3)
    k = hook.kpis()
    assert k["system_unserved_mwh"] > 0
    # loss-of-load hours = short ticks x 0.25 h
    short = int((expected > 1e-3).sum())
    assert short > 0
    assert k["system_loss_of_load_hours"] == pytest.approx(short * 0.25)


# --------------------------------------------------------------------------- merit order


def test_merit_order_cheaper_plant_is_full_before_dearer_runs():
    # no min load and 100 %/min ramps: the pure merit order must hold every tick
    free = {"min_stable_fraction": 0.0, "ramp_percent_per_min": 100}
    spec = dict(
        plants=[
            {"technology": "gas_ocgt", "capacity_mw": 100, **free},
            {"technology": "coal", "capacity_mw": 60, **free},
            {"technology": "gas_ccgt", "capacity_mw": 40, **free},
        ]
    )
    _, c = run(spec)
    coal, ccgt, ocgt = c["system_coal_w"], c["system_gas_ccgt_w"], c["system_gas_ocgt_w"]
    assert (ccgt > 1).any() and (ocgt > 1).any()  # demand reaches the peakers
    assert np.all(coal[ccgt > 1] >= 60e6 - 1e-3)
    assert np.all(ccgt[ocgt > 1] >= 40e6 - 1e-3)


def test_one_unit_behaves_like_ten_small_units_without_min_load():
    free = {"min_stable_fraction": 0.0, "ramp_percent_per_min": 100}
    one = dict(
        plants=[
            {"technology": "coal", "capacity_mw": 100, **free},
            {"technology": "gas_ccgt", "capacity_mw": 100, **free},
        ]
    )
    ten = dict(
        plants=[
            {"technology": "coal", "capacity_mw": 100, "units": 10, **free},
            {"technology": "gas_ccgt", "capacity_mw": 100, "units": 10, **free},
        ]
    )
    _, a = run(one, small_scenario(days=1))
    _, b = run(ten, small_scenario(days=1))
    for col in ("system_coal_w", "system_gas_ccgt_w", "system_co2_g_per_kwh"):
        assert close(a[col], b[col], tol=1e-3), col


def test_carbon_price_shifts_coal_to_gas():
    # coal 5 JPY/kWh + 820 g/kWh, CCGT 9.5 JPY/kWh + 490 g/kWh (models/plants defaults):
    # break-even price 4.5 / (330e-6 kg... ) = 4.5 / 330 g * 1e6 = 13,636 JPY/t.
    # At 20,000 JPY/t: coal 5 + 16.4 = 21.4, CCGT 9.5 + 9.8 = 19.3 JPY/kWh -> gas first.
    plants = [
        {"technology": "coal", "capacity_mw": 100, "units": 2},
        {"technology": "gas_ccgt", "capacity_mw": 100, "units": 2},
    ]
    h0, _ = run(dict(plants=plants))
    h1, _ = run(dict(plants=plants, carbon_price_jpy_per_t=20_000))
    k0, k1 = h0.kpis(), h1.kpis()
    assert k1["system_coal_mwh"] < 0.5 * k0["system_coal_mwh"]
    assert k1["system_gas_ccgt_mwh"] > k0["system_gas_ccgt_mwh"]
    assert k1["system_co2_t"] < k0["system_co2_t"]
    assert k1["system_carbon_cost_jpy"] == pytest.approx(k1["system_co2_t"] * 20_000)
    # below the break-even the order stays coal-first
    h2, _ = run(dict(plants=plants, carbon_price_jpy_per_t=10_000))
    assert h2.kpis()["system_coal_mwh"] == pytest.approx(k0["system_coal_mwh"], rel=1e-9)


# --------------------------------------------------------------------------- electrolyser


def test_electrolyser_hydrogen_is_energy_over_specific_energy():
    spec = dict(
        demand={"annual_gwh": 100},
        utility_pv=[{"capacity_mw": 1500}],
        electrolysers=[{"power_mw": 10, "specific_energy_kwh_per_kg": 55.0}],
    )
    hook, c = run(spec)
    full = np.isclose(c["system_electrolyser_w"], 10e6)
    assert full.any()
    # 10 MW for 15 min = 2.5 MWh = 2,500 kWh; / 55 kWh/kg = 45.4545 kg per full tick
    assert close(c["system_h2_kg"][full], 2500.0 / 55.0, tol=1e-9)
    k = hook.kpis()
    assert k["system_h2_kg"] == pytest.approx(
        k["system_electrolyser_mwh"] * 1000.0 / 55.0, rel=1e-12
    )
    # PEM minimum load 5 % = 0.5 MW: it never runs between 0 and 0.5 MW
    e = c["system_electrolyser_w"]
    assert not np.any((e > 0) & (e < 0.5e6 - 1e-6))


def test_electrolyser_absorbs_surplus_that_would_be_curtailed():
    base = dict(
        demand={"annual_gwh": 100},
        utility_pv=[{"capacity_mw": 400}],
        plants=[{"technology": "gas_ocgt", "capacity_mw": 40, "units": 4}],
    )
    h0, _ = run(base)
    h1, _ = run({**base, "electrolysers": [{"power_mw": 20}]})
    k0, k1 = h0.kpis(), h1.kpis()
    assert k1["system_electrolyser_mwh"] > 0
    # every MWh the electrolyser took was surplus that would otherwise be curtailed
    assert k0["system_curtailed_mwh"] - k1["system_curtailed_mwh"] == pytest.approx(
        k1["system_electrolyser_mwh"], rel=1e-9
    )


@pytest.mark.parametrize("export_mw", [0.0, 15.0, 1000.0])
def test_electrolyser_energy_splits_into_curtailment_avoided_and_export_displaced(export_mw):
    """With an interconnector, part of the electrolysers' energy would have been exported,
    not curtailed (issue 14).  The per-tick split must equal the differences to the same
    run without electrolysers, part by part, and add up to the electrolysers' energy."""
    base = dict(
        demand={"annual_gwh": 100},
        utility_pv=[{"capacity_mw": 400}],
        plants=[{"technology": "gas_ocgt", "capacity_mw": 40, "units": 4}],
        storage=[{"power_mw": 10, "energy_mwh": 30}],
        export_capacity_mw=export_mw,
    )
    h0, _ = run(base)
    h1, cols = run({**base, "electrolysers": [{"power_mw": 20}, {"power_mw": 10}]})
    k0, k1 = h0.kpis(), h1.kpis()
    elec = k1["system_electrolyser_mwh"]
    assert elec > 0
    avoided = k1["system_electrolyser_curtailment_avoided_mwh"]
    displaced = k1["system_electrolyser_export_displaced_mwh"]
    overgen = k1["system_electrolyser_overgeneration_avoided_mwh"]
    assert avoided + displaced + overgen == pytest.approx(elec, rel=1e-9)
    assert k0["system_curtailed_mwh"] - k1["system_curtailed_mwh"] == pytest.approx(
        avoided, rel=1e-9, abs=1e-9
    )
    assert k0["system_export_mwh"] - k1["system_export_mwh"] == pytest.approx(
        displaced, rel=1e-9, abs=1e-9
    )
    assert k0["system_overgeneration_mwh"] - k1["system_overgeneration_mwh"] == pytest.approx(
        overgen, rel=1e-9, abs=1e-9
    )
    if export_mw == 0.0:
        assert displaced == 0.0
    if export_mw == 15.0:  # both: the doc claim "electrolyser energy = curtailment avoided"
        assert displaced > 0.01 * elec and avoided > 0.01 * elec  # holds only without export
    if export_mw == 1000.0:  # the interconnector takes any surplus: nothing was curtailed
        assert avoided == pytest.approx(0.0, abs=1e-9)
        assert displaced == pytest.approx(elec, rel=1e-9)
    # each tick's parts are >= 0 and add up to that tick's electrolyser power
    parts = (
        cols["system_electrolyser_curtailment_avoided_w"]
        + cols["system_electrolyser_export_displaced_w"]
        + cols["system_electrolyser_overgeneration_avoided_w"]
    )
    assert close(parts, cols["system_electrolyser_w"], tol=1e-6)
    for c in ("curtailment_avoided", "export_displaced", "overgeneration_avoided"):
        assert (cols[f"system_electrolyser_{c}_w"] >= -1e-6).all()


# --------------------------------------------------------------------------- monotonicity


def test_more_wind_never_increases_co2():
    plants = FLEET
    co2 = []
    for n in (0, 10, 30, 60):
        spec = dict(
            plants=plants,
            storage=[{"power_mw": 20, "energy_mwh": 80}],
            wind=[{"n_turbines": n}] if n else [],
        )
        hook, _ = run(spec, small_scenario(days=3))
        co2.append(hook.kpis()["system_co2_t"])
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(co2)), co2
    assert co2[-1] < co2[0]


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("block", "msg"),
    [
        ({"wind": [{"n_turbines": 3, "turbine_type": "E-999/1"}]}, "unknown turbine_type"),
        ({"demand": {"residential_share": 0.5}}, "must be 1"),
        (
            {"storage": [{"power_mw": 1, "energy_mwh": 2, "round_trip_efficiency": 0.8}]},
            "pumped_hydro only",
        ),
        ({"plants": [{"technology": "fusion", "capacity_mw": 1}]}, "technology"),
        ({"plants": [{"technology": "coal", "capacity_mw": 1, "capacity_kw": 3}]}, "capacity_kw"),
        ({"export_capacity_mw": float("inf")}, "export_capacity_mw"),
    ],
)
def test_schema_rejects_with_clear_messages(block, msg):
    with pytest.raises(ValidationError, match=msg):
        SystemSpec(**block)


def test_build_system_needs_a_system_block():
    sc = small_scenario(days=1)
    with pytest.raises(ValueError, match="no 'system:' block"):
        build_system(sc, build_world(sc))


# --------------------------------------------------------------------------- built-ins


def load_split(path: Path) -> tuple[Scenario, SystemSpec]:
    """Load a built-in scenario whether or not Scenario has its ``system`` field yet."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "system" in Scenario.model_fields:
        sc = Scenario(**data)
        return sc, sc.system  # type: ignore[attr-defined]
    system = data.pop("system")
    return Scenario(**data), SystemSpec(**system)


BUILT_INS = [
    "cloudy_windless_backup.yaml",
    "demand_growth_2050.yaml",
    "demand_growth_2022_mix.yaml",
    "power_to_hydrogen.yaml",
]


@pytest.fixture(scope="module")
def built_in_kpis() -> dict[str, dict[str, float]]:
    out = {}
    for name in BUILT_INS:
        sc, spec = load_split(SCENARIOS / name)
        if sc.duration_days > 14:  # the 2022 mix runs a fiscal year: two weeks here
            sc = Scenario(**{**sc.model_dump(), "duration_days": 14})
        hook, _ = run(spec, sc)
        out[name] = hook.kpis()
    return out


def test_built_in_scenarios_run_and_balance(built_in_kpis):
    for name, k in built_in_kpis.items():
        assert k["system_max_balance_error_w"] < 1e-2, name


def test_cloudy_windless_backup_uses_storage_and_zero_emission_thermal(built_in_kpis):
    k = built_in_kpis["cloudy_windless_backup.yaml"]
    assert k["system_storage_discharge_mwh"] > 0
    assert k["system_hydrogen_turbine_mwh"] + k["system_ammonia_firing_mwh"] > 0
    assert k["system_storage_min_soc"] < 0.2  # the lull drains the grid battery
    assert k["system_unserved_mwh"] < 1e-6  # the back-up covers the lull (rounding only)
    assert k["system_loss_of_load_hours"] == 0.0


def test_2050_mix_has_lower_co2_intensity_than_2022_mix(built_in_kpis):
    k50 = built_in_kpis["demand_growth_2050.yaml"]
    k22 = built_in_kpis["demand_growth_2022_mix.yaml"]
    assert k50["system_data_centre_mwh"] > k22["system_data_centre_mwh"]
    assert k50["system_co2_intensity_g_per_kwh"] < 0.5 * k22["system_co2_intensity_g_per_kwh"]
    assert k50["system_re_share"] > k22["system_re_share"]


def test_power_to_hydrogen_produces_hydrogen(built_in_kpis):
    k = built_in_kpis["power_to_hydrogen.yaml"]
    assert k["system_h2_kg"] > 0
    assert k["system_electrolyser_utilisation"] > 0.05
