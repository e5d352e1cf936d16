"""Every code block in README.md and docs/*.md runs or validates (issue 10 item 19).

* ``python`` blocks run, in order, in one namespace per file, in a fresh folder that sees
  the repository's ``scenarios/``, ``configs/``, ``devices/``, ``tests/`` and
  ``examples/``;
* ``yaml`` blocks validate: a whole scenario or sweep file as such, a block of scenario
  keys merged into a small scenario whose site groups carry the names it uses, a DR
  events file, a device profile;
* ``bash`` lines that call ``cps-sim`` parse against the real command line (command,
  options, arguments); other lines (pip, apt-get, pytest) are not run here;
* ``text`` and ``json`` blocks are not code (the MQTT payloads of docs/mqtt.md have their
  own tests).

A block may be preceded by an HTML comment that says how it is checked:
``<!-- doc-test: setup: cps-sim ... -->`` runs that command in the folder first (a small
case the example then reads), ``<!-- doc-test: broker -->`` points the example at a
private Mosquitto instead of 127.0.0.1:1883, ``<!-- doc-test: fragment: PATH -->`` merges a
YAML block at PATH of the scenario, ``<!-- doc-test: skip: REASON -->`` skips it with a
reason, and ``<!-- file: PATH -->`` marks a block that is the file PATH (tested as such).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LANGS = {"python", "bash", "yaml", "text", "json"}
FENCE = re.compile(r"^```([\w-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(?:doc-test:\s*)?(setup|broker|fragment|skip|file)\s*:?\s*(.*?)\s*-->")


@dataclass
class Block:
    file: Path
    line: int
    lang: str
    code: str
    markers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").splitlines()
        markers: dict[str, list[str]] = {}
        for prev in reversed(before):
            mm = MARKER.fullmatch(prev.strip())
            if not mm:
                break
            markers.setdefault(mm.group(1), []).insert(0, mm.group(2))
        out.append(Block(path, text[: m.start()].count("\n") + 1, m.group(1), m.group(3), markers))
    return out


ALL = [b for f in FILES for b in blocks(f)]


def by_lang(lang: str) -> list[Block]:
    return [b for b in ALL if b.lang == lang]


def test_every_block_says_what_it_is():
    bad = [f"{b.id}: ```{b.lang}" for b in ALL if b.lang not in LANGS]
    assert not bad, "label each fenced block (python, bash, yaml, text or json): " + str(bad)
    skipped = [b for b in ALL if "skip" in b.markers]
    assert all(b.markers["skip"][0] for b in skipped), "a skip needs a reason"
    assert len(skipped) <= 2, [b.id for b in skipped]  # keep it honest


# ----------------------------------------------------------------------------- yaml

GROUP_KEYS = ("group", "groups", "member_groups", "shared_battery_groups", "expose")


def _group_names(data) -> list[str]:
    names: list[str] = []

    def walk(obj, key=None):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if key == "ems" or (key in GROUP_KEYS and isinstance(v, dict)):
                    names.append(k)
                walk(v, k)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)
        elif isinstance(obj, str) and key in GROUP_KEYS:
            names.append(obj)

    walk(data)
    return list(dict.fromkeys(names)) or ["homes"]


def _base_scenario(names: list[str]) -> dict:
    return {
        "version": 1,
        "name": "doc",
        "start": "2026-04-06T00:00:00+09:00",
        "duration_days": 1,
        "sites": [
            {"name": n, "count": 10, "pv": {}, "battery": {}, "ev": {"share": 1}} for n in names
        ],
    }


def _validate_yaml(b: Block) -> None:
    from cps_sim.experiment.sweep_spec import load_sweep_text
    from cps_sim.scenario.loader import load_scenario_text, parse_yaml
    from cps_sim.scenario.schema import Scenario

    where = b.id
    data, _ = parse_yaml(b.code, where)
    if "fragment" in b.markers:
        from cps_sim.scenario.loader import _parse_path

        base = _base_scenario(_group_names(data))
        path = _parse_path(b.markers["fragment"][0])
        cur = base
        for part in path:
            cur = cur[part]
        cur.update(data)
        load_scenario_text(yaml.safe_dump(base), where)
        return
    assert isinstance(data, dict), f"{where}: a YAML block should be a mapping"
    if "sites" in data and "start" in data:
        load_scenario_text(b.code, where)
    elif "scenario" in data and ({"parameters", "design", "set"} & set(data)):
        load_sweep_text(b.code, where)
    elif set(data) == {"events"}:
        from cps_sim.market.dr import events_from_records

        events_from_records(data["events"], where, "Asia/Tokyo")
    elif "kinds" in data and "name" in data:
        import tempfile

        from cps_sim.bridge.profile_spec import read_profile_file

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / f"{data['name']}.yaml"
            p.write_text(b.code, encoding="utf-8")
            read_profile_file(p)
    elif set(data) <= set(Scenario.model_fields):  # scenario keys: merged into a scenario
        if "sites" in data:
            base = {**_base_scenario([]), **data}
        else:
            base = {**_base_scenario(_group_names(data)), **data}
        load_scenario_text(yaml.safe_dump(base, allow_unicode=True), where)
    else:
        raise AssertionError(f"{where}: unknown kind of YAML block (keys {sorted(data)})")


@pytest.mark.parametrize("b", by_lang("yaml"), ids=[b.id for b in by_lang("yaml")])
def test_yaml_blocks_validate(b: Block):
    if "skip" in b.markers:
        pytest.skip(b.markers["skip"][0])
    _validate_yaml(b)


# ----------------------------------------------------------------------------- bash


def _commands(code: str) -> list[list[str]]:
    """The cps-sim invocations of a shell block (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", code)
    joined = re.sub(r"<[^<>\n]*>", "PLACEHOLDER", joined)  # results/<run A> is one argument
    out = []
    for line in joined.splitlines():
        for part in re.split(r"&&|;", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError as exc:
                raise AssertionError(f"cannot split {part!r}: {exc}") from None
            if words and words[0] == "cps-sim":
                out.append(words[1:])
    return out


def _parse_cli(args: list[str]) -> None:
    import typer

    from cps_sim.cli import app

    group = typer.main.get_command(app)
    ctx = group.make_context("cps-sim", list(args))
    protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
    name, cmd, rest = group.resolve_command(ctx, [*protected, *ctx.args])
    cmd.make_context(name, rest, parent=ctx)


@pytest.mark.parametrize("b", by_lang("bash"), ids=[b.id for b in by_lang("bash")])
def test_cps_sim_lines_in_shell_blocks_parse(b: Block):
    for args in _commands(b.code):
        try:
            _parse_cli(args)
        except Exception as exc:  # click's UsageError and friends
            raise AssertionError(f"{b.id}: `cps-sim {shlex.join(args)}`: {exc}") from None


def test_shell_blocks_call_cps_sim():
    assert sum(len(_commands(b.code)) for b in by_lang("bash")) >= 25


# ----------------------------------------------------------------------------- python

RUNNER = textwrap.dedent("""\
    import json, sys, traceback
    blocks = json.load(open(sys.argv[1]))
    ns = {"__name__": "__doc_example__"}
    for b in blocks:
        try:
            exec(compile(b["code"], b["id"], "exec"), ns)
        except BaseException:
            traceback.print_exc()
            print("FAILED " + b["id"], file=sys.stderr)
            sys.exit(1)
    print("ran", len(blocks))
    """)


def _env() -> dict[str, str]:
    env = {**os.environ, "CI": "true", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PY_FILES = sorted({b.file for b in by_lang("python")})


@pytest.mark.parametrize("doc", PY_FILES, ids=[str(f.relative_to(REPO)) for f in PY_FILES])
def test_python_blocks_run(doc: Path, tmp_path: Path, request):
    todo = [b for b in by_lang("python") if b.file == doc]
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("scenarios", "configs", "devices", "tests", "examples", "benchmarks"):
        if (REPO / name).exists():
            (ws / name).symlink_to(REPO / name)
    run = []
    broker = None
    for b in todo:
        if "skip" in b.markers or "file" in b.markers:
            continue  # a skip says why; a file block is tested as that file
        for cmd in b.markers.get("setup", []):
            words = shlex.split(cmd)
            assert words[0] == "cps-sim", cmd
            r = subprocess.run(
                [sys.executable, "-m", "cps_sim", *words[1:]],
                cwd=ws,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert r.returncode == 0, f"{b.id}: setup `{cmd}` failed: {r.stderr}"
        code = b.code
        if "broker" in b.markers:
            if broker is None:
                broker = request.getfixturevalue("mosquitto")
            code = code.replace("127.0.0.1:1883", f"{broker.host}:{broker.port}")
        run.append({"id": b.id, "code": code})
    if not run:
        pytest.skip("every python block of this file is marked")
    (tmp_path / "blocks.json").write_text(json.dumps(run))
    (tmp_path / "runner.py").write_text(RUNNER)
    r = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json")],
        cwd=ws,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"ran {len(run)}" in r.stdout


def test_every_python_block_is_run_or_says_why():
    for b in by_lang("python"):
        assert "skip" not in b.markers or b.markers["skip"][0], b.id


# ----------------------------------------------------------------------------- links


def test_paths_the_docs_and_scenarios_point_to_exist():
    """docs/scenarios.md and friends: every docs/*.md named in a scenario, README or doc."""
    texts = {
        p: p.read_text(encoding="utf-8")
        for p in [*FILES, *(REPO / "scenarios").glob("*.yaml"), *(REPO / "configs").rglob("*.yaml")]
    }
    missing = []
    for p, t in texts.items():
        for ref in re.findall(
            r"(?<![\w/.])((?:docs|scenarios|configs|benchmarks)/[\w./-]+"
            r"\.(?:md|yaml|py))",
            t,
        ):
            if not (REPO / ref).exists():
                missing.append(f"{p.relative_to(REPO)}: {ref}")
        if p.suffix == ".md":
            for ref in re.findall(r"\]\(([^)#:\s]+\.md)(?:#[^)]*)?\)", t):
                if not (p.parent / ref).exists():
                    missing.append(f"{p.relative_to(REPO)}: ({ref})")
    assert not missing, missing
