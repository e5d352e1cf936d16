"""Every KPI of ``kpis.json``, computed in one place from the run's result tables.

The KPIs are computed *from the run's result tables* — the rows of
``timeseries.parquet`` (tick-average powers [W], one row per settlement tick),
``timeseries_groups.parquet``, ``events.parquet`` and the report tables
(``<vpp>_report.parquet``, ...) — and from the facts stored in the Parquet
schema metadata (``cps_sim.*`` keys: tick length, counts, stored energy at the
start).  No KPI is accumulated beside the time series, so every KPI can be
recomputed from the files alone.  The definitions (unit, formula, meaning) are in
:mod:`cps_sim.experiment.kpi_registry`, from which ``docs/kpis.md`` is generated.

Notation used in the formulas: ``Σ x`` sums column ``x`` over the rows, ``h`` is
the tick length in hours (``tick_s / 3600``), so ``Σ x_w · h`` is energy in Wh.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.experiment.kpi_registry import SYSTEM_FLOWS

META = "cps_sim."  # prefix of the run facts in the Parquet schema metadata
# unserved power above this [W] makes a tick count as a loss-of-load tick
LOL_THRESHOLD_W = 1e-3
METERING_INTERVAL_S = 1800.0  # Japanese demand metering (最大需要電力): 30-min averages


# ----------------------------------------------------------------------------- inputs


@dataclass
class RunTables:
    """What the KPIs are computed from (the files of a results directory)."""

    timeseries: pa.Table
    events: pa.Table
    groups: pa.Table | None = None
    reports: dict[str, pa.Table] = field(default_factory=dict)  # "<name>_report" -> table
    meta: dict[str, str] = field(default_factory=dict)  # "cps_sim.*" facts (str values)

    def col(self, name: str) -> np.ndarray:
        return np.asarray(self.timeseries.column(name).to_numpy(zero_copy_only=False), dtype=float)

    def has(self, name: str) -> bool:
        return name in self.timeseries.column_names

    def fact(self, key: str, default: str | None = None) -> str:
        v = self.meta.get(META + key, default)
        if v is None:
            raise KeyError(f"run fact {META + key!r} missing from the Parquet metadata")
        return v

    @property
    def tick_s(self) -> float:
        return float(self.fact("tick_s"))

    @property
    def h(self) -> float:
        return self.tick_s / SECONDS_PER_HOUR


def read_meta(schema: pa.Schema) -> dict[str, str]:
    """The ``cps_sim.*`` facts of a Parquet schema's metadata as text."""
    raw = schema.metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.decode().startswith(META)}


# ----------------------------------------------------------------------------- computation


def _nan_div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def flow_kpis(t: RunTables, flows: tuple[str, ...]) -> dict[str, float]:
    h = t.h
    return {
        f.removesuffix("_wh") + "_kwh": float(t.col(f.removesuffix("_wh") + "_w").sum())
        * h
        / 1000.0
        for f in flows
    }


def consumption_w(col: Callable[[str], np.ndarray]) -> np.ndarray:
    """Per-tick net consumption of the sites [W] (see ``consumption_kwh``)."""
    return (
        col("load_w")
        + col("deferrable_w")
        + (col("ev_charging_w") - col("ev_discharge_w"))
        + (col("battery_charge_w") - col("battery_discharge_w"))
    )


def peak_over_interval_w(
    time_us: np.ndarray, power_w: np.ndarray, tick_s: float, interval_s: float = METERING_INTERVAL_S
) -> float:
    """Largest mean of ``power_w`` over clock-aligned intervals (NaN if the tick does not
    divide the interval; 0 without rows)."""
    if power_w.size == 0:
        return 0.0
    ratio = interval_s / tick_s
    if tick_s > interval_s or abs(ratio - round(ratio)) > 1e-9:
        return float("nan")
    slot = np.floor_divide(time_us, round(interval_s * 1e6))
    slot = slot - slot.min()
    energy = np.bincount(slot, weights=power_w)
    count = np.bincount(slot)
    used = count > 0
    return float((energy[used] / count[used]).max())


