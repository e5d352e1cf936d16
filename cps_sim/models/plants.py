"""Dispatchable power plants and grid-scale storage as populations (arrays per plant).

A :class:`PlantFleetSpec` holds one entry per plant: capacity, availability, minimum
stable load, ramp limits [W/s], CO2 intensity [g/kWh], variable cost [JPY/kWh] and a
must-run flag.  Marginal cost with a carbon price ``c_CO2`` [JPY/t-CO2]::

    mc = variable_cost_jpy_per_kwh + co2_g_per_kwh * c_CO2 / 1e6

Technology defaults (:data:`TECHNOLOGIES`)
------------------------------------------
CO2 intensities are *life-cycle* medians of IPCC AR5 WGIII Annex III (Schloemer et al.
2014, Table A.III.2) where that table has the technology: coal PC 820, gas CCGT 490,
nuclear 12, coal CCS 220, gas CCS 170 g/kWh.  OCGT (670) and oil (760) are labelled
assumptions scaled from those by typical efficiencies; hydrogen and ammonia firing are
0 g/kWh *at the stack*, their upstream depends on the fuel's origin and is not included
(assumption).  Variable costs are labelled assumptions of the order of the fuel and
variable O&M components in Japan's power-generation cost verification (METI 発電コスト
検証ワーキンググループ, 2021); minimum stable loads and ramp rates are labelled
assumptions of the order given by Agora Energiewende, *Flexibility in thermal power
plants* (2017).  Override any of them per plant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cps_sim.core.types import BoolArray, FloatArray
from cps_sim.models import battery as bat
from cps_sim.models import battery_ageing as ag


@dataclass(frozen=True)
class TechDefaults:
    co2_g_per_kwh: float
    variable_cost_jpy_per_kwh: float
    min_stable_fraction: float
    ramp_fraction_per_min: float  # of capacity, both directions
    must_run: bool
    source: str


_IPCC = "IPCC AR5 WGIII Annex III life-cycle median"
_ASSUME = "assumption (order of magnitude, see module docstring)"

TECHNOLOGIES: dict[str, TechDefaults] = {
    "nuclear": TechDefaults(12.0, 1.5, 1.0, 0.5, True, f"CO2: {_IPCC}; rest: {_ASSUME}"),
    "coal": TechDefaults(820.0, 5.0, 0.40, 1.5, False, f"CO2: {_IPCC}; rest: {_ASSUME}"),
    "gas_ccgt": TechDefaults(490.0, 9.5, 0.40, 3.0, False, f"CO2: {_IPCC}; rest: {_ASSUME}"),
    "gas_ocgt": TechDefaults(670.0, 14.0, 0.20, 10.0, False, _ASSUME),
    "oil": TechDefaults(760.0, 25.0, 0.30, 3.0, False, _ASSUME),
    "hydrogen_turbine": TechDefaults(
        0.0, 24.0, 0.40, 3.0, False, f"0 g/kWh at stack, upstream excluded; {_ASSUME}"
    ),
    "ammonia_firing": TechDefaults(
        0.0, 20.0, 0.40, 1.5, False, f"0 g/kWh at stack (N2O excluded); {_ASSUME}"
    ),
    "coal_ccs": TechDefaults(220.0, 9.0, 0.50, 1.5, False, f"CO2: {_IPCC}; rest: {_ASSUME}"),
    "gas_ccs": TechDefaults(170.0, 13.0, 0.50, 2.0, False, f"CO2: {_IPCC}; rest: {_ASSUME}"),
}


@dataclass(frozen=True)
class PlantFleetSpec:
    """One entry per plant (arrays ``(n,)``)."""

    name: tuple[str, ...]
    technology: tuple[str, ...]
    capacity_w: FloatArray
    availability: FloatArray  # 0..1, e.g. outages or derating
    min_stable_fraction: FloatArray
    ramp_up_w_per_s: FloatArray
    ramp_down_w_per_s: FloatArray
    co2_g_per_kwh: FloatArray
    variable_cost_jpy_per_kwh: FloatArray
    must_run: BoolArray

    @property
    def n(self) -> int:
        return int(self.capacity_w.shape[0])

    @property
    def available_w(self) -> FloatArray:
        return self.capacity_w * self.availability

    @property
    def min_stable_w(self) -> FloatArray:
        return self.capacity_w * self.min_stable_fraction


def plant_fleet(plants: Sequence[Mapping[str, object]]) -> PlantFleetSpec:
    """Build a fleet from entries like ``{"technology": "coal", "capacity_w": 6e8}``.

    Optional keys override the technology defaults: ``name``, ``availability``,
    ``min_stable_fraction``, ``ramp_up_w_per_s``, ``ramp_down_w_per_s``,
    ``co2_g_per_kwh``, ``variable_cost_jpy_per_kwh``, ``must_run``.
    """
    allowed = {
        "technology",
        "capacity_w",
        "name",
        "availability",
        "min_stable_fraction",
        "ramp_up_w_per_s",
        "ramp_down_w_per_s",
        "co2_g_per_kwh",
        "variable_cost_jpy_per_kwh",
        "must_run",
    }
    cols: dict[str, list[Any]] = {k: [] for k in allowed}
    for i, p in enumerate(plants):
        bad = set(p) - allowed
        if bad:
            raise TypeError(f"plants[{i}]: unknown keys {sorted(bad)}")
        tech = str(p["technology"])
        if tech not in TECHNOLOGIES:
            raise KeyError(
                f"plants[{i}].technology: unknown {tech!r}; known {sorted(TECHNOLOGIES)}"
            )
        d = TECHNOLOGIES[tech]
        cap = float(p["capacity_w"])  # type: ignore[arg-type]
        ramp = d.ramp_fraction_per_min * cap / 100.0 / 60.0
        vals = dict(
            technology=tech,
            capacity_w=cap,
            name=p.get("name", f"{tech}_{i}"),
            availability=p.get("availability", 1.0),
            min_stable_fraction=p.get("min_stable_fraction", d.min_stable_fraction),
            ramp_up_w_per_s=p.get("ramp_up_w_per_s", ramp),
            ramp_down_w_per_s=p.get("ramp_down_w_per_s", ramp),
            co2_g_per_kwh=p.get("co2_g_per_kwh", d.co2_g_per_kwh),
            variable_cost_jpy_per_kwh=p.get(
                "variable_cost_jpy_per_kwh", d.variable_cost_jpy_per_kwh
            ),
            must_run=p.get("must_run", d.must_run),
        )
        for k, v in vals.items():
            cols[k].append(v)

    def f(k: str) -> FloatArray:
        return np.array(cols[k], dtype=float)

    return PlantFleetSpec(
        name=tuple(str(x) for x in cols["name"]),
        technology=tuple(cols["technology"]),
        capacity_w=f("capacity_w"),
        availability=f("availability"),
        min_stable_fraction=f("min_stable_fraction"),
        ramp_up_w_per_s=f("ramp_up_w_per_s"),
        ramp_down_w_per_s=f("ramp_down_w_per_s"),
        co2_g_per_kwh=f("co2_g_per_kwh"),
        variable_cost_jpy_per_kwh=f("variable_cost_jpy_per_kwh"),
        must_run=np.array(cols["must_run"], dtype=bool),
    )


def marginal_cost_jpy_per_kwh(
    spec: PlantFleetSpec, carbon_price_jpy_per_t_co2: float = 0.0
) -> FloatArray:
    """Variable cost plus carbon cost: ``c_var + co2_g_per_kwh * price / 1e6``."""
    return spec.variable_cost_jpy_per_kwh + spec.co2_g_per_kwh * carbon_price_jpy_per_t_co2 / 1e6


def output_bounds_w(
    spec: PlantFleetSpec, prev_output_w: npt.ArrayLike | None, dt_s: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Output range of each plant for the next ``dt_s`` given last tick's output.

    Returns ``(lo, hi, start_min)`` [W]:

    * running plant (``prev > 0``): ``hi = min(P_avail, prev + r_up dt)``;
      ``lo = max(P_min, prev - r_dn dt)``, or ``0`` if it can ramp down to ``P_min``
      within the step (shutdown allowed);
    * off plant: ``lo = 0`` and it may start at up to
      ``hi = min(P_avail, max(P_min, r_up dt))`` (start-up is assumed to have been
      scheduled; no start-up cost or time is modelled);
    * whenever ``lo = 0`` a non-zero output must be at least ``start_min = P_min``
      (the feasible set is ``{0} U [P_min, hi]``);
    * must-run plants: ``lo = hi`` (they run at the highest output they can reach);
    * ``prev_output_w=None`` means no ramp history (every plant free within its limits).
    """
    avail = spec.available_w
    p_min = np.minimum(spec.min_stable_w, avail)
    if prev_output_w is None:
        hi = avail.copy()
        lo = np.zeros(spec.n)
    else:
        prev = np.asarray(prev_output_w, dtype=float)
        on = prev > 0
        up = prev + spec.ramp_up_w_per_s * dt_s
        down = prev - spec.ramp_down_w_per_s * dt_s
        hi = np.where(
            on,
            np.minimum(avail, up),
            np.minimum(avail, np.maximum(p_min, spec.ramp_up_w_per_s * dt_s)),
        )
        lo = np.where(on & (down > p_min), np.minimum(down, hi), 0.0)
    hi = np.maximum(hi, lo)
    lo = np.where(spec.must_run, hi, lo)
    start_min = np.where(lo > 0, 0.0, p_min)
    return lo, hi, start_min


