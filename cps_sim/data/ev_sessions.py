"""EV charging sessions from a CSV: arrival, departure and energy, as ACN-Data and EV2Gym use.

Two layouts are read (by column name):

* **ACN-Data** (Caltech Adaptive Charging Network, the sessions export): ``connectionTime``,
  ``disconnectTime``, ``kWhDelivered`` and optionally ``sessionID``, ``stationID``,
  ``spaceID``, ``doneChargingTime``, ``siteID``, ``userID``, ``timezone``; timestamps as
  the API writes them (``Wed, 25 Apr 2018 11:08:04 GMT``) or ISO 8601;
* **generic / EV2Gym-style**: ``arrival``, ``departure`` (ISO 8601, or hours since the
  scenario start when numeric), ``energy_kwh`` (also ``required_energy_kwh``,
  ``kWhRequested``) and optionally ``max_power_kw``, ``station`` and ``id``.

The energy is what the session needs from the charger (ACN-Sim takes ``kWhDelivered`` as
the requested energy in the same way).  A site group with ``ev.sessions`` gets one vehicle
per session, away until its arrival and gone after its departure; stations map onto the
group's sites in sorted order (station ``k`` -> site ``k mod count``).  Without a
controller each vehicle charges at its charger's power from arrival until the energy is in
or it leaves - the uncontrolled rule of ACN-Sim's ``UncontrolledCharging`` and EV2Gym's
``ChargeAsFastAsPossible``; any EV strategy or EMS can steer the sessions instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cps_sim.data.tables import (
    DataFileError,
    Rows,
    column_index,
    find_header,
    parse_numbers,
    read_csv_rows,
)

ARRIVAL = ("connectionTime", "arrival", "arrival_time", "time_of_arrival")
DEPARTURE = ("disconnectTime", "departure", "departure_time", "time_of_departure")
ENERGY = (
    "kWhDelivered",
    "energy_kwh",
    "required_energy_kwh",
    "kWhRequested",
    "requested_energy_kwh",
)
POWER = ("max_power_kw", "maxPower_kw")
STATION = ("spaceID", "stationID", "station", "station_id", "charger")
SESSION_ID = ("sessionID", "id", "session_id")


@dataclass(frozen=True)
class Sessions:
    """Sessions in simulation seconds since the scenario start (sorted by arrival)."""

    arrival_s: np.ndarray
    departure_s: np.ndarray
    energy_wh: np.ndarray
    max_power_w: np.ndarray  # NaN: the group's charger power
    station: np.ndarray  # station labels (str)
    ids: np.ndarray  # session ids (str)
    lines: np.ndarray  # source line of each session
    file: str

    @property
    def n(self) -> int:
        return int(self.arrival_s.size)


def _times(
    rows: Rows, recs: range, col: int, name: str, start: pd.Timestamp, tz: str
) -> np.ndarray:
    out = np.empty(len(recs))
    for j, i in enumerate(recs):
        rec = rows.records[i]
        cell = rec[col] if col < len(rec) else ""
        try:
            out[j] = float(cell) * 3600.0  # hours since the scenario start
            continue
        except ValueError:
            pass
        try:
            ts = pd.Timestamp(cell)
        except (ValueError, TypeError):
            ts = None
        if ts is None or pd.isna(ts):
            raise rows.error(f"not a date/time or a number of hours: {cell!r}", rows.lines[i], name)
        ts = ts.tz_localize(tz) if ts.tzinfo is None else ts
        out[j] = (ts - start) / pd.Timedelta(seconds=1)
    return out


def read_sessions(path: str | Path, start: pd.Timestamp, tz: str = "Asia/Tokyo") -> Sessions:
    """Read a sessions CSV (ACN-Data or generic layout) relative to ``start``.

    Raises :class:`~cps_sim.data.tables.DataFileError` naming file, line and column
    (bad times, departure not after arrival, negative or missing energy).
    """
    rows = read_csv_rows(path)
    h = find_header(rows, [ARRIVAL, DEPARTURE, ENERGY], max_preamble=3)
    header = rows.records[h]
    lh = rows.lines[h]
    c_a = column_index(rows, header, ARRIVAL, lh)
    c_d = column_index(rows, header, DEPARTURE, lh)
    c_e = column_index(rows, header, ENERGY, lh)
    c_p = column_index(rows, header, POWER, lh, required=False)
    c_s = column_index(rows, header, STATION, lh, required=False)
    c_i = column_index(rows, header, SESSION_ID, lh, required=False)
    assert c_a is not None and c_d is not None and c_e is not None
    recs = range(h + 1, len(rows.records))
    if len(recs) == 0:
        raise rows.error("no sessions after the header", lh)
    start = pd.Timestamp(start)
    arr = _times(rows, recs, c_a, header[c_a], start, tz)
    dep = _times(rows, recs, c_d, header[c_d], start, tz)
    e_kwh = parse_numbers(rows, recs, c_e, header[c_e])
    p_kw = (
        parse_numbers(rows, recs, c_p, header[c_p], allow_empty=True)
        if c_p is not None
        else np.full(len(recs), np.nan)
    )
    lines = np.array([rows.lines[i] for i in recs])
    for name, bad in (
        (header[c_d], dep <= arr),
        (header[c_e], e_kwh < 0),
        (header[c_p] if c_p is not None else "", ~(p_kw > 0) & ~np.isnan(p_kw)),
    ):
        k = np.flatnonzero(bad)
        if k.size:
            j = int(k[0])
            msg = {
                header[c_d]: "departure must be after arrival",
                header[c_e]: "energy must be >= 0",
            }.get(name, "max power must be > 0")
            raise rows.error(msg, int(lines[j]), name)

    def labels(col: int | None, default: str) -> np.ndarray:
        if col is None:
            return np.array(
                [default if default != "#" else str(k) for k in range(len(recs))], dtype=object
            )
        return np.array(
            [rows.records[i][col] if col < len(rows.records[i]) else "" for i in recs], dtype=object
        )

    station = labels(c_s, "#")
    ids = labels(c_i, "#")
    order = np.argsort(arr, kind="stable")
    return Sessions(
        arr[order],
        dep[order],
        e_kwh[order] * 1000.0,
        p_kw[order] * 1000.0,
        station[order],
        ids[order],
        lines[order],
        str(path),
    )


def clip_to_run(s: Sessions, duration_s: float) -> Sessions:
    """Sessions that overlap [0, duration); one arriving before the start arrives at 0."""
    keep = (s.departure_s > 0.0) & (s.arrival_s < duration_s)
    if not keep.any():
        raise DataFileError(
            s.file,
            f"no session overlaps the run (0 .. {duration_s / 3600:g} h after the scenario start)",
        )
    return Sessions(
        np.maximum(s.arrival_s[keep], 0.0),
        s.departure_s[keep],
        s.energy_wh[keep],
        s.max_power_w[keep],
        s.station[keep],
        s.ids[keep],
        s.lines[keep],
        s.file,
    )


def station_sites(station: np.ndarray, n_sites: int) -> np.ndarray:
    """Site index of each session: sorted distinct stations onto sites, cyclically."""
    names = sorted({str(x) for x in station})
    pos = {name: k % n_sites for k, name in enumerate(names)}
    return np.array([pos[str(x)] for x in station], dtype=np.int64)
