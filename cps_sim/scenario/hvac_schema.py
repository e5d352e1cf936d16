"""Scenario block ``space_conditioning:`` of a site group: room air-conditioners /
heat pumps for space heating and cooling (model: ``models/hvac.py``; engine:
``world/populations/hvac.py``).  Defaults are labelled assumptions for a Japanese
detached house (see the model's docstring)."""

from __future__ import annotations

import datetime as _dt

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cps_sim.scenario.distributions import Quantity, bounded


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )


class HvacDrWindowSpec(_Model):
    """A demand-response event: the comfort band widens by ``shift_k`` during
    ``[start, end)`` (warmer in summer, cooler in winter, so the units draw less)."""

    start: _dt.datetime = Field(description="ISO 8601 with UTC offset.")
    end: _dt.datetime = Field(description="ISO 8601 with UTC offset; after start.")
    shift_k: float = Field(2.0, gt=0, le=10, description="Band widening during the event [K].")

    @model_validator(mode="after")
    def _order(self) -> HvacDrWindowSpec:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must carry a UTC offset")
        if not self.end > self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class SpaceConditioningSpec(_Model):
    """Room air-conditioner / space-heating heat pump per site (inverter, modulating)."""

    share: float = Field(1.0, ge=0, le=1, description="Fraction of sites with a unit.")
    floor_area_m2: Quantity = Field(60.0, description="Conditioned floor area per site [m²].")
    ua_w_per_k_m2: float = Field(
        2.0,
        gt=0,
        le=20,
        description="Heat loss per floor area "
        "incl. ventilation [W/(K m²)] (assumption: 2010s house).",
    )
    capacitance_wh_per_k_m2: float = Field(
        30.0, gt=0, le=500, description="Effective thermal mass per floor area [Wh/(K m²)]."
    )
    gains_w: float = Field(300.0, ge=0, le=1e5, description="Internal + solar gains [W].")
    heat_kw: float = Field(5.0, gt=0, le=1000, description="Rated heating output [kW_th].")
    cool_kw: float = Field(4.0, gt=0, le=1000, description="Rated cooling output [kW_th].")
    heat_setpoint_c: float = Field(
        20.0,
        ge=5,
        le=30,
        description="Lower edge of the comfort "
        "band (Japanese recommended room temperature for heating).",
    )
    cool_setpoint_c: float = Field(
        28.0,
        ge=15,
        le=35,
        description="Upper edge of the comfort band (recommended room temperature for cooling).",
    )
    initial_temp_c: float | None = Field(
        None,
        ge=-20,
        le=45,
        description="Indoor temperature at the start; default: the band's middle.",
    )
    carnot_fraction: float = Field(0.45, gt=0, le=1, description="COP = this × Carnot COP.")
    approach_k: float = Field(
        8.0, ge=0, le=30, description="Evaporator/condenser approach temperature [K]."
    )
    dr_windows: list[HvacDrWindowSpec] = Field(
        default_factory=list, description="Demand-response events (band widened)."
    )
    precondition_h: float = Field(
        0.0,
        ge=0,
        le=12,
        description="Hours before each DR event "
        "in which the band narrows (pre-cooling / pre-heating).",
    )
    precondition_k: float = Field(
        1.0, ge=0, le=5, description="Band narrowing before an event [K]."
    )

    @field_validator("floor_area_m2")
    @classmethod
    def _area(cls, v: Quantity) -> Quantity:  # located at the field (issue 10 item 9)
        return bounded(v, gt=0, le=10_000)

    @model_validator(mode="after")
    def _check(self) -> SpaceConditioningSpec:
        if not self.cool_setpoint_c > self.heat_setpoint_c:
            raise ValueError(
                f"cool_setpoint_c ({self.cool_setpoint_c}) must be above "
                f"heat_setpoint_c ({self.heat_setpoint_c})"
            )
        return self
