"""Run a sweep: expand the sweep file, fan runs out, keep the results directory consistent.

``run_sweep`` is what ``cps-sim sweep`` calls.  The results directory::

    OUT/.cps_sim-lock          fcntl lock: one sweep per directory (B5)
    OUT/sweep.yaml             the sweep file as given
    OUT/plan.json              every planned run: run_id, point, replicate, seed, params
                               (with a ``cps_sim`` key: the marker of a sweep folder)
    OUT/runs/run_id=<id>/      one finished run (engine files + run.json)
    OUT/failed/<id>.json       one failed / timed-out / invalid run, with its error
    OUT/catalog.parquet        parameters × KPIs, derived from the above

``OUT`` must be new, empty, or a cps_sim sweep folder (see
:mod:`cps_sim.experiment.outdir`); a sweep never mixes its files into a
folder of other content and removes only temporary names it created itself.

Resuming (``resume=True``) re-expands the sweep file and refuses when the
plan differs from the one in ``OUT`` (naming what differs); it checks every
finished run's files (``run.json``, the manifest's files, each Parquet
footer) and redoes damaged runs, skips the intact ones and runs the rest
(failed runs are tried again).  Because run ids are content hashes and run
directories appear by atomic rename, a sweep killed at any instant — even by
SIGKILL — resumes with no duplicate and no missing run (B3).
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
from cps_sim.core.files import write_atomic, write_json_atomic
from cps_sim.experiment import executors
from cps_sim.experiment.catalog import CATALOG, PLAN, build_catalog, read_plan, write_catalog
from cps_sim.experiment.outdir import MARKER
from cps_sim.experiment.sweep_spec import Plan, expand, load_sweep
from cps_sim.experiment.worker import (
    INFLIGHT,
    read_record,
    record_failure,
    run_dir,
)

LOCK = ".cps_sim-lock"


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
    damaged: list[str] = field(default_factory=list)  # finished runs redone on resume

    @property
    def catalog(self) -> Path:
        return self.out_dir / CATALOG

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1


@contextlib.contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``OUT/.cps_sim-lock`` (non-blocking).

    The lock dies with the process (also on SIGKILL), so a stale lock file
    never blocks a resume.  The descriptor is not inheritable, so workers
    do not keep it alive.
    """
    from cps_sim.experiment.outdir import make_parents

    make_parents(out)
    path = out / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ResultsError(f"{out}: cannot write into the sweep folder: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise SweepLockedError(
                f"{out}: another sweep is already writing to this results directory "
                f"({holder}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _quiet_default() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not sys.stderr.isatty()


def plan_record(plan: Plan) -> dict[str, Any]:
    """What ``plan.json`` holds: the plan, and the marker of a cps_sim sweep folder."""
    return {
        MARKER: {"kind": "sweep", "version": cps_sim.__version__},
        "sweep": plan.sweep.name,
        "sweep_file": str(plan.sweep_file.resolve()),
        "scenario_file": str(plan.scenario_file.resolve()),
        "version": cps_sim.__version__,
        "set": list(plan.sweep.set),
        "design": plan.sweep.design.model_dump(mode="json"),
        "replications": plan.sweep.replications,
        "seeds": plan.sweep.seeds,
        "param_columns": plan.param_columns,
        "param_paths": {p.column: p.path for p in plan.sweep.parameters},
        "parameters": [
            p.model_dump(mode="json", exclude_defaults=True) for p in plan.sweep.parameters
        ],
        "runs": [
            {
                "run_id": r.run_id,
                "point": r.point,
                "replicate": r.replicate,
                "seed": r.seed,
                "params": r.params,
            }
            for r in plan.runs
        ],
    }


_PLAN_KEYS = (
    ("sweep", "sweep name"),
    ("scenario_file", "scenario file"),
    ("set", "set overrides"),
    ("design", "design"),
    ("parameters", "parameters"),
    ("replications", "replications"),
    ("seeds", "seeds"),
)


def plan_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the plan stored in a sweep folder and a new one."""
    diffs = []
    for key, label in _PLAN_KEYS:
        if key in old and key in new and old[key] != new[key]:
            diffs.append(f"{label}: {_short(old[key])} -> {_short(new[key])}")
    old_ids = {r["run_id"] for r in old.get("runs", [])}
    new_ids = {r["run_id"] for r in new["runs"]}
    if old_ids != new_ids:
        what = (
            f"runs: {len(old_ids - new_ids)} of the {len(old_ids)} planned runs are not in "
            f"the new plan and {len(new_ids - old_ids)} new runs are"
        )
        if not diffs:
            if old.get("version") != new.get("version"):
                what += f" (cps_sim version {old.get('version')} -> {new.get('version')})"
            else:
                what += " (the scenario file's content changed)"
        diffs.append(what)
    return diffs


def _short(v: Any, n: int = 80) -> str:
    t = json.dumps(v, sort_keys=True, default=str)
    return t if len(t) <= n else t[: n - 3] + "..."


def verify_run(folder: Path, run_id: str) -> str | None:
    """Why a finished run's folder is damaged, or None when its files are intact.

    Checks ``run.json`` (parseable, ``ok``, this run's id), ``manifest.json``,
    that every file the manifest lists exists, and that each Parquet file
    opens (footer and schema).
    """
    import pyarrow.parquet as pq

    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import read_json_input

    try:
        rec = read_json_input(folder / "run.json")
    except InputFileError as exc:
        if exc.reason == "file not found":
            return "run.json is missing"
        return f"run.json is unreadable ({exc.reason})"
    if not isinstance(rec, dict) or rec.get("status") != "ok" or rec.get("run_id") != run_id:
        return "run.json does not describe this finished run"
    try:
        manifest = read_json_input(folder / "manifest.json")
        files = list(manifest["files"])
    except InputFileError as exc:
        if exc.reason == "file not found":
            return "manifest.json is missing"
        return f"manifest.json is unreadable ({exc.reason})"
    except (KeyError, TypeError) as exc:
        return f"manifest.json is unreadable ({exc!r})"
    for name in files:
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        if name.endswith(".parquet"):
            try:
                pq.read_schema(p)
            except Exception as exc:  # pyarrow raises several kinds for a damaged file
                return f"{name} does not open ({type(exc).__name__}: {exc})"
    return None


def _verify_finished(out: Path, plan: Plan) -> list[str]:
    """Remove damaged run folders (they are redone); return one line per damaged run."""
    damaged = []
    for run in plan.runs:
        folder = run_dir(out, run.run_id)
        if not folder.is_dir():
            continue
        why = verify_run(folder, run.run_id)
        if why is not None:
            shutil.rmtree(folder)
            damaged.append(f"{run.run_id}: {why}")
    return damaged


def check_same_plan(out: Path, record: dict[str, Any]) -> None:
    """Refuse to continue a sweep folder whose plan differs from ``record`` (reads only)."""
    if (out / PLAN).exists():
        diffs = plan_differences(read_plan(out), record)
        if diffs:
            raise ResultsError(
                f"{out}: holds a different sweep plan; --resume continues only the same sweep "
                "(same sweep file, scenario and cps_sim version). Differences: "
                + "; ".join(diffs)
                + ". Give a new --out for the new plan"
            )
    elif any((out / "runs").glob("run_id=*")):
        raise ResultsError(
            f"{out}: holds sweep runs but no {PLAN}; cannot tell which plan "
            "they belong to: give a new --out"
        )


def _prepare(out: Path, plan: Plan, resume: bool) -> list[str]:
    """Under the lock: check the folder again, clean stale staging, verify, write the plan.

    Returns the damaged runs that will be redone.
    """
    from cps_sim.experiment.outdir import check_sweep_out, clean_stale

    check_sweep_out(out, [plan.sweep_file, plan.scenario_file], resume)
    record = plan_record(plan)
    check_same_plan(out, record)
    # Leftovers of a killed sweep: staging folders and temp files of dead processes (only
    # names cps_sim made), and in-flight markers (we hold the lock; they mean nothing now).
    for folder in (out, out / "runs", out / "failed"):
        clean_stale(folder)
    shutil.rmtree(out / INFLIGHT, ignore_errors=True)
    damaged = _verify_finished(out, plan) if resume else []
    (out / "runs").mkdir(parents=True, exist_ok=True)
    write_atomic(out / "sweep.yaml", lambda tmp: shutil.copyfile(plan.sweep_file, tmp))
    write_json_atomic(out / PLAN, record)
    return damaged


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

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.bar.add_task(label, total=total, status="")
        self.bar.start()

    def advance(self, ok: int, failed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, status=f"ok {ok} failed {failed}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_sweep(
    sweep_file: str | Path,
    out_dir: str | Path | None = None,
    *,
    workers: int | None = None,
    backend: Literal["local", "dask"] = "local",
    address: str | None = None,
    resume: bool = False,
    quiet: bool | None = None,
) -> SweepResult:
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

        raise ScenarioError(
            str(sweep_file),
            [
                Issue(
                    "parameters",
                    f"no point of the sweep gives a valid scenario: {plan.runs[0].error}",
                )
            ],
        )
    from cps_sim.experiment.outdir import check_sweep_out

    shown = Path(out_dir) if out_dir is not None else Path("results") / sweep.name
    workers = executors.default_workers() if workers is None else workers
    if workers < 1:
        raise CpsSimError(f"--workers must be >= 1, got {workers}")
    # Everything that can be refused is refused before the folder is touched.
    out = check_sweep_out(shown, [sweep_file, plan.scenario_file], resume)
    if out.is_dir():
        check_same_plan(out, plan_record(plan))
    if backend == "dask":
        executors.check_dask(address)
    elif backend != "local":
        raise CpsSimError(f"unknown backend {backend!r} (local or dask)")
    quiet = _quiet_default() if quiet is None else quiet
    result = SweepResult(shown, len(plan.runs), duplicates=plan.duplicates)

    with sweep_lock(out):
        try:
            result.damaged = _prepare(out, plan, resume)
        except OSError as exc:
            raise ResultsError(
                f"{shown}: cannot write the sweep folder: {exc.strerror or exc}"
            ) from None
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

        interrupted: BaseException | None = None
        try:
            if backend == "local":
                executors.run_local(todo, out, workers, on_record, retries=sweep.retries)
            else:
                executors.run_dask(
                    todo, out, workers, on_record, address=address, retries=sweep.retries
                )
        except BaseException as exc:
            interrupted = exc
            raise
        finally:
            progress.close()
            try:
                write_catalog(out, build_catalog(out))
            except OSError as exc:
                if interrupted is None:
                    raise ResultsError(_catalog_failure(result, sweep_file, shown, exc)) from None
    result.wall_time_s = time.perf_counter() - t0
    return result


def _catalog_failure(result: SweepResult, sweep_file: Path, out: Path, exc: OSError) -> str:
    done = result.ok
    return (
        f"{out}: the runs finished ({done} of {result.planned} ok, {result.failed} failed; "
        f"each finished run is kept in {out / 'runs'}) but the catalog could not be "
        f"written: {exc.strerror or exc}. Free space, then rebuild the catalog (finished "
        f"runs are not redone) with: cps-sim sweep {sweep_file} --out {out} --resume"
    )


def summary(result: SweepResult) -> str:
    """One paragraph for the terminal."""
    lines = [
        f"{result.out_dir}: {result.planned} runs, {result.ok} ok "
        f"({result.skipped} already done), {result.failed} failed, "
        f"{result.wall_time_s:.1f} s; catalog: {result.catalog}"
    ]
    if result.damaged:
        lines.append(
            f"  {len(result.damaged)} finished run(s) had damaged files and were "
            "redone: " + "; ".join(result.damaged[:3])
        )
    if result.duplicates:
        lines.append(
            f"  ({result.duplicates} design points repeated an earlier run and were run once)"
        )
    for rec in result.failures[:10]:
        lines.append(
            f"  {rec['run_id']} point {rec['point']} seed {rec['seed']}: "
            f"{rec.get('error_type')}: {rec.get('error')}"
        )
    if len(result.failures) > 10:
        lines.append(f"  ... and {len(result.failures) - 10} more (see the catalog)")
    return "\n".join(lines)


def load_record(out: Path, run_id: str) -> dict[str, Any]:
    """The record of one run (finished or failed)."""
    rec = read_record(out, run_id)
    if rec is None:
        from cps_sim.experiment.worker import read_json_or_none

        rec = read_json_or_none(out / "failed" / f"{run_id}.json")
    if rec is None:
        raise ResultsError(f"{out}: no run {run_id}")
    return rec
