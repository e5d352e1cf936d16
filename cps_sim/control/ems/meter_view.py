"""What a HEMS knows of its home from the smart meter (B-route) instead of the truth.

A HEMS on the B-route sees the meter, not the load and the PV.  It reads the meter's
instantaneous power (ECHONET Lite 0xE7, polled) and the 30-minute registers
(0xEA/0xEB), and the power of its own battery and EVs from those devices; the home's
own net demand (load − PV, what the battery rule balances) is what is left:

* with a poll: ``meter_power_w − meter_devices_w`` at the last poll (stale by up to
  the poll interval, and at a tick boundary still the previous tick's);
* without: the last complete 30-minute interval's mean,
  ``(import − export − devices) / 30 min`` from the registers (their resolution,
  e.g. 0.1 kWh = 200 W over 30 min, and up to an hour old);
* before the first reading: 0 (the battery idles).

The fields come from the meter population
(:mod:`cps_sim.world.populations.smart_meter`) in ``Observation.extra``.
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.core.units import SECONDS_PER_HOUR


def own_net_w(obs: Observation) -> FloatArray:
    """The home's net demand without its battery and EVs [W, + import], as the meter
    lets a HEMS estimate it (see the module docstring)."""
    x = obs.extra
    if "meter_power_w" not in x:
        raise ValueError("observe: meter needs a smart meter on the group (sites[].smart_meter)")
    n = obs.n_sites
    out = np.zeros(n)
    span_s = float(x.get("meter_interval_s", np.nan))
    if np.isfinite(span_s) and span_s > 0:
        e = (
            np.asarray(x["meter_interval_import_wh"])
            - np.asarray(x["meter_interval_export_wh"])
            - np.asarray(x["meter_interval_devices_wh"])
        )
        out = e * (SECONDS_PER_HOUR / span_s)
    polled = np.asarray(x["meter_power_w"], dtype=float)
    have = np.isfinite(polled)
    if have.any():
        est = polled - np.asarray(x["meter_devices_w"], dtype=float)
        out = np.where(have, est, out)
    return np.asarray(out, dtype=float)
