"""What a run is about: one summary block per enabled part of the scenario.

``cps-sim run`` prints, and ``cps-sim report`` tabulates and plots, a block for every
part the scenario enables, so that a system scenario shows its dispatch and adequacy,
a VPP scenario how much of the requested energy was delivered, a microgrid what was
served and shed while islanded:

=================  =========================================  ==========================
block              enabled by                                 shows
=================  =========================================  ==========================
sites              always                                     import/export, PV, peak,
                                                              self-consumption/-
                                                              sufficiency, cost, CO2
batteries          ``sites[*].battery``                       charged, discharged,
                                                              losses, fade, SoH
EVs                ``sites[*].ev``                            strategy, charged, V2X
                                                              discharge, driven, charged
                                                              in PV surplus, departures
                                                              below target, unmet
heat pumps         ``sites[*].heat_pump_water_heater``        electricity, hot water
                                                              delivered/unmet, COP
deferrables        ``sites[*].deferrable``                    delivered, unmet by the
                                                              deadline
EMS                ``ems``                                    kind per site group
islanding          ``ems.*.outages``                          outage hours, served and
                                                              shed energy per group,
                                                              grid flow while islanded
power system       ``system``                                 demand and peak,
                                                              generation by technology
                                                              and share, unserved,
                                                              loss-of-load hours,
                                                              curtailment, CO2, cost
grid storage       ``system.storage``                         charged, discharged,
                                                              minimum SoC
hydrogen           ``system.electrolysers``                   electrolyser energy, kg H2,
                                                              utilisation
VPP                ``vpp``                                    requested vs delivered,
                                                              shortfall, partial
                                                              requests
balancing group    ``balancing_group``                        plan vs actual, imbalance
power flow         ``powerflow``                              voltage band, loading,
                                                              losses
=================  =========================================  ==========================

Everything is read from a results directory (``manifest.json`` for the scenario,
``kpis.json``, and the Parquet time series where a block needs per-tick data), so the
printed summary and the report say the same thing about the same files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

WRAP = 100
# The per-block plots that ``cps-sim report`` may write (experiment/outdir.py counts them
# as report files, so a report folder can be re-rendered).
BLOCK_PLOT_FILES = frozenset(
    {
        "system_dispatch.png",
        "system_storage.png",
        "hydrogen.png",
        "vpp_requests.png",
        "islanding.png",
        "evs.png",
        "heat_pumps.png",
    }
)


@dataclass
class Block:
    """One summary block: a title and (label, formatted value) items, in print order."""

    key: str
    title: str
    items: list[tuple[str, str]] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)  # the numbers behind the items

    def add(
        self, label: str, value: float, unit: str = "", fmt: str = ",.1f", key: str | None = None
    ) -> None:
        self.items.append((label, _fmt(value, unit, fmt)))
        self.values[key or label] = float(value)

    def text(self, label: str, value: str) -> None:
        self.items.append((label, value))


def _fmt(v: float, unit: str, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    text = f"{100.0 * v if unit == '%' else v:{fmt}}"
    if text.startswith("-") and not any(c in "123456789" for c in text):
        text = text[1:]  # -0.0 from a rounding residue reads as 0.0
    return f"{text} {unit}".rstrip()


def _energy(kwh: float) -> tuple[float, str]:
    """A kWh amount in kWh, MWh or GWh, whichever reads best."""
    a = abs(kwh)
    if a >= 1e6:
        return kwh / 1e6, "GWh"
    if a >= 1e4:
        return kwh / 1e3, "MWh"
    return kwh, "kWh"


def _add_energy(b: Block, label: str, kwh: float, key: str) -> None:
    v, unit = _energy(kwh)
    b.items.append((label, f"{v:,.1f} {unit}"))
    b.values[key] = float(kwh)


# ----------------------------------------------------------------------------- inputs


@dataclass
class RunData:
    """What the summary reads from a results directory."""

    scenario: dict[str, Any]
    kpis: dict[str, float]
    out_dir: Path
    _ts: pd.DataFrame | None = None
    _groups: pd.DataFrame | None = None

    @classmethod
    def load(cls, out_dir: str | Path) -> RunData:
        from cps_sim.experiment.results import read_kpis, read_manifest

        out = Path(out_dir)
        manifest = read_manifest(out / "manifest.json")
        # kpis.json writes NaN (e.g. self-consumption without PV) as null
        kpis = read_kpis(out / "kpis.json")
        return cls(manifest.get("scenario") or {}, kpis, out)

    @property
    def ts(self) -> pd.DataFrame:
        if self._ts is None:
            self._ts = _read(self.out_dir / "timeseries.parquet")
        return self._ts

    @property
    def groups(self) -> pd.DataFrame:
        if self._groups is None:
            self._groups = _read(self.out_dir / "timeseries_groups.parquet")
        return self._groups

    def table(self, name: str) -> pd.DataFrame | None:
        path = self.out_dir / f"{name}.parquet"
        if not path.exists() and not path.is_symlink():
            return None
        from cps_sim.experiment.results import read_parquet_result

        return read_parquet_result(path)


def _read(path: Path) -> pd.DataFrame:
    from cps_sim.experiment.results import read_parquet_result

    df = read_parquet_result(path)
    if "time" in df:
        df["time"] = pd.DatetimeIndex(df["time"])
    return df


def _sites(sc: dict[str, Any], part: str) -> list[dict[str, Any]]:
    return [g for g in sc.get("sites") or [] if g.get(part) is not None]


# ----------------------------------------------------------------------------- blocks


def run_blocks(out_dir: str | Path) -> list[Block]:
    """The summary blocks of the run written to ``out_dir``."""
    return blocks(RunData.load(out_dir))


def blocks(d: RunData) -> list[Block]:
    sc, k = d.scenario, d.kpis
    out = [_sites_block(sc, k)]
    if _sites(sc, "battery"):
        out.append(_battery_block(k))
    if _sites(sc, "ev"):
        out.append(_ev_block(sc, k, d))
    if _sites(sc, "heat_pump_water_heater"):
        out.append(_heat_pump_block(k))
    if _sites(sc, "deferrable"):
        out.append(_deferrable_block(k))
    ems = sc.get("ems") or {}
    if ems:
        b = Block("ems", "EMS")
        for group, spec in sorted(ems.items()):
            members = spec.get("member_groups") or []
            b.text(group, spec.get("kind", "?") + (f" (+ {', '.join(members)})" if members else ""))
        out.append(b)
        if any(spec.get("outages") for spec in ems.values()):
            out.append(_islanding_block(sc, d))
    system = sc.get("system")
    if system is not None:
        out.append(_system_block(system, k))
        if system.get("storage"):
            out.append(_grid_storage_block(k))
        if system.get("electrolysers"):
            out.append(_hydrogen_block(k))
    if sc.get("vpp") is not None:
        out.append(_vpp_block(sc["vpp"].get("name", "vpp"), k))
    if sc.get("balancing_group") is not None:
        out.append(_bg_block(sc["balancing_group"].get("name", "bg"), k))
    if sc.get("powerflow") is not None:
        out.append(_powerflow_block(k))
    return out


def _sites_block(sc: dict[str, Any], k: dict[str, float]) -> Block:
    b = Block("sites", f"sites ({int(k.get('sites', 0)):,})")
    _add_energy(b, "grid import", k["grid_import_kwh"], "grid_import_kwh")
    _add_energy(b, "export", k["grid_export_kwh"], "grid_export_kwh")
    _add_energy(b, "PV", k["pv_generation_kwh"], "pv_generation_kwh")
    if k.get("curtailment_kwh", 0.0) > 0:
        _add_energy(b, "PV curtailed", k["curtailment_kwh"], "curtailment_kwh")
    _add_energy(b, "load", k["load_kwh"], "load_kwh")
    b.add("peak import", k["peak_import_kw"], "kW", key="peak_import_kw")
    b.add("self-consumption", k["self_consumption"], "%", key="self_consumption")
    b.add("self-sufficiency", k["self_sufficiency"], "%", key="self_sufficiency")
    b.add("cost", k["cost_jpy"], "JPY", ",.0f", key="cost_jpy")
    b.add("CO2", k["co2_kg"], "kg", ",.0f", key="co2_kg")
    if k.get("unserved_kwh", 0.0) > 0:
        _add_energy(b, "unserved", k["unserved_kwh"], "unserved_kwh")
    return b


def _battery_block(k: dict[str, float]) -> Block:
    b = Block("batteries", "batteries")
    _add_energy(b, "charged", k["battery_charge_kwh"], "battery_charge_kwh")
    _add_energy(b, "discharged", k["battery_discharge_kwh"], "battery_discharge_kwh")
    _add_energy(b, "losses", k["battery_loss_kwh"], "battery_loss_kwh")
    if "battery_soh_mean" in k:
        _add_energy(b, "fade", k.get("battery_fade_kwh", 0.0), "battery_fade_kwh")
        b.add("state of health mean", k["battery_soh_mean"], "%", ".2f", key="battery_soh_mean")
        b.add("min", k["battery_soh_min"], "%", ".2f", key="battery_soh_min")
    return b


def _strategy(sc: dict[str, Any]) -> str:
    ctl = sc.get("control") or {}
    names = {str(ctl.get("ev_strategy") or "none (charge on arrival)")}
    for g in (ctl.get("groups") or {}).values():
        names.add(str(g.get("ev_strategy") or "none (charge on arrival)"))
    return ", ".join(sorted(names))


def _ev_block(sc: dict[str, Any], k: dict[str, float], d: RunData) -> Block:
    b = Block("evs", f"EVs ({int(k.get('evs', 0)):,}, strategy {_strategy(sc)})")
    _add_energy(b, "charged", k["ev_charging_kwh"], "ev_charging_kwh")
    if k.get("ev_discharge_kwh", 0.0) > 0:
        _add_energy(b, "V2X discharged", k["ev_discharge_kwh"], "ev_discharge_kwh")
    _add_energy(b, "driven", k["ev_driving_kwh"], "ev_driving_kwh")
    b.add(
        "charged in PV surplus",
        _pv_surplus_share(d.ts),
        "%",
        ".1f",
        key="ev_charged_in_pv_surplus_share",
    )
    b.add("departures", k["ev_departures"], "", ",.0f", key="ev_departures")
    b.add(
        "below target",
        k["ev_departures_below_target"],
        "",
        ",.0f",
        key="ev_departures_below_target",
    )
    _add_energy(
        b, "unmet at departure", k["ev_unmet_at_departure_kwh"], "ev_unmet_at_departure_kwh"
    )
    if k.get("ev_trip_shortfall_kwh", 0.0) > 0:
        _add_energy(b, "trip shortfall", k["ev_trip_shortfall_kwh"], "ev_trip_shortfall_kwh")
    return b


def _pv_surplus_share(ts: pd.DataFrame) -> float:
    """Share of EV charging energy that fell in ticks, per tick, of PV above the load
    (all sites together: min(EV charging, max(PV - load, 0)) / EV charging)."""
    ev = ts["ev_charging_w"].to_numpy()
    surplus = np.clip(ts["pv_generation_w"].to_numpy() - ts["load_w"].to_numpy(), 0.0, None)
    total = ev.sum()
    return float(np.minimum(ev, surplus).sum() / total) if total > 0 else float("nan")


def _heat_pump_block(k: dict[str, float]) -> Block:
    b = Block("heat_pumps", "heat-pump water heaters")
    for prefix in sorted(
        {key[: -len("heat_pump_kwh")] for key in k if key.endswith("heat_pump_kwh")}
    ):
        tag = f"{prefix.rstrip('.')} " if prefix else ""
        _add_energy(b, f"{tag}electricity", k[f"{prefix}heat_pump_kwh"], f"{prefix}heat_pump_kwh")
        _add_energy(
            b,
            f"{tag}hot water delivered",
            k[f"{prefix}hot_water_delivered_kwh_th"],
            f"{prefix}hot_water_delivered_kwh_th",
        )
        _add_energy(
            b,
            f"{tag}unmet",
            k[f"{prefix}hot_water_unmet_kwh_th"],
            f"{prefix}hot_water_unmet_kwh_th",
        )
        b.add(f"{tag}COP", k[f"{prefix}hpwh_cop_mean"], "", ".2f", key=f"{prefix}hpwh_cop_mean")
    return b


def _deferrable_block(k: dict[str, float]) -> Block:
    b = Block("deferrables", "deferrable processes")
    _add_energy(b, "delivered", k.get("deferrable_kwh", 0.0), "deferrable_kwh")
    _add_energy(
        b, "unmet by the deadline", k.get("deferrable_unmet_kwh", 0.0), "deferrable_unmet_kwh"
    )
    return b


def outage_mask(sc: dict[str, Any], times: pd.DatetimeIndex, tick_s: float) -> np.ndarray:
    """Fraction of each tick [t, t + tick) inside any EMS outage window."""
    start = times.as_unit("ns").asi8.astype(np.float64) / 1e9
    frac = np.zeros(len(times))
    for spec in (sc.get("ems") or {}).values():
        for a, e in spec.get("outages") or []:
            a_s = pd.Timestamp(a).value / 1e9
            e_s = pd.Timestamp(e).value / 1e9
            overlap = np.clip(np.minimum(start + tick_s, e_s) - np.maximum(start, a_s), 0.0, None)
            frac = np.minimum(frac + overlap / tick_s, 1.0)
    return frac


def _islanding_block(sc: dict[str, Any], d: RunData) -> Block:
    """Per microgrid (an EMS with outages: its group and member groups behind one point of
    common coupling): outage hours, load served and shed while islanded, and the flow
    through the PCC while islanded (net of the sites' exchanges on the private lines),
    which must be 0 both ways."""
    b = Block("islanding", "islanding (grid outage)")
    tick_s = float(sc.get("tick_s", 900.0))
    h = tick_s / 3600.0
    g = d.groups
    total = {"outage": 0.0, "served": 0.0, "shed": 0.0, "pcc_import": 0.0, "pcc_export": 0.0}
    per_group: list[tuple[str, float, float]] = []
    for name, spec in sorted((sc.get("ems") or {}).items()):
        if not spec.get("outages"):
            continue
        one = {"ems": {name: spec}}
        members = [name, *(spec.get("member_groups") or [])]
        net = None
        frac = None
        for m in members:
            part = g[g["group"] == m]
            if part.empty:
                continue
            f = outage_mask(one, pd.DatetimeIndex(part["time"]), tick_s)
            frac = f if frac is None else frac
            load = float((part["load_w"].to_numpy() * f).sum() * h / 1000.0)
            shed = float((part["unserved_w"].to_numpy() * f).sum() * h / 1000.0)
            total["served"] += load - shed
            total["shed"] += shed
            per_group.append((m, shed, load))
            flow = part["grid_import_w"].to_numpy() - part["grid_export_w"].to_numpy()
            net = flow if net is None else net + flow
        if net is None or frac is None:
            continue
        total["outage"] += float(frac.sum() * h)
        total["pcc_import"] += float((np.clip(net, 0, None) * frac).sum() * h / 1000.0)
        total["pcc_export"] += float((np.clip(-net, 0, None) * frac).sum() * h / 1000.0)
    b.add("outage", total["outage"], "h", ",.2f", key="outage_hours")
    _add_energy(b, "served", total["served"], "served_in_outage_kwh")
    _add_energy(b, "shed", total["shed"], "shed_in_outage_kwh")
    b.add(
        "PCC import while islanded",
        total["pcc_import"],
        "kWh",
        ",.1f",
        key="pcc_import_in_outage_kwh",
    )
    b.add("PCC export", total["pcc_export"], "kWh", ",.1f", key="pcc_export_in_outage_kwh")
    for m, shed, load in per_group:
        b.text(f"{m} shed", f"{shed:,.1f} of {load:,.1f} kWh")
        b.values[f"{m}_shed_in_outage_kwh"] = shed
    return b


def _system_block(system: dict[str, Any], k: dict[str, float]) -> Block:
    b = Block("system", "power system")
    b.add("demand", k["system_demand_mwh"], "MWh", ",.0f", key="system_demand_mwh")
    b.add("peak", k["system_peak_demand_mw"], "MW", ",.1f", key="system_peak_demand_mw")
    b.add("unserved", k["system_unserved_mwh"], "MWh", ",.3f", key="system_unserved_mwh")
    b.add(
        "loss-of-load", k["system_loss_of_load_hours"], "h", ",.2f", key="system_loss_of_load_hours"
    )
    b.add("curtailed", k["system_curtailed_mwh"], "MWh", ",.1f", key="system_curtailed_mwh")
    b.add("of RE", k["system_curtailment_share"], "%", ".1f", key="system_curtailment_share")
    if k.get("system_export_mwh", 0.0) > 0:
        b.add("exported", k["system_export_mwh"], "MWh", ",.1f", key="system_export_mwh")
    b.add(
        "CO2",
        k["system_co2_intensity_g_per_kwh"],
        "g/kWh",
        ",.0f",
        key="system_co2_intensity_g_per_kwh",
    )
    b.add("cost", k["system_cost_jpy_per_kwh"], "JPY/kWh", ",.2f", key="system_cost_jpy_per_kwh")
    techs = [str(p["technology"]) for p in system.get("plants") or []]
    for t in dict.fromkeys(techs):
        b.text(
            f"gen {t}",
            f"{k.get(f'system_{t}_mwh', 0.0):,.0f} MWh "
            f"({100 * k.get(f'system_share_{t}', 0.0):.1f} %)",
        )
        b.values[f"system_share_{t}"] = k.get(f"system_share_{t}", 0.0)
    re_mwh = (
        k.get("system_wind_mwh", 0.0)
        + k.get("system_utility_pv_mwh", 0.0)
        + k.get("system_site_export_mwh", 0.0)
        - k.get("system_curtailed_mwh", 0.0)
    )
    b.text(
        "gen renewable", f"{re_mwh:,.0f} MWh ({100 * k.get('system_share_renewable', 0.0):.1f} %)"
    )
    b.values["system_share_renewable"] = k.get("system_share_renewable", 0.0)
    years = sorted(
        {int(key[9:13]) for key in k if key.startswith("system_fy") and key[9:13].isdigit()}
    )
    for y in years:  # a multi-year run: one line per fiscal year (dispatch shift, CO2, cost)
        p = f"system_fy{y}_"
        shares = " ".join(
            f"{t} {100 * k.get(f'{p}share_{t}', 0.0):.1f}"
            for t in dict.fromkeys(techs)
            if k.get(f"{p}share_{t}", 0.0) >= 0.0005
        )
        b.text(
            f"FY{y}",
            f"{k.get(p + 'carbon_price_jpy_per_t', 0.0):,.0f} JPY/t, "
            f"{k.get(p + 'co2_intensity_g_per_kwh', 0.0):,.0f} g/kWh, "
            f"{k.get(p + 'cost_jpy_per_kwh', 0.0):,.2f} JPY/kWh, % {shares} "
            f"RE {100 * k.get(p + 'share_renewable', 0.0):.1f}",
        )
        for q in ("carbon_price_jpy_per_t", "co2_t", "co2_intensity_g_per_kwh", "cost_jpy_per_kwh"):
            b.values[p + q] = k.get(p + q, 0.0)
    return b


def _grid_storage_block(k: dict[str, float]) -> Block:
    b = Block("storage", "grid storage")
    b.add("charged", k["system_storage_charge_mwh"], "MWh", ",.1f", key="system_storage_charge_mwh")
    b.add(
        "discharged",
        k["system_storage_discharge_mwh"],
        "MWh",
        ",.1f",
        key="system_storage_discharge_mwh",
    )
    b.add("min SoC", k["system_storage_min_soc"], "%", ".1f", key="system_storage_min_soc")
    units = sorted(
        {
            key[15:-10]
            for key in k
            if key.startswith("system_storage_") and key.endswith("_soh_start")
        }
    )
    for u in units:  # named units: fade, what they absorbed and shifted, and at what cost
        p = f"system_storage_{u}_"
        cost = k.get(p + "cost_jpy_per_mwh_shifted")
        b.text(
            u,
            f"SoH {100 * k[p + 'soh_start']:.1f} -> {100 * k[p + 'soh_end']:.1f} %, "
            f"absorbed {k[p + 'absorbed_surplus_mwh']:,.0f} MWh, "
            f"shifted {k[p + 'discharge_mwh']:,.0f} MWh, "
            f"{k[p + 'equivalent_full_cycles']:,.0f} cycles"
            + ("" if cost is None else f", {cost:,.0f} JPY/MWh shifted"),
        )
        for q in ("soh_end", "fade", "absorbed_surplus_mwh", "discharge_mwh"):
            b.values[p + q] = k.get(p + q, 0.0)
    return b


def _hydrogen_block(k: dict[str, float]) -> Block:
    b = Block("hydrogen", "hydrogen")
    b.add(
        "electrolysers", k["system_electrolyser_mwh"], "MWh", ",.1f", key="system_electrolyser_mwh"
    )
    b.add("H2", k["system_h2_kg"], "kg", ",.0f", key="system_h2_kg")
    b.add(
        "utilisation",
        k["system_electrolyser_utilisation"],
        "%",
        ".1f",
        key="system_electrolyser_utilisation",
    )
    return b


def _vpp_block(name: str, k: dict[str, float]) -> Block:
    p = f"{name}_"
    b = Block("vpp", f"VPP ({name})")
    b.add("requests", k.get(f"{p}requests", 0.0), "", ",.0f", key=f"{p}requests")
    _add_energy(b, "requested", k.get(f"{p}requested_kwh", 0.0), f"{p}requested_kwh")
    _add_energy(b, "delivered", k.get(f"{p}delivered_kwh", 0.0), f"{p}delivered_kwh")
    b.add(
        "delivered share", k.get(f"{p}delivered_ratio", 0.0), "%", ".1f", key=f"{p}delivered_ratio"
    )
    _add_energy(b, "shortfall", k.get(f"{p}shortfall_kwh", 0.0), f"{p}shortfall_kwh")
    b.add(
        "partial or missed requests",
        k.get(f"{p}requests_partial", 0.0),
        "",
        ",.0f",
        key=f"{p}requests_partial",
    )
    return b


def _bg_block(name: str, k: dict[str, float]) -> Block:
    p = f"{name}_"
    b = Block("balancing_group", f"balancing group ({name})")
    b.add("slots settled", k.get(f"{p}slots_settled", 0.0), "", ",.0f", key=f"{p}slots_settled")
    for label, key in (
        ("plan", "plan_kwh"),
        ("actual", "actual_kwh"),
        ("imbalance", "imbalance_kwh"),
    ):
        if f"{p}{key}" in k:
            _add_energy(b, label, k[f"{p}{key}"], f"{p}{key}")
    if f"{p}imbalance_ratio" in k:
        b.add("imbalance ratio", k[f"{p}imbalance_ratio"], "%", ".1f", key=f"{p}imbalance_ratio")
        b.add(
            "imbalance cost",
            k[f"{p}imbalance_cost_jpy"],
            "JPY",
            ",.0f",
            key=f"{p}imbalance_cost_jpy",
        )
    return b


def _powerflow_block(k: dict[str, float]) -> Block:
    b = Block("powerflow", "power flow")
    b.add(
        "voltage min",
        k.get("powerflow_vm_min_pu", float("nan")),
        "pu",
        ".3f",
        key="powerflow_vm_min_pu",
    )
    b.add("max", k.get("powerflow_vm_max_pu", float("nan")), "pu", ".3f", key="powerflow_vm_max_pu")
    b.add(
        "violation",
        k.get("powerflow_voltage_violation_hours", 0.0),
        "h",
        ",.2f",
        key="powerflow_voltage_violation_hours",
    )
    b.add(
        "line loading max",
        k.get("powerflow_line_loading_max_percent", float("nan")) / 100,
        "%",
        ".1f",
        key="powerflow_line_loading_max_percent",
    )
    b.add("losses", k.get("powerflow_losses_kwh", 0.0), "kWh", ",.1f", key="powerflow_losses_kwh")
    return b


# ----------------------------------------------------------------------------- text


def format_blocks(blocks: Iterable[Block], width: int = WRAP) -> str:
    """Two-space indented lines ``title: label value, label value, ...``, wrapped."""
    lines: list[str] = []
    for b in blocks:
        head = f"  {b.title}: "
        line = head
        pad = " " * 4
        for i, (label, value) in enumerate(b.items):
            part = f"{label} {value}" + ("," if i < len(b.items) - 1 else "")
            if len(line) + len(part) + 1 > width and line.strip() != head.strip():
                lines.append(line.rstrip())
                line = pad
            line += part + " "
        lines.append(line.rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots


def plot_blocks(d: RunData, week: pd.DataFrame, out: Path, dpi: int = 110) -> list[Path]:
    """One PNG per enabled block that has something to draw (``week``: local-time
    indexed rows of ``timeseries.parquet`` that the report shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = d.scenario
    made: list[Path] = []

    def save(fig, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        made.append(path)

    system = sc.get("system")
    if system is not None and "system_demand_w" in week:
        save(_plot_system(plt, system, week, d.kpis), "system_dispatch.png")
        if system.get("storage"):
            fig, ax = plt.subplots(figsize=(11, 3.4))
            ax.step(
                week.index,
                week["system_storage_w"] / 1e6,
                where="post",
                color="#3969ac",
                label="storage power (+ charging) [MW]",
            )
            ax.set_ylabel("MW")
            ax2 = ax.twinx()
            ax2.step(
                week.index,
                week["system_storage_soc"],
                where="post",
                color="#e73f74",
                label="state of charge",
            )
            ax2.set_ylim(0, 1.02)
            _legend(ax, ax2)
            ax.set_title("Grid storage")
            save(fig, "system_storage.png")
        if system.get("electrolysers"):
            ts = d.ts.set_index(pd.DatetimeIndex(d.ts["time"]).tz_convert(week.index.tz))
            fig, ax = plt.subplots(figsize=(11, 3.4))
            ax.step(
                ts.index,
                ts["system_electrolyser_w"] / 1e6,
                where="post",
                color="#11a579",
                label="electrolyser power [MW]",
            )
            ax.set_ylabel("MW")
            ax2 = ax.twinx()
            ax2.plot(
                ts.index,
                ts["system_h2_kg"].cumsum() / 1000.0,
                color="#7f3c8d",
                label="hydrogen produced [t, cumulative]",
            )
            ax2.set_ylabel("t H2")
            _legend(ax, ax2)
            ax.set_title("Hydrogen (whole run)")
            save(fig, "hydrogen.png")
    vpp = sc.get("vpp")
    rep = d.table(f"{vpp.get('name', 'vpp')}_report") if vpp is not None else None
    if rep is not None and len(rep):
        fig, ax = plt.subplots(figsize=(11, 3.8))
        t0 = pd.Timestamp(sc["start"]).tz_convert(week.index.tz)
        x = t0 + pd.to_timedelta(rep["start_s"].to_numpy(), unit="s")
        width = (rep["end_s"] - rep["start_s"]).to_numpy() / 86400.0
        ax.bar(x, rep["requested_kwh"], width, align="edge", label="requested", color="#a5aa99")
        ax.bar(
            x, rep["delivered_kwh"], width * 0.6, align="edge", label="delivered", color="#11a579"
        )
        ax.set_ylabel("kWh per request (bar = request window)")
        ratio = d.kpis.get(f"{vpp.get('name', 'vpp')}_delivered_ratio", float("nan"))
        ax.set_title(f"VPP requests: requested vs delivered ({100 * ratio:.1f} % delivered)")
        ax.legend(fontsize=8)
        save(fig, "vpp_requests.png")
    ems = sc.get("ems") or {}
    if any(spec.get("outages") for spec in ems.values()):
        fig = _plot_islanding(plt, d, week.index.tz)
        if fig is not None:
            save(fig, "islanding.png")
    if _sites(sc, "ev") and "ev_charging_w" in week:
        fig, ax = plt.subplots(figsize=(11, 3.6))
        surplus = (week["pv_generation_w"] - week["load_w"]).clip(lower=0) / 1000.0
        ax.fill_between(
            week.index, surplus, step="post", color="#f2b701", alpha=0.4, label="PV above load [kW]"
        )
        ax.step(
            week.index,
            week["ev_charging_w"] / 1000.0,
            where="post",
            color="#11a579",
            label="EV charging [kW]",
        )
        ax.set_ylabel("kW")
        ax2 = ax.twinx()
        ax2.step(
            week.index,
            week["ev_plugged"],
            where="post",
            color="#7f3c8d",
            lw=0.8,
            label="EVs plugged in",
        )
        _legend(ax, ax2)
        ax.set_title(f"EVs (strategy {_strategy(sc)})")
        save(fig, "evs.png")
    if _sites(sc, "heat_pump_water_heater") and "heat_pump_w" in week:
        fig, ax = plt.subplots(figsize=(11, 3.4))
        ax.step(
            week.index,
            week["heat_pump_w"] / 1000.0,
            where="post",
            color="#e73f74",
            label="heat-pump electricity [kW]",
        )
        ax.fill_between(
            week.index,
            week["pv_generation_w"] / 1000.0,
            step="post",
            color="#f2b701",
            alpha=0.3,
            label="PV [kW]",
        )
        ax.set_ylabel("kW")
        ax2 = ax.twinx()
        ax2.step(
            week.index,
            week["hpwh_tank_temp_mean_c"],
            where="post",
            color="#3969ac",
            label="tank temperature (mean) [°C]",
        )
        _legend(ax, ax2)
        ax.set_title("Heat-pump water heaters")
        save(fig, "heat_pumps.png")
    return made


def _legend(ax, ax2) -> None:
    lines, labels = ax.get_legend_handles_labels()
    l2, lb2 = ax2.get_legend_handles_labels()
    ax.legend(lines + l2, labels + lb2, fontsize=8, loc="upper left")


def _plot_system(plt, system: dict[str, Any], week: pd.DataFrame, k: dict[str, float]):
    fig, (ax, axb) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [4, 1]})
    techs = list(dict.fromkeys(str(p["technology"]) for p in system.get("plants") or []))
    mw = week / 1e6
    re = (
        mw["system_wind_w"]
        + mw["system_utility_pv_w"]
        + mw["system_site_export_w"]
        - mw["system_curtailment_w"]
    ).clip(lower=0)
    series = {t: mw.get(f"system_{t}_w", 0.0 * re) for t in techs}
    series["renewable (net of curtailment)"] = re
    series["storage discharge"] = (-mw["system_storage_w"]).clip(lower=0)
    series["unserved"] = mw["system_unserved_w"]
    ax.stackplot(mw.index, *series.values(), labels=list(series), step="post", alpha=0.85)
    ax.step(mw.index, mw["system_demand_w"], where="post", color="black", lw=1.0, label="demand")
    if mw["system_curtailment_w"].max() > 0:
        ax.step(
            mw.index,
            mw["system_curtailment_w"],
            where="post",
            color="#e73f74",
            lw=0.8,
            ls="--",
            label="curtailed",
        )
    ax.set_ylabel("MW")
    ax.set_title("System dispatch by technology")
    ax.legend(fontsize=7, ncol=4, loc="upper left", bbox_to_anchor=(0, -0.1))
    shares = {t: k.get(f"system_share_{t}", 0.0) for t in techs}
    shares["renewable"] = k.get("system_share_renewable", 0.0)
    axb.barh(list(shares), [100 * v for v in shares.values()], color="#3969ac")
    for i, v in enumerate(shares.values()):
        axb.text(100 * v, i, f" {100 * v:.1f} %", va="center", fontsize=8)
    axb.set_xlabel("share of generation, whole run [%]")
    axb.set_xlim(0, max(100 * max(shares.values(), default=0) * 1.3, 1))
    axb.set_title(
        f"unserved {k.get('system_unserved_mwh', 0):,.2f} MWh, "
        f"LOLH {k.get('system_loss_of_load_hours', 0):g}",
        fontsize=9,
    )
    return fig


def _plot_islanding(plt, d: RunData, tz):
    sc = d.scenario
    tick_s = float(sc.get("tick_s", 900.0))
    g = d.groups
    times = pd.DatetimeIndex(g["time"])
    frac = outage_mask(sc, times, tick_s)
    if not (frac > 0).any():
        return None
    t_in = times[frac > 0]
    lo, hi = t_in.min() - pd.Timedelta(hours=12), t_in.max() + pd.Timedelta(hours=12)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5.6), sharex=True)
    for name in dict.fromkeys(g["group"].tolist()):
        part = g[g["group"] == name]
        t = pd.DatetimeIndex(part["time"]).tz_convert(tz)
        sel = (t >= lo.tz_convert(tz)) & (t <= hi.tz_convert(tz))
        net = (part["grid_import_w"] - part["grid_export_w"]).to_numpy()[sel] / 1000.0
        ax1.step(t[sel], net, where="post", label=f"{name} net import")
        ax2.step(
            t[sel], part["unserved_w"].to_numpy()[sel] / 1000.0, where="post", label=f"{name} shed"
        )
    for ax in (ax1, ax2):
        ax.axvspan(
            t_in.min().tz_convert(tz),
            (t_in.max() + pd.Timedelta(seconds=tick_s)).tz_convert(tz),
            color="#e73f74",
            alpha=0.12,
            label="outage",
        )
        ax.legend(fontsize=7, ncol=4)
    ax1.set_ylabel("kW")
    ax2.set_ylabel("kW")
    ax1.set_title("Islanding: grid flow (must be 0 in the outage) and load shed per group")
    return fig
