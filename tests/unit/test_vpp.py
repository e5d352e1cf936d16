"""VPP aggregator: flexibility, proportional split, delivered <= available."""

from __future__ import annotations

import numpy as np
import pytest

from cps_sim.control.strategies import StrategyController
from cps_sim.control.vpp import FlexRequest, VppController, delivered_w, dispatch, flexibility
from cps_sim.models import battery as bat
from tests.unit.control_helpers import make_obs, step_evs, with_

H = 3600.0


def test_flexibility_hand_case():
    obs = make_obs(1, [0], ev_energy_wh=[20_000.0], ev_v2x_w=[6000.0])
    f1 = flexibility(obs, H)
    # up: 6 kW charger, room 20 kWh / 0.9 = 22.2 kWh >= 6 kWh
    assert f1.ev_up_w[0] == pytest.approx(6000.0)
    # down: reserve = (0.2 floor + 0.02 margin) x 40 kWh = 8.8 kWh; 11.2 kWh x 0.9 = 10.08 kWh
    # available for 1 h, capped by the 6 kW V2X limit
    assert f1.ev_down_w[0] == pytest.approx(6000.0)
    f4 = flexibility(obs, 4 * H)
    assert f4.ev_up_w[0] == pytest.approx(20_000.0 / 0.9 / 4)
    assert f4.ev_down_w[0] == pytest.approx(10_080.0 / 4)
    assert f4.ev_down_wh[0] == pytest.approx(10_080.0)
    # leaving within the window: nothing; unplugged: nothing
    gone = with_(obs, ev_departure_s=np.array([1800.0]))
    assert flexibility(gone, H).up_w == 0 and flexibility(gone, H).down_w == 0
    off = with_(obs, ev_plugged=np.array([False]))
    assert flexibility(off, H).up_w == 0


def test_battery_flexibility():
    # the limits come with the observation; the battery model computes the range
    spec = bat.make_spec(
        [10_000.0, 0.0],
        [5000.0, 0.0],
        charge_efficiency=0.95,
        discharge_efficiency=0.95,
        soc_min=0.1,
        soc_max=1.0,
    )
    obs = make_obs(
        2,
        [0],
        battery_capacity_wh=[10_000.0, 0.0],
        battery_energy_wh=[9000.0, 0.0],
        battery_power_w=[0.0, 0.0],
        battery_spec=spec,
    )
    f = flexibility(obs, H)
    # room 1 kWh stored in 1 h -> 1/0.95 kW up; 8 kWh above the 10 % floor -> 5 kW (rating)
    assert f.battery_up_w.tolist() == pytest.approx([1000.0 / 0.95, 0.0])
    assert f.battery_down_w.tolist() == [5000.0, 0.0]
    lo, hi = bat.feasible_power_w(spec, obs.battery_energy_wh, H)
    assert f.battery_up_w.tolist() == hi.tolist() and f.battery_down_w.tolist() == (-lo).tolist()
    # without limits in the observation a battery offers nothing
    assert flexibility(
        make_obs(2, [0], battery_capacity_wh=[10_000.0, 0.0], battery_energy_wh=[9000.0, 0.0]), H
    ).up_w == pytest.approx(flexibility(make_obs(2, [0]), H).up_w)


