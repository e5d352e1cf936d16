"""Members bound to external devices (the MQTT bridge's hook), in process, no MQTT.

A SimPy process plays the device: it feeds a measured power profile to a bound
member at exact instants (inside ticks and on tick boundaries).  The engine must
book exactly the integral of that profile in the same flows as a modelled member,
keep every tick's balance closed, and hand the member back to its model on release.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_sim.core.environment import make_env
from cps_sim.experiment.recorder import Recorder
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from cps_sim.world.group import IX

START = "2026-04-06T00:00:00+09:00"
TICK = 900.0


def one_home(control=None, **site) -> Scenario:
    base = {
        "name": "home",
        "count": 1,
        "pv": {"share": 1, "capacity_kw": 4},
        "battery": {
            "share": 1,
            "capacity_kwh": 10,
            "power_kw": 5,
            "control": "self_consumption",
            "initial_soc": 0.5,
        },
        "ev": {"per_site": 1, "charger_kw": 6, "v2x_kw": 6, "initial_soc": 0.5},
    }
    base.update(site)
    return Scenario(
        name="ext",
        seed=5,
        start=START,
        duration_days=1,
        tick_s=TICK,
        sites=[base],
        **({"control": control} if control else {}),
    )


def integral_wh(profile, t_end, t_start=0.0):
    """Integral [Wh] over [t_start, t_end] of a piecewise-constant profile [(t_s, W), ...]
    (0 W before its first point)."""
    total = 0.0
    for (t0, p), (t1, _) in zip(profile, [*profile[1:], (math.inf, 0.0)], strict=True):
        a, b = max(t0, t_start), min(t1, t_end)
        if b > a:
            total += p * (b - a) / 3600.0
    return total


def run(sc, kind, profile, *, release_at=None, site=0, soc_at=None, until=None):
    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    m = world.bind_external(sc.sites[0].name, kind, site)

    def device(env):
        for t, p in profile:
            yield env.timeout(t - env.now)
            soc = soc_at.get(t) if soc_at else None
            m.set_measured_w(env.now, p, soc=soc)
        if release_at is not None:
            yield env.timeout(release_at - env.now)
            m.release(env.now, "stale")

    env.process(device(env))
    env.run(until=(until or sc.duration_s) + 1)
    # every tick's balance closes, and the whole run's
    assert np.abs(rec.residual_wh).max() < 1e-6
    assert abs(world.ledger.run_residual_wh(world.stored_wh())) < 1e-6
    return world, rec, m


PROFILE = [
    (0.0, 3000.0),
    (100.0, -2500.0),
    (900.0, 7000.0),
    (1337.5, 0.0),
    (2000.0, 11000.0),
    (5400.0, -4000.0),
    (7000.0, 500.0),
]


def test_bound_ev_books_exactly_the_measured_energy():
    sc = one_home()
    _w, rec, m = run(sc, "ev", PROFILE)
    expected = integral_wh(PROFILE, sc.duration_s)
    assert m.energy_wh == pytest.approx(expected, rel=1e-12, abs=1e-9)
    f = rec.groups["home"]
    booked = f[:, IX["ev_charging_wh"]].sum() - f[:, IX["ev_discharge_wh"]].sum()
    assert booked == pytest.approx(expected, rel=1e-12, abs=1e-9)
    # per tick: the EV column is the tick's integral of the profile (the only EV)
    for k in range(sc.n_ticks):
        want = integral_wh(PROFILE, (k + 1) * TICK, k * TICK)
        got = f[k, IX["ev_charging_wh"]] - f[k, IX["ev_discharge_wh"]]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-9), k
    # unclipped: 11 kW on a 6 kW charger is what the device drew
    assert f[2:6, IX["ev_charging_wh"]].max() == pytest.approx(11000.0 * TICK / 3600.0)
    assert m.measured and m.measurements == len(PROFILE) and m.releases == 0


def test_release_falls_back_to_the_model():
    sc = one_home(ev={"per_site": 1, "charger_kw": 6, "initial_soc": 0.2})
    prof = [(0.0, 0.0)]  # the device says: not charging
    release = 2 * TICK + 300.0
    _w, rec, m = run(sc, "ev", prof, release_at=release)
    f = rec.groups["home"][:, IX["ev_charging_wh"]]
    assert f[:2].sum() == 0.0  # measured 0 W: no charging although the model would charge
    # from the release on, the model charges at the charger's 6 kW (EV at home, room left)
    assert f[2] == pytest.approx(6000.0 * (3 * TICK - release) / 3600.0)
    assert f[3] == pytest.approx(6000.0 * TICK / 3600.0)
    assert not m.measured and m.releases == 1 and "stale" in m.release_reasons[0]
    assert m.energy_wh == 0.0


def test_bound_battery_is_not_clipped_and_overflow_is_booked():
    # 8 kW measured into a 5 kW / 10 kWh battery at 50 %: over the rating, and it
    # passes the top of the store after ~40 min; the model's energy stops at the
    # capacity and the rest is a booked correction, not a silent overwrite.
    sc = one_home(ev=None, pv=None)
    prof = [(0.0, 8000.0), (3 * TICK, 0.0)]
    world, rec, m = run(sc, "battery", prof)
    f = rec.groups["home"]
    assert f[:3, IX["battery_charge_wh"]].sum() == pytest.approx(8000.0 * 0.75)
    assert m.energy_wh == pytest.approx(8000.0 * 0.75)
    corr = f[:, IX["measured_correction_wh"]].sum()
    eta = 0.95
    assert corr == pytest.approx(-(5000.0 + 6000.0 * eta - 10000.0), rel=1e-12)
    assert world.groups[0].battery_energy_wh[0] == pytest.approx(10000.0)


def test_measured_soc_is_booked_as_a_correction():
    sc = one_home(ev=None, pv=None)
    prof = [(0.0, 0.0), (TICK, 0.0)]
    world, rec, m = run(sc, "battery", prof, soc_at={TICK: 0.8})
    g = world.groups[0]
    decay = math.exp(-g.battery.self_discharge_per_s[0] * TICK)
    f = rec.groups["home"]
    # the store held 5 kWh (less self-discharge) when the 80 % measurement came in
    assert f[1, IX["measured_correction_wh"]] == pytest.approx(8000.0 - 5000.0 * decay, rel=1e-12)
    assert f[:, IX["measured_correction_wh"]].sum() == f[1, IX["measured_correction_wh"]]
    assert m.state.energy_wh == pytest.approx(8000.0 * decay ** (sc.n_ticks - 1), rel=1e-9)


def test_bound_load_and_pv_replace_the_inputs():
    sc = one_home(ev=None, battery=None)
    prof_load = [(0.0, 400.0), (450.0, 1200.0), (5000.0, 300.0)]
    _w, rec, m = run(sc, "load", prof_load)
    f = rec.groups["home"]
    assert f[:, IX["load_wh"]].sum() == pytest.approx(integral_wh(prof_load, sc.duration_s))
    assert m.energy_wh == pytest.approx(integral_wh(prof_load, sc.duration_s))
    prof_pv = [(0.0, 0.0), (3600.0, -2500.0), (7200.0, -100.0)]  # generation is negative
    _w, rec, m = run(sc, "pv", prof_pv)
    f = rec.groups["home"]
    assert f[:, IX["pv_generation_wh"]].sum() == pytest.approx(-integral_wh(prof_pv, sc.duration_s))
    assert m.energy_wh == pytest.approx(integral_wh(prof_pv, sc.duration_s))


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 86399.0), st.floats(-7000.0, 9000.0)), min_size=1, max_size=12
    ),
    st.sampled_from(["ev", "battery", "load"]),
)
def test_any_profile_closes_every_tick(points, kind):
    sc = one_home()
    prof = sorted({round(t, 3): p for t, p in points}.items())
    if kind == "load":
        prof = [(t, abs(p)) for t, p in prof]
    _w, _rec, m = run(sc, kind, prof)
    assert m.energy_wh == pytest.approx(integral_wh(prof, sc.duration_s), rel=1e-9, abs=1e-6)


def test_setpoints_reach_the_member_and_its_callback():
    sc = one_home(control={"ev_strategy": "off", "interval_s": 600})
    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    m = world.bind_external("home", "ev", 0)
    seen = []
    m.on_setpoint(lambda t, v: seen.append((t, v)))
    env.run(until=3600.0)
    # the device process first applies its fallback (charge at 6 kW), then the
    # 'off' strategy's 0 W at t = 0: both are forwarded, each once
    assert seen[0] == (0.0, 6000.0) and seen[1] == (0.0, 0.0)
    assert m.setpoint_w == 0.0 and len(seen) == 2
    st_ = m.state
    assert st_.max_charge_w == 6000.0 and st_.capacity_wh > 0 and 0 <= st_.soc <= 1


def test_bind_errors_are_clear():
    world = build_world(one_home(battery=None))
    with pytest.raises(ValueError, match="kind must be one of"):
        world.bind_external("home", "heater", 0)
    with pytest.raises(ValueError, match=r"site must be an index 0\.\.0"):
        world.bind_external("home", "ev", 3)
    with pytest.raises(ValueError, match="has no battery"):
        world.bind_external("home", "battery", 0)
    with pytest.raises(KeyError):
        world.bind_external("nope", "ev", 0)
    m = world.bind_external("home", "ev", 0)
    with pytest.raises(ValueError, match="already bound"):
        world.bind_external("home", "ev", 0)
    with pytest.raises(ValueError, match="finite"):
        m.set_measured_w(0.0, float("nan"))
