"""events.parquet streamed while the run goes (issue 11): the engine's events, written day
by day in row groups, make the file that the whole table written at the end made —
the same rows and order (a lexsort of every logged event), bytes and metadata — and
the KPIs and expectations come from what was written; the logs are emptied at every
flush; a write error mid-run is today's one-line results error and replaces nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cps_sim.core.errors import SimulationError
from cps_sim.experiment import event_stream
from cps_sim.experiment.results import PARQUET_OPTIONS, write_parquet
from cps_sim.experiment.run import run_scenario, simulate
from cps_sim.world.populations.ev import EVENT_FIELDS
from tests.conftest import REPO, fixed_trip, scenario

DAY = 86400.0


def two_groups(**top):
    """Two site groups with EVs and a warm-up day, three recorded days at hourly ticks.
    The homes' EVs leave at 07:00 and are back at midnight (on a tick and a flush
    boundary: the clock starts at local midnight) every day; the flats' trips are random."""
    return scenario(
        [
            {
                "name": "homes",
                "count": 4,
                "ev": {"share": 1.0, "charger_kw": 3, "trips": fixed_trip(7.0, 17.0, 40.0)},
            },
            {"name": "flats", "count": 9, "ev": {"share": 0.7, "charger_kw": 6}},
        ],
        duration_days=3,
        warmup_days=1,
        tick_s=3600,
        **top,
    )


def tapped_run(sc, out: Path):
    """``run_scenario`` through a ``simulator`` (as ``cps-sim hil`` runs it) that keeps a
    copy of every event the groups log; returns the copies (group after group) and the
    world."""
    logged: dict[str, list[dict[str, np.ndarray]]] = {}
    seen = {}

    def tap(env, world):
        seen["world"] = world
        for g in world.groups:
            rounds = logged.setdefault(g.name, [])
            append = g.log.append

            def spy(*cols, _append=append, _rounds=rounds):
                _append(*cols)
                _rounds.append(
                    {f: np.array(c, copy=True) for f, c in zip(EVENT_FIELDS, cols, strict=True)}
                )

            g.log.append = spy

    res = run_scenario(sc, out, simulator=lambda bd: simulate(sc, base_dir=bd, setup=tap))
    return res, [logged[g.name] for g in seen["world"].groups], seen["world"]


def lexsorted_table(rounds, world) -> pa.Table:
    """The events table as it was built before streaming: every log concatenated, the
    warm-up dropped, ``np.lexsort`` by time, EV and kind."""
    cols = {f: np.concatenate([r[f] for group in rounds for r in group]) for f in EVENT_FIELDS}
    t0 = world.warmup_ticks * world.tick_s
    keep = cols["time_s"] >= t0
    order = np.lexsort((cols["kind"][keep], cols["ev_id"][keep], cols["time_s"][keep]))
    cols = {f: v[keep][order] for f, v in cols.items()}
    idx = world.clock.utc_index(cols["time_s"])
    return pa.table(
        {
            "time": pa.array(idx.as_unit("us"), type=pa.timestamp("us", tz="UTC")),
            "time_s": pa.array(cols["time_s"] - t0),
            "kind": pa.array(np.where(cols["kind"] == 1, "arrival", "departure").tolist()),
            "ev_id": pa.array(cols["ev_id"]),
            "site": pa.array(cols["site"]),
            "soc": pa.array(cols["soc"]),
            "trip_energy_wh": pa.array(cols["energy_wh"]),
            "unmet_wh": pa.array(cols["unmet_wh"]),
        }
    )


def run_meta(folder: Path) -> dict[str, str]:
    """The run's facts as ``write_parquet`` put them into timeseries.parquet."""
    md = pq.read_schema(folder / "timeseries.parquet").metadata
    return {k.decode(): v.decode() for k, v in md.items() if k.startswith(b"cps_sim.")}


