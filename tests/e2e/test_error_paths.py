"""Every error path of the CLI ends in ``error: ...`` and a non-zero exit (issue 10 item 17).

A table of hostile inputs for every command, run through the real entry
point (``cps_sim.cli.main``, in-process for speed; a few in a subprocess with
resource limits): the exit code is non-zero, stderr starts with ``error:``,
there is no traceback, and nothing outside a fresh output folder changes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import REPO, SCENARIO, SWEEP, cli_env, invoke


def snapshot(root: Path) -> dict[str, object]:
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


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: scenario and sweep files, a finished run and sweep, user files."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / "tiny.yaml").write_text(SCENARIO)
    (ws / "sweep.yaml").write_text(SWEEP)
    r = subprocess.run(
        [sys.executable, "-m", "cps_sim", "run", "tiny.yaml", "--out", "run", "-q"],
        cwd=ws,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "sweep",
            "sweep.yaml",
            "--out",
            "sw",
            "-q",
            "--workers",
            "1",
        ],
        cwd=ws,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    shutil.copytree(ws / "run", ws / "damaged")
    ts = ws / "damaged" / "timeseries.parquet"
    ts.write_bytes(ts.read_bytes()[: len(ts.read_bytes()) // 2])
    shutil.copytree(ws / "run", ws / "not_parquet")
    (ws / "not_parquet" / "timeseries.parquet").write_text("time,grid_import_w\n0,1\n")
    shutil.copytree(ws / "run", ws / "bad_json")
    (ws / "bad_json" / "manifest.json").write_text("{oops")
    (ws / "userdir").mkdir()
    (ws / "userdir" / "thesis.tex").write_text("\\begin{document}")
    (ws / "a_file").write_text("x")
    (ws / "empty.yaml").write_text("")
    (ws / "garbage.yaml").write_bytes(b"\x00\xff\xfe\x80garbage")
    (ws / "list.yaml").write_text("- 1\n- 2\n")
    (ws / "bomb.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
    )
    (ws / "tab.yaml").write_text(SCENARIO.replace("  - name: homes", "\t- name: homes"))
    (ws / "dup.yaml").write_text(SCENARIO + "seed: 4\n")
    (ws / "tick7.yaml").write_text(SCENARIO.replace("tick_s: 3600", "tick_s: 7"))
    (ws / "sweep_missing_scenario.yaml").write_text(SWEEP.replace("tiny.yaml", "nope.yaml"))
    (ws / "sweep_bad_path.yaml").write_text(SWEEP.replace("pv.share", "pv.shares"))
    (ws / "sweep_not_yaml.yaml").write_text("name: [unclosed\n")
    return ws


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_SCENARIOS = [
    "nope.yaml",
    "userdir",
    "empty.yaml",
    "garbage.yaml",
    "list.yaml",
    "bomb.yaml",
    "tab.yaml",
    "dup.yaml",
    "tick7.yaml",
]

CASES: list[tuple[str, list[str]]] = [
    *[(f"validate {f}", ["validate", f]) for f in BAD_SCENARIOS],
    *[(f"run {f}", ["run", f, "--out", "{fresh}", "-q"]) for f in BAD_SCENARIOS],
    ("run --seed -1", ["run", "tiny.yaml", "--seed", "-1", "--out", "{fresh}"]),
    ("run --seed abc", ["run", "tiny.yaml", "--seed", "abc", "--out", "{fresh}"]),
    ("run --set without =", ["run", "tiny.yaml", "--set", "seed", "--out", "{fresh}"]),
    (
        "run --set missing item",
        ["run", "tiny.yaml", "--set", "sites[5].count=2", "--out", "{fresh}"],
    ),
    ("run --set bad value", ["run", "tiny.yaml", "--set", "duration_days=-1", "--out", "{fresh}"]),
    ("run --out a file", ["run", "tiny.yaml", "--out", "a_file", "-q"]),
    ("run --out user folder", ["run", "tiny.yaml", "--out", "userdir", "-q"]),
    ("run --out under a file", ["run", "tiny.yaml", "--out", "a_file/x", "-q"]),
    ("run --out /dev/full", ["run", "tiny.yaml", "--out", "/dev/full", "-q"]),
    ("run --out a sweep", ["run", "tiny.yaml", "--out", "sw", "-q"]),
    (
        "run too large for memory",
        [
            "run",
            "tiny.yaml",
            "--set",
            "sites[0].count=10000000",
            "--set",
            "duration_days=3650",
            "--set",
            "tick_s=60",
            "--out",
            "{fresh}",
            "-q",
        ],
    ),
    ("unknown command", ["simulate", "tiny.yaml"]),
    ("unknown option", ["run", "tiny.yaml", "--turbo"]),
    ("missing argument", ["run"]),
    ("sweep missing file", ["sweep", "nope.yaml", "--out", "{fresh}"]),
    ("sweep not yaml", ["sweep", "sweep_not_yaml.yaml", "--out", "{fresh}"]),
    ("sweep missing scenario", ["sweep", "sweep_missing_scenario.yaml", "--out", "{fresh}"]),
    ("sweep bad path", ["sweep", "sweep_bad_path.yaml", "--out", "{fresh}"]),
    ("sweep --workers 0", ["sweep", "sweep.yaml", "--workers", "0", "--out", "{fresh}"]),
    ("sweep --backend foo", ["sweep", "sweep.yaml", "--backend", "foo", "--out", "{fresh}"]),
    ("sweep into user folder", ["sweep", "sweep.yaml", "--out", "userdir"]),
    ("sweep into a run", ["sweep", "sweep.yaml", "--out", "run"]),
    ("sweep existing without --resume", ["sweep", "sweep.yaml", "--out", "sw"]),
    (
        "sweep unreachable dask",
        [
            "sweep",
            "sweep.yaml",
            "--backend",
            "dask",
            "--address",
            "tcp://127.0.0.1:{port}",
            "--out",
            "{fresh}",
        ],
    ),
    ("report missing dir", ["report", "nope"]),
    ("report user folder", ["report", "userdir"]),
    ("report truncated parquet", ["report", "damaged", "--out", "{fresh}"]),
    ("report csv named parquet", ["report", "not_parquet", "--out", "{fresh}"]),
    ("report broken manifest", ["report", "bad_json", "--out", "{fresh}"]),
    ("report bad --week", ["report", "run", "--week", "next tuesday", "--out", "{fresh}"]),
    ("report --week 2026-02-30", ["report", "run", "--week", "2026-02-30", "--out", "{fresh}"]),
    ("report --week outside", ["report", "run", "--week", "2031-01-01", "--out", "{fresh}"]),
    (
        "report unknown --objective",
        ["report", "sw", "--objective", "happiness", "--out", "{fresh}"],
    ),
    ("report --out a file", ["report", "run", "--out", "a_file"]),
    ("report --out user folder", ["report", "run", "--out", "userdir"]),
]


@pytest.mark.parametrize("args", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_inputs_end_in_one_error_line(ws: Path, tmp_path: Path, args, capsys, monkeypatch):
    monkeypatch.chdir(ws)
    monkeypatch.setenv("CI", "true")
    fresh = tmp_path / "fresh"
    args = [a.replace("{fresh}", str(fresh)).replace("{port}", str(_free_port())) for a in args]
    before = snapshot(ws)
    code, out, err = invoke(args, capsys)
    assert code != 0, out
    assert err.startswith("error:"), err
    assert "Traceback" not in out + err
    assert snapshot(ws) == before, "files outside the fresh output folder changed"
    assert not fresh.exists() or not any(fresh.iterdir())


def test_error_lines_name_the_problem(ws: Path, capsys, monkeypatch):
    monkeypatch.chdir(ws)
    expect = {
        ("report", "damaged", "--out", "x1"): ["damaged/timeseries.parquet", "cannot be read"],
        ("report", "run", "--week", "next tuesday"): ["--week", "YYYY-MM-DD"],
        ("report", "sw", "--objective", "happiness"): ["happiness", "cost_jpy"],
        (
            "run",
            "tiny.yaml",
            "--set",
            "sites[0].count=10000000",
            "--set",
            "duration_days=3650",
            "--set",
            "tick_s=60",
            "--out",
            "x2",
        ): ["too large", "GB", "10,000,000 sites"],
        ("run", "tiny.yaml", "--seed", "abc"): ["--seed", "--help"],
    }
    for args, words in expect.items():
        code, _, err = invoke(list(args), capsys)
        assert code != 0
        for w in words:
            assert w in err, (args, err)


def _limited(limit_bytes: int) -> None:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def test_disk_full_run_is_one_error_line_and_leaves_nothing(ws: Path, tmp_path: Path):
    out = tmp_path / "r"
    r = subprocess.run(
        [sys.executable, "-m", "cps_sim", "run", str(ws / "tiny.yaml"), "--out", str(out), "-q"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: _limited(4096),
    )
    assert r.returncode != 0
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr
    assert "File too large" in r.stderr or "No space left" in r.stderr
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".cps_sim-")]


DRIVER = """\
import resource, signal, sys
from cps_sim.experiment.executors import start_fork_server
from cps_sim import cli

