"""Real-data importers: TSO area demand, measured load profiles, EV sessions, JEPX tariff.

The samples in tests/data are synthetic (made-up numbers) in the published layouts
(tests/data/make_samples.py).  Every bad-data case must name the file, the line and the
column.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cps_sim.data.ev_sessions import read_sessions
from cps_sim.data.load_profiles import profile_w_per_kwh, read_load_profiles
from cps_sim.data.tables import DataFileError
from cps_sim.data.tso import read_area_supply_demand

DATA = Path(__file__).resolve().parents[1] / "data"
START = pd.Timestamp("2026-04-06T00:00:00+09:00")


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return path.read_text(encoding=encoding).splitlines()


def _corrupt(
    tmp_path: Path, src: str, line: int, old: str, new: str, encoding: str = "utf-8"
) -> Path:
    """Copy a sample with ``old`` replaced by ``new`` on 1-based ``line``."""
    lines = _lines(DATA / src, encoding)
    assert old in lines[line - 1], (old, lines[line - 1])
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    out = tmp_path / src
    out.write_text("\n".join(lines) + "\n", encoding=encoding)
    return out


# ----------------------------------------------------------------------------- TSO


def test_tso_units_and_resolutions_agree():
    old = read_area_supply_demand(DATA / "tso_area_demand_hourly.csv")  # 万kWh, hourly, cp932
    new = read_area_supply_demand(DATA / "tso_area_demand_30min.csv")  # MWh, 30 min, UTF-8
    assert old.attrs["unit"] == "万kWh" and old.attrs["step_s"] == 3600
    assert new.attrs["unit"] == "MWh" and new.attrs["step_s"] == 1800
    assert len(old) == 48 and len(new) == 96
    # first hour: 2403 万kWh in one hour = 24,030 MWh / 1 h = 24,030 MW
    assert old["area_demand_mw"].iloc[0] == 24030.0
    # 30-min rows: MWh per half hour / 0.5 h
    raw = _lines(DATA / "tso_area_demand_30min.csv")[2].split(",")
    assert new["area_demand_mw"].iloc[0] == float(raw[2]) / 0.5
    # the same made-up curve in both files (sampled at hour vs half-hour midpoints): the
    # hourly means agree within 0.3 % once the units are read right (a 万kWh file read as
    # MWh would be off by a factor 10)
    hourly = new["area_demand_mw"].resample("1h").mean().to_numpy()
    assert np.allclose(hourly, old["area_demand_mw"].to_numpy(), rtol=3e-3)
    assert str(old.index.tz) == "Asia/Tokyo" and old.index[0] == START
    assert {"solar_mw", "wind_mw", "interconnector_mw"} <= set(old.columns)


@pytest.mark.parametrize(
    "line, old, new, fragment, column",
    [
        (5, ",2338,", ",abc,", "not a number: 'abc'", "エリア需要"),
        (5, "1:00", "1:75", "not a time of day", "TIME"),
        (5, "2026/4/6,1:00", "2026/4/6,0:00", "time repeats or goes back", None),
        (5, "2026/4/6", "2026/13/6", "not a date", "DATE"),
        (5, ",2338,", ",-2338,", "negative demand", "エリア需要"),
    ],
)
def test_tso_bad_values_name_file_line_and_column(tmp_path, line, old, new, fragment, column):
    f = _corrupt(tmp_path, "tso_area_demand_hourly.csv", line, old, new, "cp932")
    with pytest.raises(DataFileError) as ei:
        read_area_supply_demand(f)
    e = ei.value
    assert str(f) in str(e) and e.line == line and fragment in str(e)
    assert e.column == column


def test_tso_missing_unit_and_missing_columns(tmp_path):
    f = tmp_path / "no_unit.csv"
    lines = _lines(DATA / "tso_area_demand_30min.csv")
    f.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="no unit found"):
        read_area_supply_demand(f)
    g = tmp_path / "no_header.csv"
    g.write_text("foo,bar\n1,2\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="no header line with the columns"):
        read_area_supply_demand(g)
    h = tmp_path / "binary.csv"
    h.write_bytes(b"\x81\xff\xfe\x00" * 10)
    with pytest.raises(DataFileError, match="cannot decode"):
        read_area_supply_demand(h)


# ----------------------------------------------------------------------------- loads


def test_load_profiles_read_and_normalise():
    df = read_load_profiles(DATA / "load_profiles_sample.csv")
    assert list(df.columns) == ["home_a_kw", "home_b_kw"] and df.attrs["step_s"] == 1800
    ticks = pd.date_range(START, periods=2 * 96, freq="15min")
    w = profile_w_per_kwh(df, "home_a_kw", ticks, 900.0)
    # 1 kWh a year = 1000/8760 W on average; every 15-min tick holds its 30-min value
    assert w.mean() == pytest.approx(1000.0 / 8760.0)
    kw = df["home_a_kw"].to_numpy()
    assert np.allclose(w[::2] / w.mean(), kw / kw.mean())
    assert np.allclose(w[1::2], w[::2])
    with pytest.raises(DataFileError, match="several profiles"):
        profile_w_per_kwh(df, None, ticks, 900.0)
    with pytest.raises(DataFileError, match="the run needs"):
        profile_w_per_kwh(
            df, "home_a_kw", pd.date_range(START, periods=3 * 96, freq="15min"), 900.0
        )


def test_load_profile_kwh_unit(tmp_path):
    kw = read_load_profiles(DATA / "load_profiles_sample.csv", unit="kw")
    kwh = read_load_profiles(DATA / "load_profiles_sample.csv", unit="kwh")
    assert np.allclose(kwh.to_numpy(), kw.to_numpy() * 2)  # kWh per 30 min -> kW


@pytest.mark.parametrize(
    "line, old, new, fragment, column",
    [
        (4, ",0.250,", ",n/a,", "not a number", "home_a_kw"),
        (4, "2026-04-06T01:00:00+09:00", "06/04/2026 garbage", "not a date/time", "timestamp"),
        (4, "2026-04-06T01:00:00+09:00", "2026-04-06T01:15:00+09:00", "jumps by", None),
        (4, ",0.250,", ",-0.250,", "negative load", "home_a_kw"),
    ],
)
def test_load_profile_bad_values(tmp_path, line, old, new, fragment, column):
    f = _corrupt(tmp_path, "load_profiles_sample.csv", line, old, new)
    with pytest.raises(DataFileError) as ei:
        read_load_profiles(f)
    assert ei.value.line == line and fragment in str(ei.value) and ei.value.column == column


# ----------------------------------------------------------------------------- sessions


def test_acn_and_generic_sessions():
    acn = read_sessions(DATA / "ev_sessions_acn_sample.csv", START)
    assert acn.n == 36
    # the API's GMT strings: 'Sun, 05 Apr 2026 23:12:00 GMT' = 08:12 JST
    assert acn.arrival_s[0] == 8 * 3600 + 12 * 60
    assert np.all(np.diff(acn.arrival_s) >= 0) and np.all(acn.departure_s > acn.arrival_s)
    gen = read_sessions(DATA / "ev_sessions_generic_sample.csv", START)
    assert gen.n == 10 and gen.max_power_w[1] == 6000.0 and gen.energy_wh[0] == 5000.0


@pytest.mark.parametrize(
    "line, old, new, fragment, column",
    [
        (3, ",7.840,", ",seven,", "not a number", "kWhDelivered"),
        (3, ",7.840,", ",-7.840,", "energy must be >= 0", "kWhDelivered"),
        (
            3,
            "Mon, 06 Apr 2026 05:44:00 GMT",
            "Sun, 05 Apr 2026 20:00:00 GMT",
            "departure must be after arrival",
            "disconnectTime",
        ),
        (3, "Sun, 05 Apr 2026 23:15:00 GMT", "yesterday-ish", "not a date/time", "connectionTime"),
    ],
)
def test_session_bad_values(tmp_path, line, old, new, fragment, column):
    f = _corrupt(tmp_path, "ev_sessions_acn_sample.csv", line, old, new)
    with pytest.raises(DataFileError) as ei:
        read_sessions(f, START)
    assert ei.value.line == line and fragment in str(ei.value) and ei.value.column == column
    assert str(f) in str(ei.value)


# ----------------------------------------------------------------------------- scenarios


def _scenario_dir(tmp_path: Path, *files: str) -> Path:
    for f in files:
        shutil.copy(DATA / f, tmp_path / f)
    return tmp_path


def _run(tmp_path: Path, text: str):
    from cps_sim.experiment.run import run_file

    f = tmp_path / "s.yaml"
    f.write_text(text)
    return run_file(f, out_dir=tmp_path / "out")


HEAD = """version: 1
name: data_test
seed: 3
start: 2026-04-06T00:00:00+09:00
duration_days: 2
tick_s: 900
weather: {source: constant, constant_ghi_w_m2: 0}
"""


def test_jepx_tariff_by_area(tmp_path):
    d = _scenario_dir(tmp_path, "jepx_spot_sample.csv")
    text = (
        HEAD.replace("2026-04-06", "2026-04-01")
        + """tariff:
  type: jepx
  jepx_csv: jepx_spot_sample.csv
  jepx_area: kyushu
  import_adder_jpy_per_kwh: 15
  export_multiplier: 1
  export_adder_jpy_per_kwh: 0
