"""Garbage-collector pauses in a real-time run.

CPython's full collection walks every tracked object.  A HIL run holds the world,
the recorder and the message log, so one full collection took 50-130 ms in
``benchmarks/hil_bench.py`` (100 devices; measured with ``gc.callbacks``): a stall
of the whole process that shows as real-time lag and setpoint reaction latency.
:func:`hold_heap` collects once when the run is set up and moves what exists into
the collector's permanent generation (:func:`gc.freeze`), so later collections
only walk objects made during the run; :func:`release_heap` hands them back at the
end, so that nothing made before the run stays uncollectable.
"""

from __future__ import annotations

import gc


def hold_heap() -> None:
    """Collect, then keep every object alive now out of later collections."""
    gc.collect()
    gc.freeze()


def release_heap() -> None:
    """Undo :func:`hold_heap`: frozen objects are collected as usual again."""
    gc.unfreeze()
