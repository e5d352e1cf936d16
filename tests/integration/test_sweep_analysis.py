"""Sweep report analysis: replicate CIs, bars for categories, heatmap, constrained ranking,
labelled Pareto front, unknown KPIs rejected (numbers checked independently)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from cps_sim.core.errors import ResultsError
from cps_sim.experiment.catalog import read_catalog
from cps_sim.experiment.report import make_report
from cps_sim.experiment.sweep import run_sweep
from cps_sim.experiment.sweep_analysis import pareto_mask

REPO = Path(__file__).resolve().parents[2]
SCENARIO = """\
version: 1
name: tiny
seed: 5
start: 2026-04-06T00:00:00+09:00
duration_days: 1
tick_s: 3600
weather: {source: synthetic}
sites:
  - name: homes
    count: 6
    pv: {share: 1.0, capacity_kw: 4}
    battery: {share: 1.0, capacity_kwh: 10}
    ev: {share: 1.0, charger_kw: 6}
control: {ev_strategy: now}
"""
SWEEP = """\
name: strategies
scenario: tiny.yaml
parameters:
  - {name: strategy, path: "control.ev_strategy", values: [now, "off", pv]}
  - {name: battery_kwh, path: "sites[0].battery.capacity_kwh", values: [5, 15]}
replications: 3
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    (d / "tiny.yaml").write_text(SCENARIO)
    (d / "sweep.yaml").write_text(SWEEP)
    r = run_sweep(d / "sweep.yaml", d / "out", workers=2, backend="local", quiet=True)
    assert r.ok == 18
    return r.out_dir


def _png(p: Path) -> None:
    with Image.open(p) as im:
        im.verify()
    with Image.open(p) as im:
        assert im.format == "PNG" and min(im.size) > 200


def test_replicate_ci_ranking_and_plots(sweep, tmp_path):
    rep = make_report(
        sweep,
        out_dir=tmp_path / "rep",
        objective="cost_jpy",
        constraints=["ev_unmet_at_departure_kwh <= 1"],
    )
    assert {p.name for p in rep.pngs} == {"sensitivity.png", "heatmap.png", "tradeoff.png"}
    for p in rep.pngs:
        _png(p)
    cat = read_catalog(sweep)
    pts = rep.points
    assert len(pts) == 6 and (pts["n"] == 3).all()
    # the CI of each design point, computed here from the catalog
    for _, row in pts.iterrows():
        x = cat[(cat.strategy == row.strategy) & (cat.battery_kwh == row.battery_kwh)]
        x = x["cost_jpy"].to_numpy()
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert row["cost_jpy_mean"] == pytest.approx(x.mean())
        assert row["cost_jpy_ci_high"] - row["cost_jpy_mean"] == pytest.approx(half)
        assert row["cost_jpy_mean"] - row["cost_jpy_ci_low"] == pytest.approx(half)
    # 'off' leaves EV demand unmet: cheapest, but it must not rank
    unmet = pts.set_index(["strategy", "battery_kwh"])["ev_unmet_at_departure_kwh_mean"]
    assert (unmet.xs("off", level="strategy") > 1).all()
    ranked_ok = pts[pts["feasible"]]
    assert "off" not in set(ranked_ok["strategy"])
    assert list(ranked_ok["rank"]) == list(range(1, len(ranked_ok) + 1))
    assert ranked_ok["cost_jpy_mean"].is_monotonic_increasing
    assert (pts.loc[~pts["feasible"], "rank"] == 0).all()
    assert all("ev_unmet_at_departure_kwh <= 1" in v for v in pts.loc[~pts["feasible"], "violates"])
    cheapest = pts.sort_values("cost_jpy_mean").iloc[0]
    assert cheapest["strategy"] == "off"  # why the constraint matters
    page = rep.html.read_text(encoding="utf-8")
    assert "ranked by cost_jpy under ev_unmet_at_departure_kwh &lt;= 1" in page
    assert page.count("data:image/png;base64,") == 3


def test_pareto_mask_against_a_brute_force_definition():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y = rng.integers(0, 6, 12).astype(float), rng.integers(0, 6, 12).astype(float)
        m = pareto_mask(x, y)
        for i in range(12):
            dominated = any(
                x[j] <= x[i] and y[j] <= y[i] and (x[j] < x[i] or y[j] < y[i]) for j in range(12)
            )
            assert m[i] == (not dominated)


def test_unknown_kpis_and_bad_constraints_are_errors(sweep, tmp_path):
    for kw, frag in (
        (dict(objective="cost_yen"), "--objective 'cost_yen'"),
        (dict(constraints=["ev_unmet_kwh <= 1"]), "--constraint 'ev_unmet_kwh'"),
        (dict(constraints=["ev_unmet_at_departure_kwh is small"]), "write '<kpi> <op> <number>'"),
        (dict(tradeoff="-self_sufficency"), "did you mean 'self_sufficiency'"),
    ):
        with pytest.raises(ResultsError, match=frag.replace("(", r"\(").replace(")", r"\)")):
            make_report(sweep, out_dir=tmp_path / "never", **kw)
        assert not (tmp_path / "never").exists()
    env = {**os.environ, "CI": "true"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "report",
            str(sweep),
            "--out",
            str(tmp_path / "cli"),
            "--constraint",
            "ev_unmet_at_departure_kwh <= 1",
            "--constraint",
            "peak_import_kw < 1e9",
            "--tradeoff=-self_sufficiency",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cli" / "points.csv").exists()
    df = pd.read_csv(tmp_path / "cli" / "points.csv")
    assert set(df.columns) >= {"rank", "feasible", "violates", "self_sufficiency_ci_low"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "report",
            str(sweep),
            "--out",
            str(tmp_path / "cli2"),
            "--constraint",
            "bogus <= 1",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and "bogus" in r.stderr
