"""Run the same homes under every EV charging strategy and measure each against the optimum.

    python benchmarks/ev_strategies_compare.py [scenario.yaml] [--days N] [--out table.md]
                                               [--no-oracle]

Default scenario: scenarios/ev_strategies_compare.yaml.  Each strategy is a
separate run of the same scenario and seed with ``control.ev_strategy`` set
(the controller and the devices talk over the in-memory bus), plus one run
with no controller at all (the engine's uncontrolled charging), plus the
perfect-foresight optimum (``cps_sim.experiment.oracle``: one LP per home over
the week, replayed through the same engine).

A second optimum row has the EVs' discharge switched off: the best any
charging-only strategy can reach; its gap to the first is what V2H/V2G are worth.

Columns: energy cost [JPY]; ``J`` = cost + v x (stored energy at the start - at
the end) with v the week's lowest import price (what the oracle minimises: a
strategy that ends the week with emptier cars is not cheaper); regret = J - J of
the optimum [JPY and %]; the same against the charging-only optimum
[JPY]; energy below target at departure [kWh] and the
departures short of it; the same regret with that shortfall priced at the
oracle's penalty (100 JPY/kWh); PV self-consumption; per-site peak import [kW];
curtailment [kWh]; EV energy charged and discharged [kWh]; bus messages; wall
time.  A last check reports every pair of strategies whose runs coincide.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from cps_sim.experiment.oracle import (
    agreement,
    objective_value,
    oracle_kpis,
    penalised,
    replay,
    solve_oracle,
)
from cps_sim.experiment.run import simulate
from cps_sim.scenario.loader import load_scenario
from cps_sim.scenario.oracle_schema import OracleSpec
from cps_sim.scenario.schema import EV_STRATEGIES, Scenario

ROOT = Path(__file__).resolve().parents[1]


def with_strategy(sc: Scenario, strategy: str | None, days: float | None) -> Scenario:
    d = sc.model_dump(mode="json")
    d["control"]["ev_strategy"] = strategy
    d["control"]["groups"] = {}
    d["oracle"] = None  # the benchmark solves it once
    if days is not None:
        d["duration_days"] = days
    return Scenario.model_validate(d)


def _row(
    name: str, k: dict, obj, ref_j: float | None, ref_pen: float | None, wall: float, messages: int
) -> dict:
    j = objective_value(k, obj)
    pen = penalised(k, obj)
    return {
        "strategy": name,
        "cost_jpy": k["cost_jpy"],
        "J_jpy": j,
        "regret_jpy": j - ref_j if ref_j is not None else 0.0,
        "regret_pct": 100.0 * (j - ref_j) / abs(ref_j) if ref_j else 0.0,
        "unmet_kwh": k["ev_unmet_at_departure_kwh"],
        "below_target": f"{k['ev_departures_below_target']:.0f}/{k['ev_departures']:.0f}",
        "regret_pen_jpy": pen - ref_pen if ref_pen is not None else 0.0,
        "self_consumption": k["self_consumption"],
        "peak_site_kw": k["peak_site_import_kw"],
        "curtailment_kwh": k["curtailment_kwh"],
        "ev_charged_kwh": k["ev_charging_kwh"],
        "ev_discharged_kwh": k["ev_discharge_kwh"],
        "messages": messages,
        "wall_s": wall,
    }


def run_all(
    sc: Scenario, days: float | None = None, oracle: bool = True, base_dir: Path | None = None
) -> dict:
    """Every strategy's KPIs and regret; ``oracle`` adds the optimum's row.  ``base_dir``
    resolves the scenario's data files (its folder)."""
    out: dict = {"rows": [], "oracle": None}
    base = with_strategy(sc, None, days)
    sol = solve_oracle(base, OracleSpec(objective="cost", chunk_sites=10), base_dir=base_dir)
    obj = sol.objective
    ref_j = ref_pen = None
    if oracle:
        t0 = time.perf_counter()
        rec, nets = replay(sol, base_dir=base_dir)
        wall = time.perf_counter() - t0 + sol.wall_time_s
        k = rec.kpis(rec.events())
        ref_j, ref_pen = objective_value(k, obj), penalised(k, obj)
        out["oracle"] = {
            "lp": oracle_kpis(sol),
            "agreement": agreement(sol, k, nets),
            "terminal_value_jpy_per_kwh": obj.terminal_value,
            "penalty_jpy_per_kwh": obj.penalty,
        }
        msgs = rec.world.wiring.transport.counters.delivered
        out["rows"].append(_row("optimum (oracle)", k, obj, ref_j, ref_pen, wall, msgs))
        # the same optimum with the EVs' discharge switched off: the best any charging-only
        # strategy (off .. cost) can do; the difference to the row above is what V2H/V2G
        # are worth here
        d = base.model_dump(mode="json")
        for site in d["sites"]:
            if site.get("ev"):
                site["ev"]["v2x_kw"] = 0.0
        t0 = time.perf_counter()
        sol_c = solve_oracle(
            Scenario.model_validate(d),
            OracleSpec(objective="cost", chunk_sites=10),
            base_dir=base_dir,
        )
        rec_c, _ = replay(sol_c, base_dir=base_dir)
        k_c = rec_c.kpis(rec_c.events())
        out["rows"].append(
            _row(
                "optimum, charging only (no V2X)",
                k_c,
                obj,
                ref_j,
                ref_pen,
                time.perf_counter() - t0,
                rec_c.world.wiring.transport.counters.delivered,
            )
        )
        out["j_charge_only"] = objective_value(k_c, obj)
    for strategy in (None, *EV_STRATEGIES):
        s = with_strategy(sc, strategy, days)
        t0 = time.perf_counter()
        rec = simulate(s, base_dir=base_dir)
        wall = time.perf_counter() - t0
        k = rec.kpis(rec.events())
        tr = rec.world.wiring.transport if rec.world.wiring is not None else None
        msgs = tr.counters.delivered if tr is not None else 0
        row = _row(strategy or "(no controller)", k, obj, ref_j, ref_pen, wall, msgs)
        row["_signature"] = tuple(
            round(k[x], 6)
            for x in (
                "cost_jpy",
                "grid_import_kwh",
                "ev_charging_kwh",
                "ev_discharge_kwh",
                "ev_unmet_at_departure_kwh",
                "curtailment_kwh",
            )
        )
        out["rows"].append(row)
    if out.get("j_charge_only") is not None:
        for r in out["rows"]:
            r["regret_vs_charging_only_jpy"] = r["J_jpy"] - out["j_charge_only"]
    strat_rows = [r for r in out["rows"] if r["strategy"] in EV_STRATEGIES]
    out["coincide"] = [
        (a["strategy"], b["strategy"])
        for a, b in itertools.combinations(strat_rows, 2)
        if a["_signature"] == b["_signature"]
    ]
    return out


