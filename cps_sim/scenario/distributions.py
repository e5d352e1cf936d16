"""Population parameters declared as distributions instead of one block per device.

A field such as ``capacity_kw`` takes either a number (every device gets it)
or a mapping naming a distribution::

    capacity_kw: 4.5
    capacity_kw: {distribution: uniform, low: 3, high: 6}
    capacity_kw: {distribution: normal, mean: 4.5, std: 1.0, min: 2}
    capacity_kw: {distribution: lognormal, mean: 4300, cv: 0.3}
    capacity_kw: {distribution: choice, values: [40, 60, 80], weights: [0.5, 0.3, 0.2]}
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Dist(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def support(self) -> tuple[float, float]:  # smallest and largest value it can draw
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def mean_value(self) -> float:
        raise NotImplementedError


class Uniform(_Dist):
    distribution: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if not self.low <= self.high:
            raise ValueError(f"low must be <= high, got low={self.low}, high={self.high}")
        return self

    def support(self) -> tuple[float, float]:
        return self.low, self.high

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=n)

    def mean_value(self) -> float:
        return 0.5 * (self.low + self.high)


class Normal(_Dist):
    """Normal distribution, clipped to [min, max] when given."""

    distribution: Literal["normal"]
    mean: float
    std: float = Field(ge=0)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Normal:
        if self.min is not None and self.max is not None and not self.min <= self.max:
            raise ValueError(f"min must be <= max, got min={self.min}, max={self.max}")
        return self

    def support(self) -> tuple[float, float]:
        lo = self.min if self.min is not None else (-math.inf if self.std > 0 else self.mean)
        hi = self.max if self.max is not None else (math.inf if self.std > 0 else self.mean)
        return lo, hi

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.normal(self.mean, self.std, size=n)
        if self.min is not None or self.max is not None:
            np.clip(x, self.min, self.max, out=x)
        return x

    def mean_value(self) -> float:
        return self.mean


class LogNormal(_Dist):
    """Log-normal parameterised by its arithmetic mean and coefficient of variation."""

    distribution: Literal["lognormal"]
    mean: float = Field(gt=0)
    cv: float = Field(ge=0)
    max: float | None = None

    def _params(self) -> tuple[float, float]:
        sigma2 = math.log1p(self.cv**2)
        return math.log(self.mean) - 0.5 * sigma2, math.sqrt(sigma2)

    def support(self) -> tuple[float, float]:
        # strictly positive: the smallest positive float stands for the open bound 0
        return (math.ulp(0.0) if self.cv > 0 else self.mean), (self.max if self.max is not None else
                                                      (math.inf if self.cv > 0 else self.mean))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mu, sigma = self._params()
        x = rng.lognormal(mu, sigma, size=n)
        if self.max is not None:
            np.minimum(x, self.max, out=x)
        return x

    def mean_value(self) -> float:
        return self.mean


class Choice(_Dist):
    distribution: Literal["choice"]
    values: list[float] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"weights has {len(self.weights)} entries, values has "
                                 f"{len(self.values)}")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 and sum to > 0")
        return self

    def support(self) -> tuple[float, float]:
        return min(self.values), max(self.values)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        p = None
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=float)
            p = w / w.sum()
        return rng.choice(np.asarray(self.values, dtype=float), size=n, p=p)

    def mean_value(self) -> float:
        if self.weights is None:
            return float(np.mean(self.values))
        w = np.asarray(self.weights, dtype=float)
        return float(np.dot(w / w.sum(), self.values))


Distribution = Annotated[Uniform | Normal | LogNormal | Choice, Field(discriminator="distribution")]
Quantity = float | Distribution


def sample(q: Quantity, rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` values of a quantity (constant or distribution) as float64."""
    if isinstance(q, (int, float)):
        return np.full(n, float(q))
    return q.sample(rng, n).astype(float, copy=False)


def support(q: Quantity) -> tuple[float, float]:
    if isinstance(q, (int, float)):
        return float(q), float(q)
    return q.support()


def mean_value(q: Quantity) -> float:
    return float(q) if isinstance(q, (int, float)) else q.mean_value()


def check_range(q: Quantity, *, gt: float | None = None, ge: float | None = None,
                le: float | None = None, lt: float | None = None) -> None:
    """Raise ValueError when a quantity can draw a value outside physical bounds."""
    lo, hi = support(q)
    what = "value" if isinstance(q, (int, float)) else "every value it can draw"
    shown_lo = lo if isinstance(q, (int, float)) else f"as low as {lo}"
    shown_hi = hi if isinstance(q, (int, float)) else f"as high as {hi}"
    if gt is not None and not lo > gt:
        raise ValueError(f"must be > {gt:g}, got {shown_lo}" if what == "value"
                         else f"{what} must be > {gt:g}, but it can be {shown_lo}")
    if ge is not None and not lo >= ge:
        raise ValueError(f"must be >= {ge:g}, got {shown_lo}" if what == "value"
                         else f"{what} must be >= {ge:g}, but it can be {shown_lo}")
    if le is not None and not hi <= le:
        raise ValueError(f"must be <= {le:g}, got {shown_hi}" if what == "value"
                         else f"{what} must be <= {le:g}, but it can be {shown_hi}")
    if lt is not None and not hi < lt:
        raise ValueError(f"must be < {lt:g}, got {shown_hi}" if what == "value"
                         else f"{what} must be < {lt:g}, but it can be {shown_hi}")
