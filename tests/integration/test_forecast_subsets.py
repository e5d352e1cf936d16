"""The planners ask forecasts for a subset of the sites: the values must be those of
the whole-site forecast at those sites, for the world's own PV forecast and for any
plain callable (``observation.site_forecast``), and the distinct-site helper of the
cost planner must agree with ``np.unique``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.control.observation import site_forecast
from cps_sim.control.strategies.cost import _sites_of
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from cps_sim.world.wiring import _pv_forecast


@pytest.fixture(scope="module")
def world():
    sc = Scenario(
        name="fc",
        seed=3,
        start="2026-05-10T00:00:00+09:00",
        duration_days=2,
        tick_s=900,
        weather={"source": "synthetic"},
        sites=[
            {
                "name": "homes",
                "count": 40,
                "pv": {"share": 0.7, "inverter_kw": 3.0},
                "ev": {"share": 0.5},
            }
        ],
    )
    return build_world(sc)


def test_world_pv_forecast_on_a_subset_equals_its_rows(world):
    g = world.groups[0]
    fc = _pv_forecast(world, g)
    assert getattr(fc, "takes_sites", False)
    times = np.arange(0.0, 2 * 86400.0, 1800.0) + 900.0
    full = fc(times)
    assert full.shape == (g.n, times.size) and full.max() > 0
    rng = np.random.default_rng(0)
    for _ in range(20):
        sites = np.sort(rng.choice(g.n, size=int(rng.integers(1, g.n)), replace=False))
        sub = site_forecast(fc, times, sites, g.n)
        np.testing.assert_array_equal(sub, full[sites])
    # a plain callable (no takes_sites) is called with the times and its rows picked
    plain = lambda t: fc(t)  # noqa: E731
    np.testing.assert_array_equal(site_forecast(plain, times, sites, g.n), full[sites])
    np.testing.assert_array_equal(site_forecast(plain, times, None, g.n), full)
    np.testing.assert_array_equal(site_forecast(plain, times, sites, -1), full[sites])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=40), st.booleans())
def test_sites_of_is_unique_with_inverse(sites, sort):
    s = np.array(sorted(sites) if sort else sites, dtype=np.int64)
    got_sites, got_row = _sites_of(s)
    exp_sites, exp_row = np.unique(s, return_inverse=True)
    np.testing.assert_array_equal(got_sites, exp_sites)
    np.testing.assert_array_equal(got_row, exp_row)