if __name__ == "__main__":
    start_fork_server()  # workers come from the fork server: they keep normal limits
    from multiprocessing import forkserver
    forkserver.ensure_running()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # this process only
    sys.argv = ["cps-sim", *sys.argv[2:]]
    cli.main()
"""


def test_disk_full_at_the_catalog_says_what_finished_and_how_to_resume(ws: Path, tmp_path):
    (tmp_path / "tiny.yaml").write_text(SCENARIO)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    # plan.json (< 3 kB) fits under the limit, the catalog (> 6 kB of Parquet) does not
    r = subprocess.run(
        [
            sys.executable,
            str(driver),
            "6000",
            "sweep",
            str(tmp_path / "sweep.yaml"),
            "--out",
            str(out),
            "-q",
            "--workers",
            "1",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
    assert "2 of 2 ok" in r.stderr and "--resume" in r.stderr and "catalog" in r.stderr
    assert len(list((out / "runs").glob("run_id=*"))) == 2
    assert not (out / "catalog.parquet").exists()
    assert not [p for p in out.rglob(".cps_sim-tmp*")]
    # the advice works: resume rebuilds the catalog without redoing the runs
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "sweep",
            str(tmp_path / "sweep.yaml"),
            "--out",
            str(out),
            "-q",
            "--resume",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "2 ok (2 already done)" in r.stdout
    import pyarrow.parquet as pq

    assert pq.read_table(out / "catalog.parquet").num_rows == 2
    assert json.loads((out / "plan.json").read_text())["cps_sim"]["kind"] == "sweep"


MEASURE = """\
import sys
from cps_sim.experiment.memory import estimate
from cps_sim.experiment.run import simulate
from cps_sim.scenario.loader import load_scenario

