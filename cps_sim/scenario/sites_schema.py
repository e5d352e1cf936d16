"""Scenario schema, part 1: site groups and the devices at their sites.

Frozen pydantic models with ``extra="forbid"``; units in field names; each
field documents its default.  Re-exported by :mod:`cps_sim.scenario.schema`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cps_sim.scenario.data_schema import EvSessionsSpec
from cps_sim.scenario.distributions import Quantity, bounded
from cps_sim.scenario.hvac_schema import SpaceConditioningSpec


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )


def _ranged(field: str, **bounds: float):
    """A field validator that checks a Quantity against physical bounds.

    An unbounded upper tail is truncated at the upper bound when it is
    negligible there (see :func:`cps_sim.scenario.distributions.bounded`).
    """

    def check(cls, v):
        return bounded(v, **bounds)

    check.bounds = bounds  # read by the scenario reference (scenario/reference_doc.py)

    return field_validator(field)(classmethod(check))


# ----------------------------------------------------------------------------- devices


class LoadSpec(_Model):
    """Household (or building) electric load: a daily-shape profile scaled to annual energy."""

    annual_kwh: Quantity = Field(
        4300.0,
        description="Annual consumption per site [kWh]. "
        "Default 4,300 kWh: a typical Japanese household (assumption).",
    )
    profile: Literal[
        "japan_residential",
        "bdew_h25",
        "office",
        "hospital",
        "retail",
        "factory",
        "data_centre",
        "constant",
        "csv",
    ] = Field(
        "japan_residential",
        description="japan_residential: Japanese household shape "
        "(assumption); bdew_h25: BDEW 2025 H25 household (demandlib) with Japanese holidays; "
        "office / hospital / retail / factory / data_centre: archetypes of models/loads.py; "
        "constant: the same power all year; csv: a measured profile (profile_csv, "
        "cps_sim/data/load_profiles.py) scaled to annual_kwh.",
    )
    profile_csv: str | None = Field(
        None,
        description="csv: measured profiles (timestamp + "
        "one column per profile), relative to the scenario.",
    )
    profile_column: str | None = Field(
        None, description="csv: the column to use (default: the only one)."
    )
    profile_unit: Literal["kw", "kwh"] = Field(
        "kw", description="csv: values are average kW, or kWh per interval."
    )
    factory_shifts: Literal[1, 2, 3] = Field(1, description="factory: shifts per working day.")
    annual_growth_rate: float = Field(
        0.0, ge=-0.5, le=2.0, description="data_centre: growth of the annual energy per year."
    )
    shift_max_s: float = Field(
        3600.0,
        ge=0,
        le=6 * 3600,
        description="Each site's profile is shifted by a uniform random "
        "offset in [-shift_max_s, +shift_max_s] (per-home variation).",
    )
    noise_cv: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Coefficient of variation of the per-tick multiplicative "
        "noise of each site's load.",
    )

    _annual = _ranged("annual_kwh", gt=0, le=1e9)  # 1 TWh/a: a hyperscale data centre

    @model_validator(mode="after")
    def _csv(self) -> LoadSpec:
        if self.profile == "csv" and not self.profile_csv:
            raise ValueError("profile 'csv' needs profile_csv (a CSV file of measured loads)")
        return self


class PvSpec(_Model):
    """Rooftop PV systems.

    ``pvwatts`` (default): pvlib — solar position, Perez transposition to each
    system's tilt/azimuth, SAPM cell temperature, PVWatts DC and inverter with
    clipping (``models/solar.py``); a fixed tilt/azimuth, or a choice among values,
    is used as given; draws from a continuous distribution are binned to 5° tilt and
    15° azimuth, so a population costs one profile per distinct orientation.
    ``simple``: AC = capacity × GHI/1000 × performance ratio (foundation model).
    """

    share: float = Field(1.0, ge=0, le=1, description="Fraction of sites that have PV.")
    capacity_kw: Quantity = Field(4.5, description="DC capacity per system [kW].")
    model: Literal["pvwatts", "simple"] = Field(
        "pvwatts",
        description="pvwatts: pvlib chain (transposition, "
        "cell temperature, inverter clipping); simple: AC "
        "= capacity x GHI/1000 x performance ratio.",
    )
    tilt_deg: Quantity = Field(
        default_factory=lambda: {
            "distribution": "choice",
            "values": [10, 20, 30],
            "weights": [0.2, 0.4, 0.4],
        },
        description="Panel tilt [deg] (assumption: Japanese pitched roofs 20–30°).",
    )
    azimuth_deg: Quantity = Field(
        default_factory=lambda: {
            "distribution": "choice",
            "values": [90, 135, 180, 225, 270],
            "weights": [0.1, 0.2, 0.4, 0.2, 0.1],
        },
        description="Panel azimuth [deg], 180 = south.",
    )
    dc_ac_ratio: float = Field(
        1.1, gt=0.5, le=3, description="DC capacity / inverter AC rating (pvwatts)."
    )
    losses_percent: float = Field(14.08, ge=0, lt=100, description="PVWatts system losses.")
    performance_ratio: float = Field(
        0.8, gt=0, le=1, description="simple: losses from irradiance to AC."
    )
    inverter_kw: float | None = Field(
        None, gt=0, le=1e6, description="simple: AC limit per system [kW]; default: no clipping."
    )

    _cap = _ranged("capacity_kw", gt=0, le=1e6)  # 1 GW at one site
    _tilt = _ranged("tilt_deg", ge=0, le=90)
    _az = _ranged("azimuth_deg", ge=0, le=360)


class BatterySpec(_Model):
    """Stationary battery at a site, controlled for PV self-consumption by default."""

    share: float = Field(1.0, ge=0, le=1, description="Fraction of sites that have a battery.")
    capacity_kwh: Quantity = Field(10.0, description="Usable energy capacity [kWh].")
    power_kw: Quantity = Field(5.0, description="Charge and discharge power limit [kW].")
    charge_efficiency: float = Field(
        0.95, gt=0, le=1, description="Charging efficiency (AC to stored energy), 0..1."
    )
    discharge_efficiency: float = Field(
        0.95, gt=0, le=1, description="Discharging efficiency (stored energy to AC), 0..1."
    )
    taper_soc: float = Field(
        1.0,
        ge=0,
        le=1,
        description="CC-CV: above this SoC the charge "
        "limit falls linearly to 0 at soc_max, integrated exactly "
        "(models/battery.py; >= soc_max = no taper).",
    )
    self_discharge_per_month: float = Field(
        0.0, ge=0, le=0.5, description="Fraction of the stored energy lost per 30 days (e.g. 0.02)."
    )
    ageing: bool = Field(
        False,
        description="Calendar + cycle capacity fade (NREL BLAST-Lite "
        "form, models/battery_ageing.py), applied once a day.",
    )
    ageing_preset: Literal["home", "building", "grid", "second_life"] = Field(
        "home",
        description="ageing: parameter set of the fade model (home, building, grid, "
        "second_life; models/battery_ageing.py).",
    )
    soc_min: float = Field(
        0.1, ge=0, le=1, description="Lowest state of charge the battery is used down to (0..1)."
    )
    soc_max: float = Field(
        1.0, ge=0, le=1, description="Highest state of charge it is charged to (0..1)."
    )
    initial_soc: Quantity = Field(
        default_factory=lambda: {"distribution": "uniform", "low": 0.2, "high": 0.8},
        description="State of charge at the start of the run (0..1; a number or a "
        "distribution, sampled per battery from its own stream and clipped to [soc_min, "
        "soc_max]).  Default uniform 0.2-0.8 (assumption: a battery is somewhere in its "
        "daily cycle at the start; warmup_days lets the control set it).",
    )
    control: Literal["self_consumption", "idle"] = Field(
        "self_consumption",
        description="Charge from site surplus and discharge to cover the "
        "site's deficit, or stay idle (for controllers added later).",
    )

    _cap = _ranged("capacity_kwh", gt=0, le=1e7)  # 10 GWh: the largest grid batteries
    _pow = _ranged("power_kw", gt=0, le=1e7)
    _soc0 = _ranged("initial_soc", ge=0, le=1)

    @model_validator(mode="after")
    def _soc_window(self) -> BatterySpec:
        if not self.soc_min < self.soc_max:
            raise ValueError(
                f"soc_min must be < soc_max, got soc_min={self.soc_min}, soc_max={self.soc_max}"
            )
        if isinstance(self.initial_soc, (int, float)) and not (
            self.soc_min <= self.initial_soc <= self.soc_max
        ):
            raise ValueError(
                f"initial_soc must lie in [soc_min, soc_max] = "
                f"[{self.soc_min}, {self.soc_max}], got {self.initial_soc}"
            )
        return self


class TripDaySpec(_Model):
    """Trip statistics of one day type (weekday or weekend), local time."""

    probability: float = Field(
        0.8, ge=0, le=1, description="Chance that a vehicle drives on such a day."
    )
    departure_h: Quantity = Field(
        default_factory=lambda: {
            "distribution": "normal",
            "mean": 7.5,
            "std": 1.0,
            "min": 4,
            "max": 11,
        },
        description="Local departure hour [h].",
    )
    duration_h: Quantity = Field(
        default_factory=lambda: {
            "distribution": "normal",
            "mean": 9.5,
            "std": 2.0,
            "min": 0.5,
            "max": 16,
        },
        description="Time away from the home charger [h].",
    )
    distance_km: Quantity = Field(
        default_factory=lambda: {"distribution": "lognormal", "mean": 30.0, "cv": 0.7, "max": 300},
        description="Round-trip distance [km].",
    )

    _dep = _ranged("departure_h", ge=0, lt=24)
    _dur = _ranged("duration_h", gt=0, le=72)
    _dist = _ranged("distance_km", ge=0, le=3000)  # a day's drive


class TripsSpec(_Model):
    weekday: TripDaySpec = Field(default_factory=TripDaySpec, description="Trips on working days.")
    weekend: TripDaySpec = Field(
        default_factory=lambda: TripDaySpec(
            probability=0.55,
            departure_h={"distribution": "normal", "mean": 10.0, "std": 2.0, "min": 6, "max": 16},
            duration_h={"distribution": "normal", "mean": 5.0, "std": 2.0, "min": 0.5, "max": 12},
            distance_km={"distribution": "lognormal", "mean": 40.0, "cv": 0.8, "max": 400},
        ),
        description="Trips on weekends and public holidays.",
    )


class EvSpec(_Model):
    """Battery-electric vehicles parked at a site's charger between trips."""

    share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Fraction of sites with an EV (used when per_site is not given).",
    )
    per_site: int | None = Field(
        None, ge=1, le=10_000, description="EVs at every site (depots); overrides share."
    )
    models: dict[str, float] | None = Field(
        None,
        description="Fleet mix from the device catalog devices/ev (name: weight), e.g. "
        "{compact_40kwh: 0.5, mid_60kwh: 0.3, suv_80kwh: 0.2}.  Each vehicle takes its class's "
        "capacity, consumption, AC limit (capping charger_kw) and V2X limit; fields given "
        "explicitly below override the catalog.",
    )
    temperature_dependent_consumption: bool = Field(
        True,
        description="Scale trip energy by the ambient temperature at departure "
        "(models/ev_physics.consumption_factor; assumption sized to published range losses).",
    )
    capacity_kwh: Quantity = Field(
        default_factory=lambda: {
            "distribution": "choice",
            "values": [40.0, 60.0, 80.0],
            "weights": [0.5, 0.3, 0.2],
        },
        description="Usable battery capacity [kWh].",
    )
    charger_kw: Quantity = Field(
        6.0,
        description="Charging power limit at the site [kW] (Japanese 200 V home charger: 3–6 kW).",
    )
    charge_efficiency: float = Field(0.9, gt=0, le=1, description="Grid-to-battery efficiency.")
    consumption_kwh_per_100km: Quantity = Field(15.0, description="Driving consumption.")
    initial_soc: Quantity = Field(
        default_factory=lambda: {"distribution": "uniform", "low": 0.6, "high": 1.0},
        description="State of charge of each vehicle at the start (0..1; a number or a "
        "distribution, sampled per vehicle and capped at soc_max).  Default uniform 0.6-1.0 "
        "(assumption: a car kept near the default departure target, 0.8, less or more a "
        "day's driving of 5-25 % of the pack).  Where the trips put a vehicle at the "
        "start: away if the start falls inside a trip (it returns then), else at home.",
    )
    soc_max: float = Field(1.0, gt=0, le=1, description="Charging stops at this SoC.")
    taper_soc: float | None = Field(
        None,
        ge=0,
        le=1,
        description="CC-CV: above this SoC the "
        "charge limit falls linearly to 5 % at soc_max; default: "
        "the catalog class's value with `models`, else no taper.",
    )
    v2x_kw: Quantity = Field(
        0.0, description="Discharge (V2H/V2G) power limit [kW]; 0 = not bidirectional."
    )
    v2x_soc_min: float = Field(
        0.3, ge=0, le=1, description="Discharge never takes the SoC below this floor."
    )
    departure_soc_target: float = Field(
        0.8,
        ge=0,
        le=1,
        description="SoC a driver wants at departure; the shortfall is reported as unmet energy.",
    )
    trips: TripsSpec = Field(
        default_factory=TripsSpec,
        description="Daily trips (departure, duration, distance) on weekdays and days off.",
    )

    _cap = _ranged("capacity_kwh", gt=0, le=2000)  # heavy trucks carry < 1 MWh
    _chg = _ranged("charger_kw", gt=0, le=4000)  # MCS: 3.75 MW
    _cons = _ranged("consumption_kwh_per_100km", gt=0, le=500)
    _soc0 = _ranged("initial_soc", ge=0, le=1)
    _v2x = _ranged("v2x_kw", ge=0, le=4000)

    @field_validator("models")
    @classmethod
    def _mix(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            if not v:
                raise ValueError("models must name at least one catalog entry")
            if any(not (w >= 0) for w in v.values()) or sum(v.values()) <= 0:
                raise ValueError("model weights must be >= 0 and sum to > 0")
        return v

    sessions: EvSessionsSpec | None = Field(
        None,
        description="Charging sessions from a CSV (ACN-Data / EV2Gym layout) instead of "
        "sampled trips; share, per_site, initial_soc and trips do not apply.",
    )

    @model_validator(mode="before")
    @classmethod
    def _sessions_replace_trips(cls, v):
        if isinstance(v, dict) and v.get("sessions") is not None:
            trips = v.get("trips")
            # a dumped scenario (manifest, sweep) carries the never-driving trips set here
            dumped = (
                isinstance(trips, dict)
                and set(trips) == {"weekday", "weekend"}
                and all(isinstance(d, dict) and d.get("probability") == 0.0 for d in trips.values())
            )
            if trips is not None and not dumped:
                raise ValueError(
                    "sessions and trips exclude each other: the sessions file "
                    "gives every arrival and departure"
                )
            never = {"probability": 0.0}
            v = {**v, "trips": {"weekday": never, "weekend": never}}
        return v

    @model_validator(mode="after")
    def _targets(self) -> EvSpec:
        if self.departure_soc_target > self.soc_max:
            raise ValueError(
                f"departure_soc_target ({self.departure_soc_target}) must be <= "
                f"soc_max ({self.soc_max})"
            )
        return self


class HeatPumpWaterHeaterSpec(_Model):
    """EcoCute-like heat-pump water heater (defaults: a 370 L, 4.5 kW_th unit; assumption)."""

    share: float = Field(1.0, ge=0, le=1, description="Fraction of sites with a unit.")
    tank_volume_l: float = Field(370.0, gt=0, le=5000, description="Hot-water tank volume [L].")
    heat_output_kw: float = Field(4.5, gt=0, le=100, description="Thermal output limit [kW].")
    setpoint_c: float = Field(
        65.0, gt=30, le=95, description="Water temperature the unit heats to [degC]."
    )
    initial_temp_c: float = Field(
        55.0, ge=0, le=95, description="Tank temperature at the start [degC]."
    )
    daily_draw_kwh_th: Quantity = Field(
        10.8,
        description="Hot water heat drawn per day "
        "[kWh_th] (assumption: ~450 L at 40 °C from 17 °C).",
    )
    control: Literal["night", "surplus"] = Field(
        "night",
        description="night: heat in the night window (today's default); surplus: "
        "heat on daytime PV surplus, top up at night only when low.",
    )
    night_start_h: float = Field(
        23.0, ge=0, le=24, description="night: local hour the heating window opens."
    )
    night_end_h: float = Field(
        7.0, ge=0, le=24, description="night: local hour the heating window closes."
    )
    surplus_start_h: float = Field(
        9.0, ge=0, le=24, description="surplus: local hour from which PV surplus is used."
    )
    surplus_end_h: float = Field(
        16.0, ge=0, le=24, description="surplus: local hour until which PV surplus is used."
    )
    surplus_fraction: float = Field(
        0.5,
        ge=0,
        le=2,
        description="surplus: PV surplus must cover this share of the unit's electric power.",
    )
    reserve_fraction: float = Field(
        0.15, ge=0, le=1, description="Always heat when usable heat falls below this share."
    )
    night_topup_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="surplus: heat at night only when the tank "
        "holds less than this fraction of its usable heat.",
    )

    _draw = _ranged("daily_draw_kwh_th", ge=0, le=1e4)


