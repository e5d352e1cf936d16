"""What a sweep worker does with one run: run it, and publish its directory atomically.

Layout under the sweep's results directory ``OUT``::

    OUT/runs/run_id=<id>/      a finished run: the engine's files + run.json
    OUT/runs/.cps_sim-staging.<pid>.<host>.<uuid>.<id>/
                               work in progress (never read; removed by the next
                               sweep once its process is gone)
    OUT/failed/<id>.json       a failed / timed-out / invalid run, with error
    OUT/.cps_sim-inflight/<id>.json  which process is running <id> right now

A run is written into a staging directory inside ``OUT/runs`` and renamed
into place as the very last step, after ``run.json`` is fsynced; so a run
directory either is complete or does not exist (B2), whatever kills the
process.  ``execute_run`` is idempotent: when the run directory already
exists it returns that record and does nothing (B3; Dask may run a task
twice, and a killed sweep's orphans may still be finishing).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cps_sim.core.files import STAGING, fsync_dir, owned_name, write_json_atomic

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}

Runner = Callable[..., Any]


class RunTimeout(Exception):
    """A run exceeded the sweep's ``timeout_s``."""


def run_dir(out: Path, run_id: str) -> Path:
    return out / "runs" / f"run_id={run_id}"


def failed_path(out: Path, run_id: str) -> Path:
    return out / "failed" / f"{run_id}.json"


INFLIGHT = ".cps_sim-inflight"


def inflight_path(out: Path, run_id: str) -> Path:
    return out / INFLIGHT / f"{run_id}.json"


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(root)


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`RunTimeout` in this thread after ``seconds`` of wall time.

    In a process's main thread (local pool workers) this is SIGALRM; in other
    threads (Dask workers run tasks in a thread pool) the exception is raised
    asynchronously in the running thread, which interrupts pure-Python code
    (SimPy) at the next bytecode and a long numpy call when it returns.
    """
    if not seconds:
        yield
        return
    if threading.current_thread() is threading.main_thread():

        def _alarm(signum, frame):
            raise RunTimeout(f"run exceeded timeout_s={seconds:g}")

        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        return
    tid = threading.get_ident()
    done = threading.Event()

    def _fire() -> None:
        if not done.is_set():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(tid), ctypes.py_object(RunTimeout)
            )

    timer = threading.Timer(seconds, _fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        done.set()
        timer.cancel()


def classify(exc: BaseException) -> str:
    """The catalog's ``error_type`` of a failed run."""
    if isinstance(exc, RunTimeout):
        return "timeout"
    from cps_sim.core.errors import DiskFullError

    if (isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS) or isinstance(
        exc, DiskFullError
    ):
        return "disk_full"
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    from cps_sim.core.errors import ScenarioError

    if isinstance(exc, ScenarioError):
        return "invalid"
    return "error"


def _default_runner() -> Runner:
    from cps_sim.experiment.run import run_scenario

    return run_scenario


def read_json_or_none(p: Path) -> dict[str, Any] | None:
    """A JSON object cps_sim wrote, or None when it is missing or damaged (garbage, cut,
    a FIFO or a folder in its place)."""
    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import read_json_input

    try:
        data = read_json_input(p)
    except InputFileError:
        return None
    return data if isinstance(data, dict) else None


def read_record(out: Path, run_id: str) -> dict[str, Any] | None:
    """The record of a finished run, or None."""
    return read_json_or_none(run_dir(out, run_id) / "run.json")


def record_failure(
    out: Path,
    task: dict[str, Any],
    error_type: str,
    message: str,
    tb: str = "",
    attempts: int = 1,
    wall_time_s: float = 0.0,
) -> dict[str, Any]:
    """Write ``failed/<id>.json`` (best effort: the disk may be full) and return it."""
    rec = {
        "run_id": task["run_id"],
        "point": task["point"],
        "replicate": task["replicate"],
        "seed": task["seed"],
        "params": task["params"],
        "status": "failed",
        "error_type": error_type,
        "error": message,
        "traceback": tb,
        "attempts": attempts,
        "wall_time_s": wall_time_s,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if error_type == "timeout":
        rec["status"] = "timeout"
    elif error_type == "invalid":
        rec["status"] = "invalid"
    with contextlib.suppress(OSError):
        write_json_atomic(failed_path(out, task["run_id"]), rec)
    return rec


def execute_run(
    task: dict[str, Any], out_root: str, runner: Runner | None = None, attempt: int = 1
) -> dict[str, Any]:
    """Run one sweep task and publish its results directory; never raises for a run's fault.

    Returns the run's record: ``status`` is ``ok``, ``failed``, ``timeout`` or
    ``invalid``; failures carry ``error_type`` (``error``, ``timeout``,
    ``disk_full``, ``invalid``, ...), the message and the traceback.
    """
    out = Path(out_root)
    run_id = task["run_id"]
    existing = read_record(out, run_id)
    if existing is not None:
        existing["skipped"] = True
        return existing
    inflight = inflight_path(out, run_id)
    staging = out / "runs" / owned_name(STAGING, run_id)
    t0 = time.perf_counter()
    try:
        write_json_atomic(
            inflight,
            {
                "run_id": run_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.time(),
            },
            durable=False,
        )  # advisory only; cleared on every start
        staging.mkdir(parents=True)
        result_dir = staging / "result"
        run = runner or _default_runner()
        with time_limit(task.get("timeout_s")):
            from cps_sim.scenario.schema import Scenario

            scenario = Scenario.model_validate(task["scenario"])
            result = run(scenario, result_dir, quiet=True, source_file=task["source_file"])
        wall = time.perf_counter() - t0
        if not result_dir.is_dir():
            raise RuntimeError(f"runner returned without writing {result_dir}")
        rec = {
            "run_id": run_id,
            "point": task["point"],
            "replicate": task["replicate"],
            "seed": task["seed"],
            "params": task["params"],
            "status": "ok",
            "kpis": {k: float(v) for k, v in dict(getattr(result, "kpis", {})).items()},
            "wall_time_s": wall,
            "attempts": attempt,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json_atomic(result_dir / "run.json", rec)
        if runner is not None:  # the engine fsyncs its own files; a custom runner may not
            _fsync_tree(result_dir)
        final = run_dir(out, run_id)
        try:
            os.rename(result_dir, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            done = read_record(out, run_id)  # someone else finished the same run first
            if done is not None:
                done["skipped"] = True
                return done
            raise
        fsync_dir(final.parent)
        failed_path(out, run_id).unlink(missing_ok=True)
        return rec
    except Exception as exc:  # a run's fault is recorded, never propagated
        return record_failure(
            out,
            task,
            classify(exc),
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
            attempt,
            time.perf_counter() - t0,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            inflight.unlink()
