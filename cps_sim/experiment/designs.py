"""Experimental designs: which parameter values a sweep runs.

Pure functions from parameter definitions to a list of points (one dict of
``name -> value`` per point), in a stable order, so that the same sweep file
always expands to the same runs.

* :func:`grid_points` — full factorial, the last parameter varying fastest;
* :func:`random_points` — independent uniform draws (log-uniform when asked);
* :func:`lhs_points` — Latin hypercube (``scipy.stats.qmc.LatinHypercube``):
  each parameter's range is cut into ``n`` equal strata (in log space for
  ``log`` parameters) and each stratum holds exactly one point.

A parameter is either *categorical* (``values``) or *continuous*
(``low``/``high``, optionally ``log`` and ``integer``).  Random and LHS designs
map a uniform ``u`` in [0, 1) to a category by ``values[floor(u * k)]``, so an
LHS with ``n`` a multiple of ``k`` uses every category equally often.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Param:
    """One swept parameter (already validated by the sweep-file schema)."""

    name: str
    values: tuple[Any, ...] | None = None  # categorical
    low: float | None = None  # continuous range [low, high]
    high: float | None = None
    num: int | None = None  # grid: evenly spaced points in [low, high]
    log: bool = False
    integer: bool = False

    def grid_values(self) -> list[Any]:
        """The values a grid design takes for this parameter."""
        if self.values is not None:
            return list(self.values)
        assert self.low is not None and self.high is not None and self.num is not None
        if self.log:
            raw = np.geomspace(self.low, self.high, self.num)
        else:
            raw = np.linspace(self.low, self.high, self.num)
        return [self._finish(float(v)) for v in raw]

    def from_unit(self, u: float) -> Any:
        """Map ``u`` in [0, 1) to a value of this parameter."""
        if self.values is not None:
            k = len(self.values)
            return self.values[min(math.floor(u * k), k - 1)]
        assert self.low is not None and self.high is not None
        if self.integer:
            lo, hi = math.ceil(self.low), math.floor(self.high)
            return int(min(lo + math.floor(u * (hi - lo + 1)), hi))
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return self._finish(v)

    def _finish(self, v: float) -> float | int:
        return round(v) if self.integer else float(v)


def grid_points(params: Sequence[Param]) -> list[dict[str, Any]]:
    """Full-factorial design; the first parameter varies slowest."""
    if not params:
        return [{}]
    axes = [p.grid_values() for p in params]
    return [
        dict(zip([p.name for p in params], combo, strict=True))
        for combo in itertools.product(*axes)
    ]


def _from_unit_matrix(params: Sequence[Param], u: np.ndarray) -> list[dict[str, Any]]:
    return [{p.name: p.from_unit(float(row[j])) for j, p in enumerate(params)} for row in u]


def random_points(params: Sequence[Param], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` independent uniform draws (reproducible from ``seed``)."""
    rng = np.random.default_rng(seed)
    return _from_unit_matrix(params, rng.random((n, len(params))))


def lhs_points(params: Sequence[Param], n: int, seed: int) -> list[dict[str, Any]]:
    """``n``-point Latin hypercube (reproducible from ``seed``)."""
    if not params:
        return [{} for _ in range(n)]
    from scipy.stats import qmc  # 0.5 s of imports: only sweeps with an LHS design

    sampler = qmc.LatinHypercube(d=len(params), rng=np.random.default_rng(seed))
    return _from_unit_matrix(params, sampler.random(n))


def design_points(
    method: str, params: Sequence[Param], samples: int | None, seed: int
) -> list[dict[str, Any]]:
    """Dispatch on the design ``method`` (``grid``, ``random`` or ``lhs``)."""
    if method == "grid":
        return grid_points(params)
    if samples is None:
        raise ValueError(f"design {method!r} needs 'samples'")
    if method == "random":
        return random_points(params, samples, seed)
    if method == "lhs":
        return lhs_points(params, samples, seed)
    raise ValueError(f"unknown design method {method!r}")


def replicate_seeds(base_seed: int, replications: int) -> list[int]:
    """Seeds of the replications of one design point.

    Replicate 0 keeps the scenario's own seed (a one-replication sweep runs
    exactly the scenario as written); replicate ``r >= 1`` draws a seed from
    ``SeedSequence(base_seed).spawn``, independent of worker count and order.
    """
    seeds = [int(base_seed)]
    if replications > 1:
        children = np.random.SeedSequence(int(base_seed)).spawn(replications - 1)
        seeds += [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children]
    return seeds
