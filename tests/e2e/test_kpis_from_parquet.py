"""The result files of every built-in scenario are self-sufficient (issue 10 item 5, issue 14).

Each built-in scenario runs scaled down (two days; the populations as the file gives
them unless noted), plus one scenario that has every device family at once. From the
Parquet files alone — with code written here, not the package's — this test

* closes the sites' energy ledger every tick (sources = sinks + Δstored within 1e-6
  relative), for all sites and for each site group, and the sites' AC side;
* recomputes every KPI in ``kpis.json`` and finds the same value to 1e-9 relative;
* checks that every KPI and every column is documented (registry, field metadata).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cps_sim.experiment.run import run_file

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"

EVERYTHING = """\
version: 1
name: everything
seed: 7
start: 2026-05-11T00:00:00+09:00
duration_days: 2
tick_s: 1800
weather: {source: synthetic}
tariff: {import_jpy_per_kwh: 30.0, export_jpy_per_kwh: 10.0}
emissions: {grid_co2_g_per_kwh: 450, carbon_price_jpy_per_t: 5000}
control: {ev_strategy: v2g, v2g_price_jpy_per_kwh: 5.0}
sites:
  - name: homes
    count: 12
    load: {annual_kwh: 4000}
    pv: {share: 0.7, capacity_kw: {distribution: uniform, low: 3, high: 6}}
    battery: {share: 0.5, capacity_kwh: 10, power_kw: 5, ageing: true,
              self_discharge_per_month: 0.03}
    ev: {share: 1.0, charger_kw: 6, v2x_kw: 6}
    heat_pump_water_heater: {share: 0.5}
    space_conditioning: {share: 0.5}
    grid: {export_limit_kw: 4}
  - name: plant
    count: 3
    load: {annual_kwh: 40000, profile: factory}
    pv: {share: 1.0, capacity_kw: 30}
    deferrable: {share: 1.0, energy_kwh: 60, power_kw: 15, days: all}
    heat_pump_water_heater: {share: 1.0}
    space_conditioning: {share: 1.0, floor_area_m2: 300}
    grid: {import_limit_kw: 20}
