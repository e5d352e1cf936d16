"""cps_sim never deletes, replaces or mixes into what it did not write (issue 10 items 14-18).

Every test drives the CLI as a user would, on real folders, and compares the
user's files byte for byte before and after.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.e2e.cli_helpers import SCENARIO, cli_env, run_cli, run_in_process

CLI = [sys.executable, "-m", "cps_sim"]

SWEEP = textwrap.dedent("""\
    name: s
    scenario: tiny.yaml
    parameters:
      - {name: pv_share, path: "sites[0].pv.share", values: [0.2, 0.9]}
    replications: 2
    """)


def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(list(args), cwd=cwd, timeout=timeout)


def cli_here(*args: str) -> subprocess.CompletedProcess:
    """``cps-sim`` through the same entry point in this process: the many cases of one
    refusal after a first one as a real command (:func:`cli`)."""
    return run_in_process(list(args))


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root`` (hidden ones too): file bytes, link targets, folders."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0, r.stdout
    assert r.stderr.startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """A user's project: a scenario, a sweep file and some of their own files."""
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "tiny.yaml").write_text(SCENARIO)
    (proj / "sweep.yaml").write_text(SWEEP)
    data = proj / "data"
    data.mkdir()
    (data / "measurements.csv").write_text("t,p\n0,1\n")
    (data / ".notes.tmp").write_text("my hidden notes")
    (data / ".cache.tmp").mkdir()
    return proj


# ----------------------------------------------------------------------------- cps-sim run


def test_run_refuses_every_folder_it_did_not_write_and_changes_nothing(user: Path, tmp_path):
    scen = user / "tiny.yaml"
    hidden_only = tmp_path / "hidden_only"
    hidden_only.mkdir()
    (hidden_only / ".x.tmp").write_bytes(b"\x00keep")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    link = tmp_path / "link_to_data"
    link.symlink_to(user / "data")
    cases = {
        "non-empty folder": (user / "data", "not a cps_sim run result"),
        "hidden files only": (hidden_only, "not a cps_sim run result"),
        "a file": (a_file, "not a folder"),
        "the scenario file": (scen, "input file"),
        "the scenario's folder": (user, "input file"),
        "a parent of the scenario": (tmp_path, "input file"),
        "symlink to a user folder": (link, "not a cps_sim run result"),
        "below a file": (a_file / "sub", "is a file"),
    }
    before = snapshot(tmp_path)
    for i, (what, (out, word)) in enumerate(cases.items()):
        r = (cli if i == 0 else cli_here)("run", scen, "--out", out, "-q")
        refused(r, word)
        assert snapshot(tmp_path) == before, f"{what}: files changed"


