"""Exogenous inputs sampled for the run: irradiance per tick, load blocks per day."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cps_sim.core.calendar import is_day_off
from cps_sim.core.clock import Clock
from cps_sim.core.rng import RngStreams
from cps_sim.models import load as load_model
from cps_sim.scenario.schema import Scenario

SUBSTEP_S = 900.0


@dataclass
class RunWeather:
    """Weather of the run: a sub-tick frame (for PV) and tick means (for everything else)."""

    frame: pd.DataFrame  # at sub-step midpoints; ghi/dni/dhi, temp_air_c, wind_speed_m_s
    n_sub: int  # sub-steps per tick
    ghi_w_m2: np.ndarray  # per tick
    temp_air_c: np.ndarray
    wind_speed_m_s: np.ndarray

    def tick_mean(self, values: np.ndarray) -> np.ndarray:
        """Tick means of sub-step values (first axis time)."""
        v = np.asarray(values, dtype=float)
        return v.reshape(-1, self.n_sub, *v.shape[1:]).mean(axis=1)


def build_weather(scenario: Scenario, clock: Clock, rng: RngStreams,
                  base_dir: Path | None) -> RunWeather:
    """Weather sampled at ≤ 15-min sub-steps (midpoints) over the whole run."""
    w = scenario.weather
    tick_s = scenario.tick_s
    step = min(tick_s, SUBSTEP_S)
    n_sub = round(tick_s / step)
    n = scenario.n_ticks * n_sub
    times = clock.index((np.arange(n) + 0.5) * step)
    loc = scenario.location
    if w.source == "constant":
        frame = pd.DataFrame({"ghi_w_m2": w.constant_ghi_w_m2, "dni_w_m2": 0.0,
                              "dhi_w_m2": w.constant_ghi_w_m2, "temp_air_c": w.constant_temp_c,
                              "wind_speed_m_s": w.constant_wind_m_s}, index=times)
    elif w.source == "synthetic":
        from cps_sim.models import weather as wx

        monthly = np.minimum(np.asarray(wx.TOKYO_MONTHLY_CLEAR_SKY_INDEX) *
                             w.clear_sky_index_scale, 0.98)
        frame = wx.synthetic_weather(
            rng.generator("weather"), times[0], periods=n, freq=f"{int(step)}s",
            latitude_deg=loc.latitude, longitude_deg=loc.longitude, tz=clock.timezone,
            altitude_m=loc.altitude_m, monthly_clear_sky_index=tuple(monthly.tolist()))
    else:
        frame = _read_weather_file(scenario, clock, base_dir, times)
    frame = frame.set_axis(times)
    sub = RunWeather(frame, n_sub, np.empty(0), np.empty(0), np.empty(0))
    sub.ghi_w_m2 = sub.tick_mean(frame["ghi_w_m2"].to_numpy())
    sub.temp_air_c = sub.tick_mean(frame["temp_air_c"].to_numpy())
    sub.wind_speed_m_s = sub.tick_mean(frame["wind_speed_m_s"].to_numpy())
    return sub


def _read_weather_file(scenario: Scenario, clock: Clock, base_dir: Path | None,
                       times: pd.DatetimeIndex) -> pd.DataFrame:
    from cps_sim.core.errors import CpsSimError, ScenarioError
    from cps_sim.models import weather as wx
    from cps_sim.scenario.loader import resolve_data_path

    w = scenario.weather
    path = resolve_data_path(w.file, base_dir or Path.cwd(), field="weather.file")
    year = clock.start.year
    try:
        if w.source == "epw":
            df = wx.read_epw_weather(path, coerce_year=year)
        elif w.source == "tmy3":
            df = wx.read_tmy3_weather(path, coerce_year=year)
        else:
            df = wx.read_csv_weather(path, tz=clock.timezone,
                                     latitude_deg=scenario.location.latitude,
                                     longitude_deg=scenario.location.longitude)
    except CpsSimError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ScenarioError.single(str(path), "weather.file", str(exc)) from None
    cols = ["ghi_w_m2", "dni_w_m2", "dhi_w_m2", "temp_air_c", "wind_speed_m_s"]
    df = df[cols].tz_convert(clock.timezone).sort_index()
    if times[0] < df.index[0] - pd.Timedelta(hours=2) or \
            times[-1] > df.index[-1] + pd.Timedelta(hours=2):
        raise ScenarioError.single(str(path), "weather.file",
                                   f"covers {df.index[0]} .. {df.index[-1]}, the run needs "
                                   f"{times[0]} .. {times[-1]}")
    joined = df.reindex(df.index.union(times)).interpolate(method="time", limit_direction="both")
    return joined.loc[times].clip(lower=pd.Series({"ghi_w_m2": 0.0, "dni_w_m2": 0.0,
                                                     "dhi_w_m2": 0.0, "temp_air_c": -100.0,
                                                     "wind_speed_m_s": 0.0}), axis=1)


def base_profile_w_per_kwh(profile: str, clock: Clock, tick_s: float, n_ticks: int,
                           holidays: str | None, **options) -> np.ndarray:
    """Tick-average power [W] of one site consuming 1 kWh a year, from ``models/loads.py``."""
    from cps_sim.models import loads

    index = clock.index(np.arange(n_ticks) * tick_s)
    rng = np.random.default_rng(0)  # unused: no shift and no noise for the reference site
    country = holidays or "JP"
    common = {"shift_std_s": 0.0, "noise_std": 0.0, "tz": clock.timezone}
    if profile == "bdew_h25":
        p = loads.household_power_w(index, [1.0], rng, profile="bdew_h25", country=country,
                                    **common)
    elif profile == "office":
        p = loads.office_power_w(index, [1.0], rng, **common)
    elif profile == "hospital":
        p = loads.hospital_power_w(index, [1.0], rng, **common)
    elif profile == "retail":
        p = loads.retail_power_w(index, [1.0], rng, **common)
    elif profile == "factory":
        p = loads.factory_power_w(index, [1.0], rng, shifts=options.get("shifts", 1), **common)
    elif profile == "data_centre":
        p = loads.data_centre_power_w(index, [1.0], rng, annual_growth_rate=options.get(
            "annual_growth_rate", 0.0), noise_std=0.0, tz=clock.timezone)
    else:
        raise ValueError(f"unknown load profile {profile!r}")
    return np.asarray(p[:, 0], dtype=float)


def pv_unit_profiles(weather: RunWeather, scenario: Scenario, tilt_deg: np.ndarray,
                     azimuth_deg: np.ndarray, dc_ac_ratio: float, losses_percent: float
                     ) -> np.ndarray:
    """Tick-mean AC output per W of DC capacity, one column per orientation (pvlib PVWatts)."""
    from cps_sim.models import solar

    loc = scenario.location
    frame = weather.frame
    frame.attrs.update(latitude_deg=loc.latitude, longitude_deg=loc.longitude,
                       altitude_m=loc.altitude_m)
    k = tilt_deg.size
    p = solar.pv_ac_power_w(frame, tilt_deg, azimuth_deg, np.full(k, 1000.0),
                            np.full(k, 1000.0 / dc_ac_ratio), losses_percent=losses_percent)
    return weather.tick_mean(p) / 1000.0


class LoadBlocks:
    """Per-site load power [W] per tick.

    The calendar (local minute, day type, month) of every tick is computed once;
    each tick's row is one gather from the day-type shape plus two products.
    Noise factors are drawn per day-block (site-major, float32), so memory stays
    bounded and appending sites leaves the others' noise unchanged.
    """

    def __init__(self, clock: Clock, tick_s: float, ticks_per_block: int, annual_wh: np.ndarray,
                 profile: str, shift_min: np.ndarray, noise_cv: float, holidays: str | None,
                 rng: RngStreams, stream: str, n_ticks: int,
                 profile_options: dict | None = None):
        self.clock = clock
        self.tick_s = tick_s
        self.tpb = ticks_per_block
        self.profile = profile
        self.shift_min = shift_min.astype(np.int64)
        self.noise_cv = noise_cv
        self.holidays = holidays
        self.rng = rng
        self.stream = stream
        mean_shape = self._mean_shape() if profile == "japan_residential" else 1.0
        self.scale_w = annual_wh / 8760.0 / mean_shape
        self.tables = (load_model.WEEKDAY_MINUTES, load_model.WEEKEND_MINUTES)
        self.base: np.ndarray | None = None
        if profile not in ("constant", "japan_residential"):
            # an archetype from models/loads.py: W per (kWh/a) for one reference site,
            # shifted per site by whole ticks
            self.base = base_profile_w_per_kwh(profile, clock, tick_s, n_ticks, holidays,
                                               **(profile_options or {}))
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

    def _mean_shape(self) -> float:
        """Mean of the shape over the year that starts at the scenario start (hourly)."""
        t = (np.arange(8760) + 0.5) * 3600.0
        idx = self.clock.index(t)
        minute = (idx.hour * 60 + idx.minute).to_numpy()
        off = is_day_off(idx, self.holidays)
        return float(load_model.shape(minute, off, idx.month.to_numpy()).mean())

    def tick(self, k: int) -> np.ndarray:
        """Load power [W] of every site during tick ``k`` (a fresh array).

        Rows are built a day-block at a time (one vectorised gather over the
        block), then handed out per tick.
        """
        b = k // self.tpb
        if b != self.block:
            self.values = self._build(b)
            self.block = b
        return self.values[k - b * self.tpb].copy()

    def _shape_row(self, minute: int, off: bool) -> np.ndarray:
        """Shape of every site at a local minute of a weekday / day off (cached)."""
        key = (minute, off)
        row = self._rows.get(key)
        if row is None:
            m = np.remainder(self.shift_min + minute, load_model.MINUTES_PER_DAY)
            row = self._rows[key] = self.tables[int(off)][m]
        return row

    def _build(self, b: int) -> np.ndarray:
        k0 = b * self.tpb
        ks = np.arange(k0, min(k0 + self.tpb, self._n_ticks))
        n = self.scale_w.size
        if self.profile == "constant":
            vals = np.broadcast_to(self.scale_w, (ks.size, n)).copy()
        elif self.base is not None:
            i = ks[:, None] - self.shift_ticks[None, :]
            np.clip(i, 0, self.n_ticks - 1, out=i)
            vals = self.base[i]
            vals *= self.scale_w
        else:
            # Rows depend on (local minute, day type) only: gather each once, reuse daily.
            vals = np.empty((ks.size, n))
            for j, k in enumerate(ks.tolist()):  # one row per tick of the block, not per site
                vals[j] = self._shape_row(int(self.minute[k]), bool(self.day_off[k]))
            vals *= self.scale_w
            vals *= self.month_f[ks][:, None]
        if self.noise_cv > 0:
            # drawn site-major, so appending sites leaves the others' noise unchanged
            # z uniform with mean 0 and std 1 (√3·(2u − 1)): bounded, and 5× cheaper to
            # draw than a normal; factor 1 + cv·z has mean 1 and CV cv exactly
            u = self.rng.generator(f"{self.stream}/noise/block{b}").random(
                (n, self.tpb), dtype=np.float32)[:, : ks.size]
            a = np.float32(2.0 * np.sqrt(3.0) * self.noise_cv)
            u *= a
            u += np.float32(1.0) - a / np.float32(2.0)
            np.maximum(u, np.float32(0.0), out=u)
            vals *= u.T
        return vals
