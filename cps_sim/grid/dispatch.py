"""Merit-order dispatch of a plant fleet and grid storage, per settlement tick.

Given demand and must-take renewables for one balancing area, each tick:

1. every plant's feasible range ``[lo, hi]`` follows from capacity, availability,
   minimum stable load and ramp limits from the previous tick
   (:func:`cps_sim.models.plants.output_bounds_w`); must-run plants sit at ``hi``;
2. the residual demand ``demand - renewables - sum(lo)`` is filled in merit order over
   the plants' increments ``hi - lo`` and a storage pseudo-unit (discharge capacity,
   priced at ``storage_discharge_cost_jpy_per_kwh``; the default ``-inf`` puts storage
   right after must-run, as in "must-run, then storage, then plants");
   a plant that has to start but is needed below its minimum stable load is run at
   that minimum and cheaper plants back off by the excess (reverse merit order);
3. a remaining deficit is *unserved*; a surplus first cancels storage discharge, then
   charges storage, then goes to export (up to the interconnector limit), then
   *curtails* renewables, and anything left (must-run above demand) is
   *overgeneration*;
4. valley filling (optional, ``storage_charge_cost_jpy_per_kwh``): in a tick where
   storage does not discharge, running plants whose marginal cost is at most that price
   raise their output, cheapest first, within their ramp and capacity limits, to charge
   storage with what room the surplus left (pumped hydro pumping at night on coal and
   nuclear).  Priced below the storage discharge price, this moves cheap energy into
   the hours where storage displaces dearer plants or would otherwise leave demand
   unserved.  The extra output is plant generation like any other (its CO2 and cost
   are counted when it is generated).

The balance closes exactly (tested)::

    sum(plant) + renewable - curtailment - storage_power + unserved
        == demand + export + overgeneration

with ``storage_power`` in load convention (+ charging).  CO2 [g] and cost [JPY] come
from each plant's intensity and marginal cost (incl. carbon price);
``co2_intensity_g_per_kwh`` is per kWh of demand served (storage's embedded CO2 is not
tracked).  Without ramp history and storage, :func:`dispatch_series` is vectorised over
the time axis; otherwise it loops over ticks (never over devices).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from cps_sim.core.types import FloatArray
from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models import battery as bat
from cps_sim.models import battery_ageing as ag
from cps_sim.models import plants as pl


@dataclass(frozen=True)
class DispatchResult:
    """Dispatch of one tick (scalars as 0-d arrays) or a series (leading time axis).

    Columns named for the direction they carry are non-negative; ``storage_power_w`` is
    load convention (+ charging).
    """

    demand_w: FloatArray
    renewable_w: FloatArray
    plant_generation_w: FloatArray  # (..., n_plants)
    storage_power_w: FloatArray
    export_w: FloatArray
    curtailment_w: FloatArray
    unserved_w: FloatArray
    overgeneration_w: FloatArray
    co2_g: FloatArray
    cost_jpy: FloatArray
    co2_intensity_g_per_kwh: FloatArray
    storage_surplus_charge_w: FloatArray | float = 0.0
    """Storage charging from the surplus (before valley filling): energy that would
    otherwise have been exported, curtailed or overgenerated."""
    storage_unit_power_w: FloatArray | None = None
    """Power of each storage unit (load convention), shape (..., n_units); None without
    storage or for the vectorised series."""

    @property
    def balance_error_w(self) -> FloatArray:
        """Left minus right side of the balance identity (0 up to rounding)."""
        supply = (
            self.plant_generation_w.sum(-1)
            + self.renewable_w
            - self.curtailment_w
            - self.storage_power_w
            + self.unserved_w
        )
        return supply - (self.demand_w + self.export_w + self.overgeneration_w)


def _merit_fill(
    need: FloatArray, inc: FloatArray, start_min: FloatArray, cost: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Fill ``need`` (...,) from increments ``inc`` (..., m) in ascending ``cost`` (m,).

    Returns the allocation (..., m) and the excess (...,) created by running a marginal
    unit at its minimum that cheaper units could not absorb.
    """
    order = np.argsort(cost, kind="stable")
    inc_s = inc[..., order]
    smin_s = np.minimum(start_min[..., order], inc_s)
    before = np.cumsum(inc_s, axis=-1) - inc_s
    alloc = np.clip(need[..., None] - before, 0.0, inc_s)
    short = (alloc > 0) & (alloc < smin_s)
    excess = np.where(short, smin_s - alloc, 0.0).sum(-1)
    alloc = np.where(short, smin_s, alloc)
    m = inc_s.shape[-1]
    idx = np.arange(m)
    pos = np.where(short.any(-1), np.argmax(short, axis=-1), 0)
    earlier = idx < pos[..., None]
    reducible = np.where(earlier, alloc - np.where(alloc > 0, smin_s, 0.0), 0.0)
    reducible = np.maximum(reducible, 0.0)
    suffix = reducible.sum(-1, keepdims=True) - np.cumsum(reducible, axis=-1)
    take = np.clip(excess[..., None] - suffix, 0.0, reducible)
    alloc = alloc - take
    excess = excess - take.sum(-1)
    out = np.empty_like(alloc)
    out[..., order] = alloc
    return out, excess


