"""docs/scenarios.md is generated from the schema and current; every field is described
(issue 10 item 19)."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from cps_sim.experiment.sweep_spec import SweepFile
from cps_sim.scenario.reference_doc import DOC, render, unit_of
from cps_sim.scenario.schema import Scenario
from cps_sim.scenario.strict_types import _strip, _union_args, field_annotations

REPO = Path(__file__).resolve().parents[2]


def _models(root):
    seen, todo = [], [root]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.append(m)
        for _, ann in field_annotations(m).values():
            stack = [ann]
            while stack:
                a = _strip(stack.pop())
                members = _union_args(a) or (
                    typing.get_args(a) if typing.get_origin(a) in (list, dict, tuple) else (a,)
                )
                for x in members:
                    if isinstance(x, type) and issubclass(x, BaseModel):
                        todo.append(x)
                    elif typing.get_origin(_strip(x)) not in (None, typing.Literal):
                        stack.append(x)
    return seen


def test_docs_scenarios_md_is_current():
    assert DOC == REPO / "docs" / "scenarios.md"
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/scenarios.md is out of date: run `python -m cps_sim.scenario.reference_doc`"
    )


def test_every_field_of_every_scenario_and_sweep_model_has_a_description():
    missing = [
        f"{m.__name__}.{name}"
        for root in (Scenario, SweepFile)
        for m in _models(root)
        for name, f in m.model_fields.items()
        if not (f.description or "").strip()
    ]
    assert not missing, missing


def test_the_reference_lists_every_scenario_field_with_its_default_and_bounds():
    text = DOC.read_text(encoding="utf-8")
    for m in _models(Scenario):
        assert f"### {m.__name__}\n" in text, m.__name__
        section = text.split(f"### {m.__name__}\n", 1)[1].split("\n### ", 1)[0]
        for name, (key, _) in field_annotations(m).items():
            assert f"| `{key}` |" in section, f"{m.__name__}.{name}"
    # spot checks against the schema: a default, a bound from Field, one from a validator
    assert "| `tick_s` | number | s | 900 | >= 1, <= 3600 |" in text
    assert (
        "| `capacity_kw` | number or a [distribution](#distributions) | kW | 4.5 | > 0, "
        "<= 1e+06 |" in text
    )


def test_units_come_from_field_names():
    assert unit_of("capacity_kwh") == "kWh" and unit_of("price_jpy_per_kwh") == "JPY/kWh"
    assert unit_of("tick_s") == "s" and unit_of("share") == "0..1"
    assert unit_of("co2_g_per_kwh") == "g/kWh" and unit_of("count") == ""


def test_regenerate_command_and_cli_print_the_same(tmp_path):
    out = tmp_path / "s.md"
    r = subprocess.run(
        [sys.executable, "-m", "cps_sim.scenario.reference_doc", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run(
        [sys.executable, "-m", "cps_sim", "schema", "--markdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r2.returncode == 0 and r2.stdout == out.read_text(encoding="utf-8") == render()


def test_quickstart_points_to_the_reference():
    assert "docs/scenarios.md" in (REPO / "scenarios" / "quickstart.yaml").read_text()
    assert DOC.is_file()