sites:
  - {name: homes, count: 2}
"""
    )
    res = _run(d, text)
    ts = pd.read_parquet(res.out_dir / "timeseries.parquet")
    # reference: the file's Kyushu column, each 30-min slot over its two 15-min ticks
    with open(DATA / "jepx_spot_sample.csv", encoding="cp932") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("エリアプライス九州(円/kWh)")
    price = np.repeat([float(r[col]) for r in rows[1:]], 2)
    assert np.allclose(ts["import_price_jpy_per_kwh"], price + 15)
    assert np.allclose(ts["export_price_jpy_per_kwh"], price)
    (tmp_path / "short").mkdir()
    bad = _scenario_dir(tmp_path / "short", "jepx_spot_sample.csv")
    with pytest.raises(Exception, match="the prices cover"):
        _run(bad, text.replace("duration_days: 2", "duration_days: 3"))


def test_measured_load_profile_in_a_run(tmp_path):
    d = _scenario_dir(tmp_path, "load_profiles_sample.csv")
    res = _run(
        d,
        HEAD
        + """sites:
  - name: homes
    count: 3
    load: {annual_kwh: 3650, profile: csv, profile_csv: load_profiles_sample.csv,
           profile_column: home_b_kw, shift_max_s: 0, noise_cv: 0}
