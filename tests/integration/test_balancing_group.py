"""Balancing group hook: day-ahead plan vs actual per 30-min slot, imbalance settlement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cps_sim.core.environment import make_env
from cps_sim.experiment.recorder import Recorder
from cps_sim.market.balancing_group import BalancingGroupHook, build_balancing_group
from cps_sim.scenario.schema import Scenario
from cps_sim.scenario.vpp_schema import BalancingGroupSpec, VppSpec
from cps_sim.world.build import build_world
from cps_sim.world.group import IX
from cps_sim.world.wiring import start_vpp

DAY = "2026-04-06"


def scenario(days: float = 1.0) -> Scenario:
    return Scenario(
        name="bg",
        seed=5,
        start=f"{DAY}T00:00:00+09:00",
        duration_days=days,
        sites=[
            {
                "name": "homes",
                "count": 20,
                "pv": {"share": 0.6},
                "battery": {"share": 0.5},
                "ev": {"share": 0.5, "v2x_kw": 6},
            },
            {
                "name": "shops",
                "count": 3,
                "kind": "building",
                "load": {"profile": "retail", "annual_kwh": 50000},
            },
        ],
    )


def run(sc: Scenario, spec: BalancingGroupSpec, vpp: VppSpec | None = None, base_dir=None):
    world = build_world(sc)
    hook = build_balancing_group(sc, world, spec, base_dir)
    world.tick_hooks.append(hook)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    rt = start_vpp(env, world, vpp) if vpp is not None else None
    env.run(until=sc.duration_s + 1)
    return hook, rec, rt


def test_perfect_plan_has_no_imbalance():
    hook, rec, _ = run(scenario(), BalancingGroupSpec(plan="baseline_run", price="flat"))
    k = hook.kpis()
    assert k["bg_slots_settled"] == 48
    assert k["bg_imbalance_kwh"] == pytest.approx(0.0, abs=1e-9)
    assert k["bg_imbalance_cost_jpy"] == pytest.approx(0.0, abs=1e-9)
    # the actual is the members' net import (both groups) as the recorder has it
    assert k["bg_actual_kwh"] == pytest.approx(
        (rec.flows[:, IX["grid_import_wh"]].sum() - rec.flows[:, IX["grid_export_wh"]].sum())
        / 1000.0,
        rel=1e-12,
    )
    assert np.isfinite(rec.extra["bg_plan_w"]).all()


def test_vpp_request_shows_as_imbalance_and_is_settled():
    vpp = VppSpec(
        groups=["homes"],
        requests=[
            {
                "id": "noon",
                "start": f"{DAY}T11:00+09:00",
                "end": f"{DAY}T12:00+09:00",
                "kind": "absorb",
                "power_kw": 15,
            }
        ],
    )
    spec = BalancingGroupSpec(plan="baseline_run", price="flat", price_jpy_per_kwh=20.0)
    hook, _, rt = run(scenario(), spec, vpp)
    rep = hook.report()
    k = hook.kpis()
    delivered = rt.report()["delivered_kwh"][0]
    in_req = (rep["slot_start_s"] >= 11 * 3600) & (rep["slot_start_s"] < 12 * 3600)
    # the request's slots are short by what the fleet absorbed (measured 15.0 kWh)
    assert rep["imbalance_kwh"][in_req].sum() == pytest.approx(delivered, rel=0.05)
    # nothing moves before the request
    assert np.all(np.abs(rep["imbalance_kwh"][rep["slot_start_s"] < 11 * 3600]) < 1e-9)
    # single price: cost = sum(imbalance) x 20 JPY/kWh (shortage paid, surplus credited)
    assert k["bg_imbalance_cost_jpy"] == pytest.approx(rep["imbalance_kwh"].sum() * 20.0)
    assert k["bg_shortage_kwh"] > 0


def test_noisy_plan_is_seeded_and_costs_something():
    spec = BalancingGroupSpec(forecast_noise_std=0.2, price="synthetic")
    a, _, _ = run(scenario(), spec)
    b, _, _ = run(scenario(), spec)
    ka, kb = a.kpis(), b.kpis()
    assert ka == kb  # same seed, same plan noise and prices
    assert ka["bg_imbalance_kwh"] > 1.0
    price = a.price_jpy_per_kwh
    assert price.min() >= 0.01 and price.std() > 0
    # synthetic price is lower at the solar peak than at night (negative correlation with GHI)
    noon = (a.slot_start_s >= 11 * 3600) & (a.slot_start_s < 13 * 3600)
    night = a.slot_start_s < 4 * 3600
    assert price[noon].mean() < price[night].mean()


def test_previous_day_plan_settles_from_the_second_day():
    hook, _, _ = run(scenario(days=2), BalancingGroupSpec(plan="previous_day", price="flat"))
    rep = hook.report()
    assert rep["slot_start_s"].min() == 86400.0 and len(rep["slot_start_s"]) == 48
    np.testing.assert_allclose(rep["plan_kwh"], hook.actual_wh[:48] / 1000.0)
    assert hook.kpis()["bg_imbalance_kwh"] > 0


def test_plan_and_price_files(tmp_path):
    sc = scenario()
    perfect, _, _ = run(sc, BalancingGroupSpec(price="flat"))
    idx = pd.date_range(f"{DAY}T00:00", periods=48, freq="30min")
    pd.DataFrame(
        {
            "timestamp": idx.strftime("%Y-%m-%dT%H:%M"),
            "net_import_kwh": perfect.plan_wh / 1000.0 + 1.0,
        }
    ).to_csv(tmp_path / "plan.csv", index=False)
    pd.DataFrame(
        {"timestamp": [f"{DAY}T00:00", f"{DAY}T12:00"], "price_jpy_per_kwh": [10.0, 30.0]}
    ).to_csv(tmp_path / "price.csv", index=False)
    spec = BalancingGroupSpec(
        plan="file", plan_file="plan.csv", price="file", price_file="price.csv"
    )
    hook, _, _ = run(sc, spec, base_dir=tmp_path)
    k = hook.kpis()
    # planned 1 kWh more in every slot: 48 kWh surplus, credited at 10 (24 slots) and 30
    assert k["bg_surplus_kwh"] == pytest.approx(48.0)
    assert k["bg_imbalance_cost_jpy"] == pytest.approx(-(24 * 10.0 + 24 * 30.0))


def test_members_subset_and_errors():
    sc = scenario()
    world = build_world(sc)
    with pytest.raises(Exception, match="no site group named"):
        BalancingGroupHook(BalancingGroupSpec(groups=["nope"], price="flat"), world)
    with pytest.raises(Exception, match="needs plan_file"):
        BalancingGroupSpec(plan="file")
    hook, rec, _ = run(sc, BalancingGroupSpec(groups=["shops"], price="flat"))
    shops = rec.groups["shops"]
    assert hook.kpis()["bg_actual_kwh"] == pytest.approx(
        (shops[:, IX["grid_import_wh"]].sum() - shops[:, IX["grid_export_wh"]].sum()) / 1000.0
    )
