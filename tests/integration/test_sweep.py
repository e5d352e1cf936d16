"""Sweeps end to end on tiny scenarios (4 homes, 1 day): backends, kill/resume, failures, lock.

Reliability matrix 2.5: B1 worker killed, B2 atomic outputs, B3 resume
without duplicates, B4 disk full, B5 concurrent sweeps, B6/B7 determinism,
B9 exception inside a run.  Processes are real (forkserver pool, Dask
LocalCluster, SIGKILL); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

from cps_sim.experiment.catalog import read_catalog
from cps_sim.experiment.sweep import SweepLockedError, run_sweep, sweep_lock
from cps_sim.experiment.sweep_spec import expand, load_sweep
from cps_sim.experiment.worker import execute_run

REPO = Path(__file__).resolve().parents[2]

SCENARIO = textwrap.dedent("""\
    version: 1
    name: tiny
    seed: 3
    start: 2026-04-06T00:00:00+09:00
    duration_days: 1
    tick_s: 3600
    weather: {source: synthetic}
    sites:
      - name: homes
        count: 4
        pv: {share: 0.5, capacity_kw: 4}
        battery: {share: 0.5, capacity_kwh: 10}
        ev: {share: 0.5}
    """)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _write(tmp: Path, sweep: str) -> Path:
    (tmp / "tiny.yaml").write_text(SCENARIO)
    p = tmp / "sweep.yaml"
    p.write_text(textwrap.dedent(sweep))
    return p


def _finished(out: Path) -> list[str]:
    return sorted(p.name.split("=", 1)[1] for p in (out / "runs").glob("run_id=*"))


GRID = """\
    name: grid
    scenario: tiny.yaml
    parameters:
      - {name: pv_share, path: "sites[0].pv.share", values: [0.2, 0.9]}
      - {name: battery_kwh, path: "sites[0].battery.capacity_kwh", values: [5, 15]}
    replications: 2
    """


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """One finished 8-run sweep on the local backend, shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("grid")
    f = _write(tmp, GRID)
    return f, run_sweep(f, tmp / "local", workers=2, backend="local", quiet=True)


def test_local_and_dask_backends_give_identical_catalogs(grid_sweep, tmp_path):
    f, a = grid_sweep
    b = run_sweep(f, tmp_path / "dask", workers=2, backend="dask", quiet=True)
    assert (a.ok, a.failed, b.ok, b.failed) == (8, 0, 8, 0)
    ca, cb = read_catalog(a.out_dir), read_catalog(b.out_dir)
    assert len(ca) == 8 and ca.run_id.is_unique and (ca.status == "ok").all()
    assert ca.attrs["param_columns"] == ["pv_share", "battery_kwh"]
    assert "self_sufficiency" in ca.attrs["kpi_columns"]
    drop = ["wall_time_s"]  # the only column allowed to differ
    pd.testing.assert_frame_equal(ca.drop(columns=drop), cb.drop(columns=drop))
    # B6: each run's time series is identical too
    for rid in ca.run_id:
        ta = pq.read_table(a.out_dir / "runs" / f"run_id={rid}" / "timeseries.parquet")
        tb = pq.read_table(b.out_dir / "runs" / f"run_id={rid}" / "timeseries.parquet")
        assert ta.equals(tb)
    # B7: the replicate seed matters (same point, two seeds -> different results)
    first = ca[ca.point == 0]
    assert first.seed.nunique() == 2
    assert first.load_kwh.nunique() == 2


