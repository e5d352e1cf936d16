"""PV from weather files in other formats and time zones against pvlib's own ModelChain.

The reference is pvlib ``ModelChain.with_pvwatts`` with the parameters docs/
models_weather_pv_wind_loads.md states (Perez, physical IAM, SAPM open rack glass/polymer,
PVWatts DC γ = −0.4 %/K, losses 14.08 %, PVWatts inverter with P_dc0 = AC/0.96, albedo
0.25) on pvlib's reading of the bundled Greensboro TMY3 file (UTC−5) at the hours'
midpoints.  The same hours reach cps_sim as TMY3, and as CSV files in UTC, in local
standard time and in wall-clock time with daylight-saving offsets, in a scenario whose
zone has daylight saving (America/New_York), at an orientation off the 5°/15° grid.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest
from pvlib.location import Location
from pvlib.modelchain import ModelChain
from pvlib.pvsystem import PVSystem

from cps_sim.experiment.run import simulate
from cps_sim.models.weather import WeatherDataError, library_deprecations_ignored
from cps_sim.scenario.loader import load_scenario
from cps_sim.world.exogenous import WeatherSiteWarning

TMY3 = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"  # Greensboro NC, UTC-5
TILT, AZIMUTH, DC_W, DC_AC = 32.0, 200.0, 5000.0, 1.1  # off the binning grid on purpose


@pytest.fixture(scope="module")
def tmy3() -> tuple[pd.DataFrame, dict]:
    with library_deprecations_ignored():
        data, meta = pvlib.iotools.read_tmy3(str(TMY3), coerce_year=2026, map_variables=True)
    return data, meta


def _pvlib_ac(data: pd.DataFrame, meta: dict) -> pd.Series:
    """pvlib's AC power per hour [W] of TMY3 rows, indexed by the hour's start in UTC."""
    w = data[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].copy()
    w.index = w.index - pd.Timedelta(minutes=30)  # TMY3 stamps the hour's end
    system = PVSystem(
        surface_tilt=TILT,
        surface_azimuth=AZIMUTH,
        module_parameters={"pdc0": DC_W, "gamma_pdc": -0.004},
        inverter_parameters={"pdc0": DC_W / DC_AC / 0.96},
        temperature_model_parameters=pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][
            "open_rack_glass_polymer"
        ],
        albedo=0.25,
    )
    loc = Location(meta["latitude"], meta["longitude"], altitude=meta["altitude"])
    mc = ModelChain.with_pvwatts(system, loc, transposition_model="perez")
    with library_deprecations_ignored():
        mc.run_model(w)
    ac = mc.results.ac.clip(lower=0).fillna(0.0)
    ac.index = (ac.index - pd.Timedelta(minutes=30)).tz_convert("UTC")
    return ac


@pytest.fixture(scope="module")
def reference(tmy3) -> pd.Series:
    return _pvlib_ac(*tmy3)


def _write_csv(path: Path, data: pd.DataFrame, stamps: list[str]) -> None:
    pd.DataFrame(
        {
            "timestamp": stamps,
            "ghi_w_m2": data["ghi"].to_numpy(),
            "dni_w_m2": data["dni"].to_numpy(),
            "dhi_w_m2": data["dhi"].to_numpy(),
            "temp_air_c": data["temp_air"].to_numpy(),
            "wind_speed_m_s": data["wind_speed"].to_numpy(),
        }
    ).to_csv(path, index=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tmy3) -> Path:
    """The TMY3 hours as the file itself and as CSVs (hour *start* stamps) in UTC, in
    local standard time (naive) and in New York wall-clock time with its offsets."""
    data, _ = tmy3
    folder = tmp_path_factory.mktemp("pvfiles")
    shutil.copy(TMY3, folder / TMY3.name)
    start = data.index - pd.Timedelta(hours=1)  # fixed UTC-5
    _write_csv(
        folder / "utc.csv", data, [f"{t:%Y-%m-%dT%H:%M:%S}" for t in start.tz_convert("UTC")]
    )
    _write_csv(folder / "lst.csv", data, [f"{t:%Y-%m-%dT%H:%M:%S}" for t in start])
    wall = start.tz_convert("America/New_York")
    _write_csv(folder / "wall.csv", data, [t.isoformat() for t in wall])
    return folder


def _run(
    folder: Path,
    meta: dict,
    weather: str,
    *,
    start: str,
    days: float,
    tick_s: int,
    timezone: str = "America/New_York",
) -> pd.Series:
    text = (
        f"version: 1\nname: pv_files\nseed: 1\nstart: {start}\nduration_days: {days}\n"
        f"tick_s: {tick_s}\ntimezone: {timezone}\nholidays: null\n"
        f"location: {{latitude: {meta['latitude']}, longitude: {meta['longitude']}, "
        f"altitude_m: {meta['altitude']}}}\n"
        f"weather: {weather}\n"
        "sites:\n  - name: s\n    count: 1\n"
        "    load: {annual_kwh: 1, profile: constant, noise_cv: 0}\n"
        f"    pv: {{capacity_kw: {DC_W / 1000}, tilt_deg: {TILT}, azimuth_deg: {AZIMUTH}, "
        f"dc_ac_ratio: {DC_AC}}}\n"
    )
    path = folder / "scenario.yaml"
    path.write_text(text)
    ts = simulate(load_scenario(path), base_dir=folder).timeseries().to_pandas()
    pv = ts.set_index("time")["pv_potential_w"]
    return pv.groupby(pv.index.floor("1h")).mean()  # hourly means, by the hour's start


def test_a_year_of_tmy3_matches_pvlib_hour_by_hour(files, tmy3, reference):
    _, meta = tmy3
    ours = _run(
        files,
        meta,
        f"{{source: tmy3, file: {TMY3.name}}}",
        start="2026-01-01T00:00:00-05:00",
        days=365,
        tick_s=3600,
    )
    ref = reference.reindex(ours.index)
    assert ref.notna().all() and len(ours) == 8760
    dev = ours.sum() / ref.sum() - 1
    assert abs(dev) < 2e-4, dev  # measured -5e-5 (pvlib's pressure from altitude)
    assert np.abs(ours - ref).max() < 1.0  # W of a 5 kWp system; measured 0.2 W
    assert np.corrcoef(ours, ref)[0, 1] > 0.99999


@pytest.mark.parametrize(
    ("weather", "tick_s"),
    [
        ("{source: csv, file: utc.csv, timezone: UTC}", 900),
        ("{source: csv, file: lst.csv, timezone: '-05:00'}", 1800),
        ("{source: csv, file: wall.csv}", 300),
    ],
    ids=["utc-naive", "local-standard-naive", "wall-clock-offsets"],
)
def test_csv_in_other_zones_gives_the_tmy3_hours_across_daylight_saving(
    files, tmy3, reference, weather, tick_s
):
    """Across the spring change of the scenario's zone (8 March 2026), at sub-hourly ticks."""
    _, meta = tmy3
    ours = _run(files, meta, weather, start="2026-03-05T00:00:00-05:00", days=7, tick_s=tick_s)
    ref = reference.reindex(ours.index)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1.0)
    assert ours.sum() > 1e4  # a week of sun, not an empty comparison


