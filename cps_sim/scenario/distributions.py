"""Population parameters declared as distributions instead of one block per device.

A field such as ``capacity_kw`` takes either a number (every device gets it)
or a mapping naming a distribution::

    capacity_kw: 4.5
    capacity_kw: {distribution: uniform, low: 3, high: 6}
    capacity_kw: {distribution: normal, mean: 4.5, std: 1.0, min: 2}
    capacity_kw: {distribution: lognormal, mean: 4300, cv: 0.3}
    capacity_kw: {distribution: choice, values: [40, 60, 80], weights: [0.5, 0.3, 0.2]}

``min``/``max`` of ``normal`` and ``max`` of ``lognormal`` *truncate* the
distribution: values are drawn from the distribution conditioned on the range
(inverse CDF of the truncated distribution), so no probability piles up at a
bound the way clipping would put it there.  ``mean``, ``std`` and ``cv`` are
the parameters of the distribution before truncation.

Every parameter is a finite number no larger than 1e15 in magnitude; the
field a distribution is given for checks its physical range against the
distribution's support (:func:`check_range`).
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


LIMIT = 1e15  # magnitude bound on every distribution parameter (no field needs more)
Finite = Annotated[float, Field(ge=-LIMIT, le=LIMIT)]
NonNegative = Annotated[float, Field(ge=0, le=LIMIT)]


_Z_RARE = 6.1  # standard normal: |z| beyond it once in a billion draws
_LOG_TINY = math.log(1e-300)
_LOG_HUGE = math.log(1e300)


def _g(x: float | None) -> str:
    return "unbounded" if x is None else f"{x:g}"


def _mass(a: float, b: float) -> float:
    """P(a <= Z <= b) of the standard normal, accurate in either tail."""
    from scipy.special import ndtr

    if a > 0:  # upper tail: symmetric form keeps the digits
        return float(ndtr(-a) - ndtr(-b))
    return float(ndtr(b) - ndtr(a))


def _check_window(window: str, a: float, b: float) -> None:
    """Refuse a truncation window [a, b] (in standard deviations from the mean) that lies
    so far in a tail that the distribution almost never reaches it: what is drawn there
    is numerically meaningless (it was NaN for a window 10^300 std away).  A narrow
    window near the mean is fine."""
    far = a if a > 0 else (-b if b < 0 else 0.0)
    if far > _Z_RARE:
        raise ValueError(
            f"the truncation window {window} lies {far:.3g} standard deviations from the "
            f"mean: the distribution reaches it with probability {_mass(a, b):.2g}; move mean "
            "towards the window or widen the spread (std, cv)"
        )


def _log_mass(a: float, b: float) -> float:
    """log P(a <= Z <= b) of the standard normal, worked out in the lower tail (the upper
    one by symmetry) or, for a window around the mean, as ``log1p`` of what lies outside.
    For the windows :func:`_check_window` lets through; one ~1e300 std away has both
    ``log Phi`` at -inf (NaN here), which is why the refusal's message uses :func:`_mass`."""
    from scipy.special import log1p, log_ndtr, ndtr

    if b <= 0:  # log(Phi(b) - Phi(a)) = log Phi(b) + log(1 + exp(log Phi(a) + i pi - log Phi(b)))
        la, lb = log_ndtr(a), log_ndtr(b)
        return float((np.log1p(np.exp(complex(la - lb, math.pi))) + lb).real)
    if a > 0:
        return _log_mass(-b, -a)
    return float(log1p(-ndtr(a) - ndtr(-b)))


def _truncnorm_ppf(u: np.ndarray, a: float, b: float) -> np.ndarray:
    """Inverse CDF of the standard normal truncated to [a, b] (robust in the tails).

    In log space: ``log Phi(x) = log(Phi(a) + u M)`` with the window's mass ``M``
    (``a < 0``), or from the upper end by symmetry (``a >= 0``), inverted with
    ``ndtri_exp``; ``u = 0`` gives ``a``, ``u = 1`` gives ``b``.  The same numbers as
    ``scipy.stats.truncnorm.ppf``, bit for bit (tests/unit/test_truncnorm_ppf.py),
    several times faster for scalar bounds: the mass is worked out once, not per draw.
    """
    from scipy.special import log_ndtr, ndtri_exp

    u = np.asarray(u, dtype=float)
    lm = _log_mass(a, b)
    inner = (u > 0.0) & (u < 1.0)
    ui = u if inner.all() else np.where(inner, u, 0.5)
    if a < 0:
        x = ndtri_exp(np.logaddexp(log_ndtr(a), np.log(ui) + lm))
    else:
        x = -ndtri_exp(np.logaddexp(log_ndtr(-b), np.log1p(-ui) + lm))
    if ui is u:
        return x
    return np.where(inner, x, np.where(u == 0.0, a, np.where(u == 1.0, b, np.nan)))


