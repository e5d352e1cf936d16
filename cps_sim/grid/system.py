"""The bulk power system above the sites, as a World tick hook.

Every settlement tick the engine settles the sites and hands their aggregate flows to
:meth:`SystemHook.on_tick`, which balances the area:

* demand ``D = background + data centres + sites' grid import``;
* must-take renewables ``R = wind + utility PV + sites' grid export`` (rooftop feed-in);
* :func:`cps_sim.grid.dispatch.dispatch_tick`: must-run plants, grid storage, then the
  plant fleet in merit order (marginal cost incl. the carbon price of the tick: flat, or
  the scenario's GX path by fiscal year with ``carbon_price: emissions``) with minimum
  stable load and ramp limits from the previous tick;
* surplus: storage charging, then electrolysers (:mod:`cps_sim.models.electrolyser`),
  then export up to the interconnector limit, then curtailment of renewables, then
  overgeneration (must-run above demand); a shortfall is unserved energy.

The balance closes every tick (checked; a residual stops the run)::

    sum(plants) + R - curtailment - storage + unserved
        == D + electrolyser + export + overgeneration

with ``storage`` in load convention (+ charging).  Wind, utility PV, background and
data-centre demand are precomputed for the whole run at build time (vectorised);
per tick the hook does one dispatch call (vectorised over plant units and storage
units) and loops only over plant *technologies* to build columns.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from cps_sim.core.errors import SimulationError
from cps_sim.core.types import FloatArray
from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.grid import dispatch as dp
from cps_sim.grid import network as nw
from cps_sim.models import battery_ageing as ag
from cps_sim.models import electrolyser as el
from cps_sim.models import loads, solar, weather, wind
from cps_sim.models import plants as pl
from cps_sim.scenario.system_schema import SystemSpec
from cps_sim.world.world import TickResult, World

BALANCE_REL_TOL = 1e-9


# ----------------------------------------------------------------------------- build helpers


def system_weather(spec: SystemSpec, world: World):
    """Synthetic weather at the scenario location (stream ``system/weather``) at the
    fixed base resolution of :func:`cps_sim.world.exogenous.synthetic_run_weather`, with
    the lull windows applied, and the map that averages per-row results onto the ticks
    (so wind and utility PV do not depend on the tick size)."""
    from cps_sim.world.exogenous import IntervalMap, synthetic_run_weather

    sc = world.scenario
    w = spec.weather
    monthly = np.minimum(
        np.asarray(weather.TOKYO_MONTHLY_CLEAR_SKY_INDEX) * w.clear_sky_index_scale, 0.95
    )
    df, edges = synthetic_run_weather(
        world.rng,
        sc,
        world.clock,
        "system/weather",
        monthly_clear_sky_index=tuple(monthly.tolist()),
        day_to_day_correlation=w.day_to_day_correlation,
        mean_wind_speed_m_s=w.mean_wind_speed_m_s,
        wind_weibull_shape=w.wind_weibull_shape,
        wind_time_constant_s=w.wind_time_constant_h * SECONDS_PER_HOUR,
    )
    if w.lulls:
        t_s = 0.5 * (edges[:-1] + edges[1:])
        n_w = t_s.size
        wind_f = np.ones(n_w)
        sun_f = np.ones(n_w)
        for lull in w.lulls:  # a handful of windows, each vectorised over time
            inside = (t_s >= lull.start_day * 86400.0) & (
                t_s < (lull.start_day + lull.duration_days) * 86400.0
            )
            wind_f = np.where(inside, np.minimum(wind_f, lull.wind_speed_factor), wind_f)
            sun_f = np.where(inside, np.minimum(sun_f, lull.irradiance_factor), sun_f)
        df = df.copy()
        df["wind_speed_m_s"] = df["wind_speed_m_s"].to_numpy() * wind_f
        for c in ("ghi_w_m2", "dni_w_m2", "dhi_w_m2"):
            df[c] = df[c].to_numpy() * sun_f
    return df, IntervalMap(edges, world.tick_s, world.n_ticks)


def _tso_demand_w(d, world: World) -> FloatArray:
    """Measured area demand of a TSO file, averaged onto the ticks [W]."""
    from pathlib import Path

    from cps_sim.data.tables import DataFileError, interval_mean
    from cps_sim.data.tso import read_area_supply_demand
    from cps_sim.scenario.loader import resolve_data_path

    sc = world.scenario
    f = resolve_data_path(
        d.tso_csv, getattr(world, "base_dir", None) or Path.cwd(), field="system.demand.tso_csv"
    )
    df = read_area_supply_demand(f, sc.timezone, d.tso_time_label)
    if d.tso_column not in df.columns:
        raise DataFileError(f, f"no column {d.tso_column!r} (read: {', '.join(df.columns)})")
    step = float(df.attrs["step_s"])
    t0 = pd.Timestamp(sc.start)
    starts = np.asarray((df.index - t0) / pd.Timedelta(seconds=1), dtype=float)
    edges = np.arange(world.n_ticks + 1) * world.tick_s
    if starts[0] > 1e-6 or starts[-1] + step < edges[-1] - 1e-6:
        end = df.index[-1] + pd.Timedelta(seconds=step)
        raise DataFileError(
            f,
            f"the data cover {df.index[0]} .. {end}, the run needs "
            f"{t0} .. {t0 + pd.Timedelta(seconds=float(edges[-1]))}",
        )
    mw = interval_mean(starts, starts + step, df[d.tso_column].to_numpy(float), edges)
    return mw * 1e6 * d.tso_scale


def area_demand_w(spec: SystemSpec, world: World) -> tuple[FloatArray, FloatArray]:
    """Background and data-centre demand [W], average over each tick, shape (n_ticks,)."""
    sc = world.scenario
    index = world.clock.index(np.arange(world.n_ticks) * world.tick_s)
    country = sc.holidays or "JP"
    d = spec.demand
    kwh = d.annual_gwh * 1e6
    rng = world.rng.generator("system/demand/background")
    kw = dict(noise_std=d.noise_std, country=country, tz=sc.timezone)
    shares = {"household": 0.0, "commercial": 0.0, "industrial": 0.0}
    if d.profile == "area_mix":
        shares = {
            "household": d.residential_share,
            "commercial": d.commercial_share,
            "industrial": d.industrial_share,
        }
    elif d.profile != "flat":
        shares[d.profile] = 1.0
    bg = np.zeros(world.n_ticks)
    if d.profile == "tso_csv":
        bg += _tso_demand_w(d, world)
    if d.profile == "flat" and kwh > 0:
        bg += loads.data_centre_power_w(index, [kwh], rng, noise_std=d.noise_std, tz=sc.timezone)[
            :, 0
        ]
    if shares["household"] * kwh > 0:
        bg += loads.household_power_w(
            index, [kwh * shares["household"]], rng, profile="japan", shift_std_s=0.0, **kw
        )[:, 0]
    if shares["commercial"] * kwh > 0:
        bg += loads.office_power_w(index, [kwh * shares["commercial"]], rng, shift_std_s=0.0, **kw)[
            :, 0
        ]
    if shares["industrial"] * kwh > 0:
        bg += loads.factory_power_w(
            index, [kwh * shares["industrial"]], rng, shifts=2, operating_days="mon_sat", **kw
        )[:, 0]
    dc = np.zeros(world.n_ticks)
    if spec.data_centres.annual_gwh > 0:
        dc = loads.data_centre_power_w(
            index,
            [spec.data_centres.annual_gwh * 1e6],
            world.rng.generator("system/demand/data_centre"),
            annual_growth_rate=spec.data_centres.annual_growth_rate,
            tz=sc.timezone,
        )[:, 0]
    return bg, dc


def plant_fleet(spec: SystemSpec) -> pl.PlantFleetSpec:
    """Expand each entry into ``units`` identical plants (technology defaults filled in)."""
    entries: list[dict[str, object]] = []
    for i, p in enumerate(spec.plants):
        unit_w = p.capacity_mw * 1e6 / p.units
        e: dict[str, object] = {
            "technology": p.technology,
            "capacity_w": unit_w,
            "availability": p.availability,
        }
        if p.min_stable_fraction is not None:
            e["min_stable_fraction"] = p.min_stable_fraction
        if p.ramp_percent_per_min is not None:
            r = p.ramp_percent_per_min / 100.0 * unit_w / 60.0
            e["ramp_up_w_per_s"] = e["ramp_down_w_per_s"] = r
        if p.variable_cost_jpy_per_kwh is not None:
            e["variable_cost_jpy_per_kwh"] = p.variable_cost_jpy_per_kwh
        if p.co2_g_per_kwh is not None:
            e["co2_g_per_kwh"] = p.co2_g_per_kwh
        if p.must_run is not None:
            e["must_run"] = p.must_run
        for u in range(p.units):
            entries.append({**e, "name": f"{p.technology}_{i}_{u}"})
    return pl.plant_fleet(entries)


def storage_population(spec: SystemSpec) -> ag.AgedBatteries | None:
    """All grid batteries and pumped-hydro plants as one (ageing) storage population."""
    if not spec.storage:
        return None
    parts = []
    for s in spec.storage:
        if s.kind == "battery":
            one = pl.grid_battery_spec(1, s.power_mw * 1e6, s.energy_mwh * 1e6)
        else:
            one = pl.pumped_hydro_spec(
                1, s.power_mw * 1e6, s.energy_mwh * 1e6, s.round_trip_efficiency or 0.75
            )
        soc = float(np.clip(s.initial_soc, one.soc_min[0], one.soc_max[0]))
        parts.append(("battery" if s.kind == "battery" else "pumped_hydro", one, soc))
    pop = pl.grid_storage(parts)
    soh = np.array([s.initial_soh for s in spec.storage])
    scale = np.array(
        [
            s.ageing_scale if s.ageing_scale is not None else a
            for s, a in zip(spec.storage, pop.params.ageing_scale, strict=True)
        ]
    )
    if np.all(soh == 1.0) and np.array_equal(scale, pop.params.ageing_scale):
        return pop
    # a used pack, soh_history "continue": the loss so far sits in the ageing state (half
    # calendar, half cycle) and the power laws go on from it (equivalent-time rule);
    # "restart": the laws start again from the pack's present capacity (as new cells).
    # The capacity at the start is energy_mwh either way.
    cont = np.array([s.soh_history == "continue" for s in spec.storage])
    loss = np.where(cont, 1.0 - soh, 0.0)
    state = replace(
        pop.state,
        nominal_capacity_wh=np.where(cont, pop.spec.capacity_wh / soh, pop.spec.capacity_wh),
        q_loss_cal=0.5 * loss,
        q_loss_cyc=0.5 * loss,
    )
    return replace(pop, params=replace(pop.params, ageing_scale=scale), state=state)


def storage_soh_factor(spec: SystemSpec) -> FloatArray:
    """Multiplies the ageing model's capacity/nominal to give SoH against the cells'
    original capacity: initial_soh for soh_history "restart", else 1."""
    return np.array([s.initial_soh if s.soh_history == "restart" else 1.0 for s in spec.storage])


def electrolyser_population(spec: SystemSpec) -> el.ElectrolyserSpec | None:
    if not spec.electrolysers:
        return None
    es = spec.electrolysers
    pre = [el.PRESETS[e.preset] for e in es]
    return el.ElectrolyserSpec(
        rated_power_w=np.array([e.power_mw * 1e6 for e in es]),
        min_load_fraction=np.array(
            [
                e.min_load_fraction if e.min_load_fraction is not None else p["min_load_fraction"]
                for e, p in zip(es, pre, strict=True)
            ]
        ),
        specific_energy_kwh_per_kg=np.array(
            [
                e.specific_energy_kwh_per_kg
                if e.specific_energy_kwh_per_kg is not None
                else p["specific_energy_kwh_per_kg"]
                for e, p in zip(es, pre, strict=True)
            ]
        ),
        tank_capacity_kg=np.array(
            [e.tank_capacity_kg if e.tank_capacity_kg is not None else np.inf for e in es]
        ),
        tank_min_kg=np.zeros(len(es)),
    )


def fill_electrolysers(
    espec: el.ElectrolyserSpec, hi_w: FloatArray, surplus_w: float
) -> FloatArray:
    """Share a surplus over electrolyser units in list order (each up to its feasible
    ``hi``); a unit whose share falls below its minimum load gets 0."""
    before = np.cumsum(hi_w) - hi_w
    p = np.clip(surplus_w - before, 0.0, hi_w)
    return np.where(p >= espec.min_power_w, p, 0.0)


# ----------------------------------------------------------------------------- the hook


class SystemHook:
    """Dispatches the balancing area every tick (see module docstring)."""

    name = "system"

    def __init__(self, spec: SystemSpec, world: World):
        self.spec = spec
        self.tick_s = world.tick_s
        n = world.n_ticks
        self.background_w, self.data_centre_w = area_demand_w(spec, world)
        self.wind_w = np.zeros(n)
        self.utility_pv_w = np.zeros(n)
        if spec.wind or spec.utility_pv:
            wx, to_ticks = system_weather(spec, world)
            if spec.wind:
                farms = wind.wind_farm_ac_power_w(
                    wx,
                    [f.turbine_type for f in spec.wind],
                    [f.hub_height_m for f in spec.wind],
                    [f.n_turbines for f in spec.wind],
                    [f.efficiency for f in spec.wind],
                )
                self.wind_w = to_ticks.mean(farms.sum(axis=1))
            if spec.utility_pv:
                dc_w = np.array([p.capacity_mw * 1e6 for p in spec.utility_pv])
                ac_w = dc_w / np.array([p.dc_ac_ratio for p in spec.utility_pv])
                pv = solar.pv_ac_power_w(
                    wx,
                    [p.tilt_deg for p in spec.utility_pv],
                    [p.azimuth_deg for p in spec.utility_pv],
                    dc_w,
                    ac_w,
                )
                self.utility_pv_w = to_ticks.mean(pv.sum(axis=1))
        if spec.carbon_price == "emissions":  # the scenario's price per tick (flat or GX path)
            self.carbon_price_jpy_per_t = np.asarray(world.carbon_price_jpy_per_t, dtype=float)
        else:
            self.carbon_price_jpy_per_t = np.full(n, float(spec.carbon_price_jpy_per_t))
        from cps_sim.market.carbon import fiscal_year

        self.fiscal_year = fiscal_year(world.clock.index(np.arange(n) * world.tick_s))
        self.fleet = plant_fleet(spec)
        self.technologies = list(dict.fromkeys(self.fleet.technology))
        self._tech_idx = {
            t: np.flatnonzero(np.asarray(self.fleet.technology) == t) for t in self.technologies
        }
        self.storage = storage_population(spec)
        self._soh_factor = storage_soh_factor(spec)
        self._named_storage = [
            (i, s.name) for i, s in enumerate(spec.storage) if s.name is not None
        ]
        self.elec_spec = electrolyser_population(spec)
        self.elec_state = el.initial_state(self.elec_spec) if self.elec_spec else None
        self.export_cap_w = spec.export_capacity_mw * 1e6
        self.storage_cost = (
            -np.inf
            if spec.storage_discharge_cost_jpy_per_kwh is None
            else spec.storage_discharge_cost_jpy_per_kwh
        )
        self.storage_charge_cost = (
            -np.inf
            if spec.storage_charge_cost_jpy_per_kwh is None
            else spec.storage_charge_cost_jpy_per_kwh
        )
        self.prev_output_w: FloatArray | None = None
        self.tree = None
        if spec.distribution is not None:
            d = spec.distribution
            imp = d.import_capacity_mw * 1e6 if d.import_capacity_mw else np.inf
            exp = d.export_capacity_mw * 1e6 if d.export_capacity_mw else np.inf
            self.tree = nw.node_tree([-1], imp, exp, names=["area_substation"], kind=["substation"])
        self._rows: list[dict[str, float]] = []  # this hook's columns, tick by tick
        self._stored_before: list[float] = []  # grid storage energy where each tick starts

    # ------------------------------------------------------------------ per tick
    def on_tick(self, world: World, result: TickResult) -> dict[str, float]:
        k = result.k
        dt = self.tick_s
        to_w = SECONDS_PER_HOUR / dt
        site_imp = result.flows_wh["grid_import_wh"] * to_w
        site_exp = result.flows_wh["grid_export_wh"] * to_w
        demand = float(self.background_w[k] + self.data_centre_w[k] + site_imp)
        renewable = float(self.wind_w[k] + self.utility_pv_w[k] + site_exp)

        stored_before = float(self.storage.energy_wh.sum()) if self.storage is not None else 0.0
        self._stored_before.append(stored_before)
        e_hi = np.zeros(0)
        if self.elec_spec is not None:
            _, e_hi = el.feasible_power_w(self.elec_spec, self.elec_state, dt)
        res, self.storage = dp.dispatch_tick(
            self.fleet,
            self.prev_output_w,
            demand,
            renewable,
            dt,
            self.storage,
            export_capacity_w=float(e_hi.sum()) + self.export_cap_w,
            carbon_price_jpy_per_t_co2=float(self.carbon_price_jpy_per_t[k]),
            storage_discharge_cost_jpy_per_kwh=self.storage_cost,
            storage_charge_cost_jpy_per_kwh=self.storage_charge_cost,
        )
        gen = np.asarray(res.plant_generation_w, dtype=float)
        self.prev_output_w = gen
        sink = float(res.export_w)  # electrolysers + interconnector
        elec_w = 0.0
        h2_kg = 0.0
        if self.elec_spec is not None:
            req = fill_electrolysers(self.elec_spec, e_hi, sink)
            self.elec_state, ef = el.step(self.elec_state, self.elec_spec, req, dt)
            elec_w = float(ef.power_w.sum())
            h2_kg = float(ef.h2_produced_kg.sum())
        rest = max(sink - elec_w, 0.0)
        export = min(rest, self.export_cap_w)
        rest -= export
        curt0 = float(res.curtailment_w)
        curt = curt0 + min(rest, max(renewable - curt0, 0.0))
        overgen = float(res.overgeneration_w) + rest - (curt - curt0)
        # Where the electrolysers' energy came from: the same tick without them.  Storage
        # charges before the electrolysers and plants do not see them, so only the split of
        # the surplus between export, curtailment and overgeneration would differ.
        surplus = sink + curt0 + float(res.overgeneration_w)
        export_cf = min(surplus, self.export_cap_w)
        curt_cf = min(surplus - export_cf, max(renewable, 0.0))
        overgen_cf = surplus - export_cf - curt_cf
        storage_w = float(res.storage_power_w)
        unserved = float(res.unserved_w)
        plants_w = float(gen.sum())

        supply = plants_w + renewable - curt - storage_w + unserved
        use = demand + elec_w + export + overgen
        err = supply - use
        scale = max(demand, renewable, plants_w, 1.0)
        if abs(err) > BALANCE_REL_TOL * scale + 1e-6:
            raise SimulationError(
                f"system energy balance broken in tick {k}: "
                f"{err:.6g} W (supply {supply:.6g}, use {use:.6g})"
            )

        co2_g = float(res.co2_g)
        cost = float(res.cost_jpy)
        served_kwh = (demand - unserved) * dt / SECONDS_PER_HOUR / 1000.0
        cost_per_kwh = cost / served_kwh if served_kwh > 1e-3 else 0.0
        if self.storage is not None:
            soc = max(
                float(self.storage.energy_wh.sum() / self.storage.spec.capacity_wh.sum()), 0.0
            )
        else:
            soc = float("nan")

        cols: dict[str, float] = {
            "system_demand_w": demand,
            "system_background_demand_w": float(self.background_w[k]),
            "system_data_centre_w": float(self.data_centre_w[k]),
            "system_site_import_w": site_imp,
            "system_site_export_w": site_exp,
            "system_wind_w": float(self.wind_w[k]),
            "system_utility_pv_w": float(self.utility_pv_w[k]),
            "system_residual_demand_w": demand - renewable,
        }
        for t in self.technologies:  # loop over technologies, not units
            p = float(gen[self._tech_idx[t]].sum())
            cols[f"system_{t}_w"] = p
        cols.update(
            {
                "system_plants_w": plants_w,
                "system_storage_w": storage_w,
                "system_storage_soc": soc,
                "system_electrolyser_w": elec_w,
                # each >= 0 by construction; max() drops the float noise (-1e-8 W)
                "system_electrolyser_curtailment_avoided_w": max(curt_cf - curt, 0.0),
                "system_electrolyser_export_displaced_w": max(export_cf - export, 0.0),
                "system_electrolyser_overgeneration_avoided_w": max(overgen_cf - overgen, 0.0),
                "system_h2_kg": h2_kg,
                "system_export_w": export,
                "system_curtailment_w": curt,
                "system_unserved_w": unserved,
                "system_overgeneration_w": overgen,
                "system_co2_g_per_kwh": float(res.co2_intensity_g_per_kwh),
                "system_co2_kg": co2_g / 1000.0,
                "system_carbon_price_jpy_per_t": float(self.carbon_price_jpy_per_t[k]),
                "system_carbon_cost_jpy": co2_g / 1e6 * float(self.carbon_price_jpy_per_t[k]),
                "system_fiscal_year": float(self.fiscal_year[k]),
                "system_cost_jpy": cost,
                "system_cost_jpy_per_kwh": cost_per_kwh,
                "system_balance_error_w": err,
            }
        )
        if self.storage is not None:
            # grid storage's own books: storage_w · h = loss · h + Δstored
            stored = float(self.storage.energy_wh.sum())
            cols["system_storage_stored_wh"] = stored
            cols["system_storage_loss_w"] = storage_w - (stored - stored_before) * to_w
        if self._named_storage and self.storage is not None:
            unit_w = (
                res.storage_unit_power_w
                if res.storage_unit_power_w is not None
                else np.zeros(self.storage.spec.n)
            )
            charging = np.maximum(unit_w, 0.0)
            total = float(charging.sum())
            # surplus charging is shared over the units as their charging power is
            share = float(res.storage_surplus_charge_w) / total if total > 0 else 0.0
            soh = self._soh_factor * self.storage.state.state_of_health(self.storage.spec)
            cols["system_storage_absorbed_w"] = float(res.storage_surplus_charge_w)
            for i, name in self._named_storage:
                cols[f"system_storage_{name}_w"] = float(unit_w[i])
                cols[f"system_storage_{name}_absorbed_w"] = float(charging[i]) * share
                cols[f"system_storage_{name}_soh"] = float(soh[i])
                cols[f"system_storage_{name}_stored_wh"] = float(self.storage.energy_wh[i])
        if self.tree is not None:
            rep = nw.check_capacity(self.tree, np.array([site_imp - site_exp]), dt)
            cols["system_substation_overload_w"] = float(rep.overload_w[0])

        self._rows.append(cols)
        return cols

    # ------------------------------------------------------------------ end of run
    def kpi_facts(self, first_tick: int = 0) -> dict:
        """What the KPIs need beyond the columns (written to the Parquet metadata);
        ``first_tick``: the first recorded tick (after a warm-up)."""
        rated = float(self.elec_spec.rated_power_w.sum()) if self.elec_spec else 0.0
        units = [
            {
                "name": name,
                "energy_mwh": self.spec.storage[i].energy_mwh,
                "power_mw": self.spec.storage[i].power_mw,
                "initial_soh": self.spec.storage[i].initial_soh,
                "capex_jpy_per_kwh": self.spec.storage[i].capex_jpy_per_kwh,
                "lifetime_years": self.spec.storage[i].lifetime_years,
            }
            for i, name in self._named_storage
        ]
        return {
            "technologies": self.technologies,
            "electrolyser_rated_w": rated,
            "storage_units": units,
            # grid storage energy where the first recorded tick starts [Wh]
            "storage_stored_initial_wh": (
                self._stored_before[first_tick]
                if self.storage is not None and len(self._stored_before) > first_tick
                else 0.0
            ),
            "carbon_price_jpy_per_t": float(self.carbon_price_jpy_per_t.mean())
            if self.carbon_price_jpy_per_t.size
            else 0.0,
        }

    def kpis(self) -> dict[str, float]:
        """The system KPIs of the ticks so far, from this hook's own columns (the same
        function computes them from ``timeseries.parquet``: experiment/kpis.py)."""
        from cps_sim.experiment.kpis import system_kpis_from

        names = set().union(*self._rows) if self._rows else set()
        cols = {c: np.array([r.get(c, np.nan) for r in self._rows]) for c in names}
        return system_kpis_from(
            lambda c: cols[c] if c in cols else np.zeros(len(self._rows)),
            lambda c: c in cols,
            len(self._rows),
            self.tick_s / SECONDS_PER_HOUR,
            self.kpi_facts(),
        )


def build_system(scenario: object, world: World, spec: SystemSpec | None = None) -> SystemHook:
    """The system tick hook of a scenario (``scenario.system``) or of an explicit spec."""
    if spec is None:
        spec = getattr(scenario, "system", None)
    if spec is None:
        raise ValueError("the scenario has no 'system:' block")
    return SystemHook(spec, world)
