"""Foundation PV model: AC power from global horizontal irradiance.

    P_ac = min(C_dc · GHI / 1000 W/m² · PR, P_ac,max)

with C_dc the DC capacity at standard test conditions, PR the performance
ratio (temperature, soiling, wiring, inverter and orientation losses lumped
together).  Full pvlib physics (POA transposition, cell temperature,
inverter curves) is in ``models/solar.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

STC_IRRADIANCE_W_M2 = 1000.0


def ac_power_w(capacity_w: NDArray[np.float64], ghi_w_m2: float | NDArray[np.float64],
               performance_ratio: NDArray[np.float64] | float,
               ac_limit_w: NDArray[np.float64]) -> NDArray[np.float64]:
    """AC output [W, ≥ 0] of each system; broadcasts over systems and times."""
    p = capacity_w * (np.asarray(ghi_w_m2) / STC_IRRADIANCE_W_M2) * performance_ratio
    return np.minimum(p, ac_limit_w)
