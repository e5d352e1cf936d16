"""Scenario schema of the bulk power system above the sites (``system:`` block).

The sites (homes, buildings, ...) are simulated by the engine; the *system* is the
balancing area they sit in: background demand, data centres, utility PV, wind farms,
the dispatchable plant fleet, grid storage, electrolysers and an interconnector.
:func:`cps_sim.grid.system.build_system` turns a :class:`SystemSpec` into a World
tick hook that dispatches the area every settlement tick.

Frozen pydantic models, ``extra="forbid"``, units in field names (MW, MWh, GWh at the
edge; SI inside the hook).  Every default is documented; values the seed document
does not give are labelled ASSUMPTION (see ``docs/system.md``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cps_sim.models.plants import TECHNOLOGIES

Technology = Literal[
    "nuclear",
    "coal",
    "gas_ccgt",
    "gas_ocgt",
    "oil",
    "hydrogen_turbine",
    "ammonia_firing",
    "coal_ccs",
    "gas_ccs",
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )


# ----------------------------------------------------------------------------- demand


class AreaDemandSpec(_Model):
    """Background demand of the balancing area (everything not simulated as a site).

    ``area_mix`` blends three shapes of :mod:`cps_sim.models.loads` by energy share:
    households (``profile="japan"``), offices (commercial) and 2-shift factories
    (industry, Mon-Sat).  The blend is scaled so that each calendar year holds
    ``annual_gwh`` exactly; a run shorter than a year receives its share of that
    energy under the shape (a winter week gets more than a spring week).
    """

    annual_gwh: float = Field(
        1000.0,
        le=1e7,
        ge=0,
        description="Background demand per calendar "
        "year [GWh]. Default 1,000 GWh = 1 TWh, about 1/1000 of Japan's "
        "FY2022 demand (ASSUMPTION: national ~1,000 TWh, order read "
        "from the seed's demand chart axis, seed L5826-5842).",
    )
    profile: Literal["area_mix", "household", "commercial", "industrial", "flat", "tso_csv"] = (
        Field(
            "area_mix",
            description="Shape of the background demand; tso_csv: measured area "
            "demand from a TSO エリア需給実績 file (tso_csv; annual_gwh does not apply).",
        )
    )
    tso_csv: str | None = Field(
        None, description="tso_csv: the file, relative to the scenario (cps_sim/data/tso.py)."
    )
    tso_column: str = Field(
        "area_demand_mw",
        description="tso_csv: which column is the "
        "background demand (area_demand_mw, or e.g. total_mw).",
    )
    tso_scale: float = Field(
        1.0,
        gt=0,
        le=10,
        description="tso_csv: factor on the measured demand (e.g. 0.01 for 1 % of the TSO area).",
    )
    tso_time_label: Literal["start", "end"] = Field(
        "start", description="tso_csv: TIME stamps the interval start or end."
    )
    residential_share: float = Field(
        0.30,
        ge=0,
        le=1,
        description="area_mix: household share of energy (ASSUMPTION, order of Japan's split).",
    )
    commercial_share: float = Field(
        0.35, ge=0, le=1, description="area_mix: commercial share (ASSUMPTION)."
    )
    industrial_share: float = Field(
        0.35, ge=0, le=1, description="area_mix: industrial share (ASSUMPTION)."
    )
    noise_std: float = Field(
        0.02,
        ge=0,
        le=0.5,
        description="Lognormal noise (sigma) of the "
        "15-min shape; small, because an area aggregates many customers.",
    )

    @model_validator(mode="after")
    def _shares(self) -> AreaDemandSpec:
        if self.profile == "tso_csv" and not self.tso_csv:
            raise ValueError("profile 'tso_csv' needs tso_csv (an エリア需給実績 CSV file)")
        s = self.residential_share + self.commercial_share + self.industrial_share
        if self.profile == "area_mix" and abs(s - 1.0) > 1e-6:
            raise ValueError(
                f"residential_share + commercial_share + industrial_share must be "
                f"1 for profile 'area_mix', got {s:g}"
            )
        return self


class DataCentreDemandSpec(_Model):
    """Data-centre demand of the area: flat, growing by ``annual_growth_rate`` per year.

    The seed's +~200 TWh by 2050 (electrification + data centres, seed L5795-5797) is
    *national*; scale it to the area yourself (e.g. × area share of national demand).
    """

    annual_gwh: float = Field(
        0.0, le=1e7, ge=0, description="Demand in the first calendar year [GWh]."
    )
    annual_growth_rate: float = Field(
        0.0, gt=-1, le=1, description="Continuous growth per year (0.1 = +10 %/yr)."
    )


# ----------------------------------------------------------------------------- weather


class LullSpec(_Model):
    """A window with reduced wind and sun (曇天無風, seed L5846-5849): a scenario device,
    not a weather model; the factors multiply the synthetic weather in the window."""

    start_day: float = Field(le=366 * 30, ge=0, description="Start, days after the run start.")
    duration_days: float = Field(gt=0, le=366, description="Length of the window [days].")
    wind_speed_factor: float = Field(0.2, ge=0, le=1, description="Multiplies wind speed.")
    irradiance_factor: float = Field(
        0.3, ge=0, le=1, description="Multiplies GHI, DNI and DHI (clouds)."
    )


class SystemWeatherSpec(_Model):
    """Weather of the wind and utility-PV sites: :func:`cps_sim.models.weather.
    synthetic_weather` at the scenario location, seeded from stream ``system/weather``."""

    mean_wind_speed_m_s: float = Field(
        4.5,
        gt=0,
        le=20,
        description="Mean wind speed at "
        "10 m [m/s]. ASSUMPTION: a coastal site, capacity "
        "factor ~30 % at 120 m hubs (the generator's Tokyo "
        "default is 3.2 m/s).",
    )
    wind_weibull_shape: float = Field(
        2.0, gt=0.5, le=5, description="Shape parameter k of the Weibull wind-speed distribution."
    )
    wind_time_constant_h: float = Field(
        6.0, gt=0, le=240, description="Autocorrelation time of the wind speed [h]."
    )
    clear_sky_index_scale: float = Field(
        1.0,
        gt=0,
        le=1.3,
        description="Multiplies the "
        "monthly mean clear-sky indices (Tokyo defaults); "
        "results are capped at 0.95.",
    )
    day_to_day_correlation: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Correlation of the daily clear-sky index from one day to the next (0..1).",
    )
    lulls: list[LullSpec] = Field(
        default_factory=list,
        max_length=100,
        description="Windows with reduced wind and sun (dunkelflaute).",
    )


# ----------------------------------------------------------------------------- supply


class UtilityPvSpec(_Model):
    """A utility-scale PV plant (pvlib PVWatts chain, :mod:`cps_sim.models.solar`)."""

    name: str = Field(
        "utility_pv", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Name in the results."
    )
    capacity_mw: float = Field(le=1e6, gt=0, description="DC capacity [MW].")
    dc_ac_ratio: float = Field(
        1.25,
        ge=1,
        le=3,
        description="DC/AC ratio; the inverter "
        "clips at capacity/ratio (ASSUMPTION: typical 1.2-1.3).",
    )
    tilt_deg: float = Field(20.0, ge=0, le=90, description="Panel tilt [deg].")
    azimuth_deg: float = Field(180.0, ge=0, lt=360, description="180 = south.")


class WindFarmSpec(_Model):
    """A wind farm of identical turbines (windpowerlib's bundled power curves)."""

    name: str = Field("wind", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Name in the results.")
    turbine_type: str = Field(
        "E-126/4200",
        description="A type from windpowerlib's bundled "
        "OEDB library, see cps_sim.models.wind.turbine_types().",
    )
    n_turbines: int = Field(ge=1, le=100_000, description="Number of turbines.")
    hub_height_m: float = Field(
        120.0,
        gt=10,
        le=300,
        description="Hub height [m]; the 10-m wind speed is scaled to it (logarithmic profile).",
    )
    efficiency: float = Field(
        0.88, gt=0, le=1, description="Wake and availability losses (ASSUMPTION: ~12 %)."
    )

    @field_validator("turbine_type")
    @classmethod
    def _known(cls, v: str) -> str:
        from cps_sim.models.wind import turbine_types

        types = turbine_types()
        if v not in types:
            close = [t for t in types if v.split("/")[0] in t][:5]
            raise ValueError(
                f"unknown turbine_type {v!r}; similar: {close or types[:5]} "
                f"(see cps_sim.models.wind.turbine_types())"
            )
        return v


class PlantSpec(_Model):
    """Dispatchable plants of one technology (defaults: :data:`cps_sim.models.plants.
    TECHNOLOGIES`).  ``capacity_mw`` is split into ``units`` identical units so that
    minimum stable load applies per unit, not to the whole fleet."""

    technology: Technology = Field(
        description="Plant technology; sets the defaults of cost, CO2, "
        "minimum load and ramps (models/plants.py)."
    )
    capacity_mw: float = Field(le=1e6, gt=0, description="Total capacity of this entry [MW].")
    units: int = Field(1, ge=1, le=1000, description="Identical units sharing the capacity.")
    availability: float = Field(1.0, ge=0, le=1, description="Derating / outages (0..1).")
    min_stable_fraction: float | None = Field(
        None, ge=0, le=1, description="Default: technology default."
    )
    ramp_percent_per_min: float | None = Field(
        None, gt=0, le=100, description="Ramp rate, % of capacity per minute, both directions."
    )
    variable_cost_jpy_per_kwh: float | None = Field(
        None, le=1e4, ge=0, description="Merit-order cost [JPY/kWh]; default: the technology's."
    )
    co2_g_per_kwh: float | None = Field(
        None,
        le=2000,
        ge=0,
        description="Emissions per kWh generated [g/kWh]; default: the technology's.",
    )
    must_run: bool | None = Field(
        None,
        description="Always dispatched at least at minimum load; "
        "default: the technology's (nuclear).",
    )


class StorageSpec(_Model):
    """Grid battery (Li-ion preset ``grid`` of :mod:`cps_sim.models.battery`) or pumped hydro."""

    kind: Literal["battery", "pumped_hydro"] = Field(
        "battery", description="battery (Li-ion preset grid) or pumped_hydro."
    )
    power_mw: float = Field(le=1e6, gt=0, description="Charge and discharge power limit [MW].")
    energy_mwh: float = Field(le=1e8, gt=0, description="Energy capacity [MWh].")
    initial_soc: float = Field(
        0.5, ge=0, le=1, description="Clipped to the kind's SoC window (battery 0.05-0.95)."
    )
    round_trip_efficiency: float | None = Field(
        None, gt=0, le=1, description="Pumped hydro only; default 0.75 (ASSUMPTION, 0.70-0.80)."
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]{1,40}$",
        description="Named units "
        "get their own columns (system_storage_<name>_w, _soh, ...) and "
        "KPIs (fade, surplus absorbed, cost per MWh shifted).",
    )
    initial_soh: float = Field(
        1.0,
        ge=0.3,
        le=1,
        description="Battery only: state of health "
        "at the start, as a share of the cells' original capacity "
        "(second-life EV packs ~0.7-0.8). energy_mwh is the capacity "
        "at the start; how ageing goes on: soh_history "
        "(models/battery_ageing.py).",
    )
    soh_history: Literal["continue", "restart"] = Field(
        "continue",
        description="Battery with initial_soh < 1: continue = the loss so far is "
        "put into the ageing state (half calendar, half cycle; ASSUMPTION) and the power laws "
        "go on from there, which is slow (they flatten with age; BLAST-Lite has no knee); "
        "restart = the laws start again from the pack's present capacity, as for new cells "
        "(a pessimistic bound). SoH is reported against the original capacity either way.",
    )
    ageing_scale: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Battery only: "
        "multiplier on the calendar and cycle fade rates; "
        "default 1.0 (preset grid; the second_life preset uses "
        "1.5, an ASSUMPTION); 0 disables ageing.",
    )
    capex_jpy_per_kwh: float | None = Field(
        None,
        ge=0,
        le=1e7,
        description="Named units: "
        "capital cost per kWh of energy_mwh [JPY/kWh], for "
        "the cost per MWh shifted.",
    )
    lifetime_years: float = Field(
        15.0,
        gt=0,
        le=100,
        description="Named units: years over "
        "which capex is spread (straight line, no discounting); the "
        "run is charged capex x run years / lifetime_years.",
    )

    @model_validator(mode="after")
    def _rte(self) -> StorageSpec:
        if self.kind == "battery" and self.round_trip_efficiency is not None:
            raise ValueError(
                "round_trip_efficiency applies to pumped_hydro only (the battery "
                "uses the 'grid' preset: ~86 % AC round trip)"
            )
        if self.name in ("absorbed", "soc"):
            raise ValueError(
                f"name {self.name!r} is reserved (system_storage_{self.name}_* "
                "is a column of all storage)"
            )
        if self.kind != "battery" and (self.initial_soh != 1.0 or self.ageing_scale is not None):
            raise ValueError(
                "initial_soh and ageing_scale apply to kind: battery only "
                "(pumped hydro does not age)"
            )
        return self


