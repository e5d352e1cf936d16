"""Foundation household load: a daily shape scaled to annual energy, with per-home variation.

Power of home *i* at local time *t*::

    P_i(t) = E_i / 8760 h · s(h(t) + δ_i, daytype, month) / s̄ · (1 + cv · z_i,t)

* ``E_i`` annual energy of the home (drawn from the scenario's distribution),
* ``s`` the daily shape (below), ``s̄`` its mean over the year, so that the
  expected annual energy is exactly ``E_i``,
* ``δ_i`` a per-home time shift (uniform in ±shift_max), ``z`` noise per home
  and tick with mean 0 and standard deviation 1, uniform on [−√3, √3]
  (bounded; clipped so that power stays ≥ 0 only when cv > 1/√3).

The Japanese residential shape is an **assumption** (no hourly profile is
given by the seed document): morning peak around 07:00, low daytime on
weekdays, evening peak 19:00–20:00; later mornings and a higher daytime on
weekends and holidays; monthly factors with a winter maximum (heating,
Jan–Feb) and a summer secondary peak (cooling, Aug).  Research-grade
profiles (BDEW H25 via demandlib, offices, factories, data centres) are in
``models/loads.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# Relative hourly shapes (value at hh:30), assumption; see module docstring.
WEEKDAY_HOURLY = np.array([
    0.55, 0.45, 0.40, 0.38, 0.38, 0.45, 0.75, 1.05, 1.00, 0.85, 0.80, 0.80,
    0.85, 0.80, 0.78, 0.80, 0.90, 1.15, 1.45, 1.60, 1.55, 1.40, 1.10, 0.80])
WEEKEND_HOURLY = np.array([
    0.60, 0.50, 0.43, 0.40, 0.40, 0.42, 0.55, 0.80, 1.00, 1.10, 1.10, 1.10,
    1.15, 1.05, 1.00, 1.00, 1.05, 1.20, 1.45, 1.55, 1.50, 1.35, 1.10, 0.80])
MONTHLY_FACTOR = np.array([1.30, 1.25, 1.10, 0.92, 0.82, 0.82, 0.95, 1.08, 0.92, 0.82, 0.90,
                           1.15])

MINUTES_PER_DAY = 1440


def _minute_table(hourly: NDArray[np.float64]) -> NDArray[np.float64]:
    """Shape at each minute of the day, linear between hh:30 points (cyclic)."""
    x = np.arange(-0.5, 24.5 + 1e-9, 1.0) * 60.0  # hh:30 points incl. wrap-around
    y = np.concatenate([[hourly[-1]], hourly, [hourly[0]]])
    minutes = np.arange(MINUTES_PER_DAY) + 0.5
    return np.interp(minutes, x[: len(y)], y)


WEEKDAY_MINUTES = _minute_table(WEEKDAY_HOURLY)
WEEKEND_MINUTES = _minute_table(WEEKEND_HOURLY)


def shape(minute_of_day: NDArray[np.int64], weekend: NDArray[np.bool_],
          month: NDArray[np.int64]) -> NDArray[np.float64]:
    """Relative shape (mean ≈ 1) at integer local minutes of day; broadcasts."""
    m = np.mod(minute_of_day, MINUTES_PER_DAY)
    daily = np.where(weekend, WEEKEND_MINUTES[m], WEEKDAY_MINUTES[m])
    return daily * MONTHLY_FACTOR[np.asarray(month) - 1]
