"""YAML 1.1 words are text, booleans are strict, numbers never take booleans (issue 10 item 8).

The class of the problem: every field of every model of the scenario and
sweep schemas, enumerated from the schema itself.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from cps_sim.experiment.sweep_spec import SweepFile
from cps_sim.scenario.loader import load_scenario, parse_yaml
from cps_sim.scenario.schema import Scenario
from cps_sim.scenario.strict_types import (
    _strip,
    _union_args,
    accepts_bool,
    field_annotations,
    kind_issues,
)

REPO = Path(__file__).resolve().parents[2]
YAML11_BOOLS = [
    "y",
    "Y",
    "yes",
    "Yes",
    "YES",
    "n",
    "N",
    "no",
    "No",
    "NO",
    "on",
    "On",
    "ON",
    "off",
    "Off",
    "OFF",
]


def _members(ann):
    ann = _strip(ann)
    args = _union_args(ann)
    if args is not None:
        return args
    origin = typing.get_origin(ann)
    if origin in (list, tuple, set, dict):
        return typing.get_args(ann)
    return (ann,)


def all_fields() -> list[tuple[str, str, object]]:
    """(model, field, annotation) of every model reachable from Scenario and SweepFile."""
    seen: set[type] = set()
    out = []
    todo: list[type[BaseModel]] = [Scenario, SweepFile]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for name, (_, ann) in field_annotations(m).items():
            out.append((m.__name__, name, ann))
            stack = [ann]
            while stack:
                for a in _members(stack.pop()):
                    if isinstance(a, type) and issubclass(a, BaseModel):
                        todo.append(a)
                    elif (
                        typing.get_origin(_strip(a)) is not None
                        and typing.get_origin(_strip(a)) is not typing.Literal
                    ):
                        stack.append(a)
    return out


FIELDS = all_fields()


def _is_bool_only(ann) -> bool:
    return set(_members(ann)) <= {bool, type(None)} and bool in _members(ann)


def _literals(ann) -> list:
    out = []
    for a in _members(ann):
        if typing.get_origin(_strip(a)) is typing.Literal:
            out += [v for v in typing.get_args(_strip(a)) if isinstance(v, str)]
        elif typing.get_origin(_strip(a)) in (list, dict):
            out += _literals(a)
    return out


def test_the_schema_has_the_field_kinds_this_test_covers():
    kinds = {"bool": 0, "number": 0, "choice": 0}
    for _, _, ann in FIELDS:
        if _is_bool_only(ann):
            kinds["bool"] += 1
        elif _literals(ann):
            kinds["choice"] += 1
        elif not accepts_bool(ann):
            kinds["number"] += 1
    assert len(FIELDS) > 200 and all(n > 5 for n in kinds.values()), kinds


@pytest.mark.parametrize("model,field,ann", FIELDS, ids=[f"{m}.{f}" for m, f, _ in FIELDS])
def test_every_field_takes_only_its_own_kind(model, field, ann):
    if _is_bool_only(ann):
        for word in ["yes", "no", "on", "off", 1, 0, "true"]:
            assert kind_issues(word, ann, (field,)), f"{model}.{field} took {word!r}"
        assert kind_issues(True, ann) == [] and kind_issues(False, ann) == []
    elif not accepts_bool(ann):
        for b in (True, False):
            issues = kind_issues(b, ann, (field,))
            assert issues and issues[0][0] == (field,), f"{model}.{field} took {b}"
            assert "boolean" in issues[0][1]


def _choice_fields():
    return [(m, f, v) for m, f, ann in FIELDS for v in _literals(ann)]


@pytest.mark.parametrize(
    "model,field,value", _choice_fields(), ids=[f"{m}.{f}={v}" for m, f, v in _choice_fields()]
)
def test_every_choice_can_be_typed_unquoted_in_yaml(model, field, value):
    # ev_strategy: off, mode: on, protocol: 5 ...: what the user types is what the schema gets
    from cps_sim.scenario.strict_types import check

    data, _ = parse_yaml(f"{field}: {value}\n")
    ann = next(a for m, f, a in FIELDS if (m, f) == (model, field))
    if typing.get_origin(_strip(ann)) in (list, dict):
        return  # choices inside a list or mapping: covered by the scalar case
    owner = type("Owner", (BaseModel,), {"__annotations__": {field: ann}})
    assert check(data, owner) == []
    assert data[field] == value


def test_yaml_11_boolean_words_are_text_and_base_60_is_not_a_number():
    for w in YAML11_BOOLS:
        data, _ = parse_yaml(f"a: {w}\nb: [{w}]\n")
        assert data == {"a": w, "b": [w]}
    data, _ = parse_yaml("a: true\nb: False\nc: 7:30\nd: 1e3\ne: 0.5\nf: 12")
    assert data == {"a": True, "b": False, "c": "7:30", "d": 1000.0, "e": 0.5, "f": 12}


def _scenario(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


BASE = """\
version: 1
name: kinds
start: 2026-04-06T00:00:00+09:00
duration_days: 1
sites:
  - name: homes
    count: 2
    battery: {capacity_kwh: 5}
    ev: {share: 0.5}
