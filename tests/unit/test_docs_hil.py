"""docs/hil.md: the controller shown is the file a test runs; every YAML example is a valid
bridge block; the options it lists are the CLI's."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

from cps_sim.scenario.bridge_schema import BridgeSpec

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "hil.md").read_text()


def test_controller_in_docs_is_the_tested_file():
    m = re.search(r"<!-- file: (\S+) -->\n```python\n(.*?)```", DOC, re.S)
    assert m
    assert (REPO / m.group(1)).read_text() == m.group(2)
    code = [
        ln for ln in m.group(2).splitlines() if ln.strip() and not ln.startswith(('"""', "at 3"))
    ]
    assert len(code) <= 20


def test_yaml_examples_validate():
    blocks = [
        b
        for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S)
        if textwrap.dedent(b).startswith(("bridge:", "ems:"))
    ]
    assert len(blocks) >= 2
    for text in blocks:
        doc = yaml.safe_load(textwrap.dedent(text))
        BridgeSpec.model_validate(doc["bridge"])


def test_cli_options_documented():
    from typer.testing import CliRunner

    from cps_sim.cli import app

    out = CliRunner().invoke(app, ["hil", "--help"], env={"COLUMNS": "200"}).output
    for opt in (
        "--broker",
        "--speed",
        "--duration",
        "--record",
        "--emulate",
        "--out",
        "--set",
        "--quiet",
    ):
        assert opt in out and opt in DOC, opt


def test_validate_runs_the_bridge_cross_checks(tmp_path):
    from typer.testing import CliRunner

    from cps_sim.cli import app

    bad = yaml.safe_load((REPO / "scenarios" / "hil_demo.yaml").read_text())
    bad["bridge"]["devices"][0]["binds"]["site"] = 99
    bad["bridge"]["expose"] = ["homes"]  # has a HEMS
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    r = CliRunner().invoke(app, ["validate", str(p)])
    assert r.exit_code == 2
    assert "bridge.devices[0].binds.site: group 'homes' has 8 sites" in r.output
    assert "bridge.expose[0].group: group 'homes' already has a controller" in r.output
    ok = CliRunner().invoke(app, ["validate", str(REPO / "scenarios" / "hil_demo.yaml")])
    assert ok.exit_code == 0, ok.output
