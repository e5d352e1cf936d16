"""``expect:``: the expression language, its evaluation (offline and live) and its errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.expect import (
    ERROR,
    FAILED,
    PASSED,
    PENDING,
    VACUOUS,
    ExpectationChecker,
    check_run,
)
from cps_sim.scenario.expect_lang import ExpectError, Vocabulary, compile_expectation, parse
from cps_sim.scenario.loader import load_scenario_text
from tests.conftest import scenario

TICK_S = 900.0
COLUMNS = frozenset({"grid_import_w", "grid_export_w", "load_w", "battery_soc_mean"})


def vocab(**kw) -> Vocabulary:
    base = dict(
        kpis=frozenset({"self_sufficiency", "cost_jpy", "grid_import_kwh"}),
        columns=COLUMNS,
        group_columns={"homes": frozenset({"load_w"})},
        scenario={"control": {"ev_strategy": "load"}, "sites": [{"count": 4}]},
        exact=True,
    )
    base.update(kw)
    return Vocabulary(**base)


def checker(items, **kw) -> ExpectationChecker:
    return ExpectationChecker(items=items, vocabulary=vocab(), tick_s=TICK_S, **kw)


def run(items, cols, kpis=None, events=None, groups=None):
    n = len(next(iter(cols.values())))
    c = checker(items)
    c.load(np.arange(n) * TICK_S, cols, groups, events)
    return c.finish(kpis or {})


# ----------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    "text",
    [
        "kpi.self_sufficiency >= 0.4",
        "max(grid_import_kw) <= 7",
        "max(grid_import_kw) <= 7 whenever scenario.control.ev_strategy == 'load'",
        "ev.soc_at_departure >= 0.8 for 95% of departures",
        "islanded => grid_export_kw == 0",
        "fallback within 15 s of losing commands",
        "0 <= battery_soc_mean <= 1",
        "not (grid_import_kw > 5 and grid_export_kw > 5)",
        "quantile(grid_import_kw, 0.95) < 2 * mean(grid_import_kw) + 1",
        "-abs(grid_import_kw - grid_export_kw) <= 0 or true",
    ],
)
def test_valid_expressions_parse(text):
    p = parse(text)
    assert p.text == text


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("grid_import_kw = 0", "use =="),
        ("max(grid_import_kw <= 7", "expected ')'"),
        ("max(grid_import_kw)) <= 7", "unexpected ')'"),
        ("kpi.cost_jpy >=", "expected a value"),
        ("x for 120% of ticks", "(0, 100]"),
        ("x for 50% of days", "ticks, departures, arrivals"),
        ("grid_import_kw <= 5%", "only allowed in 'for P% of"),
        ("__import__('os').system('rm -rf /') == 0", "unknown function '__import__'"),
        ("eval('1') == 1", "unknown function 'eval'"),
        ("quantile(grid_import_kw, 1.5) < 1", "q must be a number in [0, 1]"),
        ("max(grid_import_kw, 3) < 1", "takes 1 argument"),
        ("fallback within 15 parsecs of losing commands", "time unit"),
        ("fallback within 15 s of losing the plot", "unknown event"),
        ("a.b.c.", "expected a name after '.'"),
        ("grid_import_kw @ 2", "unexpected character '@'"),
    ],
)
def test_syntax_errors_say_what_and_where(text, fragment):
    with pytest.raises(ExpectError) as ei:
        compile_expectation(text, vocab())
    assert fragment in str(ei.value)
    if text:
        assert ei.value.pos is not None and 0 <= ei.value.pos <= len(text)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "kpi.self_sufficency > 0",
            "unknown KPI 'self_sufficency'; did you mean 'self_sufficiency'",
        ),
        ("max(grid_imprt_kw) < 1", "did you mean 'grid_import_kw'"),
        ("kpi.__class__ == 1", "unknown KPI '__class__'"),
        ("scenario.__dict__ == 1", "no such scenario field"),
        ("scenario.sites[3].count == 1", "no such list item"),
        ("scenario.control == 1", "is a block"),
        ("scenario.control < null", "cannot compare with null"),
        ("grid_import_kw == null", "only scenario values compare with null"),
        ("group.flats.load_kw > 0", "unknown site group 'flats'"),
        ("group.homes.grid_import_kw > 0", "of site group 'homes'"),
        ("ev.soc > 0", "unknown EV event field"),
        ("max(kpi.cost_jpy) > 0", "aggregates a series"),
        ("grid_import_kw + ev.soc_at_departure > 0", "mixes values per tick"),
        ("grid_import_kw", "must be a condition"),
        ("grid_import_kw > 'high'", "cannot compare"),
        ("scenario.control.ev_strategy < 'x'", "needs numbers"),
        ("ev.soc_at_departure > 0.8 for 90% of ticks", "needs an expectation per tick"),
        ("max(grid_import_kw) < 1 for 90% of ticks", "a single value"),
        ("ev.soc_at_departure > 0.5 whenever grid_import_kw > 1", "condition is per tick"),
        ("integral_h(ev.soc_at_departure) > 0", "integrates a per-tick column"),
        ("count(grid_import_kw) > 0", "must be a condition"),
    ],
)
def test_name_and_type_errors(text, fragment):
    with pytest.raises(ExpectError) as ei:
        compile_expectation(text, vocab())
    assert fragment in str(ei.value)


def test_prefix_vocabulary_accepts_feature_families_until_the_run_is_known():
    v = vocab(exact=False, kpi_prefixes=("system_",), column_prefixes=("system_",))
    compile_expectation("kpi.system_co2_t >= 0 and max(system_demand_mw) > 0", v)
    with pytest.raises(ExpectError):
        compile_expectation("kpi.vpp_delivered_kwh >= 0", v)


# ----------------------------------------------------------------------------- evaluation


def test_scalar_kpi_pass_and_fail_report_values():
    rep = run(
        ["kpi.self_sufficiency >= 0.4", "kpi.self_sufficiency >= 0.5"],
        {"grid_import_w": np.zeros(4)},
        {"self_sufficiency": 0.45},
    )
    a, b = rep.results
    assert a.status == PASSED and b.status == FAILED
    assert "kpi.self_sufficiency = 0.45" in b.message
    assert not rep.passed


def test_max_reports_the_time_of_the_peak():
    imp = np.array([1000.0, 2000.0, 9000.0, 3000.0])  # W; peak 9 kW in tick 2
    rep = run(["max(grid_import_kw) <= 7"], {"grid_import_w": imp})
    r = rep.results[0]
    assert r.status == FAILED
    assert r.first_failure_s == 2 * TICK_S
    assert "max(grid_import_kw) = 9 at" in r.message


def test_aggregates_under_whenever_see_only_the_condition_ticks():
    rng = np.random.default_rng(3)
    imp = rng.uniform(0, 10_000, 96)
    soc = rng.uniform(0, 1, 96)
    cond = soc > 0.5
    imp[~cond] += 5000.0  # the ticks outside the condition hold the overall peak
    limit = imp[cond].max() / 1000.0
    assert imp.max() / 1000.0 > limit + 0.01  # unmasked, the first rule would fail
    rep = run(
        [
            f"max(grid_import_kw) <= {float(limit + 1e-9)!r} whenever battery_soc_mean > 0.5",
            f"mean(grid_import_kw) == {float(imp[cond].mean() / 1000)!r} "
            "whenever battery_soc_mean > 0.5",
            f"max(grid_import_kw) < {float(limit - 1e-6)!r} whenever battery_soc_mean > 0.5",
        ],
        {"grid_import_w": imp, "battery_soc_mean": soc},
    )
    assert [r.status for r in rep.results] == [PASSED, PASSED, FAILED]


def test_implication_counts_exactly_the_failing_ticks():
    exp = np.array([0.0, 500.0, 0.0, 200.0, 800.0, 0.0])
    soc = np.array([0.9, 0.9, 0.1, 0.95, 0.2, 0.99])
    rep = run(
        ["battery_soc_mean > 0.5 => grid_export_kw == 0"],
        {"grid_export_w": exp, "battery_soc_mean": soc},
    )
    r = rep.results[0]
    # condition ticks 0, 1, 3, 5; export at 1 and 3 -> 2 failures out of 4, first at tick 1
    assert (r.status, r.failures, r.checked) == (FAILED, 2, 4)
    assert r.first_failure_s == TICK_S
    assert "grid_export_kw = 0.5" in r.message and "battery_soc_mean = 0.9" in r.message


def test_scalar_condition_false_is_vacuous_not_failed():
    rep = run(
        [
            "max(grid_import_kw) <= 0 whenever scenario.control.ev_strategy == 'pv'",
            "max(grid_import_kw) <= 0 whenever scenario.control.ev_strategy == 'load'",
        ],
        {"grid_import_w": np.ones(3)},
    )
    assert [r.status for r in rep.results] == [VACUOUS, FAILED]
    assert rep.passed is False


def events_table(socs, kind="departure", t0=3600.0):
    n = len(socs)
    return pd.DataFrame(
        {
            "time_s": t0 + np.arange(n) * 60.0,
            "kind": [kind] * n,
            "ev_id": np.arange(n),
            "soc": socs,
            "unmet_wh": np.zeros(n),
            "trip_energy_wh": np.zeros(n),
        }
    )


@pytest.mark.parametrize(
    "k_low, share, status", [(1, 95, PASSED), (2, 95, FAILED), (4, 80, PASSED), (5, 80, FAILED)]
)
def test_share_of_departures(k_low, share, status):
    socs = np.r_[np.full(k_low, 0.5), np.full(20 - k_low, 0.9)]  # 20 departures, k_low below
    rep = run(
        [f"ev.soc_at_departure >= 0.8 for {share}% of departures"],
        {"grid_import_w": np.zeros(4)},
        events=events_table(socs),
    )
    r = rep.results[0]
    assert r.status == status
    assert r.values["share"] == pytest.approx(1 - k_low / 20)
    assert r.checked == 20


def test_arrivals_do_not_count_as_departures_and_no_events_is_vacuous():
    ev = pd.concat([events_table([0.1, 0.1], kind="arrival"), events_table([0.9])])
    rep = run(
        [
            "ev.soc_at_departure >= 0.8",
            "ev.soc_at_arrival >= 0.8",
            "mean(ev.soc_at_arrival) == 0.1",
        ],
        {"grid_import_w": np.zeros(2)},
        events=ev,
    )
    assert [r.status for r in rep.results] == [PASSED, FAILED, PASSED]
    rep = run(["ev.soc_at_departure >= 0.8 for 95% of departures"], {"grid_import_w": np.zeros(2)})
    assert rep.results[0].status == VACUOUS


def test_unknown_kpi_of_a_finished_run_is_an_error_not_a_pass():
    rep = run(["kpi.cost_jpy < 10"], {"grid_import_w": np.zeros(2)}, kpis={})
    assert rep.results[0].status == ERROR and not rep.passed


def test_group_columns():
    rep = run(
        ["max(group.homes.load_kw) == 3"],
        {"grid_import_w": np.zeros(3)},
        groups={"homes": {"load_w": np.array([1000.0, 3000.0, 2000.0])}},
    )
    assert rep.results[0].status == PASSED


# ----------------------------------------------------------------------------- temporal


def ctl_events(rows):
    return pd.DataFrame(rows, columns=["time_s", "kind", "source"])


@pytest.mark.parametrize(
    "delay, status", [(0.0, PASSED), (10.0, PASSED), (15.0, PASSED), (15.5, FAILED), (None, FAILED)]
)
def test_fallback_within_window(delay, status):
    rows = [(100.0, "commands_lost", "ev-1")]
    if delay is not None:
        rows.append((100.0 + delay, "fallback", "ev-1"))
    rep = run(
        ["fallback within 15 s of losing commands"],
        {"grid_import_w": np.zeros(4)},
        events=ctl_events(rows),
    )
    assert rep.results[0].status == status


def test_fallback_is_matched_per_source():
    rows = [
        (100.0, "commands_lost", "ev-1"),
        (101.0, "commands_lost", "ev-2"),
        (105.0, "fallback", "ev-2"),
    ]  # ev-1 never falls back
    rep = run(
        ["fallback within 15 s of losing commands"],
        {"grid_import_w": np.zeros(4)},
        events=ctl_events(rows),
    )
    r = rep.results[0]
    assert r.status == FAILED and r.failures == 1
    assert "ev-1" in r.message and r.first_failure_s == 100.0


def test_cause_too_close_to_the_end_is_pending():
    rows = [(3590.0, "commands_lost", "ev-1")]
    rep = run(
        ["fallback within 15 s of losing commands"],
        {"grid_import_w": np.zeros(4)},
        events=ctl_events(rows),
    )  # 4 ticks of 900 s: data ends at 3600 s
    assert rep.results[0].status == PENDING and rep.passed


# ----------------------------------------------------------------------------- live feed


def test_live_feed_reports_a_pointwise_violation_at_its_tick():
    c = checker(["grid_export_kw <= 1", "max(grid_import_kw) <= 7"])
    seen = []
    for k, (imp, exp) in enumerate([(1000, 0), (9000, 0), (1000, 2500), (1000, 0)]):
        seen += c.feed_tick(k * TICK_S, {"grid_import_w": imp, "grid_export_w": exp})
    assert [(v.index, v.time_s) for v in seen] == [(0, 2 * TICK_S)]  # aggregates wait
    rep = c.finish({})
    assert [r.status for r in rep.results] == [FAILED, FAILED]
    assert rep.results[1].first_failure_s == TICK_S


def test_live_temporal_violation_reported_once_when_the_window_closes():
    c = checker(["fallback within 15 s of losing commands"])
    assert c.feed_event({"time_s": 10.0, "kind": "commands_lost", "source": "d1"}) == []
    assert c.feed_event({"time_s": 20.0, "kind": "telemetry", "source": "d1"}) == []
    late = c.feed_event({"time_s": 30.0, "kind": "telemetry", "source": "d1"})
    assert len(late) == 1 and late[0].time_s == 10.0
    assert c.feed_event({"time_s": 40.0, "kind": "fallback", "source": "d1"}) == []
    assert c.finish({}).results[0].status == FAILED


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 20_000), st.floats(0, 20_000)), min_size=1, max_size=40),
    st.floats(0.5, 15),
    st.floats(0, 1),
)
def test_live_and_bulk_agree_and_match_numpy(rows, limit_kw, soc_cut):
    imp = np.array([r[0] for r in rows])
    exp = np.array([r[1] for r in rows])
    soc = np.linspace(0, 1, len(rows))
    items = [
        f"grid_import_kw <= {limit_kw!r}",
        f"max(grid_export_kw) <= {limit_kw!r}",
        f"battery_soc_mean >= {soc_cut!r} => grid_import_kw <= {limit_kw!r}",
    ]
    live = checker(items)
    for k in range(len(rows)):
        live.feed_tick(
            k * TICK_S,
            {"grid_import_w": imp[k], "grid_export_w": exp[k], "battery_soc_mean": soc[k]},
        )
    bulk = run(items, {"grid_import_w": imp, "grid_export_w": exp, "battery_soc_mean": soc})
    a, b = live.finish({}), bulk
    assert [r.status for r in a.results] == [r.status for r in b.results]
    truth = [
        bool((imp / 1000 <= limit_kw).all()),
        bool(exp.max() / 1000 <= limit_kw),
        bool((imp[soc >= soc_cut] / 1000 <= limit_kw).all()),
    ]
    for r, ok in zip(b.results, truth, strict=True):
        assert r.status in ((PASSED, VACUOUS) if ok else (FAILED,))
    # one live violation per failing tick of the two pointwise rules
    failing = int((imp / 1000 > limit_kw).sum()) + int(
        ((soc >= soc_cut) & (imp / 1000 > limit_kw)).sum()
    )
    assert len(live.live_violations) == failing


# ----------------------------------------------------------------------------- scenarios

GOOD = """\
name: t
start: 2026-04-06T00:00:00+09:00
duration_days: 1
sites:
  - name: homes
    count: 3
