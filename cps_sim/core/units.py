"""Units and the sign convention, stated once.

SI inside the simulator: power in W, energy in Wh (the energy-system habit,
kept because every KPI is read in kWh), time in seconds since scenario start.
kW, kWh and yen appear only at the edges (scenario files, reports).

Sign convention (load convention, used everywhere):
    power *into* a device (load, charging) is positive;
    power *out of* a device (generation, discharge) is negative;
    grid import at a site's connection point is positive.

Time-series columns are named for the direction they carry
(``pv_generation_w``, ``grid_export_w``) and are then non-negative.
"""

from __future__ import annotations

from typing import Any

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
W_PER_KW = 1000.0
WH_PER_KWH = 1000.0
G_PER_T = 1_000_000.0


def kw_to_w(power_kw: float) -> float:
    return power_kw * W_PER_KW


def kwh_to_wh(energy_kwh: float) -> float:
    return energy_kwh * WH_PER_KWH


def wh_to_kwh(energy_wh: float) -> float:
    return energy_wh / WH_PER_KWH


def energy_wh(power_w: Any, dt_s: Any) -> Any:
    """Energy [Wh] of a constant power [W] held for dt_s seconds (works on arrays)."""
    return power_w * (dt_s / SECONDS_PER_HOUR)


def power_w(energy_wh: Any, dt_s: Any) -> Any:
    """Average power [W] of energy [Wh] spread over dt_s seconds (works on arrays)."""
    return energy_wh * (SECONDS_PER_HOUR / dt_s)
