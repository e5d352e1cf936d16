"""The oracle of a scenario: solve it, replay it through the engine, and measure regret.

* :func:`solve_oracle` — the inputs of the run (``oracle_inputs.site_inputs``)
  and one LP per site (``control.oracle.solve``) for every site group;
* :func:`replay` — the schedule sent by a :class:`~cps_sim.control.schedule.ScheduleController`
  per group through the ordinary controller path of the same engine (the
  scenario's own controllers, EMS and VPP removed; an ideal bus);
* :func:`oracle_kpis` — the LP's KPIs under the run's KPI names;
* :func:`regret_kpis` — a run's gap to the oracle on the objective (``regret``,
  ``regret_pct``) and on the objective with service shortfall priced in
  (``regret_penalised``), added to ``kpis.json`` of every run of a scenario with
  an ``oracle:`` block (so every sweep catalog row has them).

``cps-sim run --oracle`` writes the replay's results directory with the
``oracle_*`` KPIs, the replay-vs-LP agreement and ``oracle.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy

from cps_sim.control.oracle import Objective, OracleSchedule, SiteInputs, solve
from cps_sim.control.schedule import ScheduleController
from cps_sim.experiment.oracle_inputs import site_inputs
from cps_sim.experiment.progress import TickProgress, progress_enabled
from cps_sim.experiment.recorder import Recorder
from cps_sim.scenario.oracle_schema import OracleSpec
from cps_sim.scenario.schema import Scenario

PRIMARY_KPI = {
    "cost": "cost_jpy",
    "co2": "co2_kg",
    "peak": "peak_site_import_kw",
    "curtailment": "curtailment_kwh",
}
UNIT = {"cost": "JPY", "co2": "kg", "peak": "kW", "curtailment": "kWh"}
AGREEMENT_REL_TOL = 1e-3  # LP objective vs replay (issue 13: within 0.1 %)


@dataclass
class OracleSolution:
    scenario: Scenario
    spec: OracleSpec
    objective: Objective
    inputs: dict[str, SiteInputs]
    schedules: dict[str, OracleSchedule]
    wall_time_s: float

    def kpis(self) -> dict[str, float]:
        return oracle_kpis(self)


def terminal_values(spec: OracleSpec, inputs: dict[str, SiteInputs]) -> tuple[float, float]:
    """Value of a stored kWh at the end, in the objective's unit and in JPY: the spec's,
    else the lowest import price of the run (cost: the cheapest price at which the energy
    could be bought back, so that neither filling storage at that price nor emptying it
    into export pays at the end) or the lowest grid intensity (co2); 0 for peak and
    curtailment."""
    inp = next(iter(inputs.values()))
    jpy = float(np.min(inp.import_price_jpy_per_kwh + inp.carbon_jpy_per_kwh))
    if spec.terminal_value_per_kwh is not None:
        v = float(spec.terminal_value_per_kwh)
        return v, v if spec.objective == "cost" else jpy
    default = {"cost": jpy, "co2": float(np.min(inp.co2_g_per_kwh)) / 1000.0}
    return default.get(spec.objective, 0.0), jpy


def terminal_cop(inputs: dict[str, SiteInputs]) -> float:
    """Mean COP of the scheduled water heaters in the last tick (0: none scheduled)."""
    cops = [i.hpwh.cop[i.hpwh.has, -1] for i in inputs.values() if i.hpwh is not None]
    cops = [c for c in cops if c.size]
    return float(np.mean(np.concatenate(cops))) if cops else 0.0


def objective_of(spec: OracleSpec, scenario: Scenario, inputs: dict[str, SiteInputs]) -> Objective:
    min_w = spec.min_current_a * scenario.control.voltage_v
    v, v_jpy = terminal_values(spec, inputs)
    return Objective(
        terminal_cop=terminal_cop(inputs),
        kind=spec.objective,
        unmet_penalty=spec.unmet_penalty,
        min_charge_w=min_w,
        taper=spec.taper,
        terminal_value=v,
        terminal_value_jpy_per_kwh=v_jpy,
    )


def solve_oracle(
    scenario: Scenario,
    spec: OracleSpec | None = None,
    *,
    base_dir: Path | None = None,
    quiet: bool = True,
) -> OracleSolution:
    """The perfect-foresight optimum of ``scenario`` (spec: the scenario's ``oracle:``
    block, else the defaults)."""
    spec = spec or scenario.oracle or OracleSpec()
    if scenario.warmup_days:  # the optimum and its replay start from the sampled state
        scenario = scenario.model_copy(update={"warmup_days": 0})
    t0 = time.perf_counter()
    inputs = site_inputs(scenario, base_dir, hpwh=spec.hpwh)
    obj = objective_of(spec, scenario, inputs)
    schedules = {}
    for name, inp in inputs.items():
        with TickProgress(
            max(1, -(-inp.n_sites // spec.chunk_sites)), f"oracle {name}", progress_enabled(quiet)
        ) as bar:
            schedules[name] = solve(
                inp,
                obj,
                chunk_sites=spec.chunk_sites,
                workers=spec.workers,
                on_chunk=lambda done, _total, bar=bar: bar.update(done),
            )
    return OracleSolution(scenario, spec, obj, inputs, schedules, time.perf_counter() - t0)


def _sum_kpi(kpis: dict[str, float], name: str) -> float:
    """A per-family KPI over every group (``name`` or ``<group>.name``), NaN as 0."""
    if name in kpis:
        v = kpis[name]
        return 0.0 if v != v else float(v)
    return float(sum(v for k, v in kpis.items() if k.endswith("." + name) and v == v))


def hpwh_heat_used_kwh_th(kpis: dict[str, float]) -> float:
    """Heat the water-heater tanks lost over the run [kWh_th]: hot water delivered + tank
    losses - heat put in (``hpwh_heat_used_kwh_th`` of the oracle; for a run from its
    KPIs, heat in = ``hpwh_cop_mean x heat_pump_kwh`` per group)."""
    if "hpwh_heat_used_kwh_th" in kpis:
        return float(kpis["hpwh_heat_used_kwh_th"])
    keys = [k for k in kpis if k == "heat_pump_kwh" or k.endswith(".heat_pump_kwh")]
    used = 0.0
    for k in keys:
        p = k[: -len("heat_pump_kwh")]
        el = kpis[k]
        cop = kpis.get(p + "hpwh_cop_mean", 0.0)
        heat_in = el * cop if el > 0 and cop == cop else 0.0
        used += kpis.get(p + "hot_water_delivered_kwh_th", 0.0)
        used += kpis.get(p + "hpwh_tank_loss_kwh_th", 0.0) - heat_in
    return used


def objective_value(kpis: dict[str, float], obj: Objective) -> float:
    """The objective the oracle minimises, from a run's KPIs: the objective's KPI plus
    ``terminal_value x (stored_initial_kwh - stored_final_kwh)``, plus, where the oracle
    schedules water heaters, ``terminal_value / terminal_cop x`` the tanks' heat used."""
    used = kpis["stored_initial_kwh"] - kpis["stored_final_kwh"]
    out = kpis[PRIMARY_KPI[obj.kind]] + obj.terminal_value * used
    if obj.terminal_cop > 0:
        out += obj.terminal_value / obj.terminal_cop * hpwh_heat_used_kwh_th(kpis)
    return out


