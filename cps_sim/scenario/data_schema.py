"""Scenario blocks that read real data files (cps_sim/data): EV sessions.

The other data-file options sit on the blocks they feed: ``load.profile: csv``
(measured load profiles), ``system.demand.profile: tso_csv`` (TSO area demand) and
``tariff.type: jepx`` (JEPX spot prices by area).  Paths are relative to the scenario
file and must stay inside its folder.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvSessionsSpec(BaseModel):
    """Charging sessions from a CSV (ACN-Data or generic layout, cps_sim/data/ev_sessions.py)
    instead of sampled trips: one vehicle per session, arriving needing the session's
    energy and leaving at its departure."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )

    csv: str = Field(min_length=1, description="Sessions CSV, relative to the scenario.")
