"""Engine benchmarks of issue 11, runnable against any checkout, side by side.

    python benchmarks/engine_v2.py                          # this checkout, every case
    python benchmarks/engine_v2.py --case ev_only_10k small_n_10
    python benchmarks/engine_v2.py --compare /path/to/other/checkout --rounds 3

Each case runs in a fresh subprocess (``PYTHONPATH`` set to the checkout under
test, so the same script measures an older commit unchanged) and reports its
wall time, its own peak RSS and a throughput.  ``--compare`` alternates the two
checkouts case by case and round by round (so a change in machine load hits
both), then prints the median of each and the ratio.  Results go to
``benchmarks/out/engine_v2.json``.

Cases (sizes chosen to finish in seconds; the city-year lives in city_year.py):

* ``ev_only_10k``: 10,000 EVs at 10,000 sites, one day at 15-minute ticks,
  nothing else at the sites but a flat 1 W load; *simulation only* (the world is
  built first), in M EV-steps/s (EVs × ticks / s);
* ``bare_numpy_10k``: the lower bound of that case — one SimPy process that
  updates one numpy vector per tick with the same charging law (charger power
  into the room left, at the same efficiency) and the same plugged schedule;
* ``small_n_10``: 10 EVs at 10 homes (PV, battery), one day at 1-minute ticks:
  µs per tick and M EV-steps/s, the regime of RL and HIL runs;
* ``hems_env``: ``cps_sim/Hems-v0`` (``CpsSimEnv``) on its default ten-home day, random
  actions: env steps per second (resets excluded);
* ``strategy_none`` / ``strategy_pv`` / ``strategy_cost``: 2,000 homes (60 % PV,
  30 % batteries, half with an EV) for 7 days, uncontrolled vs the ``pv`` and
  ``cost`` EV strategies (simulation only);
* ``scale_10k`` / ``scale_100k``: the city workload (benchmarks/city_year.yaml)
  at 10,000 and 100,000 homes for 7 days: ms per home;
* ``quickstart``: ``python -m cps_sim run scenarios/quickstart.yaml`` from process
  start to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ----------------------------------------------------------------------------- cases
def _scenario(**kw):
    from cps_sim.scenario.schema import Scenario

    d = dict(
        name="bench",
        seed=1,
        start="2026-04-06T00:00:00+09:00",
        duration_days=1,
        tick_s=900,
        weather={"source": "synthetic"},
    )
    d.update(kw)
    return Scenario(**d)


def _simulate_only(sc) -> tuple[float, object]:
    """Build the world (untimed), then time the SimPy run alone."""
    from cps_sim.core.environment import make_env
    from cps_sim.experiment.recorder import Recorder
    from cps_sim.world.build import build_world

    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    t0 = time.perf_counter()
    env.run(until=sc.duration_s + sc.tick_s * 0.5)
    return time.perf_counter() - t0, rec


def case_ev_only_10k() -> dict:
    n = 10_000
    sc = _scenario(
        sites=[
            {
                "name": "evs",
                "count": n,
                "load": {"annual_kwh": 8.76, "profile": "constant", "noise_cv": 0},
                "ev": {"per_site": 1},
            }
        ]
    )
    sim_s, rec = _simulate_only(sc)
    steps = n * sc.n_ticks
    return {
        "sim_s": sim_s,
        "ev_steps_per_s_m": steps / sim_s / 1e6,
        "ev_charging_kwh": float(rec.flows[:, list(_flows()).index("ev_charging_wh")].sum())
        / 1000.0,
    }


def _flows():
    from cps_sim.world.group import FLOWS

    return FLOWS


def case_bare_numpy_10k() -> dict:
    """One SimPy process, one numpy vector: the same charging law and plug schedule."""
    import numpy as np
    import simpy

    n, tick, ticks = 10_000, 900.0, 96
    rng = np.random.default_rng(1)
    cap = rng.choice([40e3, 60e3, 80e3], n, p=[0.5, 0.3, 0.2])
    e = cap * 0.7
    emax = cap.copy()
    p = np.full(n, 6000.0)
    eff = 0.9
    dep = rng.uniform(6, 10, n) * 3600.0
    arr = dep + rng.uniform(2, 10, n) * 3600.0
    trip = rng.uniform(2e3, 8e3, n)
    acc = [0.0]

    def proc(env):
        nonlocal e
        for k in range(ticks):
            yield env.timeout(tick)
            t = (k + 1) * tick
            plugged = (t <= dep) | (t > arr)
            back = (t > arr) & (t - tick <= arr)
            e = np.where(back, np.maximum(e - trip, 0.0), e)
            ch = np.minimum(p * (tick / 3600.0), (emax - e) / eff) * plugged
            e = e + ch * eff
            acc[0] += float(ch.sum())

    env = simpy.Environment()
    env.process(proc(env))
    t0 = time.perf_counter()
    env.run()
    sim_s = time.perf_counter() - t0
    return {"sim_s": sim_s, "ev_steps_per_s_m": n * ticks / sim_s / 1e6}


def case_small_n_10() -> dict:
    sc = _scenario(
        tick_s=60,
        sites=[
            {
                "name": "homes",
                "count": 10,
                "pv": {"share": 1.0},
                "battery": {"share": 1.0},
                "ev": {"per_site": 1, "v2x_kw": 6},
            }
        ],
    )
    sim_s, _ = _simulate_only(sc)
    return {
        "sim_s": sim_s,
        "us_per_tick": sim_s / sc.n_ticks * 1e6,
        "ev_steps_per_s_m": 10 * sc.n_ticks / sim_s / 1e6,
    }


def case_hems_env() -> dict:
    import numpy as np

    from cps_sim.rl import CpsSimEnv

    env = CpsSimEnv()
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    steps = 0
    t_run = 0.0
    for ep in range(5):
        env.reset(seed=ep)
        t0 = time.perf_counter()
        done = False
        while not done:
            a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            _, _, term, trunc, _ = env.step(a)
            steps += 1
            done = term or trunc
        t_run += time.perf_counter() - t0
    return {"sim_s": t_run, "env_steps_per_s": steps / t_run, "steps": steps}


def _homes(strategy: str | None, n: int = 2000, days: int = 7) -> dict:
    control = {"ev_strategy": strategy} if strategy else {}
    sc = _scenario(
        duration_days=days,
        control=control,
        sites=[
            {
                "name": "homes",
                "count": n,
                "pv": {"share": 0.6},
                "battery": {"share": 0.3},
                "ev": {"share": 0.5},
            }
        ],
    )
    sim_s, _ = _simulate_only(sc)
    return {"sim_s": sim_s}


def case_strategy_none() -> dict:
    return _homes(None)


def case_strategy_pv() -> dict:
    return _homes("pv")


def case_strategy_cost() -> dict:
    return _homes("cost")


def _city(homes: int, days: int = 7) -> dict:
    from cps_sim.scenario.loader import load_scenario

    sc = load_scenario(
        HERE / "city_year.yaml", [f"sites[0].count={homes}", f"duration_days={days}"]
    )
    t0 = time.perf_counter()
    sim_s, _rec = _simulate_only(sc)
    total = time.perf_counter() - t0
    return {"sim_s": sim_s, "build_and_sim_s": total, "ms_per_home": sim_s / homes * 1e3}


def case_scale_10k() -> dict:
    return _city(10_000)


def case_scale_100k() -> dict:
    return _city(100_000)


def case_quickstart() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "cps_sim",
                "run",
                "scenarios/quickstart.yaml",
                "-q",
                "--out",
                str(Path(tmp) / "q"),
            ],
            cwd=os.environ["BENCH_REPO"],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
        )
        wall = time.perf_counter() - t0
    if r.returncode not in (0, 3):  # 3: expectations failed, the run itself completed
        raise RuntimeError(r.stderr[-2000:])
    return {"sim_s": wall, "wall_s": wall}


CASES = {
    name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")
}


# ----------------------------------------------------------------------------- driver
def _child(case: str) -> None:
    out = CASES[case]()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("RESULT " + json.dumps(out))


def run_case(case: str, repo: Path) -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(repo)
    env["BENCH_REPO"] = str(repo)
    env["CI"] = "true"
    r = subprocess.run(
        [sys.executable, __file__, "--child", case],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{case} in {repo} failed:\n{r.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout to measure")
    p.add_argument("--compare", type=Path, help="a second checkout, measured alternately")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child)
        return
    repos = {"this": a.repo.resolve()}
    if a.compare:
        repos = {"before": a.compare.resolve(), "after": a.repo.resolve()}
    load0 = os.getloadavg()
    results: dict[str, dict[str, list[dict]]] = {c: {k: [] for k in repos} for c in a.case}
    for r in range(a.rounds):
        for case in a.case:
            for name, repo in repos.items() if r % 2 == 0 else reversed(repos.items()):
                res = run_case(case, repo)
                results[case][name].append(res)
                print(f"round {r + 1} {case:<16} {name:<6} {json.dumps(res)}", flush=True)
    load1 = os.getloadavg()
    summary = {}
    for case, per in results.items():
        row = {}
        for name, runs in per.items():
            row[name] = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        summary[case] = row
    out = {
        "repos": {k: str(v) for k, v in repos.items()},
        "rounds": a.rounds,
        "loadavg_before": load0,
        "loadavg_after": load1,
        "cpu_count": os.cpu_count(),
        "summary": summary,
        "runs": results,
    }
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "engine_v2.json").write_text(json.dumps(out, indent=1))
    print(f"\nload average before {load0[0]:.2f}, after {load1[0]:.2f} ({os.cpu_count()} cores)")
    names = list(repos)
    print("| case | metric | " + " | ".join(names) + (" | after/before |" if a.compare else " |"))
    print("|---|---|" + "---:|" * len(names) + ("---:|" if a.compare else ""))
    for case, row in summary.items():
        for metric in [k for k in row[names[0]] if k != "steps"]:
            vals = [row[n][metric] for n in names]
            cells = " | ".join(f"{v:.4g}" for v in vals)
            ratio = f" | {vals[1] / vals[0]:.2f}" if a.compare and vals[0] else ""
            print(f"| {case} | {metric} | {cells}{ratio} |")


if __name__ == "__main__":
    main()