def pumped_hydro_spec(
    n: int, power_w: npt.ArrayLike, energy_wh: npt.ArrayLike, round_trip_efficiency: float = 0.75
) -> bat.BatterySpec:
    """Pumped hydro as a storage population (no taper, no self-discharge, no ageing:
    see :func:`grid_storage`).

    Round-trip 0.70-0.80 is the usual range (assumption 0.75, split evenly:
    ``eta_c = eta_d = sqrt(0.75)``).
    """
    eta = float(np.sqrt(round_trip_efficiency))
    return bat.battery_spec(
        n,
        "grid",
        capacity_wh=energy_wh,
        max_charge_power_w=power_w,
        max_discharge_power_w=power_w,
        charge_efficiency=eta,
        discharge_efficiency=eta,
        soc_min=0.0,
        soc_max=1.0,
        taper_soc=1.0,
        self_discharge_per_month=0.0,
    )


def grid_battery_spec(n: int, power_w: npt.ArrayLike, energy_wh: npt.ArrayLike) -> bat.BatterySpec:
    """Grid-scale Li-ion BESS (battery preset ``"grid"`` with the given ratings)."""
    return bat.battery_spec(
        n, "grid", capacity_wh=energy_wh, max_charge_power_w=power_w, max_discharge_power_w=power_w
    )


def grid_storage(parts: list[tuple[str, bat.BatterySpec, npt.ArrayLike]]) -> ag.AgedBatteries:
    """One ageing storage population of ``(kind, spec, initial soc)`` parts, kind
    ``"battery"`` (grid preset ageing) or ``"pumped_hydro"`` (no ageing)."""
    spec = bat.concat([p[1] for p in parts])
    params = [
        ag.ageing_spec(p[1].n, "grid", **({"ageing_scale": 0.0} if p[0] == "pumped_hydro" else {}))
        for p in parts
    ]
    scale = np.concatenate([a.ageing_scale for a in params])
    dod = np.concatenate([a.dod_assumed for a in params])
    soc = np.concatenate([np.broadcast_to(np.asarray(p[2], dtype=float), (p[1].n,)) for p in parts])
    return ag.aged_population(spec, soc, ag.AgeingSpec(scale, dod))
