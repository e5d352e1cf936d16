"""Sweep benchmark: a 100-run sweep of a one-day city scenario on 1 and 2 workers.

    python benchmarks/sweep_bench.py [--runs 100] [--homes 300] [--workers 1 2]

Measures

* ``T_seq`` — the same runs called one after another in this process with
  ``run_scenario`` (no sweep machinery): the work itself;
* ``T_N`` — ``run_sweep`` with N local workers (process pool, fresh results
  directory, catalog written at the end), called in this (warm) process;
* ``T_N cli`` — the same sweep as a user runs it: a fresh ``cps-sim sweep``
  process (interpreter, imports, fork server start-up, runs, catalog);
* start-up: a one-run sweep minus one run (fork server with the engine
  preloaded, plan, lock, catalog) — paid once per sweep;
* speed-up ``T_1 / T_N`` and per-run overhead ``(T_1 - start-up - T_seq) /
  runs``: what the sweep adds per run (pickling, atomic directory, fsyncs);
* steady-state speed-up: runs per second between the first and the last
  finished run (start-up excluded), N workers vs 1;
* ``cpu_burn_speedup_2_procs``: pure-Python CPU work on 2 processes vs 1,
  measured at the same time — the ceiling this machine offers right now
  (on a shared machine it can be far below 2).

Prints one JSON object; the numbers in benchmarks/README.md come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cps_sim.experiment.run import run_scenario  # noqa: E402
from cps_sim.experiment.sweep import run_sweep  # noqa: E402
from cps_sim.experiment.sweep_spec import expand, load_sweep  # noqa: E402
from cps_sim.scenario.schema import Scenario  # noqa: E402

BASE = REPO / "configs" / "sweeps" / "base" / "city_1day.yaml"


def sweep_file(tmp: Path, runs: int, homes: int) -> Path:
    p = tmp / "bench_sweep.yaml"
    p.write_text(
        textwrap.dedent(f"""\
        version: 1
        name: sweep_bench
        scenario: {BASE}
        set: ["sites[0].count={homes}"]
        design: {{method: lhs, samples: {runs}, seed: 1}}
        parameters:
          - {{name: pv_share, path: "sites[0].pv.share", low: 0.0, high: 1.0}}
          - {{name: battery_kwh, path: "sites[0].battery.capacity_kwh", low: 4, high: 20}}
          - {{name: ev_share, path: "sites[0].ev.share", low: 0.0, high: 1.0}}
        """)
    )
    return p


def _burn(n: int) -> float:
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i
    return time.perf_counter() - t


def cpu_burn_speedup(n: int = 5_000_000) -> float:
    """What this machine gives right now: pure-Python CPU work, 2 processes vs 1."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_burn, [1000, 1000]))  # start the workers
        t0 = time.perf_counter()
        list(pool.map(_burn, [n, n]))
        t2 = time.perf_counter() - t0
    t0 = time.perf_counter()
    _burn(n)
    _burn(n)
    return (time.perf_counter() - t0) / t2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--homes", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=2, help="best of this many sweeps")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cps_sweep_bench_"))
    f = sweep_file(tmp, args.runs, args.homes)
    plan = expand(load_sweep(f), f)
    assert len(plan.runs) == args.runs, len(plan.runs)

    # Warm-up (imports, caches), then the runs one after another in this process.
    run_scenario(Scenario.model_validate(plan.runs[0].scenario), tmp / "warm")
    t0 = time.perf_counter()
    for i, r in enumerate(plan.runs):
        run_scenario(Scenario.model_validate(r.scenario), tmp / "seq" / str(i))
    t_seq = time.perf_counter() - t0
    shutil.rmtree(tmp / "seq")

    # Fixed start-up of a sweep (fork server with the engine preloaded, plan, catalog):
    # a one-run sweep minus one run.
    (tmp / "one").mkdir()
    f1 = sweep_file(tmp / "one", 1, args.homes)
    t0 = time.perf_counter()
    run_sweep(f1, tmp / "one" / "out", workers=1, quiet=True)
    startup = time.perf_counter() - t0 - t_seq / args.runs

    out: dict = {
        "runs": args.runs,
        "homes": args.homes,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "t_seq_s": round(t_seq, 2),
        "run_s": round(t_seq / args.runs, 4),
        "sweep_startup_s": round(startup, 2),
        "cpu_burn_speedup_2_procs": round(cpu_burn_speedup(), 2),
        "load_avg_before": os.getloadavg()[0],
    }
    # Alternate worker counts, best of --repeat: the machine may be shared.
    best: dict[int, float] = {}
    steady: dict[int, float] = {}
    cold: dict[int, float] = {}
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for rep in range(args.repeat):
        for w in args.workers:
            t0 = time.perf_counter()
            res = run_sweep(f, tmp / f"w{w}-{rep}", workers=w, quiet=True)
            t = time.perf_counter() - t0
            assert res.ok == args.runs and res.failed == 0, res.failures[:3]
            best[w] = min(best.get(w, t), t)
            # steady state: runs per second from the first finished run to the last
            d = sorted(res.done_at_s)
            rate = (len(d) - 1) / (d[-1] - d[0])
            steady[w] = max(steady.get(w, rate), rate)
            shutil.rmtree(tmp / f"w{w}-{rep}", ignore_errors=True)
            # Cold, as a user runs it: a fresh `cps-sim sweep` process (imports, fork
            # server start-up, plan, runs, catalog).
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cps_sim",
                    "sweep",
                    str(f),
                    "--out",
                    str(tmp / f"cli{w}-{rep}"),
                    "--workers",
                    str(w),
                    "--quiet",
                ],
                check=True,
                capture_output=True,
                env=env,
            )
            t = time.perf_counter() - t0
            cold[w] = min(cold.get(w, t), t)
            shutil.rmtree(tmp / f"cli{w}-{rep}", ignore_errors=True)
    for w in args.workers:
        out[f"t_{w}_workers_s"] = round(best[w], 2)
        out[f"t_{w}_workers_cli_s"] = round(cold[w], 2)
        out[f"runs_per_s_{w}_workers_steady"] = round(steady[w], 2)
    t1 = best.get(1)
    if t1:
        out["per_run_overhead_ms"] = round(1000 * (t1 - startup - t_seq) / args.runs, 1)
        for w in args.workers:
            if w != 1:
                out[f"speedup_{w}_vs_1"] = round(t1 / best[w], 2)
                out[f"speedup_{w}_vs_1_cli"] = round(cold[1] / cold[w], 2)
                out[f"speedup_{w}_vs_1_steady"] = round(steady[w] / steady[1], 2)
    out["load_avg_after"] = os.getloadavg()[0]
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        out["results"] = str(tmp)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