def site_kpis(t: RunTables, sources: tuple[str, ...], sinks: tuple[str, ...]) -> dict[str, float]:
    h = t.h
    n = t.timeseries.num_rows
    imp = t.col("grid_import_w")
    exp = t.col("grid_export_w")
    pv = t.col("pv_generation_w")
    pv_wh = float(pv.sum()) * h
    cons_k = consumption_w(t.col)
    cons_wh = float(cons_k.sum()) * h
    self_used_k = pv - np.minimum(exp, pv)
    self_used_wh = float(self_used_k.sum()) * h
    # per tick, the consumption covered by the sites' PV: the self-consumed PV, less what
    # stores exported to the grid beyond the tick's imports
    covered_wh = float(np.minimum(self_used_k, cons_k).sum()) * h
    intensity = t.col("grid_co2_g_per_kwh")
    imp_kwh_k = imp * h / 1000.0
    co2_kg_k = imp_kwh_k * intensity / 1000.0
    energy_cost = float(
        (
            imp_kwh_k * t.col("import_price_jpy_per_kwh")
            - exp * h / 1000.0 * t.col("export_price_jpy_per_kwh")
        ).sum()
    )
    carbon_cost = float((co2_kg_k * t.col("carbon_price_jpy_per_t")).sum()) / 1000.0
    stored = t.col("stored_wh")
    stored0 = float(t.fact("stored_initial_wh"))
    stored1 = float(stored[-1]) if n else stored0
    flow_sum = sum(float(t.col(f.removesuffix("_wh") + "_w").sum()) for f in sources) - sum(
        float(t.col(f.removesuffix("_wh") + "_w").sum()) for f in sinks
    )
    residual = t.col("balance_residual_wh")
    time_us = t.timeseries.column("time").cast(pa.int64()).to_numpy()
    return {
        "consumption_kwh": cons_wh / 1000.0,
        "pv_self_consumed_kwh": self_used_wh / 1000.0,
        "self_consumption": _nan_div(self_used_wh, pv_wh),
        "self_sufficiency": max(covered_wh, 0.0) / cons_wh if cons_wh > 0 else float("nan"),
        "peak_import_kw": float(imp.max()) / 1000.0 if n else 0.0,
        "peak_import_30min_kw": peak_over_interval_w(time_us, imp, t.tick_s) / 1000.0,
        "peak_site_import_kw": float(t.col("peak_site_import_w").max()) / 1000.0 if n else 0.0,
        "energy_cost_jpy": energy_cost,
        "carbon_cost_jpy": carbon_cost,
        "cost_jpy": energy_cost + carbon_cost,
        "co2_kg": float(co2_kg_k.sum()),
        "stored_initial_kwh": stored0 / 1000.0,
        "stored_final_kwh": stored1 / 1000.0,
        "balance_residual_wh": flow_sum * h - (stored1 - stored0),
        "balance_max_tick_residual_wh": float(np.abs(residual).max()) if n else 0.0,
        "sites": float(t.fact("sites")),
        "evs": float(t.fact("evs")),
        "ticks": float(n),
    }


def event_kpis(events: pa.Table) -> dict[str, float]:
    # compared in Arrow: no Python string per event (26 million in a 100k-home year)
    dep = (
        pc.equal(events.column("kind"), "departure").to_numpy(zero_copy_only=False)
        if events.num_rows
        else np.empty(0, dtype=bool)
    )
    unmet = events.column("unmet_wh").to_numpy()[dep] if events.num_rows else np.empty(0)
    soc = events.column("soc").to_numpy()[dep] if events.num_rows else np.empty(0)
    return {
        "ev_departures": float(dep.sum()),
        "ev_unmet_at_departure_kwh": float(unmet.sum()) / 1000.0,
        "ev_departures_below_target": float((unmet > 1e-6).sum()),
        "ev_soc_at_departure_mean": float(soc.mean()) if soc.size else float("nan"),
    }


