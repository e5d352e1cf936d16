"""Run a sweep: expand the sweep file, fan runs out, keep the results directory consistent.

``run_sweep`` is what ``cps-sim sweep`` calls.  The results directory::

    OUT/.lock                  fcntl lock: one sweep per directory (B5)
    OUT/sweep.yaml             the sweep file as given
    OUT/plan.json              every planned run: run_id, point, replicate, seed, params
    OUT/runs/run_id=<id>/      one finished run (engine files + run.json)
    OUT/failed/<id>.json       one failed / timed-out / invalid run, with its error
    OUT/catalog.parquet        parameters × KPIs, derived from the above

Resuming (``resume=True``) re-expands the sweep file, skips every run whose
directory exists and runs the rest (failed runs are tried again).  Because
run ids are content hashes and run directories appear by atomic rename, a
sweep killed at any instant — even by SIGKILL — resumes with no duplicate
and no missing run (B3).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cps_sim
from cps_sim.core.errors import CpsSimError, ResultsError
from cps_sim.experiment import executors
from cps_sim.experiment.catalog import CATALOG, PLAN, build_catalog, write_catalog
from cps_sim.experiment.sweep_spec import Plan, expand, load_sweep
from cps_sim.experiment.worker import read_record, record_failure, write_json_atomic


class SweepLockedError(CpsSimError):
    """Another sweep is writing to the same results directory."""


@dataclass
class SweepResult:
    out_dir: Path
    planned: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # finished before this invocation (resume)
    duplicates: int = 0
    wall_time_s: float = 0.0
    # seconds from the start of run_sweep at which each run of this invocation finished
    done_at_s: list[float] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def catalog(self) -> Path:
        return self.out_dir / CATALOG

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1


@contextlib.contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``OUT/.lock`` (non-blocking).

    The lock dies with the process (also on SIGKILL), so a stale lock file
    never blocks a resume.  The descriptor is not inheritable, so workers
    do not keep it alive.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise SweepLockedError(
                f"{out}: another sweep is already writing to this results directory "
                f"({holder}); wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _quiet_default() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not sys.stderr.isatty()


def _prepare(out: Path, plan: Plan, resume: bool) -> None:
    has_runs = (out / PLAN).exists() or any((out / "runs").glob("run_id=*"))
    if has_runs and not resume:
        raise ResultsError(f"{out}: already holds sweep results; pass --resume to continue "
                           "that sweep, or choose another --out")
    # Leftovers of a killed sweep: staging dirs and in-flight markers mean nothing now
    # (we hold the lock, and orphaned workers exit when their sweep is gone).
    shutil.rmtree(out / "runs" / ".staging", ignore_errors=True)
    shutil.rmtree(out / ".inflight", ignore_errors=True)
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plan.sweep_file, out / "sweep.yaml")
    write_json_atomic(out / PLAN, {
        "sweep": plan.sweep.name, "sweep_file": str(plan.sweep_file.resolve()),
        "scenario_file": str(plan.scenario_file.resolve()), "version": cps_sim.__version__,
        "design": plan.sweep.design.model_dump(mode="json"),
        "param_columns": plan.param_columns,
        "param_paths": {p.column: p.path for p in plan.sweep.parameters},
        "runs": [{"run_id": r.run_id, "point": r.point, "replicate": r.replicate,
                  "seed": r.seed, "params": r.params} for r in plan.runs]})


class _Progress:
    """A rich progress bar with ETA on stderr, or nothing when quiet."""

    def __init__(self, total: int, quiet: bool, label: str):
        self.bar = None
        if quiet or total == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task(label, total=total, status="")
        self.bar.start()

    def advance(self, ok: int, failed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, status=f"ok {ok} failed {failed}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_sweep(sweep_file: str | Path, out_dir: str | Path | None = None, *,
              workers: int | None = None, backend: Literal["local", "dask"] = "local",
              address: str | None = None, resume: bool = False,
              quiet: bool | None = None) -> SweepResult:
    """Run every run of a sweep file; see the module docstring for the layout.

    Returns a :class:`SweepResult`; failed runs do not raise (they are in the
    catalog with their error) — ``result.exit_code`` is 1 when any failed.
    Raises :class:`ScenarioError` for a bad sweep or scenario file,
    :class:`SweepLockedError` when another sweep holds ``out_dir``.
    """
    t0 = time.perf_counter()
    if backend == "local":
        executors.start_fork_server()  # imports the engine while we expand the plan
    sweep_file = Path(sweep_file)
    sweep = load_sweep(sweep_file)
    plan = expand(sweep, sweep_file)
    if plan.runs and all(r.error for r in plan.runs):
        from cps_sim.core.errors import Issue, ScenarioError

        raise ScenarioError(str(sweep_file), [Issue("parameters", "no point of the sweep gives "
                                                    f"a valid scenario: {plan.runs[0].error}")])
    out = Path(out_dir) if out_dir is not None else Path("results") / sweep.name
    workers = workers or executors.default_workers()
    if workers < 1:
        raise CpsSimError(f"--workers must be >= 1, got {workers}")
    quiet = _quiet_default() if quiet is None else quiet
    result = SweepResult(out, len(plan.runs), duplicates=plan.duplicates)

    with sweep_lock(out):
        _prepare(out, plan, resume)
        todo = []
        for run in plan.runs:
            if read_record(out, run.run_id) is not None:
                result.skipped += 1
                result.ok += 1
            elif run.error:
                rec = record_failure(out, run.task(), "invalid", run.error)
                result.failed += 1
                result.failures.append(rec)
            else:
                todo.append(run.task())
        progress = _Progress(len(todo), quiet, f"sweep {sweep.name}")

        def on_record(rec: dict[str, Any]) -> None:
            result.done_at_s.append(time.perf_counter() - t0)
            if rec["status"] == "ok":
                result.ok += 1
            else:
                result.failed += 1
                result.failures.append(rec)
            progress.advance(result.ok - result.skipped, result.failed)

        try:
            if backend == "local":
                executors.run_local(todo, out, workers, on_record, retries=sweep.retries)
            elif backend == "dask":
                executors.run_dask(todo, out, workers, on_record, address=address,
                                   retries=sweep.retries)
            else:
                raise CpsSimError(f"unknown backend {backend!r} (local or dask)")
        finally:
            progress.close()
            write_catalog(out, build_catalog(out))
    result.wall_time_s = time.perf_counter() - t0
    return result


def summary(result: SweepResult) -> str:
    """One paragraph for the terminal."""
    lines = [f"{result.out_dir}: {result.planned} runs, {result.ok} ok "
             f"({result.skipped} already done), {result.failed} failed, "
             f"{result.wall_time_s:.1f} s; catalog: {result.catalog}"]
    if result.duplicates:
        lines.append(f"  ({result.duplicates} design points repeated an earlier run and "
                     "were run once)")
    for rec in result.failures[:10]:
        lines.append(f"  {rec['run_id']} point {rec['point']} seed {rec['seed']}: "
                     f"{rec.get('error_type')}: {rec.get('error')}")
    if len(result.failures) > 10:
        lines.append(f"  ... and {len(result.failures) - 10} more (see the catalog)")
    return "\n".join(lines)


def load_record(out: Path, run_id: str) -> dict[str, Any]:
    """The record of one run (finished or failed)."""
    rec = read_record(out, run_id)
    if rec is None:
        p = out / "failed" / f"{run_id}.json"
        if p.exists():
            rec = json.loads(p.read_text(encoding="utf-8"))
    if rec is None:
        raise ResultsError(f"{out}: no run {run_id}")
    return rec
