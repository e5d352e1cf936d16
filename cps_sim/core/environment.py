"""Environment factory: as-fast-as-possible or real-time (scaled) SimPy environments."""

from __future__ import annotations

from typing import Literal

import simpy
import simpy.rt

Mode = Literal["fast", "realtime"]


def make_env(
    mode: Mode = "fast", speed: float = 1.0, strict: bool = False, initial_time: float = 0.0
) -> simpy.Environment:
    """Create the event environment of one run.

    Parameters
    ----------
    mode
        ``fast`` runs as fast as possible (research, sweeps); ``realtime``
        paces simulated time against the wall clock (HIL, demos).
    speed
        Simulated seconds per wall second in ``realtime`` mode: 1 for
        hardware in the loop, 60 or 3600 for demos.
    strict
        In ``realtime`` mode, raise ``RuntimeError`` when the simulation falls
        behind the wall clock instead of silently catching up.
    """
    if mode == "fast":
        return simpy.Environment(initial_time=initial_time)
    if mode == "realtime":
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        return simpy.rt.RealtimeEnvironment(
            initial_time=initial_time, factor=1.0 / speed, strict=strict
        )
    raise ValueError(f"unknown environment mode {mode!r} (expected 'fast' or 'realtime')")
