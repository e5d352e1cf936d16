"""Generate ``docs/kpis.md`` from the KPI registry and the column descriptions.

``python -m cps_sim.experiment.kpi_docs`` rewrites the page (``--check`` only compares
and exits 1 when it is stale); ``tests/unit/test_kpi_docs.py`` fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cps_sim.experiment.columns import (
    GROUP_COLUMNS,
    OTHER_COLUMNS,
    SIGN_NOTE,
    SITE_COLUMNS,
    SMART_METER_COLUMNS,
    SYSTEM_COLUMNS,
    Column,
    flow_columns,
)
from cps_sim.experiment.kpi_registry import FAMILIES, Family

DOC = Path(__file__).resolve().parents[2] / "docs" / "kpis.md"

FACTS = (
    ("cps_sim.tick_s", "tick length [s]"),
    ("cps_sim.warmup_s", "length of the warm-up that ran before the first row [s]"),
    ("cps_sim.sites", "number of sites"),
    ("cps_sim.evs", "number of EVs"),
    (
        "cps_sim.stored_initial_wh",
        "energy in all batteries and EVs where the first row starts [Wh]",
    ),
    (
        "cps_sim.stored_initial_wh_by_group",
        "JSON: the same per site group, {group: Wh} (the start of each group's "
        "`stored_wh` in timeseries_groups.parquet; the values add up to "
        "`cps_sim.stored_initial_wh`)",
    ),
    (
        "cps_sim.device_groups",
        "JSON: the site groups with heat-pump water heaters (`hpwh`) "
        "and with space conditioning (`hvac`)",
    ),
    (
        "cps_sim.system",
        "JSON: plant technologies, rated electrolyser power [W], the system's "
        "carbon price, the named storage units and the grid storage energy where the first "
        "row starts (`storage_stored_initial_wh` [Wh]) (with a `system:` block)",
    ),
    ("cps_sim.vpp", "name of the aggregator (with a `vpp:` block)"),
    ("cps_sim.balancing_group", "name of the balancing group (with a `balancing_group:` block)"),
    ("cps_sim.sign_convention", "the sign convention below"),
    ("cps_sim.scenario, cps_sim.seed, cps_sim.scenario_hash", "which run this is"),
)

INTRO = """\
# KPIs and result columns

*Generated from the code (`cps_sim/experiment/kpi_registry.py`,
`cps_sim/experiment/columns.py`) by `python -m cps_sim.experiment.kpi_docs`;
`tests/unit/test_kpi_docs.py` fails when this page is stale. Do not edit by hand.*

Every KPI in `kpis.json` is computed in one place, `cps_sim/experiment/kpis.py`, from the
result tables that the run writes: the rows of `timeseries.parquet` (one per settlement
tick), `timeseries_groups.parquet`, `events.parquet`, the report tables and the run facts
in the Parquet schema metadata. No KPI depends on a quantity the files do not carry, so
each one can be recomputed from the files alone; `tests/e2e/test_kpis_from_parquet.py`
does that for every built-in scenario with code of its own and finds the same values to
1e-9 relative.

Notation: `Σ x` sums column `x` over the rows; `h` is the tick length in hours
(`tick_s / 3600`), so `Σ x_w · h` is an energy in Wh. Rows of a warm-up
(`warmup_days`) are not written and not counted.

## Consumption, self-consumption and self-sufficiency

The sites' **consumption** is the net energy used at the sites:

    consumption = load + deferrable + (ev_charging − ev_discharge)
                  + (battery_charge − battery_discharge)

that is, the load served (heat-pump water heaters are part of `load_w`), the deferrable
processes, what the EVs took net of what they gave back by V2H/V2G, and what the
stationary batteries took net of what they gave back (their conversion losses,
self-discharge, capacity fade and the change of their stored energy). By the sites' AC
balance it equals `grid_import + pv_generation − grid_export`. Energy that was in the
stores at the start and is used during the run is therefore not counted as consumption
(it was neither imported nor generated in the run); without PV the self-sufficiency is
exactly 0.

