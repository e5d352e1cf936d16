"""Exogenous inputs of the run: weather mapped onto the ticks, load blocks per day.

Weather is an interval series: every row of :attr:`RunWeather.frame` stands for an
interval of time (a file's hourly average, or one step of the synthetic generator)
and is indexed at that interval's midpoint, where the sun's position is evaluated.
Anything computed from the rows (irradiance, PV power, wind power) reaches the ticks
through :class:`IntervalMap`: each tick gets the time-weighted mean of the rows that
overlap it.  Energy is therefore conserved whatever the tick (60 s ... 3600 s): a
tick inside one hourly row gets that hour's average, a tick spanning several rows
their mean.

Synthetic weather is generated at one fixed base resolution (:data:`SYNTHETIC_BASE_S`)
from the seed's ``weather`` stream and then averaged to the tick, so the same seed
gives the same weather (and daily energy) at any tick size.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from cps_sim.core.calendar import is_day_off
from cps_sim.core.clock import Clock
from cps_sim.core.rng import RngStreams
from cps_sim.models import loads as load_model
from cps_sim.scenario.schema import Scenario

SYNTHETIC_BASE_S = 300.0  # synthetic weather step, independent of the tick
# A weather file farther than this from the scenario location draws a warning.
WEATHER_SITE_WARN_KM = 100.0
EARTH_RADIUS_KM = 6371.0


class WeatherSiteWarning(UserWarning):
    """A weather file describes another place or time zone than the scenario's."""


class IntervalMap:
    """Time-weighted means of interval data over the run's ticks.

    ``edges_s`` (n_rows + 1,) are the rows' interval edges in seconds since the run
    start, increasing; they must cover ``[0, n_ticks * tick_s]``.  The union of the
    row and tick edges cuts time into segments that lie in one row and one tick;
    a tick's mean is the sum over its segments of row value × segment length / tick
    length.  Rows partly outside the run contribute only their part inside it.
    """

    def __init__(self, edges_s: np.ndarray, tick_s: float, n_ticks: int):
        edges = np.asarray(edges_s, dtype=float)
        span = n_ticks * tick_s
        if edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("interval edges must increase")
        if edges[0] > 1e-6 or edges[-1] < span - 1e-6:
            raise ValueError(
                f"intervals cover {edges[0]:g} .. {edges[-1]:g} s, the run needs 0 .. {span:g} s"
            )
        tick_edges = np.arange(n_ticks + 1, dtype=float) * tick_s
        cuts = np.union1d(tick_edges, np.clip(edges, 0.0, span))
        length = np.diff(cuts)
        keep = length > 0
        mid = (cuts[:-1] + 0.5 * length)[keep]
        length = length[keep]
        tick = np.minimum(np.floor(mid / tick_s).astype(np.int64), n_ticks - 1)
        self.row = np.clip(np.searchsorted(edges, mid, side="right") - 1, 0, edges.size - 2)
        self.weight = length / tick_s
        self.starts = np.flatnonzero(np.r_[True, tick[1:] != tick[:-1]])
        self.n_rows = edges.size - 1
        self.n_ticks = n_ticks
        # a tick that lies inside one row takes that row's value exactly
        self._one = self.starts.size == self.row.size and bool(np.all(self.weight == 1.0))

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Tick means of row values (first axis rows; any trailing axes)."""
        v = np.asarray(values, dtype=float)
        if v.shape[0] != self.n_rows:
            raise ValueError(f"expected {self.n_rows} rows, got {v.shape[0]}")
        if self._one:
            return v[self.row]
        w = self.weight.reshape(-1, *([1] * (v.ndim - 1)))
        return np.add.reduceat(v[self.row] * w, self.starts, axis=0)


@dataclass
class RunWeather:
    """Weather of the run: the interval rows (for PV and wind) and tick means."""

    frame: pd.DataFrame  # one row per interval, indexed at its midpoint; see module doc
    to_ticks: IntervalMap
    ghi_w_m2: np.ndarray  # per tick
    temp_air_c: np.ndarray
    wind_speed_m_s: np.ndarray

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, edges_s: np.ndarray, tick_s: float, n_ticks: int
    ) -> RunWeather:
        m = IntervalMap(edges_s, tick_s, n_ticks)
        return cls(
            frame,
            m,
            m.mean(frame["ghi_w_m2"].to_numpy()),
            m.mean(frame["temp_air_c"].to_numpy()),
            m.mean(frame["wind_speed_m_s"].to_numpy()),
        )

    def tick_mean(self, values: np.ndarray) -> np.ndarray:
        """Tick means of per-row values (first axis rows)."""
        return self.to_ticks.mean(values)


def synthetic_run_weather(
    rng, scenario: Scenario, clock: Clock, stream: str, **model
) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic weather over the run at :data:`SYNTHETIC_BASE_S`, and its interval edges.

    Rows are the base intervals from the run start (the last one may reach past the
    run's end); values are drawn at the intervals' midpoints from stream ``stream``,
    so they depend on the seed and the run's start and length, never on the tick.
    """
    from cps_sim.models import weather as wx

    step = SYNTHETIC_BASE_S
    n = max(1, math.ceil(scenario.n_ticks * scenario.tick_s / step - 1e-9))
    loc = scenario.location
    first = clock.index(np.array([0.5 * step]))[0]
    frame = wx.synthetic_weather(
        rng.generator(stream),
        first,
        periods=n,
        freq=f"{int(step)}s",
        latitude_deg=loc.latitude,
        longitude_deg=loc.longitude,
        tz=clock.timezone,
        altitude_m=loc.altitude_m,
        **model,
    )
    return frame, np.arange(n + 1, dtype=float) * step


