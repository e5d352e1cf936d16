"""The truncated normal's inverse CDF that the scenario distributions draw with
(``scenario.distributions._truncnorm_ppf``) gives scipy's numbers bit for bit.

scipy.stats.truncnorm.ppf is the reference: it works in log space and is robust far
in the tails; the engine's own version works the window's mass out once per call
instead of once per draw.  Windows: around the mean, in either tail, half-open,
unbounded, narrow, far out (up to the 6.1 sigma the schema allows), and the ends of
[0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cps_sim.scenario.distributions import _log_mass, _truncnorm_ppf

WINDOWS = [
    (-2.0, 2.0),
    (-0.2, 0.1),
    (-3.3, 7.7),
    (0.0, 1.0),
    (-1.0, 0.0),
    (1e-9, 1.0),
    (0.5, 3.0),
    (2.0, 2.5),
    (6.0, 6.1),
    (-4.0, -1.0),
    (-6.1, -6.0),
    (-math.inf, 1.5),
    (-math.inf, -1.0),
    (-math.inf, -6.1),
    (-1.3, math.inf),
    (0.0, math.inf),
    (0.5, math.inf),
    (6.1, math.inf),
    (-math.inf, math.inf),
]


@pytest.mark.parametrize(("a", "b"), WINDOWS)
def test_bit_for_bit_scipy(a, b):
    rng = np.random.default_rng(7)
    u = np.concatenate(
        [rng.uniform(size=50_000), [0.0, 1.0, 5e-324, 1e-300, 1e-17, 0.5, 1 - 2**-53]]
    )
    ref = stats.truncnorm.ppf(u, a, b)
    got = _truncnorm_ppf(u, a, b)
    assert got.shape == u.shape
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize(("a", "b"), WINDOWS)
def test_the_window_mass_is_the_normal_cdf_difference(a, b):
    ref = stats.norm.cdf(b) - stats.norm.cdf(a) if a <= 0 else stats.norm.sf(a) - stats.norm.sf(b)
    assert math.exp(_log_mass(a, b)) == pytest.approx(ref, rel=1e-12, abs=0)


def test_without_interior_draws_and_nan():
    u = np.array([0.0, 1.0, np.nan, 0.25])
    got = _truncnorm_ppf(u, -1.0, 2.0)
    np.testing.assert_array_equal(got, stats.truncnorm.ppf(u, -1.0, 2.0))
    assert _truncnorm_ppf(np.empty(0), -1.0, 1.0).shape == (0,)
