"""Energy-management systems (HEMS / BEMS / FEMS / CEMS) in a scenario.

One :data:`EmsSpec` per site group, keyed by the group's name (the lead wires
``Scenario.ems: dict[str, EmsSpec]``).  Frozen pydantic models with
``extra="forbid"``; units in the field names; kW / kWh / hours at this edge,
W / Wh / seconds inside the controllers (``cps_sim.control.ems``).
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EvStrategyName = Literal[
    "off", "now", "min_pv", "pv", "load", "cost", "v2h", "v2g", "greedy", "balanced", "peak_shaving"
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )


class DrWindowSpec(_Model):
    """A demand-response request to a HEMS: import lower by ``reduce_kw`` per site
    during ``[start, end)`` than the HEMS would otherwise draw."""

    start: _dt.datetime = Field(description="ISO 8601 with UTC offset.")
    end: _dt.datetime = Field(description="ISO 8601 with UTC offset; after start.")
    reduce_kw: float = Field(gt=0, le=1e6, description="Requested import reduction per site [kW].")

    @model_validator(mode="after")
    def _order(self) -> DrWindowSpec:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must carry a UTC offset")
        if not self.end > self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class _EmsCommon(_Model):
    interval_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Decision interval [s]. "
        "Default 1 min (EV arrivals are answered within a minute).",
    )
    ttl_s: float | None = Field(
        None,
        le=86400,
        gt=0,
        description="Devices follow a setpoint at most this "
        "long, then fall back (default 3 decision intervals).",
    )
    ev_strategy: EvStrategyName | None = Field(
        "now",
        description="EV charging decisions are delegated to this strategy of "
        "control/strategies; None: the EMS sends no EV setpoints (chargers follow their own "
        "uncontrolled behaviour).",
    )


class HemsSpec(_EmsCommon):
    """Home EMS: battery self-consumption (rule or MPC), an EV strategy, DR response."""

    kind: Literal["hems"] = Field(description="hems: home EMS (one per home of the group).")
    ev_strategy: EvStrategyName | None = Field(
        "pv", description="Default pv: EVs charge from PV surplus (solar-optimised)."
    )
    battery_mode: Literal["rule", "mpc", "none"] = Field(
        "rule",
        description="rule: charge from PV surplus, discharge into site deficit "
        "(after the EVs); mpc: receding-horizon LP per home (the oracle's, control/oracle) "
        "co-planning the battery and the plugged-in EVs with their departure targets, "
        "re-planned every mpc_replan_s over mpc_horizon_h and at once for a home whose "
        "plugged-in EVs change; none: no battery setpoints (the battery keeps its scenario "
        "control).",
    )
    mpc_plan_evs: bool = Field(
        True,
        description="mpc: co-plan the plugged-in EVs (their "
        "strategy then only covers EVs not yet in a plan); false: the "
        "EVs follow ev_strategy and only the battery is planned.",
    )
    mpc_plan_hpwh: bool = Field(
        True,
        description="mpc: co-plan the heat-pump water heaters "
        "(sites[*].heat_pump_water_heater) in the same LP: tank heat "
        "with losses, COP per step from the outdoor temperature, the "
        "hot-water draw forecast, the unit's reserve as comfort floor; "
        "sent as hpwh_setpoint_w; false: the units keep their own "
        "rule.",
    )
    mpc_horizon_h: float = Field(24.0, gt=0, le=168, description="MPC look-ahead [h].")
    mpc_replan_s: float = Field(3600.0, gt=0, le=86400, description="MPC re-plan interval [s].")
    mpc_step_s: float = Field(900.0, gt=0, le=3600, description="MPC time step [s].")
    forecast: Literal["perfect", "persistence", "noisy"] = Field(
        "perfect",
        description="PV and load forecast of the MPC: perfect = the run's own "
        "future PV and load-profile values (a heat-pump water heater's rule power is not in "
        "it); persistence = what the HEMS measured in the same step the day before (else "
        "now); noisy = the run's values x (1 + forecast_noise_rel_sigma x sqrt(lead steps) "
        "x z), z from the seeded streams ems/<group>/forecast (PV) and "
        "ems/<group>/load_forecast.  Step 0 is always the measurement; prices always come "
        "from the tariff (known ahead).  Water heaters (mpc_plan_hpwh): the hot-water draw "
        "follows the same source (noisy: stream ems/<group>/draw_forecast); the outdoor "
        "temperature (COP) is the run's own for perfect and noisy, the same hour of the day "
        "before for persistence.",
    )
    forecast_noise_rel_sigma: float = Field(
        0.05, ge=0, le=2, description="noisy: relative sigma per sqrt(step) of lead time."
    )
    mpc_final_soc: float = Field(
        0.3,
        ge=0,
        le=1,
        description="MPC: lowest SoC at the horizon "
        "end (stops the LP emptying the battery before the horizon).",
    )
    dr_windows: list[DrWindowSpec] = Field(default_factory=list, description="DR requests.")
    observe: Literal["truth", "meter"] = Field(
        "truth",
        description="What the battery rule sees of the home's own net demand: truth "
        "= the tick's load and PV; meter = the group's smart meter over the B-route (the "
        "polled instantaneous power, else the last 30-minute registers, minus the battery "
        "and EV power the HEMS reads from its own devices); needs sites[].smart_meter and "
        "battery_mode rule.",
    )
    dr_precharge_h: float = Field(
        3.0,
        ge=0,
        le=48,
        description="Hours before a DR window in "
        "which the battery stops discharging (keeps energy for it).",
    )


class BemsSpec(_EmsCommon):
    """Building EMS: monthly peak-demand-charge minimisation with battery and EV parking."""

    kind: Literal["bems"] = Field(
        description="bems: building EMS (monthly peak-demand-charge minimisation)."
    )
    initial_threshold_kw: float = Field(
        0.0,
        le=1e7,
        ge=0,
        description="Import threshold per site at "
        "the start of each month [kW]; it rises to the month's "
        "peak demand so far.  0: pure adaptation (weak in the "
        "first days; give the expected shaved peak).",
    )
    demand_interval_s: float = Field(
        1800.0, gt=0, le=86400, description="Demand-metering interval [s] (Japan: 30 min)."
    )
    recharge_soc: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Below this SoC the battery "
        "recharges from the grid within the threshold's headroom.",
    )
    headroom_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Grid recharging keeps import below this fraction of the threshold.",
    )


class FemsSpec(_EmsCommon):
    """Factory EMS: deferrable processes into PV surplus / cheap hours, deadlines kept.

    The group's EVs are the deferrable processes (engine hook: an EV slot with
    one daily trip whose departure is the deadline and whose trip energy is the
    process energy; see docs/ems.md)."""

    kind: Literal["fems"] = Field(
        description="fems: factory EMS (deferrable processes against deadlines and prices)."
    )
    ev_strategy: None = Field(None, description="FEMS decides the process setpoints itself.")
    cheap_price_jpy_per_kwh: float = Field(
        0.0,
        le=1e4,
        ge=0,
        description="Processes run at full power when the import price is at or below this.",
    )
    deadline_margin_s: float | None = Field(
        None,
        le=7 * 86400,
        ge=0,
        description="Full power once the time "
        "left minus this is what full power needs "
        "(default 2 decision intervals + 15 min).",
    )
    rate_factor: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Share of the rated process power the deadline check counts on.",
    )
    battery_mode: Literal["rule", "none"] = Field(
        "rule",
        description="rule: charge from PV surplus, "
        "discharge into site deficit; none: no battery "
        "setpoints (the battery keeps its scenario "
        "control).",
    )


Priority = Annotated[int, Field(ge=-1000, le=1000)]


class CemsSpec(_EmsCommon):
    """Community EMS behind one point of common coupling (self-owned-line microgrid)."""

    kind: Literal["cems"] = Field(
        description="cems: community EMS behind one point of common coupling."
    )
    interval_s: float = Field(
        900.0,
        gt=0,
        le=3600,
        description="Decision interval [s]; must "
        "divide the settlement tick so that load and PV are constant "
        "between decisions.",
    )
    member_groups: list[str] = Field(
        default_factory=list,
        description="Further site groups "
        "behind the same PCC (e.g. a group holding the shared "
        "battery); the keyed group is always a member.",
    )
    shared_battery_groups: list[str] = Field(
        default_factory=list, description="Member groups whose batteries serve the whole community."
    )
    pcc_import_limit_kw: float | None = Field(
        None,
        le=1e7,
        ge=0,
        description="Import limit at the PCC [kW]; None: unlimited while grid-connected.",
    )
    outages: list[tuple[_dt.datetime, _dt.datetime]] = Field(
        default_factory=list,
        description="Grid-outage windows [start, end): islanded, PCC import forced to 0.",
    )
    priority: list[Priority] | Priority | dict[str, Priority] = Field(
        0,
        description="Priority class per site of the members (concatenated in member order: "
        "keyed group first), one class per member group ({clinic: 2, shops: 1}; unnamed "
        "groups 0), or one class for all; higher = more critical, shed last.",
    )
    margin_w: float = Field(
        1.0,
        le=1e9,
        ge=0,
        description="Safety margin kept below the allowed PCC import per decision [W].",
    )
    shared_battery_reserve_soc: float = Field(
        0.5,
        ge=0,
        le=1,
        description="While connected "
        "the shared battery discharges only above this "
        "SoC and refills to it from the grid (PCC limit "
        "permitting): energy kept for an outage.",
    )

    @field_validator("outages")
    @classmethod
    def _outages(cls, v):
        for a, b in v:
            if a.tzinfo is None or b.tzinfo is None:
                raise ValueError("outage times must carry a UTC offset")
            if not b > a:
                raise ValueError(f"outage end {b} must be after start {a}")
        return v


EmsSpec = Annotated[HemsSpec | BemsSpec | FemsSpec | CemsSpec, Field(discriminator="kind")]


class EmsSection(_Model):
    """Stand-alone container (until ``Scenario.ems`` exists): EMS per site-group name."""

    ems: dict[str, EmsSpec] = Field(default_factory=dict)
