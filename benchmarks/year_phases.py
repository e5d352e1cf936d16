"""Where a large run's wall time and memory go (issue 11: events streamed to Parquet).

    python benchmarks/year_phases.py 100000 365 OUT     # the 100k-home year (~5 min idle)

Runs ``city_year.py``'s vectorised case (``--child vec HOMES DAYS OUT full_physics``) in
this process with timers around the recorder's table builders, every Parquet write and the
events stream (whichever of them the checkout has), and an RSS trace (psutil, every
0.5 s) labelled by the phase running.  Prints the case's JSON plus ``timing`` (seconds per
phase, summed), ``table_nbytes`` (in-memory size of the tables built), the size of
``events.parquet`` and the peak RSS per phase.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import city_year  # noqa: E402

import cps_sim.experiment.recorder as rec_mod  # noqa: E402
import cps_sim.experiment.run as run_mod  # noqa: E402

timing: dict[str, float] = {}
sizes: dict[str, int] = {}
trace: list[tuple[float, float, str]] = []
phase = ["simulating"]


def timed(name, fn, size=False):
    def wrapper(*a, **k):
        outer = phase[0]
        phase[0] = name
        t = time.perf_counter()
        try:
            r = fn(*a, **k)
        finally:
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - t
            phase[0] = outer
        if size and r is not None and hasattr(r, "nbytes"):
            sizes[name] = r.nbytes
        return r

    return wrapper


def instrument() -> None:
    R = rec_mod.Recorder
    for m in ("events", "timeseries", "timeseries_by_group", "finish_events", "kpis"):
        if hasattr(R, m):
            sized = m in ("events", "timeseries", "timeseries_by_group")
            setattr(R, m, timed(m, getattr(R, m), size=sized))
    try:
        import cps_sim.experiment.event_stream as es
    except ImportError:  # before issue 11's streaming
        pass
    else:
        for m in ("flush", "_table", "_write", "close", "read", "departures"):
            setattr(es.EventStream, m, timed("stream." + m, getattr(es.EventStream, m)))
    write = run_mod.write_parquet

    def write_parquet(path, table, meta=None):
        return timed("write " + Path(path).name, write)(path, table, meta)

    run_mod.write_parquet = write_parquet
    run_mod.check_run = timed("check_run", run_mod.check_run)


def main() -> None:
    homes, days = int(sys.argv[1]), float(sys.argv[2])
    out = Path(sys.argv[3])
    instrument()
    proc = psutil.Process()
    t0 = time.perf_counter()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            trace.append((time.perf_counter() - t0, proc.memory_info().rss / 2**20, phase[0]))
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    res = city_year.case_vectorised(homes, days, out, "full_physics")
    done.set()
    th.join()
    peak: dict[str, float] = {}
    for _, rss, p in trace:
        peak[p] = max(peak.get(p, 0.0), rss)
    res.update(
        timing=timing,
        table_nbytes=sizes,
        events_file_bytes=(out / "events.parquet").stat().st_size,
        peak_rss_mib_by_phase=peak,
    )
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
