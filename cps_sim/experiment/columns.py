"""What every column of the result tables means: unit, sign and description.

The recorder writes these into the Arrow schema of each Parquet file (field
metadata ``unit`` and ``description``; the table's metadata carries the sign
convention), and ``docs/kpis.md`` lists them (generated, :mod:`.kpi_docs`).
Columns are matched by exact name or by a ``<placeholder>`` pattern; the flow
columns come from the flows the device populations declare
(:data:`cps_sim.world.populations.FLOW_DEFS`), so a new flow is documented where
it is declared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

SIGN_NOTE = (
    "Rows are settlement ticks [time, time + tick_s) (UTC start; ticks of a warm-up are not "
    "written). Columns ending in _w are tick-average powers in W, each named for the "
    "direction it carries and so >= 0 (grid_import_w: drawn from the grid; grid_export_w: "
    "fed into it); the exception is measured_correction_w, a signed correction of stored "
    "energy from measurements of devices bound to hardware (+ added to the stores). "
    "Energy of a tick = power × tick_s / 3600 [Wh]. Ledger, every tick: grid_import + "
    "pv_generation + measured_correction = load + grid_export + ev_driving + battery_loss + "
    "ev_loss + battery_fade + deferrable + Δstored_wh (balance_residual_wh is what is left). "
    "Sites' AC side, every tick: grid_import + pv_generation + battery_discharge + "
    "ev_discharge = load + deferrable + ev_charging + battery_charge + grid_export. Inside "
    "the simulator power into a device is positive."
)


@dataclass(frozen=True)
class Column:
    name: str  # exact name or a pattern with <placeholder>s
    unit: str
    description: str

    def matches(self, name: str) -> bool:
        if "<" not in self.name:
            return self.name == name
        rx = re.sub(r"<[^>]+>", ".+", re.escape(self.name).replace(r"\<", "<").replace(r"\>", ">"))
        return re.fullmatch(rx, name) is not None


_ROLE = {
    "source": "ledger source",
    "sink": "ledger sink",
    "info": "not a ledger term: a transfer inside the books, or a quantity reported for analysis",
}


def flow_columns() -> list[Column]:
    """One ``<flow>_w`` column per ledger flow the populations declare."""
    from cps_sim.world.populations import FLOW_DEFS

    out = []
    for f in FLOW_DEFS:
        unit = "W (signed)" if f.name == "measured_correction_wh" else "W"
        out.append(
            Column(
                f.name.removesuffix("_wh") + "_w",
                unit,
                f"{f.description[:1].upper()}{f.description[1:]} ({_ROLE[f.role]}).",
            )
        )
    return out


SITE_COLUMNS: tuple[Column, ...] = (
    Column("time", "UTC timestamp", "Start of the tick."),
    Column("losses_w", "W", "battery_loss_w + ev_loss_w."),
    Column("peak_site_import_w", "W", "Largest import of a single site in the tick."),
    Column(
        "battery_soc_mean",
        "1",
        "Energy in all stationary batteries / their capacity at "
        "the tick's end (NaN without batteries).",
    ),
    Column("ev_soc_mean", "1", "Energy in all EVs / their capacity at the tick's end."),
    Column("ev_plugged", "count", "EVs plugged in at the tick's end."),
    Column("irradiance_w_m2", "W/m²", "Global horizontal irradiance, tick mean."),
    Column("import_price_jpy_per_kwh", "JPY/kWh", "Import tariff of the tick."),
    Column("export_price_jpy_per_kwh", "JPY/kWh", "Export (feed-in) tariff of the tick."),
    Column("carbon_price_jpy_per_t", "JPY/t", "Carbon price of the tick."),
    Column(
        "grid_co2_g_per_kwh",
        "g/kWh",
        "CO2 intensity of the imported electricity in the "
        "tick: the system layer's (system_co2_g_per_kwh) with a system: block, else "
        "emissions.grid_co2_g_per_kwh.",
    ),
    Column("balance_residual_wh", "Wh", "Sources − sinks − Δstored of the tick (noise)."),
    Column("stored_wh", "Wh", "Energy in all batteries and EVs at the tick's end."),
    Column("battery_soh_mean", "1", "Mean state of health of the ageing batteries."),
    Column("battery_soh_min", "1", "Lowest state of health of the ageing batteries."),
    Column(
        "heat_pump_w", "W", "Electric power of the heat-pump water heaters (included in load_w)."
    ),
    Column("heat_pump_heat_w_th", "W_th", "Heat the water heaters put into their tanks."),
    Column("hot_water_delivered_w_th", "W_th", "Hot water drawn from the tanks."),
    Column("hot_water_unmet_w_th", "W_th", "Hot water the tanks could not supply."),
    Column("hpwh_tank_loss_w_th", "W_th", "Standing losses of the tanks."),
    Column("hpwh_tank_temp_mean_c", "°C", "Mean tank temperature at the tick's end."),
    Column("hvac_w", "W", "Electric power of the space-conditioning units (included in load_w)."),
    Column(
        "hvac_heat_w_th",
        "W_th (signed)",
        "Heat the units move into the rooms (+ heating, − cooling).",
    ),
    Column("hvac_heating_w_th", "W_th", "Heat delivered to the rooms."),
    Column("hvac_cooling_w_th", "W_th", "Heat removed from the rooms."),
    Column(
        "hvac_discomfort_kh",
        "K·h",
        "Degree-hours outside the comfort band in the tick, summed over the units (an amount).",
    ),
    Column("hvac_indoor_temp_mean_c", "°C", "Mean indoor temperature."),
)

GROUP_COLUMNS: tuple[Column, ...] = (
    Column("group", "text", "Site group (sites[*].name); one block of rows per group."),
    Column("stored_wh", "Wh", "Energy in the group's batteries and EVs at the tick's end."),
)

SYSTEM_COLUMNS: tuple[Column, ...] = (
    Column("system_demand_w", "W", "Area demand: background + data centres + the sites' import."),
    Column("system_background_demand_w", "W", "Area demand outside the modelled sites."),
    Column("system_data_centre_w", "W", "Data-centre demand."),
    Column("system_site_import_w", "W", "The sites' import (= grid_import_w)."),
    Column(
        "system_site_export_w",
        "W",
        "The sites' feed-in (= grid_export_w), counted as renewable supply.",
    ),
    Column("system_wind_w", "W", "Wind farms."),
    Column("system_utility_pv_w", "W", "Utility PV."),
    Column("system_residual_demand_w", "W", "Demand − wind − utility PV − the sites' feed-in."),
    Column(
        "system_storage_absorbed_w",
        "W",
        "Grid storage charging from the surplus (renewables and must-run above demand) that "
        "would otherwise be exported, curtailed or overgenerated; written with named storage "
        "units.",
    ),
    Column(
        "system_storage_<unit>_absorbed_w",
        "W",
        "The part of system_storage_absorbed_w that one named storage unit took (in proportion "
        "to its charging power).",
    ),
    Column(
        "system_storage_<unit>_soh",
        "1",
        "State of health of a named storage unit at the tick's end: capacity / the cells' "
        "original capacity (starts at its initial_soh).",
    ),
    Column(
        "system_storage_<unit>_stored_wh", "Wh", "Energy stored in a named unit at the tick's end."
    ),
    Column(
        "system_storage_<unit>_w",
        "W (signed)",
        "Power of a named storage unit, + charging / − discharging.",
    ),
    Column(
        "system_<technology>_w", "W", "Generation of one plant technology (e.g. system_coal_w)."
    ),
    Column("system_plants_w", "W", "Generation of all plants."),
    Column("system_storage_w", "W (signed)", "Grid storage, + charging / − discharging."),
    Column("system_storage_soc", "1", "Grid storage state of charge at the tick's end."),
    Column(
        "system_storage_stored_wh",
        "Wh",
        "Energy in all grid storage at the tick's end (written with storage; where the first "
        "row starts: storage_stored_initial_wh of the cps_sim.system metadata).",
    ),
    Column(
        "system_storage_loss_w",
        "W",
        "Grid storage conversion losses, self-discharge and capacity fade; every tick "
        "system_storage_w · h = system_storage_loss_w · h + Δsystem_storage_stored_wh.",
    ),
    Column("system_electrolyser_w", "W", "Electrolysers' electric power."),
    Column(
        "system_electrolyser_curtailment_avoided_w",
        "W",
        "Part of the electrolysers' power that would otherwise have been curtailed.",
    ),
    Column(
        "system_electrolyser_export_displaced_w",
        "W",
        "Part that would otherwise have been exported over the interconnector.",
    ),
    Column(
        "system_electrolyser_overgeneration_avoided_w",
        "W",
        "Part that would otherwise have been must-run overgeneration.",
    ),
    Column("system_h2_kg", "kg", "Hydrogen produced in the tick (an amount, not a rate)."),
    Column("system_export_w", "W", "Export over the interconnector."),
    Column("system_curtailment_w", "W", "Renewables curtailed."),
    Column("system_unserved_w", "W", "Demand not served."),
    Column("system_overgeneration_w", "W", "Must-run surplus nobody could take."),
    Column("system_co2_g_per_kwh", "g/kWh", "Plants' emissions per kWh served in the tick."),
    Column("system_co2_kg", "kg", "Plants' emissions in the tick (an amount)."),
    Column(
        "system_carbon_price_jpy_per_t",
        "JPY/t",
        "Carbon price in the plants' merit "
        "order in the tick (system.carbon_price: flat, or the scenario's GX path).",
    ),
    Column(
        "system_carbon_cost_jpy",
        "JPY",
        "Carbon price paid on the plants' emissions in "
        "the tick (an amount; part of system_cost_jpy).",
    ),
    Column(
        "system_fiscal_year",
        "year",
        "Japanese fiscal year (April-March) of the tick's "
        "start, e.g. 2026 from 2026-04-01 to 2027-03-31.",
    ),
    Column("system_cost_jpy", "JPY", "Generation cost in the tick (an amount)."),
    Column("system_cost_jpy_per_kwh", "JPY/kWh", "Generation cost per kWh served."),
    Column("system_balance_error_w", "W", "Error of the system balance (noise)."),
    Column("system_substation_overload_w", "W", "Flow above the substations' capacity."),
)

SMART_METER_COLUMNS: tuple[Column, ...] = (
    Column(
        "time",
        "UTC",
        "A local 30-minute boundary at which the registers were fixed "
        "(ECHONET Lite 0xEA/0xEB); the first row of a site is where the counted period "
        "starts.",
    ),
    Column("time_s", "s", "Seconds since the start of the counted period."),
    Column("group", "-", "Site group of the meter."),
    Column("site", "-", "Site index over all groups (the numbering of record.sites)."),
    Column(
        "import_register",
        "count",
        "Cumulative energy register, normal direction (import "
        "from the grid; 0xE0/0xEA): whole units of resolution_wh, wrapping at the digit "
        "count.",
    ),
    Column(
        "export_register",
        "count",
        "Cumulative energy register, reverse direction (export; 0xE3/0xEB), as import_register.",
    ),
    Column(
        "import_cumulative_wh", "Wh", "import_register × resolution_wh (the wrap is not undone)."
    ),
    Column("export_cumulative_wh", "Wh", "export_register × resolution_wh."),
    Column(
        "import_interval_wh",
        "Wh",
        "Import in the 30 minutes up to this boundary, from the "
        "registers (across a wrap); NaN in a site's first row.",
    ),
    Column(
        "export_interval_wh",
        "Wh",
        "Export in the 30 minutes up to this boundary; NaN in a site's first row.",
    ),
    Column(
        "instantaneous_power_w",
        "W (signed)",
        "Instantaneous power (0xE7) at the boundary: "
        "the site's grid power just before it, whole watts, + import / − export.",
    ),
    Column("resolution_wh", "Wh", "Energy of one register count (0xE1 unit × 0xD3 coefficient)."),
)

OTHER_COLUMNS: tuple[Column, ...] = (
    Column("<bg>_actual_w", "W", "Balancing group: members' net import."),
    Column("<bg>_plan_w", "W", "Balancing group: planned net import of the slot."),
    Column("<bg>_imbalance_price_jpy_per_kwh", "JPY/kWh", "Balancing group: imbalance price."),
    Column("powerflow_vm_min_pu", "pu", "Power flow: lowest bus voltage (NaN between runs)."),
    Column("powerflow_vm_max_pu", "pu", "Power flow: highest bus voltage."),
    Column("powerflow_line_loading_max_percent", "%", "Power flow: highest line loading."),
    Column("powerflow_trafo_loading_max_percent", "%", "Power flow: highest transformer loading."),
    Column("powerflow_buses_out_of_band", "count", "Power flow: buses outside the voltage band."),
    Column("powerflow_losses_w", "W", "Power flow: network losses."),
    Column("powerflow_converged", "1", "Power flow: 1 if the run converged."),
)


def timeseries_columns() -> list[Column]:
    """Every documented column of ``timeseries.parquet`` (flows first)."""
    return [*flow_columns(), *SITE_COLUMNS, *SYSTEM_COLUMNS, *OTHER_COLUMNS]


def describe(name: str, columns: list[Column] | None = None) -> Column | None:
    cols = columns if columns is not None else timeseries_columns()
    exact = [c for c in cols if c.name == name]
    if exact:
        return exact[0]
    return next((c for c in cols if c.matches(name)), None)


def annotate(table: pa.Table, extra: tuple[Column, ...] = ()) -> pa.Table:
    """``table`` with each documented field's ``unit`` and ``description`` in its metadata."""
    cols = [*extra, *timeseries_columns()]
    fields = []
    for f in table.schema:
        c = describe(f.name, cols)
        fields.append(
            f.with_metadata({"unit": c.unit, "description": c.description}) if c is not None else f
        )
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