class DeferrableSpec(_Model):
    """A deferrable process per site (FEMS batch process, dishwasher-like load): a daily
    energy that must be delivered between a window start and a deadline (local time).

    Without a controller it runs at full power from the window start until done
    (``asap``); a FEMS (``ems: {kind: fems}``) shifts it into PV surplus or cheap hours
    without missing the deadline.  Energy not delivered by the deadline is reported.
    """

    share: float = Field(1.0, ge=0, le=1, description="Fraction of sites with a process.")
    energy_kwh: Quantity = Field(20.0, description="Energy to deliver per working day [kWh].")
    power_kw: Quantity = Field(10.0, description="Rated (maximum) power [kW].")
    window_start_h: float = Field(6.0, ge=0, lt=24, description="Local hour the window opens.")
    deadline_h: float = Field(
        22.0,
        gt=0,
        le=24,
        description="Local hour of the deadline (same day, after window_start_h).",
    )
    days: Literal["weekdays", "all"] = Field(
        "weekdays", description="weekdays: Monday–Friday except holidays; all: every day."
    )

    _energy = _ranged("energy_kwh", gt=0, le=1e7)
    _power = _ranged("power_kw", gt=0, le=1e6)

    @model_validator(mode="after")
    def _window(self) -> DeferrableSpec:
        if not self.deadline_h > self.window_start_h:
            raise ValueError(
                f"deadline_h ({self.deadline_h}) must be after window_start_h "
                f"({self.window_start_h})"
            )
        return self