def test_split_proportional_and_capped():
    obs = make_obs(
        2,
        [0, 0, 1],
        ev_energy_wh=[10_000.0, 30_000.0, 20_000.0],
        ev_charger_w=[6000.0, 3000.0, 6000.0],
    )
    f = flexibility(obs, H)
    d = dispatch(obs, FlexRequest("up", 5000.0, 0.0, H), f)
    assert d.available_w == pytest.approx(15_000.0) and d.dispatched_w == 5000.0
    np.testing.assert_allclose(d.ev_delta_w, [2000.0, 1000.0, 2000.0])  # 1/3 of each headroom
    big = dispatch(obs, FlexRequest("up", 50_000.0, 0.0, H), f)
    assert big.dispatched_w == pytest.approx(15_000.0)
    assert big.shortfall_w == pytest.approx(35_000.0)
    np.testing.assert_allclose(big.ev_setpoint_w, obs.ev_charger_w)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_delivered_never_exceeds_available(direction):
    rng = np.random.default_rng(4 if direction == "up" else 5)
    n_sites = 300
    ev_site = np.sort(rng.integers(0, n_sites, 400))
    n = ev_site.size
    cap = rng.choice([40_000.0, 60_000.0], n)
    obs = make_obs(
        n_sites,
        ev_site,
        ev_capacity_wh=cap,
        ev_energy_wh=cap * rng.uniform(0.1, 0.98, n),
        ev_plugged=rng.random(n) < 0.8,
        ev_v2x_w=rng.choice([0.0, 6000.0], n),
        ev_departure_s=rng.uniform(0.2, 12, n) * H,
        ev_target_wh=cap * 0.8,
    )
    base = StrategyController("now")
    base_sp = base.decide(0.0, obs)["ev_setpoint_w"] * rng.uniform(0, 1, n)
    window = 2 * H
    f = flexibility(obs, window, ev_baseline_w=base_sp)
    avail = f.up_w if direction == "up" else f.down_w
    for request_w in (0.3 * avail, avail, 3.0 * avail):
        d = dispatch(obs, FlexRequest(direction, request_w, 0.0, window), f)
        assert d.dispatched_w <= min(request_w, avail) + 1e-6
        head = f.ev_up_w if direction == "up" else f.ev_down_w
        assert np.all(np.abs(d.ev_delta_w) <= head + 1e-9)
        # run the window with plain physics; departures unplug the EVs
        e, e_base = obs.ev_energy_wh.copy(), obs.ev_energy_wh.copy()
        delivered = []
        dt = 60.0
        for t in np.arange(0.0, window, dt):
            plugged = obs.ev_plugged & (t < obs.ev_departure_s)
            e, p = step_evs(e, d.ev_setpoint_w, plugged, cap, dt)
            # the baseline as the aggregator holds it (charging that would fill
            # an EV before the window ends is spread over the window)
            e_base, p0 = step_evs(e_base, f.ev_baseline_w, plugged, cap, dt)
            delivered.append((p - p0).sum())
        mean_delivered = float(np.mean(delivered))
        sign = 1.0 if direction == "up" else -1.0
        assert sign * mean_delivered <= avail + 1e-6
        assert sign * mean_delivered == pytest.approx(d.dispatched_w, rel=1e-6)
        # no EV was taken below its floor (or below where it started, if lower)
        assert np.all(e >= np.minimum(obs.ev_soc_min * cap, obs.ev_energy_wh) - 1e-6)


def test_delivered_from_observations():
    obs0 = make_obs(
        1, [0], ev_energy_wh=[20_000.0], battery_capacity_wh=[10_000.0], battery_power_w=[0.0]
    )
    # an hour later the EV stored 5.4 kWh (6 kW at 0.9), the battery charged at 1 kW
    obs1 = with_(
        obs0, now_s=H, ev_energy_wh=np.array([25_400.0]), battery_power_w=np.array([1000.0])
    )
    got = delivered_w(obs0, obs1, ev_baseline_w=np.array([0.0]), battery_baseline_w=np.array([0.0]))
    assert got == pytest.approx(7000.0)


def test_vpp_controller_overrides_only_during_request():
    obs = make_obs(1, [0], ev_energy_wh=[20_000.0], ev_v2x_w=[6000.0])
    ctl = VppController(StrategyController("off"), [FlexRequest("down", 4000.0, H, H, "dr1")])
    assert ctl.decide(0.0, obs)["ev_setpoint_w"].tolist() == [0.0]
    out = ctl.decide(H + 60.0, with_(obs, now_s=H + 60.0))
    assert out["ev_setpoint_w"][0] == pytest.approx(-4000.0)
    assert ctl.report.request == ["dr1"] and ctl.report.dispatched_w == [4000.0]
    with pytest.raises(ValueError):
        FlexRequest("sideways", 1.0, 0.0, 1.0)  # type: ignore[arg-type]
