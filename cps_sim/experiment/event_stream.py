"""The EV events of a run, written to ``events.parquet`` while the run goes.

A year of 100,000 homes logs 26 million departures and arrivals; held until the end they
took gigabytes.  Instead the recorder hands the site groups' logs to an
:class:`EventStream` once per simulated day and at the end (:meth:`EventStream.flush`):
the events whose times are final are taken out of the logs, ordered by (time, EV, kind)
and queued; a row group is written whenever :data:`ROW_GROUP_ROWS` rows wait.  The file
is the one a single ``write_parquet`` of the whole table writes, byte for byte: the same
rows in the same order, the same row groups (pyarrow's default of 1,048,576 rows) and the
same key-value metadata, set when the file is closed (:meth:`EventStream.close`) because
some of it is known only then (``cps_sim.stored_initial_wh`` after a warm-up).

**Which times are final.**  A site group logs an event when it integrates its sites past
the event's time: ``SiteGroup.advance_to(t)`` applies the queued events with time
*strictly* before ``t``, and the world never integrates beyond the end of the current
tick.  So when tick ``k`` has settled at ``T = (k + 1) · tick_s`` (where the recorder
flushes, in ``on_tick``):

* every logged event has a time ``< T``;
* every event still queued has a time ``≥ T`` (the queue was applied up to ``T``), and
  an event exactly at ``T`` is logged in the next tick;
* an event scheduled from now on has a time ``≥ T``: trips are planned at local midnight,
  an instant the environment has reached, for times from that midnight on (departure
  hours are in [0, 24), arrivals after departures); charging sessions and the vehicles
  away at the start are queued before the first tick.

Hence after tick ``k`` the events before ``T`` are complete and ``T`` is a safe cutoff
(events at or after it stay logged for the next flush).  The stream holds the engine to
it: an event that turns up with a time before a cutoff already taken raises
:class:`~cps_sim.core.errors.SimulationError` rather than be written out of order.  The
flush schedule depends on simulated time only, so the file is the same on every machine.

Where the file goes: :func:`stream_events` offers a file (the results folder's
``events.parquet``) to the first :class:`~cps_sim.experiment.recorder.Recorder` made
while it is open, whoever makes it (``run_scenario``'s own simulation, or the
``simulator`` of ``cps-sim hil``/``replay``/``--oracle``); any other recorder streams into
memory.  Either way the table is read back from what was written.
"""

from __future__ import annotations

import base64
import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cps_sim.core.clock import Clock
from cps_sim.core.errors import SimulationError
from cps_sim.experiment.results import PARQUET_OPTIONS
from cps_sim.world.populations.ev import ARRIVAL, DEPARTURE, EVENT_FIELDS, EventLog

__all__ = [
    "EVENT_SCHEMA",
    "ROW_GROUP_ROWS",
    "EventSink",
    "EventStream",
    "claim_sink",
    "stream_events",
]

# events.parquet's columns
EVENT_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("time_s", pa.float64()),  # from the end of the warm-up
        ("kind", pa.string()),  # "arrival" / "departure"
        ("ev_id", pa.int64()),
        ("site", pa.int64()),
        ("soc", pa.float64()),
        ("trip_energy_wh", pa.float64()),
        ("unmet_wh", pa.float64()),
    ]
)
# rows per row group: pyarrow's default for write_table (so the file is the same as one)
ROW_GROUP_ROWS = 1024 * 1024
_KIND_NAMES = {ARRIVAL: "arrival", DEPARTURE: "departure"}
_KINDS = pa.array([_KIND_NAMES[c] for c in range(len(_KIND_NAMES))])


