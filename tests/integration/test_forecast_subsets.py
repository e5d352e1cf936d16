"""The planners ask forecasts for a subset of the sites (the cost planner: one row per
EV, so sites may repeat, in any order): the values must be those of the whole-site
forecast at those sites, for the world's own PV forecast and for any plain callable
(``observation.site_forecast``)."""

from __future__ import annotations

import numpy as np
import pytest

from cps_sim.control.observation import site_forecast
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from cps_sim.world.wiring import _pv_forecast


def _world(**site):
    """40 homes over two days at 15 min; ``site``: the group's device blocks."""
    sc = Scenario(
        name="fc",
        seed=3,
        start="2026-05-10T00:00:00+09:00",
        duration_days=2,
        tick_s=900,
        weather={"source": "synthetic"},
        sites=[{"name": "homes", "count": 40, **site}],
    )
    return build_world(sc)


@pytest.fixture(scope="module")
def world():
    return _world(pv={"share": 0.7, "inverter_kw": 3.0}, ev={"share": 0.5})


def test_world_pv_forecast_on_a_subset_equals_its_rows(world):
    g = world.groups[0]
    fc = _pv_forecast(world, g)
    assert getattr(fc, "takes_sites", False)
    times = np.arange(0.0, 2 * 86400.0, 1800.0) + 900.0
    full = fc(times)
    assert full.shape == (g.n, times.size) and full.max() > 0
    rng = np.random.default_rng(0)
    for k in range(40):
        size = int(rng.integers(1, g.n))
        sites = rng.choice(g.n, size=size, replace=k % 2 == 1)  # odd k: repeats
        if k % 4 == 0:
            sites = np.sort(sites)
        sub = site_forecast(fc, times, sites, g.n)
        np.testing.assert_array_equal(sub, full[sites])
    # a plain callable (no takes_sites) is called with the times and its rows picked
    plain = lambda t: fc(t)  # noqa: E731
    np.testing.assert_array_equal(site_forecast(plain, times, sites, g.n), full[sites])
    np.testing.assert_array_equal(site_forecast(plain, times, None, g.n), full)
    np.testing.assert_array_equal(site_forecast(plain, times, sites, -1), full[sites])


@pytest.mark.parametrize(
    "pv",
    [{"share": 0.7}, {"share": 0.7, "model": "simple", "inverter_kw": 3.0}],
    ids=["pvlib", "simple-with-inverter-limit"],
)
def test_the_world_pv_forecast_is_the_engines_pv_of_each_tick(pv):
    """One PV formula (models.solar.site_ac_power_w): the forecast a controller gets for a
    tick is the PV the engine runs in that tick, at every site (inverter limits included)."""
    world = _world(pv=pv)
    g = world.groups[0]
    fc = _pv_forecast(world, g)
    tick = world.tick_s
    ks = np.arange(0, world.n_ticks, 7)
    ahead = fc(ks * tick + 0.5 * tick)
    for j, k in enumerate(ks):
        g.set_inputs(np.zeros(g.n), int(k))
        np.testing.assert_array_equal(g.inputs.pv_w, ahead[:, j])
    assert ahead.max() > 0
    if "inverter_kw" in pv:  # the 3 kW inverters bind
        assert (ahead <= 3000.0).all() and (ahead == 3000.0).any()
