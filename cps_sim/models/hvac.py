"""Room air-conditioners and heat pumps for space heating and cooling, vectorised.

One unit conditions one dwelling (or one zone); the population is arrays over
units.  Three pieces, each a pure function:

Thermal mass (1R1C)
-------------------
Indoor air and furniture as one capacity ``C`` [Wh/K] behind one resistance
``R`` [K/W] to the outdoor air, with internal and solar gains ``g`` [W] and the
unit's heat ``q`` [W_th] (+ heating, − cooling)::

    C dT/dt = (T_out − T)/R + g + q
    T(t)    = T_eq + (T0 − T_eq) e,   e = exp(−t/τ),  τ = R C,  T_eq = T_out + R (g + q)

exact for constant inputs over a step (:func:`indoor_temp_c`).  The heat that
brings the room from ``T0`` to a target ``T1`` in ``t`` is the inverse
(:func:`heat_to_reach_w`).

COP vs outdoor temperature
--------------------------
A Carnot fraction with approach temperatures (labelled assumption, the same
form as the water heaters in :mod:`cps_sim.models.heat_pump`)::

    heating:  COP = η T_cond / (T_cond − T_evap),  T_cond = T_in + ΔT_c,  T_evap = T_out − ΔT_e
    cooling:  EER = η T_evap / (T_cond − T_evap),  T_evap = T_in − ΔT_e,  T_cond = T_out + ΔT_c

clipped to ``[cop_min, cop_max]`` (temperatures in K).  With ``η = 0.45`` and
``ΔT = 8 K`` the heating COP is ≈ 4.7 at 7 °C outdoors / 20 °C indoors and
≈ 3.2 at −7 °C, and the cooling EER ≈ 5.5 at 35 °C / 27 °C: the order of the
rated COPs of Japanese wall-mounted units (JIS C 9612 rating points), not a
specific product (tested).  Capacity is the rated heat ``q_max`` at any outdoor
temperature (no capacity drop in the cold, no defrost: assumptions).

Control: set-point band with a demand-response shift (:func:`decide`)
---------------------------------------------------------------------
Inverter units modulate.  The room floats freely while it stays inside the
comfort band ``[heat_setpoint, cool_setpoint]`` (defaults 20 °C / 28 °C, the
Japanese government's recommended room temperatures for heating and cooling);
when it would leave the band by the end of the step, the unit supplies just
the heat (or cooling) that holds it at the edge, within its capacity.  A
``shift_k`` per unit widens the band (+: a demand-response reduction, the room
may get warmer in summer and cooler in winter) or narrows it (−: pre-heating
or pre-cooling before a DR event).  What the unit cannot hold is *discomfort*
(kelvin-hours outside the band).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from cps_sim.core.types import FloatArray
from cps_sim.core.units import SECONDS_PER_HOUR

KELVIN = 273.15


@dataclass(frozen=True)
class HvacSpec:
    """Parameters of a population of units (arrays ``(n,)``, SI units)."""

    capacitance_wh_per_k: FloatArray  # C of the conditioned space
    resistance_k_per_w: FloatArray  # R to the outdoor air
    gains_w: FloatArray  # internal + solar gains (mean)
    heat_max_w: FloatArray  # rated heating output [W_th]
    cool_max_w: FloatArray  # rated cooling output [W_th] (> 0)
    heat_setpoint_c: FloatArray
    cool_setpoint_c: FloatArray
    carnot_fraction: FloatArray
    approach_k: FloatArray
    cop_min: FloatArray
    cop_max: FloatArray

    @property
    def n(self) -> int:
        return int(self.capacitance_wh_per_k.shape[0])

    @property
    def tau_h(self) -> FloatArray:
        return self.resistance_k_per_w * self.capacitance_wh_per_k


def hvac_spec(
    n: int,
    *,
    floor_area_m2: npt.ArrayLike = 60.0,
    ua_w_per_k_m2: npt.ArrayLike = 2.0,
    capacitance_wh_per_k_m2: npt.ArrayLike = 30.0,
    gains_w: npt.ArrayLike = 300.0,
    heat_max_w: npt.ArrayLike = 5000.0,
    cool_max_w: npt.ArrayLike = 4000.0,
    heat_setpoint_c: npt.ArrayLike = 20.0,
    cool_setpoint_c: npt.ArrayLike = 28.0,
    carnot_fraction: npt.ArrayLike = 0.45,
    approach_k: npt.ArrayLike = 8.0,
    cop_min: npt.ArrayLike = 1.0,
    cop_max: npt.ArrayLike = 7.0,
) -> HvacSpec:
    """A population from dwelling-level parameters (labelled assumptions as defaults).

    ``ua_w_per_k_m2`` is the heat loss per floor area (a 2010s detached house in the
    Tokyo climate zone is ~1.5–2.5 W/(K m²) including ventilation);
    ``capacitance_wh_per_k_m2`` the effective thermal mass (light timber frame with
    furniture, ~20–40 Wh/(K m²)): τ = C/UA ≈ 15 h with the defaults.
    """

    def a(x: npt.ArrayLike) -> FloatArray:
        return np.broadcast_to(np.asarray(x, dtype=float), (n,)).astype(float)

    area = a(floor_area_m2)
    return HvacSpec(
        capacitance_wh_per_k=area * a(capacitance_wh_per_k_m2),
        resistance_k_per_w=1.0 / (area * a(ua_w_per_k_m2)),
        gains_w=a(gains_w),
        heat_max_w=a(heat_max_w),
        cool_max_w=a(cool_max_w),
        heat_setpoint_c=a(heat_setpoint_c),
        cool_setpoint_c=a(cool_setpoint_c),
        carnot_fraction=a(carnot_fraction),
        approach_k=a(approach_k),
        cop_min=a(cop_min),
        cop_max=a(cop_max),
    )


# --------------------------------------------------------------------------- thermal mass
def indoor_temp_c(
    spec: HvacSpec, t0_c: FloatArray, outdoor_c: npt.ArrayLike, heat_w: FloatArray, dt_s: float
) -> FloatArray:
    """Indoor temperature after ``dt_s`` at constant outdoor temperature, gains and
    unit heat ``heat_w`` (+ heating / − cooling), exact (1R1C)."""
    e = np.exp(-(dt_s / SECONDS_PER_HOUR) / spec.tau_h)
    t_eq = np.asarray(outdoor_c, dtype=float) + spec.resistance_k_per_w * (spec.gains_w + heat_w)
    return t_eq + (t0_c - t_eq) * e


def heat_to_reach_w(
    spec: HvacSpec, t0_c: FloatArray, outdoor_c: npt.ArrayLike, target_c: FloatArray, dt_s: float
) -> FloatArray:
    """Constant unit heat [W_th] (+ heating / − cooling) that takes the room from ``t0_c``
    to ``target_c`` in ``dt_s`` (the inverse of :func:`indoor_temp_c`)."""
    e = np.exp(-(dt_s / SECONDS_PER_HOUR) / spec.tau_h)
    t_eq = (target_c - t0_c * e) / (1.0 - e)
    return (t_eq - np.asarray(outdoor_c, dtype=float)) / spec.resistance_k_per_w - spec.gains_w


def mean_indoor_temp_c(
    spec: HvacSpec, t0_c: FloatArray, outdoor_c: npt.ArrayLike, heat_w: FloatArray, dt_s: float
) -> FloatArray:
    """Time-average indoor temperature over the step (exact integral of the exponential)."""
    x = (dt_s / SECONDS_PER_HOUR) / spec.tau_h
    t_eq = np.asarray(outdoor_c, dtype=float) + spec.resistance_k_per_w * (spec.gains_w + heat_w)
    frac = np.where(x > 1e-12, -np.expm1(-x) / np.maximum(x, 1e-300), 1.0)
    return t_eq + (t0_c - t_eq) * frac


# --------------------------------------------------------------------------- COP
def cop(
    spec: HvacSpec, indoor_c: npt.ArrayLike, outdoor_c: npt.ArrayLike, heating: npt.ArrayLike
) -> FloatArray:
    """Heating COP or cooling EER at the given temperatures (Carnot fraction, clipped)."""
    t_in = np.asarray(indoor_c, dtype=float) + KELVIN
    t_out = np.asarray(outdoor_c, dtype=float) + KELVIN
    d = spec.approach_k
    h_cond, h_evap = t_in + d, t_out - d
    c_cond, c_evap = t_out + d, t_in - d
    lift_h = np.maximum(h_cond - h_evap, 1e-6)
    lift_c = np.maximum(c_cond - c_evap, 1e-6)
    value = np.where(
        heating, spec.carnot_fraction * h_cond / lift_h, spec.carnot_fraction * c_evap / lift_c
    )
    return np.clip(value, spec.cop_min, spec.cop_max)


# --------------------------------------------------------------------------- control
@dataclass(frozen=True)
class HvacState:
    indoor_c: FloatArray


@dataclass(frozen=True)
class HvacStep:
    """One step of every unit: thermal heat (+ heating / − cooling) and electric power
    held over the step, the indoor temperature at its end and its mean, and the
    discomfort (kelvin-hours outside the band) that remained."""

    heat_w: FloatArray
    electric_w: FloatArray
    indoor_end_c: FloatArray
    indoor_mean_c: FloatArray
    discomfort_kh: FloatArray


def band_c(spec: HvacSpec, shift_k: npt.ArrayLike = 0.0) -> tuple[FloatArray, FloatArray]:
    """The comfort band ``(low, high)`` widened by ``shift_k`` (+) or narrowed (−)."""
    s = np.asarray(shift_k, dtype=float)
    low = spec.heat_setpoint_c - s
    high = spec.cool_setpoint_c + s
    return low, np.maximum(high, low)


def decide(
    spec: HvacSpec,
    state: HvacState,
    outdoor_c: npt.ArrayLike,
    dt_s: float,
    shift_k: npt.ArrayLike = 0.0,
) -> HvacStep:
    """Heat (or cool) just enough to keep each room inside its band over the step.

    Free-floating rooms that stay inside the band get 0; the others get the
    constant heat that ends the step at the band's edge, clipped to the unit's
    capacity.  Electric power is heat / COP (COP at the step's mean indoor
    temperature of the free-floating room, a first-order estimate of the
    condensing temperature).
    """
    t0 = state.indoor_c
    low, high = band_c(spec, shift_k)
    free_end = indoor_temp_c(spec, t0, outdoor_c, np.zeros(spec.n), dt_s)
    need_heat = free_end < low
    need_cool = free_end > high
    target = np.where(need_heat, low, np.where(need_cool, high, free_end))
    q = heat_to_reach_w(spec, t0, outdoor_c, target, dt_s)
    q = np.where(
        need_heat,
        np.clip(q, 0.0, spec.heat_max_w),
        np.where(need_cool, np.clip(q, -spec.cool_max_w, 0.0), 0.0),
    )
    end = indoor_temp_c(spec, t0, outdoor_c, q, dt_s)
    mean = mean_indoor_temp_c(spec, t0, outdoor_c, q, dt_s)
    heating = q > 0
    elec = np.abs(q) / cop(
        spec, np.where(heating, np.maximum(mean, low), np.minimum(mean, high)), outdoor_c, heating
    )
    h = dt_s / SECONDS_PER_HOUR
    outside = np.maximum(low - mean, 0.0) + np.maximum(mean - high, 0.0)
    return HvacStep(
        heat_w=q,
        electric_w=np.where(q != 0, elec, 0.0),
        indoor_end_c=end,
        indoor_mean_c=mean,
        discomfort_kh=outside * h,
    )


def advance(state: HvacState, step: HvacStep) -> HvacState:
    return replace(state, indoor_c=step.indoor_end_c)