def test_naive_standard_time_in_a_daylight_saving_zone_names_the_fix(files, tmy3):
    _, meta = tmy3
    with pytest.raises(WeatherDataError, match=r"weather\.timezone, e\.g\. '-05:00' or 'UTC'"):
        _run(
            files,
            meta,
            "{source: csv, file: lst.csv}",
            start="2026-03-05T00:00:00-05:00",
            days=2,
            tick_s=3600,
        )


def test_naive_utc_read_as_local_time_draws_a_warning(files, tmy3):
    _, meta = tmy3
    with pytest.warns(WeatherSiteWarning, match="centred 300 min after solar noon"):
        _run(
            files,
            meta,
            "{source: csv, file: utc.csv}",
            start="2026-06-01T00:00:00-05:00",
            days=2,
            tick_s=3600,
            timezone="Etc/GMT+5",
        )


def test_leap_year_run_matches_pvlib_and_repeats_28_february(files, tmy3):
    _, meta = tmy3
    with library_deprecations_ignored():
        d28, _ = pvlib.iotools.read_tmy3(str(TMY3), coerce_year=2028, map_variables=True)
    ref = _pvlib_ac(d28, meta)  # pvlib leaves 29 February out
    ours = _run(
        files,
        meta,
        f"{{source: tmy3, file: {TMY3.name}}}",
        start="2028-02-27T00:00:00-05:00",
        days=4,
        tick_s=900,
    )
    both = pd.concat({"ours": ours, "ref": ref}, axis=1, sort=True).dropna()
    assert len(both) == 72  # 27, 28 February and 1 March
    np.testing.assert_allclose(both.ours, both.ref, rtol=0, atol=1.0)
    # 29 February is 28 February's weather (the sun moves a little in a day)
    local = ours.tz_convert("Etc/GMT+5")
    day = local.groupby(local.index.date).sum()
    assert len(day) == 4 and day.iloc[1] > 0
    assert day.iloc[2] == pytest.approx(day.iloc[1], rel=0.01)
