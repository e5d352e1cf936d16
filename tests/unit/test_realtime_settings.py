"""Process settings of a real-time run (cps_sim/bridge/realtime_gc.py) and the bridge's
inbound poll period (cps_sim/bridge/transport.py: poll_period)."""

from __future__ import annotations

import gc
import math
import sys

import pytest

from cps_sim.bridge.realtime_gc import fast_switching, hold_heap, release_heap
from cps_sim.bridge.transport import poll_period


def test_heap_stays_frozen_until_the_last_holder_releases_it():
    assert gc.get_freeze_count() == 0
    hold_heap()  # a live run
    hold_heap()  # an emulator fleet in the same process
    try:
        assert gc.get_freeze_count() > 0
        release_heap()  # the fleet stops first: the run still holds the heap
        assert gc.get_freeze_count() > 0
    finally:
        release_heap()
    assert gc.get_freeze_count() == 0
    release_heap()  # one release too many changes nothing
    assert gc.get_freeze_count() == 0


def test_fast_switching_is_restored():
    before = sys.getswitchinterval()
    restore = fast_switching()
    try:
        assert sys.getswitchinterval() == min(before, 0.0005)
    finally:
        restore()
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize(
    ("speed", "poll_s"), [(1, 2.0**-8), (60, 0.25), (100, 0.5), (1000, 4.0), (1e-6, 2.0**-10)]
)
def test_poll_period_is_about_4_ms_of_wall_time_in_powers_of_two(speed, poll_s):
    p = poll_period(speed)
    assert p == poll_s
    assert p == 2.0 ** round(math.log2(p))  # exact in binary
