"""What a HEMS loses acting on B-route smart-meter data instead of the truth.

    python benchmarks/smart_meter_b_route.py [--days N] [--poll-s S ...]

Runs ``scenarios/smart_meter_b_route.yaml`` (same homes, weather and seed) with the
HEMS seeing the truth, the meter's instantaneous power polled every S seconds (default
60 and 300), and the 30-minute registers only, and prints one Markdown row each:
self-sufficiency, grid import, peak 30-min import, cost, battery throughput, wall time.
The table in docs/ems.md is this script's output at the file's own size (7 days).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cps_sim.experiment.run import run_file

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "smart_meter_b_route.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=None, help="override duration_days")
    ap.add_argument("--poll-s", type=float, nargs="*", default=[60.0, 300.0])
    a = ap.parse_args()
    base = [f"duration_days={a.days:g}"] if a.days else []
    variants = [("truth", ["ems.homes.observe=truth"])]
    variants += [
        (f"meter, 0xE7 polled every {p:g} s", [f"sites[0].smart_meter.instantaneous_poll_s={p:g}"])
        for p in a.poll_s
    ]
    variants.append(
        ("meter, 30-min registers only", ["sites[0].smart_meter.instantaneous_poll_s=null"])
    )
    print(
        "| HEMS sees | self-sufficiency | grid import [kWh] | peak 30-min import [kW] "
        "| cost [JPY] | battery discharged [kWh] | wall [s] |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, ov) in enumerate(variants):
            t0 = time.perf_counter()
            k = run_file(
                SCENARIO, [*base, *ov], out_dir=Path(tmp) / str(i), check_expect=False
            ).kpis
            print(
                f"| {label} | {k['self_sufficiency']:.3f} | {k['grid_import_kwh']:,.0f} | "
                f"{k['peak_import_30min_kw']:.1f} | {k['cost_jpy']:,.0f} | "
                f"{k['battery_discharge_kwh']:,.0f} | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
