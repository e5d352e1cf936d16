"""A file that validates must run: bounded dates, numbers and sweep sizes (issue 10 item 9),
and truncated, not clipped, distributions (item 13).
"""

from __future__ import annotations

import math
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError
from scipy import stats

from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.sweep_spec import SweepFile, load_sweep_text
from cps_sim.scenario.distributions import LogNormal, Normal, sample
from cps_sim.scenario.loader import load_scenario, load_scenario_text
from cps_sim.scenario.schema import Scenario
from cps_sim.scenario.strict_types import _strip, _union_args, field_annotations

REPO = Path(__file__).resolve().parents[2]


def _members(ann):
    ann = _strip(ann)
    args = _union_args(ann)
    if args is not None:
        return args
    if typing.get_origin(ann) in (list, tuple, set, dict):
        return typing.get_args(ann)
    return (ann,)


def _models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo: list = [Scenario, SweepFile]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.append(m)
        for _, ann in field_annotations(m).values():
            stack = [ann]
            while stack:
                for a in _members(stack.pop()):
                    if isinstance(a, type) and issubclass(a, BaseModel):
                        todo.append(a)
                    elif typing.get_origin(_strip(a)) not in (None, typing.Literal):
                        stack.append(a)
    return seen


def _numeric_fields() -> list[tuple[type[BaseModel], str]]:
    out = []
    for m in _models():
        for name, (_, ann) in field_annotations(m).items():
            mem = set(_members(ann))
            if (
                mem & {int, float}
                or any(isinstance(a, type) and a.__name__ == "Normal" for a in mem)
            ) and typing.get_origin(_strip(ann)) not in (list, dict, tuple):
                out.append((m, name))
    return out


NUMERIC = _numeric_fields()


def test_the_schema_has_many_numeric_fields():
    assert len(NUMERIC) > 150


@pytest.mark.parametrize("model,field", NUMERIC, ids=[f"{m.__name__}.{f}" for m, f in NUMERIC])
def test_every_number_has_a_physical_upper_and_lower_bound(model, field):
    ann = field_annotations(model)[field][1]
    is_int = int in _members(ann) and float not in _members(ann)
    for huge in (10**300, -(10**300)) if is_int else (1e300, -1e300):
        with pytest.raises(ValidationError) as e:
            model.model_validate({field: huge})
        locs = [
            tuple(p for p in err["loc"] if p not in ("float", "int"))[:1]
            for err in e.value.errors()
            if err["type"] != "missing"
        ]
        # a bound checked by a model validator is reported at the model, naming the field
        locs += [
            (field,)
            for err in e.value.errors()
            if err["loc"] == () and field in str(err.get("msg", ""))
        ]
        assert (field,) in locs, f"{model.__name__}.{field} accepts {huge:g}"


TINY = """\
version: 1
name: t
start: 2026-04-06T00:00:00+09:00
duration_days: 1
tick_s: 3600
sites:
  - name: homes
    count: 2
"""


def test_a_1e300_kw_pv_system_does_not_validate():
    with pytest.raises(ScenarioError, match=r"pv\.capacity_kw: must be <= 1e\+06"):
        load_scenario_text(TINY + "    pv: {capacity_kw: 1e300}\n", "s.yaml")


def test_unbounded_tails_are_truncated_at_the_field_bound_or_refused():
    # a log-normal without max: its tail above 1 TWh/a is negligible, so it is cut there
    sc = load_scenario_text(
        TINY + "    load: {annual_kwh: {distribution: lognormal, mean: 4300, cv: 0.3}}\n", "s.yaml"
    )
    assert sc.sites[0].load.annual_kwh.max == 1e9
    # a tail that matters is an error that asks for max
    with pytest.raises(ScenarioError, match="give 'max'"):
        load_scenario_text(
            TINY + "    pv: {capacity_kw: {distribution: normal, mean: 9e5, std: 2e5, min: 1}}\n",
            "s.yaml",
        )


@pytest.mark.parametrize(
    "start,word",
    [
        ("2026-02-30T00:00:00+09:00", "not a valid date/time"),
        ("2026-13-01T00:00:00+09:00", "start"),
        ("2300-01-01T00:00:00+09:00", "between 1900-01-01 and 2200-01-01"),
        ("1850-01-01T00:00:00+09:00", "between 1900-01-01 and 2200-01-01"),
        ("9999-12-31T23:59:59-12:00", "between 1900-01-01 and 2200-01-01"),
    ],
)
def test_dates_that_cannot_be_simulated_are_refused_with_their_line(tmp_path, start, word):
    p = tmp_path / "s.yaml"
    p.write_text(TINY.replace("2026-04-06T00:00:00+09:00", start))
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert f"{p}:3:" in str(e.value) and word in str(e.value)
    with pytest.raises(ScenarioError, match=word):  # the same through --set
        load_scenario_text(TINY, "t.yaml", [f"start={start}"])