"""

# (scenario, overrides): two days each, smaller where the size does not matter here
CASES = [
    ("quickstart", ["duration_days=2"]),
    ("self_owned_microgrid", ["duration_days=2"]),
    ("surplus_bev_absorption", ["duration_days=2"]),
    ("hpwh_daytime_shift", ["sites[0].count=60", "duration_days=2"]),
    ("cloudy_windless_backup", ["duration_days=2"]),
    ("demand_growth_2022_mix", ["duration_days=2"]),
    ("demand_growth_2050", ["duration_days=2"]),
    ("power_to_hydrogen", ["duration_days=2"]),
    ("hil_demo", []),
    (
        "ev_strategies_compare",
        [
            "sites[0].count=10",
            "duration_days=2",
            "control.interval_s=900",
            "control.ev_strategy=v2h",
        ],
    ),
    ("decarbonisation_leading_area", ["duration_days=2"]),
    ("v2g_evening_peak", ["duration_days=2"]),
    ("ev_logistics_depot", ["duration_days=2"]),
    ("smart_meter_b_route", ["sites[0].count=10", "duration_days=2"]),
    # two days across 1 April: two fiscal years, the carbon price steps (per-FY KPIs)
    ("carbon_price_path", ["start=2026-03-31T00:00:00+09:00", "duration_days=2"]),
    # named storage units: per-unit fade, surplus absorbed, cost per MWh shifted
    ("second_life_grid_battery", ["start=2026-05-10T00:00:00+09:00", "duration_days=2"]),
    ("everything", []),
]


def test_every_built_in_scenario_is_covered():
    assert {f.stem for f in SCENARIOS.glob("*.yaml")} <= {c[0] for c in CASES}


SOURCES = ("grid_import_w", "pv_generation_w", "measured_correction_w")
SINKS = (
    "load_w",
    "grid_export_w",
    "ev_driving_w",
    "battery_loss_w",
    "ev_loss_w",
    "battery_fade_w",
    "deferrable_w",
)


def _run(name: str, overrides: list[str], tmp: Path) -> Path:
    if name == "everything":
        f = tmp / "everything.yaml"
        f.write_text(EVERYTHING)
    else:
        f = SCENARIOS / f"{name}.yaml"
    out = tmp / "run"
    run_file(f, overrides, out_dir=out, check_expect=False)
    return out


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def run_dir(request, tmp_path_factory) -> Path:
    name, ov = request.param
    return _run(name, ov, tmp_path_factory.mktemp(name))


def _read(d: Path, name: str) -> tuple[pd.DataFrame, dict[str, str]]:
    t = pq.read_table(d / name)
    meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
    return t.to_pandas(), meta


# ----------------------------------------------------------------------------- balance


def _ledger_check(df: pd.DataFrame, stored0: float, h: float) -> None:
    src = sum(df[c].to_numpy() for c in SOURCES) * h
    snk = sum(df[c].to_numpy() for c in SINKS) * h
    stored = df["stored_wh"].to_numpy()
    d_stored = np.diff(np.concatenate([[stored0], stored]))
    scale = np.maximum(np.maximum(src, snk), np.abs(d_stored)) + 1.0
    gap = np.abs(src - snk - d_stored)
    assert (gap <= 1e-6 * scale).all(), f"worst tick gap {gap.max():.3g} Wh"


def test_ledger_closes_every_tick_from_the_parquet_files(run_dir):
    ts, meta = _read(run_dir, "timeseries.parquet")
    h = float(meta["cps_sim.tick_s"]) / 3600.0
    _ledger_check(ts, float(meta["cps_sim.stored_initial_wh"]), h)
    # the sites' AC side: what came in = what went out, every tick
    into = ts.grid_import_w + ts.pv_generation_w + ts.battery_discharge_w + ts.ev_discharge_w
    out = ts.load_w + ts.deferrable_w + ts.ev_charging_w + ts.battery_charge_w + ts.grid_export_w
    assert np.allclose(into, out, rtol=1e-9, atol=1e-6)
    # each group's own books from its first row: the group's stored energy where the run
    # starts is a fact of the files (metadata), not rebuilt from the balance it should check
    groups, gmeta = _read(run_dir, "timeseries_groups.parquet")
    start = json.loads(gmeta["cps_sim.stored_initial_wh_by_group"])
    assert set(start) == set(groups.group)
    assert math.isclose(sum(start.values()), float(meta["cps_sim.stored_initial_wh"]), abs_tol=1e-6)
    for name, g in groups.groupby("group", sort=False):
        assert len(g) == len(ts)
        _ledger_check(g.reset_index(drop=True), float(start[name]), h)
    # the group rows add up to the site totals, in every column both tables carry
    additive = [
        c
        for c in groups.columns
        if c in ts.columns and c != "time" and not c.endswith("_c")  # temperatures are means
    ]
    summed = groups.groupby("time", sort=True)[additive].sum()
    assert np.allclose(
        summed.to_numpy(),
        ts.set_index("time")[additive].sort_index().fillna(0.0).to_numpy(),
        rtol=1e-9,
        atol=1e-6,
    )
    # grid storage's own books (system layer): charge = losses + Δstored, every tick
    if "system_storage_stored_wh" in ts:
        s0 = json.loads(meta["cps_sim.system"])["storage_stored_initial_wh"]
        d_stored = np.diff(np.concatenate([[s0], ts.system_storage_stored_wh.to_numpy()]))
        gap = (ts.system_storage_w - ts.system_storage_loss_w).to_numpy() * h - d_stored
        assert (np.abs(gap) <= 1e-6 * (np.abs(d_stored) + 1.0)).all(), np.abs(gap).max()
        assert (ts.system_storage_loss_w >= -1e-6).all()


# ----------------------------------------------------------------------------- KPIs


def _energy(ts: pd.DataFrame, col: str, h: float) -> float:
    return float(ts[col].sum()) * h


def _expected_kpis(d: Path) -> dict[str, float]:
    """Every KPI from the files, written from docs/kpis.md's formulas."""
    ts, meta = _read(d, "timeseries.parquet")
    ev, _ = _read(d, "events.parquet")
    groups, _ = _read(d, "timeseries_groups.parquet")
    h = float(meta["cps_sim.tick_s"]) / 3600.0
    n = len(ts)
    k: dict[str, float] = {}
    for c in ts.columns:  # one energy KPI per ledger-flow column
        if c.endswith("_w") and c in groups.columns and c not in ("stored_wh",):
            if c.startswith(("heat_pump", "hot_water", "hpwh", "hvac")):
                continue
            k[c[:-2] + "_kwh"] = _energy(ts, c, h) / 1000
    pv, imp, exp = ts.pv_generation_w, ts.grid_import_w, ts.grid_export_w
    used = (
        ts.load_w
        + ts.deferrable_w
        + ts.ev_charging_w
        - ts.ev_discharge_w
        + ts.battery_charge_w
        - ts.battery_discharge_w
    )
    cons = float(used.sum()) * h
    self_pv = float((pv - np.minimum(exp, pv)).sum()) * h
    k["consumption_kwh"] = cons / 1000
    k["pv_self_consumed_kwh"] = self_pv / 1000
    k["self_consumption"] = self_pv / (pv.sum() * h) if pv.sum() > 0 else math.nan
    # per tick: grid energy used = import less the export no PV covered (stores)
    grid_used = float(np.maximum(imp - np.maximum(exp - pv, 0), 0).sum()) * h
    k["self_sufficiency"] = max(1 - grid_used / cons, 0.0) if cons > 0 else math.nan
    k["peak_import_kw"] = imp.max() / 1000
    tick_s = float(meta["cps_sim.tick_s"])
    if 1800 % tick_s == 0:
        half = ts.set_index("time").grid_import_w.resample("30min").mean().dropna()
        k["peak_import_30min_kw"] = half.max() / 1000
    else:
        k["peak_import_30min_kw"] = math.nan
    k["peak_site_import_kw"] = ts.peak_site_import_w.max() / 1000
    kwh = imp * h / 1000
    k["energy_cost_jpy"] = float(
        (kwh * ts.import_price_jpy_per_kwh).sum()
        - (exp * h / 1000 * ts.export_price_jpy_per_kwh).sum()
    )
    co2 = kwh * ts.grid_co2_g_per_kwh / 1000
    k["co2_kg"] = float(co2.sum())
    k["carbon_cost_jpy"] = float((co2 * ts.carbon_price_jpy_per_t).sum()) / 1000
    k["cost_jpy"] = k["energy_cost_jpy"] + k["carbon_cost_jpy"]
    s0 = float(meta["cps_sim.stored_initial_wh"])
    s1 = float(ts.stored_wh.iloc[-1])
    k["stored_initial_kwh"], k["stored_final_kwh"] = s0 / 1000, s1 / 1000
    k["balance_residual_wh"] = (
        sum(_energy(ts, c, h) for c in SOURCES) - sum(_energy(ts, c, h) for c in SINKS) - (s1 - s0)
    )
    k["balance_max_tick_residual_wh"] = ts.balance_residual_wh.abs().max()
    k["sites"] = float(meta["cps_sim.sites"])
    k["evs"] = float(meta["cps_sim.evs"])
    k["ticks"] = float(n)
    dep = ev[ev.kind == "departure"]
    k["ev_departures"] = float(len(dep))
    k["ev_unmet_at_departure_kwh"] = dep.unmet_wh.sum() / 1000
    k["ev_departures_below_target"] = float((dep.unmet_wh > 1e-6).sum())
    k["ev_soc_at_departure_mean"] = dep.soc.mean() if len(dep) else math.nan
    if "battery_soh_mean" in ts:
        k["battery_soh_mean"] = ts.battery_soh_mean.iloc[-1]
        k["battery_soh_min"] = ts.battery_soh_min.iloc[-1]
    devices = json.loads(meta["cps_sim.device_groups"])
    hp = devices.get("hpwh", [])
    for g in hp:
        rows = groups[groups.group == g]
        p = "" if len(hp) == 1 else f"{g}."
        el = rows.heat_pump_w.sum() * h
        k[p + "heat_pump_kwh"] = el / 1000
        k[p + "hot_water_delivered_kwh_th"] = rows.hot_water_delivered_w_th.sum() * h / 1000
        k[p + "hot_water_unmet_kwh_th"] = rows.hot_water_unmet_w_th.sum() * h / 1000
        k[p + "hpwh_tank_loss_kwh_th"] = rows.hpwh_tank_loss_w_th.sum() * h / 1000
        k[p + "hpwh_cop_mean"] = rows.heat_pump_heat_w_th.sum() * h / el if el > 0 else math.nan
    ac = devices.get("hvac", [])
    for g in ac:
        rows = groups[groups.group == g]
        p = "" if len(ac) == 1 else f"{g}."
        el = rows.hvac_w.sum() * h
        heat, cool = rows.hvac_heating_w_th.sum() * h, rows.hvac_cooling_w_th.sum() * h
        k[p + "hvac_kwh"] = el / 1000
        k[p + "hvac_heating_kwh_th"] = heat / 1000
        k[p + "hvac_cooling_kwh_th"] = cool / 1000
        k[p + "hvac_cop_mean"] = (heat + cool) / el if el > 0 else math.nan
        k[p + "hvac_discomfort_kh"] = rows.hvac_discomfort_kh.sum()
    if "cps_sim.system" in meta:
        k.update(_system(ts, json.loads(meta["cps_sim.system"]), h))
    if "cps_sim.vpp" in meta:
        name = meta["cps_sim.vpp"]
        rep = pd.read_parquet(d / f"{name}_report.parquet")
        req, dlv = rep.requested_kwh.sum(), rep.delivered_kwh.sum()
        k.update(
            {
                f"{name}_requests": float(len(rep)),
                f"{name}_requested_kwh": req,
                f"{name}_available_kwh": rep.available_kwh.sum(),
                f"{name}_dispatched_kwh": rep.dispatched_kwh.sum(),
                f"{name}_delivered_kwh": dlv,
                f"{name}_delivered_ratio": dlv / req if req > 0 else 0.0,
                f"{name}_shortfall_kwh": rep.shortfall_kwh.sum(),
                f"{name}_requests_partial": float((rep.status != "full").sum()),
            }
        )
    return k


