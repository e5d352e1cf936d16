"""Scenario schema: frozen pydantic models, ``extra="forbid"``, units in field names.

Every field has a documented default; ``cps-sim schema`` prints the JSON Schema
so that editors can autocomplete scenario files.  Populations are declared by
count and distributions (see :mod:`cps_sim.scenario.distributions`), never one
block per device.
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cps_sim.scenario.bridge_schema import BridgeSpec
from cps_sim.scenario.ems_schema import EmsSpec
from cps_sim.scenario.expect_schema import ExpectItem, validate_expectations
from cps_sim.scenario.oracle_schema import OracleSpec
from cps_sim.scenario.powerflow_schema import PowerFlowSpec
from cps_sim.scenario.sites_schema import (  # noqa: F401 - re-exported
    BatterySpec,
    EvSpec,
    GridConnectionSpec,
    HeatPumpWaterHeaterSpec,
    LoadSpec,
    PvSpec,
    SiteGroupSpec,
    SmartMeterSpec,
    TripDaySpec,
    TripsSpec,
    _Model,
)
from cps_sim.scenario.system_schema import SystemSpec
from cps_sim.scenario.vpp_schema import BalancingGroupSpec, VppSpec

# ----------------------------------------------------------------------------- world


class LocationSpec(_Model):
    latitude: float = Field(35.68, ge=-90, le=90, description="Default: Tokyo.")
    longitude: float = Field(
        139.77, ge=-180, le=180, description="Longitude [deg], east positive. Default: Tokyo."
    )
    altitude_m: float = Field(
        40.0, ge=-500, le=9000, description="Altitude above sea level [m] (clear-sky model)."
    )


class WeatherSpec(_Model):
    """Weather for PV, EV consumption and the system layer.

    * ``synthetic`` (default, offline): pvlib clear sky (Ineichen, bundled Linke
      turbidity) × a seeded clear-sky index with day-to-day persistence and
      intra-day variability (monthly means for Tokyo, an assumption), seasonal +
      diurnal temperature, Weibull wind (``models/weather.py``);
    * ``epw`` / ``tmy3`` / ``csv``: a file next to the scenario (CSV columns:
      ``timestamp, ghi_w_m2[, dni_w_m2, dhi_w_m2], temp_air_c, wind_speed_m_s``).
      Each row is an interval average, aligned to its format's convention (TMY3 and
      EPW: the hour ending at the stamp; CSV: see ``time_label``); the sun is placed
      at each interval's midpoint and ticks take the time-weighted mean of the rows
      they overlap.  Typical years (TMY3/EPW) repeat in every year the run touches.
      A file more than 100 km from ``location`` or in another standard time zone
      than ``timezone`` draws a warning;
    * ``constant``: fixed values (for tests and checks).
    """

    source: Literal["synthetic", "constant", "epw", "tmy3", "csv"] = Field(
        "synthetic",
        description="synthetic (default, offline), constant, or a weather file: epw, tmy3, csv.",
    )
    file: str | None = Field(None, description="epw/tmy3/csv: path relative to the scenario.")
    time_label: Literal["start", "end", "instant"] = Field(
        "start",
        description="csv: what a timestamp marks: the start or the end of the "
        "interval its values average, or an instantaneous sample.",
    )
    timezone: str | None = Field(
        None,
        description="csv: the zone of timestamps written without a UTC offset: an IANA name "
        "(UTC, Asia/Tokyo; a zone with daylight saving means its wall clock) or a fixed "
        "offset such as -07:00 (a file kept in local standard time); default: the scenario's "
        "timezone.  Stamps that carry their offset need none.",
    )
    clear_sky_index_scale: float = Field(
        1.0,
        gt=0,
        le=1.5,
        description="synthetic: factor on the monthly mean clear-sky indices (cloudier < 1).",
    )
    constant_ghi_w_m2: float = Field(0.0, ge=0, le=1500, description="constant: GHI.")
    constant_temp_c: float = Field(20.0, ge=-60, le=60, description="constant: air temperature.")
    constant_wind_m_s: float = Field(0.0, ge=0, le=80, description="constant: wind speed.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            from cps_sim.models.weather import weather_zone

            weather_zone(v)
        return v

    @model_validator(mode="after")
    def _file(self) -> WeatherSpec:
        if self.source in ("epw", "tmy3", "csv") and not self.file:
            raise ValueError(f"source {self.source!r} needs 'file'")
        if self.timezone is not None and self.source != "csv":
            raise ValueError(
                f"'timezone' applies to csv files (source {self.source!r}: "
                + (
                    "the file states its own UTC offset)"
                    if self.source in ("epw", "tmy3")
                    else "no file)"
                )
            )
        return self


class TariffSpec(_Model):
    """Retail tariff of every site.

    ``flat``: one import and one export price.  ``tou``: prices by local hour,
    day type (weekday / weekend / holiday, Japanese holidays) and month.
    ``dynamic``: a price series (CSV with ``timestamp,price_jpy_per_kwh`` next
    to the scenario, e.g. converted from JEPX) plus an adder for wheeling,
    levies and margin.  Defaults are assumptions (Japanese household rates).
    """

    type: Literal["flat", "tou", "dynamic", "jepx"] = Field(
        "flat",
        description="flat: one import and one export price; tou: prices by hour, day type "
        "and month; dynamic: a price series from a CSV; jepx: a JEPX spot price file.",
    )
    jepx_csv: str | None = Field(
        None,
        description="jepx: a JEPX spot file (spot_<FY>.csv, "
        "cp932), relative to the scenario; import = area price + "
        "import_adder, export = export_multiplier x price + "
        "export_adder, as for dynamic.",
    )
    jepx_area: Literal[
        "system",
        "hokkaido",
        "tohoku",
        "tokyo",
        "chubu",
        "hokuriku",
        "kansai",
        "chugoku",
        "shikoku",
        "kyushu",
    ] = Field("tokyo", description="jepx: whose price (system price or an area price).")
    import_jpy_per_kwh: float = Field(
        31.0,
        le=1e4,
        ge=0,
        description="flat: import price (assumption:"
        " Japanese household rate incl. surcharges, ~31 JPY/kWh).",
    )
    export_jpy_per_kwh: float = Field(
        8.5,
        le=1e4,
        ge=0,
        description="Export (buy-back) price, all "
        "types except dynamic (assumption: post-FIT ~8.5).",
    )
    periods: list[TouPeriodSpec] = Field(
        default_factory=list, description="tou: periods; the first that matches a time applies."
    )
    prices_csv: str | None = Field(
        None,
        description="dynamic: CSV file (relative to the "
        "scenario) with columns timestamp,price_jpy_per_kwh.",
    )
    import_adder_jpy_per_kwh: float = Field(
        15.0,
        ge=-1e4,
        le=1e4,
        description="dynamic: added to the spot price (assumption: wheeling + levies + margin).",
    )
    export_multiplier: float = Field(
        0.0, le=10, ge=0, description="dynamic: export = m × spot + export_adder."
    )
    export_adder_jpy_per_kwh: float = Field(
        8.5, ge=-1e4, le=1e4, description="dynamic: export adder."
    )

    @model_validator(mode="after")
    def _by_type(self) -> TariffSpec:
        if self.type == "tou" and not self.periods:
            raise ValueError("type 'tou' needs at least one entry in periods")
        if self.type == "dynamic" and not self.prices_csv:
            raise ValueError("type 'dynamic' needs prices_csv")
        if self.type == "jepx" and not self.jepx_csv:
            raise ValueError("type 'jepx' needs jepx_csv (a JEPX spot-price CSV file)")
        return self


class TouPeriodSpec(_Model):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Name of the period (e.g. night, peak)."
    )
    price_jpy_per_kwh: float = Field(
        ge=0, le=1e4, description="Import price in this period [JPY/kWh]."
    )
    start_hour: float = Field(
        0.0, ge=0, le=24, description="Local hour the period starts (inclusive)."
    )
    end_hour: float = Field(
        24.0,
        ge=0,
        le=24,
        description="Local hour the period ends (exclusive); may be below "
        "start_hour to span midnight.",
    )
    day_types: list[Literal["weekday", "weekend", "holiday"]] = Field(
        default_factory=lambda: ["weekday", "weekend", "holiday"],
        description="Day types it applies to: weekday, weekend, holiday (public holidays of "
        "`holidays`).",
    )
    months: list[int] = Field(
        default_factory=lambda: list(range(1, 13)), description="Months it applies to (1..12)."
    )

    @field_validator("months")
    @classmethod
    def _months(cls, v: list[int]) -> list[int]:
        bad = [m for m in v if not 1 <= m <= 12]
        if bad or not v:
            raise ValueError(f"months must be 1..12 and not empty, got {v}")
        return v


class TransportSpec(_Model):
    """The in-memory message bus between controllers and devices."""

    latency_s: float = Field(
        0.0, ge=0, le=3600, description="Delay of every message on the bus [s]."
    )
    jitter_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Extra random delay, uniform in [0, jitter_s] per message [s].",
    )
    loss: float = Field(0.0, ge=0, le=1, description="Probability that a message is lost.")


EV_STRATEGIES = (
    "off",
    "now",
    "min_pv",
    "pv",
    "load",
    "cost",
    "v2h",
    "v2g",
    "greedy",
    "balanced",
    "peak_shaving",
)
EvStrategy = Literal[
    "off", "now", "min_pv", "pv", "load", "cost", "v2h", "v2g", "greedy", "balanced", "peak_shaving"
]


class EvControlSpec(_Model):
    """An EV charging strategy run by a controller over the message bus."""

    ev_strategy: EvStrategy | None = Field(
        None,
        description="None: no controller, EVs charge "
        "at full power on arrival (the engine default).",
    )
    interval_s: float | None = Field(
        None,
        gt=0,
        le=86400,
        description="Decision interval "
        "[s]; default: the settlement tick (inputs are constant "
        "within a tick, so deciding more often only adds cost).",
    )
    ttl_s: float | None = Field(
        None,
        le=86400,
        gt=0,
        description="Devices follow a setpoint at most "
        "this long, then fall back to uncharged-controlled charging "
        "(default 3 intervals).",
    )
    enable_delay_s: float = Field(
        60.0,
        le=86400,
        ge=0,
        description="Surplus must last this long before charging starts (pv, min_pv).",
    )
    disable_delay_s: float = Field(
        180.0,
        le=86400,
        ge=0,
        description="Deficit must last this long before charging stops (pv, min_pv).",
    )
    min_current_a: float = Field(
        6.0, gt=0, le=80, description="Minimum charging current per phase (IEC 61851)."
    )
    voltage_v: float = Field(
        200.0, gt=0, le=1000, description="Single-phase voltage (Japan 200 V)."
    )
    priority: Literal["ev", "battery"] = Field(
        "ev",
        description="Who gets PV surplus first: ev (the "
        "EVs) or battery (the home battery keeps its share "
        "until it is charged enough).",
    )
    v2h_start_h: float = Field(
        17.0,
        ge=0,
        le=24,
        description="v2h: local hour from which the EV may discharge into the home.",
    )
    v2h_end_h: float = Field(
        23.0,
        ge=0,
        le=24,
        description="v2h: local hour until which the EV may discharge into the home.",
    )
    v2g_price_jpy_per_kwh: float = Field(
        1e9,
        le=1e9,
        ge=0,
        description="v2g: discharge to the grid when the export price is at least this.",
    )


class ControlSpec(EvControlSpec):
    """Controllers for every site group with EVs; ``groups`` overrides per group name."""

    transport: TransportSpec = Field(
        default_factory=TransportSpec,
        description="The in-memory message bus between controllers "
        "and devices (latency, jitter, loss).",
    )
    groups: dict[str, EvControlSpec] = Field(
        default_factory=dict,
        description="Per site-group settings that replace the ones above for that group.",
    )

    def for_group(self, name: str) -> EvControlSpec:
        return self.groups.get(name) or EvControlSpec(
            **{k: getattr(self, k) for k in EvControlSpec.model_fields}
        )


class EmissionsSpec(_Model):
    grid_co2_g_per_kwh: float = Field(
        441.0,
        le=2000,
        ge=0,
        description="Assumption: Japanese grid "
        "average emission factor (~0.44 kg/kWh, FY2022 order).",
    )
    carbon_price_jpy_per_t: float = Field(
        0.0,
        le=1e6,
        ge=0,
        description="Carbon price on imported energy's CO2 [JPY/t] (carbon_price: flat).",
    )
    carbon_price: Literal["flat", "gx_timeline"] = Field(
        "flat",
        description="gx_timeline: the GX path by Japanese fiscal year — GX-ETS from "
        "FY2026, fossil-fuel levy from FY2028, paid auction for generators from FY2033 (seed "
        "L204-213); the yen levels below are assumptions ('start low, raise gradually').",
    )
    ets_start_jpy_per_t: float = Field(
        1000.0,
        le=1e6,
        ge=0,
        description="gx_timeline: GX-ETS price in FY2026 [JPY/t] (assumption).",
    )
    ets_increase_jpy_per_t_per_fy: float = Field(
        250.0,
        le=1e5,
        ge=0,
        description="gx_timeline: yearly increase of the "
        "GX-ETS price [JPY/t per fiscal year] "
        "(assumption).",
    )
    levy_start_jpy_per_t: float = Field(
        300.0,
        le=1e6,
        ge=0,
        description="gx_timeline: fossil-fuel levy in FY2028 [JPY/t] (assumption).",
    )
    levy_increase_jpy_per_t_per_fy: float = Field(
        100.0,
        le=1e5,
        ge=0,
        description="gx_timeline: yearly increase of the "
        "levy [JPY/t per fiscal year] (assumption).",
    )
    auction_start_jpy_per_t: float = Field(
        500.0,
        le=1e6,
        ge=0,
        description="gx_timeline: price of the paid auction for "
        "generators in FY2033 [JPY/t] (assumption).",
    )
    auction_increase_jpy_per_t_per_fy: float = Field(
        250.0,
        le=1e5,
        ge=0,
        description="gx_timeline: yearly increase of "
        "the auction price [JPY/t per fiscal year] "
        "(assumption).",
    )
    carbon_price_cap_jpy_per_t: float = Field(
        10000.0,
        le=1e6,
        ge=0,
        description="gx_timeline: the summed carbon price never exceeds this [JPY/t].",
    )


class RecordSpec(_Model):
    """Per-device traces (aggregates are always written)."""

    sites: list[int] = Field(
        default_factory=list,
        max_length=10_000,
        description="Global site indices whose net power is recorded per tick in sites.parquet.",
    )


# The calendar cps_sim simulates: holidays, solar geometry and pandas' nanosecond
# timestamps (which end in 2262) all cover it, with room for a 30-year horizon.
START_MIN = _dt.datetime(1900, 1, 1, tzinfo=_dt.UTC)
START_MAX = _dt.datetime(2200, 1, 1, tzinfo=_dt.UTC)


class Scenario(_Model):
    """One runnable world."""

    version: Literal[1] = Field(1, description="Scenario file format version (1).")
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Name of the scenario: results folder names and reports.",
    )
    description: str = Field("", description="Free text shown in reports.")
    seed: int = Field(
        0,
        ge=0,
        lt=2**63,
        description="Root seed: every random draw of the run comes from named "
        "streams spawned from it (same seed => same results).",
    )
    start: _dt.datetime = Field(
        description="ISO 8601 with UTC offset, e.g. "
        "2026-04-01T00:00:00+09:00; between 1900-01-01 and "
        "2200-01-01."
    )
    duration_days: float = Field(
        gt=0,
        le=366 * 30,
        description="Length of the run [days]; a whole number of ticks, at most 30 years.",
    )
    tick_s: float = Field(
        900.0, ge=1, le=3600, description="Settlement tick [s]; must divide one day."
    )
    warmup_days: int = Field(
        0,
        ge=0,
        le=30,
        description="Whole days simulated before `start` and not recorded: EV "
        "trips and charging, batteries and tanks settle from their sampled initial state under "
        "the scenario's own control.  Nothing of the warm-up is written or counted (time "
        "series, events, reports, KPIs, plots, expectations); `start` stays the first "
        "recorded instant and `duration_days` the recorded length.  Weather, prices and data "
        "files are read for the warm-up days too.  Default 0: the run starts from the sampled "
        "state; built-in scenarios use 1.  cps-sim hil refuses a warm-up; the oracle solves "
        "the scenario without it.",
    )
    timezone: str = Field(
        "Asia/Tokyo",
        description="IANA time zone of the local calendar (day types, tariffs, "
        "profiles), e.g. Asia/Tokyo.",
    )
    holidays: str | None = Field(
        "JP",
        description="Country whose public holidays count as "
        "days off (weekend profiles and trips); null for none.",
    )
    mode: Literal["fast", "realtime"] = Field(
        "fast",
        description="fast: as fast as possible; realtime: "
        "paced to the wall clock at `speed` (hardware in the "
        "loop).",
    )
    speed: float = Field(
        1.0, le=1e6, gt=0, description="Simulated seconds per wall second (realtime)."
    )
    location: LocationSpec = Field(
        default_factory=LocationSpec,
        description="Where the sites are (solar geometry, synthetic weather).",
    )
    weather: WeatherSpec = Field(
        default_factory=WeatherSpec,
        description="Irradiance, temperature and wind for PV, EVs and the system layer.",
    )
    tariff: TariffSpec = Field(
        default_factory=TariffSpec,
        description="Retail tariff of every site (import and export prices).",
    )
    emissions: EmissionsSpec = Field(
        default_factory=EmissionsSpec, description="Grid emission factor and carbon price."
    )
    sites: list[SiteGroupSpec] = Field(
        min_length=1,
        max_length=1000,
        description="Site groups: populations of similar sites with their devices.",
    )
    control: ControlSpec = Field(
        default_factory=ControlSpec,
        description="EV charging strategy controllers (per group in "
        "control.groups) and the message bus.",
    )
    ems: dict[str, EmsSpec] = Field(
        default_factory=dict,
        description="Energy-management system per site-group name (hems | bems | fems | cems).",
    )
    system: SystemSpec | None = Field(
        None,
        description="Bulk power system above the sites: "
        "area demand, utility wind/PV, plants in merit order, "
        "storage, electrolysers, curtailment, CO2.",
    )
    vpp: VppSpec | None = Field(
        None,
        description="VPP aggregator over site groups: "
        "grid-operator requests (absorb/supply/dr_reduce), optional "
        "absorption of system curtailment.",
    )
    balancing_group: BalancingGroupSpec | None = Field(
        None,
        description="Day-ahead plan vs actual net import per 30-min slot, imbalance settlement.",
    )
    powerflow: PowerFlowSpec | None = Field(
        None,
        description="Optional AC power flow of one site group on a bundled LV feeder "
        "(pandapower, extra cps_sim[grid]; see docs/powerflow.md for its pandas pin).",
    )
    record: RecordSpec = Field(
        default_factory=RecordSpec, description="Per-site traces to record besides the aggregates."
    )
    oracle: OracleSpec | None = Field(
        None, description="Perfect-foresight optimum and each run's regret to it (docs/oracle.md)."
    )
    expect: list[ExpectItem] = Field(
        default_factory=list,
        max_length=500,
        description="What "
        "the run must show (docs/expectations.md); cps-sim run "
        "exits 3 when one fails.",
    )
    bridge: BridgeSpec | None = Field(
        None,
        description="MQTT bridge for cps-sim hil: broker, "
        "devices bound to members, groups exposed to external "
        "controllers (docs/hil.md).",
    )

    @field_validator("start")
    @classmethod
    def _aware(cls, v: _dt.datetime) -> _dt.datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-04-01T00:00:00+09:00")
        if not START_MIN <= v < START_MAX:
            raise ValueError(
                f"must be between {START_MIN:%Y-%m-%d} and {START_MAX:%Y-%m-%d} "
                f"(calendars, weather and pandas timestamps cover that range), "
                f"got {v.isoformat()}"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from cps_sim.core.clock import iana_zone

        iana_zone(v)
        return v

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import holidays as _hol

        if v not in _hol.list_supported_countries():
            raise ValueError(f"unknown holiday country code {v!r} (ISO 3166 alpha-2, e.g. 'JP')")
        return v

    @field_validator("tick_s")
    @classmethod
    def _tick_divides_day(cls, v: float) -> float:
        if v != int(v) or 86400 % int(v) != 0:
            raise ValueError(f"must be a whole number of seconds that divides 86400, got {v}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> Scenario:
        names = [g.name for g in self.sites]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"site group names must be unique, repeated: {', '.join(dup)}")
        total = sum(g.count for g in self.sites)
        unknown = sorted(set(self.control.groups) - set(names))
        if unknown:
            raise ValueError(
                f"control.groups names unknown site groups: {', '.join(unknown)}"
                f" (site groups: {', '.join(names)})"
            )
        bad = [i for i in self.record.sites if not 0 <= i < total]
        if bad:
            raise ValueError(f"record.sites: indices {bad[:5]} outside 0..{total - 1}")
        if self.warmup_days and self.start - _dt.timedelta(days=self.warmup_days) < START_MIN:
            raise ValueError(
                f"warmup_days ({self.warmup_days}) would start the warm-up before "
                f"{START_MIN:%Y-%m-%d}"
            )
        if self.warmup_days and self.oracle is not None and self.oracle.regret:
            raise ValueError(
                "warmup_days must be 0 with an oracle: block (regret compares the "
                "run with an optimum that starts from the sampled state, without "
                "warm-up); use cps-sim run --oracle, or set oracle.regret: false"
            )
        if (self.duration_days * 86400) % self.tick_s != 0:
            raise ValueError(
                f"duration_days ({self.duration_days}) must be a whole number of "
                f"ticks of {self.tick_s:g} s"
            )
        return self

    @model_validator(mode="after")
    def _expectations(self) -> Scenario:
        return validate_expectations(self)

    @property
    def duration_s(self) -> float:
        return self.duration_days * 86400.0

    @property
    def n_ticks(self) -> int:
        return round(self.duration_s / self.tick_s)

    def with_warmup(self) -> Scenario:
        """The scenario the engine runs: ``warmup_days`` earlier and that much longer (a
        copy without warm-up; ``LullSpec.start_day`` windows stay on the same dates).
        Itself when there is no warm-up."""
        w = self.warmup_days
        if not w:
            return self
        update: dict = {
            "start": self.start - _dt.timedelta(days=w),
            "duration_days": self.duration_days + w,
            "warmup_days": 0,
        }
        if self.system is not None and self.system.weather.lulls:
            lulls = [
                lull.model_copy(update={"start_day": lull.start_day + w})
                for lull in self.system.weather.lulls
            ]
            update["system"] = self.system.model_copy(
                update={"weather": self.system.weather.model_copy(update={"lulls": lulls})}
            )
        return self.model_copy(update=update)
