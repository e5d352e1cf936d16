"""Stationary battery population: energy-exact segment step (foundation model).

A segment is a stretch of time ``dt_s`` over which the requested power is
constant.  The step is *energy-exact*: a battery that reaches its SoC limit
part-way through the segment takes exactly the energy that fits, as the
continuous-time solution would, and the rest is returned as unmet.
Research-grade ageing, taper and self-discharge live in ``models/storage.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True)
class BatterySpec:
    """Arrays over a population (capacity 0 marks 'no battery at this site')."""

    capacity_wh: Array
    power_w: Array
    charge_efficiency: Array
    discharge_efficiency: Array
    energy_min_wh: Array  # soc_min × capacity
    energy_max_wh: Array  # soc_max × capacity


def charge_wh(spec: BatterySpec, energy_wh: Array, offered_wh: Array, dt_s: Array | float,
              sel=slice(None)) -> Array:
    """AC energy [Wh] the batteries in ``sel`` accept out of ``offered_wh`` during dt_s.

    Limited by the power rating (P·dt) and by the room left below
    ``energy_max_wh`` divided by the charge efficiency.
    """
    h = np.asarray(dt_s) / 3600.0
    room_ac = (np.maximum(spec.energy_max_wh[sel] - energy_wh[sel], 0.0)
               / spec.charge_efficiency[sel])
    return np.minimum(np.minimum(offered_wh, spec.power_w[sel] * h), room_ac)


def discharge_wh(spec: BatterySpec, energy_wh: Array, wanted_wh: Array, dt_s: Array | float,
                 sel=slice(None)) -> Array:
    """AC energy [Wh] the batteries in ``sel`` deliver towards ``wanted_wh`` during dt_s."""
    h = np.asarray(dt_s) / 3600.0
    avail_ac = np.maximum(energy_wh[sel] - spec.energy_min_wh[sel], 0.0) * \
        spec.discharge_efficiency[sel]
    return np.minimum(np.minimum(wanted_wh, spec.power_w[sel] * h), avail_ac)


def apply(spec: BatterySpec, energy_wh: Array, charge_ac_wh: Array, discharge_ac_wh: Array,
          sel=slice(None)) -> Array:
    """Update stored energy in place; return conversion losses [Wh].

    stored += charge·η_c − discharge/η_d;  losses = charge·(1−η_c) + discharge·(1/η_d − 1).
    """
    eta_c = spec.charge_efficiency[sel]
    eta_d = spec.discharge_efficiency[sel]
    energy_wh[sel] += charge_ac_wh * eta_c - discharge_ac_wh / eta_d
    return charge_ac_wh * (1.0 - eta_c) + discharge_ac_wh * (1.0 / eta_d - 1.0)


def feasible_power_w(spec: BatterySpec, energy_wh: Array, dt_s: float) -> tuple[Array, Array]:
    """Lower (discharge, negative) and upper (charge) AC power [W] holdable for dt_s."""
    h = dt_s / 3600.0
    hi = np.minimum(spec.power_w,
                    np.maximum(spec.energy_max_wh - energy_wh, 0.0) / spec.charge_efficiency / h)
    avail = np.maximum(energy_wh - spec.energy_min_wh, 0.0) * spec.discharge_efficiency
    lo = -np.minimum(spec.power_w, avail / h)
    return lo, hi


def exchange_wh(spec: BatterySpec, energy_wh: Array, desired_wh: Array, dt_s: Array | float,
                sel=slice(None), charge_cap_wh: Array | None = None) -> tuple[Array, Array]:
    """Charge or discharge towards ``desired_wh`` (AC side, + charge / − discharge) in one pass.

    The same physics as :func:`charge_wh` / :func:`discharge_wh` + :func:`apply`
    (power limit, energy window, efficiencies), fused for the engine's hot path.
    Updates ``energy_wh[sel]`` in place and returns ``(ac_wh, losses_wh)``.
    ``charge_cap_wh`` optionally lowers the charge limit further (CC-CV taper).
    """
    h = np.asarray(dt_s) / 3600.0
    e = energy_wh[sel]
    p_h = spec.power_w[sel] * h
    eta_c = spec.charge_efficiency[sel]
    eta_d = spec.discharge_efficiency[sel]
    upper = np.minimum(p_h, np.maximum(spec.energy_max_wh[sel] - e, 0.0) / eta_c)
    if charge_cap_wh is not None:
        upper = np.minimum(upper, charge_cap_wh)
    lower = -np.minimum(p_h, np.maximum(e - spec.energy_min_wh[sel], 0.0) * eta_d)
    ac = np.clip(desired_wh, lower, upper)
    d_e = np.where(ac > 0, ac * eta_c, ac / eta_d)
    energy_wh[sel] = e + d_e
    return ac, ac - d_e


def measured_exchange_wh(spec: BatterySpec, energy_wh: Array, ac_wh: Array,
                         sel=slice(None)) -> tuple[Array, Array, Array]:
    """Book a *measured* AC exchange ``ac_wh`` (+ charge / − discharge), unclipped.

    A device bound to a real battery exchanged what was measured, whatever the
    model's power limit or energy window says.  The stored energy follows the
    same efficiencies as :func:`exchange_wh`; where it would leave the physical
    range [0, capacity] it is clipped and the difference is returned as a
    correction (+: energy the books must add, −: energy they must remove), so
    stored energy is never overwritten silently.  Updates ``energy_wh[sel]`` in
    place and returns ``(ac_wh, losses_wh, correction_wh)``.
    """
    e = energy_wh[sel]
    ac = np.asarray(ac_wh, dtype=float)
    d_e = np.where(ac > 0, ac * spec.charge_efficiency[sel], ac / spec.discharge_efficiency[sel])
    new = e + d_e
    clipped = np.clip(new, 0.0, spec.capacity_wh[sel])
    energy_wh[sel] = clipped
    return ac, ac - d_e, clipped - new
