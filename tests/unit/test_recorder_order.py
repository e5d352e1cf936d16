"""The events table's order: by time, then EV, then kind (``Recorder.events``)."""

from __future__ import annotations

import numpy as np
import pytest

from cps_sim.experiment.event_stream import _event_order


@pytest.mark.parametrize("seed", range(12))
def test_event_order_equals_lexsort(seed):
    """The fast order (a stable sort by time, ties fixed up) is exactly the lexsort, on
    logs almost in time order with many ties in time, EV and kind (full ties included)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    t = np.sort(rng.integers(0, max(n // 3, 1), n).astype(float) * 900.0)
    swap = rng.integers(0, max(n - 1, 1), n // 10)  # not quite in time order
    if n > 1:
        t[swap], t[swap + 1] = t[swap + 1], t[swap].copy()
    ev = rng.integers(0, 40, n)
    kind = rng.integers(0, 2, n).astype(np.int8)
    np.testing.assert_array_equal(_event_order(t, ev, kind), np.lexsort((kind, ev, t)))