def build_weather(
    scenario: Scenario, clock: Clock, rng: RngStreams, base_dir: Path | None
) -> RunWeather:
    """The run's weather as interval rows plus their tick means (see module doc)."""
    w = scenario.weather
    tick_s = scenario.tick_s
    n_ticks = scenario.n_ticks
    if w.source == "constant":
        edges = np.arange(n_ticks + 1, dtype=float) * tick_s
        times = clock.index(edges[:-1] + 0.5 * tick_s)
        frame = pd.DataFrame(
            {
                "ghi_w_m2": w.constant_ghi_w_m2,
                "dni_w_m2": 0.0,
                "dhi_w_m2": w.constant_ghi_w_m2,
                "temp_air_c": w.constant_temp_c,
                "wind_speed_m_s": w.constant_wind_m_s,
            },
            index=times,
        )
        frame.attrs["interval_s"] = float(tick_s)
    elif w.source == "synthetic":
        from cps_sim.models import weather as wx

        monthly = np.minimum(
            np.asarray(wx.TOKYO_MONTHLY_CLEAR_SKY_INDEX) * w.clear_sky_index_scale, 0.98
        )
        frame, edges = synthetic_run_weather(
            rng, scenario, clock, "weather", monthly_clear_sky_index=tuple(monthly.tolist())
        )
    else:
        frame, edges = _read_weather_file(scenario, clock, base_dir)
    return RunWeather.from_frame(frame, edges, tick_s, n_ticks)


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _check_weather_site(df: pd.DataFrame, scenario: Scenario, clock: Clock, path: Path) -> bool:
    """Warn when a file's location or standard time zone is not the scenario's; returns
    whether the file is for another place."""
    loc = scenario.location
    lat, lon = df.attrs.get("latitude_deg"), df.attrs.get("longitude_deg")
    far = False
    if lat is not None and lon is not None:
        d = _distance_km(lat, lon, loc.latitude, loc.longitude)
        far = d > WEATHER_SITE_WARN_KM
        if far:
            warnings.warn(
                WeatherSiteWarning(
                    f"{path.name}: the weather file is for {lat:.3f}, {lon:.3f}, {d:,.0f} km from "
                    f"the scenario location {loc.latitude:.3f}, {loc.longitude:.3f} (more than "
                    f"{WEATHER_SITE_WARN_KM:g} km); the sun is computed for the scenario location"
                ),
                stacklevel=2,
            )
    file_h = df.attrs.get("utc_offset_h")
    if file_h is not None:
        start = clock.start
        std = (start.utcoffset() - (start.dst() or pd.Timedelta(0))).total_seconds() / 3600.0
        if abs(std - file_h) > 1e-9:
            warnings.warn(
                WeatherSiteWarning(
                    f"{path.name}: the weather file's time zone is UTC{file_h:+g} (standard time) "
                    f"but the scenario's {clock.timezone} is UTC{std:+g}; the file's timestamps "
                    "are used as absolute times, so its days do not line up with local days"
                ),
                stacklevel=2,
            )
    return far