**Self-consumption** (share of the PV generation used on site) and **self-sufficiency**
(share of the consumption covered by the sites' own PV; also called autarky) follow the
PV-storage literature (Luthander et al., *Photovoltaic self-consumption in buildings: a
review*, Applied Energy 142 (2015) 80-94): both start from the self-consumed PV and divide
by the PV generation and by the consumption respectively. PV that charges a battery or an
EV counts as self-consumed, and the batteries' losses are part of the consumption. Per
tick:

    self-consumed PV = pv_generation − min(grid_export, pv_generation)
    covered          = min(self-consumed PV, consumption)
    self_consumption = Σ self-consumed PV / Σ pv_generation
    self_sufficiency = max(Σ covered, 0) / Σ consumption

Exported energy counts as PV first, so V2G or battery export beyond the tick's PV is not
PV. `covered` is the self-consumed PV less what stores exported to the grid beyond the
tick's imports; equivalently, a tick's grid energy used is its import less the export no
PV covered, and `self_sufficiency = 1 − Σ grid energy used / Σ consumption`. When no tick
exports from stores more than it imports, `self_sufficiency · consumption =
self_consumption · pv_generation`, Luthander's common numerator. Both stay in [0, 1]
whatever the mix of loads, processes, EVs, V2X, batteries and heat pumps
(property-tested); without PV the self-sufficiency is 0.

Both are computed over all sites together, per tick. Energy that one site exports from a
store while other sites import in the same tick (a community battery serving the homes
of a microgrid) is therefore the sites' own energy, not the grid's.

## Peak import and the metering interval

`peak_import_kw` is the largest import of all sites together averaged over one
settlement tick, the interval at which the simulator reads the meters (`tick_s`,
15 min by default). Japanese high-voltage contracts bill the largest 30-min average
demand (最大需要電力); `peak_import_30min_kw` reports that, over clock half-hours.

## Electrolysers: curtailment avoided and export displaced

Electrolysers take surplus after grid storage and before the interconnector and
curtailment. Their energy is therefore not all curtailment avoided: where the
interconnector (`system.export_capacity_mw`) could have taken the surplus, it is export
displaced. Both parts (and must-run overgeneration avoided) are reported per tick and as
KPIs; they sum to `system_electrolyser_mwh` and equal, to rounding, the differences to the
same run without electrolysers (`tests/integration/test_system.py`).

## Sign convention

"""


def _table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> list[str]:
    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out


def _columns(cols: list[Column] | tuple[Column, ...]) -> list[str]:
    return _table(
        [(f"`{c.name}`", c.unit, c.description) for c in cols], ("column", "unit", "meaning")
    )


def _family(f: Family) -> list[str]:
    lines = [
        f"### {f.title}",
        "",
        f"Present: {f.when}. Computed from: {f.source}."
        + ("" if f.computed_here else " (Not computed in experiment/kpis.py.)"),
        "",
    ]
    if f.intro:
        lines += [f.intro, ""]
    lines += _table(
        [(f"`{k.name}`", k.unit, f"`{k.formula}`", k.meaning) for k in f.kpis],
        ("KPI", "unit", "formula", "meaning"),
    )
    return [*lines, ""]


def render() -> str:
    lines = [INTRO + SIGN_NOTE, ""]
    lines += [
        "## timeseries.parquet",
        "",
        "One row per settlement tick. Energy flows of the sites' ledger (declared by "
        "the device populations, `cps_sim/world/populations/`):",
        "",
    ]
    lines += _columns(flow_columns())
    lines += ["", "Other columns of every run, and of per-tick devices when present:", ""]
    lines += _columns(SITE_COLUMNS)
    lines += ["", "With a `system:` block:", ""]
    lines += _columns(SYSTEM_COLUMNS)
    lines += ["", "With a `balancing_group:` (`<bg>` = its name) or `powerflow:` block:", ""]
    lines += _columns(OTHER_COLUMNS)
    lines += [
        "",
        "## timeseries_groups.parquet",
        "",
        "The flow columns above per site group (long format), and:",
        "",
    ]
    lines += _columns(GROUP_COLUMNS)
    lines += [
        "",
        "Per-tick device columns (heat-pump water heaters, space conditioning) "
        "appear per group too (NaN in groups without those devices).",
        "",
        "## smart_meter.parquet",
        "",
        "With `sites[].smart_meter`: one row per metered site and local 30-minute boundary "
        "(the B-route readings of a Japanese smart meter, `cps_sim/models/smart_meter.py`; "
        "see docs/models.md).",
        "",
        *_columns(SMART_METER_COLUMNS),
        "",
        "## Run facts (Parquet schema metadata)",
        "",
    ]
    lines += _table([(f"`{k}`", v) for k, v in FACTS], ("key", "meaning"))
    lines += [
        "",
        "Each field also carries `unit` and `description` in its own metadata.",
        "",
        "## KPIs",
        "",
    ]
    for f in FAMILIES:
        lines += _family(f)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run python -m cps_sim.experiment.kpi_docs", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
