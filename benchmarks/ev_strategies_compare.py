"""Run the same homes under every EV charging strategy and tabulate the outcome.

    python benchmarks/ev_strategies_compare.py [scenario.yaml] [--days N] [--out table.md]

Default scenario: scenarios/ev_strategies_compare.yaml.  Each strategy is a
separate run of the same scenario and seed with ``control.ev_strategy`` set
(the controller and the devices talk over the in-memory bus), plus one run
with no controller at all (the engine's uncontrolled charging).  Columns:
energy cost [JPY], PV self-consumption, aggregate and per-site peak import
[kW], curtailment and curtailment avoided vs ``now`` [kWh], EV energy
charged [kWh], energy short of target at departure [kWh], bus messages and
wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cps_sim.experiment.run import simulate
from cps_sim.scenario.loader import load_scenario
from cps_sim.scenario.schema import EV_STRATEGIES, Scenario

ROOT = Path(__file__).resolve().parents[1]


def with_strategy(sc: Scenario, strategy: str | None, days: float | None) -> Scenario:
    d = sc.model_dump(mode="json")
    d["control"]["ev_strategy"] = strategy
    if strategy == "v2g":
        # discharge to the grid whenever the export price is paid (no grid signal in a
        # scenario yet): shows what V2G is worth under a flat buy-back price
        d["control"]["v2g_price_jpy_per_kwh"] = 0.0
    if days is not None:
        d["duration_days"] = days
    return Scenario.model_validate(d)


def run_all(sc: Scenario, days: float | None = None) -> list[dict]:
    rows = []
    for strategy in (None, *EV_STRATEGIES):
        s = with_strategy(sc, strategy, days)
        t0 = time.perf_counter()
        rec = simulate(s)
        wall = time.perf_counter() - t0
        k = rec.kpis(rec.events())
        tr = rec.world.wiring.transport if rec.world.wiring is not None else None
        rows.append({
            "strategy": strategy or "(no controller)",
            "cost_jpy": k["energy_cost_jpy"],
            "self_consumption": k["self_consumption"],
            "peak_kw": k["peak_import_kw"],
            "peak_site_kw": k["peak_site_import_kw"],
            "curtailment_kwh": k["curtailment_kwh"],
            "ev_charged_kwh": k["ev_charging_kwh"],
            "unmet_kwh": k["ev_unmet_at_departure_kwh"],
            "below_target": f"{k['ev_departures_below_target']:.0f}/{k['ev_departures']:.0f}",
            "messages": tr.counters.delivered if tr is not None else 0,
            "wall_s": wall,
        })
    ref = next(r for r in rows if r["strategy"] == "now")
    for r in rows:
        r["curtailment_avoided_kwh"] = ref["curtailment_kwh"] - r["curtailment_kwh"]
    return rows


COLUMNS = [("strategy", "{}"), ("cost_jpy", "{:,.0f}"), ("self_consumption", "{:.3f}"),
           ("peak_kw", "{:.1f}"), ("peak_site_kw", "{:.2f}"), ("curtailment_kwh", "{:.1f}"),
           ("curtailment_avoided_kwh", "{:.1f}"), ("ev_charged_kwh", "{:.0f}"),
           ("unmet_kwh", "{:.2f}"), ("below_target", "{}"), ("messages", "{}"),
           ("wall_s", "{:.1f}")]


def markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(f.format(r[c]) for c, f in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", nargs="?", default=str(ROOT / "scenarios" /
                                                      "ev_strategies_compare.yaml"))
    p.add_argument("--days", type=float, default=None, help="override duration_days")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    a = p.parse_args()
    table = markdown(run_all(load_scenario(a.scenario), a.days))
    print(table)
    if a.out:
        a.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
