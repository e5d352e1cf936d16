"""Build a World from a validated Scenario: sample populations, bind exogenous inputs."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from cps_sim.core.clock import Clock, tick_index
from cps_sim.core.rng import RngStreams
from cps_sim.core.units import SECONDS_PER_DAY
from cps_sim.models import battery as bat
from cps_sim.models import solar
from cps_sim.scenario.distributions import sample
from cps_sim.scenario.schema import Scenario, SiteGroupSpec
from cps_sim.world.exogenous import LoadBlocks, RunWeather, build_weather, pv_unit_profiles
from cps_sim.world.group import SiteGroup
from cps_sim.world.populations import (
    REGISTRY,
    BatteryPopulation,
    EvPopulation,
    Population,
    SiteInputs,
)
from cps_sim.world.populations.base import BuildContext
from cps_sim.world.prices import tick_carbon_prices, tick_prices
from cps_sim.world.world import GroupBinding, World


def _orientation(spec, gen, n: int, step_deg: float) -> np.ndarray:
    """PV tilt or azimuth of ``n`` sites [deg]: a fixed value or a choice among values as
    given; draws from a continuous distribution binned to ``step_deg``, so a population
    costs one profile per distinct orientation."""
    values = sample(spec, gen, n)
    if isinstance(spec, int | float) or getattr(spec, "distribution", None) == "choice":
        return np.asarray(values, dtype=float)
    return np.round(values / step_deg) * step_deg


def _has(rng: RngStreams, stream: str, n: int, share: float) -> np.ndarray:
    return rng.generator(stream).random(n) < share


def _catalog_fleet(
    e, m: int, rng: RngStreams, stream: str, cap, charger, cons, v2x, eff, taper, path: str
):
    """Per-vehicle parameters from a fleet mix of catalog classes (devices/ev)."""
    from cps_sim.core.errors import ScenarioError
    from cps_sim.models.ev_physics import load_catalog

    catalog = load_catalog()
    names = list(e.models)
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise ScenarioError.single(
            None,
            f"{path}.ev.models",
            f"unknown vehicle class {unknown[0]!r}; the catalog has: {', '.join(sorted(catalog))}",
        )
    w = np.asarray([e.models[n] for n in names], dtype=float)
    pick = rng.generator(f"{stream}/model").choice(len(names), size=m, p=w / w.sum())
    given = e.model_fields_set

    def col(attr: str, scale: float) -> np.ndarray:
        return np.asarray([getattr(catalog[n], attr) * scale for n in names])[pick]

    if "capacity_kwh" not in given:
        cap = col("capacity_kwh", 1000.0)
    if "consumption_kwh_per_100km" not in given:
        cons = col("consumption_kwh_per_100km", 10.0)
    charger = np.minimum(charger, col("ac_max_kw", 1000.0))
    if "v2x_kw" not in given:
        v2x = np.where(
            np.asarray([catalog[n].v2x != "none" for n in names])[pick],
            col("v2x_max_kw", 1000.0),
            0.0,
        )
    if "charge_efficiency" not in given:
        eff = col("charge_efficiency", 1.0)
    if e.taper_soc is None:
        taper = col("taper_soc", 1.0)
    # the pack's taper line: its DC (or AC, if higher) limit (models.ev_physics)
    line = np.maximum(col("dc_max_kw", 1000.0), col("ac_max_kw", 1000.0))
    return cap, charger, cons, v2x, eff, taper, line


def build_group(
    spec: SiteGroupSpec,
    site_offset: int,
    ev_id_offset: int,
    rng: RngStreams,
    scenario: Scenario,
    weather: RunWeather,
    path: str = "sites[0]",
    sessions=None,
) -> SiteGroup:
    n = spec.count
    base = f"sites/{spec.name}"
    # PV (dense per site; 0 W where none): capacity × a unit profile per orientation
    pv_orient = np.zeros(n, dtype=np.int64)
    ac = np.full(n, np.inf)
    if spec.pv is not None:
        pv = spec.pv
        has_pv = _has(rng, f"{base}/pv/has", n, pv.share)
        cap = sample(pv.capacity_kw, rng.generator(f"{base}/pv/capacity_kw"), n) * 1000.0
        pv_cap = np.where(has_pv, cap, 0.0)
        if pv.model == "simple":
            # foundation model per W of DC capacity (clipping applied per site below)
            unit = solar.simple_ac_power_w(1.0, weather.ghi_w_m2, pv.performance_ratio, np.inf)[
                :, None
            ]
            if pv.inverter_kw:
                ac[:] = pv.inverter_kw * 1000.0
        else:
            tilt = _orientation(pv.tilt_deg, rng.generator(f"{base}/pv/tilt_deg"), n, 5.0)
            az = np.mod(
                _orientation(pv.azimuth_deg, rng.generator(f"{base}/pv/azimuth_deg"), n, 15.0),
                360.0,
            )
            pairs = np.column_stack([tilt, az])
            pairs[~has_pv] = -1.0
            uniq, pv_orient = np.unique(pairs, axis=0, return_inverse=True)
            pv_orient = pv_orient.reshape(-1)
            real = uniq[:, 0] >= 0
            unit = np.zeros((len(weather.ghi_w_m2), uniq.shape[0]))
            if real.any():
                unit[:, real] = pv_unit_profiles(
                    weather,
                    scenario,
                    uniq[real, 0],
                    uniq[real, 1],
                    pv.dc_ac_ratio,
                    pv.losses_percent,
                )
    else:
        pv_cap = np.zeros(n)
        unit = np.zeros((len(weather.ghi_w_m2), 1))
    # Battery (dense; capacity 0 where none)
    b = spec.battery
    if b is not None:
        has_b = _has(rng, f"{base}/battery/has", n, b.share)
        cap_wh = np.where(
            has_b,
            sample(b.capacity_kwh, rng.generator(f"{base}/battery/capacity_kwh"), n) * 1000.0,
            0.0,
        )
        p_w = np.where(
            has_b, sample(b.power_kw, rng.generator(f"{base}/battery/power_kw"), n) * 1000.0, 0.0
        )
        spec_b = bat.make_spec(
            cap_wh,
            p_w,
            n=n,
            charge_efficiency=b.charge_efficiency,
            discharge_efficiency=b.discharge_efficiency,
            soc_min=b.soc_min,
            soc_max=b.soc_max,
            taper_soc=b.taper_soc,
            self_discharge_per_month=b.self_discharge_per_month,
        )
        soc0 = sample(b.initial_soc, rng.generator(f"{base}/battery/initial_soc"), n)
        e0 = cap_wh * np.clip(soc0, b.soc_min, b.soc_max)
        control = b.control
    else:
        spec_b = bat.no_batteries(n)
        e0 = np.zeros(n)
        control = "idle"
    # EVs (sorted by site)
    evs = None
    e = spec.ev
    session_events = None
    if e is not None and sessions is not None:  # ev.sessions: one vehicle per session
        from cps_sim.world.sessions import session_fleet

        evs, session_events = session_fleet(e, sessions, n, ev_id_offset, rng, base)
    elif e is not None:
        if e.per_site is not None:
            ev_site = np.repeat(np.arange(n, dtype=np.int64), e.per_site)
        else:
            ev_site = np.flatnonzero(_has(rng, f"{base}/ev/has", n, e.share)).astype(np.int64)
        m = ev_site.size
        cap = sample(e.capacity_kwh, rng.generator(f"{base}/ev/capacity_kwh"), m) * 1000.0
        charger = sample(e.charger_kw, rng.generator(f"{base}/ev/charger_kw"), m) * 1000.0
        cons = (
            sample(e.consumption_kwh_per_100km, rng.generator(f"{base}/ev/consumption"), m) * 10.0
        )
        v2x = sample(e.v2x_kw, rng.generator(f"{base}/ev/v2x_kw"), m) * 1000.0
        eff = np.full(m, e.charge_efficiency)
        taper = np.full(m, e.taper_soc if e.taper_soc is not None else 1.0)
        line = charger  # without a catalog class the taper line runs through the charger
        if e.models:
            cap, charger, cons, v2x, eff, taper, line = _catalog_fleet(
                e, m, rng, f"{base}/ev", cap, charger, cons, v2x, eff, taper, path
            )
        evs = EvPopulation(
            site=ev_site,
            capacity_wh=cap,
            energy_wh=cap
            * np.minimum(
                sample(e.initial_soc, rng.generator(f"{base}/ev/initial_soc"), m), e.soc_max
            ),
            charger_w=charger,
            efficiency=eff,
            energy_max_wh=cap * e.soc_max,
            target_wh=cap * e.departure_soc_target,
            consumption_wh_per_km=cons,
            plugged=np.ones(m, dtype=bool),  # at home; place_at_start sends some away
            away_until_s=np.full(m, -np.inf),
            ids=np.arange(ev_id_offset, ev_id_offset + m, dtype=np.int64),
            v2x_w=v2x,
            energy_min_wh=cap * e.v2x_soc_min,
            taper_soc=taper,
            taper_line_w=np.maximum(line, charger),
        )
    pops: list[Population] = [
        SiteInputs(n, pv_cap, pv_orient, unit, ac),
        BatteryPopulation(spec_b, e0, control),
    ]
    if evs is not None:
        pops.append(evs)
    # every other registered population builds itself from the scenario
    ctx = BuildContext(
        spec=spec, n=n, stream=base, rng=rng, scenario=scenario, weather=weather, path=path
    )
    for cls in REGISTRY:
        if cls in (SiteInputs, BatteryPopulation, EvPopulation):
            continue
        pop = cls.build(ctx)
        if pop is not None:
            pops.append(pop)
    g = spec.grid
    group = SiteGroup(
        spec.name,
        n,
        site_offset,
        pops,
        import_limit_w=np.full(n, g.import_limit_kw * 1000.0 if g.import_limit_kw else np.inf),
        export_limit_w=np.full(
            n, g.export_limit_kw * 1000.0 if g.export_limit_kw is not None else np.inf
        ),
    )
    if session_events is not None:
        group.schedule(*session_events)
    return group


def _sessions(spec: SiteGroupSpec, scenario: Scenario, base_dir: Path | None, path: str):
    """The group's charging sessions (``ev.sessions``) inside the run, or None."""
    if spec.ev is None or spec.ev.sessions is None:
        return None
    from cps_sim.data.ev_sessions import clip_to_run, read_sessions
    from cps_sim.scenario.loader import resolve_data_path

    f = resolve_data_path(
        spec.ev.sessions.csv, base_dir or Path.cwd(), field=f"{path}.ev.sessions.csv"
    )
    return clip_to_run(read_sessions(f, scenario.start, scenario.timezone), scenario.duration_s)