COLUMNS = [
    ("strategy", "{}"),
    ("cost_jpy", "{:,.0f}"),
    ("J_jpy", "{:,.0f}"),
    ("regret_jpy", "{:,.0f}"),
    ("regret_pct", "{:.1f}"),
    ("regret_vs_charging_only_jpy", "{:,.0f}"),
    ("unmet_kwh", "{:.2f}"),
    ("below_target", "{}"),
    ("regret_pen_jpy", "{:,.0f}"),
    ("self_consumption", "{:.3f}"),
    ("peak_site_kw", "{:.2f}"),
    ("curtailment_kwh", "{:.1f}"),
    ("ev_charged_kwh", "{:.0f}"),
    ("ev_discharged_kwh", "{:.0f}"),
    ("messages", "{}"),
    ("wall_s", "{:.1f}"),
]


def markdown(result: dict) -> str:
    rows = result["rows"]
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = [
        "| " + " | ".join(f.format(r[c]) if c in r else "" for c, f in COLUMNS) + " |" for r in rows
    ]
    lines = [head, sep, *body]
    o = result.get("oracle")
    if o is not None:
        a, lp = o["agreement"], o["lp"]
        lines += [
            "",
            f"Optimum: LP objective {lp['objective']:,.2f} JPY (bound "
            f"{lp['bound']:,.2f}), replay differs by {a['objective_diff']:.2g} JPY "
            f"({100 * a['objective_rel_diff']:.2g} %), largest per-site per-tick net "
            f"import difference {a['max_site_tick_net_diff_wh']:.2g} Wh; "
            f"{lp['variables']:,.0f} variables, solved in {lp['solve_time_s']:.1f} s "
            f"(wall {lp['wall_time_s']:.1f} s incl. inputs). Terminal value "
            f"{o['terminal_value_jpy_per_kwh']:g} JPY/kWh, shortfall penalty "
            f"{o['penalty_jpy_per_kwh']:g} JPY/kWh.",
        ]
    pairs = result.get("coincide", [])
    lines += [
        "",
        "Strategies whose runs coincide: "
        + (", ".join(f"{a} = {b}" for a, b in pairs) if pairs else "none."),
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "scenario", nargs="?", default=str(ROOT / "scenarios" / "ev_strategies_compare.yaml")
    )
    p.add_argument("--days", type=float, default=None, help="override duration_days")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--no-oracle", action="store_true", help="skip the optimum's replay row")
    a = p.parse_args()
    table = markdown(
        run_all(
            load_scenario(a.scenario),
            a.days,
            oracle=not a.no_oracle,
            base_dir=Path(a.scenario).resolve().parent,
        )
    )
    print(table)
    if a.out:
        a.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
