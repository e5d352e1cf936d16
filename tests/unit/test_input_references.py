"""Cross-references are checked when a scenario is validated (issue 10 item 10)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cps_sim.core.errors import Issue, ScenarioError
from cps_sim.scenario.loader import load_scenario

REPO = Path(__file__).resolve().parents[2]

BASE = """\
version: 1
name: refs
start: 2026-04-06T00:00:00+09:00
duration_days: 1
sites:
  - name: homes
    count: 4
    ev: {share: 0.5}
    battery: {capacity_kwh: 5}
  - name: shops
    kind: building
    count: 2
"""


def _write(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(BASE + extra)
    return p


CASES = [
    (
        "vpp: {groups: [homes], absorb_system_curtailment: {share: 1.0}}\n",
        "vpp.absorb_system_curtailment",
        "no system: block",
    ),
    ("vpp: {groups: [homes, flats]}\n", "vpp.groups[1]", "no site group named 'flats'"),
    ("ems: {flats: {kind: hems}}\n", "ems.flats", "no site group named 'flats'"),
    ("ems: {homes: {kind: cems, member_groups: [shop]}}\n", "ems.homes.member_groups[0]", "'shop'"),
    ("powerflow: {group: flats}\n", "powerflow.group", "no site group named 'flats'"),
    ("balancing_group: {groups: [homes, shop]}\n", "balancing_group.groups[1]", "'shop'"),
    (
        "ems: {homes: {kind: cems, member_groups: [shops]}, shops: {kind: bems}}\n",
        "ems.shops",
        "belongs to two EMS",
    ),
    (
        "control: {ev_strategy: pv}\nems: {homes: {kind: hems}}\n",
        "ems.homes",
        "also has control.ev_strategy",
    ),
    (
        "control: {ev_strategy: pv}\nvpp: {groups: [shops, homes]}\n",
        "vpp.groups[1]",
        "already has the EV strategy 'pv'",
    ),
    ("weather: {source: epw, file: nowhere.epw}\n", "weather.file", "file not found"),
    ("tariff: {type: dynamic, prices_csv: prices.csv}\n", "tariff.prices_csv", "file not found"),
    ("vpp: {groups: [homes], requests_file: dr.yaml}\n", "vpp.requests_file", "file not found"),
]


@pytest.mark.parametrize("extra,where,words", CASES, ids=[c[1] for c in CASES])
def test_dangling_references_fail_validation_with_file_line_and_path(tmp_path, extra, where, words):
    p = _write(tmp_path, extra)
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert f"{p}:" in msg and f": {where}: " in msg and words in msg, msg
    issue = next(i for i in e.value.issues if i.path == where)
    assert issue.line is not None and issue.line > 12  # in the block that names it


def test_unknown_vehicle_class(tmp_path):
    p = _write(tmp_path, "")
    p.write_text(
        p.read_text().replace(
            "ev: {share: 0.5}", "ev: {share: 0.5, models: {compact_40kwh: 1, tesla: 1}}"
        )
    )
    with pytest.raises(ScenarioError, match=r"sites\[0\]\.ev\.models\.tesla: unknown vehicle"):
        load_scenario(p)


def test_the_cli_refuses_before_running_and_a_valid_reference_passes(tmp_path):
    p = _write(tmp_path, CASES[0][0])
    out = tmp_path / "out"
    for cmd in (["validate", str(p)], ["run", str(p), "--out", str(out), "-q"]):
        r = subprocess.run(
            [sys.executable, "-m", "cps_sim", *cmd],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error:") and "Traceback" not in r.stderr
        assert "vpp.absorb_system_curtailment" in r.stderr
    assert not out.exists()
    (tmp_path / "dr.yaml").write_text("events: []\n")
    load_scenario(_write(tmp_path, "vpp: {groups: [homes, shops], requests_file: dr.yaml}\n"))


def test_scenario_error_never_needs_more_arguments_than_it_is_given():
    """Every ScenarioError in the package is built with a file and a list of issues
    (or through .single with file, path and message), and a bare message still works."""
    bad = []
    for f in (REPO / "cps_sim").rglob("*.py"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            n = len(node.args) + len(node.keywords)
            if isinstance(fn, ast.Name) and fn.id == "ScenarioError" and n != 2:
                bad.append(f"{f.relative_to(REPO)}:{node.lineno}")
            if (
                isinstance(fn, ast.Attribute)
                and fn.attr == "single"
                and isinstance(fn.value, ast.Name)
                and fn.value.id == "ScenarioError"
                and n < 3
            ):
                bad.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert not bad, bad
    e = ScenarioError("vpp needs a system block")
    assert str(e) == "<scenario>: vpp needs a system block" and e.issues == [
        Issue("", "vpp needs a system block")
    ]
