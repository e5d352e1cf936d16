"""What the end-to-end tests of the command line share: the tiny scenario and sweep they
write, the environment of a ``cps-sim`` subprocess, and ``cps-sim`` run in this process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cps_sim import cli

REPO = Path(__file__).resolve().parents[2]

SCENARIO = textwrap.dedent("""\
    version: 1
    name: tiny
    seed: 3
    start: 2026-04-06T00:00:00+09:00
    duration_days: 1
    tick_s: 3600
    sites:
      - name: homes
        count: 3
        pv: {share: 0.5, capacity_kw: 4}
        battery: {share: 0.5, capacity_kwh: 10}
        ev: {share: 0.5}
    """)

SWEEP = textwrap.dedent("""\
    name: s
    scenario: tiny.yaml
    parameters:
      - {name: pv_share, path: "sites[0].pv.share", values: [0.2, 0.9]}
    """)


def cli_env() -> dict[str, str]:
    """The environment of a ``cps-sim`` subprocess: CI mode, this checkout importable."""
    env = {**os.environ, "CI": "true"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def invoke(args: list, capsys) -> tuple[int, str, str]:
    """``cps-sim ARGS`` through the console entry point, in this process:
    (exit code, stdout, stderr); :func:`run_in_process`, plus whatever reached pytest's
    capture around its redirection (a handler bound to the earlier stream)."""
    capsys.readouterr()
    r = run_in_process(args)
    out, err = capsys.readouterr()
    return r.returncode, r.stdout + out, r.stderr + err


def run_in_process(args: list) -> subprocess.CompletedProcess:
    """``cps-sim ARGS`` through the console entry point in this process, output captured
    without pytest's ``capsys`` (usable in module fixtures and loops): what
    :func:`run_cli` returns, without the interpreter's start.  For the many cases of one
    check; keep at least one :func:`run_cli` per test for the real command."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["cps-sim", *map(str, args)]
    old, sys.argv = sys.argv, argv
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
        cli._state["debug"] = False
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run_cli(args: list, cwd: Path | None = None, timeout: float = 300):
    """``python -m cps_sim ARGS`` in a subprocess (:func:`cli_env`), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cps_sim", *map(str, args)],
        cwd=cwd or REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
