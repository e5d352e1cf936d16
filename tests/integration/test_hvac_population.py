"""Room air-conditioners / heat pumps as an engine population (``space_conditioning:``)."""

from __future__ import annotations

import numpy as np
import pytest

from cps_sim.core.environment import make_env
from cps_sim.experiment.recorder import Recorder
from cps_sim.experiment.run import simulate
from cps_sim.models import hvac
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from cps_sim.world.group import IX


def homes(start="2026-01-19T00:00:00+09:00", days=2, **sc):
    block = {"share": 1.0, "floor_area_m2": 60, **sc}
    return Scenario(
        name="ac",
        seed=9,
        start=start,
        duration_days=days,
        tick_s=900,
        weather={"source": "synthetic"},
        sites=[{"name": "homes", "count": 20, "pv": {"share": 0.5}, "space_conditioning": block}],
    )


def test_engine_runs_the_model_and_the_books_close():
    sc = homes()
    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    g = world.group("homes")
    pop = g.by_key["hvac"]
    t_in = pop.state.indoor_c.copy()
    seen = []

    def check(r):
        rec.on_tick(r)
        # the tick's heat pump power is the model's decision from the tick-start state
        k = r.k
        step = hvac.decide(
            pop.spec,
            hvac.HvacState(t_in_state[0]),
            float(world.weather.temp_air_c[k]),
            sc.tick_s,
            0.0,
        )
        np.testing.assert_allclose(pop.step.electric_w, step.electric_w, rtol=1e-12)
        seen.append(r.extra["hvac_w"])
        t_in_state[0] = pop.state.indoor_c.copy()

    t_in_state = [t_in]
    world.start(env, check)
    env.run(until=sc.duration_s + 1)
    assert abs(world.ledger.run_residual_wh(world.stored_wh())) < 1e-3
    k = rec.kpis(rec.events())
    # winter in Tokyo: the units heat; their energy is part of the site load
    assert k["hvac_heating_kwh_th"] > 100 and k["hvac_cooling_kwh_th"] == 0.0
    assert k["hvac_kwh"] == pytest.approx(sum(seen) * 0.25 / 1000.0, rel=1e-9)
    assert 2.0 < k["hvac_cop_mean"] < 6.0
    assert k["load_kwh"] > k["hvac_kwh"]
    assert k["hvac_discomfort_kh"] < 1.0  # 5 kW units hold 20 °C in a 60 m² house
    assert float(rec.extra["hvac_indoor_temp_mean_c"].min()) >= 20.0 - 1e-6


def test_summer_cooling_and_a_dr_event_shift_consumption():
    day = "2026-08-04"
    dr = {
        "dr_windows": [
            {"start": f"{day}T14:00:00+09:00", "end": f"{day}T17:00:00+09:00", "shift_k": 2.0}
        ]
    }
    base = simulate(homes(start=f"{day}T00:00:00+09:00", days=1))
    shed = simulate(homes(start=f"{day}T00:00:00+09:00", days=1, **dr))
    pre = simulate(
        homes(start=f"{day}T00:00:00+09:00", days=1, precondition_h=2.0, precondition_k=1.5, **dr)
    )
    ev = slice(14 * 4, 17 * 4)
    before = slice(12 * 4, 14 * 4)
    hv = {n: r.extra["hvac_w"] for n, r in (("base", base), ("shed", shed), ("pre", pre))}
    assert hv["base"][ev].sum() > 0  # it cools in the afternoon
    assert hv["shed"][ev].sum() < 0.5 * hv["base"][ev].sum()  # the event sheds cooling
    assert hv["pre"][before].sum() > hv["base"][before].sum()  # pre-cooling moves it earlier
    kb = base.kpis(base.events())
    ks = shed.kpis(shed.events())
    assert ks["hvac_cooling_kwh_th"] < kb["hvac_cooling_kwh_th"]
    assert ks["hvac_discomfort_kh"] >= 0.0
    # a controller can shift the band too (hvac_shift_k, per site)
    sc = homes(start=f"{day}T00:00:00+09:00", days=1)
    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    env.run(until=12 * 3600.0)
    world.apply("homes", hvac_shift_k=np.full(20, 3.0))
    env.run(until=sc.duration_s + 1)
    assert rec.extra["hvac_w"][ev].sum() < hv["base"][ev].sum()
    assert "hvac_indoor_temp_c" in world.observe("homes").extra


def test_fallbacks_take_back_a_controllers_comfort_band_shift():
    """A controller that set ``hvac_shift_k`` and went silent leaves no shift behind: both
    fallbacks (internal controllers' and the MQTT bridge's) put the band back."""
    from cps_sim.control.base import fallback_off, fallback_uncontrolled

    world = build_world(homes(days=0.125))
    world.start(make_env("fast"), Recorder(world).on_tick)
    pop = next(p for p in world.group("homes").populations if p.key == "hvac")
    for fb in (fallback_uncontrolled, fallback_off):
        world.apply("homes", hvac_shift_k=np.full(20, 3.0))
        assert (pop.shift_k == 3.0).all()
        world.apply("homes", **fb(world.observe("homes")))
        assert (pop.shift_k == 0.0).all()


def test_site_without_units_and_errors():
    sc = homes(share=0.0)
    rec = simulate(sc)
    assert rec.kpis(rec.events())["hvac_kwh"] == 0.0
    with pytest.raises(ValueError, match="cool_setpoint_c"):
        homes(heat_setpoint_c=24, cool_setpoint_c=22)
    assert IX["load_wh"] >= 0