def _group_sums(t: RunTables, family: str):
    """(prefix, column-sum function) per site group with devices of ``family``."""
    groups = json.loads(t.fact("device_groups", "{}")).get(family, [])
    if not groups or t.groups is None:
        return
    gname = np.asarray(t.groups.column("group").to_pylist(), dtype=object)
    for name in groups:
        m = gname == name

        def total(col: str, m=m) -> float:
            return float(
                np.asarray(t.groups.column(col).to_numpy(zero_copy_only=False), dtype=float)[
                    m
                ].sum()
            )

        yield ("" if len(groups) == 1 else f"{name}."), total


def hpwh_kpis(t: RunTables) -> dict[str, float]:
    h = t.h
    out: dict[str, float] = {}
    for p, total in _group_sums(t, "hpwh"):
        el = total("heat_pump_w") * h
        out.update(
            {
                f"{p}heat_pump_kwh": el / 1000.0,
                f"{p}hot_water_delivered_kwh_th": total("hot_water_delivered_w_th") * h / 1000.0,
                f"{p}hot_water_unmet_kwh_th": total("hot_water_unmet_w_th") * h / 1000.0,
                f"{p}hpwh_tank_loss_kwh_th": total("hpwh_tank_loss_w_th") * h / 1000.0,
                f"{p}hpwh_cop_mean": _nan_div(total("heat_pump_heat_w_th") * h, el),
            }
        )
    return out


def hvac_kpis(t: RunTables) -> dict[str, float]:
    h = t.h
    out: dict[str, float] = {}
    for p, total in _group_sums(t, "hvac"):
        el = total("hvac_w") * h
        heat, cool = total("hvac_heating_w_th") * h, total("hvac_cooling_w_th") * h
        out.update(
            {
                f"{p}hvac_kwh": el / 1000.0,
                f"{p}hvac_heating_kwh_th": heat / 1000.0,
                f"{p}hvac_cooling_kwh_th": cool / 1000.0,
                f"{p}hvac_cop_mean": _nan_div(heat + cool, el),
                f"{p}hvac_discomfort_kh": total("hvac_discomfort_kh"),
            }
        )
    return out


def ageing_kpis(t: RunTables) -> dict[str, float]:
    if not t.has("battery_soh_mean") or t.timeseries.num_rows == 0:
        return {}
    mean, low = t.col("battery_soh_mean")[-1], t.col("battery_soh_min")[-1]
    if not np.isfinite(mean):
        return {}
    return {"battery_soh_mean": float(mean), "battery_soh_min": float(low)}


def system_kpis(t: RunTables) -> dict[str, float]:
    raw = t.meta.get(META + "system")
    if raw is None:
        return {}
    return system_kpis_from(t.col, t.has, t.timeseries.num_rows, t.h, json.loads(raw))