def _system(ts: pd.DataFrame, facts: dict, h: float) -> dict[str, float]:
    def mwh(c: str) -> float:
        return float(ts[c].sum()) * h / 1e6 if c in ts else 0.0

    k = {
        f"system_{q}_mwh": mwh(f"system_{q}_w")
        for q in (
            "demand",
            "background_demand",
            "data_centre",
            "site_import",
            "site_export",
            "wind",
            "utility_pv",
            "plants",
            "electrolyser",
            "export",
            "unserved",
            "overgeneration",
            "electrolyser_curtailment_avoided",
            "electrolyser_export_displaced",
            "electrolyser_overgeneration_avoided",
        )
    }
    k["system_curtailed_mwh"] = mwh("system_curtailment_w")
    k["system_storage_charge_mwh"] = ts.system_storage_w.clip(lower=0).sum() * h / 1e6
    k["system_storage_discharge_mwh"] = (-ts.system_storage_w).clip(lower=0).sum() * h / 1e6
    for t in facts["technologies"]:
        k[f"system_{t}_mwh"] = mwh(f"system_{t}_w")
    served = k["system_demand_mwh"] - k["system_unserved_mwh"]
    re = k["system_wind_mwh"] + k["system_utility_pv_mwh"] + k["system_site_export_mwh"]
    re_net = max(re - k["system_curtailed_mwh"], 0.0)
    gen = k["system_plants_mwh"] + re_net
    k["system_generation_mwh"] = gen
    for t in facts["technologies"]:
        k[f"system_share_{t}"] = k[f"system_{t}_mwh"] / gen if gen > 0 else 0.0
    k["system_share_renewable"] = re_net / gen if gen > 0 else 0.0
    co2_t = ts.system_co2_kg.sum() / 1000
    cost = ts.system_cost_jpy.sum()
    k["system_co2_t"] = co2_t
    k["system_co2_intensity_g_per_kwh"] = co2_t * 1e6 / (served * 1e3) if served > 0 else 0.0
    k["system_cost_jpy"] = cost
    k["system_cost_jpy_per_kwh"] = cost / (served * 1e3) if served > 0 else 0.0
    k["system_carbon_cost_jpy"] = float(
        (ts.system_co2_kg / 1000 * ts.system_carbon_price_jpy_per_t).sum()
    )
    k.update(_fiscal_years(ts, facts, h))
    k.update(_storage_units(ts, facts, h))
    k["system_h2_kg"] = ts.system_h2_kg.sum()
    rated = facts["electrolyser_rated_w"] / 1e6
    k["system_electrolyser_utilisation"] = (
        k["system_electrolyser_mwh"] / (rated * len(ts) * h) if rated else 0.0
    )
    k["system_re_share"] = 1 - k["system_plants_mwh"] / served if served > 0 else 0.0
    k["system_curtailment_share"] = k["system_curtailed_mwh"] / re if re > 0 else 0.0
    k["system_loss_of_load_hours"] = float((ts.system_unserved_w > 1e-3).sum()) * h
    soc = ts.system_storage_soc.dropna()
    k["system_storage_min_soc"] = soc.min() if len(soc) else math.nan
    k["system_peak_demand_mw"] = ts.system_demand_w.max() / 1e6
    k["system_peak_residual_demand_mw"] = ts.system_residual_demand_w.max() / 1e6
    k["system_max_balance_error_w"] = ts.system_balance_error_w.abs().max()
    return k


