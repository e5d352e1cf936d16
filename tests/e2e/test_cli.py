"""End to end: the README commands, from the CLI, as a user types them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

CLI = [sys.executable, "-m", "cps_sim"]


def _run(args, cwd, **kw):
    env = {**os.environ, "CI": "true"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, **kw
    )


def test_readme_quickstart_runs_end_to_end(tmp_path: Path, repo: Path):
    readme = (repo / "README.md").read_text()
    assert "cps-sim run scenarios/quickstart.yaml" in readme
    out = tmp_path / "qs"
    r = _run(["run", "scenarios/quickstart.yaml", "--out", str(out), "--quiet"], repo)
    assert r.returncode == 0, r.stderr
    assert f"results: {out}" in r.stdout
    for name in ("timeseries.parquet", "events.parquet", "kpis.json", "manifest.json"):
        assert (out / name).stat().st_size > 0
    ts = pq.read_table(out / "timeseries.parquet").to_pandas()
    assert len(ts) == 7 * 96
    assert str(ts["time"].dt.tz) == "UTC"
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["pv_generation_kwh"] > 0 and kpis["grid_import_kwh"] > 0
    assert abs(kpis["balance_residual_wh"]) < 1e-3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 42 and len(manifest["scenario_hash"]) == 64
    assert manifest["versions"]["simpy"]
    assert not list(tmp_path.glob(".qs.tmp-*"))  # atomic: no temp dir left


def test_seed_and_set_overrides(tmp_path: Path, repo: Path):
    out = tmp_path / "o"
    r = _run(
        [
            "run",
            "scenarios/quickstart.yaml",
            "--out",
            str(out),
            "-q",
            "--seed",
            "3",
            "--set",
            "duration_days=1",
            "--set",
            "sites[0].count=20",
            "--expect",
            "report",
        ],
        repo,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["seed"] == 3 and m["scenario"]["sites"][0]["count"] == 20
    assert pq.read_table(out / "timeseries.parquet").num_rows == 96


def test_bad_scenario_one_clear_message_no_traceback(tmp_path: Path, repo: Path):
    bad = tmp_path / "bad.yaml"
    text = (repo / "scenarios" / "quickstart.yaml").read_text()
    bad.write_text(text.replace("capacity_kwh: 10", "capacity_kwh: -5"))
    out = tmp_path / "never"
    r = _run(["run", str(bad), "--out", str(out)], repo)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert re.search(
        r"bad\.yaml:\d+:\d+: sites\[0\]\.battery\.capacity_kwh: must be > 0, "
        r"got -5",
        r.stderr,
    )
    assert not out.exists()
    r = _run(["validate", str(bad)], repo)
    assert r.returncode == 2 and "capacity_kwh" in r.stderr


def test_failed_rerun_keeps_previous_results(tmp_path: Path, repo: Path):
    out = tmp_path / "keep"
    ok = _run(
        [
            "run",
            "scenarios/quickstart.yaml",
            "--out",
            str(out),
            "-q",
            "--set",
            "duration_days=1",
            "--set",
            "sites[0].count=5",
            "--expect",
            "report",
        ],
        repo,
    )
    assert ok.returncode == 0
    before = (out / "timeseries.parquet").read_bytes()
    bad = _run(
        ["run", "scenarios/quickstart.yaml", "--out", str(out), "-q", "--set", "tick_s=7"], repo
    )
    assert bad.returncode == 2
    assert (out / "timeseries.parquet").read_bytes() == before


def test_validate_and_schema(repo: Path):
    r = _run(["validate", "scenarios/quickstart.yaml"], repo)
    assert r.returncode == 0 and "OK" in r.stdout
    r = _run(["schema"], repo)
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert "sites" in schema["properties"]


def test_console_script_installed():
    assert shutil.which("cps-sim"), "pip install -e . should put cps-sim on PATH"