@pytest.mark.parametrize("start", ["1900-01-01T09:00:00+09:00", "2199-12-31T00:00:00+09:00"])
def test_the_ends_of_the_allowed_calendar_run(tmp_path, start):
    out = tmp_path / "r"
    p = tmp_path / "s.yaml"
    p.write_text(
        TINY.replace("2026-04-06T00:00:00+09:00", start)
        + "    pv: {capacity_kw: 4}\n    ev: {share: 1}\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "run",
            str(p),
            "--out",
            str(out),
            "-q",
            "--set",
            "duration_days=2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "kpis.json").is_file()


SWEEP = """\
name: s
scenario: s.yaml
"""


@pytest.mark.parametrize(
    "body,word",
    [
        (
            "parameters:\n"
            + "".join(
                f"  - {{name: p{i}, path: 'sites[0].count', low: 1, high: 9, num: 1000}}\n"
                for i in range(3)
            ),
            "1,000,000,000 runs",
        ),
        (
            "design: {method: lhs, samples: 100000}\nparameters:\n"
            "  - {name: a, path: 'sites[0].count', low: 1, high: 9}\nreplications: 2\n",
            "200,000 runs",
        ),
        ("seeds: [1, -1]\n", "must be >= 0"),
        ("seeds: [1, 9223372036854775808]\n", "must be < "),
        ("seeds: [3, 3]\n", "repeated: [3]"),
        ("seeds: [true]\n", "boolean"),
    ],
)
def test_sweep_sizes_and_seeds_are_checked_before_expanding(body, word):
    with pytest.raises(ScenarioError, match=word.replace("[", r"\[").replace("]", r"\]")):
        load_sweep_text(SWEEP + body, "sw.yaml")


# ----------------------------------------------------------------------------- item 13


@pytest.mark.parametrize(
    "dist",
    [
        Normal(distribution="normal", mean=7.5, std=1.5, min=6, max=10),
        Normal(distribution="normal", mean=0.0, std=1.0, min=-0.5, max=3.0),
        Normal(distribution="normal", mean=0.0, std=1.0, min=4.0),  # far tail
        LogNormal(distribution="lognormal", mean=40.0, cv=0.8, max=100.0),
    ],
    ids=["departure", "asymmetric", "far tail", "lognormal max"],
)
def test_bounded_distributions_are_truncated_not_clipped(dist):
    x = sample(dist, np.random.default_rng(7), 200_000)
    lo, hi = dist.support()
    assert lo <= x.min() and x.max() <= hi
    # clipping would put ~2 % of the draws exactly on a bound
    assert np.count_nonzero(x == lo) == 0 and np.count_nonzero(x == hi) == 0
    # no pile-up in the last 0.1 % of the range either: compare with the truncated density
    if isinstance(dist, Normal):
        a = -math.inf if dist.min is None else (dist.min - dist.mean) / dist.std
        b = math.inf if dist.max is None else (dist.max - dist.mean) / dist.std
        ref = stats.truncnorm(a, b, loc=dist.mean, scale=dist.std)
    else:
        mu, sigma = dist._params()
        b = (math.log(dist.max) - mu) / sigma
        ref = stats.truncnorm(-math.inf, b, loc=mu, scale=sigma)
        x = np.log(x)
    assert stats.kstest(x, ref.cdf).pvalue > 1e-3
    assert abs(x.mean() - ref.mean()) < 5 * ref.std() / math.sqrt(x.size)
    if not isinstance(dist, LogNormal):
        assert dist.mean_value() == pytest.approx(ref.mean(), rel=1e-9)


def test_weekend_departures_do_not_pile_up_at_six(tmp_path):
    """The example of the issue: departure_h normal(7.5, 1.5) with min 6."""
    from cps_sim.scenario.schema import TripDaySpec

    spec = TripDaySpec.model_validate(
        {"departure_h": {"distribution": "normal", "mean": 7.5, "std": 1.5, "min": 6, "max": 12}}
    )
    dep = sample(spec.departure_h, np.random.default_rng(1), 100_000)
    assert np.count_nonzero(dep == 6.0) == 0
    # density just above the bound matches the truncated normal (no spike)
    share = np.mean((dep >= 6.0) & (dep < 6.05))
    ref = stats.truncnorm((6 - 7.5) / 1.5, (12 - 7.5) / 1.5, loc=7.5, scale=1.5)
    assert share == pytest.approx(ref.cdf(6.05), rel=0.15)


def test_truncation_is_deterministic_and_appends_nothing_to_other_streams():
    d = Normal(distribution="normal", mean=7.5, std=1.5, min=6, max=10)
    a = sample(d, np.random.default_rng(3), 1000)
    b = sample(d, np.random.default_rng(3), 1000)
    assert np.array_equal(a, b)
    # the first 100 of 1000 are the 100 of a population of 100 (one uniform per draw)
    assert np.array_equal(sample(d, np.random.default_rng(3), 100), a[:100])
