"""The ``oracle:`` block: the perfect-foresight optimum of a scenario (docs/oracle.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cps_sim.scenario.sites_schema import _Model


class OracleSpec(_Model):
    """Perfect-foresight optimum: one LP per site over the whole run (``control/oracle/``).

    With this block every ``cps-sim run`` of the scenario also solves the oracle and
    adds its KPIs (``oracle_*``) and the run's gap to it (``regret_*``) to
    ``kpis.json`` (so a sweep's catalog has them per run); ``cps-sim run --oracle``
    runs the oracle's own schedule through the engine instead of the scenario's
    controllers.
    """

    objective: Literal["cost", "co2", "peak", "curtailment"] = Field(
        "cost",
        description="cost: import x (price + carbon) - export x export price [JPY]; "
        "co2: imported energy x emissions.grid_co2_g_per_kwh [kg]; peak: each site's highest "
        "tick-average import [kW] (the KPI peak_site_import_kw); curtailment [kWh].",
    )
    unmet_penalty: float | None = Field(
        None,
        ge=0,
        le=1e9,
        description="Per kWh of service shortfall (EV energy below target at "
        "departure, trip shortfall, process energy not delivered), in the objective's unit; "
        "unserved load costs 10x.  Default (assumption, above any marginal value of a kWh): "
        "cost 100 JPY/kWh, co2 5 kg/kWh, peak 10 kW/kWh, curtailment 10 kWh/kWh.",
    )
    terminal_value_per_kwh: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="Value of a kWh still stored (batteries, EVs) at the end, in "
        "the objective's unit: the oracle and every run are compared on objective + value x "
        "(stored_initial_kwh - stored_final_kwh), so emptying storage before the end is not "
        "free.  Default: the run's lowest import price (cost: the cheapest price to buy it "
        "back), lowest grid intensity (co2), 0 (peak, curtailment).",
    )
    min_current_a: float = Field(
        0.0,
        ge=0,
        le=80,
        description="0 (default): EV set-points may take any value, as the "
        "engine allows (a lower bound for every strategy); > 0: each EV set-point is 0 or at "
        "least min_current_a x control.voltage_v (semi-continuous, solved as a MILP).",
    )
    taper: Literal["inner", "relax"] = Field(
        "inner",
        description="CC-CV taper in the replayed schedule: inner = the taper line "
        "imposed at each piece end (the engine can always follow it); relax = ignored.  The "
        "relaxed LP is solved first in any case and reported as the bound.",
    )
    hpwh: bool = Field(
        True,
        description="Schedule the heat-pump water heaters (sites[*].heat_pump_water_heater) "
        "too: tank heat with losses, COP per tick from the outdoor temperature, the run's "
        "hot-water draws, the unit's reserve as comfort floor; the replay sends "
        "hpwh_setpoint_w.  Heat left in the tanks at the end is worth the terminal value / "
        "the COP of the last tick per kWh_th (in the oracle and in every run's regret).  "
        "false: the units run their own rule and their power is load.",
    )
    chunk_sites: int = Field(25, ge=1, le=100_000, description="Sites per LP batch.")
    workers: int = Field(1, ge=1, le=256, description="Processes solving batches in parallel.")
    regret: bool = Field(
        True,
        description="Solve the oracle in every run of this scenario "
        "and add oracle_* and regret_* KPIs.",
    )
