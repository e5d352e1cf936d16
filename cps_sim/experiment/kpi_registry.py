"""The KPI registry: every KPI of ``kpis.json`` with its unit, formula and meaning.

One entry per KPI (or per family of names, ``<placeholder>``); ``docs/kpis.md`` is
generated from it (:mod:`cps_sim.experiment.kpi_docs`) and the computation lives in
:mod:`cps_sim.experiment.kpis`.  Formulas are written in terms of the columns of the
result tables: ``Σ x`` sums column ``x`` over the rows (the ticks after any warm-up),
``h`` is the tick length in hours (``tick_s / 3600``), so ``Σ x_w · h`` is energy in Wh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Kpi:
    """One KPI (``name`` may hold a ``<placeholder>`` for a family of names)."""

    name: str
    unit: str
    formula: str
    meaning: str


@dataclass(frozen=True)
class Family:
    """KPIs that appear together, when a part of the scenario is present."""

    key: str
    title: str
    when: str
    source: str
    kpis: tuple[Kpi, ...]
    intro: str = ""
    computed_here: bool = True  # False: computed elsewhere (named in ``source``)

    def matches(self, name: str) -> Kpi | None:
        for k in self.kpis:
            if _pattern_match(k.name, name):
                return k
        return None


def _pattern_match(pattern: str, name: str) -> bool:
    """``<x>`` stands for any text; ``<x.>`` (ending in a dot) for an optional prefix."""
    if "<" not in pattern:
        return pattern == name
    parts = re.split(r"(<[^>]+>)", pattern)
    rx = "".join(
        (r"(?:[^.]+\.)?" if p.endswith(".>") else ".+") if p.startswith("<") else re.escape(p)
        for p in parts
    )
    return re.fullmatch(rx, name) is not None


# ----------------------------------------------------------------------------- the registry

# Flows of the site ledger with a column ``<flow>_w`` and a KPI ``<flow>_kwh``.  The
# flows themselves are declared by the populations (world/populations); this only says
# how their totals read.
ENERGY = Family(
    "energy",
    "Energy totals of the sites",
    "always",
    "timeseries.parquet",
    (
        Kpi(
            "<flow>_kwh",
            "kWh",
            "Σ <flow>_w · h / 1000",
            "Energy of one ledger flow over the run (one KPI per flow column; the flows and "
            "their meaning are listed with the columns of timeseries.parquet).",
        ),
    ),
    intro="One KPI per energy flow of the sites' ledger, e.g. `grid_import_kwh`, "
    "`pv_generation_kwh`, `ev_discharge_kwh`, `deferrable_kwh`, `battery_fade_kwh`, "
    "`measured_correction_kwh`.",
)

CONSUMPTION = (
    "load_w + deferrable_w + (ev_charging_w − ev_discharge_w) + "
    "(battery_charge_w − battery_discharge_w)"
)

SITES = Family(
    "sites",
    "Site KPIs",
    "always",
    "timeseries.parquet",
    (
        Kpi(
            "consumption_kwh",
            "kWh",
            f"Σ ({CONSUMPTION}) · h / 1000",
            "Net energy used at the sites: load served (heat-pump water heaters included), "
            "deferrable processes, EV charging net of what EVs gave back (V2H/V2G), and what "
            "stationary batteries took net of what they gave back (their conversion losses, "
            "self-discharge, capacity fade and change of stored energy). By the sites' AC "
            "balance it equals Σ (grid_import_w + pv_generation_w − grid_export_w) · h / 1000.",
        ),
        Kpi(
            "pv_self_consumed_kwh",
            "kWh",
            "Σ (pv_generation_w − min(grid_export_w, pv_generation_w)) · h / 1000",
            "PV energy used on site (directly, or stored in a battery or EV): per tick, "
            "exported energy counts as PV first.",
        ),
        Kpi(
            "self_consumption",
            "1",
            "pv_self_consumed_kwh / pv_generation_kwh (NaN without PV)",
            "Share of the PV generation used on site (self-consumption rate as in the "
            "PV-storage literature, Luthander et al. 2015, Appl. Energy 142:80-94: PV "
            "stored in a battery or EV counts as self-consumed). In [0, 1].",
        ),
        Kpi(
            "self_sufficiency",
            "1",
            "max(Σ min(pv_generation_w − min(grid_export_w, pv_generation_w), "
            f"{CONSUMPTION}) · h, 0) / 1000 / consumption_kwh (NaN when consumption_kwh ≤ 0)",
            "Share of the sites' consumption covered by their own PV (self-sufficiency or "
            "autarky rate, Luthander et al. 2015). Per tick the covered part is the "
            "self-consumed PV (the numerator of self-consumption), less any energy stores "
            "exported to the grid beyond that tick's imports; equivalently 1 − grid energy "
            "used / consumption, where a tick's grid energy used is its import less the "
            "export no PV covered (a community battery serving the neighbours). 0 without "
            "PV. In [0, 1].",
        ),
        Kpi(
            "peak_import_kw",
            "kW",
            "max(grid_import_w) / 1000",
            "Largest import of all sites together averaged over one settlement tick (the "
            "interval at which the simulator reads the meters, `tick_s`).",
        ),
        Kpi(
            "peak_import_30min_kw",
            "kW",
            "max over clock half-hours of mean(grid_import_w) / 1000 (NaN when tick_s does "
            "not divide 1800 s)",
            "Largest import averaged over a 30-min demand-metering interval, the billing "
            "demand of Japanese high-voltage contracts (最大需要電力). Half-hours are "
            "aligned to the clock (UTC multiples of 1800 s, the local half-hours in every "
            "zone whose offset is a multiple of 30 min).",
        ),
        Kpi(
            "peak_site_import_kw",
            "kW",
            "max(peak_site_import_w) / 1000",
            "Largest import of any single site, averaged over one tick.",
        ),
        Kpi(
            "energy_cost_jpy",
            "JPY",
            "Σ (grid_import_w · import_price_jpy_per_kwh − grid_export_w · "
            "export_price_jpy_per_kwh) · h / 1000",
            "Import bill minus export revenue at the tariff of each tick.",
        ),
        Kpi(
            "co2_kg",
            "kg",
            "Σ grid_import_w · h / 1000 · grid_co2_g_per_kwh / 1000",
            "Emissions of the imported electricity at the grid's intensity in each tick "
            "(the system layer's marginal-mix intensity when a `system:` block is present, "
            "else `emissions.grid_co2_g_per_kwh`). Exports are not credited.",
        ),
        Kpi(
            "carbon_cost_jpy",
            "JPY",
            "Σ grid_import_w · h / 1000 · grid_co2_g_per_kwh / 1e6 · carbon_price_jpy_per_t",
            "Carbon price paid on the imported electricity's emissions.",
        ),
        Kpi("cost_jpy", "JPY", "energy_cost_jpy + carbon_cost_jpy", "Total cost of the sites."),
        Kpi(
            "stored_initial_kwh",
            "kWh",
            "metadata cps_sim.stored_initial_wh / 1000",
            "Energy in all batteries and EVs at the start of the counted period (after the "
            "warm-up).",
        ),
        Kpi(
            "stored_final_kwh",
            "kWh",
            "stored_wh of the last row / 1000",
            "Energy in all batteries and EVs at the end of the run.",
        ),
        Kpi(
            "balance_residual_wh",
            "Wh",
            "Σ (grid_import_w + pv_generation_w + measured_correction_w − load_w − "
            "grid_export_w − ev_driving_w − battery_loss_w − ev_loss_w − battery_fade_w − "
            "deferrable_w) · h − (stored_final − stored_initial)",
            "Energy-balance residual of the whole run (floating-point noise; the run stops "
            "if a tick's residual is not).",
        ),
        Kpi(
            "balance_max_tick_residual_wh",
            "Wh",
            "max |balance_residual_wh|",
            "Largest residual of one tick.",
        ),
        Kpi("sites", "1", "metadata cps_sim.sites", "Number of sites."),
        Kpi("evs", "1", "metadata cps_sim.evs", "Number of EVs."),
        Kpi("ticks", "1", "number of rows", "Settlement ticks counted (after the warm-up)."),
    ),
)

EV_EVENTS = Family(
    "ev_events",
    "EV departures",
    "always (0 / NaN without EVs)",
    "events.parquet",
    (
        Kpi("ev_departures", "1", "count of rows with kind = departure", "Departures."),
        Kpi(
            "ev_unmet_at_departure_kwh",
            "kWh",
            "Σ unmet_wh of departures / 1000",
            "Energy missing to each driver's `departure_soc_target` when leaving.",
        ),
        Kpi(
            "ev_departures_below_target",
            "1",
            "count of departures with unmet_wh > 1e-6",
            "Departures below the driver's target.",
        ),
        Kpi(
            "ev_soc_at_departure_mean",
            "1",
            "mean soc of departures (NaN without)",
            "Mean state of charge when leaving.",
        ),
    ),
)

HEAT_PUMPS = Family(
    "heat_pumps",
    "Heat-pump water heaters",
    "`sites[*].heat_pump_water_heater`",
    "timeseries_groups.parquet (the group's rows)",
    (
        Kpi(
            "<group.>heat_pump_kwh",
            "kWh",
            "Σ heat_pump_w · h / 1000",
            "Electricity of the water heaters (it is part of `load_w`).",
        ),
        Kpi(
            "<group.>hot_water_delivered_kwh_th",
            "kWh_th",
            "Σ hot_water_delivered_w_th · h / 1000",
            "Hot water drawn.",
        ),
        Kpi(
            "<group.>hot_water_unmet_kwh_th",
            "kWh_th",
            "Σ hot_water_unmet_w_th · h / 1000",
            "Hot water the tanks could not supply.",
        ),
        Kpi(
            "<group.>hpwh_tank_loss_kwh_th",
            "kWh_th",
            "Σ hpwh_tank_loss_w_th · h / 1000",
            "Standing losses of the tanks.",
        ),
        Kpi(
            "<group.>hpwh_cop_mean",
            "1",
            "Σ heat_pump_heat_w_th / Σ heat_pump_w",
            "Seasonal COP: heat into the tanks per unit of electricity (NaN if none).",
        ),
    ),
    intro="The `<group.>` prefix (the site group's name and a dot) appears only when "
    "more than one group has water heaters.",
)

SPACE = Family(
    "space_conditioning",
    "Space conditioning (room air-conditioners, space-heating heat pumps)",
    "`sites[*].space_conditioning`",
    "timeseries_groups.parquet (the group's rows)",
    (
        Kpi(
            "<group.>hvac_kwh",
            "kWh",
            "Σ hvac_w · h / 1000",
            "Electricity of the units (it is part of `load_w`).",
        ),
        Kpi(
            "<group.>hvac_heating_kwh_th",
            "kWh_th",
            "Σ hvac_heating_w_th · h / 1000",
            "Heat delivered to the rooms.",
        ),
        Kpi(
            "<group.>hvac_cooling_kwh_th",
            "kWh_th",
            "Σ hvac_cooling_w_th · h / 1000",
            "Heat removed from the rooms.",
        ),
        Kpi(
            "<group.>hvac_cop_mean",
            "1",
            "Σ (hvac_heating_w_th + hvac_cooling_w_th) / Σ hvac_w",
            "Seasonal COP / EER: heat moved per unit of electricity (NaN if none).",
        ),
        Kpi(
            "<group.>hvac_discomfort_kh",
            "K·h",
            "Σ hvac_discomfort_kh",
            "Degree-hours outside the comfort band, summed over the units.",
        ),
    ),
    intro="The `<group.>` prefix appears only when more than one group has these units.",
)

AGEING = Family(
    "battery_ageing",
    "Battery ageing",
    "`sites[*].battery.ageing`",
    "timeseries.parquet",
    (
        Kpi(
            "battery_soh_mean",
            "1",
            "battery_soh_mean of the last row",
            "Mean state of health (usable capacity / initial) of the ageing batteries.",
        ),
        Kpi("battery_soh_min", "1", "battery_soh_min of the last row", "Smallest one."),
    ),
)

SYSTEM_FLOWS = {  # KPI stem -> column
    "demand": "system_demand_w",
    "background_demand": "system_background_demand_w",
    "data_centre": "system_data_centre_w",
    "site_import": "system_site_import_w",
    "site_export": "system_site_export_w",
    "wind": "system_wind_w",
    "utility_pv": "system_utility_pv_w",
    "plants": "system_plants_w",
    "electrolyser": "system_electrolyser_w",
    "export": "system_export_w",
    "curtailed": "system_curtailment_w",
    "unserved": "system_unserved_w",
    "overgeneration": "system_overgeneration_w",
    "electrolyser_curtailment_avoided": "system_electrolyser_curtailment_avoided_w",
    "electrolyser_export_displaced": "system_electrolyser_export_displaced_w",
    "electrolyser_overgeneration_avoided": "system_electrolyser_overgeneration_avoided_w",
}
_RE = "system_wind_mwh + system_utility_pv_mwh + system_site_export_mwh"

SYSTEM = Family(
    "system",
    "Power system",
    "`system`",
    "timeseries.parquet (system_* columns)",
    (
        Kpi(
            "system_<quantity>_mwh",
            "MWh",
            "Σ system_<quantity>_w · h / 1e6",
            "Energy of one system quantity: demand, background_demand, data_centre, "
            "site_import, site_export, wind, utility_pv, plants, electrolyser, export "
            "(interconnector), unserved, overgeneration, and one per plant technology "
            "(e.g. system_coal_mwh); `system_curtailed_mwh` from system_curtailment_w; "
            "`system_substation_overload_mwh` when a network is given.",
        ),
        Kpi(
            "system_storage_charge_mwh",
            "MWh",
            "Σ max(system_storage_w, 0) · h / 1e6",
            "Energy into grid storage.",
        ),
        Kpi(
            "system_storage_discharge_mwh",
            "MWh",
            "Σ max(−system_storage_w, 0) · h / 1e6",
            "Energy out of grid storage.",
        ),
        Kpi(
            "system_electrolyser_curtailment_avoided_mwh",
            "MWh",
            "Σ system_electrolyser_curtailment_avoided_w · h / 1e6",
            "Part of the electrolysers' energy that would otherwise have been curtailed. "
            "Exact counterfactual: the surplus goes to storage before electrolysers, and "
            "plants do not see the electrolysers, so a run without them differs only in "
            "how the surplus splits between export, curtailment and overgeneration.",
        ),
        Kpi(
            "system_electrolyser_export_displaced_mwh",
            "MWh",
            "Σ system_electrolyser_export_displaced_w · h / 1e6",
            "Part of the electrolysers' energy that would otherwise have been exported over "
            "the interconnector (`export_capacity_mw`).",
        ),
        Kpi(
            "system_electrolyser_overgeneration_avoided_mwh",
            "MWh",
            "Σ system_electrolyser_overgeneration_avoided_w · h / 1e6",
            "Part that would otherwise have been must-run overgeneration. The three parts "
            "sum to system_electrolyser_mwh.",
        ),
        Kpi(
            "system_generation_mwh",
            "MWh",
            f"system_plants_mwh + max({_RE} − system_curtailed_mwh, 0)",
            "Energy generated in the area: plants, wind, utility PV and the sites' feed-in, "
            "net of curtailment (storage is not a source).",
        ),
        Kpi(
            "system_share_<technology>",
            "1",
            "system_<technology>_mwh / system_generation_mwh",
            "Share of one plant technology in the generation.",
        ),
        Kpi(
            "system_share_renewable",
            "1",
            f"max({_RE} − system_curtailed_mwh, 0) / system_generation_mwh",
            "Renewable share of the generation.",
        ),
        Kpi(
            "system_re_share",
            "1",
            "1 − system_plants_mwh / (system_demand_mwh − system_unserved_mwh)",
            "Share of the served demand not met by plants (renewables directly or via "
            "storage, which charges only from surplus).",
        ),
        Kpi(
            "system_curtailment_share",
            "1",
            f"system_curtailed_mwh / ({_RE})",
            "Share of the renewable energy curtailed.",
        ),
        Kpi("system_co2_t", "t", "Σ system_co2_kg / 1000", "Emissions of the plants."),
        Kpi(
            "system_co2_intensity_g_per_kwh",
            "g/kWh",
            "system_co2_t · 1e6 / ((system_demand_mwh − system_unserved_mwh) · 1000)",
            "Average intensity of the served demand.",
        ),
        Kpi(
            "system_cost_jpy",
            "JPY",
            "Σ system_cost_jpy",
            "Generation cost (fuel, O&M and carbon price in the merit order).",
        ),
        Kpi(
            "system_cost_jpy_per_kwh",
            "JPY/kWh",
            "system_cost_jpy / ((system_demand_mwh − system_unserved_mwh) · 1000)",
            "Average generation cost of the served demand.",
        ),
        Kpi(
            "system_carbon_cost_jpy",
            "JPY",
            "Σ system_carbon_cost_jpy (= Σ system_co2_kg / 1000 · system_carbon_price_jpy_per_t)",
            "Carbon price paid on the plants' emissions (the price of each tick: flat, or the "
            "GX path by fiscal year with system.carbon_price: emissions).",
        ),
        Kpi("system_h2_kg", "kg", "Σ system_h2_kg", "Hydrogen produced."),
        Kpi(
            "system_electrolyser_utilisation",
            "1",
            "system_electrolyser_mwh / (rated electrolyser MW · ticks · h)",
            "Capacity factor of the electrolysers.",
        ),
        Kpi(
            "system_loss_of_load_hours",
            "h",
            "count(system_unserved_w > 1e-3) · h",
            "Hours with unserved demand.",
        ),
        Kpi(
            "system_storage_min_soc",
            "1",
            "min(system_storage_soc) (NaN without storage)",
            "Lowest state of charge of grid storage at a tick's end.",
        ),
        Kpi("system_peak_demand_mw", "MW", "max(system_demand_w) / 1e6", "Peak demand."),
        Kpi(
            "system_peak_residual_demand_mw",
            "MW",
            "max(system_residual_demand_w) / 1e6",
            "Peak of demand minus wind, utility PV and the sites' feed-in.",
        ),
        Kpi(
            "system_max_balance_error_w",
            "W",
            "max |system_balance_error_w|",
            "Largest error of the system's per-tick balance (noise).",
        ),
    ),
)

_FY = "Σ over the ticks whose system_fiscal_year is <year> of "
SYSTEM_FY = Family(
    "system_fy",
    "Power system per fiscal year",
    "a `system:` block and a run that spans two or more Japanese fiscal years",
    "timeseries.parquet (system_* columns, system_fiscal_year)",
    (
        Kpi(
            "system_fy<year>_hours",
            "h",
            "count(ticks of the year) · h",
            "Hours of the run "
            "in that fiscal year (a partial year at either end is shorter than 8,760 h).",
        ),
        Kpi(
            "system_fy<year>_carbon_price_jpy_per_t",
            "JPY/t",
            "mean of system_carbon_price_jpy_per_t over the year's ticks",
            "Carbon price the plants paid in that fiscal year.",
        ),
        Kpi(
            "system_fy<year>_demand_mwh",
            "MWh",
            _FY + "system_demand_w · h / 1e6",
            "Area demand in that fiscal year.",
        ),
        Kpi(
            "system_fy<year>_<technology>_mwh",
            "MWh",
            _FY + "system_<technology>_w · h / 1e6",
            "Generation of one plant technology in that fiscal year (the dispatch shift).",
        ),
        Kpi(
            "system_fy<year>_share_<technology>",
            "1",
            "system_fy<year>_<technology>_mwh / (plants + renewables net of curtailment)",
            "Share of that year's generation, as system_share_<technology>.",
        ),
        Kpi(
            "system_fy<year>_renewable_mwh",
            "MWh",
            "max(wind + utility PV + sites' feed-in − curtailment, 0) of the year",
            "Renewable generation used in that fiscal year.",
        ),
        Kpi(
            "system_fy<year>_share_renewable",
            "1",
            "system_fy<year>_renewable_mwh / (plants + renewables net of curtailment)",
            "Renewable share of that year's generation.",
        ),
        Kpi(
            "system_fy<year>_curtailed_mwh",
            "MWh",
            _FY + "system_curtailment_w · h / 1e6",
            "Renewables curtailed in that fiscal year.",
        ),
        Kpi(
            "system_fy<year>_unserved_mwh",
            "MWh",
            _FY + "system_unserved_w · h / 1e6",
            "Demand not served in that fiscal year.",
        ),
        Kpi(
            "system_fy<year>_co2_t",
            "t",
            _FY + "system_co2_kg / 1000",
            "Plants' emissions in that fiscal year.",
        ),
        Kpi(
            "system_fy<year>_co2_intensity_g_per_kwh",
            "g/kWh",
            "system_fy<year>_co2_t · 1e6 / (served MWh of the year · 1000)",
            "Average intensity of the demand served in that fiscal year.",
        ),
        Kpi(
            "system_fy<year>_cost_jpy",
            "JPY",
            _FY + "system_cost_jpy",
            "Generation cost in that fiscal year (fuel, O&M and carbon price).",
        ),
        Kpi(
            "system_fy<year>_cost_jpy_per_kwh",
            "JPY/kWh",
            "system_fy<year>_cost_jpy / (served MWh of the year · 1000)",
            "Average generation cost of that year's served demand.",
        ),
        Kpi(
            "system_fy<year>_carbon_cost_jpy",
            "JPY",
            _FY + "system_carbon_cost_jpy",
            "Carbon price paid on that year's emissions.",
        ),
    ),
    intro="The system KPIs of each Japanese fiscal year (April to March, by the start of "
    "each tick) that a multi-year run touches, e.g. `system_fy2028_coal_mwh`, "
    "`system_fy2033_co2_t`: how dispatch, CO2 and cost move as the carbon price steps up "
    "along the GX path (scenarios/carbon_price_path.yaml). Their sums over the years "
    "equal the run's system KPIs (tested).",
)

_U = "system_storage_<unit>_"
STORAGE_UNITS = Family(
    "storage_units",
    "Named grid-storage units",
    "`system.storage[*].name` (e.g. a new and a second-life battery side by side)",
    "timeseries.parquet (system_storage_<unit>_* columns) and the unit's settings",
    (
        Kpi(
            "system_storage_absorbed_mwh",
            "MWh",
            "Σ system_storage_absorbed_w · h / 1e6",
            "Surplus (renewables and must-run above demand) that all grid storage took "
            "instead of it being exported, curtailed or overgenerated.",
        ),
        Kpi(
            _U + "charge_mwh",
            "MWh",
            "Σ max(system_storage_<unit>_w, 0) · h / 1e6",
            "Energy the unit took (AC).",
        ),
        Kpi(
            _U + "discharge_mwh",
            "MWh",
            "Σ max(−system_storage_<unit>_w, 0) · h / 1e6",
            "Energy the unit gave back (AC): the energy it shifted.",
        ),
        Kpi(
            _U + "absorbed_surplus_mwh",
            "MWh",
            "Σ system_storage_<unit>_absorbed_w · h / 1e6",
            "Surplus the unit absorbed (curtailment avoided when there is no export).",
        ),
        Kpi(
            _U + "soh_start",
            "1",
            "storage.initial_soh",
            "State of health at the start (share of the cells' original capacity).",
        ),
        Kpi(_U + "soh_end", "1", "last system_storage_<unit>_soh", "State of health at the end."),
        Kpi(
            _U + "fade",
            "1",
            "soh_start − soh_end",
            "Capacity fade over the run, in points of the original capacity.",
        ),
        Kpi(
            _U + "capacity_lost_mwh",
            "MWh",
            "fade · energy_mwh / initial_soh",
            "Capacity lost over the run.",
        ),
        Kpi(
            _U + "equivalent_full_cycles",
            "1",
            "(charge_mwh + discharge_mwh) / (2 · energy_mwh)",
            "AC throughput in full cycles of the capacity at the start.",
        ),
        Kpi(
            _U + "capex_share_jpy",
            "JPY",
            "capex_jpy_per_kwh · energy_mwh · 1000 · run years / lifetime_years",
            "Capital cost charged to the run (straight line over lifetime_years, no "
            "discounting; run years = ticks · h / 8760). Only with capex_jpy_per_kwh.",
        ),
        Kpi(
            _U + "cost_jpy_per_mwh_shifted",
            "JPY/MWh",
            "capex_share_jpy / discharge_mwh (NaN when nothing was discharged)",
            "Capital cost per MWh the unit shifted in time (charging energy and losses "
            "are not priced). Only with capex_jpy_per_kwh.",
        ),
    ),
)

VPP = Family(
    "vpp",
    "VPP",
    "`vpp`",
    "<vpp>_report.parquet (one row per request)",
    (
        Kpi("<vpp>_requests", "1", "number of rows", "Requests received."),
        Kpi("<vpp>_requested_kwh", "kWh", "Σ requested_kwh", "Energy requested."),
        Kpi(
            "<vpp>_available_kwh",
            "kWh",
            "Σ available_kwh",
            "Energy the fleet could offer when each request arrived.",
        ),
        Kpi("<vpp>_dispatched_kwh", "kWh", "Σ dispatched_kwh", "Energy dispatched to members."),
        Kpi(
            "<vpp>_delivered_kwh",
            "kWh",
            "Σ delivered_kwh",
            "Energy delivered (measured response against the baseline).",
        ),
        Kpi(
            "<vpp>_delivered_ratio",
            "1",
            "<vpp>_delivered_kwh / <vpp>_requested_kwh (0 without requests)",
            "Share of the requested energy delivered.",
        ),
        Kpi("<vpp>_shortfall_kwh", "kWh", "Σ shortfall_kwh", "Requested but not delivered."),
        Kpi(
            "<vpp>_requests_partial",
            "1",
            "count of rows with status ≠ full",
            "Requests delivered below `full_delivery_ratio`.",
        ),
    ),
    intro="`<vpp>` is the aggregator's `vpp.name` (default `vpp`). Requests that start "
    "in the warm-up are not counted.",
)

BALANCING = Family(
    "balancing_group",
    "Balancing group (計画値同時同量)",
    "`balancing_group`",
    "<bg>_report.parquet (one row per settled 30-min slot)",
    (
        Kpi("<bg>_slots_settled", "1", "number of rows", "Slots settled (the plan known)."),
        Kpi("<bg>_plan_kwh", "kWh", "Σ plan_kwh", "Planned net import of the members."),
        Kpi("<bg>_actual_kwh", "kWh", "Σ actual_kwh", "Actual net import of the members."),
        Kpi(
            "<bg>_shortage_kwh",
            "kWh",
            "Σ max(imbalance_kwh, 0)",
            "Imbalance where the group drew more than planned (不足インバランス).",
        ),
        Kpi(
            "<bg>_surplus_kwh",
            "kWh",
            "Σ max(−imbalance_kwh, 0)",
            "Imbalance where the group drew less than planned (余剰インバランス).",
        ),
        Kpi("<bg>_imbalance_kwh", "kWh", "Σ |imbalance_kwh|", "Absolute imbalance."),
        Kpi(
            "<bg>_imbalance_ratio",
            "1",
            "Σ |imbalance_kwh| / Σ |plan_kwh| (0 when the plan is 0)",
            "Imbalance as the balancing-group rules define it: per 30-min slot, actual − plan "
            "(計画値同時同量), summed in absolute value and divided by the absolute planned "
            "energy of the same slots — the denominator is the plan, not the actual.",
        ),
        Kpi(
            "<bg>_imbalance_cost_jpy",
            "JPY",
            "Σ imbalance_cost_jpy",
            "Imbalance charge at the slot's price (positive = the group pays).",
        ),
    ),
    intro="`<bg>` is `balancing_group.name` (default `bg`).",
)

POWERFLOW = Family(
    "powerflow",
    "Power flow",
    "`powerflow`",
    "powerflow_report.parquet (one row per run)",
    (
        Kpi("powerflow_runs", "1", "number of rows", "Power-flow runs."),
        Kpi("powerflow_failures", "1", "count of rows with converged = 0", "Runs that failed."),
        Kpi(
            "powerflow_voltage_violation_hours",
            "h",
            "Σ span_s of converged rows with buses_out_of_band > 0 / 3600",
            "Hours with a bus voltage outside the band (each run stands for the ticks until "
            "the next).",
        ),
        Kpi("powerflow_vm_min_pu", "pu", "min vm_min_pu of converged rows", "Lowest voltage."),
        Kpi("powerflow_vm_max_pu", "pu", "max vm_max_pu of converged rows", "Highest voltage."),
        Kpi(
            "powerflow_line_loading_max_percent",
            "%",
            "max line_loading_max_percent",
            "Highest line loading.",
        ),
        Kpi(
            "powerflow_trafo_loading_max_percent",
            "%",
            "max trafo_loading_max_percent",
            "Highest transformer loading.",
        ),
        Kpi(
            "powerflow_losses_kwh",
            "kWh",
            "Σ losses_w · span_s / 3600 / 1000 (converged)",
            "Network losses.",
        ),
        Kpi(
            "powerflow_wall_s_per_run",
            "s",
            "wall time / runs",
            "Wall time per power-flow run (measured; not from the tables).",
        ),
    ),
)

ORACLE = Family(
    "oracle",
    "Perfect-foresight oracle",
    "`oracle` (or `cps-sim run --oracle`)",
    "oracle.json (the LP solution; docs/oracle.md)",
    (
        Kpi(
            "oracle_<kpi>",
            "as <kpi>",
            "the oracle replay's <kpi>",
            "The KPI reached by the perfect-foresight optimum of the same run.",
        ),
        Kpi("regret_<kpi>", "as <kpi>", "<kpi> − oracle_<kpi>", "The run's gap to the optimum."),
        Kpi(
            "regret<suffix>",
            "see docs/oracle.md",
            "see docs/oracle.md",
            "Other regret figures of the oracle block.",
        ),
    ),
    computed_here=False,
)

BRIDGE = Family(
    "bridge",
    "Hardware-in-the-loop",
    "`cps-sim hil` / `replay`",
    "bridge_events.parquet and the transport's counters (docs/hil.md)",
    (
        Kpi(
            "bridge_<counter>",
            "1",
            "transport counter",
            "Messages sent, received, rejected (one KPI per reason), sequence gaps, ...",
        ),
        Kpi("hil_<fact>", "-", "run setting", "Speed and whether the run was interrupted."),
    ),
    computed_here=False,
)

FAMILIES: tuple[Family, ...] = (
    ENERGY,
    SITES,
    EV_EVENTS,
    HEAT_PUMPS,
    SPACE,
    AGEING,
    SYSTEM_FY,
    STORAGE_UNITS,
    SYSTEM,
    VPP,
    BALANCING,
    POWERFLOW,
    ORACLE,
    BRIDGE,
)


def definition(name: str, flows: tuple[str, ...] = ()) -> tuple[Family, Kpi] | None:
    """The registry entry that defines KPI ``name`` (exact names before patterns)."""
    for fam in FAMILIES:
        for k in fam.kpis:
            if k.name == name:
                return fam, k
    if name.endswith("_kwh") and name.removesuffix("_kwh") + "_wh" in flows:
        return ENERGY, ENERGY.kpis[0]
    for fam in FAMILIES:
        if fam is ENERGY:
            continue
        k = fam.matches(name)
        if k is not None:
            return fam, k
    return None
