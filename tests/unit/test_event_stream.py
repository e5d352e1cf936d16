"""The events stream (``experiment/event_stream.py``) over random logs: whatever the logs,
the flush cutoffs, the warm-up and the row-group size, the file is the one the whole
table written at once would be (rows ordered as ``np.lexsort`` orders them, row groups,
bytes, metadata), the logs keep only events at or after the last cutoff, and an event
that comes after its cutoff was written is an error, not a wrong order."""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.core.clock import Clock
from cps_sim.core.errors import SimulationError
from cps_sim.experiment.event_stream import EVENT_SCHEMA, EventSink, EventStream
from cps_sim.experiment.results import PARQUET_OPTIONS
from cps_sim.world.populations.ev import EVENT_FIELDS, EventLog

CLOCK = Clock(dt.datetime(2026, 4, 6, tzinfo=dt.timezone(dt.timedelta(hours=9))))
TICK_S = 10.0
META = {"cps_sim.tick_s": "10.0", "cps_sim.stored_initial_wh": "1234.5", "cps_sim.seed": "7"}


def reference(chunks: list[list[dict[str, np.ndarray]]], t0_s: float) -> pa.Table:
    """Today's table: every group's log concatenated (group after group), the warm-up
    dropped, ``np.lexsort`` by time, EV and kind."""
    cols = {
        f: np.concatenate([c[f] for group in chunks for c in group] or [np.empty(0)])
        for f in EVENT_FIELDS
    }
    keep = cols["time_s"] >= t0_s
    cols = {f: v[keep] for f, v in cols.items()}
    order = np.lexsort((cols["kind"], cols["ev_id"], cols["time_s"]))
    cols = {f: v[order] for f, v in cols.items()}
    idx = CLOCK.utc_index(cols["time_s"])
    return pa.table(
        {
            "time": pa.array(idx.as_unit("us"), type=pa.timestamp("us", tz="UTC")),
            "time_s": pa.array(cols["time_s"] - t0_s, pa.float64()),
            "kind": pa.array(
                np.where(cols["kind"] == 1, "arrival", "departure").tolist(), pa.string()
            ),
            "ev_id": pa.array(cols["ev_id"], pa.int64()),
            "site": pa.array(cols["site"], pa.int64()),
            "soc": pa.array(cols["soc"], pa.float64()),
            "trip_energy_wh": pa.array(cols["energy_wh"], pa.float64()),
            "unmet_wh": pa.array(cols["unmet_wh"], pa.float64()),
        }
    )


@st.composite
def chunk(draw, lo_s: float, ahead: bool) -> dict[str, np.ndarray]:
    """One round of a group's events in the tick from ``lo_s``: times on a coarse grid
    (ties in time, EV and kind are common; the tick's start, the previous cutoff, too);
    ``ahead``: some times in the next tick (logged early: they must wait)."""
    n = draw(st.integers(0, 6))
    span = 8 if ahead else 4
    t = lo_s + np.array(draw(st.lists(st.integers(0, span - 1), min_size=n, max_size=n))) * (
        TICK_S / 4
    )
    ints = st.lists(st.integers(0, 3), min_size=n, max_size=n)
    vals = st.lists(st.floats(0, 1e4, allow_nan=False, width=32), min_size=n, max_size=n)
    return {
        "time_s": t.astype(float),
        "ev_id": np.array(draw(ints), dtype=np.int64),
        "site": np.array(draw(ints), dtype=np.int64),
        "kind": np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.int8),
        "soc": np.array(draw(vals), dtype=float),
        "energy_wh": np.array(draw(vals), dtype=float),
        "unmet_wh": np.array(draw(vals), dtype=float),
    }


@st.composite
def runs(draw):
    """Ticks of 1-3 groups' logs, the ticks after which the stream flushes, the warm-up
    length and the row-group size."""
    n_groups = draw(st.integers(1, 3))
    n_ticks = draw(st.integers(1, 8))
    ahead = draw(st.booleans())
    ticks = [
        [
            draw(st.lists(chunk(k * TICK_S, ahead), max_size=3))
            for _ in range(n_groups)  # rounds of every group in this tick
        ]
        for k in range(n_ticks)
    ]
    flush_after = draw(st.sets(st.integers(0, n_ticks - 1)))
    warmup_ticks = draw(st.integers(0, n_ticks))
    row_group_rows = draw(st.integers(1, 12))
    return n_groups, ticks, flush_after, warmup_ticks, row_group_rows