"""


def test_ev_strategy_off_in_the_file_and_with_set(tmp_path: Path, capsys):
    from tests.e2e.cli_helpers import invoke

    sc = load_scenario(_scenario(tmp_path, BASE + "control: {ev_strategy: off}\n"))
    assert sc.control.ev_strategy == "off"
    sc = load_scenario(_scenario(tmp_path, BASE), ["control.ev_strategy=off"])
    assert sc.control.ev_strategy == "off"
    for strategy in ("off", "now", "min_pv", "pv", "load", "cost", "v2h", "v2g"):
        # cps-sim validate in this process (the console entry point, as a user types it)
        code, out, err = invoke(
            ["validate", tmp_path / "s.yaml", "--set", f"control.ev_strategy={strategy}"], capsys
        )
        assert code == 0 and "OK" in out, (strategy, err)


@pytest.mark.parametrize(
    "text,where,words",
    [
        ("    count: true\n", "sites[0].count", ["whole number", "boolean true"]),
        (
            "    battery: {capacity_kwh: 5, ageing: yes}\n",
            "sites[0].battery.ageing",
            ["true or false", "'yes'"],
        ),
        (
            "    battery: {capacity_kwh: true}\n",
            "sites[0].battery.capacity_kwh",
            ["number or a distribution", "boolean true"],
        ),
        ("    load: {profile: false}\n", "sites[0].load.profile", ["one of", "quote it"]),
        ("    ev: {trips: {weekday: {departure_h: 7:30}}}\n", "departure_h", ["7:30"]),
    ],
)
def test_wrong_kinds_are_refused_with_file_line_and_path(tmp_path: Path, text, where, words):
    from cps_sim.core.errors import ScenarioError

    base = BASE.replace("    count: 2\n", "") if "count" in text else BASE
    base = base.replace("    battery: {capacity_kwh: 5}\n", "") if "battery" in text else base
    base = base.replace("    ev: {share: 0.5}\n", "") if "ev:" in text else base
    with pytest.raises(ScenarioError) as e:
        load_scenario(_scenario(tmp_path, base + text))
    msg = str(e.value)
    assert "s.yaml:" in msg and where in msg
    for w in words:
        assert w in msg, msg


def test_sweep_values_keep_their_kind(tmp_path: Path):
    from cps_sim.experiment.sweep_spec import expand, load_sweep

    _scenario(tmp_path, BASE)
    sw = tmp_path / "sw.yaml"
    sw.write_text(
        "name: k\nscenario: s.yaml\nparameters:\n"
        "  - {path: control.ev_strategy, values: [off, now, pv]}\n"
        "  - {path: 'sites[0].count', values: [2, true]}\n"
    )
    plan = expand(load_sweep(sw), sw)
    by = {(r.params["control_ev_strategy"], r.params["sites_0_count"]): r for r in plan.runs}
    assert by[("off", 2)].error is None
    assert by[("off", 2)].scenario["control"]["ev_strategy"] == "off"
    assert "boolean true" in by[("now", True)].error