def _core(
    demand,
    renewable,
    lo,
    hi,
    start_min,
    cost,
    co2,
    s_dis,
    s_chg,
    s_cost,
    export_cap,
    dt_s,
    s_charge_cost=-np.inf,
):
    demand = np.asarray(demand, dtype=float)
    renewable = np.asarray(renewable, dtype=float)
    residual = demand - renewable
    need = np.maximum(residual - lo.sum(-1), 0.0)
    s_dis = np.broadcast_to(np.asarray(s_dis, dtype=float), need.shape)
    inc = np.concatenate([hi - lo, s_dis[..., None]], axis=-1)
    smin = np.concatenate([start_min, np.zeros((*need.shape, 1))], axis=-1)
    alloc, _ = _merit_fill(need, inc, smin, np.append(cost, s_cost))
    gen = lo + alloc[..., :-1]
    dis = alloc[..., -1]
    balance = residual - gen.sum(-1) - dis
    unserved = np.maximum(balance, 0.0)
    surplus = np.maximum(-balance, 0.0)
    r = np.minimum(surplus, dis)
    dis = dis - r
    surplus = surplus - r
    chg = np.minimum(surplus, s_chg)
    chg_surplus = chg
    surplus = surplus - chg
    if np.isfinite(s_charge_cost):
        # valley filling from running plants at or below the charge price (step 4)
        room = np.where(dis > 0, 0.0, np.maximum(s_chg - chg, 0.0))
        head = np.where((cost <= s_charge_cost) & (gen > 0), np.maximum(hi - gen, 0.0), 0.0)
        pump, _ = _merit_fill(room, head, np.zeros_like(head), cost)
        gen = gen + pump
        chg = chg + pump.sum(-1)
    export = np.minimum(surplus, export_cap)
    surplus = surplus - export
    curt = np.minimum(surplus, np.maximum(renewable, 0.0))
    overgen = surplus - curt
    return gen, chg - dis, export, curt, unserved, overgen, chg_surplus


def _result(
    spec, demand, renewable, gen, storage_power, export, curt, unserved, overgen, dt_s, carbon_price
):
    dt_h = dt_s / SECONDS_PER_HOUR
    gen_kwh = gen * dt_h / 1000.0
    co2 = (gen_kwh * spec.co2_g_per_kwh).sum(-1)
    cost = (gen_kwh * pl.marginal_cost_jpy_per_kwh(spec, carbon_price)).sum(-1)
    served_kwh = (np.asarray(demand, dtype=float) - unserved) * dt_h / 1000.0
    # below 1 Wh served the intensity is reported as 0 (avoids 0/0 on idle ticks)
    intensity = np.divide(co2, served_kwh, out=np.zeros_like(co2), where=served_kwh > 1e-3)
    return DispatchResult(
        demand_w=np.asarray(demand, dtype=float),
        renewable_w=np.asarray(renewable, dtype=float),
        plant_generation_w=gen,
        storage_power_w=storage_power,
        export_w=export,
        curtailment_w=curt,
        unserved_w=unserved,
        overgeneration_w=overgen,
        co2_g=co2,
        cost_jpy=cost,
        co2_intensity_g_per_kwh=intensity,
    )


def _check_storage_prices(discharge: float, charge: float) -> None:
    if np.isfinite(charge) and not charge < discharge:
        raise ValueError(
            f"storage charge price ({charge:g} JPY/kWh) must be below the "
            f"discharge price ({discharge:g}); otherwise storage cycles for nothing"
        )


