"""Write the synthetic sample files of tests/data (made-up numbers, the real layouts).

Run from the repository root: ``python tests/data/make_samples.py``.  The files are
committed; this script documents how they were made and regenerates them identically.

* ``tso_area_demand_hourly.csv``  — エリア需給実績, older style: hourly, 万kWh, cp932,
  two preamble lines; 2026-04-06 .. 2026-04-07 (48 rows);
* ``tso_area_demand_30min.csv``   — newer style: 30-min, MWh, UTF-8, one preamble line;
  same two days (96 rows);
* ``load_profiles_sample.csv``    — two measured household profiles, 30-min kW;
* ``ev_sessions_acn_sample.csv``  — ACN-Data sessions export (GMT timestamps as the API
  writes them), 36 sessions over two days at 6 stations;
* ``ev_sessions_generic_sample.csv`` — the generic/EV2Gym-style layout, 10 sessions.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
TSO_HEADER = [
    "DATE",
    "TIME",
    "エリア需要",
    "原子力",
    "火力(LNG)",
    "火力(石炭)",
    "火力(石油)",
    "火力(その他)",
    "水力",
    "地熱",
    "バイオマス",
    "太陽光発電実績",
    "太陽光出力制御量",
    "風力発電実績",
    "風力出力制御量",
    "揚水",
    "蓄電池",
    "連系線",
    "その他",
    "合計",
]


def demand_mw(hour: np.ndarray) -> np.ndarray:
    """A made-up area demand [MW]: 25 GW night, 33 GW midday, 36 GW evening."""
    return (
        28000
        + 5000 * np.sin((hour - 9) / 24 * 2 * np.pi)
        + 3000 * np.exp(-((hour - 18.5) ** 2) / 4)
    )


def solar_mw(hour: np.ndarray) -> np.ndarray:
    return np.clip(9000 * np.sin((hour - 6) / 12 * np.pi), 0, None)


def tso_rows(step_h: float, unit_mwh: float) -> list[list[str]]:
    rows = []
    day0 = pd.Timestamp("2026-04-06")
    n = int(48 / step_h)
    for k in range(n):
        t = day0 + pd.Timedelta(hours=k * step_h)
        hour = np.array([t.hour + t.minute / 60 + step_h / 2])
        d = float(demand_mw(hour)[0])
        pv = float(solar_mw(hour)[0])
        wind = 1200.0
        nuc = 0.0
        coal = 7000.0
        lng = d - pv - wind - coal - 2000.0
        hydro = 2000.0
        vals_mw = [
            d,
            nuc,
            lng,
            coal,
            300.0,
            200.0,
            hydro,
            0.0,
            400.0,
            pv,
            0.0,
            wind,
            0.0,
            -300.0,
            0.0,
            -1600.0,
            0.0,
            d,
        ]
        energy = [v * step_h / unit_mwh for v in vals_mw]  # energy per interval in the unit
        rows.append(
            [
                f"{t.year}/{t.month}/{t.day}",
                f"{t.hour}:{t.minute:02d}",
                *[f"{round(x):d}" for x in energy],
            ]
        )
    return rows


def write_tso() -> None:
    with open(HERE / "tso_area_demand_hourly.csv", "w", encoding="cp932", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["東京エリア需給実績（サンプル、合成データ）"])
        w.writerow(["単位[万kWh]"])
        w.writerow(TSO_HEADER)
        w.writerows(tso_rows(1.0, 10.0))
    with open(HERE / "tso_area_demand_30min.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["単位[MWh]"])
        w.writerow(TSO_HEADER)
        w.writerows(tso_rows(0.5, 1.0))


def write_load_profiles() -> None:
    t = pd.date_range("2026-04-06T00:00:00+09:00", periods=96, freq="30min")
    h = t.hour + t.minute / 60
    a = 0.25 + 0.6 * np.exp(-((h - 7.5) ** 2) / 2) + 1.1 * np.exp(-((h - 19.5) ** 2) / 3)
    b = 0.35 + 0.3 * np.exp(-((h - 12) ** 2) / 8) + 0.8 * np.exp(-((h - 21) ** 2) / 2)
    with open(HERE / "load_profiles_sample.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "home_a_kw", "home_b_kw"])
        for ts, x, y in zip(t, a, b, strict=True):
            w.writerow([ts.isoformat(), f"{x:.3f}", f"{y:.3f}"])


def write_sessions() -> None:
    rng = np.random.default_rng(2018)
    rows = []
    start = pd.Timestamp("2026-04-06T00:00:00+09:00")
    k = 0
    for day in range(2):
        for station in range(6):
            # three sessions a day per station (workplace morning, midday, evening), minutes
            for a_h, stay_h in ((8.0, 6.0), (14.5, 2.5), (18.0, 10.0)):
                arr = start + pd.Timedelta(days=day, hours=a_h, minutes=int(rng.integers(0, 50)))
                dep = arr + pd.Timedelta(hours=stay_h, minutes=int(rng.integers(0, 60)))
                kwh = round(float(rng.uniform(3.0, 30.0)), 3)
                done = arr + pd.Timedelta(hours=min(kwh / 6.6, stay_h))
                utc = arr.tz_convert("UTC")
                gmt = "%a, %d %b %Y %H:%M:%S GMT"
                rows.append(
                    {
                        "_id": f"5bc9{k:020x}",
                        "clusterID": "39",
                        "connectionTime": arr.tz_convert("UTC").strftime(gmt),
                        "disconnectTime": dep.tz_convert("UTC").strftime(gmt),
                        "doneChargingTime": done.tz_convert("UTC").strftime(gmt),
                        "kWhDelivered": f"{kwh:.3f}",
                        "sessionID": f"2_39_{station}_{k}_{utc:%Y-%m-%d %H:%M:%S}",
                        "siteID": "2",
                        "spaceID": f"CA-{300 + station}",
                        "stationID": f"2-39-{station}",
                        "timezone": "America/Los_Angeles",
                        "userID": "",
                        "userInputs": "",
                    }
                )
                k += 1
    rows.sort(key=lambda r: pd.Timestamp(r["connectionTime"]))
    with open(HERE / "ev_sessions_acn_sample.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    with open(HERE / "ev_sessions_generic_sample.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "station", "arrival", "departure", "energy_kwh", "max_power_kw"])
        for i in range(10):
            arr = start + pd.Timedelta(hours=7 + i, minutes=15 * (i % 4))
            dep = arr + pd.Timedelta(hours=3 + (i % 5))
            w.writerow(
                [
                    f"s{i}",
                    f"depot-{i % 3}",
                    arr.isoformat(),
                    dep.isoformat(),
                    f"{5 + 3 * i:.1f}",
                    f"{[3.0, 6.0, 11.0][i % 3]:.1f}",
                ]
            )


if __name__ == "__main__":
    assert math.isfinite(1.0)
    write_tso()
    write_load_profiles()
    write_sessions()
