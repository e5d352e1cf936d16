"""``load``: load-optimised — charge as fast as the site import limit allows,
sharing the headroom among connected EVs (earliest departure, then lowest SoC
first when not all fit at minimum current)."""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import (
    StrategyConfig,
    StrategyState,
    allocate_under_limit,
    site_headroom_w,
    wants_energy,
)


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    want = np.where(wants_energy(obs), obs.ev_charger_w, 0.0)
    return limit_to_site(obs, want, cfg), state


def limit_to_site(obs: Observation, want_w: FloatArray, cfg: StrategyConfig) -> FloatArray:
    """Cap positive EV setpoints so that no site exceeds its import limit.

    Discharge (negative) setpoints pass unchanged and do not free headroom for
    others (a conservative choice: a discharging EV may stop at any time).
    """
    charge = np.maximum(want_w, 0.0)
    key = obs.ev_departure_s + 1e-3 * obs.ev_soc  # earliest departure, then lowest SoC
    capped = allocate_under_limit(obs, site_headroom_w(obs, cfg), charge, cfg.min_1p_w, key)
    return np.where(want_w < 0, want_w, capped)