def _fiscal_years(ts: pd.DataFrame, facts: dict, h: float) -> dict[str, float]:
    """Per Japanese fiscal year (April-March of the tick start in Tokyo time)."""
    local = pd.DatetimeIndex(ts["time"]).tz_convert("Asia/Tokyo")
    fy = np.where(local.month >= 4, local.year, local.year - 1)
    if len(set(fy)) < 2:
        return {}
    k: dict[str, float] = {}
    for y in sorted(set(fy)):
        d = ts[fy == y]
        p = f"system_fy{y}_"

        def mwh(c: str, d=d) -> float:
            return float(d[c].sum()) * h / 1e6

        served = mwh("system_demand_w") - mwh("system_unserved_w")
        re = mwh("system_wind_w") + mwh("system_utility_pv_w") + mwh("system_site_export_w")
        re_net = max(re - mwh("system_curtailment_w"), 0.0)
        gen = mwh("system_plants_w") + re_net
        co2_t = d.system_co2_kg.sum() / 1000
        k[p + "hours"] = len(d) * h
        k[p + "carbon_price_jpy_per_t"] = d.system_carbon_price_jpy_per_t.mean()
        k[p + "demand_mwh"] = mwh("system_demand_w")
        for t in facts["technologies"]:
            k[f"{p}{t}_mwh"] = mwh(f"system_{t}_w")
            k[f"{p}share_{t}"] = mwh(f"system_{t}_w") / gen if gen > 0 else 0.0
        k[p + "renewable_mwh"] = re_net
        k[p + "share_renewable"] = re_net / gen if gen > 0 else 0.0
        k[p + "curtailed_mwh"] = mwh("system_curtailment_w")
        k[p + "unserved_mwh"] = mwh("system_unserved_w")
        k[p + "co2_t"] = co2_t
        k[p + "co2_intensity_g_per_kwh"] = co2_t * 1e6 / (served * 1e3) if served > 0 else 0.0
        k[p + "cost_jpy"] = d.system_cost_jpy.sum()
        k[p + "cost_jpy_per_kwh"] = d.system_cost_jpy.sum() / (served * 1e3) if served else 0.0
        k[p + "carbon_cost_jpy"] = (d.system_co2_kg / 1000 * d.system_carbon_price_jpy_per_t).sum()
    return k