# The irradiance of a weather file, per solar day, is centred on solar noon at the site;
# clouds move a day's centre, so the median over the days is used: within 1 min for the
# typical years shipped with pvlib, up to 13.5 min for their worst 30-day window.  Further
# off than max(12 min, 150 min / √days), the file's times are suspect (a 30-min label error
# of hourly data shows as 30 min, UTC read as local time as hours).
WEATHER_NOON_WARN_MIN = 12.0
WEATHER_NOON_MIN_DAYS = 7


def irradiance_noon_offset_min(df: pd.DataFrame, longitude_deg: float) -> tuple[float, int]:
    """Median over the days of the GHI-weighted mean solar hour angle of each day's
    daylight (a run of rows with GHI > 0), in minutes from solar noon (+ after), and the
    number of days.  Wrong times of any size are measured (the daylight runs, not clock
    days, are grouped)."""
    import pvlib

    ghi = df["ghi_w_m2"].to_numpy(dtype=float)
    idx = pd.DatetimeIndex(df.index).tz_convert("UTC")
    from cps_sim.models.weather import library_deprecations_ignored

    eot = pvlib.solarposition.equation_of_time_spencer71(idx.day_of_year.to_numpy())
    with library_deprecations_ignored():
        ha = np.asarray(pvlib.solarposition.hour_angle(idx, longitude_deg, eot), dtype=float)
    ha = np.degrees(np.unwrap(np.radians(ha)))  # continuous: no jump inside a day
    sun = ghi > 0
    # a cloud that takes GHI to 0 for less than 3 h does not end the day
    step_s = float(np.median(np.diff(idx.as_unit("s").asi8))) if len(idx) > 1 else 3600.0
    dark = np.flatnonzero(np.diff(np.r_[1, sun.astype(np.int8), 1]))  # edges of dark runs
    for a, b in zip(dark[::2], dark[1::2], strict=True):
        if a > 0 and b < sun.size and (b - a) * step_s < 3 * 3600.0:
            sun[a:b] = True
    run = np.cumsum(np.r_[sun[0], sun[1:] & ~sun[:-1]]) - 1  # daylight run of each row
    run, g, h = run[sun], ghi[sun], ha[sun]  # rows of the closed gaps weigh 0
    if run.size == 0:
        return 0.0, 0
    w = np.bincount(run, weights=g)
    m = np.bincount(run, weights=g * h)
    rows = np.bincount(run)
    first = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
    last = np.r_[first[1:] - 1, run.size - 1]
    short = h[last] - h[first] < 300.0  # under 20 h: not a polar summer's endless day
    ok = (w > 0) & (rows >= 2) & short
    if not ok.any():
        return 0.0, 0
    centre = np.mod(m[ok] / w[ok] + 180.0, 360.0) - 180.0  # [deg], 0 at solar noon
    return float(np.median(centre) * 4.0), int(ok.sum())


