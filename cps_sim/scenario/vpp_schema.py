"""Scenario blocks of the VPP aggregator and the balancing group (frozen, ``extra="forbid"``).

``vpp:`` — a resource aggregator (seed rows 54-58) that bundles the EVs and
home batteries of some site groups and answers the grid operator's requests:

.. code-block:: yaml

    vpp:
      groups: [homes]                  # site groups it aggregates
      requests:                        # grid-operator requests
        - {id: noon, start: "2026-04-06T11:00+09:00", end: "2026-04-06T14:00+09:00",
           kind: absorb, power_kw: 300}
      requests_file: dr_events.yaml    # and/or a DR file (market/dr.py format)
      absorb_system_curtailment: {share: 1.0}   # automatic: absorb last tick's curtailment

``balancing_group:`` — a day-ahead plan of the groups' net import per 30-min
slot vs actual, settled at an imbalance price (seed row 62).

Units are in the names; kW and kWh at this edge, W and Wh inside.
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RequestKind = Literal["absorb", "supply", "dr_reduce"]
# the EV strategies of cps_sim.scenario.schema (repeated, not imported: schema.py imports
# this module for Scenario.vpp; a test checks the two lists agree)
EvStrategy = Literal[
    "off", "now", "min_pv", "pv", "load", "cost", "v2h", "v2g", "greedy", "balanced", "peak_shaving"
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )


class VppRequestSpec(_Model):
    """One grid-operator request over ``[start, end)``.

    ``absorb``: consume ``power_kw`` more (renewable surplus, avoid curtailment;
    上げDR). ``supply``: consume less or discharge (V2G, batteries) at a
    shortage. ``dr_reduce``: reduce consumption (下げDR) — EVs only charge less
    (no V2X discharge), batteries may discharge.
    """

    id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Name in the report; default req<i>."
    )
    start: _dt.datetime = Field(
        description="ISO 8601; without an offset it is read in the scenario's timezone."
    )
    end: _dt.datetime = Field(
        description="End of the request (exclusive); ISO 8601, without an "
        "offset read in the scenario's timezone."
    )
    kind: RequestKind = Field(
        description="absorb: consume more (上げDR); supply: consume less or "
        "discharge; dr_reduce: consume less (下げDR)."
    )
    power_kw: float = Field(
        gt=0,
        le=1e7,
        description="Requested change of the groups' consumption [kW], held for the whole request.",
    )

    @model_validator(mode="after")
    def _order(self) -> VppRequestSpec:
        a, b = self.start, self.end
        if (a.tzinfo is None) != (b.tzinfo is None):
            raise ValueError("start and end must both have a UTC offset or both have none")
        if not b > a:
            raise ValueError(f"end ({b}) must be after start ({a})")
        return self


class CurtailmentAbsorbSpec(_Model):
    """Automatic requests: after every tick in which the system layer curtailed
    renewables, ask the fleet to absorb that much more in the next tick
    (seed L5940-5946: BEVs charge on surplus RE to avoid curtailment)."""

    share: float = Field(
        1.0,
        gt=0,
        le=10,
        description="Requested power = share x (last "
        "tick's curtailment + what the VPP absorbed in it).",
    )
    min_kw: float = Field(1.0, le=1e7, ge=0, description="No request below this power [kW].")
    max_kw: float | None = Field(
        None, le=1e7, gt=0, description="Cap of an automatic request [kW]."
    )


class VppSpec(_Model):
    """A VPP aggregator over site groups (the resource aggregator of the seed's VPP roles)."""

    name: str = Field("vpp", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Name in the results.")
    groups: list[str] = Field(
        min_length=1, max_length=1000, description="Names of the site groups it aggregates."
    )
    interval_s: float | None = Field(
        None,
        gt=0,
        le=86400,
        description="Decision interval "
        "during requests [s]; default the settlement tick. The "
        "aggregator also decides at every request start and end.",
    )
    base_strategy: EvStrategy | None = Field(
        None,
        description="EV strategy the aggregator runs between requests (and as the "
        "baseline during them). None: the engine default (charge at full power on arrival). "
        "A group aggregated here must not also have an ev_strategy under control:.",
    )
    requests: list[VppRequestSpec] = Field(
        default_factory=list,
        max_length=100_000,
        description="Grid-operator requests, each over a time window.",
    )
    requests_file: str | None = Field(
        None,
        description="DR events file (YAML/CSV, "
        "cps_sim.market.dr format), relative to the scenario; "
        "reduce -> dr_reduce, absorb -> absorb.",
    )
    absorb_system_curtailment: CurtailmentAbsorbSpec | None = Field(
        None,
        description="Turn the system layer's curtailment of the previous tick into an "
        "absorb request (needs system:).",
    )
    ttl_s: float | None = Field(
        None,
        le=86400,
        gt=0,
        description="Devices follow a VPP setpoint at most this long (default 3 intervals).",
    )
    full_delivery_ratio: float = Field(
        0.99,
        gt=0,
        le=1,
        description="A request counts as fully delivered at this delivered/requested ratio.",
    )

    @model_validator(mode="after")
    def _unique_groups(self) -> VppSpec:
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"groups must be unique, got {self.groups}")
        ids = [r.id for r in self.requests if r.id is not None]
        if len(set(ids)) != len(ids):
            raise ValueError("request ids must be unique")
        return self


class BalancingGroupSpec(_Model):
    """A balancing group (計画値同時同量): plan vs actual net import per slot, settled.

    Plans: ``previous_day`` — each day's plan is the previous day's actual
    (the first day is not settled); ``baseline_run`` — the same scenario run
    without the VPP and the balancing group (a perfect forecast of the
    uncontrolled groups), optionally with multiplicative noise; ``file`` — a CSV
    ``timestamp,net_import_kwh`` per slot.
    Imbalance price: ``synthetic`` (cps_sim.market.prices, correlated with the
    groups' planned net import), ``flat`` or ``file`` (CSV
    ``timestamp,price_jpy_per_kwh`` per slot).
    """

    name: str = Field("bg", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Name in the results.")
    groups: list[str] | None = Field(None, description="Member site groups; None = all.")
    slot_s: float = Field(1800.0, ge=60, le=3600, description="Settlement slot [s] (JEPX: 30 min).")
    plan: Literal["previous_day", "baseline_run", "file"] = Field(
        "baseline_run",
        description="previous_day: each day's plan is the previous day's actual; "
        "baseline_run: a run without VPP and balancing group; file: plan_file.",
    )
    plan_file: str | None = Field(
        None,
        description="plan: file: CSV timestamp,net_import_kwh per slot, relative to the scenario.",
    )
    forecast_noise_std: float = Field(
        0.0,
        ge=0,
        le=2,
        description="Relative std of a seeded multiplicative noise on the plan per slot.",
    )
    price: Literal["synthetic", "flat", "file"] = Field(
        "synthetic", description="Imbalance price: synthetic, flat or file."
    )
    price_jpy_per_kwh: float = Field(
        15.0,
        ge=0,
        le=1e4,
        description="flat: the imbalance price; synthetic: base price (assumption).",
    )
    price_slope_jpy_per_kwh: float = Field(
        10.0,
        ge=0,
        le=1e4,
        description="synthetic: price rise from the lowest to the highest net import.",
    )
    price_file: str | None = Field(
        None,
        description="price: file: CSV timestamp,price_jpy_per_kwh per "
        "slot, relative to the scenario.",
    )

    @model_validator(mode="after")
    def _files(self) -> BalancingGroupSpec:
        if self.plan == "file" and not self.plan_file:
            raise ValueError("plan 'file' needs plan_file")
        if self.price == "file" and not self.price_file:
            raise ValueError("price 'file' needs price_file")
        if self.groups is not None and len(set(self.groups)) != len(self.groups):
            raise ValueError(f"groups must be unique, got {self.groups}")
        return self
