"""Electrolysers with hydrogen storage tanks, vectorised over a population.

Model
-----
* Electric input ``P`` within ``{0} U [f_min P_rated, P_rated]``; a request below the
  minimum load runs the stack at 0 (the request is returned as unmet).
* Hydrogen produced ``m = P t / SE`` with the system specific energy ``SE`` [kWh/kg]
  (constant over load; part-load efficiency curves are not modelled).
* Energy ledger on the higher heating value ``HHV = 39.41 kWh/kg``:
  ``electric_in = m HHV + heat_loss`` (compression and balance of plant are inside
  ``SE``, so their losses are heat too).
* Tank ``m_min <= m <= m_max`` [kg] with an offtake ``h2_demand_kg`` per step; production
  is cut when the tank would overfill (the cut can take the *average* power below the
  minimum load: the stack then runs part of the step; documented simplification), and
  offtake beyond the stock is unmet.

Parameters (labelled assumptions; IRENA, *Green hydrogen cost reduction*, 2020, gives
system consumption 50-83 kWh/kg today, PEM minimum load ~5-10 %, alkaline ~10-40 %):

=========  =================  ==========================
preset     min_load_fraction  specific_energy_kwh_per_kg
=========  =================  ==========================
pem        0.05               55.0
alkaline   0.20               52.0
=========  =================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from cps_sim.core.types import FloatArray
from cps_sim.core.units import SECONDS_PER_HOUR

H2_HHV_KWH_PER_KG = 39.41
H2_LHV_KWH_PER_KG = 33.33

PRESETS = {
    "pem": dict(min_load_fraction=0.05, specific_energy_kwh_per_kg=55.0),
    "alkaline": dict(min_load_fraction=0.20, specific_energy_kwh_per_kg=52.0),
}


@dataclass(frozen=True)
class ElectrolyserSpec:
    """Electrolyser + tank population (arrays ``(n,)``)."""

    rated_power_w: FloatArray
    min_load_fraction: FloatArray
    specific_energy_kwh_per_kg: FloatArray
    tank_capacity_kg: FloatArray
    tank_min_kg: FloatArray

    @property
    def n(self) -> int:
        return int(self.rated_power_w.shape[0])

    @property
    def min_power_w(self) -> FloatArray:
        return self.rated_power_w * self.min_load_fraction

    @property
    def wh_per_kg(self) -> FloatArray:
        return self.specific_energy_kwh_per_kg * 1000.0


@dataclass(frozen=True)
class ElectrolyserState:
    h2_kg: FloatArray


@dataclass(frozen=True)
class ElectrolyserFlows:
    """One step: ``electric_in_wh = h2_produced_kg * HHV + heat_loss_wh``;
    ``tank change = h2_produced_kg - h2_delivered_kg``."""

    power_w: FloatArray
    unmet_w: FloatArray
    electric_in_wh: FloatArray
    h2_produced_kg: FloatArray
    h2_hhv_wh: FloatArray
    heat_loss_wh: FloatArray
    h2_delivered_kg: FloatArray
    h2_unmet_kg: FloatArray


def electrolyser_spec(
    n: int,
    rated_power_w: npt.ArrayLike,
    tank_capacity_kg: npt.ArrayLike,
    preset: str = "pem",
    **overrides: npt.ArrayLike,
) -> ElectrolyserSpec:
    """Population of ``n`` electrolysers from a preset (see module table)."""
    base: dict[str, npt.ArrayLike] = dict(PRESETS[preset])
    base.update(rated_power_w=rated_power_w, tank_capacity_kg=tank_capacity_kg, tank_min_kg=0.0)
    unknown = set(overrides) - set(base)
    if unknown:
        raise TypeError(f"unknown ElectrolyserSpec fields: {sorted(unknown)}")
    base.update(overrides)
    return ElectrolyserSpec(
        **{k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy() for k, v in base.items()}
    )


def initial_state(spec: ElectrolyserSpec, h2_kg: npt.ArrayLike = 0.0) -> ElectrolyserState:
    return ElectrolyserState(np.broadcast_to(np.asarray(h2_kg, dtype=float), (spec.n,)).copy())


def feasible_power_w(
    spec: ElectrolyserSpec, state: ElectrolyserState, dt_s: float, h2_demand_kg: npt.ArrayLike = 0.0
) -> tuple[FloatArray, FloatArray]:
    """``(0, hi)`` [W]; the set is non-convex: powers in ``(0, spec.min_power_w)`` are not
    allowed (see :func:`surplus_setpoint_w`).  ``hi`` is 0 when the tank room left for the
    step cannot take the minimum load."""
    t_h = dt_s / SECONDS_PER_HOUR
    room_kg = spec.tank_capacity_kg - state.h2_kg + np.asarray(h2_demand_kg, dtype=float)
    hi = np.clip(np.minimum(spec.rated_power_w, room_kg * spec.wh_per_kg / t_h), 0.0, None)
    hi = np.where(hi >= spec.min_power_w, hi, 0.0)
    return np.zeros(spec.n), hi


def surplus_setpoint_w(
    spec: ElectrolyserSpec,
    state: ElectrolyserState,
    surplus_w: npt.ArrayLike,
    dt_s: float,
    h2_demand_kg: npt.ArrayLike = 0.0,
) -> FloatArray:
    """Setpoint that soaks up a power surplus: ``min(surplus, hi)`` if >= minimum load, else 0."""
    _, hi = feasible_power_w(spec, state, dt_s, h2_demand_kg)
    p = np.minimum(np.maximum(np.asarray(surplus_w, dtype=float), 0.0), hi)
    return np.where(p >= spec.min_power_w, p, 0.0)


def step(
    state: ElectrolyserState,
    spec: ElectrolyserSpec,
    power_w: npt.ArrayLike,
    dt_s: float,
    h2_demand_kg: npt.ArrayLike = 0.0,
) -> tuple[ElectrolyserState, ElectrolyserFlows]:
    """Run at a constant electric request for ``dt_s`` and serve the hydrogen offtake."""
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    n = spec.n
    t_h = dt_s / SECONDS_PER_HOUR
    req = np.broadcast_to(np.asarray(power_w, dtype=float), (n,))
    dem = np.broadcast_to(np.maximum(np.asarray(h2_demand_kg, dtype=float), 0.0), (n,))
    p = np.where(req >= spec.min_power_w, np.minimum(req, spec.rated_power_w), 0.0)
    p = np.where(req > 0, p, 0.0)
    prod = p * t_h / spec.wh_per_kg
    room = np.maximum(spec.tank_capacity_kg - state.h2_kg + dem, 0.0)
    prod = np.minimum(prod, room)
    avail = np.maximum(state.h2_kg - spec.tank_min_kg, 0.0) + prod
    delivered = np.minimum(dem, avail)
    electric = prod * spec.wh_per_kg
    hhv = prod * H2_HHV_KWH_PER_KG * 1000.0
    flows = ElectrolyserFlows(
        power_w=electric / t_h,
        unmet_w=req - electric / t_h,
        electric_in_wh=electric,
        h2_produced_kg=prod,
        h2_hhv_wh=hhv,
        heat_loss_wh=electric - hhv,
        h2_delivered_kg=delivered,
        h2_unmet_kg=dem - delivered,
    )
    return replace(state, h2_kg=state.h2_kg + prod - delivered), flows