@pytest.mark.parametrize("row_group_rows", [7, None])
def test_streamed_file_is_the_table_of_every_logged_event(tmp_path, monkeypatch, row_group_rows):
    if row_group_rows:
        monkeypatch.setattr(event_stream, "ROW_GROUP_ROWS", row_group_rows)
    sc = two_groups()
    res, rounds, world = tapped_run(sc, tmp_path / "r")
    path = tmp_path / "r" / "events.parquet"
    want = lexsorted_table(rounds, world)
    got = pq.read_table(path)
    assert got.replace_schema_metadata(None).equals(want)
    # the cases that matter were there: two groups, warm-up events (dropped), events on a
    # tick boundary (07:00) and on a flush boundary (midnight), several row groups
    t0 = world.warmup_ticks * world.tick_s
    all_t = np.concatenate([r["time_s"] for group in rounds for r in group])
    assert world.warmup_ticks and (all_t < t0).any()
    t = want.column("time_s").to_numpy()
    assert (t % DAY == 0).any() and (t % DAY == 7 * 3600).any()
    assert set(want.column("site").to_numpy()) & set(range(4))
    assert set(want.column("site").to_numpy()) & set(range(4, 13))
    if row_group_rows:
        assert pq.read_metadata(path).num_row_groups == -(-want.num_rows // row_group_rows) > 3
    # byte for byte the file one write of the whole table makes, with the run's metadata
    meta = run_meta(tmp_path / "r")
    assert {"cps_sim.stored_initial_wh", "cps_sim.scenario_hash"} <= set(meta)
    ref = tmp_path / "ref.parquet"
    if row_group_rows:
        md = {k.encode(): v.encode() for k, v in meta.items()}
        pq.write_table(
            want.replace_schema_metadata(md), ref, row_group_size=row_group_rows, **PARQUET_OPTIONS
        )
    else:
        write_parquet(ref, want, meta)
    assert path.read_bytes() == ref.read_bytes()
    assert pq.read_schema(path).metadata == pq.read_schema(ref).metadata
    assert pq.read_metadata(path).metadata == pq.read_metadata(ref).metadata
    assert res.kpis["ev_departures"] == (want.column("kind").to_numpy(False) == "departure").sum()


def test_same_scenario_and_seed_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(event_stream, "ROW_GROUP_ROWS", 10)
    sc = two_groups()
    run_scenario(sc, tmp_path / "a")
    run_scenario(sc, tmp_path / "b")
    for name in ("events.parquet", "timeseries.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert pq.read_metadata(tmp_path / "a" / "events.parquet").num_row_groups > 1


def test_kpis_and_expectations_from_the_file_equal_those_of_the_table(tmp_path):
    """run_scenario's KPIs (from the departures read back) and expectations (from the
    file) are those of the in-memory table that ``Recorder.events`` gives."""
    sc = two_groups(
        expect=[
            {"name": "some_left", "check": "kpi.ev_departures > 10"},
            {"name": "soc", "check": "ev.soc_at_departure <= 1"},
        ]
    )
    res = run_scenario(sc, tmp_path / "r")
    rec = simulate(sc)
    events = rec.events()
    assert events.equals(pq.read_table(tmp_path / "r" / "events.parquet"))
    assert events.schema.metadata is None  # as the table was before streaming
    want = rec.kpis(events)
    assert set(res.kpis) == set(want)
    for k, v in want.items():
        assert res.kpis[k] == v or (np.isnan(v) and np.isnan(res.kpis[k])), k
    assert res.kpis["ev_departures"] > 10
    assert res.expectations is not None and res.expectations.passed


def test_logs_are_emptied_at_every_flush():
    sc = two_groups()
    seen = []

    def on_tick(world, r):  # runs after the recorder's on_tick
        rows = sum(g.log.rows for g in world.groups)
        seen.append((r.t_end_s, rows))

    rec = simulate(sc, on_tick=on_tick)
    flushed = [rows for t, rows in seen if t % DAY == 0]
    assert len(flushed) == 4 and not any(flushed)  # warm-up day + 3 days, nothing left
    assert max(rows for _, rows in seen) > 0  # in between, the day's events are held
    assert rec.event_stream.flushes == 4
    assert rec.events().num_rows > 0
    assert rec.event_stream.flushes == 5  # and the last one at the end
    with pytest.raises(SimulationError, match="closed"):  # nothing more can be recorded
        rec.event_stream.flush([g.log for g in rec.world.groups], 1e9)


DRIVER = textwrap.dedent("""\
    import json, resource, signal, sys
    from pathlib import Path

    from cps_sim.core.errors import ResultsError
    from cps_sim.experiment import event_stream
    from cps_sim.experiment.run import run_scenario, simulate
    from cps_sim.scenario.loader import load_scenario

    event_stream.ROW_GROUP_ROWS = 8  # a row group every few events: written mid-run
    sc = load_scenario(sys.argv[1])
    ticks = []

    def simulator(base_dir):
        return simulate(sc, base_dir=base_dir, on_tick=lambda w, r: ticks.append(r.k))

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    limit = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        run_scenario(sc, Path(sys.argv[2]), simulator=simulator)
    except ResultsError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                          "ticks": len(ticks), "n_ticks": sc.n_ticks}))
    """)


def test_write_error_mid_run_is_the_results_error_and_replaces_nothing(tmp_path):
    """A real EFBIG (file-size limit) while the events stream writes, in the middle of the
    run: the run stops with the one-line results error, the previous results folder is
    untouched and no staging folder is left."""
    yaml = tmp_path / "sc.yaml"
    yaml.write_text(
        textwrap.dedent("""\
            version: 1
            name: efbig
            seed: 5
            start: 2026-04-06T00:00:00+09:00
            duration_days: 6
            tick_s: 3600
            sites:
              - {name: homes, count: 40, ev: {share: 1.0}}
            """)
    )
    out = tmp_path / "out"
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO)}
    first = subprocess.run(
        [sys.executable, "-m", "cps_sim", "run", str(yaml), "--out", str(out), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    size = len(before["events.parquet"])
    (tmp_path / "driver.py").write_text(DRIVER)
    r = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(yaml), str(out), str(size // 3)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["error"] == "DiskFullError"
    assert got["message"].startswith(f"{out}: cannot write the results: ")
    assert "File too large" in got["message"] and got["message"].endswith("nothing was replaced")
    assert got["ticks"] < got["n_ticks"]  # it failed while the run was going
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".cps_sim-")]
