"""Weather for the physics models: an offline synthetic generator and file importers.

Every function returns a :class:`pandas.DataFrame` with the columns of
:data:`WEATHER_COLUMNS`, one row per *interval* of ``df.attrs["interval_s"]`` seconds,
indexed by the tz-aware instant that represents the row: the **midpoint** of the
interval a file's average (or integral) covers, or the time of an instantaneous sample
(which then stands for the interval centred on it).  The interval of row ``i`` is
therefore ``[index[i] - interval_s/2, index[i] + interval_s/2)``; evaluating the sun's
position at the index is what pvlib's ModelChain does with mid-interval timestamps.

Each file format is aligned to its own time convention on reading:

* **TMY3** (NREL): hourly values labelled at the *end* of their hour;
  :func:`pvlib.iotools.read_tmy3` keeps the end label (01:00 = 00:00-01:00), so the
  midpoint is the label minus 30 min.
* **EPW** (EnergyPlus): hour 1 is 00:00-01:00; :func:`pvlib.iotools.read_epw` labels
  it with its *start* (00:00), so the midpoint is the label plus 30 min.
* **CSV** (ours): ``time_label`` says what a timestamp marks: ``start`` (default) or
  ``end`` of the averaging interval, or an ``instant`` sample.

The columns are:

=================  =====  ==============================================
column             unit   meaning
=================  =====  ==============================================
``ghi_w_m2``       W/m²   global horizontal irradiance
``dni_w_m2``       W/m²   direct normal irradiance
``dhi_w_m2``       W/m²   diffuse horizontal irradiance
``temp_air_c``     °C     ambient air temperature (2 m)
``wind_speed_m_s`` m/s    wind speed at ``attrs["wind_height_m"]``
=================  =====  ==============================================

``df.attrs`` carries ``latitude_deg``, ``longitude_deg``, ``altitude_m``,
``wind_height_m``, ``interval_s`` and ``source`` (files also ``utc_offset_h``, the
file's own fixed UTC offset), so that the PV model can locate the sun without being
told twice.

Nothing here touches the network: clear-sky irradiance uses pvlib's Ineichen
model with the Linke turbidity climatology that ships inside the pvlib wheel.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import math
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pvlib
from scipy import special, stats

from cps_sim.core.errors import CpsSimError, short_repr

WEATHER_COLUMNS = ("ghi_w_m2", "dni_w_m2", "dhi_w_m2", "temp_air_c", "wind_speed_m_s")

TOKYO = (35.68, 139.77, "Asia/Tokyo")

# Calendar year (not a leap year) into which typical-year files are placed by default.
TYPICAL_YEAR = 2026

# Monthly mean daily clear-sky index (GHI / clear-sky GHI) used by default.
# ASSUMPTION: rough values for Tokyo (sunny, dry winters; rainy season in June,
# typhoon season in September), chosen so that annual GHI is about
# 1.3 MWh/m² (JMA/NEDO METPV report ~1.3-1.4 MWh/m²/yr for Tokyo).  Pass your own
# 12 values for another climate.
TOKYO_MONTHLY_CLEAR_SKY_INDEX = (
    0.77,
    0.73,
    0.66,
    0.67,
    0.67,
    0.55,
    0.61,
    0.67,
    0.58,
    0.61,
    0.69,
    0.77,
)

_PANDAS4_WARNING = getattr(pd.errors, "Pandas4Warning", DeprecationWarning)


class WeatherDataError(CpsSimError):
    """A weather file cannot be used; the message names the file and the column."""

    exit_code = 2


@contextlib.contextmanager
def library_deprecations_ignored() -> Iterator[None]:
    """Silence pandas-4 deprecation warnings raised *inside* pvlib/demandlib.

    pvlib 0.16 and demandlib 0.2.2 call ``DatetimeIndex.dayofyear`` and
    ``DataFrame.rename(inplace=True)``, which pandas 3.1 deprecates.  These are
    harmless for us and are not ours to fix; only that category is ignored.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=_PANDAS4_WARNING)
        yield