def penalised(kpis: dict[str, float], obj: Objective) -> float:
    """:func:`objective_value` plus service shortfall priced at the penalty per kWh."""
    short = (
        kpis.get("ev_unmet_at_departure_kwh", 0.0)
        + kpis.get("ev_trip_shortfall_kwh", 0.0)
        + kpis.get("deferrable_unmet_kwh", 0.0)
        + (_sum_kpi(kpis, "hot_water_unmet_kwh_th") if obj.terminal_cop > 0 else 0.0)
    )
    return (
        objective_value(kpis, obj)
        + obj.penalty * short
        + obj.penalty * obj.unserved_factor * kpis.get("unserved_kwh", 0.0)
    )


def _hpwh_kpis(sol: OracleSolution) -> dict[str, float]:
    """The scheduled water heaters' energy, heat used and hot water not delivered."""
    pairs = [
        (sol.inputs[n], s)
        for n, s in sol.schedules.items()
        if sol.inputs[n].hpwh is not None and s.hpwh_w is not None
    ]
    if not pairs:
        return {}
    h = sol.scenario.tick_s / 3600.0
    el = sum(float(np.nansum(s.hpwh_w)) for _, s in pairs) * h / 1000.0
    heat_in = sum(float(s.hpwh_heat_in_wh_th.sum()) for _, s in pairs) / 1000.0
    stored0 = sum(float(i.hpwh.stored_wh_th[i.hpwh.has].sum()) for i, _ in pairs) / 1000.0
    stored1 = sum(float(s.hpwh_stored_final_wh_th.sum()) for _, s in pairs) / 1000.0
    return {
        "heat_pump_kwh": el,
        "hpwh_heat_in_kwh_th": heat_in,
        "hpwh_heat_used_kwh_th": stored0 - stored1,
        "hot_water_unmet_kwh_th": sum(float(s.hpwh_unmet_wh_th.sum()) for _, s in pairs) / 1000.0,
    }


