"""Weather files and synthetic weather on the run's ticks (issue 10 items 1 and 4).

* Files are interval averages in their own time convention (TMY3: the hour ending at
  the stamp; EPW: hour 1 = 00:00-01:00; CSV: ``time_label``).  PV from the engine must
  match pvlib's ModelChain (PVWatts) run the textbook way, with the hourly data placed
  at the interval midpoints, for south-, east- and west-facing systems.
* Ticks take the time-weighted mean of the rows they overlap, so any tick size gives
  the same hourly energy.
* Synthetic weather is generated at one base resolution, so the same seed gives the
  same daily energy at any tick size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest

from cps_sim.experiment.run import simulate
from cps_sim.models.weather import WeatherDataError, library_deprecations_ignored
from cps_sim.scenario.loader import load_scenario
from cps_sim.world.exogenous import SYNTHETIC_BASE_S, WeatherSiteWarning
from tests.conftest import scenario

TMY3 = Path(pvlib.__file__).parent / "data" / "703165TY.csv"  # Sand Point, Alaska
ORIENTATIONS = {"south": (30.0, 180.0), "east": (30.0, 90.0), "west": (30.0, 270.0)}


@pytest.fixture(scope="module")
def tmy3_meta() -> dict:
    _, meta = pvlib.iotools.read_tmy3(str(TMY3), coerce_year=2026, map_variables=True)
    return meta


def _write_scenario(
    folder: Path,
    source: str,
    file: str,
    meta: dict,
    *,
    tick_s: float = 3600,
    start: str = "2026-01-01T00:00:00-09:00",
    days: float = 365,
    timezone: str = "Etc/GMT+9",
    location: tuple | None = None,
    extra: str = "",
    name: str = "",
) -> Path:
    lat, lon = location or (meta["latitude"], meta["longitude"])
    sites = "\n".join(
        f"  - name: {n}\n    count: 1\n"
        f"    load: {{annual_kwh: 1, profile: constant, noise_cv: 0}}\n"
        f"    pv: {{capacity_kw: 4, tilt_deg: {t:g}, azimuth_deg: {a:g}, dc_ac_ratio: 1.0}}"
        for n, (t, a) in ORIENTATIONS.items()
    )
    text = (
        f"version: 1\nname: pv_check\nseed: 1\nstart: {start}\nduration_days: {days}\n"
        f"tick_s: {tick_s}\ntimezone: {timezone}\n"
        f"location: {{latitude: {lat}, longitude: {lon}, altitude_m: {meta['altitude']}}}\n"
        f"weather: {{source: {source}, file: {file}{extra}}}\nsites:\n{sites}\n"
    )
    path = folder / f"{source}_{int(tick_s)}{name}.yaml"
    path.write_text(text)
    return path


def _write_epw_from_tmy3(src: Path, dst: Path) -> None:
    """The same hourly data as an EPW file: EPW hour h on a date = TMY3 'h:00' that date
    (both cover the hour ending at h:00 local standard time)."""
    first = src.read_text().splitlines()[0].split(",")
    raw = pd.read_csv(src, skiprows=1)
    header = [
        f"LOCATION,{first[1].strip(chr(34))},{first[2]},USA,TMY3,{first[0]},{first[4]},"
        f"{first[5]},{first[3]},{first[6]}",
        "DESIGN CONDITIONS,0",
        "TYPICAL/EXTREME PERIODS,0",
        "GROUND TEMPERATURES,0",
        "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
        "COMMENTS 1,from pvlib 703165TY.csv",
        "COMMENTS 2,",
        "DATA PERIODS,1,1,Data,Sunday, 1/ 1,12/31",
    ]
    date = pd.to_datetime(raw["Date (MM/DD/YYYY)"], format="%m/%d/%Y")
    hour = raw["Time (HH:MM)"].str[:2].astype(int)
    rows = []
    for i in range(len(raw)):
        fields = [
            date[i].year,
            date[i].month,
            date[i].day,
            hour[i],
            60,
            "?",
            raw["Dry-bulb (C)"][i],
            raw["Dew-point (C)"][i],
            raw["RHum (%)"][i],
            raw["Pressure (mbar)"][i] * 100,
            0,
            0,
            300,
            raw["GHI (W/m^2)"][i],
            raw["DNI (W/m^2)"][i],
            raw["DHI (W/m^2)"][i],
            0,
            0,
            0,
            0,
            raw["Wdir (degrees)"][i],
            raw["Wspd (m/s)"][i],
            5,
            5,
            20,
            1000,
            9,
            999999999,
            0,
            0.1,
            0,
            88,
            0.2,
            0,
            1,
        ]
        rows.append(",".join(str(f) for f in fields))
    dst.write_text("\n".join(header + rows) + "\n")


def _modelchain_hourly_ac_w(meta: dict, tilt: float, azimuth: float) -> np.ndarray:
    """pvlib's own chain on the TMY3 year, timestamps moved to the hour midpoints."""
    data, _ = pvlib.iotools.read_tmy3(str(TMY3), coerce_year=2026, map_variables=True)
    data.index = data.index - pd.Timedelta(minutes=30)
    loc = pvlib.location.Location(
        meta["latitude"], meta["longitude"], altitude=meta["altitude"], tz="Etc/GMT+9"
    )
    system = pvlib.pvsystem.PVSystem(
        surface_tilt=tilt,
        surface_azimuth=azimuth,
        module_parameters={"pdc0": 4000.0, "gamma_pdc": -0.004},
        inverter_parameters={"pdc0": 4000.0 / 0.96},
        temperature_model_parameters=pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][
            "open_rack_glass_polymer"
        ],
    )
    mc = pvlib.modelchain.ModelChain.with_pvwatts(system, loc)
    with library_deprecations_ignored():
        mc.run_model(data[["ghi", "dni", "dhi", "temp_air", "wind_speed"]])
    return np.clip(mc.results.ac.to_numpy(), 0.0, None)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cps_sim", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CI": "true"},
    )


