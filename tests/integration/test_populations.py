"""The population protocol: what is derived from the registered populations, and the
books rebuilt from the written files alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from cps_sim.control.observation import Observation
from cps_sim.core.environment import make_env
from cps_sim.experiment.recorder import POWER_COLUMNS, Recorder
from cps_sim.experiment.run import run_scenario
from cps_sim.scenario.schema import Scenario
from cps_sim.world import populations as pops
from cps_sim.world.build import build_world

START = "2026-05-11T00:00:00+09:00"


def everything(**kw) -> Scenario:
    """One group with every built-in device family, limits that bind, V2X."""
    d = dict(
        name="all",
        seed=4,
        start=START,
        duration_days=2,
        tick_s=900,
        sites=[
            {
                "name": "mix",
                "count": 12,
                "pv": {"share": 1.0, "capacity_kw": 6},
                "battery": {
                    "share": 0.5,
                    "taper_soc": 0.8,
                    "self_discharge_per_month": 0.02,
                    "ageing": True,
                },
                "ev": {"share": 0.7, "v2x_kw": 6, "taper_soc": 0.85},
                "deferrable": {"share": 0.5, "power_kw": 2, "energy_kwh": 6},
                "heat_pump_water_heater": {"share": 0.5},
                "grid": {"import_limit_kw": 1.5, "export_limit_kw": 3},
            }
        ],
        control={"ev_strategy": "v2g", "v2g_price_jpy_per_kwh": 5},
    )
    d.update(kw)
    return Scenario(**d)


def test_flows_sinks_setpoints_and_observation_are_derived_from_the_registry():
    flows = [f for p in pops.REGISTRY for f in p.FLOWS]
    assert set(pops.FLOWS) == {f.name for f in flows} | {f.name for f in pops.CONNECTION_FLOWS}
    assert set(pops.SINKS) == {f.name for f in (*flows, *pops.CONNECTION_FLOWS) if f.role == "sink"}
    assert set(pops.SETPOINT_KEYS) == (
        {k.name for p in pops.REGISTRY for k in p.SETPOINTS} | {"import_limit_w", "export_limit_w"}
    )
    # every field a population says it fills is an Observation field (or goes to extra)
    fields = {f.name for f in dataclasses.fields(Observation)}
    assert set(pops.OBSERVED) <= fields
    # one time-series column per flow
    assert {f for _, f in POWER_COLUMNS} == set(pops.FLOWS)


def test_a_group_takes_exactly_the_keys_of_its_populations():
    world = build_world(everything())
    env = make_env("fast")
    world.start(env, Recorder(world).on_tick)
    g = world.group("mix")
    sizes = world.setpoint_sizes("mix")
    assert sizes == {
        "import_limit_w": 12,
        "export_limit_w": 12,
        "ev_setpoint_w": g.evs.n,
        "battery_setpoint_w": 12,
        "battery_mode": 12,
        "deferrable_setpoint_w": 12,
        "hpwh_setpoint_w": 12,
        "hpwh_mode": 12,
    }
    obs = world.observe("mix")
    assert dict(obs.setpoint_sizes) == sizes
    assert "hpwh_tank_temp_c" in obs.extra  # a field without an Observation attribute
    with pytest.raises(ValueError, match="unknown setpoint key"):
        world.apply("mix", heater_setpoint_w=np.zeros(12))
    with pytest.raises(ValueError, match="battery_setpoint_w must have 12 values"):
        world.apply("mix", battery_setpoint_w=np.zeros(3))
    with pytest.raises(ValueError, match="NaN is not a valid setpoint value"):
        world.apply("mix", ev_setpoint_w=np.full(g.evs.n, np.nan))
    with pytest.raises(ValueError, match="battery_setpoint_w: NaN is not a valid"):
        world.apply("mix", battery_setpoint_w=np.full(12, np.nan))
    with pytest.raises(ValueError, match="battery_mode: 2 is not one of"):
        world.apply("mix", battery_mode=np.full(12, 2.0))
    with pytest.raises(ValueError, match="hpwh_setpoint_w must be >= 0"):
        world.apply("mix", hpwh_setpoint_w=np.full(12, -1.0))
    with pytest.raises(ValueError, match="hpwh_mode: 3 is not one of"):
        world.apply("mix", hpwh_mode=np.full(12, 3.0))


@pytest.mark.parametrize(
    "sites",
    [
        None,  # every device family
        [{"name": "plain", "count": 3}],  # load only: no EV, battery or deferrable
        [{"name": "evs", "count": 4, "ev": {"per_site": 2}}],
    ],
)
def test_an_observation_is_the_one_its_dataclass_makes(sites):
    """World.observe builds its Observation without the dataclass's __init__: every field
    is set, to what ``Observation(**fields)`` gives (dataclasses.replace runs __init__),
    for groups with and without each device family."""
    sc = everything() if sites is None else everything(sites=sites)
    world = build_world(sc)
    env = make_env("fast")
    world.start(env, Recorder(world).on_tick)
    env.run(until=13 * 3600.0)
    for g in world.groups:
        obs = world.observe(g.name)
        again = dataclasses.replace(obs)
        for f in dataclasses.fields(Observation):
            a, b = getattr(obs, f.name), getattr(again, f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b, f.name
        assert obs.n_sites == g.n
        with pytest.raises(dataclasses.FrozenInstanceError):
            obs.now_s = 0.0  # type: ignore[misc]
        fields = dict(obs.__dict__)
        del fields["ev_site"]
        with pytest.raises(TypeError, match=r"missing: \['ev_site'\]"):
            Observation.from_fields(fields)
        with pytest.raises(TypeError, match=r"unknown: \['ev_sight'\]"):
            Observation.from_fields({**obs.__dict__, "ev_sight": obs.ev_site})


def test_an_observation_cannot_change_the_world():
    """A controller may keep or scribble on its observation: the EVs' state comes as
    copies, their fixed parameters as read-only arrays (shared, not copied), and the
    engine's own fixed arrays refuse writes too."""
    world = build_world(everything())
    env = make_env("fast")
    world.start(env, Recorder(world).on_tick)
    env.run(until=10 * 3600.0)
    g = world.group("mix")
    obs = world.observe("mix")
    before = g.evs.energy_wh.copy()
    obs.ev_energy_wh[:] = 0.0
    obs.ev_plugged[:] = False
    np.testing.assert_array_equal(g.evs.energy_wh, before)
    assert g.evs.plugged.any()
    fixed = ["ev_site", "ev_capacity_wh", "ev_charger_w", "ev_v2x_w", "ev_soc_min"]
    fixed += ["ev_energy_max_wh", "ev_charge_efficiency", "ev_energy_taper_wh", "ev_taper_line_w"]
    for name in fixed:
        with pytest.raises(ValueError, match="read-only"):
            getattr(obs, name)[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        g.evs.charger_w[0] = 1.0
    np.testing.assert_array_equal(obs.ev_soc_min, g.evs.energy_min_wh / g.evs.capacity_wh)


def test_the_books_close_from_the_parquet_columns_alone(tmp_path):
    # sources − sinks of every tick, read from timeseries.parquet, equal the change of
    # stored energy (the stored_wh column): every ledger flow has a column
    sc = everything()
    r = run_scenario(sc, tmp_path / "out")
    ts = pq.read_table(tmp_path / "out" / "timeseries.parquet").to_pandas()
    h = sc.tick_s / 3600.0
    src = sum(ts[f.removesuffix("_wh") + "_w"] for f in pops.SOURCES) * h
    snk = sum(ts[f.removesuffix("_wh") + "_w"] for f in pops.SINKS) * h
    stored = ts["stored_wh"].to_numpy()
    d_stored = np.diff(np.concatenate([[r.kpis["stored_initial_kwh"] * 1000.0], stored]))
    scale = max(float(src.abs().max()), 1.0)
    np.testing.assert_allclose((src - snk).to_numpy(), d_stored, rtol=0, atol=1e-9 * scale)
    # the scenario exercised every flow that matters here
    for col in (
        "ev_discharge_w",
        "battery_loss_w",
        "deferrable_w",
        "curtailment_w",
        "unserved_w",
        "ev_loss_w",
    ):
        assert ts[col].sum() > 0, col
