"""The 2022-mix scenario over its full fiscal year, and the test's four-week sample.

    python benchmarks/mix_2022_year.py [--seed N ...]

Runs ``scenarios/demand_growth_2022_mix.yaml`` as it is (365 days, 900 s ticks) and the
four representative weeks of ``tests/integration/test_mix_2022.py``, and prints for
each: the generation shares against the FY2022 targets (seed L5803-5822), the peak
demand, unserved energy, loss-of-load hours and curtailment.  Writes
``benchmarks/out/mix_2022_year.json``.  About 40 s per seed on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cps_sim.experiment.run import simulate
from cps_sim.scenario.loader import load_scenario

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "demand_growth_2022_mix.yaml"
WEEKS = ("2027-01-25", "2026-04-13", "2026-08-17", "2026-10-19")
TARGET = {"coal": 31.0, "gas": 34.0, "oil": 8.0, "renewable": 22.0, "nuclear": 6.0}


def _energy(k: dict[str, float]) -> dict[str, float]:
    return {
        "coal": k.get("system_coal_mwh", 0.0),
        "gas": k.get("system_gas_ccgt_mwh", 0.0) + k.get("system_gas_ocgt_mwh", 0.0),
        "oil": k.get("system_oil_mwh", 0.0),
        "nuclear": k.get("system_nuclear_mwh", 0.0),
        "renewable": (
            k["system_wind_mwh"]
            + k["system_utility_pv_mwh"]
            + k["system_site_export_mwh"]
            - k["system_curtailed_mwh"]
        ),
    }


def _report(label: str, runs: list[dict[str, float]], wall_s: float) -> dict:
    energy: dict[str, float] = {}
    for k in runs:
        for key, v in _energy(k).items():
            energy[key] = energy.get(key, 0.0) + v
    total = sum(energy.values())
    shares = {key: 100.0 * v / total for key, v in energy.items()}
    out = {
        "case": label,
        "shares_percent": shares,
        "max_abs_deviation_points": max(abs(shares[k] - TARGET[k]) for k in TARGET),
        "peak_demand_mw": max(k["system_peak_demand_mw"] for k in runs),
        "unserved_mwh": sum(k["system_unserved_mwh"] for k in runs),
        "loss_of_load_hours": sum(k["system_loss_of_load_hours"] for k in runs),
        "curtailed_mwh": sum(k["system_curtailed_mwh"] for k in runs),
        "wall_s": wall_s,
    }
    print(
        f"{label:>24}: "
        + ", ".join(f"{k} {shares[k]:.2f} %" for k in TARGET)
        + f" | peak {out['peak_demand_mw']:.1f} MW, unserved {out['unserved_mwh']:.3g} MWh, "
        f"LOLH {out['loss_of_load_hours']:g}, curtailed {out['curtailed_mwh']:.0f} MWh, "
        f"{wall_s:.0f} s"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, nargs="*", default=[2050])
    args = ap.parse_args()
    print("targets: " + ", ".join(f"{k} {v:g} %" for k, v in TARGET.items()))
    results = []
    for seed in args.seed:
        t0 = time.perf_counter()
        sc = load_scenario(SCENARIO, [f"seed={seed}"])
        rec = simulate(sc, base_dir=SCENARIO.parent)
        results.append(
            _report(f"seed {seed} full year", [rec.kpis(rec.events())], time.perf_counter() - t0)
        )
        t0 = time.perf_counter()
        weeks = []
        for start in WEEKS:
            sc = load_scenario(
                SCENARIO, [f"seed={seed}", f"start={start}T00:00:00+09:00", "duration_days=7"]
            )
            rec = simulate(sc, base_dir=SCENARIO.parent)
            weeks.append(rec.kpis(rec.events()))
        results.append(_report(f"seed {seed} four weeks", weeks, time.perf_counter() - t0))
    out = REPO / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "mix_2022_year.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