def test_catalog_is_queryable_with_duckdb(grid_sweep):
    duckdb = pytest.importorskip("duckdb")
    _, r = grid_sweep
    cat = str(r.catalog)
    rows = duckdb.sql(
        f"SELECT pv_share, count(*) AS n, avg(self_sufficiency) AS ss "
        f"FROM '{cat}' WHERE status = 'ok' GROUP BY pv_share "
        "ORDER BY pv_share"
    ).fetchall()
    assert [(p, n) for p, n, _ in rows] == [(0.2, 4), (0.9, 4)]
    assert rows[0][2] < rows[1][2]  # more PV -> more self-sufficient
    ts = str(r.out_dir / "runs" / "*" / "timeseries.parquet")
    joined = duckdb.sql(
        f"SELECT c.pv_share, sum(t.pv_generation_w) AS pv FROM '{cat}' c JOIN "
        f"read_parquet('{ts}', hive_partitioning = true) t USING (run_id) "
        "GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert len(joined) == 2


def test_sigkill_then_resume_has_no_duplicates_and_none_missing(tmp_path):
    f = _write(
        tmp_path,
        """\
        name: killme
        scenario: tiny.yaml
        set: ["duration_days=10"]
        parameters:
          - {name: pv_share, path: "sites[0].pv.share", values: [0.1, 0.3, 0.5, 0.7, 0.9]}
        replications: 5
        """,
    )
    out = tmp_path / "out"
    planned = {r.run_id for r in expand(load_sweep(f), f).runs}
    assert len(planned) == 25
    code = (
        "import sys; from cps_sim.experiment.sweep import run_sweep; "
        "run_sweep(sys.argv[1], sys.argv[2], workers=2, quiet=True)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(f), str(out)], env=_env())
    try:
        deadline = time.monotonic() + 60
        while len(_finished(out)) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        kids = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # orphaned workers notice that their sweep is gone and exit (a run they were in the
    # middle of may still be published: atomically, so it is simply skipped on resume)
    _, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive, f"orphan processes left: {alive}"
    done_before = _finished(out)
    assert 4 <= len(done_before) < 25, "the sweep finished before it could be killed"
    # B2: whatever exists is complete
    for rid in done_before:
        d = out / "runs" / f"run_id={rid}"
        assert json.loads((d / "run.json").read_text())["status"] == "ok"
        assert pq.read_table(d / "timeseries.parquet").num_rows == 240  # 10 days x 24 ticks

    r = run_sweep(f, out, workers=2, resume=True, quiet=True)
    assert r.skipped == len(done_before) and r.ok == 25 and r.failed == 0
    cat = read_catalog(out)
    assert cat.run_id.is_unique and set(cat.run_id) == planned
    assert (cat.status == "ok").all()
    assert set(_finished(out)) == planned
    assert not list((out / "runs").glob(".cps_sim-staging*"))


def test_without_resume_an_existing_sweep_is_not_overwritten(grid_sweep):
    from cps_sim.core.errors import ResultsError

    f, r = grid_sweep
    before = sorted(p.stat().st_mtime_ns for p in (r.out_dir / "runs").rglob("run.json"))
    with pytest.raises(ResultsError, match="--resume"):
        run_sweep(f, r.out_dir, workers=1, quiet=True)
    assert sorted(p.stat().st_mtime_ns for p in (r.out_dir / "runs").rglob("run.json")) == before


def test_failing_points_are_recorded_and_the_rest_complete(tmp_path):
    f = _write(
        tmp_path,
        """\
        name: faults
        scenario: tiny.yaml
        parameters:
          - {name: battery_kwh, path: "sites[0].battery.capacity_kwh", values: [5, -5, 10]}
          - {name: days, path: duration_days, values: [1, 10000]}
        timeout_s: 5
        """,
    )
    r = run_sweep(f, tmp_path / "out", workers=2, quiet=True)
    assert r.exit_code == 1
    cat = read_catalog(r.out_dir).set_index(["battery_kwh", "days"])
    assert len(cat) == 6
    ok = cat[cat.status == "ok"]
    assert sorted(ok.index) == [(5, 1), (10, 1)]
    assert ok.self_sufficiency.notna().all()
    invalid = cat.loc[(-5, 1)]
    assert invalid.status == "invalid" and "capacity_kwh" in invalid.error
    for cap in (5, 10):
        row = cat.loc[(cap, 10000)]
        assert row.status == "timeout" and row.error_type == "timeout"
        assert "timeout_s=5" in row.error
    # failures are recorded in failed/<run_id>.json with the traceback
    rec = json.loads((r.out_dir / "failed" / f"{cat.loc[(5, 10000)].run_id}.json").read_text())
    assert "RunTimeout" in rec["traceback"]


def _raising_runner(scenario, out_dir, **kw):
    raise ZeroDivisionError("controller divided by zero")


def test_exception_inside_a_run_is_captured_with_traceback(tmp_path):
    f = _write(tmp_path, GRID)
    task = expand(load_sweep(f), f).runs[0].task()
    rec = execute_run(task, str(tmp_path / "out"), runner=_raising_runner)
    assert rec["status"] == "failed" and rec["error_type"] == "error"
    assert rec["error"] == "ZeroDivisionError: controller divided by zero"
    assert "_raising_runner" in rec["traceback"]
    saved = json.loads((tmp_path / "out" / "failed" / f"{task['run_id']}.json").read_text())
    assert saved["error"] == rec["error"]
    assert not list((tmp_path / "out" / "runs").glob("run_id=*"))
    assert not list((tmp_path / "out" / "runs").glob(".cps_sim-staging*"))
    # a later successful attempt replaces the failure record
    ok = execute_run(task, str(tmp_path / "out"))
    assert ok["status"] == "ok"
    assert not (tmp_path / "out" / "failed" / f"{task['run_id']}.json").exists()
    # and running it again is a no-op (idempotent: never a second copy)
    again = execute_run(task, str(tmp_path / "out"))
    assert again.get("skipped") and _finished(tmp_path / "out") == [task["run_id"]]


def test_disk_full_is_reported_per_run_and_leaves_no_partial_file(tmp_path):
    f = _write(tmp_path, GRID)
    (tmp_path / "tiny.yaml").write_text(SCENARIO.replace("tick_s: 3600", "tick_s: 900"))
    task = expand(load_sweep(f), f).runs[0].task()
    (tmp_path / "task.json").write_text(json.dumps(task))
    out = tmp_path / "out"
    # Files above 12 kB fail with EFBIG (the time series is ~16 kB; records are smaller).
    code = textwrap.dedent("""\
        import json, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))
        from cps_sim.experiment.worker import execute_run
        rec = execute_run(json.load(open(sys.argv[1])), sys.argv[2])
        print(json.dumps({k: rec[k] for k in ("status", "error_type", "error")}))
        """)
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "task.json"), str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["status"] == "failed" and rec["error_type"] == "disk_full", rec
    assert "File too large" in rec["error"]
    assert not list((out / "runs").glob("run_id=*"))
    assert not [p for p in (out / "runs").rglob("*") if p.is_file()]
    saved = json.loads((out / "failed" / f"{task['run_id']}.json").read_text())
    assert saved["error_type"] == "disk_full"


def test_second_sweep_on_a_locked_directory_exits_with_a_clear_error(tmp_path):
    f = _write(tmp_path, GRID)
    out = tmp_path / "out"
    code = (
        "import sys, time; from pathlib import Path; "
        "from cps_sim.experiment.sweep import sweep_lock\n"
        "with sweep_lock(Path(sys.argv[1])):\n"
        "    print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            SweepLockedError,
            match=rf"another sweep is already writing.*pid "
            rf"{holder.pid}",
        ):
            run_sweep(f, out, workers=1, quiet=True)
        assert not (out / "plan.json").exists()
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    # the lock dies with its holder (even SIGKILL): the directory is usable again
    with sweep_lock(out):
        pass
    assert run_sweep(f, out, workers=1, quiet=True).ok == 8


def test_killed_worker_is_retried_and_the_sweep_completes(tmp_path):
    f = _write(
        tmp_path,
        """\
        name: b1
        scenario: tiny.yaml
        parameters:
          - {name: days, path: duration_days, values: [60, 1, 2, 3]}
        retries: 1
        """,
    )
    out = tmp_path / "out"
    code = (
        "import sys; from cps_sim.experiment.sweep import run_sweep, summary; "
        "r = run_sweep(sys.argv[1], sys.argv[2], workers=2, quiet=True); "
        "print(summary(r)); sys.exit(r.exit_code)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(f), str(out)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    slow = next(r.run_id for r in expand(load_sweep(f), f).runs if r.params["days"] == 60)
    marker = out / ".cps_sim-inflight" / f"{slow}.json"
    deadline = time.monotonic() + 60
    pid = None
    while pid is None and time.monotonic() < deadline:
        try:
            pid = json.loads(marker.read_text())["pid"]
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.005)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    cat = read_catalog(out).set_index("days")
    assert (cat.status == "ok").all() and len(cat) == 4
    assert cat.loc[60].attempts == 2


def _check_png(path: Path) -> None:
    from PIL import Image

    assert path.stat().st_size > 5_000, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
        # not a blank canvas: a plot has many distinct colours
        assert len(im.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 20


def test_report_renders_sweep_and_run_plots(grid_sweep, tmp_path):
    from cps_sim.experiment.report import make_report

    _, r = grid_sweep
    rep = make_report(r.out_dir, out_dir=tmp_path / "sweeprep")
    assert rep.kind == "sweep"
    assert sorted(p.name for p in rep.pngs) == ["heatmap.png", "sensitivity.png", "tradeoff.png"]
    for p in rep.pngs:
        _check_png(p)
    page = rep.html.read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Best runs (lowest cost_jpy)" in page and "Worst runs" in page

    run_id = read_catalog(r.out_dir).run_id.iloc[0]
    rep = make_report(r.out_dir / "runs" / f"run_id={run_id}", out_dir=tmp_path / "runrep")
    assert rep.kind == "run"
    from cps_sim.experiment.summary import BLOCK_PLOT_FILES

    names = {p.name for p in rep.pngs}
    assert {"daily_profiles.png", "energy_flows.png", "soc_price.png"} <= names
    # plus one plot per enabled block (the sweep's homes have EVs)
    assert names - {"daily_profiles.png", "energy_flows.png", "soc_price.png"} == {"evs.png"}
    assert "evs.png" in BLOCK_PLOT_FILES
    for p in rep.pngs:
        _check_png(p)
    page = rep.html.read_text()
    assert page.count("data:image/png;base64,") == len(rep.pngs) and "self_sufficiency" in page


def test_cli_sweep_report_and_located_errors(tmp_path):
    f = _write(
        tmp_path,
        """\
        name: cli
        scenario: tiny.yaml
        parameters:
          - {name: pv_share, path: "sites[0].pv.share", values: [0.2, 0.9]}
        """,
    )
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "cps_sim"]
    res = subprocess.run(
        [*cli, "sweep", str(f), "--out", str(out), "--workers", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "2 runs, 2 ok" in res.stdout
    res = subprocess.run(
        [*cli, "report", str(out)], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0 and (out / "report" / "report.html").exists(), res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: b\nscenario: tiny.yaml\nparameters:\n"
        '  - {path: "sites[0].pv.share", low: 1, high: 0, num: 2}\n'
    )
    res = subprocess.run(
        [*cli, "sweep", str(bad), "--out", str(tmp_path / "o2")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2
    assert f"{bad}:4:5: parameters[0]: low must be <= high" in res.stderr
    assert "Traceback" not in res.stderr


def test_memory_stays_flat_over_many_runs_in_one_worker(tmp_path):
    # B8 (reduced: 60 runs, not 1000): a worker that leaked a World or a SimPy environment
    # per run would grow by megabytes per run.  Pool workers are also recycled after
    # MAX_TASKS_PER_CHILD runs as a safety net.
    f = _write(
        tmp_path,
        """\
        name: mem
        scenario: tiny.yaml
        design: {method: random, samples: 80, seed: 5}
        parameters:
          - {name: pv_share, path: "sites[0].pv.share", low: 0.0, high: 1.0}
        """,
    )
    runs = expand(load_sweep(f), f).runs
    me = psutil.Process()
    for r in runs[:20]:  # warm-up: imports, caches, allocator pools
        assert execute_run(r.task(), str(tmp_path / "out"))["status"] == "ok"
    rss0 = me.memory_info().rss
    for r in runs[20:]:
        assert execute_run(r.task(), str(tmp_path / "out"))["status"] == "ok"
    growth_mb = (me.memory_info().rss - rss0) / 2**20
    assert growth_mb < 30, f"RSS grew {growth_mb:.1f} MB over 60 runs"
