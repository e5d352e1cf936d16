"""Calendar helpers: days off (weekends + public holidays) in local time."""

from __future__ import annotations

import datetime as _dt
from functools import lru_cache

import numpy as np
import pandas as pd


@lru_cache(maxsize=32)
def holiday_dates(country: str, first_year: int, last_year: int) -> frozenset[_dt.date]:
    """Public holidays of ``country`` (``holidays`` package code, e.g. ``"JP"``) in the
    years ``first_year..last_year``, computed once per process for each span."""
    import holidays

    return frozenset(holidays.country_holidays(country, years=range(first_year, last_year + 1)))


def is_day_off(local_times: pd.DatetimeIndex, country: str | None) -> np.ndarray:
    """True on Saturdays, Sundays and (when ``country`` is given) public holidays."""
    off = local_times.day_of_week.to_numpy() >= 5
    if country and len(local_times):
        dates = holiday_dates(country, int(local_times.year.min()), int(local_times.year.max()))
        if dates:
            d = local_times.normalize().tz_localize(None).date
            off |= np.fromiter((x in dates for x in d), dtype=bool, count=len(d))
    return off