def stream_run(n_groups, ticks, flush_after, warmup_ticks, row_group_rows, folder: Path):
    """Feed the ticks' rounds to the logs and the logs to a file stream; returns the
    stream, the rounds each group logged and the logs."""
    logs = [EventLog() for _ in range(n_groups)]
    logged: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n_groups)]
    sink = EventSink(folder / "events.parquet", {"cps_sim.seed": "7"})
    stream = EventStream(CLOCK, warmup_ticks * TICK_S, sink, row_group_rows=row_group_rows)
    for k, rounds in enumerate(ticks):
        for g, group_rounds in enumerate(rounds):
            for c in group_rounds:
                logs[g].append(*(c[f] for f in EVENT_FIELDS))
                logged[g].append(c)
        if k in flush_after:
            cutoff = (k + 1) * TICK_S
            stream.flush(logs, cutoff)
            for log in logs:  # only events at or after the cutoff stay
                assert (log.columns()["time_s"] >= cutoff).all()
    stream.flush(logs, math.inf)
    assert all(log.rows == 0 for log in logs)
    stream.close(META)
    return stream, logged


@settings(max_examples=80, deadline=None)
@given(runs())
def test_streamed_file_is_the_whole_table_written_at_once(run):
    *_, warmup_ticks, row_group_rows = run
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        stream, logged = stream_run(*run, folder)
        path = folder / "events.parquet"
        want = reference(logged, warmup_ticks * TICK_S)
        got = pq.read_table(path)
        assert got.schema.equals(EVENT_SCHEMA)  # names, types (metadata apart)
        assert got.replace_schema_metadata(None).equals(want)
        assert stream.read().equals(got) and stream.rows == want.num_rows
        # the same bytes as one write of the whole table (what write_parquet does)
        ref = folder / "ref.parquet"
        md = {k.encode(): v.encode() for k, v in META.items()}
        pq.write_table(
            want.replace_schema_metadata(md), ref, row_group_size=row_group_rows, **PARQUET_OPTIONS
        )
        assert path.read_bytes() == ref.read_bytes()
        meta = pq.read_metadata(path)
        assert meta.num_row_groups == max(math.ceil(want.num_rows / row_group_rows), 1)
        assert meta.metadata == pq.read_metadata(ref).metadata
        assert pq.read_schema(path).metadata == {**md}
        # the departures-only read of the KPIs: the same rows of the departures
        dep = stream.departures(["unmet_wh", "soc"])
        is_dep = np.asarray(want.column("kind").to_pylist()) == "departure"
        np.testing.assert_array_equal(
            dep.column("unmet_wh").to_numpy(), want["unmet_wh"].to_numpy()[is_dep]
        )
        np.testing.assert_array_equal(dep.column("soc").to_numpy(), want["soc"].to_numpy()[is_dep])


def test_in_memory_stream_by_hand():
    logs = [EventLog(), EventLog()]
    mem = EventStream(CLOCK, TICK_S)
    logs[0].append(
        [5.0, 12.5, 20.0], [1, 2, 3], [0, 0, 1], [0, 1, 0], [0.5] * 3, [0.0] * 3, [1.0] * 3
    )
    logs[1].append([12.5, 10.0], [0, 2], [4, 4], [1, 0], [0.4, 0.3], [2.0, 0.0], [0.0, 3.0])
    mem.flush(logs, 2 * TICK_S)
    mem.flush(logs, math.inf)
    mem.close(META)
    t = mem.read()
    # 5.0 s is in the warm-up (the first tick); then by time, EV, kind: 10 (EV 2), 12.5
    # (EV 0 arrival, EV 2 arrival), 20 (EV 3)
    assert t.column("time_s").to_pylist() == [0.0, 2.5, 2.5, 10.0]
    assert t.column("ev_id").to_pylist() == [2, 0, 2, 3]
    assert t.column("kind").to_pylist() == ["departure", "arrival", "arrival", "departure"]
    assert t.schema.metadata == {k.encode(): v.encode() for k, v in META.items()}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(0, 3), st.integers(1, 5), st.data())
def test_an_event_before_a_written_cutoff_is_an_internal_error(
    n_groups, warmup_ticks, row_group_rows, data
):
    logs = [EventLog() for _ in range(n_groups)]
    stream = EventStream(CLOCK, warmup_ticks * TICK_S, row_group_rows=row_group_rows)
    cutoff = data.draw(st.integers(1, 20)) * TICK_S / 2
    stream.flush(logs, cutoff)
    late = data.draw(st.floats(0, cutoff, exclude_max=True))
    g = data.draw(st.integers(0, n_groups - 1))
    logs[g].append([cutoff, late], [1, 2], [0, 0], [0, 1], [0.5, 0.5], [0.0, 1.0], [0.0, 0.0])
    with pytest.raises(SimulationError, match=r"internal error.*out of order"):
        stream.flush(logs, cutoff + TICK_S)
    assert stream.rows == 0  # nothing of it was written
