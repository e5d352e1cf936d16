"""One run: scenario → World → SimPy → results directory (atomic)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import simpy

from cps_sim import __version__
from cps_sim.core.blas import one_blas_thread
from cps_sim.core.errors import DiskFullError, ResultsError, ScenarioError
from cps_sim.experiment.event_stream import EVENT_SCHEMA, stream_events
from cps_sim.experiment.expect import ExpectationReport, check_run
from cps_sim.experiment.progress import TickProgress, progress_enabled
from cps_sim.experiment.recorder import SIGN_NOTE, Recorder
from cps_sim.experiment.results import atomic_directory, write_json, write_parquet
from cps_sim.scenario.loader import load_scenario
from cps_sim.scenario.schema import Scenario
from cps_sim.world.run import start_run
from cps_sim.world.world import TickResult, World

PACKAGES = ("numpy", "pandas", "simpy", "pyarrow", "pydantic", "pvlib", "pyyaml", "paho-mqtt")
# Energy conservation tolerance per tick: relative to the energy that moved.


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    kpis: dict[str, float]
    wall_time_s: float
    expectations: ExpectationReport | None = None  # scenario.expect checked (expect.py)


def scenario_hash(scenario: Scenario) -> str:
    canonical = json.dumps(scenario.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "cps-sim": __version__}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def default_out_dir(scenario: Scenario) -> Path:
    return Path("results") / f"{scenario.name}-seed{scenario.seed}-{scenario_hash(scenario)[:8]}"


def simulate(
    scenario: Scenario,
    *,
    quiet: bool = True,
    on_tick: Callable[[World, TickResult], None] | None = None,
    base_dir: Path | None = None,
    setup: Callable[[simpy.Environment, World], None] | None = None,
    env: simpy.Environment | None = None,
    transport: Any = None,
    interruptible: bool = False,
) -> Recorder:
    """Run the scenario and return its recorder (no files written, except the events
    of the run being written when :func:`run_scenario` calls it, directly or through
    its ``simulator``: see :mod:`cps_sim.experiment.event_stream`).

    ``on_tick(world, result)`` is called after every settlement tick (for
    checks and live displays).  ``setup(env, world)`` runs once after the world
    and its own controllers have started, before the first event (e.g. to start
    an extra controller with :func:`cps_sim.world.wiring.start_controller`).
    ``env`` and ``transport`` replace the scenario's environment and in-memory
    bus (``cps-sim hil``: a real-time environment and the MQTT transport).
    ``interruptible``: Ctrl-C ends the run early and returns what was simulated
    (``recorder.interrupted`` is True).
    """
    from cps_sim.experiment.event_stream import claim_sink
    from cps_sim.experiment.memory import check_fits

    if claim_sink() is None:  # (inside run_scenario, which checked the streamed run)
        check_fits(scenario)  # refuse a run too large for memory before building anything

    def _on_tick(r: TickResult) -> None:
        recorder.on_tick(r)
        if on_tick is not None:
            on_tick(world, r)
        bar.update(r.k + 1)

    run = start_run(scenario, _on_tick, base_dir=base_dir, env=env, transport=transport)
    world = run.world
    recorder = Recorder(world)
    recorder.interrupted = False
    with (
        TickProgress(world.n_ticks, scenario.name, progress_enabled(quiet)) as bar,
        one_blas_thread(),  # deterministic on any number of cores (core/blas.py)
    ):
        if setup is not None:
            setup(run.env, world)
        try:
            run.run_to_end()
        except KeyboardInterrupt:
            if not interruptible:
                raise
            recorder.interrupted = True
    return recorder


def check_setup(
    scenario: Scenario, source_file: str | None = None, base_dir: Path | None = None
) -> None:
    """Build what a run builds before its first tick and drop it: the world (its data
    files: weather, tariffs and prices, load profiles, EV sessions, TSO demand, DR
    requests, balancing-group plans), its controllers and their wiring.  Raises what
    ``cps-sim run`` would raise at its start (:class:`ScenarioError` naming
    ``source_file`` when the problem is in no file of its own), without simulating;
    ``cps-sim validate`` calls it after the memory check."""
    try:
        start_run(scenario, base_dir=_data_dir(base_dir, source_file))
    except ScenarioError as exc:
        raise _naming(exc, source_file) from None


def _data_dir(base_dir: Path | None, source_file: str | None) -> Path | None:
    """Where a scenario's relative data paths start: ``base_dir``, else its file's folder."""
    if base_dir is None and source_file is not None:
        return Path(source_file).parent
    return base_dir


def _naming(exc: ScenarioError, source_file: str | None) -> ScenarioError:
    """A problem found while building (a catalog name, a data file's content) that names
    no file of its own, as a problem of the scenario file."""
    if exc.file is None and source_file is not None:
        return ScenarioError(source_file, exc.issues)
    return exc


def run_scenario(
    scenario: Scenario,
    out_dir: Path | None = None,
    *,
    quiet: bool = True,
    source_file: str | None = None,
    overrides: Sequence[str] = (),
    base_dir: Path | None = None,
    simulator: Callable[[Path | None], Recorder] | None = None,
    extras: Callable[[Recorder, Path, dict[str, Any]], None] | None = None,
    check_expect: bool = True,
) -> RunResult:
    """Simulate ``scenario`` and write its results directory atomically.

    ``scenario.expect`` is checked unless ``check_expect`` is false
    (``expectations.json``; :attr:`RunResult.expectations`).

    Files: ``timeseries.parquet``, ``timeseries_groups.parquet``,
    ``events.parquet``, ``kpis.json``, ``manifest.json`` (and ``sites.parquet``
    when the scenario names sites under ``record:``, ``smart_meter.parquet`` with
    ``sites[].smart_meter``).  Same scenario and seed
    ⇒ identical Parquet files.  ``simulator(base_dir) -> Recorder`` replaces the
    plain simulation (``cps-sim hil`` / ``replay``); ``extras(recorder, folder,
    kpis)`` may add KPIs and write more files into the folder before the KPIs
    are written.  With an ``oracle:`` block (and no ``extras``) the KPIs gain the
    perfect-foresight optimum's (``oracle_*``) and the run's gap to it (``regret*``;
    docs/oracle.md).
    """
    from cps_sim.experiment.outdir import MARKER, check_run_out

    protect = [source_file] if source_file is not None else []
    shown = Path(out_dir) if out_dir is not None else default_out_dir(scenario)
    from cps_sim.experiment.memory import check_fits

    # before anything is built; the events go into the folder as they come (streamed)
    check_fits(scenario, source_file, streamed=True)
    out_dir = check_run_out(shown, protect)  # before anything is simulated
    t0 = time.perf_counter()
    started = time.time()
    base_dir = _data_dir(base_dir, source_file)
    facts = {
        "cps_sim.scenario": scenario.name,
        "cps_sim.seed": str(scenario.seed),
        "cps_sim.scenario_hash": scenario_hash(scenario),
    }
    with (
        one_blas_thread(),  # the KPIs and an oracle too (core/blas.py)
        atomic_directory(out_dir, recheck=lambda p: check_run_out(p, protect)) as tmp,
        # the recorder of the run writes its events into the folder as it goes
        stream_events(tmp / "events.parquet", facts) as sink,
    ):
        try:
            recorder = (
                simulator(base_dir)
                if simulator is not None
                else simulate(scenario, quiet=quiet, base_dir=base_dir)
            )
            sim_wall = time.perf_counter() - t0
            meta = recorder.finish_events()  # the file's metadata: the same in every file
        except ScenarioError as exc:  # found while building (catalog names, data files)
            raise _naming(exc, source_file) from None
        except OSError:
            if sink.error is None:  # not the events file's
                raise
            raise _cannot_write(shown, sink.error) from None
        if recorder.event_stream.sink is not sink:
            raise RuntimeError(
                "run_scenario: the simulator's recorder did not stream its events into the "
                "results folder (make the Recorder inside the simulator, in this thread)"
            )
        stream = recorder.event_stream
        kpis = recorder.kpis(stream.departures(["unmet_wh", "soc"]))
        if extras is not None:
            extras(recorder, tmp, kpis)
        elif scenario.oracle is not None and scenario.oracle.regret:
            # the perfect-foresight optimum of the same run, and the run's gap to it
            from cps_sim.experiment.oracle import regret_kpis, solve_oracle

            kpis.update(regret_kpis(kpis, solve_oracle(scenario, base_dir=base_dir, quiet=quiet)))
        timeseries = recorder.timeseries()
        groups = recorder.timeseries_by_group()
        ctl_events = tmp / "bridge_events.parquet"  # written by cps-sim hil's extras
        expectations = (
            check_run(
                scenario,
                timeseries,
                stream.read([c for c in EVENT_SCHEMA.names if c != "time"]),
                kpis,
                groups,
                pq.read_table(ctl_events) if ctl_events.exists() else None,
            )
            if scenario.expect and check_expect
            else None
        )
        try:
            write_parquet(tmp / "timeseries.parquet", timeseries, meta)
            write_parquet(tmp / "timeseries_groups.parquet", groups, meta)
            sites = recorder.sites()
            if sites is not None:
                write_parquet(tmp / "sites.parquet", sites, meta)
            meter = recorder.smart_meter()
            if meter is not None:
                write_parquet(tmp / "smart_meter.parquet", meter, meta)
            for name, table in recorder.reports().items():
                write_parquet(tmp / f"{name}.parquet", table, meta)
            write_json(tmp / "kpis.json", kpis)
            if expectations is not None:
                write_json(tmp / "expectations.json", expectations.to_json())
            wall = time.perf_counter() - t0
            write_json(
                tmp / "manifest.json",
                {
                    MARKER: {"kind": "run", "version": __version__},
                    "scenario": scenario.model_dump(mode="json"),
                    "scenario_hash": scenario_hash(scenario),
                    "scenario_file": source_file,
                    "overrides": list(overrides),
                    "seed": scenario.seed,
                    "versions": package_versions(),
                    "git_commit": _git_commit(),
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                    "wall_time_s": wall,
                    "simulation_wall_time_s": sim_wall,
                    "ticks": recorder.ticks_done,
                    "files": [*sorted(p.name for p in tmp.iterdir()), "manifest.json"],
                    "sign_convention": SIGN_NOTE,
                },
            )
        except OSError as exc:
            raise _cannot_write(shown, exc) from None
    return RunResult(
        out_dir=shown, kpis=kpis, wall_time_s=time.perf_counter() - t0, expectations=expectations
    )


def _cannot_write(shown: Path, exc: OSError) -> ResultsError:
    cls = DiskFullError if _disk_full(exc) else ResultsError
    hint = (
        (" (the disk is full or a file-size limit was reached: free space and run again)")
        if cls is DiskFullError
        else ""
    )
    return cls(
        f"{shown}: cannot write the results: {exc.strerror or exc}{hint}; nothing was replaced"
    )


def _disk_full(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", -1))


def run_file(
    path: str | Path,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    out_dir: Path | None = None,
    quiet: bool = True,
    check_expect: bool = True,
    oracle: bool = False,
    objective: str | None = None,
) -> RunResult:
    """Load, validate and run a scenario file (``seed`` overrides the file's seed).

    ``oracle``: run the perfect-foresight optimum's schedule instead of the scenario's
    controllers (``objective`` overrides ``oracle.objective``; results in
    ``<default>-oracle``, with ``oracle.json``; ``expect:`` is not checked).
    """
    ov = list(overrides)
    if seed is not None:
        ov.append(f"seed={int(seed)}")
    scenario = load_scenario(path, ov)
    if oracle:
        from cps_sim.experiment.oracle import oracle_hooks

        if out_dir is None:
            out_dir = Path(str(default_out_dir(scenario)) + "-oracle")
        simulator, extras = oracle_hooks(scenario, quiet=quiet, objective=objective)
        # the optimum and its replay start from the sampled state (no warm-up)
        ran = scenario.model_copy(update={"expect": [], "warmup_days": 0})
        return run_scenario(
            ran,
            out_dir,
            quiet=quiet,
            source_file=str(path),
            overrides=ov,
            simulator=simulator,
            extras=extras,
            check_expect=False,
        )
    return run_scenario(
        scenario,
        out_dir,
        quiet=quiet,
        source_file=str(path),
        overrides=ov,
        check_expect=check_expect,
    )
