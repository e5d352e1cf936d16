"""``cps-sim run`` with ``expect:``: exit code 3 and a readable report on failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "cps_sim"]

SCENARIO = """\
version: 1
name: expect_cli
seed: 42
start: 2026-04-06T00:00:00+09:00
duration_days: 1
sites:
  - name: homes
    count: 8
    pv: {share: 1.0}
    ev: {share: 1.0}
expect:
  - kpi.grid_import_kwh > 0
  - {check: "max(grid_import_kw) <= 0.5", name: tiny_peak, why: "deliberately impossible"}
  - grid_export_kw >= 0
"""


def _run(args, cwd):
    env = {**os.environ, "CI": "true"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )


def test_failing_expectation_exits_3_with_report_and_keeps_results(tmp_path: Path, repo: Path):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO)
    out = tmp_path / "out"
    r = _run(["run", str(f), "--out", str(out), "-q"], repo)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    assert "expectations: 2 of 3 passed, 1 FAILED" in r.stderr
    assert "FAILED tiny_peak: max(grid_import_kw) <= 0.5" in r.stderr
    ts = __import__("pandas").read_parquet(out / "timeseries.parquet")
    peak_kw = ts["grid_import_w"].max() / 1000
    # the report names the value and the local time of the peak
    line = next(x for x in r.stderr.splitlines() if "max(grid_import_kw) =" in x)
    assert f"{peak_kw:.6g}" in line and "+09:00" in line
    peak_time = ts.loc[ts["grid_import_w"].idxmax(), "time"].tz_convert("Asia/Tokyo")
    assert peak_time.isoformat() in line
    # everything computed is kept, plus the expectations file
    for name in ("timeseries.parquet", "kpis.json", "manifest.json", "expectations.json"):
        assert (out / name).exists()
    ej = json.loads((out / "expectations.json").read_text())
    assert ej["ok"] is False and ej["failed"] == 1 and ej["total"] == 3
    bad = next(x for x in ej["results"] if x["status"] == "failed")
    assert bad["name"] == "tiny_peak" and bad["why"] == "deliberately impossible"
    assert bad["first_failure_time"] == peak_time.isoformat()


def test_passing_expectations_exit_0(tmp_path: Path, repo: Path):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.replace("<= 0.5", "<= 1000"))
    out = tmp_path / "out"
    r = _run(["run", str(f), "--out", str(out), "-q"], repo)
    assert r.returncode == 0, r.stderr
    assert "expectations: 3 of 3 passed" in r.stdout
    assert json.loads((out / "expectations.json").read_text())["ok"] is True


def test_bad_expectation_is_a_validation_error_before_running(tmp_path: Path, repo: Path):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.replace("kpi.grid_import_kwh > 0", "kpi.grid_imports_kwh > 0"))
    out = tmp_path / "out"
    r = _run(["run", str(f), "--out", str(out), "-q"], repo)
    assert r.returncode == 2
    assert (
        f"{f}:12:5: expect[0]: unknown KPI 'grid_imports_kwh'; did you mean 'grid_import_kwh'?"
    ) in r.stderr
    assert not out.exists()


def test_expect_report_and_off(tmp_path: Path, repo: Path):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO)
    r = _run(["run", str(f), "--out", str(tmp_path / "a"), "-q", "--expect", "report"], repo)
    assert r.returncode == 0 and "1 FAILED" in r.stderr
    assert (tmp_path / "a" / "expectations.json").exists()
    r = _run(["run", str(f), "--out", str(tmp_path / "b"), "-q", "--expect", "off"], repo)
    assert r.returncode == 0 and "expectations" not in r.stdout + r.stderr
    assert not (tmp_path / "b" / "expectations.json").exists()
    r = _run(["run", str(f), "--out", str(tmp_path / "c"), "-q", "--expect", "maybe"], repo)
    assert r.returncode != 0 and "--expect must be check, report or off" in r.stderr
