"""Sweep designs and sweep-file expansion: the points a sweep runs, and its errors."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.designs import (
    Param,
    grid_points,
    lhs_points,
    random_points,
    replicate_seeds,
)
from cps_sim.experiment.sweep_spec import expand, load_sweep, load_sweep_text, make_run_id

# ----------------------------------------------------------------------------- designs


def test_grid_is_full_factorial_with_last_parameter_fastest():
    a = Param("a", values=(1, 2))
    b = Param("b", low=0.0, high=1.0, num=3)
    pts = grid_points([a, b])
    # 2 × 3 = 6 points; b (last) varies fastest; linspace(0, 1, 3) = 0, 0.5, 1
    assert pts == [
        {"a": 1, "b": 0.0},
        {"a": 1, "b": 0.5},
        {"a": 1, "b": 1.0},
        {"a": 2, "b": 0.0},
        {"a": 2, "b": 0.5},
        {"a": 2, "b": 1.0},
    ]


def test_grid_log_and_integer_spacing():
    # geomspace(1, 100, 3) = 1, 10, 100
    assert [
        p["x"] for p in grid_points([Param("x", low=1, high=100, num=3, log=True)])
    ] == pytest.approx([1.0, 10.0, 100.0])
    # linspace(1, 10, 4) = 1, 4, 7, 10 -> already whole numbers, returned as int
    pts = grid_points([Param("n", low=1, high=10, num=4, integer=True)])
    assert [p["n"] for p in pts] == [1, 4, 7, 10]
    assert all(isinstance(p["n"], int) for p in pts)


def test_random_design_is_reproducible_bounded_and_seed_dependent():
    params = [Param("x", low=2.0, high=5.0), Param("c", values=("a", "b", "c"))]
    one = random_points(params, 50, seed=1)
    assert one == random_points(params, 50, seed=1)
    assert one != random_points(params, 50, seed=2)
    assert all(2.0 <= p["x"] < 5.0 for p in one)
    assert {p["c"] for p in one} == {"a", "b", "c"}


def test_lhs_puts_exactly_one_point_in_each_stratum():
    n = 20
    params = [Param("x", low=0.0, high=10.0), Param("y", low=1.0, high=1000.0, log=True)]
    pts = lhs_points(params, n, seed=3)
    # x: strata of width 10/20 = 0.5 -> indices 0..19 each exactly once
    sx = sorted(int(p["x"] // 0.5) for p in pts)
    assert sx == list(range(n))
    # y is log-spaced: strata are equal in log10 space (3 decades / 20)
    sy = sorted(int((math.log10(p["y"]) - 0.0) // (3 / n)) for p in pts)
    assert sy == list(range(n))
    assert pts == lhs_points(params, n, seed=3)


def test_lhs_uses_every_category_equally_often():
    pts = lhs_points([Param("s", values=("greedy", "pv_surplus", "tou", "off"))], 12, seed=0)
    counts = {v: sum(p["s"] == v for p in pts) for v in ("greedy", "pv_surplus", "tou", "off")}
    assert counts == {"greedy": 3, "pv_surplus": 3, "tou": 3, "off": 3}


@settings(max_examples=50, deadline=None)
@given(low=st.floats(-1e6, 1e6), width=st.floats(0, 1e6), u=st.floats(0, 1, exclude_max=True))
def test_continuous_mapping_stays_in_range(low, width, u):
    p = Param("x", low=low, high=low + width)
    assert low <= p.from_unit(u) <= low + width


@settings(max_examples=50, deadline=None)
@given(lo=st.integers(-50, 50), span=st.integers(0, 50), u=st.floats(0, 1, exclude_max=True))
def test_integer_mapping_is_uniform_over_whole_numbers(lo, span, u):
    p = Param("n", low=lo, high=lo + span, integer=True)
    v = p.from_unit(u)
    assert isinstance(v, int) and lo <= v <= lo + span
    # stratum k of span+1 equal strata maps to lo + k
    assert v == lo + min(int(u * (span + 1)), span)


def test_replicate_seeds_keep_the_base_seed_first_and_are_distinct():
    seeds = replicate_seeds(42, 5)
    assert seeds[0] == 42
    assert len(set(seeds)) == 5
    assert seeds == replicate_seeds(42, 5)
    assert replicate_seeds(42, 3) == seeds[:3]  # adding replications keeps earlier ones
    assert all(0 <= s < 2**63 for s in seeds)


# ----------------------------------------------------------------------------- sweep files

SCENARIO = textwrap.dedent("""\
    version: 1
    name: tiny
    seed: 7
    start: 2026-04-01T00:00:00+09:00
    duration_days: 1
    tick_s: 3600
    sites:
      - name: homes
        count: 3
        pv: {share: 0.5, capacity_kw: 4}
        battery: {share: 0.5, capacity_kwh: 10}
    """)


@pytest.fixture
def scen_dir(tmp_path: Path) -> Path:
    (tmp_path / "scen.yaml").write_text(SCENARIO)
    return tmp_path


def _sweep(dirpath: Path, body: str) -> Path:
    p = dirpath / "sweep.yaml"
    p.write_text(textwrap.dedent(body))
    return p


def test_expand_grid_with_replications(scen_dir):
    f = _sweep(
        scen_dir,
        """\
        name: s
        scenario: scen.yaml
        parameters:
          - {name: pv, path: "sites[0].pv.share", values: [0.2, 0.8]}
          - {path: sites.0.battery.capacity_kwh, low: 5, high: 15, num: 3}
        replications: 2
        """,
    )
    plan = expand(load_sweep(f), f)
    assert len(plan.runs) == 2 * 3 * 2
    assert plan.param_columns == ["pv", "sites_0_battery_capacity_kwh"]
    r0 = plan.runs[0]
    assert r0.params == {"pv": 0.2, "sites_0_battery_capacity_kwh": 5.0}
    assert r0.scenario["sites"][0]["pv"]["share"] == 0.2
    assert r0.scenario["sites"][0]["battery"]["capacity_kwh"] == 5.0
    assert [r.seed for r in plan.runs[:2]] == replicate_seeds(7, 2)
    assert [r.scenario["seed"] for r in plan.runs[:2]] == replicate_seeds(7, 2)
    ids = [r.run_id for r in plan.runs]
    assert len(set(ids)) == len(ids)
    # deterministic: expanding again gives the same ids
    assert ids == [r.run_id for r in expand(load_sweep(f), f).runs]


def test_run_id_depends_on_scenario_params_seed_and_version():
    scen = {"name": "x", "sites": [{"count": 1}]}
    base = make_run_id(scen, {"a": 1}, 1, "0.1.0")
    assert base == make_run_id({"sites": [{"count": 1}], "name": "x"}, {"a": 1}, 1, "0.1.0")
    assert base != make_run_id({"name": "x", "sites": [{"count": 2}]}, {"a": 1}, 1, "0.1.0")
    assert base != make_run_id(scen, {"a": 2}, 1, "0.1.0")
    assert base != make_run_id(scen, {"a": 1}, 2, "0.1.0")
    assert base != make_run_id(scen, {"a": 1}, 1, "0.2.0")


def test_fixed_overrides_and_seed_as_parameter(scen_dir):
    f = _sweep(
        scen_dir,
        """\
        name: s
        scenario: scen.yaml
        set: ["sites[0].count=2"]
        parameters:
          - {path: seed, values: [1, 2, 3]}
        """,
    )
    plan = expand(load_sweep(f), f)
    assert [r.seed for r in plan.runs] == [1, 2, 3]
    assert all(r.scenario["sites"][0]["count"] == 2 for r in plan.runs)


def test_out_of_range_point_is_marked_invalid_not_fatal(scen_dir):
    f = _sweep(
        scen_dir,
        """\
        name: s
        scenario: scen.yaml
        parameters:
          - {name: cap, path: "sites[0].battery.capacity_kwh", values: [10, -5]}
        """,
    )
    plan = expand(load_sweep(f), f)
    assert plan.runs[0].error is None
    assert "capacity_kwh" in plan.runs[1].error and "> 0" in plan.runs[1].error


def test_schema_errors_name_file_line_and_path():
    text = textwrap.dedent("""\
        name: s
        scenario: scen.yaml
        design: {method: lhs}
        parameters:
          - {path: "sites[0].pv.share", low: 0.9, high: 0.1}
          - {path: "sites[0].pv.capacity_kw", vals: [1]}
        """)
    with pytest.raises(ScenarioError) as ei:
        load_sweep_text(text, "sweep.yaml")
    msg = str(ei.value)
    assert "sweep.yaml:5:" in msg and "parameters[0]" in msg and "low must be <= high" in msg
    assert "sweep.yaml:6:" in msg and "parameters[1].vals" in msg and "did you mean" in msg


def test_missing_samples_and_unknown_method_are_reported():
    with pytest.raises(ScenarioError, match=r"design.samples is required"):
        load_sweep_text("name: s\nscenario: a.yaml\ndesign: {method: random}\n", "f.yaml")
    with pytest.raises(ScenarioError, match=r"f.yaml:3:\d+: design.method"):
        load_sweep_text("name: s\nscenario: a.yaml\ndesign: {method: sobol}\n", "f.yaml")


def test_path_not_in_scenario_is_an_error_of_the_sweep_file(scen_dir):
    f = _sweep(
        scen_dir,
        """\
        name: s
        scenario: scen.yaml
        parameters:
          - {path: "sites[0].pv.shares", values: [0.1]}
        """,
    )
    with pytest.raises(ScenarioError) as ei:
        expand(load_sweep(f), f)
    msg = str(ei.value)
    assert f"{f}:4:" in msg and "parameters[0].path" in msg and "share" in msg


def test_list_index_out_of_range_is_an_error_of_the_sweep_file(scen_dir):
    f = _sweep(
        scen_dir,
        """\
        name: s
        scenario: scen.yaml
        parameters:
          - {path: "sites[3].pv.share", values: [0.1]}
        """,
    )
    with pytest.raises(ScenarioError, match=r"parameters\[0\]\.path.*no list item 3"):
        expand(load_sweep(f), f)


def test_missing_scenario_file_points_at_the_scenario_key(scen_dir):
    f = _sweep(scen_dir, "name: s\nscenario: nope.yaml\n")
    with pytest.raises(
        ScenarioError,
        match=r"sweep.yaml:2:\d+: scenario: 'nope.yaml': file "
        "not found",
    ):
        expand(load_sweep(f), f)


def test_random_categorical_duplicates_run_once(scen_dir):
    f = _sweep(
        scen_dir,
        """\
        name: s
        scenario: scen.yaml
        design: {method: random, samples: 30, seed: 1}
        parameters:
          - {path: "sites[0].pv.share", values: [0.1, 0.9]}
        """,
    )
    plan = expand(load_sweep(f), f)
    assert len(plan.runs) == 2 and plan.duplicates == 28
    assert np.unique([r.run_id for r in plan.runs]).size == 2


def test_catalog_columns_of_mixed_or_structured_values_get_one_type():
    import pandas as pd

    from cps_sim.experiment.catalog import _uniform_column

    assert _uniform_column(pd.Series([1, 2.5])).tolist() == [1, 2.5]
    assert _uniform_column(pd.Series([5, "auto"], dtype=object)).tolist() == ["5", "auto"]
    dist = {"distribution": "uniform", "low": 3, "high": 6}
    out = _uniform_column(pd.Series([dist, 4.0], dtype=object)).tolist()
    assert out == ['{"distribution": "uniform", "high": 6, "low": 3}', "4.0"]
