"""The start of a run is not an artefact (issue 10 item 3), from the user's side.

* Vehicles start where their trips put them (away inside a trip, else at home) with a
  sampled SoC; batteries start at a sampled SoC (seeded, deterministic).
* ``warmup_days`` runs the world before ``start`` and records nothing of it: the
  recorded rows, events and KPIs of a run with a one-day warm-up are exactly those of
  the same world started a day earlier without one, from ``start`` on.
* Quickstart's peak import is no longer the first hour's charging spike.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cps_sim.experiment.run import run_file
from cps_sim.scenario.loader import load_scenario
from cps_sim.world.build import build_world

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"

SMALL = """\
version: 1
name: start_state
seed: 5
start: {start}
duration_days: {days}
warmup_days: {warmup}
tick_s: 900
weather: {{source: synthetic}}
sites:
  - name: homes
    count: 40
    pv: {{share: 0.6, capacity_kw: 4}}
    battery: {{share: 0.5, capacity_kwh: 10, power_kw: 5}}
    ev: {{share: 1.0, charger_kw: 6}}
"""


def _write(tmp: Path, name: str, **kw) -> Path:
    f = tmp / f"{name}.yaml"
    f.write_text(SMALL.format(**kw), encoding="utf-8")
    return f


def _read(d: Path, name: str) -> pd.DataFrame:
    return pq.read_table(d / name).to_pandas()


def test_quickstart_peak_is_not_the_first_hour(tmp_path):
    out = tmp_path / "qs"
    run_file(QUICKSTART, ["duration_days=2"], out_dir=out)
    ts = _read(out, "timeseries.parquet")
    sc = load_scenario(QUICKSTART, ["duration_days=2"])
    assert sc.warmup_days == 1
    assert len(ts) == 2 * 96 and ts.time.iloc[0] == pd.Timestamp(sc.start)
    k = int(ts.grid_import_w.to_numpy().argmax())
    assert k >= 4, f"peak import in the first hour (tick {k})"
    peak_kw = ts.grid_import_w.max() / 1000.0
    # the old artefact: 641.7 kW at 00:00 (every EV plugged in, charging at full power);
    # measured now 229 kW at 18:45 on an evening (100 EVs of 6 kW would be 600 kW)
    assert peak_kw < 400.0, peak_kw
    # not every vehicle charges in the first tick
    assert ts.ev_charging_w.iloc[0] < 0.5 * 100 * 6000.0


def test_vehicles_start_where_their_trips_are_and_socs_are_sampled(tmp_path):
    # a Tuesday 10:00 start: most vehicles are out on their weekday trip
    f = _write(tmp_path, "mid", start="2026-04-07T10:00:00+09:00", days=0.5, warmup=0)
    sc = load_scenario(f)
    w = build_world(sc, tmp_path)
    g = w.groups[0]
    evs = g.evs
    away = ~evs.plugged
    assert 0.5 * evs.n <= away.sum() < evs.n  # P(drive) 0.8, mostly out at 10:00
    # each one away comes back at a scheduled return, after the start, with its trip energy
    arr = g.pending_kind == 1
    first_back = {int(i): t for i, t in zip(g.pending_ev[arr], g.pending_t[arr], strict=True)}
    for i in np.flatnonzero(away):
        assert first_back[int(i)] == evs.away_until_s[i] > 0.0
    # SoC: the documented default, uniform 0.6-1.0, per vehicle; nobody starts empty
    soc = evs.energy_wh / evs.capacity_wh
    assert soc.min() >= 0.6 and soc.max() <= 1.0 and soc.std() > 0.05
    # batteries: uniform 0.2-0.8 within [soc_min, soc_max], per battery
    has = g.battery.capacity_wh > 0
    b = g.battery_energy_wh[has] / g.battery.capacity_wh[has]
    assert b.min() >= 0.2 - 1e-12 and b.max() <= 0.8 + 1e-12 and b.std() > 0.05
    # seeded: the same file gives the same state
    w2 = build_world(load_scenario(f), tmp_path)
    assert np.array_equal(w2.groups[0].evs.energy_wh, evs.energy_wh)
    assert np.array_equal(w2.groups[0].evs.plugged, evs.plugged)
    assert np.array_equal(w2.groups[0].battery_energy_wh, g.battery_energy_wh)
    # and the run logs their returns without departures first, with the trip energy
    out = tmp_path / "run"
    run_file(f, out_dir=out)
    ev = _read(out, "events.parquet")
    firsts = ev.sort_values("time_s").groupby("ev_id").first()
    assert (firsts.loc[firsts.index.isin(np.flatnonzero(away)), "kind"] == "arrival").all()
    ts = _read(out, "timeseries.parquet")
    assert ts.ev_plugged.iloc[0] == evs.n - away.sum()


def test_warmup_runs_but_records_nothing_before_start(tmp_path):
    # the same world: started on 6 April with a one-day warm-up, and on 5 April without
    a = _write(tmp_path, "a", start="2026-04-07T00:00:00+09:00", days=2, warmup=1)
    b = _write(tmp_path, "b", start="2026-04-06T00:00:00+09:00", days=3, warmup=0)
    run_file(a, out_dir=tmp_path / "ra")
    run_file(b, out_dir=tmp_path / "rb")
    ta = _read(tmp_path / "ra", "timeseries.parquet")
    tb = _read(tmp_path / "rb", "timeseries.parquet")
    start = pd.Timestamp("2026-04-07T00:00:00+09:00")
    assert len(ta) == 2 * 96 and ta.time.iloc[0] == start  # no warm-up row
    tail = tb[tb.time >= start].reset_index(drop=True)
    pd.testing.assert_frame_equal(ta, tail, check_exact=True)
    # events: those from start on, times counted from start
    ea, eb = _read(tmp_path / "ra", "events.parquet"), _read(tmp_path / "rb", "events.parquet")
    assert (ea.time >= start).all() and len(ea) > 0
    eb = eb[eb.time >= start].reset_index(drop=True)
    eb["time_s"] = eb.time_s - 86400.0
    pd.testing.assert_frame_equal(ea, eb, check_exact=False, rtol=1e-12)
    np.testing.assert_allclose(ea.time_s, (ea.time - start).dt.total_seconds(), atol=1e-3)
    # the energy balance holds across the boundary: the stores' energy at start is the
    # initial state of the recorded books
    meta = pq.read_schema(tmp_path / "ra" / "timeseries.parquet").metadata
    stored0 = float(meta[b"cps_sim.stored_initial_wh"])
    assert float(meta[b"cps_sim.warmup_s"]) == 86400.0
    assert stored0 == pytest.approx(float(tb[tb.time < start].stored_wh.iloc[-1]), rel=1e-12)
    ka = json.loads((tmp_path / "ra" / "kpis.json").read_text())
    assert ka["stored_initial_kwh"] == pytest.approx(stored0 / 1000.0, rel=1e-12)
    assert abs(ka["balance_residual_wh"]) < 1e-3
    # a recorded KPI equals the sum over the recorded rows only
    assert ka["grid_import_kwh"] == pytest.approx(tail.grid_import_w.sum() * 0.25 / 1000.0)
    # deterministic: a rerun writes identical files
    run_file(a, out_dir=tmp_path / "ra2")
    for name in ("timeseries.parquet", "events.parquet", "timeseries_groups.parquet"):
        assert (tmp_path / "ra" / name).read_bytes() == (tmp_path / "ra2" / name).read_bytes()


def test_warmup_days_is_checked(tmp_path):
    f = _write(tmp_path, "bad", start="2026-04-07T00:00:00+09:00", days=1, warmup=31)
    r = subprocess.run(
        [sys.executable, "-m", "cps_sim", "validate", str(f)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "warmup_days" in r.stderr + r.stdout
    # an oracle with regret compares with an optimum that has no warm-up: refused
    text = SMALL.format(start="2026-04-07T00:00:00+09:00", days=1, warmup=1) + "oracle: {}\n"
    f2 = tmp_path / "oracle.yaml"
    f2.write_text(text, encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "cps_sim", "validate", str(f2)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "warmup_days must be 0 with an oracle" in r.stderr + r.stdout


def test_hil_refuses_a_warmup_with_one_line():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "hil",
            str(REPO / "scenarios" / "hil_demo.yaml"),
            "--set",
            "warmup_days=1",
            "--duration",
            "15m",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and "warmup_days" in lines[-1]


def test_realtime_run_simulates_the_warmup_as_fast_as_possible(tmp_path):
    # one recorded hour at 3600x (about 1 s of wall time); the day of warm-up at that
    # pace would take 24 s
    f = _write(tmp_path, "rt", start="2026-04-07T00:00:00+09:00", days=1 / 24, warmup=1)
    f.write_text(f.read_text() + "mode: realtime\nspeed: 3600\n", encoding="utf-8")
    t0 = time.perf_counter()
    run_file(f, out_dir=tmp_path / "rt_run")
    wall = time.perf_counter() - t0
    ts = _read(tmp_path / "rt_run", "timeseries.parquet")
    assert len(ts) == 4
    assert 0.7 < wall < 12.0, wall


def test_gymnasium_episode_starts_after_the_warmup(tmp_path):
    pytest.importorskip("gymnasium")
    import cps_sim.rl as rl

    f = _write(tmp_path, "rl", start="2026-04-07T00:00:00+09:00", days=0.25, warmup=1)
    env = rl.CpsSimEnv(f)
    obs, info = env.reset(seed=0)
    assert info["time_s"] == 0.0 and obs[-1] == pytest.approx(0.25 * 86400.0)
    steps, done = 0, False
    while not done:
        obs, _r, term, trunc, info = env.step(np.zeros(env.action_space.shape))
        steps, done = steps + 1, term or trunc
    assert steps == 24 and info["time_s"] == 0.25 * 86400.0


def test_a_data_file_that_misses_the_warmup_is_one_clear_error(tmp_path):
    # the price file starts on 10 May: a three-day warm-up before 11 May is not covered
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cps_sim",
            "run",
            str(REPO / "scenarios" / "v2g_evening_peak.yaml"),
            "--set",
            "warmup_days=3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error:"), r.stderr
    assert "warmup_days: 3 runs from 2026-05-08T00:00:00+09:00" in lines[-1]
    assert not out.exists()
