"""``expect:`` block of a scenario: what its run must show.

Each entry is either an expression string or a mapping with a name and a
reason::

    expect:
      - kpi.self_sufficiency >= 0.4
      - max(grid_import_kw) <= 7 whenever scenario.control.ev_strategy == "load"
      - ev.soc_at_departure >= 0.8 for 95% of departures
      - islanded => grid_export_kw == 0
      - {check: "kpi.unserved_kwh == 0", name: no_unserved, why: "the claim of the study"}
      - fallback within 15 s of losing commands      # HIL: on the events log

The language is described in :mod:`cps_sim.scenario.expect_lang`; runs check
it with :mod:`cps_sim.experiment.expect` and ``cps-sim run`` exits with code
3 when an expectation fails.  Errors in an expression are scenario errors
with the file, line and path (``expect[2]``); names are checked against what
the scenario can produce (KPIs, time-series columns, site groups, scenario
fields), and again, exactly, against the finished run.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from cps_sim.scenario.expect_lang import ExpectError, Vocabulary, compile_expectation, parse
from cps_sim.scenario.sites_schema import _Model

# KPIs every run writes (experiment/recorder.py); features add families below.
BASE_KPIS = frozenset(
    {
        "balance_max_tick_residual_wh",
        "balance_residual_wh",
        "battery_charge_kwh",
        "battery_discharge_kwh",
        "battery_fade_kwh",
        "battery_loss_kwh",
        "carbon_cost_jpy",
        "co2_kg",
        "consumption_kwh",
        "cost_jpy",
        "curtailment_kwh",
        "deferrable_kwh",
        "deferrable_unmet_kwh",
        "energy_cost_jpy",
        "ev_charging_kwh",
        "ev_departures",
        "ev_departures_below_target",
        "ev_discharge_kwh",
        "ev_driving_kwh",
        "ev_loss_kwh",
        "ev_soc_at_departure_mean",
        "ev_trip_shortfall_kwh",
        "ev_unmet_at_departure_kwh",
        "evs",
        "grid_export_kwh",
        "grid_import_kwh",
        "load_kwh",
        "measured_correction_kwh",
        "peak_import_30min_kw",
        "peak_import_kw",
        "peak_site_import_kw",
        "pv_generation_kwh",
        "pv_potential_kwh",
        "pv_self_consumed_kwh",
        "self_consumption",
        "self_sufficiency",
        "sites",
        "stored_final_kwh",
        "stored_initial_kwh",
        "ticks",
        "unserved_kwh",
    }
)
# Columns of timeseries.parquet every run writes.
BASE_COLUMNS = frozenset(
    {
        "pv_generation_w",
        "pv_potential_w",
        "curtailment_w",
        "load_w",
        "ev_charging_w",
        "battery_charge_w",
        "battery_discharge_w",
        "grid_import_w",
        "grid_export_w",
        "unserved_w",
        "ev_driving_w",
        "ev_discharge_w",
        "ev_loss_w",
        "ev_trip_shortfall_w",
        "battery_loss_w",
        "battery_fade_w",
        "deferrable_w",
        "deferrable_unmet_w",
        "measured_correction_w",
        "losses_w",
        "peak_site_import_w",
        "battery_soc_mean",
        "ev_soc_mean",
        "ev_plugged",
        "irradiance_w_m2",
        "import_price_jpy_per_kwh",
        "export_price_jpy_per_kwh",
        "carbon_price_jpy_per_t",
        "grid_co2_g_per_kwh",
        "stored_wh",
        "balance_residual_wh",
    }
)
# Columns of timeseries_groups.parquet (per site group).
GROUP_COLUMNS = frozenset(
    {
        "pv_generation_w",
        "pv_potential_w",
        "curtailment_w",
        "load_w",
        "ev_charging_w",
        "battery_charge_w",
        "battery_discharge_w",
        "grid_import_w",
        "grid_export_w",
        "unserved_w",
        "ev_driving_w",
        "ev_discharge_w",
        "ev_loss_w",
        "ev_trip_shortfall_w",
        "battery_loss_w",
        "battery_fade_w",
        "deferrable_w",
        "deferrable_unmet_w",
        "measured_correction_w",
        "stored_wh",
    }
)
HPWH_PREFIXES = ("heat_pump_", "hot_water_", "hpwh_")


class ExpectSpec(_Model):
    """One expectation with a name and the reason it is there (a plain string in the
    scenario file is the ``check`` alone)."""

    check: str = Field(
        min_length=1, max_length=2000, description="The expression (see docs/expectations.md)."
    )
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,80}$", description="Short name shown in reports."
    )
    why: str = Field("", max_length=2000, description="What claim this checks.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, v: Any) -> Any:
        return {"check": v} if isinstance(v, str) else v


ExpectItem = ExpectSpec


def expect_text(item: ExpectSpec | str) -> str:
    return item if isinstance(item, str) else item.check


def expect_name(item: ExpectSpec | str, index: int) -> str:
    return item.name if isinstance(item, ExpectSpec) and item.name else f"expect[{index}]"


def scenario_vocabulary(scenario: Any) -> Vocabulary:
    """Names a run of ``scenario`` can produce (families by prefix, exact after the run)."""
    kpi_prefixes: list[str] = []
    col_prefixes: list[str] = []
    if getattr(scenario, "system", None) is not None:
        kpi_prefixes.append("system_")
        col_prefixes.append("system_")
    vpp = getattr(scenario, "vpp", None)
    if vpp is not None:
        kpi_prefixes.append(f"{vpp.name}_")
    bg = getattr(scenario, "balancing_group", None)
    if bg is not None:
        kpi_prefixes.append(f"{bg.name}_")
        col_prefixes.append(f"{bg.name}_")
    if getattr(scenario, "bridge", None) is not None:  # HIL runs (cps-sim hil) add bridge_*
        kpi_prefixes.append("bridge_")
    if getattr(scenario, "powerflow", None) is not None:
        kpi_prefixes.append("powerflow_")
        col_prefixes.append("powerflow_")
    sites = list(getattr(scenario, "sites", []))
    hp = [g.name for g in sites if g.heat_pump_water_heater is not None]
    if hp:
        kpi_prefixes += [*HPWH_PREFIXES, *(f"{n}.{p}" for n in hp for p in HPWH_PREFIXES)]
        col_prefixes += list(HPWH_PREFIXES)
    if any(g.battery is not None and g.battery.ageing for g in sites):
        kpi_prefixes.append("battery_soh_")
    groups = {g.name: GROUP_COLUMNS for g in sites}
    return Vocabulary(
        kpis=BASE_KPIS,
        columns=BASE_COLUMNS,
        group_columns=groups,
        kpi_prefixes=tuple(kpi_prefixes),
        column_prefixes=tuple(col_prefixes),
        scenario=scenario.model_dump(mode="json"),
        exact=False,
    )


def validate_expectations(scenario: Any) -> Any:
    """Model validator of ``Scenario``: every ``expect`` entry parses and names things the
    scenario can produce.  Errors carry the path ``expect[i]`` (``expect[i].check``)."""
    items = list(getattr(scenario, "expect", []) or [])
    if not items:
        return scenario
    vocab = scenario_vocabulary(scenario)
    errors: list[InitErrorDetails] = []
    for i, item in enumerate(items):
        text = expect_text(item)
        try:
            compile_expectation(text, vocab)
        except ExpectError as exc:
            loc: tuple[str | int, ...] = ("expect", i)
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("expect_error", "{msg}", {"msg": exc.describe(text)}),
                    loc=loc,
                    input=None,
                )
            )
    if errors:
        raise ValidationError.from_exception_data("Scenario", errors)
    return scenario


def syntax_check(text: str) -> None:
    """Parse only (no names); raises :class:`~cps_sim.scenario.expect_lang.ExpectError`."""
    parse(text)
