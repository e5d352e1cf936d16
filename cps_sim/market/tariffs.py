"""Retail tariffs (flat, time-of-use, dynamic), demand charges and the bill.

Every tariff answers two vectorised questions for local timestamps::

    import_price_jpy_per_kwh(times_local) -> np.ndarray
    export_price_jpy_per_kwh(times_local) -> np.ndarray

and carries ``demand_charge_jpy_per_kw_month``, charged on each calendar
month's peak import, measured as the largest 30-min average (the Japanese
最大需要電力 / demand-meter convention; ``demand_interval_s`` changes it).

:func:`bill_jpy` splits a site's (or many sites') bill into energy cost,
export credit, demand charge and carbon cost.

Price levels in :func:`example_tou_tariff` are ASSUMPTIONS for examples and
tests, not quotes of a real retailer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.core.calendar import holiday_dates
from cps_sim.core.units import SECONDS_PER_HOUR, W_PER_KW, WH_PER_KWH
from cps_sim.market.carbon import CarbonPriceTimeline, carbon_cost_jpy

WEEKDAY, WEEKEND, HOLIDAY = "weekday", "weekend", "holiday"
DAY_TYPES = (WEEKDAY, WEEKEND, HOLIDAY)
ALL_MONTHS = tuple(range(1, 13))
SUMMER_MONTHS = (7, 8, 9)  # common Japanese retail "summer" season (ASSUMPTION per retailer)
WINTER_MONTHS = (12, 1, 2, 3)

# ASSUMPTIONS for examples (JPY/kWh, incl. tax), order of magnitude of Japanese household tariffs.
ASSUMED_FLAT_IMPORT_JPY_PER_KWH = 31.0
ASSUMED_EXPORT_JPY_PER_KWH = 8.5  # post-FIT surplus purchase price order of magnitude


@runtime_checkable
class Tariff(Protocol):
    """What every tariff provides (prices at local timestamps, demand charge)."""

    demand_charge_jpy_per_kw_month: float

    def import_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray: ...

    def export_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray: ...


def _local(times: pd.DatetimeIndex, tz: str = "Asia/Tokyo") -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(times)
    return idx.tz_localize(tz) if idx.tz is None else idx.tz_convert(tz)


def day_type(
    times_local: pd.DatetimeIndex, year_end_holidays: bool = False, tz: str = "Asia/Tokyo"
) -> np.ndarray:
    """Day type of each timestamp: ``"holiday"``, ``"weekend"`` or ``"weekday"``.

    Japanese national holidays (``holidays.Japan``, incl. substitute holidays)
    take precedence over weekends.  ``year_end_holidays`` also treats
    Dec 29 - Jan 3 as holidays (as many Japanese contracts do).
    """
    idx = _local(times_local, tz)
    if len(idx) == 0:
        return np.array([], dtype=object)
    days = idx.tz_localize(None).normalize()
    # the same dates as holidays.Japan(years=...), computed once per span of years
    hol_dates = pd.DatetimeIndex(
        sorted(holiday_dates("JP", int(days.year.min()), int(days.year.max())))
    )
    is_hol = days.isin(hol_dates)
    if year_end_holidays:
        m, d = days.month, days.day
        is_hol = is_hol | ((m == 12) & (d >= 29)) | ((m == 1) & (d <= 3))
    out = np.where(days.day_of_week >= 5, WEEKEND, WEEKDAY).astype(object)
    out[np.asarray(is_hol)] = HOLIDAY
    return out


@dataclass(frozen=True)
class FlatTariff:
    """One import price and one export price at all times."""

    import_jpy_per_kwh: float = ASSUMED_FLAT_IMPORT_JPY_PER_KWH
    export_jpy_per_kwh: float = 0.0
    demand_charge_jpy_per_kw_month: float = 0.0

    def import_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        return np.full(len(times_local), float(self.import_jpy_per_kwh))

    def export_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        return np.full(len(times_local), float(self.export_jpy_per_kwh))


@dataclass(frozen=True)
class TouPeriod:
    """A price that applies on given local hours, day types and months.

    ``start_hour`` is inclusive, ``end_hour`` exclusive (fractional hours
    allowed, e.g. 7.5 = 07:30); ``end_hour < start_hour`` wraps over midnight
    (23 -> 7), and ``start_hour == end_hour`` means all day.
    """

    name: str
    price_jpy_per_kwh: float
    start_hour: float = 0.0
    end_hour: float = 24.0
    day_types: tuple[str, ...] = DAY_TYPES
    months: tuple[int, ...] = ALL_MONTHS

    def __post_init__(self) -> None:
        bad = set(self.day_types) - set(DAY_TYPES)
        if bad:
            raise ValueError(
                f"TOU period {self.name!r}: unknown day type(s) {sorted(bad)}; use {DAY_TYPES}"
            )
        if not set(self.months) <= set(ALL_MONTHS):
            raise ValueError(f"TOU period {self.name!r}: months must be 1..12, got {self.months}")
        for h in (self.start_hour, self.end_hour):
            if not 0 <= h <= 24:
                raise ValueError(f"TOU period {self.name!r}: hours must be in [0, 24], got {h}")

    def mask(self, hour: np.ndarray, dtype_: np.ndarray, month: np.ndarray) -> np.ndarray:
        if self.start_hour == self.end_hour:
            in_hours = np.ones(hour.shape, dtype=bool)
        elif self.start_hour < self.end_hour:
            in_hours = (hour >= self.start_hour) & (hour < self.end_hour)
        else:
            in_hours = (hour >= self.start_hour) | (hour < self.end_hour)
        return in_hours & np.isin(dtype_, self.day_types) & np.isin(month, self.months)


@dataclass(frozen=True)
class TouTariff:
    """Time-of-use import prices; the first matching period wins.

    Every timestamp must match some period (an error names the first that
    does not).  Export is flat (``export_jpy_per_kwh``).
    """

    periods: tuple[TouPeriod, ...]
    export_jpy_per_kwh: float = 0.0
    demand_charge_jpy_per_kw_month: float = 0.0
    year_end_holidays: bool = False
    tz: str = "Asia/Tokyo"

    def period_names(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        """Name of the period that prices each timestamp."""
        names = np.array([p.name for p in self.periods], dtype=object)
        return names[self.periods_index(times_local)]

    def periods_index(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        idx = _local(times_local, self.tz)
        hour = (idx.hour + idx.minute / 60.0 + idx.second / 3600.0).to_numpy()
        month = idx.month.to_numpy()
        dt_ = day_type(idx, self.year_end_holidays, self.tz)
        which = np.full(len(idx), -1)
        for k, p in enumerate(self.periods):  # loop over a handful of periods, not devices
            m = (which < 0) & p.mask(hour, dt_, month)
            which[m] = k
        if np.any(which < 0):
            first = idx[int(np.argmax(which < 0))]
            raise ValueError(
                f"TOU tariff: no period covers {first} ({dt_[which < 0][0]}); "
                "add a catch-all period"
            )
        return which

    def import_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        prices = np.array([p.price_jpy_per_kwh for p in self.periods], dtype=float)
        return prices[self.periods_index(times_local)]

    def export_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        return np.full(len(times_local), float(self.export_jpy_per_kwh))


@dataclass(frozen=True)
class DynamicTariff:
    """Import/export prices that follow a price series (e.g. JEPX 30-min area price).

    ``import = import_multiplier * price + import_adder_jpy_per_kwh`` and
    ``export = export_multiplier * price + export_adder_jpy_per_kwh``, each
    price held from its timestamp for ``resolution_s`` (step hold).  The
    adder stands for wheeling charges, levies and the retailer's margin.
    """

    price_jpy_per_kwh: pd.Series
    resolution_s: float = 1800.0
    import_multiplier: float = 1.0
    import_adder_jpy_per_kwh: float = 0.0
    export_multiplier: float = 0.0
    export_adder_jpy_per_kwh: float = 0.0
    demand_charge_jpy_per_kw_month: float = 0.0
    _ns: np.ndarray = field(init=False, repr=False, compare=False)
    _vals: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = self.price_jpy_per_kwh
        if not isinstance(s.index, pd.DatetimeIndex) or s.index.tz is None:
            raise ValueError("DynamicTariff.price_jpy_per_kwh needs a tz-aware DatetimeIndex")
        s = s.sort_index()
        if s.index.has_duplicates:
            raise ValueError(
                f"DynamicTariff: duplicate timestamps, e.g. {s.index[s.index.duplicated()][0]}"
            )
        if s.isna().any():
            raise ValueError(f"DynamicTariff: missing price at {s.index[s.isna().to_numpy()][0]}")
        object.__setattr__(self, "_ns", s.index.tz_convert("UTC").as_unit("ns").asi8)
        object.__setattr__(self, "_vals", s.to_numpy(dtype=float))

    def spot_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        """The underlying series, step-held, at each timestamp (error outside its range)."""
        idx = pd.DatetimeIndex(times_local)
        if idx.tz is None:
            raise ValueError("DynamicTariff: timestamps must be tz-aware")
        q = idx.tz_convert("UTC").as_unit("ns").asi8
        pos = np.searchsorted(self._ns, q, side="right") - 1
        res_ns = int(self.resolution_s * 1e9)
        outside = (pos < 0) | (q >= self._ns[-1] + res_ns)
        if np.any(outside):
            bad = idx[np.argmax(outside)]
            raise ValueError(
                f"DynamicTariff: no price for {bad}; series covers "
                f"{self.price_jpy_per_kwh.index.min()} .. "
                f"{self.price_jpy_per_kwh.index.max()} (+{self.resolution_s:g} s)"
            )
        return self._vals[pos]

    def import_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        return (
            self.import_multiplier * self.spot_jpy_per_kwh(times_local)
            + self.import_adder_jpy_per_kwh
        )

    def export_price_jpy_per_kwh(self, times_local: pd.DatetimeIndex) -> np.ndarray:
        return (
            self.export_multiplier * self.spot_jpy_per_kwh(times_local)
            + self.export_adder_jpy_per_kwh
        )


def example_tou_tariff(
    export_jpy_per_kwh: float = ASSUMED_EXPORT_JPY_PER_KWH,
    demand_charge_jpy_per_kw_month: float = 0.0,
) -> TouTariff:
    """Illustrative Japanese-style TOU tariff (ASSUMED prices, JPY/kWh).

    ====================  ==========================  =====
    period                when                        price
    ====================  ==========================  =====
    night                 23:00-07:00 every day        27
    summer_peak           13:00-16:00 weekdays Jul-Sep 45
    day                   07:00-23:00 weekdays         36
    weekend_day           07:00-23:00 weekends/hol.    31
    ====================  ==========================  =====
    """
    return TouTariff(
        periods=(
            TouPeriod("night", 27.0, 23, 7),
            TouPeriod("summer_peak", 45.0, 13, 16, (WEEKDAY,), SUMMER_MONTHS),
            TouPeriod("day", 36.0, 7, 23, (WEEKDAY,)),
            TouPeriod("weekend_day", 31.0, 7, 23, (WEEKEND, HOLIDAY)),
        ),
        export_jpy_per_kwh=export_jpy_per_kwh,
        demand_charge_jpy_per_kw_month=demand_charge_jpy_per_kw_month,
    )


def tariff_from_config(cfg: Mapping[str, Any], prices: pd.Series | None = None) -> Tariff:
    """Build a tariff from a scenario mapping (``type: flat | tou | dynamic``).

    Examples::

        {type: flat, import_jpy_per_kwh: 31, export_jpy_per_kwh: 8.5}
        {type: tou, export_jpy_per_kwh: 8.5, periods: [
            {name: night, price_jpy_per_kwh: 27, start_hour: 23, end_hour: 7}, ...]}
        {type: dynamic, import_adder_jpy_per_kwh: 15}   # with ``prices`` given
    """
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind == "flat":
        return FlatTariff(**cfg)
    if kind == "tou":
        periods = tuple(
            TouPeriod(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
            for p in cfg.pop("periods")
        )
        return TouTariff(periods=periods, **cfg)
    if kind == "dynamic":
        if prices is None:
            raise ValueError("tariff type 'dynamic' needs a price series")
        return DynamicTariff(price_jpy_per_kwh=prices, **cfg)
    raise ValueError(f"tariff type must be 'flat', 'tou' or 'dynamic', got {kind!r}")


# --------------------------------------------------------------------------- demand and bill


def _as_2d(x: npt.ArrayLike, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.shape[0] != n:
        raise ValueError(f"{name}: first axis must match times ({n}), got shape {a.shape}")
    return a


def monthly_peak_import_w(
    times_local: pd.DatetimeIndex,
    import_w: npt.ArrayLike,
    dt_s: float,
    demand_interval_s: float = 1800.0,
    tz: str = "Asia/Tokyo",
) -> pd.DataFrame:
    """Largest ``demand_interval_s`` average import [W] per calendar month (local time).

    ``import_w`` has shape (T,) or (T, N) and holds the mean power of each
    ``dt_s`` step starting at ``times_local``.  Returns one row per month
    (a ``Period`` index) and one column per site.
    """
    idx = _local(times_local, tz)
    imp = _as_2d(import_w, len(idx), "import_w")
    df = pd.DataFrame(imp, index=idx)
    if demand_interval_s > dt_s:
        interval = idx.floor(pd.Timedelta(seconds=demand_interval_s))
        # a mean of step powers; a partly covered interval counts as averaged over its steps
        df = df.groupby(interval).mean()
    months = df.index.tz_localize(None).to_period("M")
    return df.groupby(months).max()


@dataclass(frozen=True)
class Bill:
    """A bill split into parts [JPY], each of shape (N,) (one per site)."""

    import_energy_jpy: np.ndarray
    export_credit_jpy: np.ndarray
    demand_charge_jpy: np.ndarray
    carbon_jpy: np.ndarray
    import_energy_wh: np.ndarray
    export_energy_wh: np.ndarray
    monthly_peak_import_w: pd.DataFrame

    @property
    def total_jpy(self) -> np.ndarray:
        """Import cost - export credit + demand charge + carbon cost."""
        return (
            self.import_energy_jpy
            - self.export_credit_jpy
            + self.demand_charge_jpy
            + self.carbon_jpy
        )


def bill_jpy(
    tariff: Tariff,
    times_local: pd.DatetimeIndex,
    import_w: npt.ArrayLike,
    export_w: npt.ArrayLike,
    dt_s: float,
    co2_g_per_kwh: npt.ArrayLike = 0.0,
    carbon_price_jpy_per_t: npt.ArrayLike | CarbonPriceTimeline = 0.0,
    demand_interval_s: float = 1800.0,
) -> Bill:
    """Bill of one or many sites over ``times_local`` (step starts, each ``dt_s`` long).

    Parameters
    ----------
    tariff : Tariff
        Any tariff (flat, TOU, dynamic).
    times_local : pandas.DatetimeIndex
        Start of each step (T,).
    import_w, export_w : array_like
        Mean grid import / export power per step, (T,) or (T, N), both >= 0.
    dt_s : float
        Step length [s].
    co2_g_per_kwh : array_like
        Emission factor of imported energy, scalar or (T,) or (T, N).
    carbon_price_jpy_per_t : array_like or CarbonPriceTimeline
        Carbon price applied to imported energy's emissions (a timeline is
        evaluated at each timestamp's fiscal year).

    Notes
    -----
    The demand charge is ``demand_charge_jpy_per_kw_month`` times each
    month's peak ``demand_interval_s`` average import, summed over the
    months touched by ``times_local`` (a partial month is charged in full).
    """
    idx = pd.DatetimeIndex(times_local)
    n = len(idx)
    imp = _as_2d(import_w, n, "import_w")
    exp = _as_2d(export_w, n, "export_w")
    if np.any(imp < 0) or np.any(exp < 0):
        raise ValueError("bill_jpy: import_w and export_w must be >= 0 (separate directions)")
    e_imp = imp * dt_s / SECONDS_PER_HOUR  # Wh per step
    e_exp = exp * dt_s / SECONDS_PER_HOUR
    p_imp = tariff.import_price_jpy_per_kwh(idx)[:, None]
    p_exp = tariff.export_price_jpy_per_kwh(idx)[:, None]
    if isinstance(carbon_price_jpy_per_t, CarbonPriceTimeline):
        cp = carbon_price_jpy_per_t.carbon_price_jpy_per_t(idx)[:, None]
    else:
        cp = np.asarray(carbon_price_jpy_per_t, dtype=float)
        cp = cp[:, None] if cp.ndim == 1 else cp
    co2 = np.asarray(co2_g_per_kwh, dtype=float)
    co2 = co2[:, None] if co2.ndim == 1 else co2
    peaks = monthly_peak_import_w(idx, imp, dt_s, demand_interval_s)
    demand = tariff.demand_charge_jpy_per_kw_month * peaks.to_numpy().sum(axis=0) / W_PER_KW
    return Bill(
        import_energy_jpy=(e_imp / WH_PER_KWH * p_imp).sum(axis=0),
        export_credit_jpy=(e_exp / WH_PER_KWH * p_exp).sum(axis=0),
        demand_charge_jpy=demand,
        carbon_jpy=carbon_cost_jpy(e_imp, co2, cp).sum(axis=0),
        import_energy_wh=e_imp.sum(axis=0),
        export_energy_wh=e_exp.sum(axis=0),
        monthly_peak_import_w=peaks,
    )