def oracle_kpis(sol: OracleSolution) -> dict[str, float]:
    """KPIs of the LP schedule, named like a run's KPIs."""
    scheds = list(sol.schedules.values())
    tick_h = sol.scenario.tick_s / 3600.0

    def tot(attr: str) -> float:
        return float(sum(getattr(s, attr).sum() for s in scheds))

    imp_tick = sum(s.import_wh.sum(axis=0) for s in scheds)
    k = {
        "cost_jpy": tot("cost_jpy"),
        "energy_cost_jpy": tot("energy_cost_jpy"),
        "carbon_cost_jpy": tot("cost_jpy") - tot("energy_cost_jpy"),
        "co2_kg": tot("co2_kg"),
        "grid_import_kwh": tot("import_wh") / 1000.0,
        "grid_export_kwh": tot("export_wh") / 1000.0,
        "curtailment_kwh": tot("curtailment_wh") / 1000.0,
        "unserved_kwh": tot("unserved_wh") / 1000.0,
        "ev_unmet_at_departure_kwh": tot("ev_unmet_wh") / 1000.0,
        "ev_trip_shortfall_kwh": tot("ev_shortfall_wh") / 1000.0,
        "deferrable_unmet_kwh": tot("job_unmet_wh") / 1000.0,
        "peak_import_kw": float(np.max(imp_tick)) / 1000.0 / tick_h,
        "peak_site_import_kw": float(max(s.peak_kw.max(initial=0.0) for s in scheds)),
        "stored_initial_kwh": float(
            sum(
                i.battery.energy_wh.sum() + (i.evs.energy_wh.sum() if i.evs is not None else 0.0)
                for i in sol.inputs.values()
            )
        )
        / 1000.0,
        "stored_final_kwh": tot("stored_final_wh") / 1000.0,
        **_hpwh_kpis(sol),
        "lp_objective": tot("objective"),
        "lp_bound": tot("bound"),
        "solve_time_s": float(sum(s.solve_time_s for s in scheds)),
        "build_time_s": float(sum(s.build_time_s for s in scheds)),
        "wall_time_s": sol.wall_time_s,
        "variables": float(sum(s.n_variables for s in scheds)),
        "constraints": float(sum(s.n_constraints for s in scheds)),
        "floor_repairs": float(sum(s.floor_repairs for s in scheds)),
    }
    kind = sol.objective.kind
    k["objective"] = objective_value(k, sol.objective)
    k["penalised"] = penalised(k, sol.objective)
    if kind == "peak":  # per-site bounds; the KPI is the highest site peak
        k["bound"] = float(max(s.bound.max(initial=0.0) for s in scheds))
    else:
        k["bound"] = k["lp_bound"]
    return k


