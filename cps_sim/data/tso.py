"""TSO area supply-demand results (エリア需給実績) CSV: area demand and supply by source.

Each of the ten transmission system operators publishes per month or quarter a file with
one row per hour (older files) or per 30 minutes (newer ones).  The layout, confirmed from
public parsers (docs/shared libraries.md section 3)::

    単位[MWh]                                  <- 1-3 preamble lines, a unit among them
    DATE,TIME,エリア需要,原子力,火力(LNG),火力(石炭),火力(石油),火力(その他),水力,地熱,
    バイオマス,太陽光発電実績,太陽光出力制御量,風力発電実績,風力出力制御量,揚水,蓄電池,
    連系線,その他,合計
    2023/4/1,0:00,25410,0,13100,...

Values are energy per interval in MWh, or in 万kWh (= 10 MWh) in older files; the unit
is read from the preamble or the header (``単位[MWh]``, ``[万kWh]``, ``(MWh)``).  TIME is
the start of the interval (``time_label: end`` reads files stamped at the interval end).
:func:`read_area_supply_demand` returns average power in MW per interval: the energy
divided by the interval length.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cps_sim.data.tables import (
    Rows,
    check_intervals,
    column_index,
    find_header,
    norm,
    parse_numbers,
    read_csv_rows,
)

DATE_COLUMNS = ("DATE", "日付", "年月日")
TIME_COLUMNS = ("TIME", "時刻", "時間")
DEMAND_COLUMNS = ("エリア需要", "エリア需要(MWh)", "需要")
# Japanese column -> output name (MW); absent columns are skipped
SOURCE_COLUMNS = {
    "エリア需要": "area_demand_mw",
    "原子力": "nuclear_mw",
    "火力(LNG)": "thermal_lng_mw",
    "火力(石炭)": "thermal_coal_mw",
    "火力(石油)": "thermal_oil_mw",
    "火力(その他)": "thermal_other_mw",
    "水力": "hydro_mw",
    "地熱": "geothermal_mw",
    "バイオマス": "biomass_mw",
    "太陽光発電実績": "solar_mw",
    "太陽光出力制御量": "solar_curtailed_mw",
    "風力発電実績": "wind_mw",
    "風力出力制御量": "wind_curtailed_mw",
    "揚水": "pumped_hydro_mw",
    "蓄電池": "battery_mw",
    "連系線": "interconnector_mw",
    "その他": "other_mw",
    "合計": "total_mw",
}
UNITS_MWH = {"MWh": 1.0, "万kWh": 10.0, "GWh": 1000.0, "kWh": 1e-3}
_UNIT = re.compile(r"(万kWh|MWh|GWh|kWh)")


def _unit(rows: Rows, header_index: int, header: list[str], col: int) -> tuple[float, str]:
    """MWh per unit of the values, from the demand column's name or the preamble."""
    m = _UNIT.search(norm(header[col]))
    if m is None:
        for rec in rows.records[:header_index]:
            m = _UNIT.search(norm(" ".join(rec)))
            if m:
                break
    if m is None:
        raise rows.error(
            "no unit found: expected a preamble line such as 単位[MWh] or "
            "[万kWh], or the unit in the demand column's name",
            rows.lines[header_index],
        )
    return UNITS_MWH[m.group(1)], m.group(1)


def read_area_supply_demand(
    path: str | Path, tz: str = "Asia/Tokyo", time_label: str = "start"
) -> pd.DataFrame:
    """Read an エリア需給実績 file into average power [MW] per interval.

    Returns a DataFrame indexed by the tz-aware interval start with ``area_demand_mw``
    and the supply columns present (``solar_mw``, ``wind_mw``, ...); ``attrs`` hold
    ``step_s``, ``unit`` and ``file``.  Raises
    :class:`~cps_sim.data.tables.DataFileError` naming file, line and column.
    """
    if time_label not in ("start", "end"):
        raise ValueError(f"time_label must be 'start' or 'end', got {time_label!r}")
    rows = read_csv_rows(path)
    h = find_header(rows, [DATE_COLUMNS, TIME_COLUMNS, DEMAND_COLUMNS], max_preamble=5)
    header = rows.records[h]
    line_h = rows.lines[h]
    c_date = column_index(rows, header, DATE_COLUMNS, line_h)
    c_time = column_index(rows, header, TIME_COLUMNS, line_h)
    c_dem = column_index(rows, header, DEMAND_COLUMNS, line_h)
    assert c_date is not None and c_time is not None and c_dem is not None
    mwh_per_unit, unit = _unit(rows, h, header, c_dem)
    recs = range(h + 1, len(rows.records))
    if len(recs) == 0:
        raise rows.error("no data lines after the header", line_h)
    stamps = []
    for i in recs:
        rec = rows.records[i]
        d = rec[c_date] if c_date < len(rec) else ""
        t = rec[c_time] if c_time < len(rec) else ""
        try:
            day = pd.Timestamp(d.replace("/", "-"))
        except ValueError:
            raise rows.error(f"not a date: {d!r}", rows.lines[i], header[c_date]) from None
        m = re.fullmatch(r"(\d{1,2}):(\d{2})(?::00)?(?:\s*[-~〜].*)?", t)
        if m is None or int(m.group(1)) > 24 or int(m.group(2)) > 59:
            raise rows.error(f"not a time of day (H:MM): {t!r}", rows.lines[i], header[c_time])
        stamps.append(day + pd.Timedelta(hours=int(m.group(1)), minutes=int(m.group(2))))
    idx = pd.DatetimeIndex(stamps).tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    t_s = (idx - idx[0]) / pd.Timedelta(seconds=1)
    t_s = np.asarray(t_s, dtype=float)
    step = float(np.median(np.diff(t_s))) if len(t_s) > 1 else 3600.0
    if step not in (1800.0, 3600.0):
        raise rows.error(f"intervals of {step / 60:g} min; expected 30 or 60", rows.lines[h + 1])
    check_intervals(rows, [rows.lines[i] for i in recs], t_s, step)
    if time_label == "end":
        idx = idx - pd.Timedelta(seconds=step)
    out = pd.DataFrame(index=pd.DatetimeIndex(idx, name="timestamp"))
    hours = step / 3600.0
    used: set[int] = set()
    for jp, name in SOURCE_COLUMNS.items():
        c = column_index(
            rows,
            header,
            [jp] + ([*DEMAND_COLUMNS] if jp == "エリア需要" else []),
            line_h,
            required=False,
        )
        if c is None or c in used:
            continue
        used.add(c)
        vals = parse_numbers(rows, recs, c, header[c], allow_empty=(jp != "エリア需要"))
        out[name] = vals * mwh_per_unit / hours
    dem = out["area_demand_mw"].to_numpy()
    bad = np.flatnonzero(dem < 0)
    if bad.size:
        i = recs[int(bad[0])]
        raise rows.error(
            f"negative demand {rows.records[i][c_dem]!r}", rows.lines[i], header[c_dem]
        )
    out.attrs.update(step_s=step, unit=unit, file=str(path))
    return out