def _measured_load(
    spec: SiteGroupSpec, scenario: Scenario, clock: Clock, base_dir: Path | None, path: str
) -> dict:
    """``load.profile: csv``: the measured shape per tick (W per kWh/a), else nothing."""
    load = spec.load
    if load.profile != "csv":
        return {}
    from cps_sim.data.load_profiles import profile_w_per_kwh, read_load_profiles
    from cps_sim.scenario.loader import resolve_data_path

    f = resolve_data_path(
        load.profile_csv or "", base_dir or Path.cwd(), field=f"{path}.load.profile_csv"
    )
    df = read_load_profiles(f, scenario.timezone, load.profile_unit)
    ticks = clock.index(np.arange(scenario.n_ticks) * scenario.tick_s)
    return {"series_w_per_kwh": profile_w_per_kwh(df, load.profile_column, ticks, scenario.tick_s)}


def _place_evs_at_start(
    group: SiteGroup,
    spec: SiteGroupSpec,
    scenario: Scenario,
    clock: Clock,
    rng: RngStreams,
    weather: RunWeather,
) -> int:
    """Vehicles away at the start per their trips of the days begun before it
    (:func:`cps_sim.world.trips.place_at_start`): the day before the start's local day,
    and the start's own day when the start is not a local midnight."""
    from cps_sim.core.calendar import is_day_off
    from cps_sim.world.trips import place_at_start

    e = spec.ev
    midnight0 = clock.local_midnight_s(0.0)
    before = clock.local_midnight_s(midnight0 - 1.0)
    days = [(-1, before)] + ([(0, midnight0)] if midnight0 < 0.0 else [])

    def trips(midnight_s: float):
        off = bool(is_day_off(clock.index(np.array([midnight_s])), scenario.holidays)[0])
        return e.trips.weekend if off else e.trips.weekday

    temp = weather.temp_air_c
    tick_s = scenario.tick_s

    def temp_at(t_s: np.ndarray) -> np.ndarray:  # as World._temp_at (held before the run)
        return temp[tick_index(t_s, tick_s, len(temp))]

    return place_at_start(
        group,
        trips,
        days,
        rng,
        f"sites/{spec.name}/ev/trips",
        temp_at if e.temperature_dependent_consumption else None,
    )