class ElectrolyserSystemSpec(_Model):
    """Electrolysers fed by the area's surplus (after storage, before export)."""

    power_mw: float = Field(le=1e6, gt=0, description="Rated electrical input [MW].")
    preset: Literal["pem", "alkaline"] = Field(
        "pem",
        description="pem: min load 5 %, 55 "
        "kWh/kg; alkaline: 20 %, 52 kWh/kg (IRENA 2020 "
        "ranges; labelled assumptions).",
    )
    specific_energy_kwh_per_kg: float | None = Field(
        None, ge=39.41, le=120, description="Default: the preset's."
    )
    min_load_fraction: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Lowest load while running, as a fraction "
        "of rated power; default: the preset's.",
    )
    tank_capacity_kg: float | None = Field(
        None, le=1e10, gt=0, description="None: unlimited (hydrogen is piped away)."
    )


class DistributionSpec(_Model):
    """Capacity of the area substation that connects the simulated sites (aggregate flow
    check, not enforced: overloads are reported)."""

    import_capacity_mw: float | None = Field(
        None,
        le=1e6,
        gt=0,
        description="Substation capacity for flow into the "
        "sites [MW]; overloads are reported, not enforced.",
    )
    export_capacity_mw: float | None = Field(
        None,
        le=1e6,
        gt=0,
        description="Substation capacity for flow out of the "
        "sites [MW]; overloads are reported, not enforced.",
    )


