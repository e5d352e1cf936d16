"""``cps-sim compare``: KPI differences, overlay plots that open, refusals that explain."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cps_sim.core.errors import ResultsError
from cps_sim.experiment.compare import compare_runs
from cps_sim.experiment.run import run_file

REPO = Path(__file__).resolve().parents[2]
QS = REPO / "scenarios" / "quickstart.yaml"
SMALL = ["duration_days=2", "sites[0].count=20"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    a = run_file(QS, SMALL, out_dir=d / "base", check_expect=False).out_dir
    b = run_file(
        QS, [*SMALL, "sites[0].battery.share=1.0"], out_dir=d / "batteries", check_expect=False
    ).out_dir
    c = run_file(
        QS, [*SMALL, "sites[0].pv.share=1.0"], out_dir=d / "pv", check_expect=False
    ).out_dir
    short = run_file(
        QS, ["duration_days=1", "sites[0].count=20"], out_dir=d / "short", check_expect=False
    ).out_dir
    return a, b, c, short


def _kpis(p: Path) -> dict:
    return json.loads((p / "kpis.json").read_text())


def test_compare_three_runs_table_and_images(runs, tmp_path):
    a, b, c, _ = runs
    res = compare_runs([a, b, c], out_dir=tmp_path / "cmp")
    with open(res.csv, encoding="utf-8") as fh:
        rows = {r["kpi"]: r for r in csv.DictReader(fh)}
    ka, kb, kc = _kpis(a), _kpis(b), _kpis(c)
    la, lb, lc = res.labels
    assert la != lb != lc  # same scenario name: the folders tell them apart
    for k in ("grid_import_kwh", "self_sufficiency", "cost_jpy"):
        r = rows[k]
        assert float(r[la]) == pytest.approx(ka[k]) and float(r[lb]) == pytest.approx(kb[k])
        assert float(r[f"Δ {lb}"]) == pytest.approx(kb[k] - ka[k])
        assert float(r[f"Δ% {lc}"]) == pytest.approx((kc[k] - ka[k]) / abs(ka[k]) * 100)
    # more batteries, more self-sufficiency: the table shows it with its sign
    assert float(rows["self_sufficiency"][f"Δ {lb}"]) > 0
    for png in res.pngs:
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
            assert len(im.convert("L").getcolors(maxcolors=65536) or []) > 10  # drawn, not blank
    page = res.html.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and "<script" not in page
    assert all(lab in page for lab in res.labels)


def test_compare_cli_and_refusals(runs, tmp_path):
    a, b, _, short = runs
    env = {**os.environ, "CI": "true"}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "cps_sim", "compare", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
        )

    r = cli(a, b, "--out", tmp_path / "ok")
    assert r.returncode == 0, r.stderr
    assert "self_sufficiency" in r.stdout and (tmp_path / "ok" / "compare.html").exists()
    r = cli(a, short, "--out", tmp_path / "no")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "runs cover different horizons" in r.stderr and "(1 days)" in r.stderr
    assert not (tmp_path / "no").exists()
    r = cli(a, "--out", tmp_path / "one")
    assert r.returncode != 0 and "at least two run folders" in r.stderr
    r = cli(a, tmp_path / "nothing-here")
    assert r.returncode != 0 and "no such run folder" in r.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(ResultsError, match="not a cps_sim comparison"):
        compare_runs([a, b], out_dir=foreign)
    assert (foreign / "thesis.tex").read_text() == "mine"
