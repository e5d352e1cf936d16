"""Measured load profiles (smart-meter or logger exports) for a site group.

Layout (UTF-8 or cp932)::

    timestamp,home_a,home_b
    2026-04-06T00:00:00+09:00,0.41,0.38
    2026-04-06T00:30:00+09:00,0.35,0.40

``timestamp`` is the start of each interval (ISO 8601; without an offset it is read in the
scenario's time zone); the intervals are equally spaced (1 min .. 1 h).  Each value column
is one measured profile in kW (``unit: kw``, average power over the interval) or in kWh per
interval (``unit: kwh``).  A site group uses one column (``profile_column``); its shape,
averaged onto the run's ticks, is scaled to each site's ``annual_kwh`` like the built-in
profiles (``annual_kwh: measured`` is not offered: give the measured annual energy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cps_sim.data.tables import (
    DataFileError,
    check_intervals,
    column_index,
    find_header,
    parse_numbers,
    parse_times,
    read_csv_rows,
)

TIME_COLUMNS = ("timestamp", "time", "datetime", "日時")


def read_load_profiles(path: str | Path, tz: str = "Asia/Tokyo", unit: str = "kw") -> pd.DataFrame:
    """All value columns as average power [kW] per interval, indexed by interval start.

    ``attrs['step_s']`` holds the interval length.  Errors name file, line and column.
    """
    if unit not in ("kw", "kwh"):
        raise ValueError(f"unit must be 'kw' or 'kwh', got {unit!r}")
    rows = read_csv_rows(path)
    h = find_header(rows, [TIME_COLUMNS], max_preamble=3)
    header = rows.records[h]
    c_t = column_index(rows, header, TIME_COLUMNS, rows.lines[h])
    assert c_t is not None
    values = [i for i in range(len(header)) if i != c_t and header[i]]
    if not values:
        raise rows.error("no value columns besides the timestamp", rows.lines[h])
    recs = range(h + 1, len(rows.records))
    if len(recs) < 2:
        raise rows.error("needs at least two data lines", rows.lines[h])
    idx = parse_times(rows, recs, lambda r: r[c_t] if c_t < len(r) else "", header[c_t], tz)
    t_s = np.asarray((idx - idx[0]) / pd.Timedelta(seconds=1), dtype=float)
    step = float(t_s[1] - t_s[0])
    if not 60.0 <= step <= 3600.0:
        raise rows.error(f"intervals of {step:g} s; expected 60 .. 3600 s", rows.lines[h + 2])
    check_intervals(rows, [rows.lines[i] for i in recs], t_s, step)
    out = pd.DataFrame(index=pd.DatetimeIndex(idx, name="timestamp"))
    for c in values:
        v = parse_numbers(rows, recs, c, header[c])
        neg = np.flatnonzero(v < 0)
        if neg.size:
            i = recs[int(neg[0])]
            raise rows.error(f"negative load {rows.records[i][c]!r}", rows.lines[i], header[c])
        out[header[c]] = v / (step / 3600.0) if unit == "kwh" else v
    out.attrs.update(step_s=step, file=str(path))
    return out


def profile_w_per_kwh(
    df: pd.DataFrame, column: str | None, tick_starts: pd.DatetimeIndex, tick_s: float
) -> np.ndarray:
    """Tick-average power [W] of one site consuming 1 kWh a year with the measured shape.

    The run must lie inside the data; the shape's own mean over the run sets the scale
    (a run of a week gets the week's shape at the annual mean power).
    """
    from cps_sim.data.tables import interval_mean

    file = df.attrs.get("file", "<profile>")
    if column is None:
        if df.shape[1] != 1:
            raise DataFileError(
                file,
                f"several profiles ({', '.join(df.columns)}): name one with load.profile_column",
            )
        column = str(df.columns[0])
    if column not in df.columns:
        raise DataFileError(file, f"no column {column!r} (columns: {', '.join(df.columns)})")
    step = float(df.attrs["step_s"])
    t0 = df.index[0]
    starts = np.asarray((df.index - t0) / pd.Timedelta(seconds=1), dtype=float)
    ends = starts + step
    edges = np.asarray((tick_starts - t0) / pd.Timedelta(seconds=1), dtype=float)
    edges = np.concatenate([edges, [edges[-1] + tick_s]]) if edges.size else edges
    if edges.size == 0 or edges[0] < -1e-6 or edges[-1] > ends[-1] + 1e-6:
        raise DataFileError(
            file,
            f"the data cover {df.index[0]} .. "
            f"{df.index[-1] + pd.Timedelta(seconds=step)}, the run needs "
            f"{tick_starts[0]} .. {tick_starts[-1] + pd.Timedelta(seconds=tick_s)}",
        )
    kw = interval_mean(starts, ends, df[column].to_numpy(float), edges)
    mean_kw = float(kw.mean())
    if not mean_kw > 0:
        raise DataFileError(file, f"column {column!r} is zero over the run")
    # 1 kWh a year is a mean power of 1000/8760 W: the shape at that mean
    return kw / mean_kw * (1000.0 / 8760.0)
