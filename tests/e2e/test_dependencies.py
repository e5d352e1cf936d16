"""What the built-in scenarios need is installed by ``pip install -e .`` (issue 10 item 11).

windpowerlib, demandlib and rainflow are core dependencies.  If one is missing anyway
(``--no-deps``, removed later), the CLI prints one ``error:`` line naming the package
and how to install it: simulated here by blocking the import in a subprocess
(``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

BLOCKED_RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
sys.argv = ["cps-sim", *{argv!r}]
from cps_sim.cli import main
main()
"""


def _blocked(blocked: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = BLOCKED_RUN.format(blocked=blocked, argv=argv)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CI": "true"},
    )


def test_what_built_ins_need_is_a_core_dependency(repo: Path):
    meta = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    core = {
        d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in meta["dependencies"]
    }
    assert {"pvlib", "scipy", "windpowerlib", "demandlib", "rainflow", "holidays"} <= core
    # the old extra still resolves (empty), so `pip install "cps-sim[physics]"` keeps working
    assert meta["optional-dependencies"]["physics"] == []


@pytest.mark.parametrize(
    ("blocked", "argv", "package"),
    [
        (
            ["windpowerlib"],
            ["run", "scenarios/cloudy_windless_backup.yaml", "-q", "--set", "duration_days=1"],
            "windpowerlib",
        ),
        (["windpowerlib"], ["validate", "scenarios/power_to_hydrogen.yaml"], "windpowerlib"),
        (
            ["demandlib", "demandlib.bdew"],
            [
                "run",
                "scenarios/quickstart.yaml",
                "-q",
                "--set",
                "duration_days=1",
                "--set",
                "sites[0].load.profile=bdew_h25",
            ],
            "demandlib",
        ),
    ],
)
def test_a_missing_package_is_one_error_line_naming_it(tmp_path, repo, blocked, argv, package):
    if argv[0] == "run":
        argv = [*argv, "--out", str(tmp_path / "out")]
    r = _blocked(blocked, argv, repo)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: cps-sim needs the Python package")
    assert repr(package) in lines[0] and f"pip install {package}" in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_rainflow_missing_is_a_clear_error_from_the_public_api(repo):
    code = """
import sys
sys.modules["rainflow"] = None
import numpy as np
from cps_sim.core.deps import MissingDependencyError
from cps_sim.models import battery_ageing
params = battery_ageing.ageing_spec(1, "home")
try:
    battery_ageing.rainflow_cycle_fade(params, np.array([0.2, 0.9, 0.2, 0.9]), 25.0)
except MissingDependencyError as exc:
    print(exc)
"""
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "'rainflow'" in r.stdout and "pip install rainflow" in r.stdout
