"""How the perfect-foresight optimum scales, and what one city-size MPC re-plan costs.

    python benchmarks/oracle_scale.py [--homes 1000 3000 10000] [--days 7] [--workers 1 2]
                                      [--chunk 10] [--replan] [--out FILE.json]

Workload: the city homes of ``benchmarks/city_year.yaml`` (60 % with 3-6 kW PV, 30 %
with a 10 kWh / 5 kW battery, 50 % with a 6 kW EV and daily trips) on a time-of-use
tariff (night 20, day 32, evening peak 45 JPY/kWh; export 8.5), cut to ``--days``.

For each number of homes it measures, in this process:

* ``inputs_s`` — reading the run's inputs off a second world (loads, PV, trips);
* ``solve_s`` per worker count — the oracle for every home (one LP per home, batches of
  ``--chunk`` homes, HiGHS through SciPy), wall time, and the CPU seconds of this
  process plus its worker processes;
* variables, LP batches, ms of CPU per home.

``--replan`` adds the cost of one receding-horizon re-plan at the largest size: the
same LP over a 24 h horizon of 96 steps from noon (what ``battery_mode: mpc`` solves
for every home at each periodic re-plan), on 1 and 2 workers.

The machine is shared: the script records the load average before and after and the
CPU share a pure-Python loop gets on 2 processes at the start (``cpu_ceiling``);
publish figures from an idle machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOU = {
    "type": "tou",
    "export_jpy_per_kwh": 8.5,
    "periods": [
        {"name": "night_late", "price_jpy_per_kwh": 20, "start_hour": 23, "end_hour": 24},
        {"name": "night", "price_jpy_per_kwh": 20, "start_hour": 0, "end_hour": 7},
        {"name": "peak", "price_jpy_per_kwh": 45, "start_hour": 17, "end_hour": 21},
        {"name": "day", "price_jpy_per_kwh": 32},
    ],
}


def scenario(homes: int, days: float):
    from cps_sim.scenario.loader import load_scenario
    from cps_sim.scenario.schema import Scenario

    d = load_scenario(HERE / "city_year.yaml").model_dump(mode="json")
    d["duration_days"] = days
    d["sites"][0]["count"] = homes
    d["tariff"] = TOU
    return Scenario.model_validate(d)


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_ceiling() -> float:
    """Speed-up of 2 processes over 1 on a pure-Python loop right now (2.0 = idle)."""
    import multiprocessing as mp

    def burn(n: int = 3_000_000) -> None:
        x = 0
        for i in range(n):
            x += i

    t = time.perf_counter()
    burn()
    one = time.perf_counter() - t
    ps = [mp.get_context("fork").Process(target=burn) for _ in range(2)]
    t = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return 2 * one / (time.perf_counter() - t)


def measure(homes: int, days: float, workers: list[int], chunk: int) -> dict:
    from cps_sim.control.oracle import Objective, chunks_of, solve
    from cps_sim.experiment.oracle import objective_of
    from cps_sim.experiment.oracle_inputs import site_inputs
    from cps_sim.scenario.oracle_schema import OracleSpec

    sc = scenario(homes, days)
    t = time.perf_counter()
    inputs = site_inputs(sc)
    out = {"homes": homes, "days": days, "inputs_s": time.perf_counter() - t}
    inp = inputs["homes"]
    obj: Objective = objective_of(OracleSpec(), sc, inputs)
    for w in workers:
        c0, t0 = _cpu(), time.perf_counter()
        s = solve(inp, obj, chunk_sites=chunk, workers=w)
        wall = time.perf_counter() - t0
        # this process, plus the batches' CPU where worker processes solved them
        cpu = _cpu() - c0 + (s.extra["cpu_s"] if w > 1 else 0.0)
        busy = sum(len(c) for c in chunks_of(inp, chunk))
        out[f"solve_s_{w}w"] = wall
        out[f"cpu_s_{w}w"] = cpu
        out["variables"] = s.n_variables
        out["batches"] = s.extra.get("chunks", 0)
        out["lp_solve_wall_sum_s"] = s.solve_time_s  # HiGHS calls, summed over batches
        out["objective_jpy"] = float(s.objective.sum())
        out[f"cpu_ms_per_home_{w}w"] = 1000.0 * cpu / homes
        out["homes_with_devices"] = busy
        print(
            json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}),
            flush=True,
        )
    return out


def replan(homes: int, workers: list[int], chunk: int) -> dict:
    """One MPC re-plan at city size: the per-home LP over 96 steps (24 h) from noon."""
    from cps_sim.control.oracle import Objective, solve
    from cps_sim.experiment.oracle_inputs import site_inputs

    sc = scenario(homes, 2)
    inp = site_inputs(sc)["homes"]
    k0 = 48  # noon of day 1
    sub = inp.__class__(
        **{
            **inp.__dict__,
            "load_w": inp.load_w[:, k0 : k0 + 96],
            "pv_w": inp.pv_w[:, k0 : k0 + 96],
            "import_price_jpy_per_kwh": inp.import_price_jpy_per_kwh[k0 : k0 + 96],
            "export_price_jpy_per_kwh": inp.export_price_jpy_per_kwh[k0 : k0 + 96],
            "carbon_jpy_per_kwh": inp.carbon_jpy_per_kwh[k0 : k0 + 96],
            "co2_g_per_kwh": inp.co2_g_per_kwh[k0 : k0 + 96],
        }
    )
    if sub.trips is not None:  # events from noon on, shifted into the window
        t = sub.trips
        keep = (t.time_s >= k0 * 900.0) & (t.time_s < (k0 + 96) * 900.0)
        sub = sub.__class__(
            **{
                **sub.__dict__,
                "trips": t.__class__(
                    ev=t.ev[keep],
                    time_s=t.time_s[keep] - k0 * 900.0,
                    kind=t.kind[keep],
                    trip_wh=t.trip_wh[keep],
                ),
            }
        )
    out = {"homes": homes, "steps": 96}
    for w in workers:
        c0, t0 = _cpu(), time.perf_counter()
        s = solve(sub, Objective(terminal_value=20.0), chunk_sites=chunk, workers=w)
        out[f"replan_s_{w}w"] = time.perf_counter() - t0
        out[f"replan_cpu_s_{w}w"] = _cpu() - c0 + (s.extra["cpu_s"] if w > 1 else 0.0)
        out["variables"] = s.n_variables
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--homes", type=int, nargs="+", default=[1000, 3000, 10000])
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--replan", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "out" / "oracle_scale.json")
    a = p.parse_args()
    res = {"load_before": os.getloadavg(), "cpu_ceiling": cpu_ceiling(), "runs": []}
    print(
        json.dumps({"load_before": res["load_before"], "cpu_ceiling": res["cpu_ceiling"]}),
        flush=True,
    )
    for n in a.homes:
        res["runs"].append(measure(n, a.days, a.workers, a.chunk))
    if a.replan:
        res["replan"] = replan(max(a.homes), a.workers, a.chunk)
    res["load_after"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({"load_after": res["load_after"]}))


if __name__ == "__main__":
    main()
