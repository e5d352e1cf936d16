"""VPP aggregator runtime on the real engine: requests, setpoints over the bus, delivery."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from cps_sim.core.environment import make_env
from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.recorder import Recorder
from cps_sim.scenario.schema import Scenario
from cps_sim.scenario.vpp_schema import VppSpec
from cps_sim.world.build import build_world
from cps_sim.world.group import IX
from cps_sim.world.wiring import start_vpp

DAY = "2026-04-06"
TICK_H = 0.25


def scenario(**kw) -> Scenario:
    d = dict(
        name="vpp",
        seed=3,
        start=f"{DAY}T00:00:00+09:00",
        duration_days=1,
        sites=[
            {
                "name": "homes",
                "count": 30,
                "pv": {"share": 0.6},
                "battery": {"share": 0.5},
                "ev": {"share": 0.6, "v2x_kw": 6},
            }
        ],
    )
    d.update(kw)
    return Scenario(**d)


def run(sc: Scenario, spec: VppSpec | None, base_dir=None):
    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    rt = start_vpp(env, world, spec, base_dir) if spec is not None else None
    env.run(until=sc.duration_s + 1)
    assert rec.ticks_done == sc.n_ticks
    assert abs(world.ledger.run_residual_wh(world.stored_wh())) < 1e-3  # energy conserved
    return rec, rt, world


def req(rid, h0, h1, kind, kw):
    return {
        "id": rid,
        "start": f"{DAY}T{h0:02d}:00+09:00",
        "end": f"{DAY}T{h1:02d}:00+09:00",
        "kind": kind,
        "power_kw": kw,
    }


def window(h0, h1):
    return slice(int(h0 / TICK_H), int(h1 / TICK_H))


def net_import_kwh(rec, sl) -> float:
    f = rec.groups["homes"][sl]
    return float((f[:, IX["grid_import_wh"]] - f[:, IX["grid_export_wh"]]).sum()) / 1000.0


def device_kwh(rec, sl) -> float:
    """Grid-side energy into EVs and batteries (load convention)."""
    f = rec.groups["homes"][sl]
    return (
        float(
            (
                f[:, IX["ev_charging_wh"]]
                - f[:, IX["ev_discharge_wh"]]
                + f[:, IX["battery_charge_wh"]]
                - f[:, IX["battery_discharge_wh"]]
            ).sum()
        )
        / 1e3
    )


@pytest.fixture(scope="module")
def baseline():
    return run(scenario(), None)[0]


def test_absorb_raises_charging_and_matches_the_counterfactual(baseline):
    spec = VppSpec(groups=["homes"], requests=[req("noon", 11, 13, "absorb", 30)])
    rec, rt, _ = run(scenario(), spec)
    rep = rt.report()
    sl = window(11, 13)
    extra_device = device_kwh(rec, sl) - device_kwh(baseline, sl)
    extra_import = net_import_kwh(rec, sl) - net_import_kwh(baseline, sl)
    assert extra_device > 20.0  # EVs/batteries took tens of kWh more in the window
    # the measured delivery is what the grid saw vs the same run without the VPP
    # (measured: 55.5 kWh delivered, 55.2 kWh more net import)
    assert rep["delivered_kwh"][0] == pytest.approx(extra_import, rel=0.03)
    assert rep["requested_kwh"][0] == pytest.approx(60.0)
    it = rt.intervals()
    assert np.all(it["delivered_w"] <= it["available_w"] + 1e-6)
    assert np.all(it["delivered_w"] <= it["dispatched_w"] + 1e-6)
    assert rep["delivered_kwh"][0] <= rep["available_kwh"][0] + 1e-9
    # outside the window the devices are handed back (no setpoints pinned after 13:00)
    k = rt.kpis()
    assert k["vpp_requested_kwh"] == pytest.approx(60.0)


def test_supply_request_matches_the_counterfactual(baseline):
    spec = VppSpec(groups=["homes"], requests=[req("eve", 18, 19, "supply", 20)])
    rec, rt, _ = run(scenario(), spec)
    rep = rt.report()
    sl = window(18, 19)
    less_import = net_import_kwh(baseline, sl) - net_import_kwh(rec, sl)
    assert rep["status"][0] == "full"
    assert rep["delivered_kwh"][0] == pytest.approx(20.0, rel=0.01)
    assert less_import == pytest.approx(rep["delivered_kwh"][0], rel=0.05)
    # V2X was used: the EVs discharged in the window
    f = rec.groups["homes"][sl]
    assert f[:, IX["ev_discharge_wh"]].sum() > 1000.0


def test_request_beyond_flexibility_is_partial():
    spec = VppSpec(groups=["homes"], requests=[req("huge", 14, 15, "absorb", 5000)])
    _, rt, _ = run(scenario(), spec)
    rep = rt.report()
    assert rep["status"][0] == "partial"
    assert 0.0 < rep["delivered_ratio"][0] < 0.1
    assert rep["shortfall_kwh"][0] == pytest.approx(5000.0 - rep["delivered_kwh"][0])
    # everything available was dispatched, and no more was delivered
    assert rep["dispatched_kwh"][0] == pytest.approx(rep["available_kwh"][0])
    assert rep["delivered_kwh"][0] <= rep["available_kwh"][0] + 1e-6
    assert rt.kpis()["vpp_requests_partial"] == 1.0


def test_absorb_with_smart_baseline_moves_ev_charging_into_the_window():
    # base "off": EVs charge only when the operator asks (an extreme smart-charging
    # baseline); the absorb request makes them charge at noon
    spec = VppSpec(
        groups=["homes"], base_strategy="off", requests=[req("noon", 11, 13, "absorb", 40)]
    )
    # EVs start at 30 % (the default start state samples 60-100 %, which leaves too
    # little room for 80 kWh in two hours at the homes where a car is parked)
    sites = scenario().model_dump()["sites"]
    sites[0]["ev"]["initial_soc"] = 0.3
    rec, rt, _ = run(scenario(sites=sites), spec)
    f = rec.groups["homes"][:, IX["ev_charging_wh"]]
    inside = f[window(11, 13)].sum()
    assert inside > 10_000.0
    assert f[: window(11, 13).start].sum() == 0.0 and f[window(11, 13).stop :].sum() == 0.0
    assert rt.report()["status"][0] == "full"


def test_dr_reduce_does_not_discharge_evs():
    spec = VppSpec(groups=["homes"], requests=[req("dr", 18, 20, "dr_reduce", 500)])
    rec, rt, _ = run(scenario(), spec)
    f = rec.groups["homes"][window(18, 20)]
    assert f[:, IX["ev_discharge_wh"]].sum() == 0.0
    rep = rt.report()
    assert rep["status"][0] == "partial" and rep["delivered_kwh"][0] > 0


def test_requests_from_a_dr_file(tmp_path):
    (tmp_path / "dr.yaml").write_text(
        "events:\n"
        f"  - {{id: f1, start: '{DAY}T18:00', end: '{DAY}T19:00', kind: reduce, "
        "requested_kw: 5}\n"
    )
    spec = VppSpec(groups=["homes"], requests_file="dr.yaml")
    _, rt, _ = run(scenario(), spec, base_dir=tmp_path)
    rep = rt.report()
    assert rep["request_id"].tolist() == ["f1"] and rep["kind"].tolist() == ["dr_reduce"]
    assert rep["start_s"][0] == 18 * 3600.0 and rep["requested_kwh"][0] == pytest.approx(5.0)
    with pytest.raises(ScenarioError, match="outside the scenario folder"):
        run(scenario(), VppSpec(groups=["homes"], requests_file="../x.yaml"), base_dir=tmp_path)


def test_absorb_system_curtailment_reduces_curtailment():
    system = {
        "demand": {"annual_gwh": 0.3},
        "utility_pv": [{"capacity_mw": 0.25}],
        "plants": [{"technology": "gas_ocgt", "capacity_mw": 1, "min_stable_fraction": 0}],
    }  # no forced minimum load
    sc = scenario(system=system)
    # the same aggregator and smart-charging baseline ("off"), without and with the
    # automatic requests
    rec0, _, _ = run(sc, VppSpec(groups=["homes"], base_strategy="off"))
    rec1, rt, _ = run(
        sc, VppSpec(groups=["homes"], base_strategy="off", absorb_system_curtailment={"share": 1.0})
    )
    h = sc.tick_s / 3600.0 / 1000.0
    c0 = np.nansum(rec0.extra["system_curtailment_w"]) * h
    c1 = np.nansum(rec1.extra["system_curtailment_w"]) * h
    rep = rt.report()
    assert c0 > 0 and rep["automatic"].all() and len(rep["request_id"]) > 0
    assert rep["delivered_kwh"].sum() > 0
    # measured: 887 -> 685 kWh curtailed, 238 kWh delivered.  Avoided curtailment is
    # below the delivery: batteries filled early by a request take less PV later, and
    # that rebound after a request episode is not charged to the requests.
    assert c1 < 0.9 * c0
    assert c0 - c1 <= rep["delivered_kwh"].sum() * 1.05


def test_group_with_its_own_strategy_is_rejected():
    sc = scenario(control={"ev_strategy": "pv"})
    world = build_world(sc)
    env = make_env()
    world.start(env, lambda r: None)
    with pytest.raises(ScenarioError, match="already has the EV strategy"):
        start_vpp(env, world, VppSpec(groups=["homes"]))
    with pytest.raises(ScenarioError, match="no site group named"):
        start_vpp(env, world, VppSpec(groups=["nope"]))


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"groups": []}, "at least 1"),
        ({"groups": ["homes"], "requests": [req("a", 12, 11, "absorb", 1)]}, "must be after"),
        (
            {"groups": ["homes"], "requests": [{**req("a", 11, 12, "absorb", 1), "kind": "x"}]},
            "absorb",
        ),
        ({"groups": ["homes"], "typo": 1}, "Extra inputs"),
    ],
)
def test_schema_errors(bad, msg):
    with pytest.raises(ValidationError, match=msg):
        VppSpec(**bad)


def test_base_strategies_match_the_scenario_schema():
    from typing import get_args

    from cps_sim.scenario import schema, vpp_schema

    assert get_args(vpp_schema.EvStrategy) == schema.EV_STRATEGIES
