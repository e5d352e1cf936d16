"""``world/exogenous.LoadBlocks``: the per-tick load rows the engine reads.

A row depends only on its tick (read in any order, by the run or by a forecast's
copy), the noise has mean 1 and the configured CV per site, appending sites leaves
the others' rows unchanged, and the profile's energy is what the scale says."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pytest

from cps_sim.core.clock import Clock
from cps_sim.core.rng import RngStreams
from cps_sim.world.exogenous import LoadBlocks

CLOCK = Clock(dt.datetime(2026, 3, 28, tzinfo=dt.timezone(dt.timedelta(hours=9))))
TICK_S = 900.0
TPB = 96


def blocks(n: int, profile: str, noise_cv: float, days: float = 3.0) -> LoadBlocks:
    rng = np.random.default_rng(4)  # the sites' parameters: the first n of 10,000
    annual = rng.uniform(2000.0, 6000.0, 10_000)[:n] * 1000.0
    shift = rng.integers(-60, 61, 10_000)[:n]
    return LoadBlocks(
        CLOCK, TICK_S, TPB, annual, profile, shift, noise_cv, "JP", RngStreams(11), "s/x",
        int(days * TPB),
    )  # fmt: skip


PROFILES = ["japan_residential", "constant", "office", "factory", "data_centre"]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("noise_cv", [0.0, 0.25])
def test_rows_depend_only_on_the_tick(profile, noise_cv):
    lb = blocks(50, profile, noise_cv)
    n_ticks = 3 * TPB
    forward = np.array([lb.tick(k) for k in range(n_ticks)])
    assert forward.shape == (n_ticks, 50) and np.isfinite(forward).all()
    assert (forward >= 0).all()
    order = np.random.default_rng(1).permutation(n_ticks)
    other = copy.copy(lb)  # as the HEMS load forecast does
    other.block, other.values = -1, None
    for k in order:
        np.testing.assert_array_equal(lb.tick(int(k)), forward[k])
        np.testing.assert_array_equal(other.tick(int(k)), forward[k])
    row = lb.tick(5)
    row += 1.0  # a fresh array each time: writing into it changes nothing
    np.testing.assert_array_equal(lb.tick(5), forward[5])


def test_noise_mean_one_and_cv():
    cv = 0.3
    quiet = np.array([blocks(4000, "constant", 0.0, 1).tick(k) for k in range(TPB)])
    noisy = np.array([blocks(4000, "constant", cv, 1).tick(k) for k in range(TPB)])
    f = noisy / quiet
    assert abs(f.mean() - 1.0) < 0.005
    assert abs(f.std() - cv) < 0.005
    assert f.min() >= 0.0


def test_appending_sites_keeps_the_others():
    small = blocks(30, "japan_residential", 0.2)
    big = blocks(60, "japan_residential", 0.2)
    # the same first 30 sites (same annual energy and shift): the same rows
    for k in (0, 50, 150, 250):
        np.testing.assert_array_equal(big.tick(k)[:30], small.tick(k))


def test_the_kept_mean_shape_is_the_one_computed_for_that_start_zone_and_calendar():
    """japan_residential's yearly mean shape is kept per (clock: start and zone, holidays):
    a kept value scales the sites as a fresh one does; the same instant given in UTC is the
    same local start (the clock works in its zone); a start an hour later, or another
    holiday calendar, is computed anew."""
    from cps_sim.world.exogenous import residential_mean_shape

    def scale(clock: Clock, holidays: str = "JP") -> float:
        lb = LoadBlocks(
            clock, TICK_S, TPB, np.full(3, 4e6), "japan_residential", np.zeros(3, np.int64),
            0.0, holidays, RngStreams(11), "s/x", TPB,
        )  # fmt: skip
        return float(lb.scale_w[0])

    utc = Clock(dt.datetime(2026, 3, 27, 15, tzinfo=dt.UTC))  # CLOCK's instant
    later = Clock(dt.datetime(2026, 3, 28, 1, tzinfo=dt.timezone(dt.timedelta(hours=9))))
    residential_mean_shape.cache_clear()
    fresh = {name: scale(c) for name, c in (("clock", CLOCK), ("later", later))}
    fresh["us"] = scale(CLOCK, "US")
    assert residential_mean_shape.cache_info().currsize == 3
    assert scale(CLOCK) == scale(utc) == fresh["clock"]  # kept, and the same local start
    assert residential_mean_shape.cache_info().currsize == 3
    assert fresh["clock"] != fresh["us"]
    residential_mean_shape.cache_clear()
    assert scale(later) == fresh["later"] and scale(CLOCK, "US") == fresh["us"]