# ----------------------------------------------------------------------------- replay
def replay_scenario(scenario: Scenario) -> Scenario:
    """The scenario without its own controllers (EV strategies, EMS, VPP), on an ideal bus."""
    d = scenario.model_dump(mode="json")
    d["control"]["ev_strategy"] = None
    d["control"]["groups"] = {}
    d["control"]["transport"] = {"latency_s": 0.0, "jitter_s": 0.0, "loss": 0.0}
    d["ems"] = {}
    d["vpp"] = None
    d["oracle"] = None
    d["expect"] = []
    return Scenario.model_validate(d)


def replay(
    sol: OracleSolution, *, base_dir: Path | None = None, quiet: bool = True
) -> tuple[Recorder, dict[str, np.ndarray]]:
    """Run the oracle's schedule through the engine; returns the recorder and each
    group's metered net import per site and tick [Wh] (n, T)."""
    from cps_sim.experiment.run import simulate
    from cps_sim.world.wiring import start_controller

    sc = replay_scenario(sol.scenario)
    nets: dict[str, np.ndarray] = {}

    def setup(env: simpy.Environment, world) -> None:
        for g in world.groups:
            s = sol.schedules[g.name]
            g.track_site_net = True
            nets[g.name] = np.zeros((g.n, world.n_ticks))
            has_ev = g.evs is not None and g.evs.n
            has_b = bool((g.battery.capacity_wh > 0).any())
            has_h = s.hpwh_w is not None and bool(np.isfinite(s.hpwh_w).any())
            if not (has_ev or has_b or g.jobs or has_h):
                continue
            ctl = ScheduleController(
                world.tick_s,
                ev_setpoint_w=s.ev_setpoint_w if has_ev else None,
                battery_setpoint_w=s.battery_w if has_b else None,
                deferrable_setpoint_w=s.deferrable_w if g.jobs else None,
                hpwh_setpoint_w=s.hpwh_w if has_h else None,
                name=f"oracle_{g.name}",
            )
            start_controller(env, world, g.name, ctl, ttl_s=2.0 * world.tick_s)

    def on_tick(world, r) -> None:
        for g in world.groups:
            if g.last_site_net_wh is not None:
                nets[g.name][:, r.k] = g.last_site_net_wh

    rec = simulate(sc, quiet=quiet, base_dir=base_dir, setup=setup, on_tick=on_tick)
    return rec, nets


