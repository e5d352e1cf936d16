"""Electric load profiles for populations of sites, scaled exactly to annual energy.

Every profile function has the form::

    f(index, annual_energy_kwh, rng, **shape_options) -> power_w  # (n_times, n_sites)

* ``index`` — a regular tz-aware :class:`pandas.DatetimeIndex` (naive means
  local time of ``tz="Asia/Tokyo"``).  ``power_w[i]`` is the *average* power over
  ``[index[i], index[i+1])`` (the last interval has the same length as the one
  before), so ``power_w.sum(axis=0) * dt_s / 3600`` is energy in Wh exactly.
* ``annual_energy_kwh`` — one value per site.  Each *calendar year* (local
  time) of the profile holds exactly this energy (data centres: times
  (1+g)^k in the k-th year); an index covering part of a year receives that
  part's share under the profile's shape (a winter week of a household gets
  more than a spring week).
* ``rng`` — per-site variation (time shift of the daily pattern and
  multiplicative noise) is drawn only from this numpy Generator.

How: a deterministic shape is evaluated on a 15-min grid covering each
calendar year touched by ``index``; per-site variation is applied; each site
and year is normalised to its annual energy; the cumulative energy is then
interpolated at the interval boundaries of ``index`` (exact integral for any
resolution, sub- or super-15-min).  Sites are processed in blocks to bound
memory.  Loads consume power, so ``power_w`` is positive (load convention).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import holidays as holidays_lib
import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.core.types import FloatArray
from cps_sim.models.weather import library_deprecations_ignored

BASE_STEP_S = 900.0  # 15-min shape grid
_BLOCK_ELEMENTS = 4_000_000  # grid points × sites per block

# --------------------------------------------------------------------------- household shape
# The engine's household load (``world/exogenous.LoadBlocks``):
#
#     P_i(t) = E_i / 8760 h · s(h(t) + δ_i, daytype, month) / s̄ · (1 + cv · z_i,t)
#
# * ``E_i`` annual energy of the home (drawn from the scenario's distribution),
# * ``s`` the daily shape (below), ``s̄`` its mean over the year, so that the
#   expected annual energy is exactly ``E_i``,
# * ``δ_i`` a per-home time shift (uniform in ±shift_max), ``z`` noise per home
#   and tick with mean 0 and standard deviation 1, uniform on [−√3, √3]
#   (bounded; clipped so that power stays ≥ 0 only when cv > 1/√3).
#
# ASSUMPTION (not a measured standard profile; the seed document gives no hourly
# profile): a typical Japanese detached household's hourly shape, relative units:
# morning peak around 07:00, low daytime on weekdays, evening peak 19:00–20:00;
# later mornings and a higher daytime on weekends and holidays; monthly factors
# with a winter maximum (heating, Jan–Feb) and a summer secondary peak (cooling,
# Aug).  One definition for the whole project.

# Relative hourly shapes (value at hh:30), assumption; see module docstring.
WEEKDAY_HOURLY = np.array(
    [
        0.55,
        0.45,
        0.40,
        0.38,
        0.38,
        0.45,
        0.75,
        1.05,
        1.00,
        0.85,
        0.80,
        0.80,
        0.85,
        0.80,
        0.78,
        0.80,
        0.90,
        1.15,
        1.45,
        1.60,
        1.55,
        1.40,
        1.10,
        0.80,
    ]
)
WEEKEND_HOURLY = np.array(
    [
        0.60,
        0.50,
        0.43,
        0.40,
        0.40,
        0.42,
        0.55,
        0.80,
        1.00,
        1.10,
        1.10,
        1.10,
        1.15,
        1.05,
        1.00,
        1.00,
        1.05,
        1.20,
        1.45,
        1.55,
        1.50,
        1.35,
        1.10,
        0.80,
    ]
)
MONTHLY_FACTOR = np.array([1.30, 1.25, 1.10, 0.92, 0.82, 0.82, 0.95, 1.08, 0.92, 0.82, 0.90, 1.15])

MINUTES_PER_DAY = 1440


def _minute_table(hourly: FloatArray) -> FloatArray:
    """Shape at each minute of the day, linear between hh:30 points (cyclic)."""
    x = np.arange(-0.5, 24.5 + 1e-9, 1.0) * 60.0  # hh:30 points incl. wrap-around
    y = np.concatenate([[hourly[-1]], hourly, [hourly[0]]])
    minutes = np.arange(MINUTES_PER_DAY) + 0.5
    return np.interp(minutes, x[: len(y)], y)


WEEKDAY_MINUTES = _minute_table(WEEKDAY_HOURLY)
WEEKEND_MINUTES = _minute_table(WEEKEND_HOURLY)


def shape(
    minute_of_day: npt.NDArray[np.int64],
    weekend: npt.NDArray[np.bool_],
    month: npt.NDArray[np.int64],
) -> FloatArray:
    """Relative shape (mean ≈ 1) at integer local minutes of day; broadcasts."""
    m = np.mod(minute_of_day, MINUTES_PER_DAY)
    daily = np.where(weekend, WEEKEND_MINUTES[m], WEEKDAY_MINUTES[m])
    return daily * MONTHLY_FACTOR[np.asarray(month) - 1]


JAPAN_HOUSEHOLD_WEEKDAY = tuple(float(x) for x in WEEKDAY_HOURLY)
JAPAN_HOUSEHOLD_WEEKEND = tuple(float(x) for x in WEEKEND_HOURLY)
JAPAN_HOUSEHOLD_MONTHLY = tuple(float(x) for x in MONTHLY_FACTOR)
# ASSUMPTION: monthly HVAC-driven factor for Japanese commercial buildings
# (summer cooling peak, smaller winter heating peak).
JAPAN_COMMERCIAL_MONTHLY = (1.05, 1.03, 0.95, 0.90, 0.92, 1.00, 1.12, 1.18, 1.08, 0.94, 0.90, 1.00)


# --------------------------------------------------------------------------- core


def _interval_bounds_s(index: pd.DatetimeIndex) -> FloatArray:
    """Interval boundaries [s since epoch] of ``index`` (n + 1 values)."""
    if len(index) == 0:
        raise ValueError("index is empty")
    epoch = pd.Timestamp("1970-01-01", tz="UTC" if index.tz is not None else None)
    t = ((index - epoch) / pd.Timedelta(seconds=1)).to_numpy()
    t = np.asarray(t, dtype=float)
    if len(t) > 1:
        step = np.diff(t)
        if np.any(step <= 0):
            raise ValueError("index must increase strictly")
        last = step[-1]
    elif index.freq is not None:
        last = pd.Timedelta(index.freq).total_seconds()
    else:
        raise ValueError("a one-element index needs a freq")
    return np.append(t, t[-1] + last)


def _localise(index: pd.DatetimeIndex, tz: str) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(index)
    return index.tz_localize(tz) if index.tz is None else index


def _year_grid(year: int, tz: Any) -> pd.DatetimeIndex:
    start = pd.Timestamp(year=year, month=1, day=1).tz_localize(tz)
    end = pd.Timestamp(year=year + 1, month=1, day=1).tz_localize(tz)
    return pd.date_range(start, end, freq=f"{int(BASE_STEP_S)}s", inclusive="left")


def _off_days(grid: pd.DatetimeIndex, country: str, workdays: str = "mon_fri") -> np.ndarray:
    """True where the local day is a non-working day (weekend or public holiday)."""
    years = sorted(set(grid.year.tolist()))
    cal = holidays_lib.country_holidays(country, years=years)
    dates = grid.tz_localize(None).normalize()
    is_holiday = np.asarray(dates.isin(pd.DatetimeIndex(list(cal.keys()))), dtype=bool)
    dow = grid.day_of_week.to_numpy()
    if workdays == "mon_fri":
        weekend = dow >= 5
    elif workdays == "mon_sat":
        weekend = dow >= 6
    elif workdays == "all":
        return np.zeros(len(grid), dtype=bool)
    else:
        raise ValueError(f"workdays must be 'mon_fri', 'mon_sat' or 'all', got {workdays!r}")
    return weekend | is_holiday


def _monthly_factor(grid: pd.DatetimeIndex, monthly: tuple[float, ...]) -> FloatArray:
    """Monthly factors interpolated smoothly between mid-months (periodic)."""
    m = np.asarray(monthly, dtype=float)
    if m.shape != (12,) or np.any(m < 0):
        raise ValueError("monthly factors must be 12 non-negative values")
    day_frac = (grid.day.to_numpy() - 0.5) / grid.days_in_month.to_numpy()
    month_pos = grid.month.to_numpy() - 1 + day_frac
    xp = np.arange(-0.5, 12.6, 1.0)  # mid-months -0.5 .. 12.5, padded for wrap-around
    fp = np.concatenate([[m[-1]], m, [m[0]]])
    return np.interp(month_pos, xp, fp)


def _hour_of_day(grid: pd.DatetimeIndex) -> FloatArray:
    return grid.hour.to_numpy() + grid.minute.to_numpy() / 60.0


def _vary(
    shape: FloatArray, n_sites: int, rng: np.random.Generator, shift_std_s: float, noise_std: float
) -> FloatArray:
    """Per-site copies of ``shape``: circular time shift + mean-one lognormal noise."""
    n = shape.shape[0]
    if shift_std_s > 0:
        k = np.rint(rng.normal(0.0, shift_std_s / BASE_STEP_S, n_sites)).astype(np.int64)
        idx = (np.arange(n)[:, None] - k[None, :]) % n
        out = shape[idx]
    else:
        out = np.repeat(shape[:, None], n_sites, axis=1)
    if noise_std > 0:
        z = rng.standard_normal((n, n_sites))
        out = out * np.exp(noise_std * z - 0.5 * noise_std**2)
    return out


def _scaled_power_w(
    index: pd.DatetimeIndex,
    annual_energy_kwh: npt.ArrayLike,
    rng: np.random.Generator,
    shape_fn: Callable[[pd.DatetimeIndex], FloatArray],
    *,
    shift_std_s: float,
    noise_std: float,
    tz: str,
    annual_growth_rate: float = 0.0,
    within_year_growth: bool = False,
) -> FloatArray:
    index = _localise(index, tz)
    annual_wh = np.atleast_1d(np.asarray(annual_energy_kwh, dtype=float)) * 1000.0
    if annual_wh.ndim != 1 or np.any(~np.isfinite(annual_wh)) or np.any(annual_wh < 0):
        raise ValueError("annual_energy_kwh must be finite, >= 0, one value per site")
    n_sites = annual_wh.size
    bounds = _interval_bounds_s(index)
    tz_obj = index.tz
    last = pd.Timestamp(bounds[-1] - 1e-3, unit="s", tz="UTC").tz_convert(tz_obj)
    years = list(range(index[0].year, last.year + 1))

    grids = [_year_grid(y, tz_obj) for y in years]
    shapes = []
    for y, g in zip(years, grids, strict=True):
        s = np.asarray(shape_fn(g), dtype=float)
        if within_year_growth and annual_growth_rate:
            frac = np.arange(len(g)) / len(g)
            s = s * (1.0 + annual_growth_rate) ** frac
        if np.any(s < 0) or not np.all(np.isfinite(s)) or s.sum() <= 0:
            raise ValueError(f"load shape for {y} must be finite, >= 0 and not all zero")
        shapes.append(s)
    year_factor = (1.0 + annual_growth_rate) ** np.arange(len(years))
    t0 = (grids[0][0] - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)
    n_grid = sum(len(g) for g in grids)
    pos = (bounds - t0) / BASE_STEP_S
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_grid - 1)
    frac = (pos - i0)[:, None]
    dt_h = (np.diff(bounds) / 3600.0)[:, None]

    out = np.empty((len(index), n_sites))
    block = max(1, _BLOCK_ELEMENTS // max(n_grid, 1))
    for lo in range(0, n_sites, block):
        hi = min(n_sites, lo + block)
        parts = []
        for s, f in zip(shapes, year_factor, strict=True):
            v = _vary(s, hi - lo, rng, shift_std_s, noise_std)
            parts.append(v / v.sum(axis=0) * (annual_wh[lo:hi] * f))  # Wh per grid step
        step_wh = np.concatenate(parts, axis=0)
        cum = np.concatenate([np.zeros((1, hi - lo)), np.cumsum(step_wh, axis=0)], axis=0)
        e_at = cum[i0] + frac * step_wh[np.minimum(i0, n_grid - 1)]
        out[:, lo:hi] = np.diff(e_at, axis=0) / dt_h
    return out


# --------------------------------------------------------------------------- shapes


def _step_hourly(
    grid: pd.DatetimeIndex, workday24: FloatArray, offday24: FloatArray, off: np.ndarray
) -> FloatArray:
    h = grid.hour.to_numpy()
    return np.where(off, np.asarray(offday24)[h], np.asarray(workday24)[h])


def _smooth_hourly(grid: pd.DatetimeIndex, values24: tuple[float, ...]) -> FloatArray:
    """Hourly values placed at mid-hour, linearly interpolated (periodic over the day)."""
    v = np.asarray(values24, dtype=float)
    xp = np.arange(-0.5, 24.6, 1.0)  # -0.5 .. 24.5
    fp = np.concatenate([[v[-1]], v, [v[0]]])
    return np.interp(_hour_of_day(grid) + 0.125, xp, fp)  # value at the 15-min midpoint


def _business_hours(
    open_hour: float, close_hour: float, base_fraction: float, ramp_h: float = 1.0
) -> np.ndarray:
    """24 hourly values: 1 when open, base when closed, half-way in a ramp hour each side."""
    h = np.arange(24) + 0.5
    if close_hour > open_hour:
        occ = ((h > open_hour) & (h < close_hour)).astype(float)
        ramp = ((h > open_hour - ramp_h) & (h < open_hour)) | (
            (h > close_hour) & (h < close_hour + ramp_h)
        )
    else:  # overnight opening, e.g. 22 -> 6
        occ = ((h > open_hour) | (h < close_hour)).astype(float)
        ramp = np.zeros(24, dtype=bool)
    occ = np.where(ramp, 0.5, occ)
    return base_fraction + (1.0 - base_fraction) * occ


# --------------------------------------------------------------------------- public


def household_power_w(
    index: pd.DatetimeIndex,
    annual_energy_kwh: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    profile: str = "bdew_h25",
    shift_std_s: float = 1800.0,
    noise_std: float = 0.3,
    country: str = "JP",
    tz: str = "Asia/Tokyo",
) -> FloatArray:
    """Household demand [W], shape (n_times, n_sites).

    ``profile="bdew_h25"``: demandlib's BDEW 2025 H25 standard household profile
    (15-min, dynamised over the year) with the public holidays of ``country``
    (default Japan, via ``holidays.country_holidays``) treated as Sundays.  The
    pattern is German; only the holidays are Japanese.

    ``profile="japan"``: ASSUMPTION — a Japanese daily shape written for this
    project (:data:`JAPAN_HOUSEHOLD_WEEKDAY` / :data:`JAPAN_HOUSEHOLD_WEEKEND`,
    hourly, linearly interpolated) times a smooth monthly factor
    (:data:`JAPAN_HOUSEHOLD_MONTHLY`); weekends and holidays use the weekend shape.
    It is a plausible pattern, not a measured standard profile.

    Per site: the daily pattern is shifted by N(0, ``shift_std_s``) (rounded to
    15 min, circular) and multiplied by lognormal noise (σ = ``noise_std``,
    mean 1) per 15-min step; then each site and year is rescaled to its annual
    energy exactly.
    """
    if profile == "bdew_h25":
        from cps_sim.core.deps import require

        bdew = require("demandlib.bdew", "the BDEW H25 household profile (bdew_h25)")

        def shape(grid: pd.DatetimeIndex) -> FloatArray:
            cal = holidays_lib.country_holidays(country, years=sorted(set(grid.year)))
            with library_deprecations_ignored():
                series = bdew.H25(grid, holidays=dict(cal))
            return np.asarray(series, dtype=float)
    elif profile == "japan":

        def shape(grid: pd.DatetimeIndex) -> FloatArray:
            off = _off_days(grid, country)
            wk = _smooth_hourly(grid, JAPAN_HOUSEHOLD_WEEKDAY)
            we = _smooth_hourly(grid, JAPAN_HOUSEHOLD_WEEKEND)
            return np.where(off, we, wk) * _monthly_factor(grid, JAPAN_HOUSEHOLD_MONTHLY)
    else:
        raise ValueError(f"profile must be 'bdew_h25' or 'japan', got {profile!r}")
    return _scaled_power_w(
        index, annual_energy_kwh, rng, shape, shift_std_s=shift_std_s, noise_std=noise_std, tz=tz
    )


def office_power_w(
    index: pd.DatetimeIndex,
    annual_energy_kwh: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    open_hour: float = 9.0,
    close_hour: float = 18.0,
    base_fraction: float = 0.3,
    monthly_factor: tuple[float, ...] = JAPAN_COMMERCIAL_MONTHLY,
    shift_std_s: float = 900.0,
    noise_std: float = 0.05,
    country: str = "JP",
    tz: str = "Asia/Tokyo",
) -> FloatArray:
    """Office demand [W]: full load in business hours on working days, else base.

    Hourly shape: 1 inside [open, close), 0.5 in the hour before opening and
    after closing, ``base_fraction`` otherwise and all day on weekends and
    public holidays; times a monthly HVAC factor (ASSUMPTION, Japanese
    commercial pattern).  Per-site shift and noise as for households.
    """
    work = _business_hours(open_hour, close_hour, base_fraction)
    off24 = np.full(24, base_fraction)

    def shape(grid: pd.DatetimeIndex) -> FloatArray:
        off = _off_days(grid, country)
        return _step_hourly(grid, work, off24, off) * _monthly_factor(grid, monthly_factor)

    return _scaled_power_w(
        index, annual_energy_kwh, rng, shape, shift_std_s=shift_std_s, noise_std=noise_std, tz=tz
    )


def hospital_power_w(
    index: pd.DatetimeIndex,
    annual_energy_kwh: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    night_fraction: float = 0.7,
    offday_day_fraction: float = 0.85,
    monthly_factor: tuple[float, ...] = JAPAN_COMMERCIAL_MONTHLY,
    shift_std_s: float = 900.0,
    noise_std: float = 0.05,
    country: str = "JP",
    tz: str = "Asia/Tokyo",
) -> FloatArray:
    """Hospital demand [W]: 24/7 with a daytime (8-18 h) rise on working days.

    Hourly shape: 1.0 from 8 to 18 h on working days, ``offday_day_fraction``
    in those hours on weekends/holidays, ``night_fraction`` otherwise; times the
    monthly HVAC factor.  (ASSUMPTION: shape, not a measured profile.)
    """
    work = _business_hours(8.0, 18.0, night_fraction)
    offd = _business_hours(8.0, 18.0, night_fraction / offday_day_fraction) * offday_day_fraction

    def shape(grid: pd.DatetimeIndex) -> FloatArray:
        off = _off_days(grid, country)
        return _step_hourly(grid, work, offd, off) * _monthly_factor(grid, monthly_factor)

    return _scaled_power_w(
        index, annual_energy_kwh, rng, shape, shift_std_s=shift_std_s, noise_std=noise_std, tz=tz
    )


def retail_power_w(
    index: pd.DatetimeIndex,
    annual_energy_kwh: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    open_hour: float = 10.0,
    close_hour: float = 21.0,
    base_fraction: float = 0.25,
    offday_open_factor: float = 1.1,
    monthly_factor: tuple[float, ...] = JAPAN_COMMERCIAL_MONTHLY,
    shift_std_s: float = 900.0,
    noise_std: float = 0.05,
    country: str = "JP",
    tz: str = "Asia/Tokyo",
) -> FloatArray:
    """Retail demand [W]: open every day, slightly busier on weekends/holidays.

    Open-hours load is multiplied by ``offday_open_factor`` on weekends and
    holidays; base load otherwise; times the monthly HVAC factor (ASSUMPTION).
    """
    work = _business_hours(open_hour, close_hour, base_fraction)
    offd = base_fraction + (work - base_fraction) * offday_open_factor

    def shape(grid: pd.DatetimeIndex) -> FloatArray:
        off = _off_days(grid, country)
        return _step_hourly(grid, work, offd, off) * _monthly_factor(grid, monthly_factor)

    return _scaled_power_w(
        index, annual_energy_kwh, rng, shape, shift_std_s=shift_std_s, noise_std=noise_std, tz=tz
    )


SHIFT_HOURS = {1: (8.0, 17.0), 2: (6.0, 22.0), 3: (0.0, 24.0)}


def factory_power_w(
    index: pd.DatetimeIndex,
    annual_energy_kwh: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    shifts: int = 1,
    operating_days: str = "mon_fri",
    base_fraction: float = 0.15,
    shift_std_s: float = 0.0,
    noise_std: float = 0.05,
    country: str = "JP",
    tz: str = "Asia/Tokyo",
) -> FloatArray:
    """Factory demand [W] with 1, 2 or 3 shifts.

    Shifts: 1 → 8-17 h, 2 → 6-22 h, 3 → around the clock.  During shift hours
    on operating days (``"mon_fri"``, ``"mon_sat"`` or ``"all"``; public holidays
    are off except with ``"all"``) the load is 1; otherwise ``base_fraction``
    (standby, lighting, compressed-air leaks).  No seasonal factor.
    """
    if shifts not in SHIFT_HOURS:
        raise ValueError(f"shifts must be 1, 2 or 3, got {shifts!r}")
    start, end = SHIFT_HOURS[shifts]
    h = np.arange(24) + 0.5
    work = np.where((h > start) & (h < end), 1.0, base_fraction)
    off24 = np.full(24, base_fraction)

    def shape(grid: pd.DatetimeIndex) -> FloatArray:
        off = _off_days(grid, country, operating_days)
        return _step_hourly(grid, work, off24, off)

    return _scaled_power_w(
        index, annual_energy_kwh, rng, shape, shift_std_s=shift_std_s, noise_std=noise_std, tz=tz
    )


def data_centre_power_w(
    index: pd.DatetimeIndex,
    annual_energy_kwh: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    annual_growth_rate: float = 0.0,
    noise_std: float = 0.02,
    tz: str = "Asia/Tokyo",
) -> FloatArray:
    """Data-centre demand [W]: flat, growing continuously by ``annual_growth_rate``.

    P(t) ∝ (1 + g)^t (t in years from 1 January of the index's first year);
    ``annual_energy_kwh`` is the first calendar year's energy and the k-th year
    holds annual·(1 + g)^k exactly.  Small lognormal noise (σ = ``noise_std``).
    """
    if annual_growth_rate <= -1:
        raise ValueError("annual_growth_rate must be > -1")

    def shape(grid: pd.DatetimeIndex) -> FloatArray:
        return np.ones(len(grid))

    return _scaled_power_w(
        index,
        annual_energy_kwh,
        rng,
        shape,
        shift_std_s=0.0,
        noise_std=noise_std,
        tz=tz,
        annual_growth_rate=annual_growth_rate,
        within_year_growth=True,
    )


def deferrable_load_power_w(
    index: pd.DatetimeIndex,
    energy_wh: npt.ArrayLike,
    earliest_start_s: npt.ArrayLike,
    deadline_s: npt.ArrayLike,
    max_power_w: npt.ArrayLike,
    *,
    policy: str = "earliest",
) -> FloatArray:
    """Deferrable loads (washing machine, dishwasher, pump): energy within a window.

    Each load must receive ``energy_wh`` between ``earliest_start_s`` and
    ``deadline_s`` (seconds since ``index[0]``) at no more than ``max_power_w``.
    Policies: ``"earliest"`` runs at full power from the window start,
    ``"latest"`` at full power ending at the deadline, ``"uniform"`` spreads
    E/(deadline - start) over the whole window.  Each interval gets the average
    of the run over it, so Σ power·Δt = energy exactly when the window lies
    inside the index.  Raises ``ValueError`` naming the load when
    E/P_max > deadline - start.

    Returns
    -------
    ndarray (n_times, n_loads) of average power [W, ≥ 0] per interval.
    """
    e = np.atleast_1d(np.asarray(energy_wh, dtype=float))
    n = e.size
    t0 = np.broadcast_to(np.asarray(earliest_start_s, dtype=float), (n,))
    t1 = np.broadcast_to(np.asarray(deadline_s, dtype=float), (n,))
    p_max = np.broadcast_to(np.asarray(max_power_w, dtype=float), (n,))
    if np.any(e < 0) or np.any(p_max <= 0) or np.any(t1 < t0):
        raise ValueError("need energy_wh >= 0, max_power_w > 0 and deadline_s >= earliest_start_s")
    duration_s = e * 3600.0 / p_max
    bad = np.flatnonzero(duration_s > (t1 - t0) * (1 + 1e-12))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"deferrable load {i}: {e[i]:.1f} Wh at {p_max[i]:.1f} W needs {duration_s[i]:.0f} s "
            f"but its window is {t1[i] - t0[i]:.0f} s"
        )
    if policy == "earliest":
        start, stop, power = t0, t0 + duration_s, p_max
    elif policy == "latest":
        start, stop, power = t1 - duration_s, t1, p_max
    elif policy == "uniform":
        width = t1 - t0
        with np.errstate(divide="ignore", invalid="ignore"):
            power = np.where(width > 0, e * 3600.0 / width, 0.0)
        start, stop = t0, t1
    else:
        raise ValueError(f"policy must be 'earliest', 'latest' or 'uniform', got {policy!r}")
    b = _interval_bounds_s(pd.DatetimeIndex(index))
    b = (b - b[0])[:, None]
    overlap = np.clip(
        np.minimum(b[1:], stop[None, :]) - np.maximum(b[:-1], start[None, :]), 0.0, None
    )
    return power[None, :] * overlap / np.diff(b, axis=0)