class SystemSpec(_Model):
    """The bulk power system (balancing area) above the sites."""

    demand: AreaDemandSpec = Field(
        default_factory=AreaDemandSpec,
        description="Background area demand (everything that is not a simulated site).",
    )
    data_centres: DataCentreDemandSpec = Field(
        default_factory=DataCentreDemandSpec, description="Data-centre demand growing year by year."
    )
    weather: SystemWeatherSpec = Field(
        default_factory=SystemWeatherSpec, description="Weather of the wind and utility-PV sites."
    )
    utility_pv: list[UtilityPvSpec] = Field(
        default_factory=list, max_length=1000, description="Utility-scale PV plants."
    )
    wind: list[WindFarmSpec] = Field(
        default_factory=list, max_length=1000, description="Wind farms."
    )
    plants: list[PlantSpec] = Field(
        default_factory=list, max_length=1000, description="Dispatchable plants in merit order."
    )
    storage: list[StorageSpec] = Field(
        default_factory=list, max_length=1000, description="Grid storage."
    )
    electrolysers: list[ElectrolyserSystemSpec] = Field(
        default_factory=list,
        max_length=1000,
        description="Electrolysers fed by the area's surplus.",
    )
    export_capacity_mw: float = Field(
        0.0,
        le=1e6,
        ge=0,
        description="Interconnector export limit [MW] (surplus after storage and electrolysers).",
    )
    carbon_price_jpy_per_t: float = Field(
        0.0,
        le=1e6,
        ge=0,
        description="Carbon price in the plants' "
        "marginal cost [JPY/t-CO2] (carbon_price: flat). The "
        "seed gives the timeline, not a level (seed L204-213).",
    )
    carbon_price: Literal["flat", "emissions"] = Field(
        "flat",
        description="flat: carbon_price_jpy_per_t in every tick; emissions: the "
        "scenario's emissions: carbon price of each tick (with emissions.carbon_price: "
        "gx_timeline the GX path by fiscal year: GX-ETS from FY2026, fossil-fuel levy from "
        "FY2028, paid auction for generators from FY2033), the same price the sites pay.",
    )
    storage_discharge_cost_jpy_per_kwh: float | None = Field(
        None,
        ge=-1e4,
        le=1e4,
        description="Merit-order price of storage discharge; None = before every "
        "plant (must-run, storage, then plants).",
    )
    storage_charge_cost_jpy_per_kwh: float | None = Field(
        None,
        ge=-1e4,
        le=1e4,
        description="Valley filling: storage also charges from running plants whose "
        "marginal cost is at most this price (pumped hydro pumping at night on coal), in "
        "ticks where it does not discharge. None = storage charges from surplus only. Must "
        "be below storage_discharge_cost_jpy_per_kwh.",
    )
    distribution: DistributionSpec | None = Field(
        None, description="Capacity of the substation that connects the simulated sites."
    )

    @model_validator(mode="after")
    def _storage_prices(self) -> SystemSpec:
        c, d = self.storage_charge_cost_jpy_per_kwh, self.storage_discharge_cost_jpy_per_kwh
        if c is not None and (d is None or not c < d):
            raise ValueError(
                "storage_charge_cost_jpy_per_kwh needs storage_discharge_cost_jpy_per_kwh set "
                f"above it (got charge {c:g}, discharge {d}); storage that discharges first "
                "in the merit order would empty what it just pumped"
            )
        return self

    @model_validator(mode="after")
    def _names(self) -> SystemSpec:
        for kind, items in (
            ("utility_pv", self.utility_pv),
            ("wind", self.wind),
            ("storage", [x for x in self.storage if x.name is not None]),
        ):
            names = [x.name for x in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{kind}: names must be unique, repeated: {', '.join(dup)}")
        missing = sorted(set(Technology.__args__) ^ set(TECHNOLOGIES))  # type: ignore[attr-defined]
        if missing:  # pragma: no cover - guards the Literal against models/plants drifting
            raise ValueError(f"technology list out of sync with models.plants: {missing}")
        return self