class SmartMeterSpec(_Model):
    """The site's smart meter as a HEMS reads it over the B-route (ECHONET Lite class
    0x0288, see ``cps_sim/models/smart_meter.py``): import/export registers fixed at
    every local 30-minute boundary (written to ``smart_meter.parquet``) and the
    instantaneous power polled by the HEMS."""

    enabled: bool = Field(
        True, description="Read the meters of this group (a false block is the same as none)."
    )
    resolution_kwh: Literal[0.0001, 0.001, 0.01, 0.1, 1.0, 10.0] = Field(
        0.1,
        description="Register unit (EPC 0xE1) [kWh per count]; 0.1 kWh is the usual "
        "home meter (assumption, each meter reports its own).",
    )
    digits: int = Field(
        6,
        ge=1,
        le=8,
        description="Effective digits of the registers (EPC "
        "0xD7): they wrap to 0 after 10**digits - 1 counts.",
    )
    initial_import_kwh: float = Field(
        0.0, ge=0, le=1e8, description="Import register at the start of the run [kWh]."
    )
    initial_export_kwh: float = Field(
        0.0, ge=0, le=1e8, description="Export register at the start of the run [kWh]."
    )
    instantaneous_poll_s: float | None = Field(
        60.0,
        gt=0,
        le=1800,
        description="Interval at which a HEMS observing the meter polls "
        "the instantaneous power (EPC 0xE7) [s]; null: the HEMS uses only the 30-minute "
        "registers.",
    )


