"""Imported only by the sweep's fork server (its preload list): die with the sweep.

See :mod:`cps_sim.experiment.lifeline`.  The fork server's parent is the
sweep process that started it (``CPS_SIM_SWEEP_PID`` in its environment).
"""

from __future__ import annotations

import os

from cps_sim.experiment.lifeline import bind_to_parent

_sweep = os.environ.get("CPS_SIM_SWEEP_PID")
bind_to_parent(int(_sweep) if _sweep and _sweep.isdigit() else None)
