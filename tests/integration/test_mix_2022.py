"""scenarios/demand_growth_2022_mix.yaml holds the FY2022 mix and is adequate (issue 10 item 6).

A full year at 15-min ticks takes ~40 s here, too long for the suite, so the test runs
four representative weeks of the scenario file as it is (public API, the real file, only
``start`` and ``duration_days`` overridden) and combines them by energy:

* the week of the year's winter demand peak (late January) and of the summer peak
  (mid-August): adequacy binds there, and they carry the high-oil, low-RE hours;
* a mid-spring (mid-April) and a mid-autumn (late-October) week: low demand, high RE
  share, the minimum-load and curtailment hours.

One week per season, 28 days.  Measured with the file's seed: the four-week mix is within
1.2 points of the full-year mix for every technology (full year: benchmarks/
mix_2022_year.py).  Four weeks of weather are a small sample: with seed 1 the four-week
RE share is 18.3 % while that seed's full year is 23.2 %, so the weeks are a regression
check of the file as shipped, and the whole year is also run here at hourly ticks with
five homes (~10 s): the shares over all 8,760 hours, where the 15-min peaks are averaged
away (adequacy at the 15-min peak is what the weeks check).
"""

from __future__ import annotations

import pytest

from cps_sim.experiment.run import simulate
from cps_sim.scenario.loader import load_scenario
from tests.conftest import REPO

SCENARIO = "scenarios/demand_growth_2022_mix.yaml"
WEEKS = ("2027-01-25", "2026-04-13", "2026-08-17", "2026-10-19")
# FY2022, seed L5803-5822 (seed-digest.md): nuclear 6, RE 22, oil 8, gas 34, coal 31 %
TARGET = {"coal": 31.0, "gas": 34.0, "oil": 8.0, "renewable": 22.0, "nuclear": 6.0}
TOLERANCE_POINTS = 2.0


@pytest.fixture(scope="module")
def weeks() -> dict[str, dict[str, float]]:
    out = {}
    for start in WEEKS:
        sc = load_scenario(REPO / SCENARIO, [f"start={start}T00:00:00+09:00", "duration_days=7"])
        rec = simulate(sc, base_dir=REPO / "scenarios")
        out[start] = rec.kpis(rec.events())
    return out


def test_no_unserved_energy_in_any_week_including_both_peaks(weeks):
    for start, k in weeks.items():
        # the dispatch books float rounding of the storage step as unserved: < 1 Wh
        assert k["system_unserved_mwh"] < 1e-6, start
        assert k["system_loss_of_load_hours"] == 0.0, start
    peaks = {s: k["system_peak_demand_mw"] for s, k in weeks.items()}
    assert max(peaks.values()) > 210  # the winter week holds the ~217 MW annual peak


def test_the_four_seasons_reproduce_the_2022_mix_within_two_points(weeks):
    tot: dict[str, float] = {}
    for k in weeks.values():
        for key in ("coal", "gas_ccgt", "gas_ocgt", "oil", "nuclear"):
            tot[key] = tot.get(key, 0.0) + k[f"system_{key}_mwh"]
        tot["renewable"] = tot.get("renewable", 0.0) + (
            k["system_wind_mwh"]
            + k["system_utility_pv_mwh"]
            + k["system_site_export_mwh"]
            - k["system_curtailed_mwh"]
        )
    tot["gas"] = tot.pop("gas_ccgt") + tot.pop("gas_ocgt")
    generated = sum(tot.values())
    shares = {key: 100.0 * v / generated for key, v in tot.items()}
    for key, want in TARGET.items():
        assert abs(shares[key] - want) <= TOLERANCE_POINTS, (key, shares)
    # the per-run KPIs say the same (share of generation, RE net of curtailment)
    for k in weeks.values():
        assert sum(v for key, v in k.items() if key.startswith("system_share_")) == pytest.approx(
            1.0
        )


def test_pumped_hydro_pumps_on_thermal_and_serves_the_peaks(weeks):
    # the 2022 mix has (almost) no renewable surplus: storage charges from coal/CCGT at
    # night (valley filling) and discharges at the evening peaks of the winter week
    k = weeks["2027-01-25"]
    assert k["system_storage_charge_mwh"] > 50
    assert k["system_storage_discharge_mwh"] > 30
    assert k["system_curtailed_mwh"] < 1.0


def _mix(k: dict[str, float]) -> dict[str, float]:
    re = (
        k["system_wind_mwh"]
        + k["system_utility_pv_mwh"]
        + k["system_site_export_mwh"]
        - k["system_curtailed_mwh"]
    )
    parts = {
        "coal": k["system_coal_mwh"],
        "gas": k["system_gas_ccgt_mwh"] + k["system_gas_ocgt_mwh"],
        "oil": k["system_oil_mwh"],
        "nuclear": k["system_nuclear_mwh"],
        "renewable": re,
    }
    total = sum(parts.values())
    return {key: 100.0 * v / total for key, v in parts.items()}


def test_the_whole_year_at_hourly_ticks_holds_the_mix_and_serves_all_demand():
    sc = load_scenario(REPO / SCENARIO, ["tick_s=3600", "sites[0].count=5"])
    assert sc.duration_days == 365  # the file runs a fiscal year
    rec = simulate(sc, base_dir=REPO / "scenarios")
    k = rec.kpis(rec.events())
    assert k["system_unserved_mwh"] < 1e-6 and k["system_loss_of_load_hours"] == 0.0
    shares = _mix(k)
    for key, want in TARGET.items():
        assert abs(shares[key] - want) <= TOLERANCE_POINTS, (key, shares)
    # the run's own share KPIs say the same
    assert 100 * k["system_share_renewable"] == pytest.approx(shares["renewable"], rel=1e-9)
    for key in ("coal", "oil", "nuclear"):
        assert 100 * k[f"system_share_{key}"] == pytest.approx(shares[key], rel=1e-9)