class GridConnectionSpec(_Model):
    import_limit_kw: float | None = Field(
        None, gt=0, le=1e7, description="Import limit per site [kW]; load beyond it is unserved."
    )
    export_limit_kw: float | None = Field(
        None,
        ge=0,
        le=1e7,
        description="Export limit per site [kW]; PV beyond it is curtailed (0 = zero export).",
    )


class SiteGroupSpec(_Model):
    """A population of similar sites (e.g. 10,000 homes), each with its own grid connection."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of the group (unique): used by ems, vpp, control.groups "
        "and in the results.",
    )
    kind: Literal["home", "building", "factory", "community"] = Field(
        "home",
        description="What the sites are (home, building, factory, community): a label for "
        "reports; devices and loads come from the blocks below.",
    )
    count: int = Field(ge=1, le=10_000_000, description="Number of sites in the group.")
    load: LoadSpec = Field(default_factory=LoadSpec, description="Electric load of each site.")
    pv: PvSpec | None = Field(None, description="Rooftop PV; none: no PV in this group.")
    battery: BatterySpec | None = Field(
        None, description="Stationary batteries; none: no batteries."
    )
    ev: EvSpec | None = Field(
        None, description="Battery-electric vehicles at the sites; none: no EVs."
    )
    heat_pump_water_heater: HeatPumpWaterHeaterSpec | None = Field(
        None, description="Heat-pump water heaters (EcoCute); none: none."
    )
    deferrable: DeferrableSpec | None = Field(
        None, description="Deferrable processes with a daily energy and deadline; none: none."
    )
    space_conditioning: SpaceConditioningSpec | None = Field(
        None,
        description="Room air-conditioners / heat pumps for space heating and cooling; none: none.",
    )
    smart_meter: SmartMeterSpec | None = Field(
        None,
        description="Smart meters read over the B-route (30-min registers, polled "
        "instantaneous power); none: not recorded.",
    )
    grid: GridConnectionSpec = Field(
        default_factory=GridConnectionSpec, description="Grid connection limits of each site."
    )