def _event_order(time_s: np.ndarray, ev_id: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """``np.lexsort((kind, ev_id, time_s))``, fast for events logged almost in time order:
    one stable sort by time, then the (rare) runs of equal times sorted by EV and kind.
    The same permutation (full ties keep their logged order in both)."""
    order = np.argsort(time_s, kind="stable")
    t = time_s[order]
    tie = np.flatnonzero(t[1:] == t[:-1])
    if tie.size:
        pos = np.union1d(tie, tie + 1)  # every position inside a run of equal times
        rows = order[pos]
        order[pos] = rows[np.lexsort((kind[rows], ev_id[rows], time_s[rows]))]
    return order


@dataclass
class EventSink:
    """A file offered to the recorder of the run being written (:func:`stream_events`)."""

    path: Path
    facts: dict[str, str] = field(default_factory=dict)  # metadata beyond the recorder's
    stream: EventStream | None = None  # the stream that took it

    @property
    def error(self) -> OSError | None:
        """The write error that stopped the stream, if one did."""
        return self.stream.error if self.stream is not None else None


_SINK: ContextVar[EventSink | None] = ContextVar("cps_sim_event_sink", default=None)


@contextlib.contextmanager
def stream_events(path: Path, facts: Mapping[str, str] | None = None) -> Iterator[EventSink]:
    """Offer ``path`` to the first recorder made inside the block (:func:`claim_sink`);
    its events file carries ``facts`` besides the recorder's own metadata.  On the way
    out a stream that was not closed is abandoned (its file handle released)."""
    sink = EventSink(Path(path), dict(facts or {}))
    token = _SINK.set(sink)
    try:
        yield sink
    finally:
        _SINK.reset(token)
        if sink.stream is not None:
            sink.stream.abort()


def claim_sink() -> EventSink | None:
    """The file offered by :func:`stream_events` if no recorder has taken it yet."""
    sink = _SINK.get()
    return sink if sink is not None and sink.stream is None else None


class EventStream:
    """The ordered EV events of one run, written as they become final.

    ``t0_s``: end of the warm-up (earlier events are dropped, ``time_s`` counts from
    it); ``sink``: the file to write (None: an in-memory buffer).  Write errors are
    ``OSError`` as raised, remembered in :attr:`error`.
    """

    def __init__(
        self,
        clock: Clock,
        t0_s: float,
        sink: EventSink | None = None,
        row_group_rows: int | None = None,
    ):
        self.clock = clock
        self.t0_s = t0_s
        self.sink = sink
        self.row_group_rows = int(row_group_rows or ROW_GROUP_ROWS)
        self.cutoff_s = -math.inf  # every event before this time has been taken
        self.rows = 0  # rows written to the file
        self.row_groups = 0
        self.flushes = 0
        self.error: OSError | None = None
        self.metadata: dict[str, str] | None = None  # set when closed
        self._pending: list[pa.Table] = []  # ordered rows waiting for a full row group
        self._pending_rows = 0
        self._buffer: pa.Buffer | None = None  # the closed file, when in memory
        self._writer: pq.ParquetWriter | None = None
        if sink is not None:
            sink.stream = self
        try:
            self._out: pa.NativeFile = (
                pa.OSFile(str(sink.path), "wb") if sink is not None else pa.BufferOutputStream()
            )
            # the schema's metadata and ARROW:schema are written at close (store_schema=False)
            self._writer = pq.ParquetWriter(
                self._out, EVENT_SCHEMA, store_schema=False, **PARQUET_OPTIONS
            )
        except OSError as exc:
            self._fail(exc)

    @property
    def facts(self) -> dict[str, str]:
        return dict(self.sink.facts) if self.sink is not None else {}

    @property
    def closed(self) -> bool:
        return self.metadata is not None

    # ------------------------------------------------------------------ writing
    def flush(self, logs: Sequence[EventLog], cutoff_s: float) -> None:
        """Take the events before ``cutoff_s`` out of ``logs`` (every event before it
        must have been logged: see the module docstring), order them and queue them
        for the file; write every full row group.  ``math.inf`` takes everything."""
        if self.closed or self._writer is None:
            raise SimulationError("the events stream is closed: no events can be added")
        parts = [log.take(cutoff_s) for log in logs] or [EventLog().columns()]
        cols = {name: np.concatenate([p[name] for p in parts]) for name in EVENT_FIELDS}
        t = cols["time_s"]
        if t.size and float(t.min()) < self.cutoff_s:
            raise SimulationError(
                f"internal error: an EV event at t = {float(t.min()):.3f} s was logged after "
                f"the events before {self.cutoff_s:.3f} s had been written out; "
                "events.parquet would be out of order"
            )
        self.cutoff_s = max(self.cutoff_s, cutoff_s)
        self.flushes += 1
        table = self._table(cols)
        del cols, parts, t
        if table.num_rows:
            self._pending.append(table)
            self._pending_rows += table.num_rows
        self._write_groups(final=False)

    def _table(self, cols: dict[str, np.ndarray]) -> pa.Table:
        """The events after the warm-up, ordered by time, EV and kind, as Arrow columns."""
        time_s = cols["time_s"]
        keep = np.flatnonzero(time_s >= self.t0_s)  # events of the warm-up are not recorded
        time_s = time_s[keep]
        kind = cols["kind"][keep]
        order = _event_order(time_s, cols["ev_id"][keep], kind)
        time_s = time_s[order]
        rows = keep[order]  # the logged rows in their written order

        def sorted_column(name: str) -> pa.Array:
            return pa.array(cols[name][rows])

        idx = self.clock.utc_index(time_s)
        out = {
            "time": pa.array(idx.as_unit("us"), type=pa.timestamp("us", tz="UTC")),
            "time_s": pa.array(time_s - self.t0_s),
            # the names by code, without a Python string per row
            "kind": pc.take(_KINDS, pa.array(kind[order], pa.int8())),
            "ev_id": sorted_column("ev_id"),
            "site": sorted_column("site"),
            "soc": sorted_column("soc"),
            "trip_energy_wh": sorted_column("energy_wh"),
            "unmet_wh": sorted_column("unmet_wh"),
        }
        return pa.table(out, schema=EVENT_SCHEMA)

    def _write_groups(self, final: bool) -> None:
        """Write the queued rows in row groups of ``row_group_rows`` (the rest too if
        ``final``), as ``write_table`` splits one table."""
        n = self.row_group_rows
        if self._pending_rows < n and not (final and self._pending_rows):
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        self._pending = []
        start = 0
        while table.num_rows - start >= n or (final and start < table.num_rows):
            self._write(table.slice(start, n))
            start += n
        rest = table.slice(start) if start < table.num_rows else None
        self._pending = [rest] if rest is not None else []
        self._pending_rows = rest.num_rows if rest is not None else 0

    def _write(self, table: pa.Table) -> None:
        assert self._writer is not None
        try:
            self._writer.write_table(table, row_group_size=self.row_group_rows)
        except OSError as exc:
            self._fail(exc)
        self.rows += table.num_rows
        self.row_groups += 1

    def close(self, metadata: Mapping[str, str]) -> None:
        """Write the queued rows and the footer, with ``metadata`` as the file's key-value
        metadata and the schema's (``ARROW:schema`` included: what ``write_parquet``
        writes for the same table and metadata).  Closing again does nothing."""
        if self.closed:
            return
        if self._writer is None:
            raise SimulationError("the events stream failed and cannot be closed")
        self._write_groups(final=True)
        meta = {str(k): str(v) for k, v in metadata.items()}
        try:
            if not self.rows:  # an empty table is still one (empty) row group
                self._writer.write_table(EVENT_SCHEMA.empty_table())
            schema = EVENT_SCHEMA.with_metadata(meta).serialize().to_pybytes()
            self._writer.add_key_value_metadata(
                {**meta, "ARROW:schema": base64.b64encode(schema).decode("ascii")}
            )
            self._writer.close()
            if isinstance(self._out, pa.BufferOutputStream):
                self._buffer = self._out.getvalue()
            self._out.close()
        except OSError as exc:
            self._fail(exc)
        self._writer = None
        self.metadata = meta

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self.abort()
        raise exc

    def abort(self) -> None:
        """Give up without a footer (a failed write or run): release the file; what was
        written is not a Parquet file (the results folder is discarded).  Idempotent."""
        if self._writer is not None:
            self._writer.is_open = False  # no footer from its finaliser either
            self._writer = None
        out = getattr(self, "_out", None)
        if out is not None and not out.closed:
            with contextlib.suppress(OSError):
                out.close()

    # ------------------------------------------------------------------ reading back
    def _source(self) -> str | pa.BufferReader:
        if not self.closed:
            raise SimulationError("the events stream is still open: close it before reading")
        if self.sink is not None:
            return str(self.sink.path)
        assert self._buffer is not None
        return pa.BufferReader(self._buffer)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The written table (``columns`` of it), with the file's schema metadata."""
        return pq.read_table(self._source(), columns=list(columns) if columns else None)

    def departures(self, columns: Sequence[str]) -> pa.Table:
        """``kind`` and ``columns`` of the departures only, read one row group at a time
        (``kind`` dictionary-encoded): what the event KPIs need of a large run."""
        parts = []
        with pq.ParquetFile(self._source(), read_dictionary=["kind"]) as f:
            for i in range(f.num_row_groups):
                t = f.read_row_group(i, columns=["kind", *columns])
                parts.append(t.filter(pc.equal(t.column("kind"), _KIND_NAMES[DEPARTURE])))
        return pa.concat_tables(parts)
