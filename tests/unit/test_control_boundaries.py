"""The boundary between world and control (issue 11): control imports nothing from
scenario/ or world/, never names a SiteGroup, and every control loop decides with the
same ``decide(now_s, observations) -> setpoints`` shape."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from cps_sim.control.ems import BemsController, CemsController, FemsController, HemsController
from cps_sim.control.schedule import ScheduleController
from cps_sim.control.strategies import StrategyController
from cps_sim.control.vpp import VppController
from cps_sim.control.vpp_runtime import VppRuntime

CONTROL = Path(__file__).resolve().parents[2] / "cps_sim" / "control"
FORBIDDEN = ("cps_sim.scenario", "cps_sim.world")


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every imported module (top level, in functions, under TYPE_CHECKING)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def test_control_imports_nothing_from_scenario_or_world_and_never_names_a_sitegroup():
    files = sorted(CONTROL.rglob("*.py"))
    assert len(files) > 10
    bad = []
    for f in files:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        rel = f.relative_to(CONTROL.parent).as_posix()
        for line, mod in _imports(tree):
            if mod.startswith(FORBIDDEN) or mod.endswith(".SiteGroup"):
                bad.append(f"{rel}:{line} imports {mod}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "SiteGroup":
                bad.append(f"{rel}:{node.lineno} names SiteGroup")
            if isinstance(node, ast.Attribute) and node.attr == "SiteGroup":
                bad.append(f"{rel}:{node.lineno} names SiteGroup")
    assert bad == []


def test_the_import_check_sees_function_level_imports():
    tree = ast.parse("def f():\n    from cps_sim.scenario.schema import Scenario\n")
    assert (2, "cps_sim.scenario.schema") in _imports(tree)


ONE_GROUP = [
    StrategyController,
    ScheduleController,
    HemsController,
    BemsController,
    FemsController,
    VppController,
]
GROUPS = [CemsController, VppRuntime]


@pytest.mark.parametrize("cls", ONE_GROUP + GROUPS, ids=lambda c: c.__name__)
def test_every_control_loop_decides_with_one_shape(cls):
    params = list(inspect.signature(cls.decide).parameters)
    assert params[:2] == ["self", "now_s"], cls
    assert len(params) == 3, params  # (now_s, observation or {group: observation})
    hints = inspect.get_annotations(cls.decide)
    obs = str(hints[params[2]])
    ret = str(hints["return"])
    if cls in GROUPS:
        assert "Observation]" in obs and obs.startswith(("Mapping[str", "dict[str")), obs
        assert ret == "dict[str, dict[str, np.ndarray]]", ret
    else:
        assert obs == "Observation", obs
        assert ret == "dict[str, np.ndarray]", ret
