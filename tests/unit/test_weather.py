"""Synthetic weather and importers (cps_sim.models.weather)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest
from scipy import stats

from cps_sim.models.weather import (
    WEATHER_COLUMNS,
    WeatherDataError,
    library_deprecations_ignored,
    read_csv_weather,
    read_epw_weather,
    read_tmy3_weather,
    synthetic_weather,
)

PVLIB_DATA = Path(pvlib.__file__).parent / "data"


@pytest.fixture(scope="module")
def tokyo_year() -> pd.DataFrame:
    return synthetic_weather(np.random.default_rng(42), "2026-01-01", "2027-01-01")


def test_shape_columns_and_site(tokyo_year):
    # 365 days x 24 h = 8760 hourly rows, tz-aware Asia/Tokyo
    assert tokyo_year.shape == (8760, 5)
    assert tuple(tokyo_year.columns) == WEATHER_COLUMNS
    assert str(tokyo_year.index.tz) == "Asia/Tokyo"
    assert tokyo_year.attrs["latitude_deg"] == 35.68
    assert (tokyo_year[["ghi_w_m2", "dni_w_m2", "dhi_w_m2", "wind_speed_m_s"]] >= 0).all().all()


def test_same_seed_same_weather_and_different_seed_differs():
    a = synthetic_weather(np.random.default_rng(1), "2026-03-01", periods=96, freq="15min")
    b = synthetic_weather(np.random.default_rng(1), "2026-03-01", periods=96, freq="15min")
    c = synthetic_weather(np.random.default_rng(2), "2026-03-01", periods=96, freq="15min")
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ghi_w_m2"], c["ghi_w_m2"])


def test_irradiance_bounded_by_clear_sky_and_closes_balance(tokyo_year):
    loc = pvlib.location.Location(35.68, 139.77, tz="Asia/Tokyo")
    with library_deprecations_ignored():
        cs = loc.get_clearsky(tokyo_year.index)
        zen = loc.get_solarposition(tokyo_year.index)["zenith"].to_numpy()
    # clear-sky index is clipped at 1.1 -> GHI <= 1.1 GHI_cs; night (GHI_cs = 0) is dark
    assert np.all(tokyo_year["ghi_w_m2"].to_numpy() <= 1.1 * cs["ghi"].to_numpy() + 1e-9)
    assert np.all(tokyo_year["ghi_w_m2"].to_numpy()[cs["ghi"].to_numpy() == 0] == 0)
    # closure GHI = DNI cos(z) + DHI wherever the sun is up and DHI was not clipped at 0
    up = (np.cos(np.radians(zen)) > 0) & (tokyo_year["dhi_w_m2"].to_numpy() > 0)
    recon = tokyo_year["dni_w_m2"] * np.cos(np.radians(zen)) + tokyo_year["dhi_w_m2"]
    np.testing.assert_allclose(
        recon.to_numpy()[up], tokyo_year["ghi_w_m2"].to_numpy()[up], atol=1e-6
    )


def test_annual_irradiation_and_temperature_plausible_for_tokyo(tokyo_year):
    # Tokyo GHI ~ 1.2-1.45 MWh/m2/yr (NEDO METPV ~3.5 kWh/m2/day x 365 = 1.28 MWh/m2)
    annual_kwh_m2 = tokyo_year["ghi_w_m2"].sum() / 1000.0  # hourly samples: W x 1 h
    assert 1100 < annual_kwh_m2 < 1500
    # mean temperature: T_mean 15.8 C, cosines average out -> 15.8 +- 1.5 (AR anomaly)
    assert abs(tokyo_year["temp_air_c"].mean() - 15.8) < 1.5
    monthly = tokyo_year["temp_air_c"].groupby(tokyo_year.index.month).mean()
    assert monthly[8] - monthly[1] > 15  # 2 x 10.7 C amplitude x cos ~ 19 C swing
    # afternoon (14-15 h) warmer than pre-dawn (4-5 h): diurnal amplitude 4 C x (0.5 + k_d)
    hourly = tokyo_year["temp_air_c"].groupby(tokyo_year.index.hour).mean()
    assert hourly[14] - hourly[4] > 3


def test_daily_clear_sky_index_persists(tokyo_year):
    # AR(1) latent with rho = 0.5 -> lag-1 correlation of daily totals clearly > 0
    daily = tokyo_year["ghi_w_m2"].resample("D").sum()
    deseason = daily / daily.rolling(31, center=True, min_periods=1).max()
    r1 = np.corrcoef(deseason.to_numpy()[:-1], deseason.to_numpy()[1:])[0, 1]
    assert r1 > 0.2


def test_wind_is_weibull_with_autocorrelation():
    df = synthetic_weather(
        np.random.default_rng(7),
        "2026-01-01",
        periods=24 * 365 * 3,
        mean_wind_speed_m_s=5.0,
        wind_weibull_shape=2.0,
    )
    v = df["wind_speed_m_s"].to_numpy()
    # mean = lambda Gamma(1 + 1/k) = 5.0 by construction; 3 years of tau = 6 h -> ~4400
    # independent samples -> std error ~ 2.6/sqrt(4400) = 0.04 m/s
    assert abs(v.mean() - 5.0) < 0.25
    k, _, scale = stats.weibull_min.fit(v, floc=0)
    assert abs(k - 2.0) < 0.15
    assert abs(scale - 5.0 / math.gamma(1.5)) < 0.3
    # lag-1 h autocorrelation of the latent AR(1) is exp(-1/6) = 0.85; of v slightly less
    r1 = np.corrcoef(v[:-1], v[1:])[0, 1]
    assert 0.75 < r1 < 0.95


def test_southern_hemisphere_and_other_site():
    df = synthetic_weather(
        np.random.default_rng(0),
        "2026-01-01",
        "2027-01-01",
        freq="3h",
        latitude_deg=-33.87,
        longitude_deg=151.21,
        tz="Australia/Sydney",
    )
    monthly = df["temp_air_c"].groupby(df.index.month).mean()
    assert monthly[1] > monthly[7]  # January is summer in Sydney
    assert (
        df["ghi_w_m2"].groupby(df.index.month).sum()[12]
        > df["ghi_w_m2"].groupby(df.index.month).sum()[6]
    )


def test_read_tmy3_bundled_file():
    df = read_tmy3_weather(PVLIB_DATA / "723170TYA.CSV")
    assert len(df) == 8760 and tuple(df.columns) == WEATHER_COLUMNS
    assert df.index.is_monotonic_increasing
    assert df.attrs["latitude_deg"] == pytest.approx(36.1)
    # Greensboro NC: ~1.6-1.8 MWh/m2/yr GHI
    assert 1400 < df["ghi_w_m2"].sum() / 1000 < 1900


def _write_epw(path: Path) -> None:
    header = [
        "LOCATION,Tokyo,-,JPN,test,476620,35.68,139.77,9.0,6.0",
        "DESIGN CONDITIONS,0",
        "TYPICAL/EXTREME PERIODS,0",
        "GROUND TEMPERATURES,0",
        "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
        "COMMENTS 1,synthetic",
        "COMMENTS 2,",
        "DATA PERIODS,1,1,Data,Sunday, 1/ 1,12/31",
    ]
    rows = []
    for day in (1, 2):
        for hour in range(1, 25):
            ghi = max(0.0, 600 * math.sin(math.pi * (hour - 6) / 12))
            fields = [
                2026,
                1,
                day,
                hour,
                60,
                "?",
                5.0 + hour / 4,
                0.0,
                60,
                101325,
                0,
                0,
                300,
                ghi,
                ghi * 0.6,
                ghi * 0.4,
                0,
                0,
                0,
                0,
                180,
                3.0,
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
    path.write_text("\n".join(header + rows) + "\n")


def test_read_epw(tmp_path):
    p = tmp_path / "tokyo.epw"
    _write_epw(p)
    df = read_epw_weather(p)
    assert len(df) == 48 and tuple(df.columns) == WEATHER_COLUMNS
    assert df.attrs["latitude_deg"] == pytest.approx(35.68)
    assert df["wind_speed_m_s"].iloc[0] == 3.0
    # hour 12: ghi = 600 sin(pi 6/12) = 600
    assert df["ghi_w_m2"].max() == pytest.approx(600.0)


def test_read_csv_full_and_ghi_only(tmp_path):
    p = tmp_path / "w.csv"
    t = pd.date_range("2026-06-21", periods=24, freq="1h", tz="Asia/Tokyo")
    ghi = np.clip(800 * np.sin(np.pi * (np.arange(24) - 5) / 14), 0, None)
    full = pd.DataFrame(
        {
            "timestamp": t.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ghi_w_m2": ghi,
            "dni_w_m2": ghi * 0.7,
            "dhi_w_m2": ghi * 0.3,
            "temp_air_c": 25.0,
            "wind_speed_m_s": 2.0,
        }
    )
    full.to_csv(p, index=False)
    df = read_csv_weather(p)
    assert tuple(df.columns) == WEATHER_COLUMNS
    # rows are intervals indexed at their midpoint: start labels move +step/2, end labels
    # -step/2, instantaneous samples stay
    assert df.attrs["interval_s"] == 3600.0
    assert df.index[0] == t[0] + pd.Timedelta(minutes=30)
    assert read_csv_weather(p, time_label="end").index[0] == t[0] - pd.Timedelta(minutes=30)
    assert read_csv_weather(p, time_label="instant").index[0] == t[0]
    # GHI only: DNI/DHI from Erbs; closure GHI = DNI cos z + DHI
    full.drop(columns=["dni_w_m2", "dhi_w_m2"]).to_csv(p, index=False)
    df2 = read_csv_weather(p, latitude_deg=35.68, longitude_deg=139.77)
    np.testing.assert_allclose(df2["ghi_w_m2"], ghi)
    assert (df2["dhi_w_m2"] <= df2["ghi_w_m2"] + 1e-9).all()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.drop(columns=["temp_air_c"]), "column 'temp_air_c': missing"),
        (
            lambda d: d.assign(wind_speed_m_s=["x"] + [2.0] * 23),
            "column 'wind_speed_m_s': row 2: not a number",
        ),
        (lambda d: d.assign(ghi_w_m2=[-5.0] + [1.0] * 23), "column 'ghi_w_m2': negative"),
        (lambda d: d.drop(columns=["dhi_w_m2"]), "column 'dhi_w_m2': missing"),
        (lambda d: d.assign(timestamp=d["timestamp"].str[:19]), "column 'timestamp'"),
        (lambda d: d.iloc[::-1], "column 'timestamp': timestamps must increase"),
    ],
)
def test_read_csv_errors_name_file_and_column(tmp_path, mutate, expected):
    p = tmp_path / "bad.csv"
    t = pd.date_range("2026-06-21", periods=24, freq="1h", tz="Asia/Tokyo")
    good = pd.DataFrame(
        {
            "timestamp": t.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ghi_w_m2": 1.0,
            "dni_w_m2": 1.0,
            "dhi_w_m2": 1.0,
            "temp_air_c": 25.0,
            "wind_speed_m_s": 2.0,
        }
    )
    mutate(good).to_csv(p, index=False)
    with pytest.raises(WeatherDataError) as err:
        read_csv_weather(p)
    assert str(p) in str(err.value) and expected in str(err.value)


def test_missing_files_raise_clear_errors(tmp_path):
    for reader in (read_csv_weather, read_epw_weather, read_tmy3_weather):
        with pytest.raises(WeatherDataError, match="nope"):
            reader(tmp_path / "nope.dat")


@pytest.mark.parametrize("phi", [0.0, 0.3, 0.9, 0.9999, 1.0, -0.5])
@pytest.mark.parametrize("n", [0, 1, 2, 97, 35_040])
def test_ar1_recursion_equals_lfilter_bit_for_bit(phi, n):
    """The synthetic weather's AR(1) runs without scipy.signal: the same values as
    ``lfilter([1], [1, -phi], x)`` for the same draws, to the last bit."""
    from scipy.signal import lfilter

    from cps_sim.models.weather import _ar1_gaussian

    z = _ar1_gaussian(np.random.default_rng(7), n, phi)
    eps = np.random.default_rng(7).standard_normal(n)
    if n:
        x = eps * np.sqrt(max(1.0 - phi * phi, 0.0))
        x[0] = eps[0]
        np.testing.assert_array_equal(z, lfilter([1.0], [1.0, -phi], x))
    assert z.shape == (n,) and z.dtype == np.float64


def test_plain_run_imports_only_what_it_uses(tmp_path):
    """A run's start is mostly imports: scipy.signal (0.13 s) is not needed by the
    weather, and a run without an EMS, VPP or system layer does not import them."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from cps_sim.experiment.run import run_scenario; "
        "from cps_sim.scenario.schema import Scenario; "
        "run_scenario(Scenario(name='s', start='2026-05-01T00:00:00+09:00', duration_days=1, "
        "weather={'source': 'synthetic'}, sites=[{'name': 'h', 'count': 3, 'ev': {'share': 1}}]),"
        f" Path({str(tmp_path / 'out')!r})); "
        "print(sorted(m for m in ('scipy.signal', 'cps_sim.control.ems', "
        "'cps_sim.control.oracle', 'cps_sim.grid.system', 'cps_sim.control.vpp_runtime', "
        "'cps_sim.market.balancing_group') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_synthetic_weather_is_the_same_whether_its_clear_sky_was_kept_or_not():
    """The clear sky of a place and span is kept for the next run (Gymnasium resets, sweep
    points): a kept one gives the same weather as a fresh one, a different place or span
    does not reuse it, and the weather handed out is the caller's to change."""
    from cps_sim.models import weather as wx

    def make(seed: int, **kw):
        return wx.synthetic_weather(
            np.random.default_rng(seed), "2026-06-01", periods=96, freq="15min", **kw
        )

    wx._CLEAR_SKY.clear()
    fresh = make(1)
    again = make(1)  # from the kept clear sky
    assert len(wx._CLEAR_SKY) == 1
    pd.testing.assert_frame_equal(fresh, again)
    assert fresh.attrs == again.attrs
    other_seed = make(2)
    assert not other_seed["ghi_w_m2"].equals(fresh["ghi_w_m2"])
    wx._CLEAR_SKY.clear()
    pd.testing.assert_frame_equal(make(2), other_seed)
    sapporo = make(1, latitude_deg=43.06, longitude_deg=141.35)
    assert len(wx._CLEAR_SKY) == 2 and not sapporo["ghi_w_m2"].equals(fresh["ghi_w_m2"])
    again["ghi_w_m2"] *= 0.0  # the caller's own arrays
    pd.testing.assert_frame_equal(make(1), fresh)
    for i in range(wx._CLEAR_SKY_ENTRIES + 3):  # a bounded number of spans is kept
        make(1, latitude_deg=30.0 + i)
    assert len(wx._CLEAR_SKY) == wx._CLEAR_SKY_ENTRIES