def _storage_units(ts: pd.DataFrame, facts: dict, h: float) -> dict[str, float]:
    k: dict[str, float] = {}
    if "system_storage_absorbed_w" in ts:
        k["system_storage_absorbed_mwh"] = ts.system_storage_absorbed_w.sum() * h / 1e6
    years = len(ts) * h / 8760
    for u in facts.get("storage_units") or []:
        p = f"system_storage_{u['name']}_"
        w = ts[p + "w"]
        k[p + "charge_mwh"] = w.clip(lower=0).sum() * h / 1e6
        k[p + "discharge_mwh"] = (-w).clip(lower=0).sum() * h / 1e6
        k[p + "absorbed_surplus_mwh"] = ts[p + "absorbed_w"].sum() * h / 1e6
        k[p + "soh_start"] = u["initial_soh"]
        k[p + "soh_end"] = ts[p + "soh"].iloc[-1]
        k[p + "fade"] = u["initial_soh"] - ts[p + "soh"].iloc[-1]
        k[p + "capacity_lost_mwh"] = k[p + "fade"] * u["energy_mwh"] / u["initial_soh"]
        k[p + "equivalent_full_cycles"] = (k[p + "charge_mwh"] + k[p + "discharge_mwh"]) / (
            2 * u["energy_mwh"]
        )
        if u["capex_jpy_per_kwh"] is not None:
            cost = u["capex_jpy_per_kwh"] * u["energy_mwh"] * 1000 * years / u["lifetime_years"]
            k[p + "capex_share_jpy"] = cost
            k[p + "cost_jpy_per_mwh_shifted"] = cost / k[p + "discharge_mwh"]
    return k