def system_kpis_from(
    col: Callable[[str], np.ndarray], has: Callable[[str], bool], n: int, h: float, facts: Mapping
) -> dict[str, float]:
    """System KPIs from the ``system_*`` columns (``col(name)``, ``n`` rows, ``h`` hours
    per tick) and the facts ``technologies``, ``electrolyser_rated_w`` and
    ``carbon_price_jpy_per_t``."""

    def mwh(name: str) -> float:
        return float(col(name).sum()) * h / 1e6 if has(name) else 0.0

    out: dict[str, float] = {}
    for key, name in SYSTEM_FLOWS.items():
        out[f"system_{key}_mwh"] = mwh(name)
    storage = col("system_storage_w")
    out["system_storage_charge_mwh"] = float(np.maximum(storage, 0.0).sum()) * h / 1e6
    out["system_storage_discharge_mwh"] = float(np.maximum(-storage, 0.0).sum()) * h / 1e6
    techs = list(facts["technologies"])
    for tech in techs:
        out[f"system_{tech}_mwh"] = mwh(f"system_{tech}_w")
    if has("system_substation_overload_w"):
        out["system_substation_overload_mwh"] = mwh("system_substation_overload_w")
    served = out["system_demand_mwh"] - out["system_unserved_mwh"]
    re = out["system_wind_mwh"] + out["system_utility_pv_mwh"] + out["system_site_export_mwh"]
    re_net = max(re - out["system_curtailed_mwh"], 0.0)
    gen = out["system_plants_mwh"] + re_net
    out["system_generation_mwh"] = gen
    for tech in techs:
        out[f"system_share_{tech}"] = out[f"system_{tech}_mwh"] / gen if gen > 0 else 0.0
    out["system_share_renewable"] = re_net / gen if gen > 0 else 0.0
    co2_t = float(col("system_co2_kg").sum()) / 1000.0
    cost = float(col("system_cost_jpy").sum())
    rated_mw = float(facts["electrolyser_rated_w"]) / 1e6
    hours = n * h
    soc = col("system_storage_soc")
    out.update(
        {
            "system_co2_t": co2_t,
            "system_co2_intensity_g_per_kwh": co2_t * 1e6 / (served * 1e3) if served > 0 else 0.0,
            "system_cost_jpy": cost,
            "system_cost_jpy_per_kwh": cost / (served * 1e3) if served > 0 else 0.0,
            "system_carbon_cost_jpy": float(col("system_carbon_cost_jpy").sum())
            if has("system_carbon_cost_jpy")
            else co2_t * float(facts["carbon_price_jpy_per_t"]),
            "system_h2_kg": float(col("system_h2_kg").sum()),
            "system_electrolyser_utilisation": out["system_electrolyser_mwh"] / (rated_mw * hours)
            if rated_mw and hours
            else 0.0,
            "system_re_share": 1.0 - out["system_plants_mwh"] / served if served > 0 else 0.0,
            "system_curtailment_share": out["system_curtailed_mwh"] / re if re > 0 else 0.0,
            "system_loss_of_load_hours": float((col("system_unserved_w") > LOL_THRESHOLD_W).sum())
            * h,
            "system_storage_min_soc": float(np.nanmin(soc))
            if n and np.isfinite(soc).any()
            else float("nan"),
            "system_peak_demand_mw": float(col("system_demand_w").max()) / 1e6 if n else 0.0,
            "system_peak_residual_demand_mw": float(col("system_residual_demand_w").max()) / 1e6
            if n
            else 0.0,
            "system_max_balance_error_w": float(np.abs(col("system_balance_error_w")).max())
            if n
            else 0.0,
        }
    )
    out.update(fiscal_year_kpis(col, has, h, techs))
    out.update(storage_unit_kpis(col, has, n, h, facts.get("storage_units") or []))
    return out


HOURS_PER_YEAR = 8760.0


def storage_unit_kpis(
    col: Callable[[str], np.ndarray], has: Callable[[str], bool], n: int, h: float, units: list
) -> dict[str, float]:
    """``system_storage_<name>_*`` of each named grid-storage unit: energy shifted, surplus
    absorbed, capacity fade, cycles and the capital cost per MWh shifted."""
    out: dict[str, float] = {}
    if has("system_storage_absorbed_w"):
        out["system_storage_absorbed_mwh"] = float(col("system_storage_absorbed_w").sum()) * h / 1e6
    years = n * h / HOURS_PER_YEAR
    for u in units:
        p = f"system_storage_{u['name']}_"
        w = col(p + "w")
        charge = float(np.maximum(w, 0.0).sum()) * h / 1e6
        discharge = float(np.maximum(-w, 0.0).sum()) * h / 1e6
        soh0 = float(u["initial_soh"])
        soh = col(p + "soh")
        soh_end = float(soh[-1]) if n else soh0
        nominal_mwh = float(u["energy_mwh"]) / soh0
        out[p + "charge_mwh"] = charge
        out[p + "discharge_mwh"] = discharge
        out[p + "absorbed_surplus_mwh"] = float(col(p + "absorbed_w").sum()) * h / 1e6
        out[p + "soh_start"] = soh0
        out[p + "soh_end"] = soh_end
        out[p + "fade"] = soh0 - soh_end
        out[p + "capacity_lost_mwh"] = (soh0 - soh_end) * nominal_mwh
        out[p + "equivalent_full_cycles"] = (
            (charge + discharge) / (2.0 * float(u["energy_mwh"])) if u["energy_mwh"] else 0.0
        )
        if u.get("capex_jpy_per_kwh") is not None:
            cost = (
                float(u["capex_jpy_per_kwh"])
                * float(u["energy_mwh"])
                * 1000.0
                * years
                / float(u["lifetime_years"])
            )
            out[p + "capex_share_jpy"] = cost
            out[p + "cost_jpy_per_mwh_shifted"] = cost / discharge if discharge > 0 else math.nan
    return out