def build_world(scenario: Scenario, base_dir: Path | None = None) -> World:
    """Sample every population and bind exogenous inputs; ``base_dir`` resolves data files.

    With ``scenario.warmup_days`` the world runs :meth:`Scenario.with_warmup` (from
    ``start`` minus the warm-up) and ``world.warmup_ticks`` tells the recorder how many
    ticks to leave out."""
    if scenario.warmup_days:
        from dataclasses import replace

        from cps_sim.core.errors import ScenarioError

        first = scenario.start - _dt.timedelta(days=scenario.warmup_days)
        try:
            world = build_world(scenario.with_warmup(), base_dir)
        except ScenarioError as exc:  # e.g. a data file that does not cover the warm-up
            hint = (
                f" (warmup_days: {scenario.warmup_days} runs from {first.isoformat()}; "
                "data files must cover the warm-up too, or set warmup_days: 0)"
            )
            raise ScenarioError(
                exc.file, [replace(i, message=i.message + hint) for i in exc.issues]
            ) from None
        world.warmup_ticks = round(scenario.warmup_days * SECONDS_PER_DAY / scenario.tick_s)
        return world
    clock = Clock(scenario.start, scenario.timezone)
    rng = RngStreams(scenario.seed)
    ticks_per_day = round(SECONDS_PER_DAY / scenario.tick_s)
    weather = build_weather(scenario, clock, rng, base_dir)
    bindings = []
    site_offset = 0
    ev_offset = 0
    for spec in scenario.sites:
        path = f"sites[{len(bindings)}]"
        group = build_group(
            spec,
            site_offset,
            ev_offset,
            rng,
            scenario,
            weather,
            path,
            _sessions(spec, scenario, base_dir, path),
        )
        n = spec.count
        base = f"sites/{spec.name}"
        annual_wh = (
            sample(spec.load.annual_kwh, rng.generator(f"{base}/load/annual_kwh"), n) * 1000.0
        )
        shift_min = np.round(
            rng.generator(f"{base}/load/shift").uniform(
                -spec.load.shift_max_s, spec.load.shift_max_s, n
            )
            / 60.0
        )
        loads = LoadBlocks(
            clock,
            scenario.tick_s,
            ticks_per_day,
            annual_wh,
            spec.load.profile,
            shift_min,
            spec.load.noise_cv,
            scenario.holidays,
            rng,
            f"{base}/load",
            scenario.n_ticks,
            {
                "shifts": spec.load.factory_shifts,
                "annual_growth_rate": spec.load.annual_growth_rate,
                **_measured_load(spec, scenario, clock, base_dir, path),
            },
        )
        if group.evs is not None and group.evs.n and spec.ev.sessions is None:
            _place_evs_at_start(group, spec, scenario, clock, rng, weather)
        if spec.battery is not None and spec.battery.ageing:
            from cps_sim.world.ageing import BatteryAgeing

            group.battery_ageing = BatteryAgeing.for_group(group, spec.battery.ageing_preset)
        bindings.append(GroupBinding(spec, group, loads))
        site_offset += n
        ev_offset += group.evs.n if group.evs is not None else 0
    world = World(scenario, clock, rng, bindings, weather)
    world.base_dir = base_dir  # data files of hooks (system demand from a TSO file)
    world.import_price_jpy_per_kwh, world.export_price_jpy_per_kwh = tick_prices(
        scenario, clock, base_dir
    )
    world.carbon_price_jpy_per_t = tick_carbon_prices(scenario, clock)
    if scenario.system is not None:
        from cps_sim.grid.system import build_system

        world.tick_hooks.append(build_system(scenario, world))
    world.base_dir = base_dir
    if scenario.balancing_group is not None:
        from cps_sim.market.balancing_group import build_balancing_group

        world.tick_hooks.append(build_balancing_group(scenario, world, base_dir=base_dir))
    if scenario.powerflow is not None:
        from cps_sim.grid.powerflow import build_powerflow

        world.tick_hooks.append(build_powerflow(scenario, world))
    return world
