"""What the oracle knows: a run's exogenous inputs, read off a world built like the run's.

:func:`site_inputs` builds a second world from the same scenario and seed (the
run's populations, by construction: every stochastic quantity comes from its own
named stream, ``core/rng.py``, so drawing them again changes none of the run's
draws) and reads, without integrating any physics:

* per tick and site, the load (the per-tick populations' rule power included — water
  heaters and room air-conditioners depend on load, PV, weather and their own state,
  never on the controlled devices) and the PV potential, by calling the world's own
  ``begin_tick`` and closing each tick as the settlement does (``_tick_columns``);
* the EV trips (departure and return times, trip energies) by calling the trip
  sampler ``world.trips.plan_day`` for every local day exactly as the world's trip
  planner does;
* the deferrable-process windows, exactly as the world's process-window loop;
* prices, carbon price, limits, battery and EV parameters and initial states.

The result is one :class:`~cps_sim.control.oracle.SiteInputs` per site group.
``tests/integration/test_oracle.py`` checks that the trips read here are the
departures and returns that a run logs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cps_sim.control.oracle import BatteryData, EvData, JobData, SiteInputs, TripEvents
from cps_sim.control.oracle.data import HpwhData
from cps_sim.core.calendar import is_day_off
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from cps_sim.world.trips import plan_day
from cps_sim.world.world import World


def _local_midnights(world: World) -> list[float]:
    """The local midnights at which the world's day loops run (DST-safe)."""
    clock = world.clock
    end = world.scenario.duration_s
    out = []
    midnight = clock.local_midnight_s(0.0)
    while midnight < end:
        out.append(midnight)
        nxt = clock.local_midnight_s(midnight + 36 * 3600.0)
        if nxt >= end:
            break
        midnight = nxt
    return out


def _trips(world: World, binding) -> TripEvents:
    g = binding.group
    spec = binding.spec.ev
    sc = world.scenario
    clock = world.clock
    start_date = clock.to_datetime(0.0).date()
    stream = f"sites/{binding.spec.name}/ev/trips"
    temp_at = world._temp_at if spec.temperature_dependent_consumption else None
    for midnight in _local_midnights(world):
        day = clock.to_datetime(max(midnight, 0.0))
        day_index = (day.date() - start_date).days
        off = bool(is_day_off(clock.index(np.array([max(midnight, 0.0)])), sc.holidays)[0])
        plan_day(
            g,
            spec.trips.weekend if off else spec.trips.weekday,
            day_index,
            midnight,
            0.0,
            world.rng,
            stream,
            temp_at,
        )
    return TripEvents(
        ev=g.pending_ev.copy(),
        time_s=g.pending_t.copy(),
        kind=g.pending_kind.copy(),
        trip_wh=g.pending_trip_wh.copy(),
    )


def _windows(world: World, binding) -> np.ndarray:
    d = binding.spec.deferrable
    sc = world.scenario
    end = sc.duration_s
    out = []
    for midnight in _local_midnights(world):
        t_open = midnight + d.window_start_h * 3600.0
        t_close = midnight + d.deadline_h * 3600.0
        working = d.days == "all" or not bool(
            is_day_off(world.clock.index(np.array([max(t_open, 0.0)])), sc.holidays)[0]
        )
        if working and t_open >= 0.0 and t_close <= end:
            out.append((t_open, t_close))
    return np.asarray(out, float).reshape(-1, 2)


def _hpwh_pop(g):
    return next((p for p in g.populations if p.key == "hpwh"), None)


def _hpwh_data(world: World, g, pop, temp0: np.ndarray, draw_wh: np.ndarray) -> HpwhData:
    """The group's water heaters for the LP (per site; see ``control.oracle.HpwhData``)."""
    from cps_sim.models import heat_pump as hp

    n, t_n = g.n, world.n_ticks
    spec = pop.spec
    cold = 17.0  # the model's default mains temperature (models.heat_pump.step)
    amb = np.asarray(world.weather.temp_air_c[:t_n], float)
    site = pop.site
    cap = spec.capacity_wh_per_k
    lo, top = spec.min_usable_c, spec.setpoint_c
    # the comfort floor is the unit's own reserve (where its rule heats at full power)
    comfort = lo + pop.reserve_fraction * (top - lo)

    def per_site(v, fill=0.0):
        out = np.full((n, *np.shape(v)[1:]), fill)
        out[site] = v
        return out

    has = np.zeros(n, bool)
    has[site] = True
    return HpwhData(
        has=has,
        capacity_wh_per_k=per_site(cap, 1.0),
        ua_w_per_k=per_site(spec.tank_ua_w_per_k),
        heat_max_w=per_site(spec.heat_output_max_w),
        stored_wh_th=per_site(cap * (temp0 - cold)),
        floor_wh_th=per_site(cap * np.maximum(lo - cold, 0.0)),
        comfort_wh_th=per_site(cap * (comfort - cold)),
        max_wh_th=per_site(cap * (top - cold)),
        ambient_c=amb,
        cold_water_c=cold,
        cop=per_site(hp.cop(spec, amb[:, None], cold).T, 1.0),
        draw_wh_th=per_site(draw_wh),
    )