FY_MIN_YEARS = 2  # per-fiscal-year KPIs only for runs that span at least two


def fiscal_year_kpis(
    col: Callable[[str], np.ndarray], has: Callable[[str], bool], h: float, techs: list[str]
) -> dict[str, float]:
    """``system_fy<year>_<quantity>``: the system KPIs of each Japanese fiscal year
    (April-March, by the tick's start) the run touches, when it touches two or more."""
    if not has("system_fiscal_year"):
        return {}
    fy = col("system_fiscal_year")
    years = np.unique(fy[np.isfinite(fy)]).astype(int)
    if years.size < FY_MIN_YEARS:
        return {}
    out: dict[str, float] = {}
    for y in years:
        m = fy == y
        p = f"system_fy{y}_"

        def mwh(name: str, m: np.ndarray = m) -> float:
            return float(col(name)[m].sum()) * h / 1e6 if has(name) else 0.0

        served = mwh("system_demand_w") - mwh("system_unserved_w")
        re = mwh("system_wind_w") + mwh("system_utility_pv_w") + mwh("system_site_export_w")
        re_net = max(re - mwh("system_curtailment_w"), 0.0)
        plants = mwh("system_plants_w")
        gen = plants + re_net
        co2_t = float(col("system_co2_kg")[m].sum()) / 1000.0
        cost = float(col("system_cost_jpy")[m].sum())
        out[p + "hours"] = float(m.sum()) * h
        out[p + "carbon_price_jpy_per_t"] = (
            float(col("system_carbon_price_jpy_per_t")[m].mean())
            if has("system_carbon_price_jpy_per_t")
            else 0.0
        )
        out[p + "demand_mwh"] = mwh("system_demand_w")
        for tech in techs:
            e = mwh(f"system_{tech}_w")
            out[f"{p}{tech}_mwh"] = e
            out[f"{p}share_{tech}"] = e / gen if gen > 0 else 0.0
        out[p + "renewable_mwh"] = re_net
        out[p + "share_renewable"] = re_net / gen if gen > 0 else 0.0
        out[p + "curtailed_mwh"] = mwh("system_curtailment_w")
        out[p + "unserved_mwh"] = mwh("system_unserved_w")
        out[p + "co2_t"] = co2_t
        out[p + "co2_intensity_g_per_kwh"] = co2_t * 1e6 / (served * 1e3) if served > 0 else 0.0
        out[p + "cost_jpy"] = cost
        out[p + "cost_jpy_per_kwh"] = cost / (served * 1e3) if served > 0 else 0.0
        out[p + "carbon_cost_jpy"] = (
            float(col("system_carbon_cost_jpy")[m].sum()) if has("system_carbon_cost_jpy") else 0.0
        )
    return out


def vpp_kpis(name: str, report: Mapping[str, np.ndarray]) -> dict[str, float]:
    """KPIs of the aggregator ``name`` from its request report (one row per request)."""
    req = float(np.sum(report["requested_kwh"]))
    dlv = float(np.sum(report["delivered_kwh"]))
    p = f"{name}_"
    return {
        f"{p}requests": float(len(report["requested_kwh"])),
        f"{p}requested_kwh": req,
        f"{p}available_kwh": float(np.sum(report["available_kwh"])),
        f"{p}dispatched_kwh": float(np.sum(report["dispatched_kwh"])),
        f"{p}delivered_kwh": dlv,
        f"{p}delivered_ratio": dlv / req if req > 0 else 0.0,
        f"{p}shortfall_kwh": float(np.sum(report["shortfall_kwh"])),
        f"{p}requests_partial": float(np.sum(np.asarray(report["status"]) != "full")),
    }