def _check_weather_timing(df: pd.DataFrame, scenario: Scenario, path: Path) -> None:
    """Warn when a file's irradiance is not centred on solar noon at the scenario
    location: timestamps in another zone than assumed (UTC read as local time, local
    standard time as daylight-saving time) or the wrong ``time_label``."""
    offset, days = irradiance_noon_offset_min(df, scenario.location.longitude)
    limit = max(WEATHER_NOON_WARN_MIN, 150.0 / math.sqrt(max(days, 1)))
    if days >= WEATHER_NOON_MIN_DAYS and abs(offset) > limit:
        when = "after" if offset > 0 else "before"
        warnings.warn(
            WeatherSiteWarning(
                f"{path.name}: the irradiance is centred {abs(offset):.0f} min {when} solar "
                f"noon at the scenario location (median over {days} days; expected within "
                f"{limit:.0f} min): are the timestamps in another time zone "
                "(weather.timezone), is weather.time_label right, or is the file for another "
                "place?"
            ),
            stacklevel=3,
        )


def _read_weather_file(
    scenario: Scenario, clock: Clock, base_dir: Path | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """The file's rows that overlap the run, and their interval edges [s since start].

    Typical-year files (TMY3, EPW) are placed in every calendar year the run touches,
    so a run may cross New Year or last several years.
    """
    from cps_sim.core.errors import CpsSimError, ScenarioError
    from cps_sim.models import weather as wx
    from cps_sim.scenario.loader import resolve_data_path

    w = scenario.weather
    path = resolve_data_path(w.file, base_dir or Path.cwd(), field="weather.file")
    span = scenario.n_ticks * scenario.tick_s
    start = pd.Timestamp(clock.start)
    end = start + pd.Timedelta(seconds=span)

    def read(year: int) -> pd.DataFrame:
        if w.source == "epw":
            return wx.read_epw_weather(path, coerce_year=year)
        if w.source == "tmy3":
            return wx.read_tmy3_weather(path, coerce_year=year)
        return wx.read_csv_weather(
            path,
            tz=w.timezone or clock.timezone,
            latitude_deg=scenario.location.latitude,
            longitude_deg=scenario.location.longitude,
            time_label=w.time_label,
        )

    try:
        if w.source == "csv":
            df = read(0)
        else:
            day = pd.Timedelta(days=1)
            years = range((start - day).year, (end + day).year + 1)
            parts = [read(y) for y in years]
            attrs = dict(parts[0].attrs)
            df = pd.concat(parts)
            df = df[~df.index.duplicated(keep="first")].sort_index()
            df.attrs.update(attrs)
    except CpsSimError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ScenarioError.single(str(path), "weather.file", str(exc)) from None
    if not _check_weather_site(df, scenario, clock, path):  # (far away: said already)
        _check_weather_timing(df, scenario, path)
    cols = ["ghi_w_m2", "dni_w_m2", "dhi_w_m2", "temp_air_c", "wind_speed_m_s"]
    half = 0.5 * float(df.attrs["interval_s"])
    mid_s = (df.index - start).total_seconds().to_numpy()
    if w.source != "csv" and np.any(np.abs(np.diff(mid_s) - 2 * half) > 1e-6):
        raise ScenarioError.single(
            str(path),
            "weather.file",
            "the typical year does not join up with the next one (leap day or missing hours?)",
        )
    edges = np.append(mid_s - half, mid_s[-1] + half)
    if edges[0] > 1e-6 or edges[-1] < span - 1e-6:
        first = df.index[0] - pd.Timedelta(seconds=half)
        last = df.index[-1] + pd.Timedelta(seconds=half)
        raise ScenarioError.single(
            str(path), "weather.file", f"covers {first} .. {last}, the run needs {start} .. {end}"
        )
    i0 = int(np.searchsorted(edges, 0.0, side="right")) - 1
    i1 = int(np.searchsorted(edges, span, side="left"))
    frame = df[cols].iloc[i0:i1].tz_convert(clock.timezone)
    frame.attrs.update(df.attrs)
    return frame, edges[i0 : i1 + 1]


def base_profile_w_per_kwh(
    profile: str, clock: Clock, tick_s: float, n_ticks: int, holidays: str | None, **options
) -> np.ndarray:
    """Tick-average power [W] of one site consuming 1 kWh a year, from ``models/loads.py``."""
    from cps_sim.models import loads

    index = clock.index(np.arange(n_ticks) * tick_s)
    rng = np.random.default_rng(0)  # unused: no shift and no noise for the reference site
    country = holidays or "JP"
    common = {"shift_std_s": 0.0, "noise_std": 0.0, "tz": clock.timezone}
    if profile == "bdew_h25":
        p = loads.household_power_w(
            index, [1.0], rng, profile="bdew_h25", country=country, **common
        )
    elif profile == "office":
        p = loads.office_power_w(index, [1.0], rng, **common)
    elif profile == "hospital":
        p = loads.hospital_power_w(index, [1.0], rng, **common)
    elif profile == "retail":
        p = loads.retail_power_w(index, [1.0], rng, **common)
    elif profile == "factory":
        p = loads.factory_power_w(index, [1.0], rng, shifts=options.get("shifts", 1), **common)
    elif profile == "data_centre":
        p = loads.data_centre_power_w(
            index,
            [1.0],
            rng,
            annual_growth_rate=options.get("annual_growth_rate", 0.0),
            noise_std=0.0,
            tz=clock.timezone,
        )
    elif profile == "csv":  # a measured shape, already per tick (cps_sim/data/load_profiles)
        return np.asarray(options["series_w_per_kwh"], dtype=float)
    else:
        raise ValueError(f"unknown load profile {profile!r}")
    return np.asarray(p[:, 0], dtype=float)


def pv_unit_profiles(
    weather: RunWeather,
    scenario: Scenario,
    tilt_deg: np.ndarray,
    azimuth_deg: np.ndarray,
    dc_ac_ratio: float,
    losses_percent: float,
) -> np.ndarray:
    """Tick-mean AC output per W of DC capacity, one column per orientation (pvlib PVWatts)."""
    from cps_sim.models import solar

    loc = scenario.location
    frame = weather.frame
    # the sun is computed for the scenario location (a file's own is only checked)
    frame.attrs.update(
        latitude_deg=loc.latitude, longitude_deg=loc.longitude, altitude_m=loc.altitude_m
    )
    k = tilt_deg.size
    p = solar.pv_ac_power_w(
        frame,
        tilt_deg,
        azimuth_deg,
        np.full(k, 1000.0),
        np.full(k, 1000.0 / dc_ac_ratio),
        losses_percent=losses_percent,
    )
    return weather.tick_mean(p) / 1000.0


@lru_cache(maxsize=256)
def residential_mean_shape(clock: Clock, holidays: str | None) -> float:
    """Mean of the japan_residential shape over the year that starts at ``clock.start``
    (hourly, local time, ``holidays`` days off); the same for every group and run of that
    start, zone and calendar, so computed once per process for those."""
    t = (np.arange(8760) + 0.5) * 3600.0
    idx = clock.index(t)
    minute = (idx.hour * 60 + idx.minute).to_numpy()
    off = is_day_off(idx, holidays)
    return float(load_model.shape(minute, off, idx.month.to_numpy()).mean())


class LoadBlocks:
    """Per-site load power [W] per tick.

    The calendar (local minute, day type, month) of every tick is computed once;
    each tick's row is one gather from the day-type shape plus two products.
    Noise factors are drawn per day-block (site-major, float32), so memory stays
    bounded and appending sites leaves the others' noise unchanged.
    """

    def __init__(
        self,
        clock: Clock,
        tick_s: float,
        ticks_per_block: int,
        annual_wh: np.ndarray,
        profile: str,
        shift_min: np.ndarray,
        noise_cv: float,
        holidays: str | None,
        rng: RngStreams,
        stream: str,
        n_ticks: int,
        profile_options: dict | None = None,
    ):
        self.clock = clock
        self.tick_s = tick_s
        self.tpb = ticks_per_block
        self.profile = profile
        self.shift_min = shift_min.astype(np.int64)
        self.noise_cv = noise_cv
        self.holidays = holidays
        self.rng = rng
        self.stream = stream
        mean_shape = (
            residential_mean_shape(clock, holidays) if profile == "japan_residential" else 1.0
        )
        self.scale_w = annual_wh / 8760.0 / mean_shape
        self.tables = (load_model.WEEKDAY_MINUTES, load_model.WEEKEND_MINUTES)
        self.base: np.ndarray | None = None
        if profile not in ("constant", "japan_residential"):
            # an archetype from models/loads.py: W per (kWh/a) for one reference site,
            # shifted per site by whole ticks
            self.base = base_profile_w_per_kwh(
                profile, clock, tick_s, n_ticks, holidays, **(profile_options or {})
            )
            self.scale_w = annual_wh / 1000.0  # kWh a year × (W per kWh/a)
            self.shift_ticks = np.round(shift_min * 60.0 / tick_s).astype(np.int64)
            self._idx = np.empty_like(self.shift_ticks)
            self.n_ticks = n_ticks
        elif profile == "japan_residential":
            idx = clock.index((np.arange(n_ticks) + 0.5) * tick_s)
            self.minute = (idx.hour * 60 + idx.minute).to_numpy().astype(np.int64)
            self.day_off = is_day_off(idx, holidays)
            self.month_f = load_model.MONTHLY_FACTOR[idx.month.to_numpy() - 1]
        self.block = -1
        self.values: np.ndarray | None = None
        self._n_ticks = n_ticks
        self._rows: dict[tuple[int, bool], np.ndarray] = {}

    def tick(self, k: int) -> np.ndarray:
        """Load power [W] of every site during tick ``k`` (a fresh array).

        Each tick's row is made when it is asked for (the shape row times the
        scale, the month and the tick's noise factors, in that order); the noise
        factors are drawn a day-block at a time (site-major, as always) and kept
        tick-major for the block, so a row never waits on a whole day of rows.
        """
        if self.profile == "constant" and self.noise_cv <= 0:
            return self.scale_w.copy()  # the same row every tick: no day-block to build
        if self.noise_cv > 0:
            b = k // self.tpb
            if b != self.block:
                self.values = self._noise_block(b)
                self.block = b
        if self.profile == "constant":
            row = self.scale_w.copy()
        elif self.base is not None:
            # an archetype shifted per site by whole ticks
            i = np.subtract(k, self.shift_ticks, out=self._idx)
            np.clip(i, 0, self.n_ticks - 1, out=i)
            row = self.base[i]
            row *= self.scale_w
        else:
            # the shape depends on (local minute, day type) only: one cached row each
            row = self._shape_row(int(self.minute[k]), bool(self.day_off[k])) * self.scale_w
            row *= self.month_f[k]
        if self.noise_cv > 0:
            assert self.values is not None
            row *= self.values[k - self.block * self.tpb]
        return row

    def _shape_row(self, minute: int, off: bool) -> np.ndarray:
        """Shape of every site at a local minute of a weekday / day off (cached)."""
        key = (minute, off)
        row = self._rows.get(key)
        if row is None:
            m = np.remainder(self.shift_min + minute, load_model.MINUTES_PER_DAY)
            row = self._rows[key] = self.tables[int(off)][m]
        return row

    def _noise_block(self, b: int) -> np.ndarray:
        """Noise factors of day-block ``b``, (ticks of the block, sites), float32.

        Drawn site-major, so appending sites leaves the others' noise unchanged.
        z uniform with mean 0 and std 1 (√3·(2u − 1)): bounded, and 5× cheaper to draw
        than a normal; the factor 1 + cv·z has mean 1 and CV cv exactly (cut at 0).
        """
        n = self.scale_w.size
        k0 = b * self.tpb
        m = min(self.tpb, self._n_ticks - k0)
        u = self.rng.generator(f"{self.stream}/noise/block{b}").random(
            (n, self.tpb), dtype=np.float32
        )[:, :m]
        a = np.float32(2.0 * np.sqrt(3.0) * self.noise_cv)
        u *= a
        u += np.float32(1.0) - a / np.float32(2.0)
        np.maximum(u, np.float32(0.0), out=u)
        return np.ascontiguousarray(u.T)