@pytest.mark.parametrize("source", ["tmy3", "epw"])
def test_a_year_of_file_pv_matches_pvlib_modelchain_south_east_west(tmp_path, tmy3_meta, source):
    # Sand Point AK, TMY3 shipped with pvlib; the EPW holds the same hours in EPW form.
    shutil.copy(TMY3, tmp_path / TMY3.name)
    file = TMY3.name
    if source == "epw":
        file = "sandpoint.epw"
        _write_epw_from_tmy3(TMY3, tmp_path / file)
    scen = _write_scenario(tmp_path, source, file, tmy3_meta)
    r = _cli(["run", str(scen), "--out", str(tmp_path / "out"), "-q"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr  # the file's place and time zone are the scenario's
    groups = pd.read_parquet(tmp_path / "out" / "timeseries_groups.parquet")
    for name, (tilt, azimuth) in ORIENTATIONS.items():
        ours = groups.loc[groups["group"] == name, "pv_generation_w"].to_numpy()
        ref = _modelchain_hourly_ac_w(tmy3_meta, tilt, azimuth)
        assert ours.shape == ref.shape == (8760,)
        err = ours.sum() / ref.sum() - 1.0
        r_hourly = np.corrcoef(ours, ref)[0, 1]
        assert abs(err) < 0.01, f"{source} {name}: annual error {err:+.2%}"
        assert r_hourly >= 0.998, f"{source} {name}: hourly r {r_hourly:.4f}"


def test_file_weather_gives_the_same_hourly_energy_at_any_tick(tmp_path, tmy3_meta):
    # Four June days: 60 s ... 3600 s ticks all see each hour's average (no point sampling).
    shutil.copy(TMY3, tmp_path / TMY3.name)
    hourly = {}
    for tick in (60, 300, 900, 1800, 3600):
        scen = _write_scenario(
            tmp_path,
            "tmy3",
            TMY3.name,
            tmy3_meta,
            tick_s=tick,
            start="2026-06-10T00:00:00-09:00",
            days=4,
        )
        rec = simulate(load_scenario(scen), base_dir=tmp_path)
        ts = rec.timeseries().to_pandas()
        per_h = int(3600 // tick)
        hourly[tick] = {
            c: ts[c].to_numpy().reshape(-1, per_h).mean(axis=1)
            for c in ("pv_generation_w", "irradiance_w_m2")
        }
    for tick in (60, 300, 900, 1800):
        for c in ("pv_generation_w", "irradiance_w_m2"):
            np.testing.assert_allclose(hourly[tick][c], hourly[3600][c], rtol=1e-9, atol=1e-9)
    assert hourly[3600]["pv_generation_w"].max() > 500  # the sun did shine


def _tmy3_as_csv(path: Path, label: str) -> None:
    """TMY3 GHI/DNI/DHI as our CSV; timestamps mark the start or end of each hour."""
    data, _ = pvlib.iotools.read_tmy3(str(TMY3), coerce_year=2026, map_variables=True)
    stamp = data.index - pd.Timedelta(hours=1) if label == "start" else data.index
    pd.DataFrame(
        {
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ghi_w_m2": data["ghi"],
            "dni_w_m2": data["dni"],
            "dhi_w_m2": data["dhi"],
            "temp_air_c": data["temp_air"],
            "wind_speed_m_s": data["wind_speed"],
        }
    ).to_csv(path, index=False)


def test_csv_time_label_aligns_start_and_end_stamped_files_identically(tmp_path, tmy3_meta):
    shutil.copy(TMY3, tmp_path / TMY3.name)
    out = {}
    for label in ("start", "end"):
        _tmy3_as_csv(tmp_path / f"{label}.csv", label)
        scen = _write_scenario(
            tmp_path,
            "csv",
            f"{label}.csv",
            tmy3_meta,
            tick_s=900,
            start="2026-03-20T00:00:00-09:00",
            days=3,
            extra=f", time_label: {label}",
        )
        out[label] = simulate(load_scenario(scen), base_dir=tmp_path).timeseries().to_pandas()
    scen = _write_scenario(
        tmp_path,
        "tmy3",
        TMY3.name,
        tmy3_meta,
        tick_s=900,
        start="2026-03-20T00:00:00-09:00",
        days=3,
    )
    tmy = simulate(load_scenario(scen), base_dir=tmp_path).timeseries().to_pandas()
    for label in ("start", "end"):
        np.testing.assert_allclose(
            out[label]["pv_generation_w"], tmy["pv_generation_w"], rtol=1e-9, atol=1e-9
        )
    # a wrong label moves the day by an hour: the difference is visible, not hidden
    scen = _write_scenario(
        tmp_path,
        "csv",
        "start.csv",
        tmy3_meta,
        tick_s=900,
        start="2026-03-20T00:00:00-09:00",
        days=3,
        extra=", time_label: end",
    )
    # ... and the irradiance no longer centres on solar noon, which the run warns about
    with pytest.warns(WeatherSiteWarning, match="centred 60 min before solar noon"):
        wrong = simulate(load_scenario(scen), base_dir=tmp_path).timeseries().to_pandas()
    assert np.abs(wrong["pv_generation_w"] - tmy["pv_generation_w"]).max() > 100


def test_typical_year_repeats_across_new_year_and_fills_a_leap_day(tmp_path, tmy3_meta):
    shutil.copy(TMY3, tmp_path / TMY3.name)
    # 30 Dec 2026 .. 3 Jan 2027: 1-2 January come from the file's January again
    scen = _write_scenario(
        tmp_path, "tmy3", TMY3.name, tmy3_meta, start="2026-12-30T00:00:00-09:00", days=4
    )
    wrap = simulate(load_scenario(scen), base_dir=tmp_path).timeseries().to_pandas()
    scen = _write_scenario(
        tmp_path, "tmy3", TMY3.name, tmy3_meta, start="2026-01-01T00:00:00-09:00", days=2
    )
    jan = simulate(load_scenario(scen), base_dir=tmp_path).timeseries().to_pandas()
    np.testing.assert_array_equal(
        wrap["irradiance_w_m2"].to_numpy()[48:], jan["irradiance_w_m2"].to_numpy()
    )
    # 2028 is a leap year: 29 February repeats 28 February, 1 March is the file's
    scen = _write_scenario(
        tmp_path, "tmy3", TMY3.name, tmy3_meta, start="2028-02-28T00:00:00-09:00", days=3
    )
    leap = simulate(load_scenario(scen), base_dir=tmp_path).timeseries().to_pandas()
    ghi = leap["irradiance_w_m2"].to_numpy().reshape(3, 24)
    np.testing.assert_array_equal(ghi[1], ghi[0])
    assert ghi[1].sum() > 0 and not np.array_equal(ghi[2], ghi[1])


def test_file_far_from_the_scenario_or_in_another_time_zone_warns(tmp_path, tmy3_meta):
    shutil.copy(TMY3, tmp_path / TMY3.name)
    far = _write_scenario(
        tmp_path, "tmy3", TMY3.name, tmy3_meta, days=2, location=(35.68, 139.77), name="far"
    )
    with pytest.warns(WeatherSiteWarning, match=r"km from the scenario location"):
        simulate(load_scenario(far), base_dir=tmp_path)
    # 50 km away: no warning about the place (threshold 100 km)
    near = _write_scenario(
        tmp_path,
        "tmy3",
        TMY3.name,
        tmy3_meta,
        days=2,
        location=(tmy3_meta["latitude"] + 0.45, tmy3_meta["longitude"]),
        name="near",
    )
    simulate(load_scenario(near), base_dir=tmp_path)  # filterwarnings=error: would raise
    zone = _write_scenario(
        tmp_path,
        "tmy3",
        TMY3.name,
        tmy3_meta,
        days=2,
        timezone="Asia/Tokyo",
        start="2026-01-01T00:00:00+09:00",
        name="zone",
    )
    with pytest.warns(WeatherSiteWarning, match=r"UTC-9 .*Asia/Tokyo is UTC\+9"):
        simulate(load_scenario(zone), base_dir=tmp_path)
    # the CLI shows it as one line and still runs
    r = _cli(["run", str(far), "--out", str(tmp_path / "out"), "-q"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "km from the scenario location" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "warnings.warn" not in r.stderr


def test_weather_file_with_a_gap_or_no_rows_names_the_file_and_the_time(tmp_path, tmy3_meta):
    _tmy3_as_csv(tmp_path / "gap.csv", "start")
    lines = (tmp_path / "gap.csv").read_text().splitlines()
    del lines[100:103]  # three hours missing
    (tmp_path / "gap.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "empty.csv").write_text(lines[0] + "\n")
    for file, expected in (
        ("gap.csv", "a gap or an irregular step"),
        ("empty.csv", "no data rows"),
    ):
        scen = _write_scenario(tmp_path, "csv", file, tmy3_meta, days=2)
        r = _cli(["run", str(scen), "--out", str(tmp_path / "o"), "-q"], tmp_path)
        assert r.returncode != 0
        assert r.stderr.startswith("error:") and file in r.stderr and expected in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        with pytest.raises(WeatherDataError, match=expected):
            simulate(load_scenario(scen), base_dir=tmp_path)


# ----------------------------------------------------------------------------- synthetic


def _synthetic_daily(tick_s: float, days: int = 3, seed: int = 7) -> dict[str, np.ndarray]:
    site = {
        "name": "h",
        "count": 1,
        "load": {"annual_kwh": 1.0, "profile": "constant", "noise_cv": 0.0},
        "pv": {"capacity_kw": 5.0, "tilt_deg": 30, "azimuth_deg": 120},
    }
    sc = scenario([site], duration_days=days, tick_s=tick_s, seed=seed)
    ts = simulate(sc).timeseries().to_pandas()
    per_day = int(86400 // tick_s)
    h = tick_s / 3600.0
    return {
        "pv_kwh": ts["pv_generation_w"].to_numpy().reshape(days, per_day).sum(1) * h / 1e3,
        "ghi_kwh_m2": ts["irradiance_w_m2"].to_numpy().reshape(days, per_day).sum(1) * h / 1e3,
    }


def test_synthetic_weather_gives_the_same_daily_energy_at_60_300_900_s():
    # Same seed: the weather is drawn at one base step and averaged to the tick, so the
    # daily irradiation and PV energy agree to rounding (tolerance 1e-9 relative).
    ref = _synthetic_daily(900)
    assert SYNTHETIC_BASE_S == 300.0
    for tick in (60, 300, 1800, 3600):
        got = _synthetic_daily(tick)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-9)
    assert np.all(ref["pv_kwh"] > 0) and np.ptp(ref["pv_kwh"]) > 0  # real, varying days
    again = _synthetic_daily(900)
    for k in ref:
        np.testing.assert_array_equal(again[k], ref[k])  # deterministic
    other = _synthetic_daily(900, seed=8)
    assert not np.allclose(other["pv_kwh"], ref["pv_kwh"])  # the seed matters


def test_system_wind_and_utility_pv_do_not_depend_on_the_tick():
    system = {
        "demand": {"annual_gwh": 100.0},
        "utility_pv": [{"capacity_mw": 20.0}],
        "wind": [{"n_turbines": 3}],
        "plants": [{"technology": "gas_ccgt", "capacity_mw": 40.0}],
    }
    daily = {}
    for tick in (300, 900, 3600):
        sc = scenario([{"name": "h", "count": 1}], duration_days=2, tick_s=tick, system=system)
        rec = simulate(sc)
        ts = rec.timeseries().to_pandas()
        per_day = int(86400 // tick)
        daily[tick] = {
            c: ts[c].to_numpy().reshape(2, per_day).sum(1) * tick / 3600
            for c in ("system_wind_w", "system_utility_pv_w")
        }
    for tick in (300, 3600):
        for c in daily[900]:
            np.testing.assert_allclose(daily[tick][c], daily[900][c], rtol=1e-9)
    assert all(v.sum() > 0 for v in daily[900].values())


def test_cli_json_kpis_are_identical_for_repeated_synthetic_runs(tmp_path, repo):
    outs = []
    for i in range(2):
        r = _cli(
            [
                "run",
                str(repo / "scenarios" / "quickstart.yaml"),
                "--out",
                str(tmp_path / f"o{i}"),
                "-q",
                "--set",
                "duration_days=1",
                "--set",
                "tick_s=300",
                "--expect",  # the scenario's claims are for its week, not one day
                "report",
            ],
            repo,
        )
        assert r.returncode == 0, r.stderr
        outs.append(json.loads((tmp_path / f"o{i}" / "kpis.json").read_text()))
    assert outs[0] == outs[1]
