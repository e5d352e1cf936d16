"""Reading user data files (CSV) with errors that name the file, the line and the column.

Real data arrive in many encodings and layouts: UTF-8 with or without BOM, or cp932
(Shift_JIS) for Japanese utilities' files; preamble lines before the header; units in a
preamble line.  :func:`read_csv_rows` keeps the physical line number of every record, so
each importer can say exactly where a bad value is.
"""

from __future__ import annotations

import csv
import io
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cps_sim.core.errors import CpsSimError

MAX_DATA_BYTES = 200 * 1024 * 1024


class DataFileError(CpsSimError):
    """A data file cannot be used; the message names file, line, column and problem."""

    exit_code = 2

    def __init__(
        self, file: str | Path, message: str, line: int | None = None, column: str | None = None
    ):
        self.file = str(file)
        self.line = line
        self.column = column
        where = self.file + (f":{line}" if line is not None else "")
        col = f"column {column!r}: " if column is not None else ""
        super().__init__(f"{where}: {col}{message}")


def norm(name: str) -> str:
    """Header name compared in NFKC form without spaces (full-width brackets match)."""
    return unicodedata.normalize("NFKC", str(name)).strip().replace(" ", "").lstrip("\ufeff")


@dataclass
class Rows:
    """Records of a CSV file with the physical line number of each."""

    path: Path
    lines: list[int]
    records: list[list[str]]
    encoding: str

    def error(
        self, message: str, line: int | None = None, column: str | None = None
    ) -> DataFileError:
        return DataFileError(self.path, message, line, column)


def read_csv_rows(path: str | Path, encodings: Sequence[str] = ("utf-8-sig", "cp932")) -> Rows:
    """Decode (first encoding that works) and split into records; blank lines dropped."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_DATA_BYTES:
            raise DataFileError(
                p,
                f"file is {size:,} bytes, more than the "
                f"{MAX_DATA_BYTES:,}-byte limit for data files",
            )
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataFileError(p, "file not found") from None
    except IsADirectoryError:
        raise DataFileError(p, "is a directory, not a data file") from None
    except OSError as exc:
        raise DataFileError(p, f"cannot read: {exc.strerror}") from None
    text = None
    used = ""
    first_error: UnicodeDecodeError | None = None
    for enc in encodings:
        try:
            text = raw.decode(enc)
            used = enc
            break
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
    if text is None:
        assert first_error is not None
        line = raw[: first_error.start].count(b"\n") + 1
        raise DataFileError(
            p,
            f"cannot decode byte 0x{raw[first_error.start]:02x} at offset "
            f"{first_error.start} as {' or '.join(encodings)}",
            line,
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    lines: list[int] = []
    records: list[list[str]] = []
    start = 1
    try:
        for rec in reader:
            end = reader.line_num
            if any(c.strip() for c in rec):
                lines.append(start)
                records.append([c.strip() for c in rec])
            start = end + 1
    except csv.Error as exc:
        raise DataFileError(p, f"not a valid CSV record: {exc}", reader.line_num) from None
    return Rows(p, lines, records, used)


def find_header(rows: Rows, required: Sequence[Sequence[str]], max_preamble: int = 10) -> int:
    """Index of the first record that names one of each group of ``required`` columns."""
    for i, rec in enumerate(rows.records[: max_preamble + 1]):
        names = {norm(c) for c in rec}
        if all(any(norm(a) in names for a in group) for group in required):
            return i
    want = "; ".join(" or ".join(repr(a) for a in g) for g in required)
    raise rows.error(
        f"no header line with the columns {want} in the first {max_preamble + 1} lines"
    )


def column_index(
    rows: Rows, header: list[str], names: Sequence[str], header_line: int, required: bool = True
) -> int | None:
    """Position of the first of ``names`` in ``header`` (NFKC, spaces ignored)."""
    normed = [norm(h) for h in header]
    for n in names:
        if norm(n) in normed:
            return normed.index(norm(n))
    if required:
        raise rows.error(
            f"missing column {' or '.join(repr(n) for n in names)} (columns: {', '.join(header)})",
            header_line,
        )
    return None


def parse_numbers(
    rows: Rows, recs: range, col: int, name: str, allow_empty: bool = False
) -> np.ndarray:
    """Floats of one column (thousands separators allowed); errors name line and column."""
    out = np.empty(len(recs))
    for j, i in enumerate(recs):
        rec = rows.records[i]
        cell = rec[col] if col < len(rec) else ""
        if cell == "" and allow_empty:
            out[j] = math.nan
            continue
        try:
            v = float(cell.replace(",", ""))
        except ValueError:
            raise rows.error(f"not a number: {cell!r}", rows.lines[i], name) from None
        if not math.isfinite(v):
            raise rows.error(f"not a finite number: {cell!r}", rows.lines[i], name)
        out[j] = v
    return out


def parse_times(
    rows: Rows,
    recs: range,
    cell: Callable[[list[str]], str],
    name: str,
    tz: str,
    formats: Sequence[str] | None = None,
) -> pd.DatetimeIndex:
    """Timezone-aware timestamps; naive values are local time in ``tz``."""
    texts = [cell(rows.records[i]) for i in recs]
    out: list[pd.Timestamp] = []
    for i, t in zip(recs, texts, strict=True):
        ts = None
        for f in formats or (None,):
            try:
                ts = pd.Timestamp(t) if f is None else pd.Timestamp(pd.to_datetime(t, format=f))
                break
            except (ValueError, TypeError):
                continue
        if ts is None or pd.isna(ts):
            raise rows.error(f"not a date/time: {t!r}", rows.lines[i], name)
        ts = ts.tz_localize(tz) if ts.tzinfo is None else ts.tz_convert(tz)
        out.append(ts)
    return pd.DatetimeIndex(out)


def interval_mean(
    starts_s: np.ndarray, ends_s: np.ndarray, values: np.ndarray, edges_s: np.ndarray
) -> np.ndarray:
    """Mean of a step series (value held over [start, end)) over each [edges[k], edges[k+1]).

    Exact for any tick length (the step function is integrated, then differenced).
    The intervals must be sorted, contiguous and cover the edges.
    """
    knots = np.concatenate([starts_s[:1], ends_s])
    cum = np.concatenate([[0.0], np.cumsum(values * (ends_s - starts_s))])
    c = np.interp(edges_s, knots, cum)
    return np.diff(c) / np.diff(edges_s)


def check_intervals(rows: Rows, lines: list[int], starts: np.ndarray, step_s: float) -> None:
    """Timestamps must rise by one step each: names the first line that does not."""
    d = np.diff(starts)
    bad = np.flatnonzero(np.abs(d - step_s) > 1e-6)
    if bad.size:
        j = int(bad[0]) + 1
        what = "repeats or goes back" if d[j - 1] <= 0 else f"jumps by {d[j - 1] / 60:g} min"
        raise rows.error(f"time {what} (expected steps of {step_s / 60:g} min)", lines[j])


def cover(
    rows: Rows,
    starts_s: np.ndarray,
    ends_s: np.ndarray,
    need_s: tuple[float, float],
    clock_text: Callable[[float], str],
) -> None:
    """The data must cover the run; say which part is missing."""
    a, b = need_s
    if starts_s.size == 0 or starts_s[0] > a + 1e-6 or ends_s[-1] < b - 1e-6:
        have = (
            f"{clock_text(starts_s[0])} .. {clock_text(ends_s[-1])}" if starts_s.size else "nothing"
        )
        raise rows.error(f"the data cover {have}, the run needs {clock_text(a)} .. {clock_text(b)}")
