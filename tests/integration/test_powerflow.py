"""The optional feeder power flow (cps_sim.grid.powerflow) on small real worlds."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
from pydantic import ValidationError

if os.environ.get("CPS_SIM_GRID_TESTS") == "1":
    # .ci/run's second environment (extra `grid`): there a missing pandapower fails
    import pandapower as pp
else:  # the main environment (pandas 3): pandapower 3.5 cannot be installed beside it
    pp = pytest.importorskip("pandapower")

from cps_sim.core.environment import make_env
from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.recorder import Recorder
from cps_sim.grid.powerflow import (
    PowerFlowHook,
    build_powerflow,
    map_sites_to_loads,
)
from cps_sim.scenario.powerflow_schema import PowerFlowSpec
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world

QUIET = {"annual_kwh": 0.001, "noise_cv": 0.0}  # ~0.1 mW per site: no load at all


def scenario(
    site: dict,
    *,
    days: float = 1.0,
    tick_s: float = 900.0,
    start: str = "2026-05-10T00:00:00+09:00",
) -> Scenario:
    return Scenario(
        name="pf",
        seed=3,
        start=start,
        duration_days=days,
        tick_s=tick_s,
        sites=[{"name": "homes", **site}],
    )


def run(sc: Scenario, **spec) -> tuple[PowerFlowHook, dict[str, np.ndarray]]:
    """Build the world, append the power-flow hook, run it; return the hook and columns."""
    world = build_world(sc)
    hook = build_powerflow(sc, world, PowerFlowSpec(group="homes", **spec))
    world.tick_hooks.append(hook)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    env.run(until=sc.duration_s + sc.tick_s * 0.5)
    assert rec.ticks_done == sc.n_ticks
    return hook, rec.extra


def local_hour(sc: Scenario) -> np.ndarray:
    # start is local midnight; tick k covers [k, k+1) * tick_s
    return (np.arange(sc.n_ticks) * sc.tick_s / 3600.0) % 24.0


# --------------------------------------------------------------------------- physics


def test_no_load_gives_nominal_voltage_everywhere():
    # The CIGRE LV benchmark with its own nominal loads sags to ~0.91 pu; the sites replace
    # those loads, so with (almost) nothing connected every bus sits at the slack's 1.0 pu.
    sc = scenario({"count": 30, "load": QUIET}, tick_s=3600.0)
    hook, c = run(sc, network="cigre_lv")
    assert np.all(np.abs(c["powerflow_vm_min_pu"] - 1.0) < 2e-3)
    assert np.all(np.abs(c["powerflow_vm_max_pu"] - 1.0) < 2e-3)
    assert np.all(c["powerflow_line_loading_max_percent"] < 1.0)
    assert np.all(c["powerflow_buses_out_of_band"] == 0)
    k = hook.kpis()
    assert k["powerflow_runs"] == sc.n_ticks and k["powerflow_failures"] == 0
    assert k["powerflow_voltage_violation_hours"] == 0


def test_more_pv_export_at_midday_raises_max_voltage():
    # Same seed, same weather and load: only the PV size differs (1 kW vs 10 kW per home).
    sites = {"count": 26, "load": {"noise_cv": 0.0}, "pv": {"share": 1.0}}
    sc_small = scenario({**sites, "pv": {"share": 1.0, "capacity_kw": 1.0}}, tick_s=3600.0)
    sc_big = scenario({**sites, "pv": {"share": 1.0, "capacity_kw": 10.0}}, tick_s=3600.0)
    _, small = run(sc_small, network="kerber_landnetz_overhead")
    _, big = run(sc_big, network="kerber_landnetz_overhead")
    h = local_hour(sc_big)
    noon = (h >= 10) & (h < 14)
    night = h < 4
    # 26 homes × ~7 kW export on a rural overhead feeder lifts the far end well above 1 pu
    assert np.all(big["powerflow_vm_max_pu"][noon] > small["powerflow_vm_max_pu"][noon] + 0.005)
    assert big["powerflow_vm_max_pu"][noon].max() > 1.01
    # at night PV is 0 W, so both runs see the same feeder
    assert np.allclose(
        big["powerflow_vm_min_pu"][night], small["powerflow_vm_min_pu"][night], atol=1e-9
    )


def test_heavy_ev_charging_lowers_min_voltage_and_loads_lines():
    # All EVs start the run plugged in at 10 % SoC and charge at 11 kW from midnight on.
    base = {"count": 30, "load": {"noise_cv": 0.0}}
    ev = {**base, "ev": {"per_site": 1, "charger_kw": 11.0, "initial_soc": 0.1}}
    _, quiet = run(scenario(base, days=0.25), network="kerber_dorfnetz")
    _, heavy = run(scenario(ev, days=0.25), network="kerber_dorfnetz")
    first = slice(0, 4)  # the first hour: every vehicle charging
    assert np.all(heavy["powerflow_vm_min_pu"][first] < quiet["powerflow_vm_min_pu"][first] - 0.01)
    assert np.all(
        heavy["powerflow_line_loading_max_percent"][first]
        > quiet["powerflow_line_loading_max_percent"][first] + 10.0
    )
    assert np.all(heavy["powerflow_losses_w"][first] > quiet["powerflow_losses_w"][first])


def test_losses_positive_under_load_and_consistent_with_the_slack():
    sc = scenario(
        {"count": 30, "ev": {"per_site": 1, "charger_kw": 6.0, "initial_soc": 0.2}}, days=0.25
    )
    hook, c = run(sc, network="cigre_lv")
    _, idle = run(scenario({"count": 30, "load": QUIET}, days=0.25), network="cigre_lv")
    # no-load losses are the transformers' iron losses; load adds I²R on top
    assert np.all(c["powerflow_losses_w"] > idle["powerflow_losses_w"] + 100.0)
    # energy balance of the last solution: slack injection = Σ loads + Σ branch losses
    net = hook.net
    slack_w = float(net.res_ext_grid["p_mw"].sum()) * 1e6
    loads_w = float(net.res_load["p_mw"].sum()) * 1e6
    # (to the Newton-Raphson mismatch: tolerance 1e-8 MVA = 0.01 W per bus)
    assert slack_w - loads_w == pytest.approx(c["powerflow_losses_w"][-1], abs=0.1)
    assert c["powerflow_losses_w"][-1] > 1000.0
    # KPI: one run per 15-min tick, losses [W] × 0.25 h
    assert hook.kpis()["powerflow_losses_kwh"] == pytest.approx(
        c["powerflow_losses_w"].sum() * 0.25 / 1000.0, rel=1e-12
    )


def test_sites_aggregate_to_loads_by_bincount():
    sc = scenario({"count": 30, "ev": {"per_site": 1}}, days=0.25)
    hook, _ = run(sc, network="cigre_lv", scale=2.0, power_factor=0.9)
    net_wh = hook.group.last_site_net_wh
    p_site = net_wh * (3600.0 / sc.tick_s) * 2.0
    p_load = hook.net.load["p_mw"].to_numpy() * 1e6
    for j in range(hook.n_loads):
        on_j = hook.site_load == j  # round robin: sites j, j + 15, ...
        assert np.array_equal(np.flatnonzero(on_j), np.arange(j, 30, hook.n_loads))
        assert p_load[j] == pytest.approx(p_site[on_j].sum(), rel=1e-12, abs=1e-9)
        # Q = Σ|P| tan(acos 0.9) = Σ|P| × 0.4843
        assert hook.net.load["q_mvar"].iloc[j] * 1e6 == pytest.approx(
            np.abs(p_site[on_j]).sum() * 0.48432210483785254, rel=1e-9, abs=1e-9
        )


def test_recycled_runs_match_a_fresh_power_flow():
    sc = scenario({"count": 30, "pv": {"share": 0.5}, "ev": {"share": 0.5}}, days=0.5)
    hook, c = run(sc, network="kerber_dorfnetz")
    fresh = copy.deepcopy(hook.net)
    pp.runpp(fresh, algorithm="nr", voltage_depend_loads=False, numba=False)
    assert float(fresh.res_bus["vm_pu"].min()) == pytest.approx(
        c["powerflow_vm_min_pu"][-1], abs=1e-6
    )
    assert float(fresh.res_line["loading_percent"].max()) == pytest.approx(
        c["powerflow_line_loading_max_percent"][-1], abs=1e-4
    )


# --------------------------------------------------------------------------- robustness


def test_non_convergence_is_counted_not_raised():
    # each home stands for 100,000 homes: hundreds of MW on a 0.4 kV feeder
    sc = scenario({"count": 15, "ev": {"per_site": 1, "initial_soc": 0.1}}, days=0.25)
    hook, c = run(sc, network="cigre_lv", scale=1e5)
    k = hook.kpis()
    assert k["powerflow_failures"] == k["powerflow_runs"] == sc.n_ticks
    assert np.all(c["powerflow_converged"] == 0)
    assert np.all(np.isnan(c["powerflow_vm_min_pu"]))
    assert np.isnan(k["powerflow_vm_min_pu"])
    assert k["powerflow_losses_kwh"] == 0.0 and k["powerflow_voltage_violation_hours"] == 0.0


def test_recovers_after_a_failed_run():
    # converged → diverged → converged, through both the full and the recycled path
    sc = scenario({"count": 15, "load": QUIET}, days=0.25)
    world = build_world(sc)
    hook = build_powerflow(sc, world, PowerFlowSpec(group="homes", network="cigre_lv"))
    n = hook.n_loads
    zero = np.zeros(n)
    runs = [hook.solve(np.full(n, p), zero) for p in (2e3, 1e9, 2e3, 3e3, 1e9, 1e9, 2e3)]
    assert [r["powerflow_converged"] for r in runs] == [1, 0, 1, 1, 0, 0, 1]
    assert hook.failures == 3
    ok = [r["powerflow_vm_min_pu"] for r in runs if r["powerflow_converged"]]
    assert ok[0] == pytest.approx(ok[1], abs=1e-9) == pytest.approx(ok[3], abs=1e-9)
    assert ok[2] < ok[0]  # 3 kW per load sags more than 2 kW


def test_every_n_ticks_band_violation_hours_and_report():
    # a band of ±0.001 pu is violated at every run with real load on the feeder
    sc = scenario({"count": 30}, days=1.0)
    hook, c = run(
        sc, network="kerber_dorfnetz", every_ticks=4, voltage_min_pu=0.999, voltage_max_pu=1.001
    )
    ran = np.arange(sc.n_ticks) % 4 == 0
    assert np.all(np.isfinite(c["powerflow_vm_min_pu"][ran]))
    assert np.all(np.isnan(c["powerflow_vm_min_pu"][~ran]))
    rep = hook.report()
    assert np.array_equal(rep["tick"], np.flatnonzero(ran))
    assert np.array_equal(rep["vm_min_pu"], c["powerflow_vm_min_pu"][ran])
    violated = int((rep["buses_out_of_band"] > 0).sum())
    assert violated > 0
    # each run stands for 4 × 15 min = 1 h
    assert hook.kpis()["powerflow_voltage_violation_hours"] == pytest.approx(violated * 1.0)
    assert hook.kpis()["powerflow_line_loading_max_percent"] == pytest.approx(
        np.nanmax(c["powerflow_line_loading_max_percent"])
    )


# --------------------------------------------------------------------------- mapping, schema


def test_site_mapping_round_robin_and_proportional():
    assert map_sites_to_loads(7, np.ones(3), "round_robin").tolist() == [0, 1, 2, 0, 1, 2, 0]
    # 8 sites on loads of 3 : 1 → 6 and 2; 10 sites on 1 : 1 : 1 → 4, 3, 3 (largest remainder)
    assert map_sites_to_loads(8, np.array([0.3, 0.1]), "proportional").tolist() == [0] * 6 + [1] * 2
    assert np.bincount(map_sites_to_loads(10, np.ones(3), "proportional")).tolist() == [4, 3, 3]
    assert map_sites_to_loads(4, np.zeros(2), "proportional").tolist() == [0, 0, 1, 1]


def test_unknown_group_and_bad_fields_are_scenario_errors():
    sc = scenario({"count": 3}, days=0.25)
    world = build_world(sc)
    with pytest.raises(ScenarioError, match="no site group named 'flats'"):
        build_powerflow(sc, world, PowerFlowSpec(group="flats"))
    with pytest.raises(ValidationError):
        PowerFlowSpec(group="homes", netwrok="cigre_lv")
    with pytest.raises(ValidationError):
        PowerFlowSpec(group="homes", voltage_min_pu=1.02)
    with pytest.raises(ValidationError):
        PowerFlowSpec(group="homes", network="ieee_13")
