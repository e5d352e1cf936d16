"""Surplus following with the timers of real wallbox controllers.

* enable when the EV's share of the surplus has stayed >= minimum power
  (+ ``enable_threshold_w``) for ``enable_delay_s``; disable when it has stayed
  below minimum power (- ``disable_threshold_w``) for ``disable_delay_s``.
  While a disable timer runs the charger holds its minimum power (this is
  what keeps a passing cloud from toggling it; the grid energy so drawn is at
  most minimum power x ``disable_delay_s`` per dip; with
  ``disable_delay_s = 0`` the charger never draws beyond the surplus);
* 3-phase capable chargers switch 1p -> 3p when the surplus has covered the
  3-phase minimum for ``phase_up_delay_s`` and back when it has not for
  ``phase_down_delay_s``; a stopped charger picks its phase mode freely.

``follow_surplus`` is shared by ``pv`` (``always_on=False``) and ``min_pv``
(``always_on=True``: minimum power whenever plugged, no on/off timers).
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.observation import BoolArray, FloatArray, Observation
from cps_sim.control.strategies.common import (
    StrategyConfig,
    StrategyState,
    phase_limits_w,
    share_by_weight,
    surplus_for_evs_w,
    wants_energy,
)


def _timer(
    cond: BoolArray, since_s: FloatArray, now_s: float, delay_s: FloatArray | float
) -> tuple[BoolArray, FloatArray]:
    """(condition held for delay, new 'since' times): start where newly true, clear where false."""
    since = np.where(cond, np.where(np.isnan(since_s), now_s, since_s), np.nan)
    fired = cond & (now_s - since >= delay_s - 1e-9)
    return fired, since


def ev_surplus_share_w(obs: Observation, cfg: StrategyConfig, active: BoolArray) -> FloatArray:
    """Each active EV's share of its site's surplus (in proportion to charger power)."""
    weight = np.where(active, obs.ev_charger_w, 0.0)
    return share_by_weight(obs, surplus_for_evs_w(obs, cfg), weight)


def follow_surplus(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig, always_on: bool
) -> tuple[FloatArray, StrategyState]:
    active = wants_energy(obs)
    share = ev_surplus_share_w(obs, cfg, active)
    # ---- phase mode: free choice while stopped, timed switch while charging
    cap3 = state.three_phase_capable
    if cap3.any():
        running = state.enabled & active if not always_on else active
        three = state.three_phase.copy()
        free = cap3 & ~running
        three[free] = share[free] >= cfg.min_3p_w
        up_cond = cap3 & running & ~three & (share >= cfg.min_3p_w)
        down_cond = cap3 & running & three & (share < cfg.min_3p_w)
        delay = np.where(three, cfg.phase_down_delay_s, cfg.phase_up_delay_s)
        fired_p, phase_since = _timer(up_cond | down_cond, state.phase_since_s, now_s, delay)
        three = np.where(fired_p, ~three, three)
        phase_since = np.where(fired_p, np.nan, phase_since)
        state = state.evolve(
            three_phase=three,
            phase_since_s=phase_since,
            phase_switches=state.phase_switches + fired_p,
        )
    elif not np.isnan(state.phase_since_s).all():
        # no 3-phase charger: no phase condition can hold (what the timers above give)
        state = state.evolve(phase_since_s=np.full(cap3.shape, np.nan))
    lo, hi = phase_limits_w(obs, state, cfg)
    if always_on:
        sp = np.where(active, np.minimum(np.maximum(share, lo), hi), 0.0)  # lo <= hi
        return sp, state.evolve(enabled=active)
    # ---- on/off with hysteresis
    on = state.enabled & active
    start_cond = ~on & active & (share >= lo + cfg.enable_threshold_w)
    stop_cond = on & (share < lo - cfg.disable_threshold_w)
    delay = np.where(on, cfg.disable_delay_s, cfg.enable_delay_s)
    fired, since = _timer(start_cond | stop_cond, state.cond_since_s, now_s, delay)
    new_on = np.where(fired, ~on, on)
    since = np.where(fired, np.nan, since)
    toggled = fired  # unplugged/full EVs stop silently (not a toggle by the controller)
    sp = np.where(new_on, np.minimum(np.maximum(share, lo), hi), 0.0)  # lo <= hi
    return sp, state.evolve(enabled=new_on, cond_since_s=since, switches=state.switches + toggled)