def dispatch_tick(
    spec: pl.PlantFleetSpec,
    prev_output_w: npt.ArrayLike | None,
    demand_w: float,
    renewable_w: float,
    dt_s: float,
    storage: ag.AgedBatteries | None = None,
    export_capacity_w: float = 0.0,
    carbon_price_jpy_per_t_co2: float = 0.0,
    storage_discharge_cost_jpy_per_kwh: float = -np.inf,
    storage_charge_cost_jpy_per_kwh: float = -np.inf,
    temperature_c: float = 25.0,
) -> tuple[DispatchResult, ag.AgedBatteries | None]:
    """Dispatch one tick; returns the result and the advanced (aged) storage.

    ``storage_charge_cost_jpy_per_kwh`` (default: never) enables valley filling, see
    the module docstring (step 4); it must be below the discharge price.

    Storage power is split over storage units in proportion to each unit's feasible
    bound (:func:`cps_sim.models.battery.feasible_power_w`), so every unit can hold it;
    any rounding residue of the storage step is booked to unserved/overgeneration so
    the balance stays exact.
    """
    lo, hi, smin = pl.output_bounds_w(spec, prev_output_w, dt_s)
    cost = pl.marginal_cost_jpy_per_kwh(spec, carbon_price_jpy_per_t_co2)
    if storage is not None:
        s_lo, s_hi = bat.feasible_power_w(storage.spec, storage.energy_wh, dt_s)
        s_dis, s_chg = float(-s_lo.sum()), float(s_hi.sum())
    else:
        s_lo = s_hi = np.zeros(0)
        s_dis = s_chg = 0.0
    _check_storage_prices(storage_discharge_cost_jpy_per_kwh, storage_charge_cost_jpy_per_kwh)
    gen, sp, export, curt, unserved, overgen, chg_surplus = _core(
        demand_w,
        renewable_w,
        lo,
        hi,
        smin,
        cost,
        spec.co2_g_per_kwh,
        s_dis,
        s_chg,
        storage_discharge_cost_jpy_per_kwh,
        export_capacity_w,
        dt_s,
        storage_charge_cost_jpy_per_kwh,
    )
    sp = float(sp)
    new_state = storage
    unit_w = None
    if storage is not None:
        if sp > 0:
            unit = s_hi * (sp / s_chg)
        elif sp < 0:
            unit = s_lo * (-sp / s_dis)
        else:
            unit = np.zeros(storage.spec.n)
        new_state, flows = ag.step(storage, unit, dt_s, temperature_c)
        unit_w = np.asarray(flows.power_w, dtype=float)
        actual = float(unit_w.sum())
        delta = actual - sp  # >0: storage took more (or gave less) than planned
        unserved = unserved + max(delta, 0.0)
        overgen = overgen + max(-delta, 0.0)
        sp = actual
    res = _result(
        spec,
        demand_w,
        renewable_w,
        gen,
        np.asarray(sp),
        export,
        curt,
        unserved,
        overgen,
        dt_s,
        carbon_price_jpy_per_t_co2,
    )
    # surplus charging as booked: never more than the storage actually took
    surplus_w = min(float(chg_surplus), max(sp, 0.0))
    return replace(res, storage_surplus_charge_w=surplus_w, storage_unit_power_w=unit_w), new_state


def dispatch_series(
    spec: pl.PlantFleetSpec,
    demand_w: npt.ArrayLike,
    renewable_w: npt.ArrayLike,
    dt_s: float,
    storage: ag.AgedBatteries | None = None,
    export_capacity_w: float = 0.0,
    carbon_price_jpy_per_t_co2: float = 0.0,
    storage_discharge_cost_jpy_per_kwh: float = -np.inf,
    initial_output_w: npt.ArrayLike | None = None,
    ramp_limits: bool = True,
    storage_charge_cost_jpy_per_kwh: float = -np.inf,
) -> tuple[DispatchResult, ag.AgedBatteries | None]:
    """Dispatch a time series ``(T,)``; result arrays have a leading time axis.

    With ``ramp_limits=False`` and no storage, ticks are independent and the whole
    series is dispatched in one vectorised call.  Otherwise ticks are chained (ramp
    limits from the previous tick's output, storage state carried); the first tick
    ramps from ``initial_output_w`` (default: unconstrained).
    """
    demand = np.asarray(demand_w, dtype=float)
    renew = np.asarray(renewable_w, dtype=float)
    if storage is None and not ramp_limits:
        lo, hi, smin = pl.output_bounds_w(spec, None, dt_s)
        t = demand.shape[0]
        lo2, hi2, sm2 = (np.broadcast_to(a, (t, spec.n)) for a in (lo, hi, smin))
        cost = pl.marginal_cost_jpy_per_kwh(spec, carbon_price_jpy_per_t_co2)
        gen, sp, export, curt, unserved, overgen, _ = _core(
            demand,
            renew,
            lo2,
            hi2,
            sm2,
            cost,
            spec.co2_g_per_kwh,
            0.0,
            0.0,
            storage_discharge_cost_jpy_per_kwh,
            export_capacity_w,
            dt_s,
        )
        return _result(
            spec,
            demand,
            renew,
            gen,
            sp,
            export,
            curt,
            unserved,
            overgen,
            dt_s,
            carbon_price_jpy_per_t_co2,
        ), None
    prev = None if initial_output_w is None else np.asarray(initial_output_w, dtype=float)
    rows = []
    state = storage
    for k in range(demand.shape[0]):  # chained in time; vectorised over plants and units
        res, state = dispatch_tick(
            spec,
            prev if ramp_limits else None,
            float(demand[k]),
            float(renew[k]),
            dt_s,
            state,
            export_capacity_w,
            carbon_price_jpy_per_t_co2,
            storage_discharge_cost_jpy_per_kwh,
            storage_charge_cost_jpy_per_kwh,
        )
        prev = res.plant_generation_w
        rows.append(res)
    stacked = {
        f: np.stack([np.asarray(getattr(r, f)) for r in rows])
        for f in DispatchResult.__dataclass_fields__
        if f != "storage_unit_power_w"
    }
    if state is not None:
        stacked["storage_unit_power_w"] = np.stack([r.storage_unit_power_w for r in rows])
    return DispatchResult(**stacked), state
