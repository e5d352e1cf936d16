"""Exogenous inputs sampled for the run: irradiance per tick, load blocks per day."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cps_sim.core.calendar import is_day_off
from cps_sim.core.clock import Clock
from cps_sim.core.rng import RngStreams
from cps_sim.models import load as load_model
from cps_sim.scenario.schema import LocationSpec, WeatherSpec

SUBSTEP_S = 300.0


def tick_irradiance_w_m2(clock: Clock, n_ticks: int, tick_s: float, location: LocationSpec,
                         weather: WeatherSpec, rng: RngStreams) -> np.ndarray:
    """Tick-average global horizontal irradiance [W/m²] for every tick of the run.

    ``synthetic``: pvlib clear-sky GHI (Ineichen with pvlib's bundled Linke
    turbidity, offline) sampled every ≤ 5 min and averaged per tick, times a
    daily clear-sky index following an AR(1) process (mean, std, lag-1
    persistence from the scenario), clipped to [0.05, 1.1].
    """
    if weather.source == "constant":
        return np.full(n_ticks, float(weather.constant_ghi_w_m2))
    import pvlib

    step = min(tick_s, SUBSTEP_S)
    n_sub = round(tick_s / step)
    t = (np.arange(n_ticks * n_sub) + 0.5) * step
    times = clock.index(t)
    loc = pvlib.location.Location(location.latitude, location.longitude, tz=clock.timezone,
                                  altitude=location.altitude_m)
    with warnings.catch_warnings():
        # pvlib's Linke turbidity lookup can emit numpy/pandas deprecation warnings;
        # they do not affect the values.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        ghi_clear = loc.get_clearsky(times, model="ineichen")["ghi"].to_numpy(dtype=float)
    day = _local_day_index(clock, t)
    n_days = int(day.max()) + 1
    z = rng.generator("weather/clear_sky_index").standard_normal(n_days)
    k = np.empty(n_days)
    mu, sd, phi = (weather.clear_sky_index_mean, weather.clear_sky_index_std,
                   weather.persistence)
    k[0] = mu + sd * z[0]
    innov = sd * np.sqrt(1.0 - phi * phi)
    for d in range(1, n_days):  # one value per day: a short scalar recursion
        k[d] = mu + phi * (k[d - 1] - mu) + innov * z[d]
    np.clip(k, 0.05, 1.1, out=k)
    ghi = ghi_clear * k[day]
    return ghi.reshape(n_ticks, n_sub).mean(axis=1)


def _local_day_index(clock: Clock, t_s: np.ndarray) -> np.ndarray:
    idx = clock.index(t_s)
    dates = idx.normalize().tz_localize(None)
    first = pd.Timestamp(clock.start.date())
    return ((dates - first) // pd.Timedelta(days=1)).to_numpy().astype(np.int64)


class LoadBlocks:
    """Per-site load power [W] per tick.

    The calendar (local minute, day type, month) of every tick is computed once;
    each tick's row is one gather from the day-type shape plus two products.
    Noise factors are drawn per day-block (site-major, float32), so memory stays
    bounded and appending sites leaves the others' noise unchanged.
    """

    def __init__(self, clock: Clock, tick_s: float, ticks_per_block: int, annual_wh: np.ndarray,
                 profile: str, shift_min: np.ndarray, noise_cv: float, holidays: str | None,
                 rng: RngStreams, stream: str, n_ticks: int):
        self.clock = clock
        self.tick_s = tick_s
        self.tpb = ticks_per_block
        self.profile = profile
        self.shift_min = shift_min.astype(np.int64)
        self.noise_cv = noise_cv
        self.holidays = holidays
        self.rng = rng
        self.stream = stream
        mean_shape = self._mean_shape() if profile != "constant" else 1.0
        self.scale_w = annual_wh / 8760.0 / mean_shape
        self.tables = (load_model.WEEKDAY_MINUTES, load_model.WEEKEND_MINUTES)
        if profile != "constant":
            idx = clock.index((np.arange(n_ticks) + 0.5) * tick_s)
            self.minute = (idx.hour * 60 + idx.minute).to_numpy().astype(np.int64)
            self.day_off = is_day_off(idx, holidays)
            self.month_f = load_model.MONTHLY_FACTOR[idx.month.to_numpy() - 1]
        self.block = -1
        self.noise: np.ndarray | None = None
        self._row = np.empty_like(self.scale_w)
        self._m = np.empty_like(self.shift_min)

    def _mean_shape(self) -> float:
        """Mean of the shape over the year that starts at the scenario start (hourly)."""
        t = (np.arange(8760) + 0.5) * 3600.0
        idx = self.clock.index(t)
        minute = (idx.hour * 60 + idx.minute).to_numpy()
        off = is_day_off(idx, self.holidays)
        return float(load_model.shape(minute, off, idx.month.to_numpy()).mean())

    def tick(self, k: int) -> np.ndarray:
        """Load power [W] of every site during tick ``k`` (a fresh array)."""
        if self.profile == "constant":
            row = self.scale_w.copy()
        else:
            m = np.add(self.shift_min, self.minute[k], out=self._m)
            np.remainder(m, load_model.MINUTES_PER_DAY, out=m)
            row = self.tables[int(self.day_off[k])][m]
            row *= self.scale_w
            row *= self.month_f[k]
        if self.noise_cv > 0:
            b = k // self.tpb
            if b != self.block:
                z = self.rng.generator(f"{self.stream}/noise/block{b}").standard_normal(
                    (self.scale_w.size, self.tpb), dtype=np.float32)
                z *= np.float32(self.noise_cv)
                z += np.float32(1.0)
                np.maximum(z, np.float32(0.0), out=z)
                self.noise = np.ascontiguousarray(z.T)  # tick-major rows for cheap access
                self.block = b
            row *= self.noise[k - b * self.tpb]
        return row