sc = load_scenario(sys.argv[1], sys.argv[2:])
rec = simulate(sc, quiet=True)
events = rec.events()
rec.kpis(events), rec.timeseries(), rec.timeseries_by_group()
# VmHWM: the peak RSS of this process image (ru_maxrss would also count the parent's
# memory that a vfork-ed child shared until exec)
hwm = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status")
           if ln.startswith("VmHWM:"))
print(hwm, estimate(sc).total_bytes)
"""


@pytest.mark.parametrize(
    "overrides",
    [
        ["sites[0].count=6000", "duration_days=2", "tick_s=300", "sites[0].ev.per_site=2"],
        ["sites[0].count=2000", "duration_days=1", "tick_s=60"],
        ["duration_days=60"],
    ],
    ids=["many sites and EVs", "one-minute ticks", "long horizon"],
)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_estimate_covers_measured_runs(overrides):
    """The refusal threshold is an estimate: it must not be below what a run really uses."""
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, str(REPO / "scenarios/quickstart.yaml"), *overrides],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    peak, est = map(float, r.stdout.split())
    assert est >= peak, f"estimate {est / 1e6:.0f} MB below the measured peak {peak / 1e6:.0f} MB"
    assert est < 4 * peak  # and not absurdly above it (a run must not be refused for nothing)


MEASURE_STREAMED = """\
import sys, tempfile
from pathlib import Path
from cps_sim.experiment.memory import estimate
from cps_sim.experiment.run import run_scenario
from cps_sim.scenario.loader import load_scenario

sc = load_scenario(sys.argv[1], sys.argv[2:])
with tempfile.TemporaryDirectory() as d:
    run_scenario(sc, Path(d) / "out", quiet=True)
hwm = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status")
           if ln.startswith("VmHWM:"))
print(hwm, estimate(sc, streamed=True).total_bytes, estimate(sc, streamed=False).total_bytes)
"""


@pytest.mark.parametrize(
    "overrides",
    [
        ["sites[0].count=6000", "duration_days=2", "tick_s=300", "sites[0].ev.per_site=2"],
        ["duration_days=60"],
    ],
    ids=["many sites and EVs", "long horizon"],
)
@pytest.mark.parametrize("expect", [True, False], ids=["with expect", "no expect"])
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_estimate_covers_streamed_runs(overrides, expect):
    """run_scenario streams the events into the folder: the estimate it refuses by holds
    only about a day of them (unless expect: rules read them all back), and still covers
    the measured peak of the whole run, files and KPIs included."""
    extra = [] if expect else ["expect=[]"]
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE_STREAMED,
            str(REPO / "scenarios/quickstart.yaml"),
            *overrides,
            *extra,
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    peak, est, held = map(float, r.stdout.split())
    assert est >= peak, f"estimate {est / 1e6:.0f} MB below the measured peak {peak / 1e6:.0f} MB"
    assert est < 4 * peak
    if expect:
        assert est == held  # expect: rules read every event back
    else:
        assert est <= held  # streaming holds at most the whole run's events