def agreement(
    sol: OracleSolution, replay_kpis: dict[str, float], nets: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """How closely the engine's replay reproduces the LP (objective and per-site flows)."""
    lp = oracle_kpis(sol)
    obj = sol.objective
    out = {}
    for name, a, b in (
        ("objective", lp["objective"], objective_value(replay_kpis, obj)),
        ("penalised", lp["penalised"], penalised(replay_kpis, obj)),
    ):
        diff = b - a
        out[f"{name}_diff"] = diff
        out[f"{name}_rel_diff"] = abs(diff) / max(abs(a), 1e-9)
    if nets is not None:
        worst = 0.0
        for name, s in sol.schedules.items():
            lp_net = s.import_wh - s.export_wh
            worst = max(worst, float(np.max(np.abs(nets[name] - lp_net), initial=0.0)))
        out["max_site_tick_net_diff_wh"] = worst
    tol = AGREEMENT_REL_TOL * max(abs(lp["objective"]), 1.0)
    out["within_0_1pct"] = float(abs(out["objective_diff"]) <= tol)
    return out


def regret_kpis(run_kpis: dict[str, float], sol: OracleSolution) -> dict[str, float]:
    """``oracle_*`` KPIs and the run's gap to them (positive: the run is worse)."""
    lp = oracle_kpis(sol)
    obj = sol.objective
    run_pen = penalised(run_kpis, obj)
    out = {
        f"oracle_{k}": v
        for k, v in lp.items()
        if k
        in (
            "cost_jpy",
            "co2_kg",
            "peak_site_import_kw",
            "peak_import_kw",
            "curtailment_kwh",
            "grid_import_kwh",
            "ev_unmet_at_departure_kwh",
            "stored_final_kwh",
            "objective",
            "penalised",
            "bound",
            "wall_time_s",
        )
    }
    out["oracle_terminal_value_per_kwh"] = obj.terminal_value
    out["objective"] = objective_value(run_kpis, obj)
    out["regret"] = out["objective"] - lp["objective"]
    out["regret_pct"] = 100.0 * out["regret"] / max(abs(lp["objective"]), 1e-9)
    out["penalised"] = run_pen
    out["regret_penalised"] = run_pen - lp["penalised"]
    out["regret_penalised_pct"] = 100.0 * out["regret_penalised"] / max(abs(lp["penalised"]), 1e-9)
    return out


def oracle_run(
    scenario: Scenario,
    *,
    base_dir: Path | None = None,
    quiet: bool = True,
    objective: str | None = None,
) -> tuple[Recorder, dict[str, float], dict]:
    """``cps-sim run --oracle``: solve, replay; returns the replay's recorder, the
    ``oracle_*`` and ``agreement_*`` KPIs, and the content of ``oracle.json``."""
    spec = scenario.oracle or OracleSpec()
    if objective is not None:
        spec = spec.model_copy(update={"objective": objective})
    sol = solve_oracle(scenario, spec, base_dir=base_dir, quiet=quiet)
    rec, nets = replay(sol, base_dir=base_dir, quiet=quiet)
    run_k = rec.kpis(rec.events())
    agree = agreement(sol, run_k, nets)
    lp = oracle_kpis(sol)
    extra = {f"oracle_{k}": v for k, v in lp.items()}
    extra.update({f"agreement_{k}": v for k, v in agree.items()})
    info = {
        "objective": spec.objective,
        "unit": UNIT[spec.objective],
        "unmet_penalty_per_kwh": sol.objective.penalty,
        "terminal_value_per_kwh": sol.objective.terminal_value,
        "min_charge_w": sol.objective.min_charge_w,
        "taper": sol.objective.taper,
        "lp": lp,
        "agreement": agree,
        "groups": {
            n: {
                "sites": s.n_sites,
                "chunks": s.extra.get("chunks", 0),
                "solves": s.n_solves,
                "floor_repairs": s.floor_repairs,
                "simultaneous_ev_ticks": s.simultaneous_ev,
            }
            for n, s in sol.schedules.items()
        },
    }
    return rec, extra, info


def oracle_hooks(scenario: Scenario, *, quiet: bool = True, objective: str | None = None):
    """``simulator`` and ``extras`` for :func:`cps_sim.experiment.run.run_scenario` that make
    it write the oracle's replay (``cps-sim run --oracle``)."""
    state: dict = {}

    def simulator(base_dir: Path | None) -> Recorder:
        rec, extra, info = oracle_run(scenario, base_dir=base_dir, quiet=quiet, objective=objective)
        state.update(extra=extra, info=info)
        return rec

    def extras(recorder: Recorder, folder: Path, kpis: dict[str, float]) -> None:
        from cps_sim.experiment.results import write_json

        kpis.update(state["extra"])
        write_json(folder / "oracle.json", state["info"])

    return simulator, extras


def summary_lines(kpis: dict[str, float]) -> list[str]:
    """What ``cps-sim run`` prints about the oracle (nothing without oracle KPIs)."""
    out = []
    if "agreement_objective_rel_diff" in kpis:
        out.append(
            f"oracle: LP objective {kpis['oracle_lp_objective']:,.2f} (bound "
            f"{kpis['oracle_bound']:,.2f}), replay differs by "
            f"{100 * kpis['agreement_objective_rel_diff']:.2g} %, solved in "
            f"{kpis['oracle_wall_time_s']:.1f} s"
        )
    if "regret" in kpis:
        out.append(
            f"regret to the oracle: {kpis['regret']:,.2f} ({kpis['regret_pct']:.1f} %) "
            f"on {kpis['oracle_objective']:,.2f}; with shortfall priced in "
            f"{kpis['regret_penalised']:,.2f} ({kpis['regret_penalised_pct']:.1f} %)"
        )
    return out
