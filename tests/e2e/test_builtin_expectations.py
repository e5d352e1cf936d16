"""Every built-in scenario carries the expectations that make its claim, and they pass.

Scaled down with ``--set`` where the claim does not depend on the size (each case says
why); the full-size files run in seconds as well (``cps-sim run scenarios/<name>.yaml``).
A known defect owned by someone else is marked xfail(strict=True) with the reason: when it
is fixed the test turns XPASS and fails, so the owner removes the mark (none today).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cps_sim.experiment.run import run_file
from cps_sim.scenario.loader import load_scenario

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"

# (scenario, --set overrides, claims that must pass in that window: None = all)
CASES: list[tuple[str, list[str], set[str] | None]] = [
    ("quickstart", [], None),
    ("self_owned_microgrid", [], None),
    ("surplus_bev_absorption", [], None),
    ("surplus_bev_absorption", ["vpp=null"], None),  # the documented comparison case
    # heating times do not depend on the number of homes
    ("hpwh_daytime_shift", ["sites[0].count=100", "duration_days=7"], None),
    (
        "hpwh_daytime_shift",
        ["sites[0].count=100", "duration_days=7", "sites[0].heat_pump_water_heater.control=night"],
        None,
    ),
    ("cloudy_windless_backup", [], None),
    # a fiscal year (40-90 s) is too long for the suite: the winter-peak week checks adequacy;
    # the year's shares are tested on four representative weeks in
    # tests/integration/test_mix_2022.py and measured by benchmarks/mix_2022_year.py
    (
        "demand_growth_2022_mix",
        ["start=2027-01-25T00:00:00+09:00", "duration_days=7"],
        {"adequate"},
    ),
    ("demand_growth_2050", [], None),
    # two years (~30 s of CPU) are too long for the suite: ten sunny-season days show
    # both units fading, absorbing surplus and the cost per MWh shifted
    (
        "second_life_grid_battery",
        ["start=2026-05-10T00:00:00+09:00", "duration_days=10"],
        None,
    ),
    # two fiscal years (~20 s of CPU) are too long for the suite: the fortnight around
    # 1 April 2026 holds FY2025 (no price) and FY2026 (GX-ETS), so every claim applies
    (
        "carbon_price_path",
        ["start=2026-03-25T00:00:00+09:00", "duration_days=14"],
        None,
    ),
    ("power_to_hydrogen", [], None),
    ("hil_demo", [], None),  # offline: every member modelled
    ("decarbonisation_leading_area", [], None),
    ("ev_logistics_depot", [], None),  # peak_shaving
    ("ev_logistics_depot", ["control.ev_strategy=greedy", "duration_days=7"], None),
    ("ev_logistics_depot", ["control.ev_strategy=balanced", "duration_days=7"], None),
    # per-home claims: 20 of the 100 homes, 2 of the 7 days; polled meter, then the
    # 30-min registers only (the documented comparison case)
    ("smart_meter_b_route", ["sites[0].count=20", "duration_days=2"], None),
    (
        "smart_meter_b_route",
        ["sites[0].count=20", "duration_days=2", "sites[0].smart_meter.instantaneous_poll_s=null"],
        None,
    ),
    ("v2g_evening_peak", [], None),
    ("v2g_evening_peak", ["control.ev_strategy=now"], None),  # the comparison case
    # one strategy per case; 20 of the 100 homes (limits are per home), 3 days, decisions
    # every 5 min instead of every minute
    *[
        (
            "ev_strategies_compare",
            [
                "sites[0].count=20",
                "duration_days=3",
                "control.interval_s=300",
                f"control.ev_strategy={s}",
            ],
            None,
        )
        for s in ("now", "pv", "cost", "v2h")
    ],
]


def _id(case) -> str:
    name, ov, _ = case
    return name + ("[" + ",".join(ov) + "]" if ov else "")


def test_every_built_in_scenario_has_expectations():
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert files
    covered = {c[0] for c in CASES}
    for f in files:
        sc = load_scenario(f)
        assert len(sc.expect) >= 3, f"{f.name}: state the scenario's claim under expect:"
        assert f.stem in covered, f"{f.name}: add a case to CASES in this test"


@pytest.mark.parametrize("name, overrides, only", CASES, ids=[_id(c) for c in CASES])
def test_built_in_expectations_pass(name, overrides, only, tmp_path):
    """``only``: the claims that hold in a scaled-down window (the others need the full
    run); they are still evaluated, without errors."""
    res = run_file(SCENARIOS / f"{name}.yaml", overrides, out_dir=tmp_path / "run")
    rep = res.expectations
    assert rep is not None and rep.results
    ej = json.loads((tmp_path / "run" / "expectations.json").read_text())
    assert ej["total"] == len(rep.results)
    if only is not None:
        assert {r.name for r in rep.results} >= only
        assert all(r.status != "error" for r in rep.results), rep.format()
        assert all(r.status == "passed" for r in rep.results if r.name in only), rep.format()
        return
    assert rep.passed, f"{name} {overrides}:\n{rep.format()}"
    # the claims are checked, not skipped: at least half apply to the file as it is (a
    # comparison variant may switch the claims of the other case off)
    applied = [r for r in rep.results if r.status == "passed"]
    assert len(applied) >= (len(rep.results) / 2 if not overrides else 1), rep.format()


def test_vpp_absorption_reduces_curtailment(tmp_path):
    """The comparison the surplus scenario's header names (seed L5940-5946)."""
    f = SCENARIOS / "surplus_bev_absorption.yaml"
    with_vpp = run_file(f, ["duration_days=3"], out_dir=tmp_path / "a").kpis
    without = run_file(f, ["duration_days=3", "vpp=null"], out_dir=tmp_path / "b").kpis
    assert with_vpp["system_curtailed_mwh"] < 0.95 * without["system_curtailed_mwh"]


def test_v2g_cuts_the_evening_import_against_uncontrolled_charging(tmp_path):
    """The peak reduction the v2g_evening_peak header names (seed L5948)."""
    import pandas as pd

    f = SCENARIOS / "v2g_evening_peak.yaml"
    ev = {}
    for s in ("v2g", "now"):
        out = run_file(
            f, [f"control.ev_strategy={s}", "duration_days=4"], out_dir=tmp_path / s
        ).out_dir
        ts = pd.read_parquet(out / "timeseries.parquet")
        hour = pd.DatetimeIndex(ts["time"]).tz_convert("Asia/Tokyo").hour
        ev[s] = ts.loc[(hour >= 18) & (hour < 21), "grid_import_w"].mean()
    assert ev["v2g"] < 0.75 * ev["now"]
