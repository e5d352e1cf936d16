"""City-year benchmark (issue 3): throughput, scaling with N, peak memory, and the speed-up
over a one-SimPy-process-per-device baseline of the same physics.

    python benchmarks/city_year.py                 # everything (~5 min on 2 cores)
    python benchmarks/city_year.py --quick         # smaller horizons, for a smoke run

Each case runs in a fresh subprocess so that its peak RSS is its own.  Results
are printed as a table and written to benchmarks/out/city_year.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "city_year.yaml"


def _device_count(homes: int, kpis: dict) -> int:
    # loads + PV systems (60 %) + batteries (30 %) + EVs
    return int(homes + round(0.6 * homes) + round(0.3 * homes) + kpis["evs"])


# ----------------------------------------------------------------------------- child cases
# Model variants of the same workload (issue 4: full physics vs foundation models;
# issue 5: controller overhead).
VARIANTS: dict[str, list[str]] = {
    "foundation": [
        "sites[0].pv.model=simple",
        "sites[0].ev.temperature_dependent_consumption=false",
    ],
    "full_physics": [
        "sites[0].battery.ageing=true",
        "sites[0].ev.models={compact_40kwh: 0.5, mid_60kwh: 0.3, suv_80kwh: 0.2}",
    ],
    "full_physics+pv_control": [
        "sites[0].battery.ageing=true",
        "sites[0].ev.models={compact_40kwh: 0.5, mid_60kwh: 0.3, suv_80kwh: 0.2}",
        "control.ev_strategy=pv",
    ],
    "full_physics+cost_control": [
        "sites[0].battery.ageing=true",
        "sites[0].ev.models={compact_40kwh: 0.5, mid_60kwh: 0.3, suv_80kwh: 0.2}",
        "control.ev_strategy=cost",
    ],
}


def case_vectorised(homes: int, days: float, out: Path, variant: str = "full_physics") -> dict:
    from cps_sim.experiment.run import run_scenario
    from cps_sim.scenario.loader import load_scenario

    sc = load_scenario(
        WORKLOAD, [f"sites[0].count={homes}", f"duration_days={days}", *VARIANTS[variant]]
    )
    t0 = time.perf_counter()
    res = run_scenario(sc, out, quiet=True)
    wall = time.perf_counter() - t0
    devices = _device_count(homes, res.kpis)
    ticks = sc.n_ticks
    sim_s = json.loads((out / "manifest.json").read_text())["simulation_wall_time_s"]
    return {
        "case": variant,
        "homes": homes,
        "evs": int(res.kpis["evs"]),
        "days": days,
        "ticks": ticks,
        "wall_s": wall,
        "sim_s": sim_s,
        "device_steps_per_s": devices * ticks / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "balance_residual_wh": res.kpis["balance_residual_wh"],
        "ev_departures": res.kpis["ev_departures"],
    }


def case_baseline(homes: int, days: float) -> dict:
    """Same physics, written the classic way: one SimPy process per home and per EV."""
    import numpy as np
    import simpy

    from cps_sim.core.clock import Clock
    from cps_sim.core.rng import RngStreams
    from cps_sim.models import loads as load_model
    from cps_sim.scenario.distributions import sample
    from cps_sim.scenario.loader import load_scenario
    from cps_sim.world.exogenous import build_weather

    sc = load_scenario(WORKLOAD, [f"sites[0].count={homes}", f"duration_days={days}"])
    g = sc.sites[0]
    rng = RngStreams(sc.seed)
    clock = Clock(sc.start, sc.timezone)
    tick = sc.tick_s
    n_ticks = sc.n_ticks
    irr = build_weather(sc, clock, rng, None).ghi_w_m2.tolist()
    t_mid = (np.arange(n_ticks) + 0.5) * tick
    idx = clock.index(t_mid)
    minute = (idx.hour * 60 + idx.minute).to_numpy().tolist()
    weekend = (idx.day_of_week.to_numpy() >= 5).tolist()
    month_f = load_model.MONTHLY_FACTOR[idx.month.to_numpy() - 1].tolist()
    wk, we = load_model.WEEKDAY_MINUTES.tolist(), load_model.WEEKEND_MINUTES.tolist()
    annual = sample(g.load.annual_kwh, rng.generator("b/annual"), homes) * 1000.0
    scale = (annual / 8760.0).tolist()
    pv_cap = np.where(
        rng.generator("b/pvhas").random(homes) < g.pv.share,
        sample(g.pv.capacity_kw, rng.generator("b/pvcap"), homes) * 1000.0,
        0.0,
    ).tolist()
    has_bat = (rng.generator("b/bathas").random(homes) < g.battery.share).tolist()
    has_ev = (rng.generator("b/evhas").random(homes) < g.ev.share).tolist()
    noise = rng.generator("b/noise")
    env = simpy.Environment()
    totals = {"import_wh": 0.0, "export_wh": 0.0, "ev_wh": 0.0}
    # Shared per-site state the device processes read and write (W), like a bus bar.
    site_load = [0.0] * homes
    site_pv = [0.0] * homes
    site_ev = [0.0] * homes
    site_bat = [0.0] * homes
    h = tick / 3600.0
    eta = g.battery.charge_efficiency
    cap_b = g.battery.capacity_kwh * 1000.0
    p_b = g.battery.power_kw * 1000.0
    trip = g.ev.trips.weekday
    cv = g.load.noise_cv
    pr = g.pv.performance_ratio

    # One SimPy process per device.  Processes that wake at the same instant run in
    # the order they were created (FIFO), so per tick: loads, PV, EVs, batteries, meters.
    def load(i: int):
        for k in range(n_ticks):
            m = minute[k]
            shape = (we[m] if weekend[k] else wk[m]) * month_f[k]
            site_load[i] = scale[i] * shape * max(0.0, 1.0 + cv * noise.standard_normal())
            yield env.timeout(tick)

    def pv(i: int):
        for k in range(n_ticks):
            site_pv[i] = pv_cap[i] * irr[k] / 1000.0 * pr
            yield env.timeout(tick)

    def ev(i: int):
        cap = 60_000.0
        e = 0.7 * cap
        r = rng.generator(f"b/ev{i}")
        day = 0
        while True:
            t_dep = day * 86400 + sample(trip.departure_h, r, 1)[0] * 3600
            t_arr = t_dep + sample(trip.duration_h, r, 1)[0] * 3600
            dist = sample(trip.distance_km, r, 1)[0]
            while env.now + tick <= t_dep:  # charge per tick while plugged
                p = min(g.ev.charger_kw * 1000.0, (cap - e) / 0.9 / h)
                site_ev[i] = p
                e += p * h * 0.9
                totals["ev_wh"] += p * h
                yield env.timeout(tick)
            site_ev[i] = 0.0
            yield env.timeout(max(t_arr - env.now, 0.0))
            e = max(e - dist * 150.0, 0.0)
            day += 1
            if day * 86400 > n_ticks * tick:
                return

    def battery(i: int):
        e = cap_b * g.battery.initial_soc
        for _ in range(n_ticks):
            net = (site_load[i] + site_ev[i] - site_pv[i]) * h
            if net < 0:
                c = min(-net, p_b * h, (cap_b - e) / eta)
                e += c * eta
                site_bat[i] = c / h
            else:
                d = min(net, p_b * h, (e - 0.1 * cap_b) * eta)
                e -= d / eta
                site_bat[i] = -d / h
            yield env.timeout(tick)

    def meter(i: int):  # the site's grid connection
        for _ in range(n_ticks):
            net = (site_load[i] + site_ev[i] - site_pv[i] + site_bat[i]) * h
            if net > 0:
                totals["import_wh"] += net
            else:
                totals["export_wh"] -= net
            yield env.timeout(tick)

    n_ev = 0
    for i in range(homes):
        env.process(load(i))
    for i in range(homes):
        if pv_cap[i] > 0:
            env.process(pv(i))
    for i in range(homes):
        if has_ev[i]:
            env.process(ev(i))
            n_ev += 1
    for i in range(homes):
        if has_bat[i]:
            env.process(battery(i))
    for i in range(homes):
        env.process(meter(i))
    t0 = time.perf_counter()
    env.run(until=n_ticks * tick)
    wall = time.perf_counter() - t0
    devices = int(homes + sum(1 for c in pv_cap if c > 0) + sum(has_bat) + n_ev)
    return {
        "case": "baseline_process_per_device",
        "homes": homes,
        "evs": n_ev,
        "days": days,
        "ticks": n_ticks,
        "wall_s": wall,
        "sim_s": wall,
        "device_steps_per_s": devices * n_ticks / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ----------------------------------------------------------------------------- driver
def _child(args: list[str]) -> dict:
    r = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )
    if r.returncode != 0:
        raise SystemExit(f"benchmark case {args} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short horizons (smoke run)")
    ap.add_argument(
        "--scaling-days",
        type=float,
        default=None,
        help="horizon of the scaling runs (default 30 days; quick: 3)",
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, homes, days = a.child[0], int(a.child[1]), float(a.child[2])
        if kind == "vec":
            res = case_vectorised(homes, days, Path(a.child[3]), *a.child[4:5])
        else:
            res = case_baseline(homes, days)
        print(json.dumps(res))
        return

    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    year = 14 if a.quick else 365
    sdays = a.scaling_days or (3 if a.quick else 30)
    bdays = 1 if a.quick else 4
    rows = []
    cities = {}
    for variant in VARIANTS:
        print(f"city-year [{variant}]: 10,000 homes + EVs, {year} days at 15 min …", flush=True)
        cities[variant] = _child(
            ["vec", "10000", str(year), str(out_dir / f"city_{variant}"), variant]
        )
        rows.append(cities[variant])
    city = cities["foundation"]
    for n in (1_000, 10_000, 100_000):
        print(f"scaling: {n:,} homes, {sdays:g} days …", flush=True)
        rows.append(_child(["vec", str(n), str(sdays), str(out_dir / f"scale_{n}"), "foundation"]))
    print(f"baseline vs vectorised: 10,000 homes, {bdays:g} days …", flush=True)
    base = _child(["base", "10000", str(bdays)])
    vec_same = _child(["vec", "10000", str(bdays), str(out_dir / "vec_same"), "foundation"])
    rows += [base, vec_same]
    # Same workload; both timed from a built model to the end of the simulation
    # (baseline: env.run; vectorised: world build + run, no file writing).
    speedup = base["sim_s"] / vec_same["sim_s"]
    # Throughput of the full city-year against the baseline's.
    tput_speedup = city["device_steps_per_s"] / base["device_steps_per_s"]

    print()
    print(
        f"{'case':<30}{'homes':>8}{'EVs':>7}{'days':>6}{'wall s':>9}"
        f"{'Mdev-steps/s':>14}{'peak RSS MiB':>14}"
    )
    for r in rows:
        print(
            f"{r['case']:<30}{r['homes']:>8}{r['evs']:>7}{r['days']:>6g}{r['wall_s']:>9.2f}"
            f"{r['device_steps_per_s'] / 1e6:>14.2f}{r['peak_rss_mib']:>14.0f}"
        )
    scal = [r for r in rows if r["days"] == sdays and r["case"] == "foundation"][:3]
    per_home = [r["wall_s"] / r["homes"] for r in scal]
    print()
    print(
        f"city-year (foundation) wall {city['wall_s']:.1f} s (target ≤ 60 s), peak RSS "
        f"{city['peak_rss_mib']:.0f} MiB (target ≤ 2048 MiB)"
    )
    full = cities["full_physics"]
    print(f"full physics / foundation wall: {full['wall_s'] / city['wall_s']:.2f}× (target ≤ 2×)")
    for v in ("full_physics+pv_control", "full_physics+cost_control"):
        print(
            f"{v} / full_physics wall: {cities[v]['wall_s'] / full['wall_s']:.2f}× "
            "(target ≤ 2× for rule-based strategies)"
        )
    print(
        "scaling, wall per home [ms]: "
        + ", ".join(f"N={r['homes']:,}: {p * 1e3:.3f}" for r, p in zip(scal, per_home, strict=True))
    )
    print(
        f"speed-up over one process per device, same workload (10,000 homes, {bdays:g} days, "
        f"simulation time): {speedup:.0f}×; city-year throughput / baseline throughput: "
        f"{tput_speedup:.0f}× (target ≥ 100×)"
    )
    result = {
        "rows": rows,
        "speedup_wall": speedup,
        "speedup_throughput": tput_speedup,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / "city_year.json").write_text(
        json.dumps(
            result,
            indent=2,
            default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else o,
        )
    )


if __name__ == "__main__":
    main()
