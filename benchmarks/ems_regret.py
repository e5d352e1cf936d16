"""HEMS (rule vs MPC, three forecast sources) and FEMS measured against the optimum.

    python benchmarks/ems_regret.py [--only hems|fems] [--days N] [--out table.md]

Each row is a run of the same scenario and seed; the optimum is the oracle
(``cps_sim.experiment.oracle``) replayed through the same engine.  Columns as in
``ev_strategies_compare.py``: cost, J (cost + terminal value of the stored energy
used), regret to the optimum, service shortfall (EV energy below target at
departure, deferrable energy and hot water not delivered), penalised regret, self-consumption,
wall time; for MPC rows also the re-plans and the LP time per re-plan.

Scenarios: ``benchmarks/hems_regret.yaml`` (40 homes, batteries, V2H EVs),
``benchmarks/hpwh_regret.yaml`` (20 homes, batteries, V2H EVs, heat-pump water heaters) and
``benchmarks/fems_regret.yaml`` (three factories with a deferrable process).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

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
from cps_sim.scenario.schema import Scenario

HERE = Path(__file__).resolve().parent

HEMS_VARIANTS = {
    "(no controller)": {},
    "EVs 'cost', no HEMS": {"control": {"ev_strategy": "cost"}},
    "HEMS rule, EVs 'pv'": {"ems": {"kind": "hems", "ev_strategy": "pv"}},
    "HEMS rule, EVs 'cost'": {"ems": {"kind": "hems", "ev_strategy": "cost"}},
    "HEMS MPC battery only, EVs 'cost'": {
        "ems": {"kind": "hems", "battery_mode": "mpc", "ev_strategy": "cost", "mpc_plan_evs": False}
    },
    "HEMS MPC co-planned, perfect": {
        "ems": {"kind": "hems", "battery_mode": "mpc", "ev_strategy": "cost", "forecast": "perfect"}
    },
    "HEMS MPC co-planned, persistence": {
        "ems": {
            "kind": "hems",
            "battery_mode": "mpc",
            "ev_strategy": "cost",
            "forecast": "persistence",
        }
    },
    "HEMS MPC co-planned, noisy 10 %": {
        "ems": {
            "kind": "hems",
            "battery_mode": "mpc",
            "ev_strategy": "cost",
            "forecast": "noisy",
            "forecast_noise_rel_sigma": 0.1,
        }
    },
}
_MPC = {"kind": "hems", "battery_mode": "mpc", "ev_strategy": "cost"}
HPWH_VARIANTS = {
    "(no controller; water heaters' night rule)": {},
    "water heaters' surplus rule, no HEMS": {"hpwh": {"control": "surplus"}},
    "HEMS rule, EVs 'cost', water heaters' surplus rule": {
        "ems": {"kind": "hems", "ev_strategy": "cost"},
        "hpwh": {"control": "surplus"},
    },
    "HEMS MPC battery + EVs, water heaters' surplus rule": {
        "ems": {**_MPC, "mpc_plan_hpwh": False},
        "hpwh": {"control": "surplus"},
    },
    "HEMS MPC battery + EVs + water heater, perfect": {"ems": {**_MPC, "forecast": "perfect"}},
    "HEMS MPC battery + EVs + water heater, persistence": {
        "ems": {**_MPC, "forecast": "persistence"}
    },
    "HEMS MPC battery + EVs + water heater, noisy 10 %": {
        "ems": {**_MPC, "forecast": "noisy", "forecast_noise_rel_sigma": 0.1}
    },
}
FEMS_VARIANTS = {
    "(no controller: as soon as the window opens)": {},
    "FEMS (surplus, deadline laxity, battery rule)": {"ems": {"kind": "fems", "interval_s": 300}},
    "FEMS, cheap hours <= 20 JPY": {
        "ems": {"kind": "fems", "interval_s": 300, "cheap_price_jpy_per_kwh": 20}
    },
}


def variant(sc: Scenario, over: dict, days: float | None) -> Scenario:
    d = sc.model_dump(mode="json")
    group = d["sites"][0]["name"]
    if "control" in over:
        d["control"].update(over["control"])
    if "hpwh" in over:
        d["sites"][0]["heat_pump_water_heater"].update(over["hpwh"])
    d["ems"] = {group: over["ems"]} if "ems" in over else {}
    if days is not None:
        d["duration_days"] = days
    return Scenario.model_validate(d)


def run_variants(sc: Scenario, variants: dict, days: float | None = None) -> dict:
    base = variant(sc, {}, days)
    sol = solve_oracle(base, OracleSpec(objective="cost", chunk_sites=10))
    obj = sol.objective
    t0 = time.perf_counter()
    rec, nets = replay(sol)
    k = rec.kpis(rec.events())
    ref_j, ref_pen = objective_value(k, obj), penalised(k, obj)
    rows = [
        _row("optimum (oracle)", k, obj, ref_j, ref_pen, time.perf_counter() - t0 + sol.wall_time_s)
    ]
    for name, over in variants.items():
        s = variant(sc, over, days)
        t0 = time.perf_counter()
        r = simulate(s)
        wall = time.perf_counter() - t0
        row = _row(name, r.kpis(r.events()), obj, ref_j, ref_pen, wall)
        ems = r.world.wiring.ems_controllers if r.world.wiring is not None else {}
        mpc = next((c.mpc_state for c in ems.values() if getattr(c, "mpc_state", None)), None)
        if mpc is not None:
            walls = np.asarray(mpc.replan_wall_s)
            row["replans"] = f"{mpc.solves}+{mpc.event_solves}"
            row["ms_per_replan"] = 1000.0 * float(walls.mean()) if walls.size else 0.0
            if mpc.hpwh_pred_checks:
                row["tank_err_k"] = (
                    mpc.hpwh_pred_err_max_k,
                    mpc.hpwh_pred_err_sum_k / mpc.hpwh_pred_checks,
                )
        rows.append(row)
    return {
        "rows": rows,
        "lp": oracle_kpis(sol),
        "agreement": agreement(sol, k, nets),
        "terminal": obj.terminal_value,
        "penalty": obj.penalty,
    }


def _row(name, k, obj, ref_j, ref_pen, wall) -> dict:
    j, pen = objective_value(k, obj), penalised(k, obj)
    short = (
        k["ev_unmet_at_departure_kwh"]
        + k.get("deferrable_unmet_kwh", 0.0)
        + k.get("hot_water_unmet_kwh_th", 0.0)
    )
    return {
        "variant": name,
        "cost_jpy": k["cost_jpy"],
        "J_jpy": j,
        "regret_jpy": j - ref_j,
        "regret_pct": 100.0 * (j - ref_j) / abs(ref_j),
        "shortfall_kwh": short,
        "regret_pen_jpy": pen - ref_pen,
        "self_consumption": k["self_consumption"],
        "replans": "",
        "ms_per_replan": float("nan"),
        "wall_s": wall,
    }


COLUMNS = [
    ("variant", "{}"),
    ("cost_jpy", "{:,.0f}"),
    ("J_jpy", "{:,.0f}"),
    ("regret_jpy", "{:,.0f}"),
    ("regret_pct", "{:.1f}"),
    ("shortfall_kwh", "{:.2f}"),
    ("regret_pen_jpy", "{:,.0f}"),
    ("self_consumption", "{:.3f}"),
    ("replans", "{}"),
    ("ms_per_replan", "{:.0f}"),
    ("wall_s", "{:.1f}"),
]


def markdown(title: str, res: dict) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = [
        "| "
        + " | ".join(
            ("" if (isinstance(r[c], float) and np.isnan(r[c])) else f.format(r[c]))
            for c, f in COLUMNS
        )
        + " |"
        for r in res["rows"]
    ]
    a, lp = res["agreement"], res["lp"]
    note = (
        f"Optimum: LP {lp['objective']:,.2f} JPY (bound {lp['bound']:,.2f}); replay "
        f"differs by {a['objective_diff']:.2g} JPY; terminal value {res['terminal']:g} "
        f"JPY/kWh, shortfall penalty {res['penalty']:g} JPY/kWh; LP solved in "
        f"{lp['solve_time_s']:.1f} s."
    )
    tank = [
        f"{r['variant']}: max {r['tank_err_k'][0]:.2g} K, mean {r['tank_err_k'][1]:.2g} K"
        for r in res["rows"]
        if "tank_err_k" in r
    ]
    if tank:
        note += (
            " MPC plan vs engine, water-heater tank temperature at each re-plan against the "
            "previous plan's prediction: " + "; ".join(tank) + "."
        )
    return "\n".join([f"### {title}", "", head, sep, *body, "", note])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["hems", "hpwh", "fems"], default=None)
    p.add_argument("--days", type=float, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    parts = []
    if a.only in (None, "hems"):
        res = run_variants(load_scenario(HERE / "hems_regret.yaml"), HEMS_VARIANTS, a.days)
        parts.append(markdown("HEMS (benchmarks/hems_regret.yaml)", res))
        print(parts[-1], flush=True)
    if a.only in (None, "hpwh"):
        res = run_variants(load_scenario(HERE / "hpwh_regret.yaml"), HPWH_VARIANTS, a.days)
        parts.append(markdown("HEMS with water heaters (benchmarks/hpwh_regret.yaml)", res))
        print(parts[-1], flush=True)
    if a.only in (None, "fems"):
        res = run_variants(load_scenario(HERE / "fems_regret.yaml"), FEMS_VARIANTS, a.days)
        parts.append(markdown("FEMS (benchmarks/fems_regret.yaml)", res))
        print(parts[-1], flush=True)
    if a.out:
        a.out.write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