def test_run_into_new_empty_linked_or_own_result_folders(user: Path, tmp_path):
    scen = user / "tiny.yaml"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("run", scen, "--out", empty, "-q").returncode == 0
    assert json.loads((empty / "manifest.json").read_text())["cps_sim"]["kind"] == "run"
    # a symbolic link to an empty folder: the results land in its target, the link stays
    target = tmp_path / "big_disk" / "r"
    target.mkdir(parents=True)
    link = tmp_path / "r_link"
    link.symlink_to(target)
    assert cli_here("run", scen, "--out", link, "-q").returncode == 0
    assert link.is_symlink() and (target / "timeseries.parquet").is_file()
    # its own earlier result (with a report) is replaced
    assert cli_here("report", empty).returncode == 0
    r = cli_here("run", scen, "--out", empty, "-q", "--seed", "9")
    assert r.returncode == 0, r.stderr
    assert json.loads((empty / "manifest.json").read_text())["seed"] == 9
    # ... but not when the user keeps their own file in it
    (empty / "analysis.ipynb").write_text("{}")
    before = snapshot(tmp_path)
    refused(cli_here("run", scen, "--out", empty, "-q"), "analysis.ipynb", "did not write")
    assert snapshot(tmp_path) == before
    # a sweep folder is not a run result
    sweep_out = tmp_path / "sw"
    assert (
        cli("sweep", user / "sweep.yaml", "--out", sweep_out, "-q", "--workers", "1").returncode
        == 0
    )
    before = snapshot(sweep_out)
    refused(cli_here("run", scen, "--out", sweep_out, "-q"), "sweep")
    assert snapshot(sweep_out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cps_sim-")]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]


def test_stale_staging_of_dead_runs_is_cleaned_and_nothing_else(user: Path, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    stale = results / f".cps_sim-staging.{_dead_pid()}.{_host()}.0123abcd.r1"
    stale.mkdir()
    (stale / "timeseries.parquet").write_bytes(b"half written")
    live = results / f".cps_sim-staging.{os.getpid()}.{_host()}.0123abcd.r1"  # alive: kept
    live.mkdir()
    other_host = results / f".cps_sim-staging.{_dead_pid()}.otherhost.0123abcd.r1"
    other_host.mkdir()
    mine = {
        results / ".r1.tmp-0123abcd": b"user",
        results / ".cps_sim-notes": b"user too",
        results / "r0.tmp": b"user",
    }
    for p, b in mine.items():
        p.write_bytes(b)
    r = cli("run", user / "tiny.yaml", "--out", results / "r1", "-q")
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    assert live.is_dir() and other_host.is_dir()
    for p, b in mine.items():
        assert p.read_bytes() == b


def test_unwritable_output_is_refused_before_simulating(user: Path, tmp_path):
    scen = user / "tiny.yaml"
    # /proc refuses new entries even for root: the check happens before any simulation
    t0 = time.monotonic()
    refused(cli("run", scen, "--out", "/proc/cps_sim_results", "-q"), "/proc")
    assert time.monotonic() - t0 < 60
    refused(cli("sweep", user / "sweep.yaml", "--out", "/proc/cps_sim_sweep", "-q"), "/proc")


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder the test process cannot write into: mode 555, or (as root, who ignores
    modes) a read-only tmpfs mounted for the test."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"root without permission to mount a read-only tmpfs: {r.stderr.strip()}")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_read_only_folder_is_refused_before_simulating(user: Path, read_only_dir: Path):
    t0 = time.monotonic()
    refused(cli("run", user / "tiny.yaml", "--out", read_only_dir / "r", "-q"), "cannot write")
    refused(cli("sweep", user / "sweep.yaml", "--out", read_only_dir / "s", "-q"), "cannot write")
    if os.path.ismount(read_only_dir):  # the folder itself can never be swapped
        refused(cli("run", user / "tiny.yaml", "--out", read_only_dir, "-q"), "mount point")
    assert list(read_only_dir.iterdir()) == []
    assert time.monotonic() - t0 < 120


# ----------------------------------------------------------------------------- cps-sim sweep


def test_sweep_refuses_foreign_folders_and_changes_nothing(user: Path, tmp_path):
    sw = user / "sweep.yaml"
    run_out = tmp_path / "a_run"
    assert cli_here("run", user / "tiny.yaml", "--out", run_out, "-q").returncode == 0
    a_file = tmp_path / "f.bin"
    a_file.write_bytes(b"\x01\x02")
    link = tmp_path / "l"
    link.symlink_to(user / "data")
    before = snapshot(tmp_path)
    first = True
    for out, word in (
        (user / "data", "not a cps_sim sweep"),
        (link, "not a cps_sim sweep"),
        (a_file, "not a folder"),
        (user, "input file"),
        (tmp_path, "input file"),
        (run_out, "run result"),
    ):
        for extra in ([], ["--resume"]):
            refused((cli if first else cli_here)("sweep", sw, "--out", out, "-q", *extra), word)
            first = False
            assert snapshot(tmp_path) == before, (out, extra)


def _sweep(user: Path, out: Path, *extra: str, here: bool = False) -> subprocess.CompletedProcess:
    """``cps-sim sweep`` on two workers (``here``: in this process, for refusals)."""
    return (cli_here if here else cli)(
        "sweep", user / "sweep.yaml", "--out", out, "-q", "--workers", "2", *extra
    )


def test_resume_keeps_user_files_redoes_damaged_runs_and_refuses_other_plans(user, tmp_path):
    out = tmp_path / "sweep"
    r = _sweep(user, out)
    assert r.returncode == 0, r.stderr
    runs = sorted((out / "runs").glob("run_id=*"))
    assert len(runs) == 4
    # the user's own files in the sweep folder, hidden temp-looking ones included
    mine = {
        out / ".notes.tmp": b"keep me",
        out / "runs" / ".x.tmp": b"and me",
        out / "failed.tmp": b"me too",
    }
    for p, b in mine.items():
        p.write_bytes(b)
    # damage: run.json missing, a Parquet file truncated, a Parquet file missing,
    # run.json not JSON
    (runs[0] / "run.json").unlink()
    ts = runs[1] / "timeseries.parquet"
    ts.write_bytes(ts.read_bytes()[:100])
    (runs[2] / "events.parquet").unlink()
    (runs[3] / "run.json").write_text("{not json")
    r = _sweep(user, out, "--resume")
    assert r.returncode == 0, r.stderr
    assert "4 finished run(s) had damaged files and were redone" in r.stdout
    for d in runs:
        assert json.loads((d / "run.json").read_text())["status"] == "ok"
        manifest = json.loads((d / "manifest.json").read_text())
        for name in manifest["files"]:
            if name.endswith(".parquet"):
                assert pq.read_table(d / name).num_rows >= 0
    cat = pq.read_table(out / "catalog.parquet").to_pandas()
    assert len(cat) == 4 and (cat.status == "ok").all()
    for p, b in mine.items():
        assert p.read_bytes() == b
    assert not [p for p in out.rglob(".cps_sim-staging*")]

    # a different plan: refused, naming what differs, nothing changed
    before = snapshot(out)
    (user / "sweep.yaml").write_text(SWEEP.replace("[0.2, 0.9]", "[0.2, 0.5, 0.9]"))
    refused(_sweep(user, out, "--resume", here=True), "different sweep plan", "parameters")
    (user / "sweep.yaml").write_text(SWEEP.replace("replications: 2", "replications: 3"))
    refused(_sweep(user, out, "--resume", here=True), "replications: 2 -> 3")
    (user / "sweep.yaml").write_text(SWEEP)
    (user / "tiny.yaml").write_text(SCENARIO.replace("count: 3", "count: 4"))
    refused(_sweep(user, out, "--resume", here=True), "scenario file's content changed")
    assert snapshot(out) == before
    # without --resume a finished sweep is never overwritten
    (user / "tiny.yaml").write_text(SCENARIO)
    refused(_sweep(user, out, here=True), "--resume")
    assert snapshot(out) == before


def test_sigkilled_sweep_leaves_no_workers_even_while_it_is_unreaped(user: Path, tmp_path):
    (user / "sweep.yaml").write_text(
        SWEEP.replace("replications: 2", "replications: 10") + 'set: ["duration_days=20"]\n'
    )
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, "sweep", str(user / "sweep.yaml"), "--out", str(out), "-q", "--workers", "2"],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        inflight = out / ".cps_sim-inflight"
        while time.monotonic() < deadline and proc.poll() is None:
            if inflight.is_dir() and any(inflight.iterdir()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert kids
        os.kill(proc.pid, signal.SIGKILL)
        # not reaped: the sweep stays a zombie while its workers must go away
        time.sleep(0.2)
        assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        _, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, f"workers still running after their sweep was killed: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    r = _sweep(user, out, "--resume")
    assert r.returncode == 0, r.stderr
    cat = pq.read_table(out / "catalog.parquet").to_pandas()
    assert len(cat) == 20 and cat.run_id.is_unique and (cat.status == "ok").all()
    assert not [p for p in out.rglob(".cps_sim-staging*")]


def test_lifeline_kills_a_child_whose_parent_dies_or_died_before_it_bound():
    from cps_sim.experiment.lifeline import bind_to_parent  # noqa: F401 - what the child runs

    # the parent it expects is not its parent (it died and the child was re-parented): exit 3
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cps_sim.experiment.lifeline import "
            "bind_to_parent; bind_to_parent(1); print('alive')",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert r.returncode == 3 and "alive" not in r.stdout
    # a middle process starts a bound child, then is SIGKILLed and left unreaped
    child = (
        "import os, time; from cps_sim.experiment.lifeline import bind_to_parent; "
        "bind_to_parent(os.getppid()); print(os.getpid(), flush=True); time.sleep(120)"
    )
    middle = (
        "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
        f"{child!r}]); time.sleep(120)"
    )
    mid = subprocess.Popen([sys.executable, "-c", middle], env=cli_env())
    try:
        deadline = time.monotonic() + 60
        kids: list[psutil.Process] = []
        while not kids and time.monotonic() < deadline:
            kids = psutil.Process(mid.pid).children()
            time.sleep(0.05)
        time.sleep(1.0)  # let the child bind
        os.kill(mid.pid, signal.SIGKILL)
        time.sleep(0.2)
        assert psutil.Process(mid.pid).status() == psutil.STATUS_ZOMBIE
        _, alive = psutil.wait_procs(kids, timeout=5)
        assert not alive
    finally:
        mid.kill()
        mid.wait()
