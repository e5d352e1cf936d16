"""The system's merit order follows the GX carbon-price path tick by tick (issue 12 item 1).

scenarios/carbon_price_path.yaml, three days around 1 April 2026 (FY2025 -> FY2026,
GX-ETS starts), run twice on the same seed: with the file's price path and with no
carbon price.  Sites, weather and demand are identical, so every difference is the
price: identical dispatch before the boundary, less coal and more gas after it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cps_sim.experiment.run import run_file
from tests.conftest import REPO

SCENARIO = REPO / "scenarios" / "carbon_price_path.yaml"
WINDOW = ["start=2026-03-30T00:00:00+09:00", "duration_days=3"]
BOUNDARY = pd.Timestamp("2026-04-01T00:00:00+09:00")


def _run(tmp_path, name, extra=()):
    res = run_file(SCENARIO, [*WINDOW, *extra], out_dir=tmp_path / name)
    ts = pd.read_parquet(res.out_dir / "timeseries.parquet")
    kpis = json.loads((res.out_dir / "kpis.json").read_text())
    return ts, kpis


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cpp")
    return {
        "gx": _run(tmp, "gx"),
        "none": _run(tmp, "none", ["emissions.carbon_price=flat"]),
    }


def test_price_steps_at_the_fiscal_year_and_reorders_the_merit_order(runs):
    ts, _ = runs["gx"]
    ts0, _ = runs["none"]
    start = pd.DatetimeIndex(ts["time"])  # the tick start
    after = np.asarray(start >= BOUNDARY)
    assert after.any() and (~after).any()
    price = ts["system_carbon_price_jpy_per_t"].to_numpy()
    assert np.all(price[~after] == 0.0) and np.all(price[after] == 1700.0)
    assert np.all(ts["system_fiscal_year"].to_numpy() == np.where(after, 2026, 2025))
    assert np.all(ts0["system_carbon_price_jpy_per_t"].to_numpy() == 0.0)
    # before the boundary both runs are the same run
    for c in ("system_coal_w", "system_gas_ccgt_w", "system_co2_kg"):
        np.testing.assert_allclose(ts[c].to_numpy()[~after], ts0[c].to_numpy()[~after])
    # after it, with the same demand and renewables, the old coal unit (10.9 JPY/kWh,
    # 900 g/kWh) is dearer than a CCGT (11.5 JPY/kWh, 490 g/kWh) at 1,700 JPY/t
    np.testing.assert_allclose(ts["system_demand_w"].to_numpy(), ts0["system_demand_w"].to_numpy())
    coal, coal0 = ts["system_coal_w"].to_numpy()[after], ts0["system_coal_w"].to_numpy()[after]
    gas, gas0 = (
        ts["system_gas_ccgt_w"].to_numpy()[after],
        ts0["system_gas_ccgt_w"].to_numpy()[after],
    )
    assert coal.sum() < 0.9 * coal0.sum()
    assert gas.sum() > gas0.sum()
    assert (
        ts["system_co2_kg"].to_numpy()[after].sum() < ts0["system_co2_kg"].to_numpy()[after].sum()
    )


def test_fiscal_year_kpis_add_up_to_the_run(runs):
    ts, k = runs["gx"]
    years = (2025, 2026)
    for q in (
        "co2_t",
        "cost_jpy",
        "carbon_cost_jpy",
        "demand_mwh",
        "coal_mwh",
        "gas_ccgt_mwh",
        "curtailed_mwh",
        "hours",
    ):
        total = {"hours": 72.0}.get(q, k.get(f"system_{q}"))
        assert sum(k[f"system_fy{y}_{q}"] for y in years) == pytest.approx(total, rel=1e-9), q
    assert k["system_fy2025_carbon_price_jpy_per_t"] == 0.0
    assert k["system_fy2026_carbon_price_jpy_per_t"] == 1700.0
    assert k["system_fy2025_carbon_cost_jpy"] == 0.0
    # carbon cost = emissions x the price of their tick, not x a run-wide price
    want = float((ts["system_co2_kg"] / 1000.0 * ts["system_carbon_price_jpy_per_t"]).sum())
    assert k["system_carbon_cost_jpy"] == pytest.approx(want, rel=1e-12)
    assert k["system_fy2026_carbon_cost_jpy"] == pytest.approx(
        k["system_fy2026_co2_t"] * 1700.0, rel=1e-12
    )
    for y in years:
        shares = sum(v for key, v in k.items() if key.startswith(f"system_fy{y}_share_"))
        assert shares == pytest.approx(1.0)


def test_one_fiscal_year_has_no_per_year_kpis(tmp_path):
    res = run_file(
        SCENARIO, ["start=2026-04-06T00:00:00+09:00", "duration_days=1"], out_dir=tmp_path / "one"
    )
    assert not any(key.startswith("system_fy") for key in res.kpis)
    assert res.kpis["system_carbon_cost_jpy"] == pytest.approx(res.kpis["system_co2_t"] * 1700.0)
