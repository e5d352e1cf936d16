"""Process settings of a real-time run: garbage-collector pauses and GIL switching.

CPython's full collection walks every tracked object.  A HIL run holds the world,
the recorder and the message log, so one full collection took 50-130 ms in
``benchmarks/hil_bench.py`` (100 devices; measured with ``gc.callbacks``): a stall
of the whole process that shows as real-time lag and setpoint reaction latency.
:func:`hold_heap` collects once when the run is set up and moves what exists into
the collector's permanent generation (:func:`gc.freeze`), so later collections
only walk objects made during the run; :func:`release_heap` hands them back once
the last holder (a live run, an emulator fleet in the same process) has let go, so
that nothing made before the run stays uncollectable.

:func:`fast_switching` shortens the GIL switch interval for the run (paho's network
thread then waits at most 0.5 ms, not 5 ms, behind a burst being decoded); the
function it returns puts the previous interval back.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable

SWITCH_INTERVAL_S = 0.0005  # GIL switch interval during a live run [s]

_lock = threading.Lock()
_holders = 0


def hold_heap() -> None:
    """Collect, then keep every object alive now out of later collections."""
    global _holders
    gc.collect()
    with _lock:
        _holders += 1
        gc.freeze()


def release_heap() -> None:
    """Undo one :func:`hold_heap`; the last one makes frozen objects collectable again."""
    global _holders
    with _lock:
        _holders = max(_holders - 1, 0)
        if _holders == 0:
            gc.unfreeze()


def fast_switching() -> Callable[[], None]:
    """Shorten the GIL switch interval; returns the call that restores it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_INTERVAL_S))
    return lambda: sys.setswitchinterval(before)