def site_inputs(
    scenario: Scenario,
    base_dir: Path | None = None,
    world: World | None = None,
    hpwh: bool = True,
) -> dict[str, SiteInputs]:
    """Oracle inputs per site group (a fresh world is built unless one is given; a given
    world must not have been started).  ``hpwh``: the heat-pump water heaters are
    scheduled (their power leaves the load; tank, COP and draws go to ``SiteInputs.hpwh``),
    else their rule's power stays in the load."""
    world = world if world is not None else build_world(scenario, base_dir)
    t_n = world.n_ticks
    loads = {g.name: np.empty((g.n, t_n)) for g in world.groups}
    pvs = {g.name: np.empty((g.n, t_n)) for g in world.groups}
    pops = {g.name: _hpwh_pop(g) for g in world.groups} if hpwh else {}
    pops = {k: p for k, p in pops.items() if p is not None and p.site.size}
    temp0 = {k: p.state.tank_temp_c.copy() for k, p in pops.items()}
    draws = {k: np.empty((p.site.size, t_n)) for k, p in pops.items()}
    tick_h = world.tick_s / 3600.0
    per_tick = any(getattr(g, "tick_pops", None) for g in world.groups)
    for k in range(t_n):
        world.begin_tick(k)
        for g in world.groups:
            loads[g.name][:, k] = g.load_w
            pvs[g.name][:, k] = g.pv_w
            p = pops.get(g.name)
            if p is not None:  # scheduled: the rule's power is not load
                np.subtract.at(loads[g.name][:, k], p.site, p.power_w)
                draws[g.name][:, k] = p.draw_w_th * tick_h
        if per_tick:  # water-heater tanks, rooms: advance with their rules' power
            world._tick_columns(k)
    co2 = np.full(t_n, float(scenario.emissions.grid_co2_g_per_kwh))
    carbon = co2 * world.carbon_price_jpy_per_t / 1e6
    out: dict[str, SiteInputs] = {}
    for b in world.bindings:
        g = b.group
        battery = BatteryData.from_spec(g.battery, g.battery_energy_wh)
        evs = trips = None
        e = g.evs
        if e is not None and e.n:
            evs = EvData(
                site=e.site.copy(),
                capacity_wh=e.capacity_wh.copy(),
                charger_w=e.charger_w.copy(),
                v2x_w=e.v2x_w.copy(),
                efficiency=e.efficiency.copy(),
                energy_max_wh=e.energy_max_wh.copy(),
                energy_min_wh=e.energy_min_wh.copy(),
                energy_wh=e.energy_wh.copy(),
                target_wh=e.target_wh.copy(),
                energy_taper_wh=e.energy_taper_wh.copy(),
                taper_line_w=e.taper_line_w.copy(),
            )
            trips = _trips(world, b)
        jobs = None
        if g.jobs:
            jobs = JobData(
                max_w=g.deferrable.max_w.copy(),
                energy_wh=g.deferrable.energy_wh.copy(),
                windows_s=_windows(world, b),
            )
        out[g.name] = SiteInputs(
            tick_s=float(world.tick_s),
            load_w=loads[g.name],
            pv_w=pvs[g.name],
            import_price_jpy_per_kwh=world.import_price_jpy_per_kwh.copy(),
            export_price_jpy_per_kwh=world.export_price_jpy_per_kwh.copy(),
            carbon_jpy_per_kwh=carbon,
            co2_g_per_kwh=co2,
            import_limit_w=g.grid_import_limit_w.copy(),
            export_limit_w=g.grid_export_limit_w.copy(),
            battery=battery,
            evs=evs,
            trips=trips,
            jobs=jobs,
            hpwh=(
                _hpwh_data(world, g, pops[g.name], temp0[g.name], draws[g.name])
                if g.name in pops
                else None
            ),
        )
    return out
