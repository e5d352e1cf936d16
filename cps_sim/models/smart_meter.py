"""Japanese low-voltage smart meter as read over the B-route (ECHONET Lite).

Pure functions over per-site arrays.  The meter is the ECHONET Lite device class
0x0288, *low-voltage smart electric energy meter* (APPENDIX Detailed Requirements for
ECHONET Device Objects, low-voltage smart electric energy meter class; the EPC ranges
below are as the Appendix gives them and as public B-route readers such as pychonet
decode them):

* ``0xE0`` / ``0xE3`` — measured cumulative energy, normal direction (import from the
  grid) and reverse direction (export), an unsigned register ``0 .. 99,999,999``;
* ``0xD7`` — number of effective digits of those registers (1..8): the register wraps
  to 0 after ``10**digits - 1``;
* ``0xE1`` — unit of the registers (0x00: 1 kWh, 0x01: 0.1 kWh, 0x02: 0.01 kWh,
  0x03: 0.001 kWh, 0x04: 0.0001 kWh, 0x0A: 10 kWh ... 0x0D: 10,000 kWh) and ``0xD3``
  the coefficient (multiplying factor, 1 for a directly connected home meter):
  energy [kWh] = register × coefficient × unit;
* ``0xEA`` / ``0xEB`` — the cumulative value *fixed at the latest 30-minute
  boundary* (date and time, then the 4-byte register), normal and reverse direction;
* ``0xE7`` — measured instantaneous power [W], a signed long (+ import, − export),
  read when the controller polls it.

What a meter of the model records: the registers truncate the integrated energy to
whole units (a register shows completed units only), wrap at the digit count, and
are fixed at every local 30-minute boundary; the instantaneous power is the site's
grid power at the poll instant rounded to whole watts and clipped to the signed-long
range the EPC allows.  The typical home meter's setting (6 digits at 0.1 kWh) is an
assumption of the scenario files, not a fixed value of the class (meters report their
own ``0xD7`` / ``0xE1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cps_sim.core.types import FloatArray, IntArray

# 0xE1: unit code -> kWh per register count (ECHONET Lite Appendix, class 0x0288)
UNIT_CODES_KWH: dict[int, float] = {
    0x00: 1.0,
    0x01: 0.1,
    0x02: 0.01,
    0x03: 0.001,
    0x04: 0.0001,
    0x0A: 10.0,
    0x0B: 100.0,
    0x0C: 1000.0,
    0x0D: 10000.0,
}
# 0xE7: signed long; -2147483648, 2147483647 and 2147483646 mean underflow, overflow and
# no data, so a measured value lies in this range
POWER_MIN_W = -2_147_483_647
POWER_MAX_W = 2_147_483_645
INTERVAL_S = 1800.0  # 0xEA / 0xEB are fixed every 30 minutes (local time)


@dataclass(frozen=True)
class RegisterSpec:
    """The register of a meter: unit (0xE1) × coefficient (0xD3), digits (0xD7)."""

    unit_kwh: float = 0.1
    coefficient: int = 1
    digits: int = 6

    def __post_init__(self) -> None:
        if not any(np.isclose(self.unit_kwh, u) for u in UNIT_CODES_KWH.values()):
            raise ValueError(
                f"unit_kwh must be one of the 0xE1 units "
                f"{sorted(UNIT_CODES_KWH.values())}, got {self.unit_kwh}"
            )
        if not 1 <= self.digits <= 8:
            raise ValueError(f"digits must be 1..8 (0xD7), got {self.digits}")
        if not 1 <= self.coefficient <= 999_999:
            raise ValueError(f"coefficient must be 1..999999 (0xD3), got {self.coefficient}")

    @property
    def resolution_wh(self) -> float:
        """Energy of one register count [Wh]."""
        return self.unit_kwh * self.coefficient * 1000.0

    @property
    def modulus(self) -> int:
        """Register counts after which the register wraps to 0."""
        return 10**self.digits


def register(energy_wh: FloatArray, spec: RegisterSpec) -> IntArray:
    """Register counts showing a cumulative energy [Wh]: whole units, wrapped.

    ``energy_wh`` is what the meter has counted since it read 0 (initial value
    included).  A tiny tolerance keeps an exact multiple of the unit from reading one
    count low after floating-point summation.
    """
    e = np.asarray(energy_wh, dtype=float)
    counts = np.floor(e / spec.resolution_wh + 1e-9).astype(np.int64)
    return np.mod(counts, spec.modulus)


def register_wh(counts: IntArray, spec: RegisterSpec) -> FloatArray:
    """Energy [Wh] a register shows (counts × resolution; the wrap is not undone)."""
    return np.asarray(counts, dtype=float) * spec.resolution_wh


def interval_wh(counts_now: IntArray, counts_before: IntArray, spec: RegisterSpec) -> FloatArray:
    """Energy [Wh] between two readings of a register, across one wrap at most."""
    d = np.mod(np.asarray(counts_now, np.int64) - np.asarray(counts_before, np.int64), spec.modulus)
    return d.astype(float) * spec.resolution_wh


def instantaneous_w(power_w: FloatArray) -> IntArray:
    """The 0xE7 value of a site's grid power [W, + import]: whole watts, in range."""
    p = np.rint(np.asarray(power_w, dtype=float))
    return np.clip(p, POWER_MIN_W, POWER_MAX_W).astype(np.int64)


def is_boundary(local_s_of_day: FloatArray, tol_s: float = 1e-6) -> np.ndarray:
    """Whether local times [s since local midnight] are 30-minute boundaries."""
    r = np.mod(np.asarray(local_s_of_day, dtype=float), INTERVAL_S)
    return (r < tol_s) | (INTERVAL_S - r < tol_s)
