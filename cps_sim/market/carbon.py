"""Carbon price timeline for Japan by fiscal year (April-March), and carbon cost.

Policy milestones (from the seed document, GX Future Seminar #10/#11)::

    FY2023  GX-ETS trial in the GX League (voluntary; no price here)
    FY2026  GX-ETS full operation              -> ``ets`` component starts
    FY2028  fossil-fuel levy on importers       -> ``levy`` component starts
    FY2033  paid auction for power generators   -> ``auction`` component starts
    policy  "start low, raise gradually"

The **yen levels are not in the seed**.  Every default level below is an
ASSUMPTION, named ``ASSUMED_*`` and chosen only to follow "start low, raise
gradually"; set your own in the scenario.  The effective price at a fiscal
year is the sum of the active components, each
``start_jpy_per_t + increase_jpy_per_t_per_fy * (fy - start_fy)``, capped
at ``cap_jpy_per_t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.core.units import G_PER_T, WH_PER_KWH

# Milestone fiscal years (seed, section 2d).
GX_ETS_FULL_OPERATION_FY = 2026
FOSSIL_FUEL_LEVY_FY = 2028
GENERATOR_PAID_AUCTION_FY = 2033

# ASSUMPTIONS (not in the seed): illustrative JPY per tonne CO2.
ASSUMED_ETS_START_JPY_PER_T = 1_000.0
ASSUMED_ETS_INCREASE_JPY_PER_T_PER_FY = 250.0
ASSUMED_LEVY_START_JPY_PER_T = 300.0
ASSUMED_LEVY_INCREASE_JPY_PER_T_PER_FY = 100.0
ASSUMED_AUCTION_START_JPY_PER_T = 500.0
ASSUMED_AUCTION_INCREASE_JPY_PER_T_PER_FY = 250.0
ASSUMED_CAP_JPY_PER_T = 10_000.0


@dataclass(frozen=True)
class CarbonComponent:
    """One priced instrument: active from ``start_fy``, rising linearly per fiscal year."""

    name: str
    start_fy: int
    start_jpy_per_t: float
    increase_jpy_per_t_per_fy: float = 0.0
    assumption: bool = True
    """True when the level is an assumption (not a published number)."""

    def price_jpy_per_t(self, fy: npt.ArrayLike) -> np.ndarray:
        fy = np.asarray(fy)
        years = fy - self.start_fy
        return np.where(
            years >= 0,
            self.start_jpy_per_t + self.increase_jpy_per_t_per_fy * np.maximum(years, 0),
            0.0,
        )


@dataclass(frozen=True)
class CarbonPriceTimeline:
    """Sum of carbon-price components by Japanese fiscal year.

    Parameters
    ----------
    components : tuple of CarbonComponent
        Instruments; see :func:`default_timeline`.
    cap_jpy_per_t : float
        Upper limit of the summed price (``inf`` for none).
    """

    components: tuple[CarbonComponent, ...]
    cap_jpy_per_t: float = np.inf

    def price_for_fy_jpy_per_t(
        self, fy: npt.ArrayLike, include: tuple[str, ...] | None = None
    ) -> np.ndarray:
        """Carbon price [JPY/t-CO2] of each fiscal year (only ``include``d components if given)."""
        fy = np.asarray(fy)
        total = np.zeros(fy.shape, dtype=float)
        names = {c.name for c in self.components}
        if include is not None and not set(include) <= names:
            raise ValueError(
                f"unknown carbon component(s) {sorted(set(include) - names)}; "
                f"known: {sorted(names)}"
            )
        for comp in self.components:
            if include is None or comp.name in include:
                total = total + comp.price_jpy_per_t(fy)
        return np.minimum(total, self.cap_jpy_per_t)

    def carbon_price_jpy_per_t(
        self, times_local: pd.DatetimeIndex, include: tuple[str, ...] | None = None
    ) -> np.ndarray:
        """Carbon price [JPY/t-CO2] at each timestamp (by its Japanese fiscal year)."""
        return self.price_for_fy_jpy_per_t(fiscal_year(times_local), include)


def default_timeline(
    ets_start_jpy_per_t: float = ASSUMED_ETS_START_JPY_PER_T,
    ets_increase_jpy_per_t_per_fy: float = ASSUMED_ETS_INCREASE_JPY_PER_T_PER_FY,
    levy_start_jpy_per_t: float = ASSUMED_LEVY_START_JPY_PER_T,
    levy_increase_jpy_per_t_per_fy: float = ASSUMED_LEVY_INCREASE_JPY_PER_T_PER_FY,
    auction_start_jpy_per_t: float = ASSUMED_AUCTION_START_JPY_PER_T,
    auction_increase_jpy_per_t_per_fy: float = ASSUMED_AUCTION_INCREASE_JPY_PER_T_PER_FY,
    cap_jpy_per_t: float = ASSUMED_CAP_JPY_PER_T,
) -> CarbonPriceTimeline:
    """GX timeline with the seed's milestone years and ASSUMED yen levels (override them)."""
    return CarbonPriceTimeline(
        components=(
            CarbonComponent(
                "ets", GX_ETS_FULL_OPERATION_FY, ets_start_jpy_per_t, ets_increase_jpy_per_t_per_fy
            ),
            CarbonComponent(
                "levy", FOSSIL_FUEL_LEVY_FY, levy_start_jpy_per_t, levy_increase_jpy_per_t_per_fy
            ),
            CarbonComponent(
                "auction",
                GENERATOR_PAID_AUCTION_FY,
                auction_start_jpy_per_t,
                auction_increase_jpy_per_t_per_fy,
            ),
        ),
        cap_jpy_per_t=cap_jpy_per_t,
    )


def fiscal_year(times_local: pd.DatetimeIndex) -> np.ndarray:
    """Japanese fiscal year (April to March) of each timestamp: 2027-03-31 -> FY2026.

    Naive timestamps are read as local; aware ones are converted to Asia/Tokyo first.
    """
    idx = pd.DatetimeIndex(times_local)
    if idx.tz is not None:
        idx = idx.tz_convert("Asia/Tokyo")
    year = idx.year.to_numpy()
    return np.where(idx.month.to_numpy() >= 4, year, year - 1)


def carbon_cost_jpy(
    energy_wh: npt.ArrayLike, co2_g_per_kwh: npt.ArrayLike, carbon_price_jpy_per_t: npt.ArrayLike
) -> np.ndarray:
    """Carbon cost [JPY] of energy [Wh] at an emission factor [g/kWh] and price [JPY/t].

    ``cost = energy_wh / 1000 * co2_g_per_kwh / 1e6 * carbon_price_jpy_per_t``
    (e.g. 1 MWh at 450 g/kWh = 0.45 t; at 2,000 JPY/t that is 900 JPY).
    """
    return (
        np.asarray(energy_wh, dtype=float)
        / WH_PER_KWH
        * np.asarray(co2_g_per_kwh)
        / G_PER_T
        * np.asarray(carbon_price_jpy_per_t)
    )