# --------------------------------------------------------------------------- synthetic


def _ar1_gaussian(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Stationary unit-variance AR(1): z_k = phi z_{k-1} + sqrt(1 - phi²) e_k, z_0 = e_0.

    The recursion ``y_k = x_k + phi y_(k-1)`` runs in ``itertools.accumulate`` (about
    2 ms for a year of 15-minute steps): the same operations in the same order as
    ``scipy.signal.lfilter([1], [1, -phi], x)``, so the same values bit for bit
    (tested), without importing ``scipy.signal`` (0.13 s of every run's start).
    """
    eps = rng.standard_normal(n)
    if n == 0:
        return eps
    x = eps * math.sqrt(max(1.0 - phi * phi, 0.0))
    x[0] = eps[0]  # start in the stationary distribution
    p = float(phi)
    return np.fromiter(itertools.accumulate(x.tolist(), lambda y, xi: xi + p * y), float, n)


# the clear sky of the last few sites and spans: a run, an RL episode or a sweep point of
# the same place and period asks again (a 1-day Gymnasium reset spent a third of its time
# here, most of it reading pvlib's Linke turbidity file)
_CLEAR_SKY: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
_CLEAR_SKY_ENTRIES = 8
_CLEAR_SKY_LOCK = threading.Lock()
_CLEAR_SKY_MAX_TIMES = 200_000  # 5.7 years at 15 min, 4.8 MB: larger spans are not kept


def _clear_sky(
    latitude_deg: float,
    longitude_deg: float,
    tz: str,
    altitude_m: float | None,
    times: pd.DatetimeIndex,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(GHI_cs, DNI_cs [W/m²], solar zenith [deg], the site's altitude [m]) at ``times``
    (pvlib Ineichen-Perez and SPA; altitude None: pvlib's altitude map), read-only
    arrays; the same inputs give the same values (kept for a few spans)."""
    key = (
        latitude_deg,
        longitude_deg,
        tz,
        altitude_m,
        times[0] if len(times) else None,
        len(times),
        times.freqstr if times.freq is not None else None,
    )
    hit = _CLEAR_SKY.get(key) if key[-1] is not None else None
    if hit is not None:
        return hit
    location = pvlib.location.Location(latitude_deg, longitude_deg, tz=tz, altitude=altitude_m)
    with library_deprecations_ignored():
        # one SPA pass: get_clearsky would compute this same position (the pressure of the
        # site's altitude) again inside
        solpos = location.get_solarposition(times)
        clearsky = location.get_clearsky(times, model="ineichen", solar_position=solpos)
    out = (
        clearsky["ghi"].to_numpy(dtype=float, copy=True),
        clearsky["dni"].to_numpy(dtype=float, copy=True),
        solpos["zenith"].to_numpy(dtype=float, copy=True),
        float(location.altitude),
    )
    for a in out[:3]:
        a.setflags(write=False)
    if key[-1] is not None and len(times) <= _CLEAR_SKY_MAX_TIMES:
        with _CLEAR_SKY_LOCK:  # runs of a threaded Dask worker share it
            while len(_CLEAR_SKY) >= _CLEAR_SKY_ENTRIES:
                del _CLEAR_SKY[next(iter(_CLEAR_SKY))]  # the oldest
            _CLEAR_SKY[key] = out
    return out


def synthetic_weather(
    rng: np.random.Generator,
    start: str | pd.Timestamp = "2026-01-01",
    end: str | pd.Timestamp | None = None,
    *,
    periods: int | None = None,
    freq: str = "1h",
    latitude_deg: float = TOKYO[0],
    longitude_deg: float = TOKYO[1],
    tz: str = TOKYO[2],
    altitude_m: float | None = None,
    monthly_clear_sky_index: Sequence[float] = TOKYO_MONTHLY_CLEAR_SKY_INDEX,
    clear_sky_index_concentration: float = 3.0,
    day_to_day_correlation: float = 0.5,
    intraday_std: float = 0.25,
    intraday_time_constant_s: float = 1800.0,
    annual_mean_temp_c: float = 15.8,
    seasonal_temp_amplitude_c: float = 10.7,
    warmest_day_of_year: int = 218,
    diurnal_temp_amplitude_c: float = 4.0,
    temp_anomaly_std_c: float = 2.0,
    temp_anomaly_time_constant_s: float = 3 * 86400.0,
    mean_wind_speed_m_s: float = 3.2,
    wind_weibull_shape: float = 2.0,
    wind_time_constant_s: float = 6 * 3600.0,
    wind_height_m: float = 10.0,
) -> pd.DataFrame:
    """Synthetic, seeded weather for any site, computed offline.

    Model
    -----
    * **Clear sky**: ``pvlib.location.Location.get_clearsky`` (Ineichen-Perez
      with pvlib's bundled monthly Linke turbidity) gives GHI_cs, DNI_cs, DHI_cs.
    * **Daily clear-sky index** k_d: a latent AR(1) Gaussian
      z_d = ρ z_{d-1} + √(1-ρ²) ε_d (ρ = ``day_to_day_correlation``) mapped
      through a Gaussian copula onto a Beta distribution with the month's mean m
      and concentration c: k_d = F⁻¹_Beta(m c, (1-m) c)(Φ(z_d)).  Cloudy and clear
      spells therefore persist over days, and the marginal is bounded in [0, 1].
    * **Intra-day variability**: k_t = k_d + σ·4k_d(1-k_d)·x_t, where x_t is a
      unit AR(1) with φ = exp(-Δt/τ) (τ = ``intraday_time_constant_s``); fully
      clear or fully overcast days fluctuate little, broken-cloud days most.
      k_t is clipped to [0, 1.1] (1.1 allows brief cloud enhancement).
    * GHI = k_t·GHI_cs; DNI and DHI from the Erbs (1982) decomposition
      (``pvlib.irradiance.erbs``), DNI capped at DNI_cs and
      DHI = GHI - DNI·cos(zenith) to close the balance.
    * **Temperature** T = T̄ + A_s cos(2π(doy - doy_max)/365.25)
      + A_d (0.5 + k_d) cos(2π(h - 14.5)/24) + anomaly, with an AR(1) anomaly
      (std ``temp_anomaly_std_c``, time constant 3 days).  Hours h are local
      solar time.  In the southern hemisphere doy_max shifts by half a year.
      Defaults are Tokyo (JMA 1991-2020 normals: annual 15.8 °C, Jan 5.4 °C,
      Aug 26.9 °C).
    * **Wind speed**: Weibull marginal (shape k, scale λ = v̄ / Γ(1 + 1/k))
      obtained from a unit AR(1) Gaussian u_t (φ = exp(-Δt/τ_w)) by the copula
      v = λ (-ln(1 - Φ(u_t)))^{1/k}, so the marginal is exactly Weibull while
      successive values are autocorrelated.

    Parameters
    ----------
    rng
        numpy Generator; the only source of randomness (same seed ⇒ same data).
    start, end, periods, freq
        Passed to :func:`pandas.date_range` (``inclusive="left"`` when ``end`` is
        given).  Naive dates are interpreted in ``tz``.
    latitude_deg, longitude_deg, tz, altitude_m
        Site.  Default Tokyo (35.68 N, 139.77 E, Asia/Tokyo).  ``altitude_m``
        None looks up pvlib's bundled altitude map.
    monthly_clear_sky_index
        12 monthly means of the daily clear-sky index (0..1).
    Other parameters are documented in the model description above.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`WEATHER_COLUMNS`; tz-aware index.
    """
    if (end is None) == (periods is None):
        raise ValueError("give exactly one of end= or periods=")
    start_ts = pd.Timestamp(start)
    if start_ts.tzinfo is None:
        start_ts = start_ts.tz_localize(tz)
    if end is not None:
        end_ts = pd.Timestamp(end)
        if end_ts.tzinfo is None:
            end_ts = end_ts.tz_localize(tz)
        times = pd.date_range(start_ts, end_ts, freq=freq, inclusive="left")
    else:
        times = pd.date_range(start_ts, periods=periods, freq=freq)
    times = times.tz_convert(tz)
    n = len(times)
    months = np.asarray(monthly_clear_sky_index, dtype=float)
    if months.shape != (12,) or np.any((months <= 0) | (months >= 1)):
        raise ValueError("monthly_clear_sky_index must be 12 values in (0, 1)")
    dt_s = pd.Timedelta(freq).total_seconds()

    ghi_cs, dni_cs, zenith, site_altitude_m = _clear_sky(
        latitude_deg, longitude_deg, tz, altitude_m, times
    )

    # ---- daily clear-sky index: AR(1) latent Gaussian -> Beta via copula
    # local calendar day of each sample (days since epoch of the local date)
    local_day = (times.tz_localize(None).normalize() - pd.Timestamp("1970-01-01")).days
    day_codes, first, day_index = np.unique(
        local_day.to_numpy(), return_index=True, return_inverse=True
    )
    n_days = len(day_codes)
    z_day = _ar1_gaussian(rng, n_days, day_to_day_correlation)
    m = months[times.month.to_numpy()[first] - 1]
    c = clear_sky_index_concentration
    k_day = stats.beta.ppf(special.ndtr(z_day), m * c, (1.0 - m) * c)
    k_d = k_day[day_index]

    # ---- intra-day fluctuation
    phi_t = math.exp(-dt_s / intraday_time_constant_s)
    x_t = _ar1_gaussian(rng, n, phi_t)
    k_t = np.clip(k_d + intraday_std * 4.0 * k_d * (1.0 - k_d) * x_t, 0.0, 1.1)
    ghi = k_t * ghi_cs

    with library_deprecations_ignored():
        erbs = pvlib.irradiance.erbs(ghi, zenith, times)
    dni = np.minimum(np.nan_to_num(np.asarray(erbs["dni"], dtype=float)), dni_cs)
    cos_z = np.cos(np.radians(zenith))
    dhi = np.where(cos_z > 0, ghi - dni * np.clip(cos_z, 0.0, None), ghi)
    dhi = np.clip(dhi, 0.0, None)

    # ---- temperature
    doy = times.day_of_year.to_numpy() + (times.hour.to_numpy() + times.minute.to_numpy() / 60) / 24
    peak = warmest_day_of_year if latitude_deg >= 0 else warmest_day_of_year - 182.6
    seasonal = seasonal_temp_amplitude_c * np.cos(2 * np.pi * (doy - peak) / 365.25)
    utc_hours = (
        (times - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(hours=1)
    ).to_numpy() % 24
    solar_hour = (utc_hours + longitude_deg / 15.0) % 24
    diurnal = diurnal_temp_amplitude_c * (0.5 + k_d) * np.cos(2 * np.pi * (solar_hour - 14.5) / 24)
    phi_temp = math.exp(-dt_s / temp_anomaly_time_constant_s)
    anomaly = temp_anomaly_std_c * _ar1_gaussian(rng, n, phi_temp)
    temp = annual_mean_temp_c + seasonal + diurnal + anomaly

    # ---- wind: Weibull marginal via Gaussian copula of an AR(1)
    k_w = wind_weibull_shape
    scale = mean_wind_speed_m_s / math.gamma(1.0 + 1.0 / k_w)
    u = _ar1_gaussian(rng, n, math.exp(-dt_s / wind_time_constant_s))
    # -ln(1 - Φ(u)) = -log_ndtr(-u), numerically safe in both tails
    wind = scale * (-special.log_ndtr(-u)) ** (1.0 / k_w)

    df = pd.DataFrame(
        {
            "ghi_w_m2": ghi,
            "dni_w_m2": dni,
            "dhi_w_m2": dhi,
            "temp_air_c": temp,
            "wind_speed_m_s": wind,
        },
        index=times,
    )
    df.index.name = "timestamp"
    df.attrs.update(
        latitude_deg=float(latitude_deg),
        longitude_deg=float(longitude_deg),
        altitude_m=site_altitude_m,
        wind_height_m=float(wind_height_m),
        interval_s=float(dt_s),
        source="synthetic",
    )
    return df


# --------------------------------------------------------------------------- importers


def _from_pvlib_frame(
    data: pd.DataFrame, path: Path, meta: dict[str, Any], source: str, shift: pd.Timedelta
) -> pd.DataFrame:
    """Columns renamed to ours, index moved by ``shift`` to the interval midpoints."""
    mapping = {
        "ghi": "ghi_w_m2",
        "dni": "dni_w_m2",
        "dhi": "dhi_w_m2",
        "temp_air": "temp_air_c",
        "wind_speed": "wind_speed_m_s",
    }
    missing = [k for k in mapping if k not in data.columns]
    if missing:
        raise WeatherDataError(
            f"{path}: column {missing[0]!r}: missing after parsing as {source} "
            f"(found {list(data.columns)[:12]}...)"
        )
    if len(data) < 2:
        raise WeatherDataError(f"{path}: no data rows (a {source} file needs hourly rows)")
    df = _fill_leap_day(data[list(mapping)].rename(columns=mapping).astype(float))
    _check_values(df, path)
    step = _regular_step(df.index, path)
    if step != pd.Timedelta(hours=1):
        raise WeatherDataError(
            f"{path}: column 'timestamp': {source} files are hourly, found a step of {step}"
        )
    df.index = df.index + shift
    df.index.name = "timestamp"
    df.attrs.update(
        latitude_deg=float(meta["latitude"]),
        longitude_deg=float(meta["longitude"]),
        altitude_m=float(meta["altitude"]),
        wind_height_m=10.0,
        interval_s=3600.0,
        utc_offset_h=float(meta["TZ"]),
        source=f"{source}:{path.name}",
    )
    return df


def _fill_leap_day(df: pd.DataFrame) -> pd.DataFrame:
    """A typical year placed in a leap year has no 29 February: repeat the day before.

    pvlib leaves a one-day hole (a 25 h step) at the end of 28 February; the 24 rows
    before it are copied one day later.  Any other gap stays an error.
    """
    idx = df.index
    hole = np.flatnonzero(np.diff(idx.as_unit("ns").asi8) == int(pd.Timedelta(hours=25).value))
    if hole.size != 1:
        return df
    i = int(hole[0])
    if not (idx[i].is_leap_year and idx[i].month == 2 and i >= 23):
        return df
    copy = df.iloc[i - 23 : i + 1]
    return pd.concat([df, copy.set_axis(copy.index + pd.Timedelta(days=1))]).sort_index()


def _regular_step(index: pd.DatetimeIndex, path: Path) -> pd.Timedelta:
    """The constant step of ``index``; a gap or an irregular step is an error naming it."""
    if len(index) < 2:
        raise WeatherDataError(
            f"{path}: column 'timestamp': needs at least 2 rows to know the time step"
        )
    d = np.diff(index.as_unit("ns").asi8)
    step = int(np.median(d))
    bad = np.flatnonzero(d != step)
    if bad.size:
        i = int(bad[0])
        raise WeatherDataError(
            f"{path}: column 'timestamp': the step is {pd.Timedelta(step, 'ns')} but "
            f"{index[i]} is followed by {index[i + 1]} (a gap or an irregular step; "
            "weather files must be evenly spaced)"
        )
    return pd.Timedelta(step, "ns")


def read_epw_weather(path: str | Path, coerce_year: int | None = TYPICAL_YEAR) -> pd.DataFrame:
    """Read an EnergyPlus EPW file with :func:`pvlib.iotools.read_epw`.

    Typical-year files mix months from different years; ``coerce_year`` puts
    them all in one calendar year.  ``None`` keeps the file's years.

    EPW values are averages (irradiance) over the hour *ending* at the file's hour
    field: hour 1 is 00:00-01:00 local standard time.  pvlib labels that row with the
    hour's *start* (00:00); the returned index is the midpoint (00:30), in the file's
    fixed UTC offset, and ``attrs["interval_s"] = 3600``.
    """
    path = Path(path)
    try:
        with library_deprecations_ignored():
            data, meta = pvlib.iotools.read_epw(str(path), coerce_year=coerce_year)
    except FileNotFoundError:
        raise WeatherDataError(f"{path}: file not found") from None
    except Exception as exc:  # pvlib raises many kinds on malformed files
        raise WeatherDataError(f"{path}: not a readable EPW file: {exc}") from exc
    return _from_pvlib_frame(data, path, meta, "epw", pd.Timedelta(minutes=30))


def read_tmy3_weather(path: str | Path, coerce_year: int | None = TYPICAL_YEAR) -> pd.DataFrame:
    """Read a TMY3 CSV with :func:`pvlib.iotools.read_tmy3` (``map_variables=True``).

    ``coerce_year`` as in :func:`read_epw_weather`.  TMY3 values are hourly
    averages labelled at the *end* of the hour (01:00 = 00:00-01:00 local standard
    time, pvlib keeps that label); the returned index is the midpoint (00:30) and
    ``attrs["interval_s"] = 3600``.

    pvlib ships ``pvlib/data/723170TYA.CSV`` (Greensboro NC) and
    ``pvlib/data/703165TY.csv`` (Sand Point AK), usable offline.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            lines = sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        raise WeatherDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise WeatherDataError(f"{path}: cannot read: {exc.strerror}") from None
    if lines <= 2:  # a station line and the column titles
        raise WeatherDataError(f"{path}: no data rows (only the TMY3 header lines)")
    try:
        with library_deprecations_ignored():
            data, meta = pvlib.iotools.read_tmy3(
                str(path), coerce_year=coerce_year, map_variables=True
            )
    except FileNotFoundError:
        raise WeatherDataError(f"{path}: file not found") from None
    except Exception as exc:
        raise WeatherDataError(f"{path}: not a readable TMY3 file: {exc}") from exc
    return _from_pvlib_frame(data, path, meta, "tmy3", pd.Timedelta(minutes=-30))


def _check_values(df: pd.DataFrame, path: Path) -> None:
    for col in WEATHER_COLUMNS:
        values = df[col].to_numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise WeatherDataError(
                f"{path}: column {col!r}: missing or non-numeric value at {df.index[bad[0]]}"
            )
    for col in ("ghi_w_m2", "dni_w_m2", "dhi_w_m2", "wind_speed_m_s"):
        bad = np.flatnonzero(df[col].to_numpy() < 0)
        if bad.size:
            raise WeatherDataError(
                f"{path}: column {col!r}: negative value {df[col].iloc[bad[0]]} "
                f"at {df.index[bad[0]]}"
            )
    if not df.index.is_monotonic_increasing or df.index.has_duplicates:
        raise WeatherDataError(f"{path}: column 'timestamp': timestamps must increase strictly")


_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{2}):?(\d{2})$")
_HAS_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


def weather_zone(name: str) -> Any:
    """The zone of a weather file's naive timestamps: an IANA name (``UTC``,
    ``Asia/Tokyo``, ``Etc/GMT+7``) or a fixed offset ``+09:00`` / ``-07:00``."""
    m = _OFFSET.match(name.strip())
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3))
        if minutes > 18 * 60:
            raise ValueError(f"UTC offset {name!r} is beyond ±18:00")
        return _dt.timezone(_dt.timedelta(minutes=minutes if m.group(1) == "+" else -minutes))
    from cps_sim.core.clock import iana_zone

    try:
        iana_zone(name)
    except ValueError:
        shown = short_repr(name)
        raise ValueError(
            f"unknown time zone {shown} (an IANA name such as 'UTC' or 'Asia/Tokyo', "
            "or a fixed offset such as '+09:00')"
        ) from None
    return name


def _parse_timestamps(column: pd.Series, path: Path) -> pd.DatetimeIndex:
    """ISO 8601 stamps, all naive or all with an offset; offsets may differ between rows
    (local wall time written with its daylight-saving offset)."""
    try:
        return pd.DatetimeIndex(pd.to_datetime(column, format="ISO8601"))
    except (ValueError, TypeError) as exc:
        text = column.astype(str).str.strip()
        if "Mixed timezones" in str(exc) and text.str.contains(_HAS_OFFSET).all():
            return pd.DatetimeIndex(pd.to_datetime(text, format="ISO8601", utc=True))
        if "Mixed timezones" in str(exc):
            exc = ValueError("some stamps have a UTC offset and some have none")
        raise WeatherDataError(
            f"{path}: column 'timestamp': not ISO 8601 timestamps: {exc}"
        ) from exc


def _localize(times: pd.DatetimeIndex, zone: Any, name: str, path: Path) -> pd.DatetimeIndex:
    """Naive stamps placed in ``zone``: in a zone with daylight saving they are read as
    its wall clock (the repeated autumn hour inferred from the order); a stamp the clock
    skips is an error that says how to name a file kept in standard time or UTC."""
    try:
        return times.tz_localize(zone, ambiguous="infer", nonexistent="raise")
    except Exception as exc:  # pandas: NonExistentTimeError / AmbiguousTimeError
        first = times[0]
        std = pd.Timestamp(first).tz_localize(zone, ambiguous=False, nonexistent="shift_forward")
        off = std.utcoffset() - (std.dst() or _dt.timedelta(0))
        hours, rest = divmod(abs(int(off.total_seconds())) // 60, 60)
        fixed = f"{'+' if off >= _dt.timedelta(0) else '-'}{abs(hours):02d}:{rest:02d}"
        raise WeatherDataError(
            f"{path}: column 'timestamp': the stamps have no UTC offset and cannot be "
            f"{name}'s wall clock, which has daylight saving time ({exc}); a file kept in "
            f"standard time or in UTC needs weather.timezone, e.g. '{fixed}' or 'UTC' "
            "(or stamps with their UTC offset)"
        ) from None


def read_csv_weather(
    path: str | Path,
    *,
    tz: str | None = None,
    latitude_deg: float | None = None,
    longitude_deg: float | None = None,
    altitude_m: float = 0.0,
    wind_height_m: float = 10.0,
    time_label: str = "start",
) -> pd.DataFrame:
    """Read a plain CSV weather file (evenly spaced rows, any step).

    Columns (header names, any order, extra columns ignored):

    * ``timestamp`` — ISO 8601, e.g. ``2026-04-01T12:00:00+09:00`` (the offset may
      change between rows, e.g. at daylight saving).  Naive timestamps need ``tz=``:
      an IANA zone (``"UTC"``, ``"Asia/Tokyo"``; in a zone with daylight saving they
      are its wall clock) or a fixed offset (``"-07:00"``: local standard time).
      ``time_label`` says what it marks: ``"start"`` (default) or ``"end"`` of the
      interval the row's values average, or ``"instant"`` for point samples.  The returned
      index is the interval midpoint (or the sample time), ``attrs["interval_s"]`` the step.
    * ``ghi_w_m2`` — required, ≥ 0.
    * ``dni_w_m2``, ``dhi_w_m2`` — optional together; when absent they are
      derived from GHI by the Erbs decomposition, which needs
      ``latitude_deg``/``longitude_deg``.
    * ``temp_air_c`` — required.
    * ``wind_speed_m_s`` — required, ≥ 0, measured at ``wind_height_m``.

    Raises
    ------
    WeatherDataError
        naming the file and the column (and row or time) that is wrong.
    """
    path = Path(path)
    shift_factor = {"start": 0.5, "end": -0.5, "instant": 0.0}.get(time_label)
    if shift_factor is None:
        raise ValueError(f"time_label must be 'start', 'end' or 'instant', got {time_label!r}")
    try:
        raw = pd.read_csv(path, comment="#")
    except FileNotFoundError:
        raise WeatherDataError(f"{path}: file not found") from None
    except Exception as exc:
        raise WeatherDataError(f"{path}: not a readable CSV file: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    has_components = {"dni_w_m2", "dhi_w_m2"} <= set(raw.columns)
    required = ["timestamp", "ghi_w_m2", "temp_air_c", "wind_speed_m_s"]
    if not has_components:
        if ("dni_w_m2" in raw.columns) != ("dhi_w_m2" in raw.columns):
            only = "dni_w_m2" if "dni_w_m2" in raw.columns else "dhi_w_m2"
            other = "dhi_w_m2" if only == "dni_w_m2" else "dni_w_m2"
            raise WeatherDataError(f"{path}: column {other!r}: missing (given {only!r} without it)")
        if latitude_deg is None or longitude_deg is None:
            raise WeatherDataError(
                f"{path}: column 'dni_w_m2': missing; give dni_w_m2 and dhi_w_m2 columns, "
                "or latitude_deg/longitude_deg so they can be derived from GHI (Erbs)"
            )
    for col in required:
        if col not in raw.columns:
            raise WeatherDataError(
                f"{path}: column {col!r}: missing (found columns {list(raw.columns)})"
            )
    if raw.empty:
        raise WeatherDataError(f"{path}: no data rows (only a header)")
    times = _parse_timestamps(raw["timestamp"], path)
    zone = weather_zone(tz) if tz is not None else None
    if times.tz is None:
        if tz is None:
            raise WeatherDataError(
                f"{path}: column 'timestamp': timestamps have no UTC offset; "
                "pass tz=, e.g. 'Asia/Tokyo'"
            )
        times = _localize(times, zone, tz, path)
    elif zone is not None:
        times = times.tz_convert(zone)
    if not times.is_monotonic_increasing or times.has_duplicates:
        raise WeatherDataError(f"{path}: column 'timestamp': timestamps must increase strictly")
    step = _regular_step(times, path)
    times = times + step * shift_factor
    numeric = {}
    for col in ["ghi_w_m2", "temp_air_c", "wind_speed_m_s"] + (
        ["dni_w_m2", "dhi_w_m2"] if has_components else []
    ):
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise WeatherDataError(
                f"{path}: column {col!r}: row {row + 2}: not a number: {raw[col].iloc[row]!r}"
            )
        numeric[col] = values.to_numpy(dtype=float)
    if not has_components:
        with library_deprecations_ignored():
            solpos = pvlib.solarposition.get_solarposition(
                times, latitude_deg, longitude_deg, altitude_m
            )
            erbs = pvlib.irradiance.erbs(numeric["ghi_w_m2"], solpos["zenith"].to_numpy(), times)
        numeric["dni_w_m2"] = np.nan_to_num(np.asarray(erbs["dni"], dtype=float))
        numeric["dhi_w_m2"] = np.nan_to_num(np.asarray(erbs["dhi"], dtype=float))
    df = pd.DataFrame({c: numeric[c] for c in WEATHER_COLUMNS}, index=times)
    df.index.name = "timestamp"
    _check_values(df, path)
    df.attrs.update(
        wind_height_m=float(wind_height_m),
        altitude_m=float(altitude_m),
        interval_s=step.total_seconds(),
        source=f"csv:{path.name}",
    )
    if latitude_deg is not None and longitude_deg is not None:
        df.attrs.update(latitude_deg=float(latitude_deg), longitude_deg=float(longitude_deg))
    return df
