"""Named grid-storage units: a second-life and a new battery side by side (issue 12 item 1).

scenarios/second_life_grid_battery.yaml over three May days (midday surplus every day),
with both ways a used pack may go on ageing, and without storage for the curtailment it
avoids.  Checks the books of the per-unit columns, the SoH paths and the KPIs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.run import run_file
from cps_sim.scenario.loader import load_scenario
from tests.conftest import REPO

SCENARIO = REPO / "scenarios" / "second_life_grid_battery.yaml"
WINDOW = ["start=2026-05-10T00:00:00+09:00", "duration_days=3"]


def _run(tmp, name, extra=()):
    res = run_file(SCENARIO, [*WINDOW, *extra], out_dir=tmp / name)
    ts = pd.read_parquet(res.out_dir / "timeseries.parquet")
    return ts, json.loads((res.out_dir / "kpis.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sl")
    return {
        "restart": _run(tmp, "restart"),
        "continue": _run(tmp, "continue", ["system.storage[1].soh_history=continue"]),
        "none": _run(tmp, "none", ["system.storage=[]"]),
    }


def test_unit_columns_add_up_to_the_storage_columns(runs):
    ts, k = runs["restart"]
    units = ts["system_storage_new_w"] + ts["system_storage_second_life_w"]
    np.testing.assert_allclose(units, ts["system_storage_w"], rtol=1e-12, atol=1e-6)
    absorbed = ts["system_storage_new_absorbed_w"] + ts["system_storage_second_life_absorbed_w"]
    np.testing.assert_allclose(absorbed, ts["system_storage_absorbed_w"], rtol=1e-12, atol=1e-6)
    # no valley filling here: every charge is surplus, and nothing is absorbed while
    # discharging
    np.testing.assert_allclose(
        ts["system_storage_absorbed_w"], ts["system_storage_w"].clip(lower=0), atol=1e-6
    )
    for u in ("new", "second_life"):
        assert np.all(
            ts[f"system_storage_{u}_absorbed_w"] <= ts[f"system_storage_{u}_w"].clip(lower=0) + 1e-6
        )
        assert k[f"system_storage_{u}_absorbed_surplus_mwh"] > 100  # three sunny-season days
    assert k["system_storage_absorbed_mwh"] == pytest.approx(
        k["system_storage_new_absorbed_surplus_mwh"]
        + k["system_storage_second_life_absorbed_surplus_mwh"]
    )


def test_the_storage_takes_surplus_that_would_be_curtailed(runs):
    _, k = runs["restart"]
    _, k0 = runs["none"]
    avoided = k0["system_curtailed_mwh"] - k["system_curtailed_mwh"]
    # export is 0: surplus the batteries do not take is curtailed.  Discharging shifts
    # thermal output (and its minimum loads), so the match is close, not exact
    assert avoided == pytest.approx(k["system_storage_absorbed_mwh"], rel=0.1)


def test_soh_paths_and_fade(runs):
    ts, k = runs["restart"]
    _, kc = runs["continue"]
    for u, start in (("new", 1.0), ("second_life", 0.75)):
        soh = ts[f"system_storage_{u}_soh"].to_numpy()
        assert start - 0.01 < soh[0] <= start
        assert np.all(np.diff(soh) <= 1e-15)  # capacity never comes back
        assert k[f"system_storage_{u}_soh_start"] == start
        assert k[f"system_storage_{u}_fade"] == pytest.approx(start - soh[-1])
        assert k[f"system_storage_{u}_capacity_lost_mwh"] == pytest.approx(
            (start - soh[-1]) * 80 / start
        )
    # restart: the used pack ages like new cells at 1.5x the rate, on 75 % of the capacity
    assert k["system_storage_second_life_fade"] > 0.75 * k["system_storage_new_fade"]
    # continue: the power laws go on from the pack's age, far slower
    assert kc["system_storage_second_life_fade"] < 0.2 * k["system_storage_second_life_fade"]
    assert kc["system_storage_new_fade"] == pytest.approx(k["system_storage_new_fade"], rel=0.05)


def test_cost_per_mwh_shifted(runs):
    _, k = runs["restart"]
    years = 72 / 8760
    for u, capex, life in (("new", 60000, 15), ("second_life", 30000, 8)):
        cost = capex * 80_000 * years / life
        assert k[f"system_storage_{u}_capex_share_jpy"] == pytest.approx(cost)
        assert k[f"system_storage_{u}_cost_jpy_per_mwh_shifted"] == pytest.approx(
            cost / k[f"system_storage_{u}_discharge_mwh"]
        )


@pytest.mark.parametrize(
    "override, message",
    [
        ("system.storage[0].name=soc", "reserved"),
        ("system.storage[1].name=new", "names must be unique"),
    ],
)
def test_bad_storage_units_are_refused_with_their_path(override, message):
    with pytest.raises(ScenarioError) as e:
        load_scenario(SCENARIO, [override])
    assert message in str(e.value) and "system" in str(e.value)