def balancing_kpis(name: str, report: Mapping[str, np.ndarray]) -> dict[str, float]:
    """KPIs of the balancing group ``name`` from its settled slots."""
    p = name
    n = len(report["plan_kwh"])
    if n == 0:
        return {f"{p}_slots_settled": 0.0}
    imb = np.asarray(report["imbalance_kwh"], dtype=float)
    plan_abs = float(np.abs(np.asarray(report["plan_kwh"], dtype=float)).sum())
    return {
        f"{p}_slots_settled": float(n),
        f"{p}_plan_kwh": float(np.sum(report["plan_kwh"])),
        f"{p}_actual_kwh": float(np.sum(report["actual_kwh"])),
        f"{p}_shortage_kwh": float(np.maximum(imb, 0.0).sum()),
        f"{p}_surplus_kwh": float(np.maximum(-imb, 0.0).sum()),
        f"{p}_imbalance_kwh": float(np.abs(imb).sum()),
        f"{p}_imbalance_ratio": float(np.abs(imb).sum()) / plan_abs if plan_abs > 0 else 0.0,
        f"{p}_imbalance_cost_jpy": float(np.sum(report["imbalance_cost_jpy"])),
    }


def powerflow_kpis(report: Mapping[str, np.ndarray]) -> dict[str, float]:
    """KPIs of the power flow from its runs (one row per run, ``span_s`` each; the wall
    time per run is added by whoever measured it)."""
    ok = np.asarray(report["converged"], dtype=float) > 0
    span = np.asarray(report["span_s"], dtype=float)
    runs = len(span)

    def agg(fn, col: str) -> float:
        a = np.asarray(report[col], dtype=float)
        return float(fn(a[ok])) if ok.any() else float("nan")

    out_of_band = np.asarray(report["buses_out_of_band"], dtype=float) > 0
    losses = np.asarray(report["losses_w"], dtype=float)
    return {
        "powerflow_runs": float(runs),
        "powerflow_failures": float((~ok).sum()),
        "powerflow_voltage_violation_hours": float(span[ok & out_of_band].sum()) / 3600.0,
        "powerflow_vm_min_pu": agg(np.min, "vm_min_pu"),
        "powerflow_vm_max_pu": agg(np.max, "vm_max_pu"),
        "powerflow_line_loading_max_percent": agg(np.max, "line_loading_max_percent"),
        "powerflow_trafo_loading_max_percent": agg(np.max, "trafo_loading_max_percent"),
        "powerflow_losses_kwh": float((losses[ok] * span[ok]).sum()) / 3600.0 / 1000.0,
    }


def _report_dict(table: pa.Table) -> dict[str, np.ndarray]:
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def compute_kpis(
    t: RunTables, flows: tuple[str, ...], sources: tuple[str, ...], sinks: tuple[str, ...]
) -> dict[str, float]:
    """Every KPI of a run from its tables (see the module docstring).

    ``flows``, ``sources`` and ``sinks`` are the sites' ledger flows (``<flow>_wh``
    names, declared by the populations), each with a ``<flow>_w`` column.
    """
    out = flow_kpis(t, flows)
    out.update(site_kpis(t, sources, sinks))
    out.update(event_kpis(t.events))
    out.update(ageing_kpis(t))
    out.update(hpwh_kpis(t))
    out.update(hvac_kpis(t))
    out.update(system_kpis(t))
    vpp = t.meta.get(META + "vpp")
    if vpp is not None and f"{vpp}_report" in t.reports:
        out.update(vpp_kpis(vpp, _report_dict(t.reports[f"{vpp}_report"])))
    bg = t.meta.get(META + "balancing_group")
    if bg is not None and f"{bg}_report" in t.reports:
        out.update(balancing_kpis(bg, _report_dict(t.reports[f"{bg}_report"])))
    if "powerflow_report" in t.reports:
        out.update(powerflow_kpis(_report_dict(t.reports["powerflow_report"])))
    return {
        k: (float(v) if not (isinstance(v, float) and math.isnan(v)) else float("nan"))
        for k, v in out.items()
    }