expect:
  - kpi.self_sufficiency >= 0
  - {check: "max(grid_import_kw) < 1000", name: peak, why: claim}
"""


def test_scenario_expect_block_loads():
    sc = load_scenario_text(GOOD, "s.yaml")
    assert [e.check for e in sc.expect] == [
        "kpi.self_sufficiency >= 0",
        "max(grid_import_kw) < 1000",
    ]
    assert sc.expect[1].name == "peak"


def test_scenario_errors_name_file_line_and_path_for_every_bad_entry():
    text = GOOD + (
        "  - max(grid_imprt_kw) <= 7\n"
        "  - kpi.system_co2_t >= 0\n"  # no system layer in this scenario
        "  - {check: 'x ==', name: bad}\n"
    )
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(text, "s.yaml")
    msg = str(ei.value)
    assert "s.yaml:10:5: expect[2]: unknown column 'grid_imprt_kw'" in msg
    assert "s.yaml:11:5: expect[3]: unknown KPI 'system_co2_t'" in msg
    assert "s.yaml:12:5: expect[4]: expected a value" in msg


def test_scenario_error_for_unknown_key_in_a_mapping_entry():
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(GOOD + "  - {chek: 'kpi.cost_jpy > 0'}\n", "s.yaml")
    assert "expect[2].chek: unknown key; did you mean 'check'?" in str(ei.value)


def test_check_run_on_a_real_run_and_the_vocabulary_matches_what_runs_write():
    from cps_sim.experiment.run import simulate
    from cps_sim.scenario.expect_schema import BASE_COLUMNS, BASE_KPIS, GROUP_COLUMNS

    sc = scenario(
        [
            {
                "name": "homes",
                "count": 6,
                "pv": {"share": 1.0},
                "battery": {"share": 0.5},
                "ev": {"share": 1.0},
            }
        ],
        expect=[
            "integral_h(grid_import_kw) == kpi.grid_import_kwh",
            "0 <= battery_soc_mean <= 1",
            "sum(group.homes.load_kw) == sum(load_kw)",
            "kpi.ev_departures == count(ev.soc_at_departure >= 0)",
        ],
    )
    rec = sc_rec = simulate(sc)
    events = rec.events()
    kpis = rec.kpis(events)
    ts = sc_rec.timeseries()
    groups = rec.timeseries_by_group()
    rep = check_run(sc, ts, events, kpis, groups)
    assert rep.passed, rep.format()
    assert kpis["ev_departures"] > 0
    # the load-time vocabulary is what every run writes (guard: update expect_schema.py
    # when the recorder gains a KPI or a column)
    assert set(kpis) == set(BASE_KPIS)
    assert set(ts.column_names) - {"time"} == set(BASE_COLUMNS)
    assert set(groups.column_names) - {"time", "group"} == set(GROUP_COLUMNS)


def test_derived_hour_and_islanded_columns():
    sc = scenario(
        [{"name": "homes", "count": 2}],
        ems={
            "homes": {
                "kind": "cems",
                "outages": [["2026-04-06T06:00:00+09:00", "2026-04-06T07:10:00+09:00"]],
            }
        },
    )
    c = ExpectationChecker(
        sc,
        items=[
            "count(islanded) == 4",
            "min(hour) == 0",
            "max(hour) == 23.75",
            "count(day_off) == 0",
        ],
    )
    c.load(np.arange(96) * 900.0, {"grid_import_w": np.zeros(96)})
    rep = c.finish({})
    # 06:00-07:10 covers the whole ticks 06:00, 06:15, 06:30, 06:45 (07:00 only partly)
    assert rep.passed, rep.format()
    assert all(math.isfinite(r.checked) for r in rep.results)


def test_where_filters_one_aggregate_and_combines_with_whenever():
    rng = np.random.default_rng(11)
    imp = rng.uniform(0, 9000, 48)
    soc = rng.uniform(0, 1, 48)
    lo, hi = imp[soc < 0.3].mean() / 1000, imp[soc > 0.7].mean() / 1000
    both = imp[(soc > 0.7) & (imp > 2000)].max() / 1000
    rep = run(
        [
            f"mean(grid_import_kw where battery_soc_mean < 0.3) == {float(lo)!r}",
            f"mean(grid_import_kw where battery_soc_mean > 0.7) == {float(hi)!r}",
            f"max(grid_import_kw where battery_soc_mean > 0.7) == {float(both)!r} "
            "whenever grid_import_kw > 2",
            "count(grid_import_kw > 0 where battery_soc_mean > 2) == 0",
        ],
        {"grid_import_w": imp, "battery_soc_mean": soc},
    )
    assert [r.status for r in rep.results] == [PASSED] * 4, rep.format()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("abs(grid_import_kw where hour > 3) > 0", "element-wise"),
        ("mean(ev.soc_at_departure where hour > 3) > 0", "'where' condition is per tick"),
        ("mean(grid_import_kw where grid_import_kw) > 0", "must be a condition"),
    ],
)
def test_where_errors(text, fragment):
    with pytest.raises(ExpectError) as ei:
        compile_expectation(text, vocab())
    assert fragment in str(ei.value)


def test_null_blocks_and_rules_that_do_not_apply_to_this_scenario():
    v = vocab(
        exact=False,
        scenario={"vpp": None, "system": {"demand": {}}, "control": {"ev_strategy": "load"}},
    )
    # a rule switched off by a scenario value may name a feature the scenario lacks ...
    chk = compile_expectation("kpi.vpp_delivered_kwh > 0 whenever scenario.vpp != null", v)
    assert chk.names
    # ... but not when it applies, and syntax/types are checked either way
    with pytest.raises(ExpectError, match="unknown KPI 'vpp_delivered_kwh'"):
        compile_expectation("kpi.vpp_delivered_kwh > 0 whenever scenario.system != null", v)
    with pytest.raises(ExpectError, match="must be a condition"):
        compile_expectation("kpi.vpp_delivered_kwh whenever scenario.vpp != null", v)
    c = ExpectationChecker(
        items=[
            "kpi.vpp_delivered_kwh > 0 whenever scenario.vpp != null",
            "kpi.cost_jpy > 0 whenever scenario.system != null and scenario.vpp == null",
        ],
        vocabulary=v,
        tick_s=TICK_S,
    )
    c.load(np.arange(2) * TICK_S, {"grid_import_w": np.zeros(2)})
    rep = c.finish({"cost_jpy": 5.0})
    assert [r.status for r in rep.results] == [VACUOUS, PASSED]


def test_undefined_values_are_not_checked():
    soc = np.array([np.nan, 0.5, np.nan, 1.5])  # no battery in ticks 0 and 2
    rep = run(
        [
            "0 <= battery_soc_mean <= 1",  # fails at tick 3 only
            "mean(battery_soc_mean where grid_import_kw > 100) > 0",  # over no ticks
            "kpi.self_sufficiency > 0",  # an undefined KPI
        ],
        {"battery_soc_mean": soc, "grid_import_w": np.zeros(4)},
        kpis={"self_sufficiency": math.nan},
    )
    a, b, c = rep.results
    assert (a.status, a.checked, a.failures) == (FAILED, 2, 1)
    assert a.first_failure_s == 3 * TICK_S
    assert b.status == VACUOUS and "nan" in b.message
    assert c.status == VACUOUS


def test_hil_bridge_events_feed_temporal_rules():
    from cps_sim.experiment.expect import control_events_frame

    bridge = pd.DataFrame(
        {
            "sim_time_s": [10.0, 12.5, 40.0, 100.0],
            "kind": ["disconnected", "fallback", "unavailable", "fallback"],
            "subject": ["lab", "lab", "charger0", "charger0"],
            "detail": ["", "", "last will", ""],
        }
    )
    ev = control_events_frame(bridge)
    assert list(ev.columns) == ["time_s", "kind", "source"]
    rep = run(
        [
            "fallback within 5 s of disconnected",  # lab: 2.5 s
            "fallback within 30 s of unavailable",  # charger0: 60 s late
        ],
        {"grid_import_w": np.zeros(4)},
        events=ev,
    )
    assert [r.status for r in rep.results] == [PASSED, FAILED]
    assert "charger0" in rep.results[1].message and "60 s after" in rep.results[1].message