class Uniform(_Dist):
    distribution: Literal["uniform"] = Field(
        description="uniform: every value in [low, high] equally likely."
    )
    low: Finite = Field(description="Smallest value (in the unit of the field).")
    high: Finite = Field(description="Largest value (in the unit of the field).")

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
    """Normal distribution, truncated to [min, max] when given (resampled, never clipped)."""

    distribution: Literal["normal"] = Field(
        description="normal: Gaussian, truncated to [min, max] "
        "when given (resampled, never clipped)."
    )
    mean: Finite = Field(description="Mean before truncation (in the unit of the field).")
    std: NonNegative = Field(
        description="Standard deviation before truncation (in the unit of the field)."
    )
    min: Finite | None = Field(None, description="Lower truncation bound; none: unbounded below.")
    max: Finite | None = Field(
        None,
        description="Upper truncation bound; none: unbounded above (then "
        "cut at the field's own upper bound when the tail there is "
        "negligible).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Normal:
        if self.min is not None and self.max is not None and not self.min <= self.max:
            raise ValueError(f"min must be <= max, got min={self.min}, max={self.max}")
        if self.std == 0 and not (
            (self.min is None or self.min <= self.mean)
            and (self.max is None or self.mean <= self.max)
        ):
            raise ValueError(f"with std 0 every value is the mean {self.mean}, outside [min, max]")
        if self.std > 0 and (self.min is not None or self.max is not None) and self.min != self.max:
            a, b = self._std_bounds()
            _check_window(f"[{_g(self.min)}, {_g(self.max)}]", a, b)
        return self

    def _std_bounds(self) -> tuple[float, float]:
        a = -math.inf if self.min is None else (self.min - self.mean) / self.std
        b = math.inf if self.max is None else (self.max - self.mean) / self.std
        return a, b

    def support(self) -> tuple[float, float]:
        lo = self.min if self.min is not None else (-math.inf if self.std > 0 else self.mean)
        hi = self.max if self.max is not None else (math.inf if self.std > 0 else self.mean)
        return lo, hi

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if (self.min is None and self.max is None) or self.std == 0:
            return rng.normal(self.mean, self.std, size=n)
        if self.min == self.max:
            return np.full(n, float(self.min))
        a, b = self._std_bounds()
        return self.mean + self.std * _truncnorm_ppf(rng.uniform(size=n), a, b)

    def mean_value(self) -> float:
        """Mean of what :meth:`sample` draws (the truncated mean when bounded)."""
        if (self.min is None and self.max is None) or self.std == 0:
            return self.mean
        if self.min == self.max:
            return float(self.min)
        from scipy.stats import truncnorm

        a, b = self._std_bounds()
        return float(self.mean + self.std * truncnorm.mean(a, b))


class LogNormal(_Dist):
    """Log-normal by its arithmetic mean and coefficient of variation; truncated at ``max``."""

    distribution: Literal["lognormal"] = Field(
        description="lognormal: positive, right-skewed (annual energy, trip distances)."
    )
    mean: float = Field(
        gt=0, le=LIMIT, description="Arithmetic mean before truncation (in the unit of the field)."
    )
    cv: float = Field(
        ge=0, le=100, description="Coefficient of variation (std / mean) before truncation."
    )
    max: float | None = Field(
        None,
        gt=0,
        le=LIMIT,
        description="Upper truncation bound; none: cut at the field's own "
        "upper bound when the tail there is negligible.",
    )

    @model_validator(mode="after")
    def _max(self) -> LogNormal:
        if self.cv == 0 and self.max is not None and self.mean > self.max:
            raise ValueError(f"with cv 0 every value is the mean {self.mean}, above max")
        mu, sigma = self._params()
        # the values it draws but once in a billion must be ordinary floats: not rounded
        # to 0 (a capacity of 0) nor to infinity
        if mu - _Z_RARE * sigma < _LOG_TINY or mu + _Z_RARE * sigma > _LOG_HUGE:
            raise ValueError(
                f"mean {self.mean:g} with cv {self.cv:g} draws values beyond what a number "
                "can hold (they would round to 0 or to infinity); use a larger mean or a "
                "smaller cv"
            )
        if self.max is not None and sigma > 0:
            b = (math.log(self.max) - mu) / sigma
            _check_window(f"(0, {_g(self.max)}]", -math.inf, b)
        return self

    def _params(self) -> tuple[float, float]:
        sigma2 = math.log1p(self.cv**2)
        return math.log(self.mean) - 0.5 * sigma2, math.sqrt(sigma2)

    def support(self) -> tuple[float, float]:
        # strictly positive: the smallest positive float stands for the open bound 0
        return (math.ulp(0.0) if self.cv > 0 else self.mean), (
            self.max if self.max is not None else (math.inf if self.cv > 0 else self.mean)
        )

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mu, sigma = self._params()
        if self.max is None or sigma == 0:
            return rng.lognormal(mu, sigma, size=n)
        b = (math.log(self.max) - mu) / sigma
        return np.exp(mu + sigma * _truncnorm_ppf(rng.uniform(size=n), -math.inf, b))

    def mean_value(self) -> float:
        """Mean of what :meth:`sample` draws (the truncated mean when ``max`` is given)."""
        mu, sigma = self._params()
        if self.max is None or sigma == 0:
            return self.mean
        from scipy.special import ndtr

        b = (math.log(self.max) - mu) / sigma
        return float(self.mean * ndtr(b - sigma) / ndtr(b))


class Choice(_Dist):
    distribution: Literal["choice"] = Field(description="choice: one of a list of values.")
    values: list[Finite] = Field(
        min_length=1,
        max_length=100_000,
        description="The values to choose from (in the unit of the field).",
    )
    weights: list[NonNegative] | None = Field(
        None,
        description="Relative weights of the values (need not sum to 1); none: equally likely.",
    )

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(
                    f"weights has {len(self.weights)} entries, values has {len(self.values)}"
                )
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


def check_range(
    q: Quantity,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> None:
    """Raise ValueError when a quantity can draw a value outside physical bounds."""
    lo, hi = support(q)
    what = "value" if isinstance(q, (int, float)) else "every value it can draw"
    shown_lo = lo if isinstance(q, (int, float)) else f"as low as {lo}"
    shown_hi = hi if isinstance(q, (int, float)) else f"as high as {hi}"
    if gt is not None and not lo > gt:
        raise ValueError(
            f"must be > {gt:g}, got {shown_lo}"
            if what == "value"
            else f"{what} must be > {gt:g}, but it can be {shown_lo}"
        )
    if ge is not None and not lo >= ge:
        raise ValueError(
            f"must be >= {ge:g}, got {shown_lo}"
            if what == "value"
            else f"{what} must be >= {ge:g}, but it can be {shown_lo}"
        )
    if le is not None and not hi <= le:
        raise ValueError(
            f"must be <= {le:g}, got {shown_hi}"
            if what == "value"
            else f"{what} must be <= {le:g}, but it can be {shown_hi}"
        )
    if lt is not None and not hi < lt:
        raise ValueError(
            f"must be < {lt:g}, got {shown_hi}"
            if what == "value"
            else f"{what} must be < {lt:g}, but it can be {shown_hi}"
        )


TAIL_PROBABILITY = 1e-6  # an unbounded tail beyond a field's bound may hold at most this


def _upper_tail(q: Normal | LogNormal, x: float) -> float:
    """P(draw > x) of the untruncated distribution."""
    from scipy.special import ndtr

    if isinstance(q, Normal):
        return float(ndtr(-(x - q.mean) / q.std))
    mu, sigma = q._params()
    return float(ndtr(-(math.log(x) - mu) / sigma))


def bounded(
    q: Quantity,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Quantity:
    """:func:`check_range`, and the quantity to use.

    A normal or log-normal with an unbounded upper tail is truncated at the
    field's upper bound when the tail beyond it holds less than
    :data:`TAIL_PROBABILITY` (``annual_kwh: {distribution: lognormal, mean:
    4300, cv: 0.3}`` gets ``max: 1e9``); a heavier tail is an error that asks
    for an explicit ``max``.
    """
    top = le if le is not None else lt
    if top is not None and isinstance(q, (Normal, LogNormal)) and math.isinf(support(q)[1]):
        cap = top if le is not None else math.nextafter(top, -math.inf)
        tail = _upper_tail(q, cap)
        if tail >= TAIL_PROBABILITY:
            raise ValueError(
                f"every value it can draw must be <= {top:g}, but it draws above "
                f"that with probability {tail:.2g}; give 'max'"
            )
        q = q.model_copy(update={"max": cap})
    check_range(q, gt=gt, ge=ge, le=le, lt=lt)
    return q