""",
    )
    ts = pd.read_parquet(res.out_dir / "timeseries.parquet")
    kw = read_load_profiles(DATA / "load_profiles_sample.csv")["home_b_kw"].to_numpy()
    load_kw = ts["load_w"].to_numpy() / 1000.0
    # 3 homes at 3,650 kWh/a = 1.25 kW mean in total, the measured shape per tick
    assert load_kw.mean() == pytest.approx(3 * 3650 / 8760)
    assert np.allclose(load_kw[::2], kw / kw.mean() * 3 * 3650 / 8760)


def test_tso_demand_in_the_system_layer(tmp_path):
    d = _scenario_dir(tmp_path, "tso_area_demand_hourly.csv")
    res = _run(
        d,
        HEAD
        + """sites:
  - {name: homes, count: 2}
system:
  demand: {profile: tso_csv, tso_csv: tso_area_demand_hourly.csv, tso_scale: 0.001}
  plants:
    - {technology: gas_ccgt, capacity_mw: 60, units: 3}
""",
    )
    ts = pd.read_parquet(res.out_dir / "timeseries.parquet")
    mw = read_area_supply_demand(DATA / "tso_area_demand_hourly.csv")["area_demand_mw"]
    # each hourly value over its four 15-min ticks, at 1/1000 of the TSO area
    assert np.allclose(ts["system_background_demand_w"] / 1e6, np.repeat(mw.to_numpy(), 4) * 0.001)


def test_data_file_errors_reach_the_cli_with_file_line_column(tmp_path, repo):
    import os
    import subprocess
    import sys

    d = _scenario_dir(tmp_path, "load_profiles_sample.csv")
    _corrupt(d, "load_profiles_sample.csv", 6, ",0.250,", ",oops,")
    (d / "s.yaml").write_text(
        HEAD
        + """sites:
  - name: homes
    count: 1
    load: {profile: csv, profile_csv: load_profiles_sample.csv, profile_column: home_a_kw}
"""
    )
    r = subprocess.run(
        [sys.executable, "-m", "cps_sim", "run", str(d / "s.yaml"), "-q", "--out", str(d / "out")],
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, "CI": "true"},
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "load_profiles_sample.csv:6: column 'home_a_kw': not a number: 'oops'" in r.stderr
