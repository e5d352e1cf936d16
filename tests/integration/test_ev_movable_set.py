"""The EV population keeps the set of EVs that can move energy between segments
(``EvPopulation._movable_set``, ``_can``, ``_scan``) instead of scanning every EV
each segment.  It must be exactly the set a fresh scan finds, at every segment:
after setpoints (applied at any instant), departures and arrivals, EVs filling up
or emptying, measured SoC corrections, limits that throttle and V2X."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.core.environment import make_env
from cps_sim.experiment.recorder import Recorder
from cps_sim.scenario.schema import Scenario
from cps_sim.world import group as group_mod
from cps_sim.world.build import build_world

START = "2026-05-11T00:00:00+09:00"


def scenario(strategy: str | None, seed: int, **site) -> Scenario:
    s = {
        "name": "homes",
        "count": 8,
        "pv": {"share": 1.0, "capacity_kw": 5},
        "battery": {"share": 0.5, "taper_soc": 0.8},
        "ev": {"per_site": 1, "v2x_kw": 6, "taper_soc": 0.85, "charger_kw": 6},
        "grid": {"import_limit_kw": 4, "export_limit_kw": 3},
    }
    s.update(site)
    control = {"ev_strategy": strategy} if strategy else {}
    if strategy == "v2g":
        control["v2g_price_jpy_per_kwh"] = 5
    return Scenario(
        name="movable",
        seed=seed,
        start=START,
        duration_days=1,
        tick_s=900,
        sites=[s],
        control=control,
    )


def fresh(evs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = evs.power_w(slice(None))
    can = evs.movable(slice(None), p, evs.energy_wh)
    return can, np.flatnonzero(can), p


def run_checked(sc: Scenario, monkeypatch, controller=None) -> int:
    """Run ``sc``; before every segment compare the kept set with a fresh scan."""
    checked = [0]
    raw = group_mod.SiteGroup._segment_raw

    def checking(self, s, dt_s):
        evs = self.evs
        if evs is not None and evs.n and evs.measured_w is None:
            mov, p, site = evs._movable_set()  # what a segment of every site uses
            can, idx, p_fresh = fresh(evs)
            np.testing.assert_array_equal(mov, idx)
            np.testing.assert_array_equal(p, p_fresh[idx])
            np.testing.assert_array_equal(site, evs.site[idx])
            # what a segment of a few sites uses
            np.testing.assert_array_equal(evs._can, can)
            np.testing.assert_array_equal(evs._scan(), p_fresh)
            if s is not None:  # a few sites: the answer kept from the event search
                ei, local, p_at = evs._movable_at(s)
                all_ei, all_local = evs.indices(s)
                sel = can[all_ei]
                np.testing.assert_array_equal(ei, all_ei[sel])
                np.testing.assert_array_equal(local, all_local[sel])
                np.testing.assert_array_equal(p_at, p_fresh[all_ei[sel]])
            checked[0] += 1
        return raw(self, s, dt_s)

    monkeypatch.setattr(group_mod.SiteGroup, "_segment_raw", checking)
    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    if controller is not None:
        env.process(controller(env, world))
    env.run(until=sc.duration_s + sc.tick_s * 0.5)
    assert np.all(np.abs(rec.residual_wh) < 1e-6)
    return checked[0]


@pytest.mark.parametrize("strategy", [None, "pv", "cost", "v2g"])
def test_the_kept_set_is_a_fresh_scan_under_the_built_in_strategies(strategy, monkeypatch):
    assert run_checked(scenario(strategy, seed=3), monkeypatch) > 100


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), mid=st.floats(0.0, 0.99), scale=st.sampled_from([1.0, 1e-3]))
def test_the_kept_set_is_a_fresh_scan_under_setpoints_at_any_instant(seed, mid, scale):
    """A controller applies random setpoints (charge, discharge, 0, +inf) at an
    instant inside each tick and sometimes corrects an EV's stored energy (as a
    measured SoC does)."""
    sc = scenario(None, seed=seed)
    rng = np.random.default_rng(seed)

    def controller(env, world):
        g = world.groups[0]
        while True:
            yield env.timeout(sc.tick_s * mid + 1e-3)
            n = g.evs.n
            sp = rng.choice([0.0, np.inf, 3000.0 * scale, -4000.0 * scale, 7000.0], n)
            world.apply("homes", ev_setpoint_w=sp)
            if rng.random() < 0.3:
                i = int(rng.integers(n))
                world.advance_to(env.now)
                g.correct_energy("ev", i, float(g.evs.energy_max_wh[i]) * rng.random())
            yield env.timeout(sc.tick_s * (1 - mid) - 1e-3)

    with pytest.MonkeyPatch.context() as mp:
        assert run_checked(sc, mp, controller) > 90
