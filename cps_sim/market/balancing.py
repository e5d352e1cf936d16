"""Balancing group (計画値同時同量): day-ahead plan vs actual per 30-min slot, imbalance settlement.

Sign convention: a balancing group's position is its net *import* from the
grid (consumption minus generation), in Wh per slot, as everywhere else in
cps_sim.  The imbalance of a slot is ``actual - plan``:

* ``> 0`` **shortage** (不足): the group drew more (or generated less) than
  planned; it buys the difference at the shortage price.
* ``< 0`` **surplus** (余剰): it drew less than planned; it is paid the
  surplus price for the difference.

``cost_jpy = shortage_kwh * shortage_price - surplus_kwh * surplus_price``
(positive = the group pays).  Japan has used a single imbalance price per
slot and area for both directions since FY2022, so the surplus price
defaults to the shortage price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.core.units import SECONDS_PER_HOUR, WH_PER_KWH

SLOT_S = 1800.0  # JEPX / imbalance settlement period


def energy_per_slot_wh(
    times: pd.DatetimeIndex,
    power_w: npt.ArrayLike,
    dt_s: float,
    slot_s: float = SLOT_S,
    tz: str = "Asia/Tokyo",
) -> pd.DataFrame:
    """Energy [Wh] per settlement slot from mean power per step (steps may not exceed a slot).

    ``power_w`` has shape (T,) or (T, N) (N groups or sites); each step
    starts at ``times`` and lasts ``dt_s``.  Steps are assigned to the slot
    containing their start, so ``dt_s`` must divide ``slot_s``.
    """
    if dt_s > slot_s or (slot_s / dt_s) != round(slot_s / dt_s):
        raise ValueError(f"dt_s ({dt_s}) must divide the slot length ({slot_s})")
    idx = pd.DatetimeIndex(times)
    idx = idx.tz_localize(tz) if idx.tz is None else idx.tz_convert(tz)
    p = np.asarray(power_w, dtype=float)
    p = p[:, None] if p.ndim == 1 else p
    if p.shape[0] != len(idx):
        raise ValueError(f"power_w: first axis ({p.shape[0]}) must match times ({len(idx)})")
    slots = idx.floor(pd.Timedelta(seconds=slot_s))
    df = pd.DataFrame(p * dt_s / SECONDS_PER_HOUR, index=idx)
    out = df.groupby(slots).sum()
    out.index.name = "slot_start"
    return out


@dataclass(frozen=True)
class ImbalanceSettlement:
    """Per-slot settlement; arrays of shape (S, N) for S slots and N groups."""

    slot_start: pd.DatetimeIndex
    plan_wh: np.ndarray
    actual_wh: np.ndarray
    shortage_price_jpy_per_kwh: np.ndarray
    surplus_price_jpy_per_kwh: np.ndarray

    @property
    def imbalance_wh(self) -> np.ndarray:
        """``actual - plan``: positive = shortage, negative = surplus."""
        return self.actual_wh - self.plan_wh

    @property
    def shortage_wh(self) -> np.ndarray:
        return np.maximum(self.imbalance_wh, 0.0)

    @property
    def surplus_wh(self) -> np.ndarray:
        return np.maximum(-self.imbalance_wh, 0.0)

    @property
    def cost_jpy(self) -> np.ndarray:
        """Imbalance charge per slot and group (positive = the group pays)."""
        return (
            self.shortage_wh * self.shortage_price_jpy_per_kwh
            - self.surplus_wh * self.surplus_price_jpy_per_kwh
        ) / WH_PER_KWH

    def summary(self) -> pd.DataFrame:
        """Totals per group: energies [Wh], cost [JPY], mean absolute imbalance share."""
        plan_abs = np.abs(self.plan_wh).sum(axis=0)
        return pd.DataFrame(
            {
                "plan_wh": self.plan_wh.sum(axis=0),
                "actual_wh": self.actual_wh.sum(axis=0),
                "shortage_wh": self.shortage_wh.sum(axis=0),
                "surplus_wh": self.surplus_wh.sum(axis=0),
                "abs_imbalance_wh": np.abs(self.imbalance_wh).sum(axis=0),
                "imbalance_ratio": np.divide(
                    np.abs(self.imbalance_wh).sum(axis=0),
                    plan_abs,
                    out=np.zeros_like(plan_abs),
                    where=plan_abs > 0,
                ),
                "cost_jpy": self.cost_jpy.sum(axis=0),
            }
        )


def _aligned(
    x: npt.ArrayLike | pd.Series | pd.DataFrame, slots: pd.DatetimeIndex, n: int, name: str
) -> np.ndarray:
    if isinstance(x, pd.Series | pd.DataFrame):
        idx = pd.DatetimeIndex(x.index)
        if idx.tz is None:
            raise ValueError(f"{name}: index must be tz-aware")
        missing = ~slots.isin(idx)
        if missing.any():
            raise ValueError(f"{name}: no value for slot {slots[np.argmax(missing)]}")
        x = x.reindex(slots).to_numpy(dtype=float)
    a = np.asarray(x, dtype=float)
    a = a[:, None] if a.ndim == 1 else a
    try:
        return np.array(np.broadcast_to(a, (len(slots), n)), dtype=float)
    except ValueError:
        raise ValueError(
            f"{name}: shape {a.shape} does not fit ({len(slots)} slots, {n} groups)"
        ) from None


def settle_imbalance(
    plan_wh: pd.Series | pd.DataFrame,
    actual_wh: pd.Series | pd.DataFrame,
    shortage_price_jpy_per_kwh: npt.ArrayLike | pd.Series,
    surplus_price_jpy_per_kwh: npt.ArrayLike | pd.Series | None = None,
) -> ImbalanceSettlement:
    """Settle a day-ahead plan against actual energy per slot.

    Parameters
    ----------
    plan_wh, actual_wh : Series or DataFrame
        Net import per slot [Wh], indexed by tz-aware slot start (columns =
        groups).  Both must cover the same slots; use
        :func:`energy_per_slot_wh` to build them from power series.
    shortage_price_jpy_per_kwh : array_like or Series
        Imbalance price for shortage per slot (scalar, (S,), (S, N) or a
        Series indexed by slot start, e.g. from an imbalance price file).
    surplus_price_jpy_per_kwh : array_like or Series, optional
        Price paid for surplus; defaults to the shortage price (single price).
    """
    plan = plan_wh.to_frame() if isinstance(plan_wh, pd.Series) else plan_wh
    act = actual_wh.to_frame() if isinstance(actual_wh, pd.Series) else actual_wh
    slots = pd.DatetimeIndex(plan.index)
    if slots.tz is None:
        raise ValueError("plan_wh: index must be tz-aware slot starts")
    if not slots.equals(pd.DatetimeIndex(act.index)):
        extra = pd.DatetimeIndex(act.index).symmetric_difference(slots)
        raise ValueError(f"plan_wh and actual_wh cover different slots, e.g. {extra[:1].tolist()}")
    if plan.shape[1] != act.shape[1]:
        raise ValueError(f"plan has {plan.shape[1]} group(s), actual has {act.shape[1]}")
    n = plan.shape[1]
    short = _aligned(shortage_price_jpy_per_kwh, slots, n, "shortage_price_jpy_per_kwh")
    surplus = (
        short
        if surplus_price_jpy_per_kwh is None
        else _aligned(surplus_price_jpy_per_kwh, slots, n, "surplus_price_jpy_per_kwh")
    )
    return ImbalanceSettlement(
        slot_start=slots,
        plan_wh=plan.to_numpy(dtype=float),
        actual_wh=act.to_numpy(dtype=float),
        shortage_price_jpy_per_kwh=short,
        surplus_price_jpy_per_kwh=surplus,
    )


def day_ahead_plan_wh(
    times: pd.DatetimeIndex, forecast_w: npt.ArrayLike, dt_s: float, slot_s: float = SLOT_S
) -> pd.DataFrame:
    """A day-ahead plan [Wh per slot] from a net-import forecast (the plan is the forecast)."""
    return energy_per_slot_wh(times, forecast_w, dt_s, slot_s)