NOISE = ("balance_residual_wh", "balance_max_tick_residual_wh", "system_max_balance_error_w")


def test_every_kpi_is_rebuilt_from_the_parquet_files(run_dir):
    kpis = {
        k: (math.nan if v is None else v)
        for k, v in json.loads((run_dir / "kpis.json").read_text()).items()
    }
    expected = _expected_kpis(run_dir)
    assert set(kpis) == set(expected), (
        sorted(set(kpis) - set(expected)),
        sorted(set(expected) - set(kpis)),
    )
    for name, want in expected.items():
        got = kpis[name]
        if name in NOISE:  # floating-point noise: the same noise to within 1e-6 Wh (W)
            assert abs(got - want) <= 1e-6, name
        elif math.isnan(want):
            assert math.isnan(got), name
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), name


def test_every_kpi_and_column_is_documented(run_dir):
    from cps_sim.experiment.kpi_registry import definition
    from cps_sim.world.populations import FLOWS

    for name in json.loads((run_dir / "kpis.json").read_text()):
        assert definition(name, FLOWS) is not None, f"KPI {name} is not in the registry"
    for f in ("timeseries.parquet", "timeseries_groups.parquet"):
        for field in pq.read_schema(run_dir / f):
            md = field.metadata or {}
            assert b"description" in md and b"unit" in md, f"{f}: {field.name} undocumented"


def test_self_sufficiency_and_self_consumption_stay_in_unit_interval(run_dir):
    k = json.loads((run_dir / "kpis.json").read_text())
    for name in ("self_sufficiency", "self_consumption"):
        v = k[name]
        assert v is None or 0.0 <= v <= 1.0, (name, v)
