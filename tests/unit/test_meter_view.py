"""A HEMS on smart-meter data (control/ems/meter_view.py): what it estimates of the home,
and that its battery rule follows that estimate rather than the truth."""

from __future__ import annotations

import numpy as np
import pytest

from cps_sim.control.ems.common import EvDelegate
from cps_sim.control.ems.hems import HemsConfig, HemsController
from cps_sim.control.ems.meter_view import own_net_w
from cps_sim.control.strategies import StrategyConfig
from cps_sim.models.battery import battery_spec
from tests.unit.control_helpers import make_obs, with_

NAN2 = np.full(2, np.nan)


def meter(polled=NAN2, devices=NAN2, imp=NAN2, exp=NAN2, dev30=NAN2, span=np.nan):
    return {
        "meter_power_w": np.asarray(polled, float),
        "meter_devices_w": np.asarray(devices),
        "meter_poll_s": 0.0,
        "meter_interval_import_wh": np.asarray(imp, float),
        "meter_interval_export_wh": np.asarray(exp, float),
        "meter_interval_devices_wh": np.asarray(dev30, float),
        "meter_interval_s": span,
    }


def obs_with(extra, **over):
    return with_(make_obs(2, ev_site=(), **over), extra=extra)


def test_polled_power_minus_the_homes_own_devices():
    # the meter shows 1,500 W import while the battery charges at 2,000 W: the home's own
    # net is -500 W (PV surplus); a site without a poll yet falls back to the registers
    x = meter(
        polled=[1500.0, np.nan],
        devices=[2000.0, 0.0],
        imp=[300.0, 300.0],
        exp=[0.0, 100.0],
        dev30=[0.0, -100.0],
        span=1800.0,
    )
    # site 1: (300 - 100 - (-100)) Wh over 30 min = 600 W
    np.testing.assert_allclose(own_net_w(obs_with(x)), [-500.0, 600.0])


def test_nothing_read_yet_is_zero_and_no_meter_is_an_error():
    np.testing.assert_array_equal(own_net_w(obs_with(meter())), [0.0, 0.0])
    with pytest.raises(ValueError, match="smart meter"):
        own_net_w(make_obs(2, ev_site=()))


def test_the_battery_rule_follows_the_meter_not_the_truth():
    spec = battery_spec(
        2, capacity_wh=10_000.0, max_charge_power_w=5000.0, max_discharge_power_w=5000.0
    )
    # truth: 3 kW PV surplus at both homes; the meter (a stale poll) still shows 1 kW import
    x = meter(polled=[1000.0, 1000.0], devices=[0.0, 0.0])
    obs = obs_with(
        x,
        site_load_w=[500.0, 500.0],
        site_pv_w=[3500.0, 3500.0],
        battery_energy_wh=[5000.0, 5000.0],
        battery_capacity_wh=[1e4, 1e4],
        battery_spec=spec,
    )
    ev = EvDelegate(None, StrategyConfig())
    truth = HemsController(HemsConfig(ev=ev)).decide(0.0, obs)
    on_meter = HemsController(HemsConfig(ev=ev, observe="meter")).decide(0.0, obs)
    np.testing.assert_allclose(truth["battery_setpoint_w"], [3000.0, 3000.0])  # charges
    np.testing.assert_allclose(on_meter["battery_setpoint_w"], [-1000.0, -1000.0])  # discharges


def test_meter_with_mpc_is_refused():
    with pytest.raises(ValueError, match="rule"):
        HemsController(
            HemsConfig(ev=EvDelegate(None, StrategyConfig()), observe="meter", battery_mode="mpc")
        )
