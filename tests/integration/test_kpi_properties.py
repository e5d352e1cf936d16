"""Self-sufficiency and self-consumption stay in [0, 1] for any mix (issue 14).

Two levels: the KPI code (``experiment/kpis.py``) on arbitrary per-tick flows that
satisfy the sites' AC balance, and whole simulated runs of random mixes of loads,
deferrable processes, EVs (with and without V2X, under V2H/V2G strategies), batteries,
heat-pump water heaters and connection limits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cps_sim.experiment.kpis import META, RunTables, site_kpis
from cps_sim.experiment.run import simulate
from cps_sim.scenario.schema import Scenario

power = st.floats(0.0, 1e4, allow_nan=False, allow_infinity=False)


def _table(rows: list[tuple[float, ...]], tick_s: float) -> RunTables:
    names = ("pv", "load", "deferrable", "ev_ch", "ev_dis", "b_ch", "b_dis", "both")
    a = {n: np.array([r[i] for r in rows]) for i, n in enumerate(names)}
    # the sites' AC balance decides import and export; "both": some sites import while
    # others export in the same tick
    net = a["load"] + a["deferrable"] + a["ev_ch"] + a["b_ch"] - a["pv"] - a["b_dis"] - a["ev_dis"]
    n = len(rows)
    time = pd.date_range("2026-01-01", periods=n, freq=pd.Timedelta(seconds=tick_s), tz="UTC")
    cols = {
        "time": pa.array(time.as_unit("us")),
        "grid_import_w": np.maximum(net, 0.0) + a["both"],
        "grid_export_w": np.maximum(-net, 0.0) + a["both"],
        "pv_generation_w": a["pv"],
        "load_w": a["load"],
        "deferrable_w": a["deferrable"],
        "ev_charging_w": a["ev_ch"],
        "ev_discharge_w": a["ev_dis"],
        "battery_charge_w": a["b_ch"],
        "battery_discharge_w": a["b_dis"],
        "peak_site_import_w": np.maximum(net, 0.0),
        "import_price_jpy_per_kwh": np.full(n, 30.0),
        "export_price_jpy_per_kwh": np.full(n, 8.0),
        "carbon_price_jpy_per_t": np.zeros(n),
        "grid_co2_g_per_kwh": np.full(n, 400.0),
        "stored_wh": np.zeros(n),
        "balance_residual_wh": np.zeros(n),
    }
    meta = {
        META + "tick_s": repr(tick_s),
        META + "stored_initial_wh": "0.0",
        META + "sites": "1",
        META + "evs": "0",
    }
    return RunTables(timeseries=pa.table(cols), events=pa.table({}), meta=meta)


def _check(k: dict[str, float], pv_wh: float, consumption_wh: float, tol_wh: float = 0.0) -> None:
    """``tol_wh``: a consumption within this of 0 is float noise of the sums (the KPI may
    see it as a tiny positive consumption, or as none)."""
    sc, ss = k["self_consumption"], k["self_sufficiency"]
    if pv_wh > 0:
        assert 0.0 <= sc <= 1.0, sc
    else:
        assert math.isnan(sc)
    if consumption_wh > tol_wh:
        assert 0.0 <= ss <= 1.0, ss
        # the common numerator (Luthander et al. 2015): never more PV than there was
        assert ss * consumption_wh <= pv_wh * (1 + 1e-12) + 1e-9
    elif consumption_wh < -tol_wh or (tol_wh == 0.0 and consumption_wh == 0.0):
        assert math.isnan(ss)
    else:
        assert math.isnan(ss) or 0.0 <= ss <= 1.0, ss


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(*[power] * 8), min_size=1, max_size=30),
    tick_s=st.sampled_from([60.0, 900.0, 3600.0]),
)
@example(rows=[(60.0, 0.0, 0.0, 1.192092896e-07, 0.0, 0.0, 0.0, 0.0)], tick_s=60.0)  # noise
def test_bounds_hold_for_any_flows(rows, tick_s):
    t = _table(rows, tick_s)
    k = site_kpis(t, ("grid_import_wh", "pv_generation_wh"), ("load_wh", "grid_export_wh"))
    h = tick_s / 3600.0
    pv = sum(r[0] for r in rows) * h
    cons = sum(r[1] + r[2] + r[3] - r[4] + r[5] - r[6] for r in rows) * h
    _check(k, pv, cons, tol_wh=1e-9 * (1 + pv))


def test_no_pv_means_no_self_sufficiency_whatever_the_stores_do():
    """The audit's case: a factory process and batteries without PV is 0 % self-sufficient
    (the old definition gave -14 %), and emptying stores does not count as PV."""
    rows = [
        (0.0, 800.0, 5000.0, 0.0, 0.0, 0.0, 3000.0, 0.0),  # battery covers part
        (0.0, 800.0, 5000.0, 0.0, 0.0, 4000.0, 0.0, 0.0),  # recharged from the grid
        (0.0, 500.0, 0.0, 6000.0, 0.0, 0.0, 0.0, 0.0),
    ]
    k = site_kpis(
        _table(rows, 900.0), ("grid_import_wh", "pv_generation_wh"), ("load_wh", "grid_export_wh")
    )
    assert k["self_sufficiency"] == 0.0
    assert math.isnan(k["self_consumption"])


def test_v2h_energy_is_not_counted_twice():
    """An EV charged from PV by day that covers the evening load: everything was PV
    (self-sufficiency 1).  The same EV charged from the grid at night: 0."""
    day = (10000.0, 0.0, 0.0, 10000.0, 0.0, 0.0, 0.0, 0.0)  # PV into the EV
    evening = (0.0, 9000.0, 0.0, 0.0, 9000.0, 0.0, 0.0, 0.0)  # EV covers the load
    night = (0.0, 0.0, 0.0, 10000.0, 0.0, 0.0, 0.0, 0.0)  # grid into the EV
    sources, sinks = ("grid_import_wh", "pv_generation_wh"), ("load_wh", "grid_export_wh")
    assert site_kpis(_table([day, evening], 3600.0), sources, sinks)["self_sufficiency"] == 1.0
    assert site_kpis(_table([night, evening], 3600.0), sources, sinks)["self_sufficiency"] == 0.0


@st.composite
def mixes(draw) -> Scenario:
    choice = draw
    groups = []
    any_ev = False
    for i in range(choice(st.integers(1, 2))):
        g: dict = {
            "name": f"g{i}",
            "count": choice(st.integers(1, 3)),
            "load": {"annual_kwh": choice(st.sampled_from([300.0, 4000.0, 40000.0]))},
        }
        if choice(st.booleans()):
            g["pv"] = {
                "share": choice(st.sampled_from([0.5, 1.0])),
                "capacity_kw": choice(st.sampled_from([1.0, 5.0, 40.0])),
            }
        if choice(st.booleans()):
            g["battery"] = {
                "capacity_kwh": choice(st.sampled_from([5.0, 20.0])),
                "power_kw": 5.0,
                "self_discharge_per_month": 0.05,
                "control": choice(st.sampled_from(["self_consumption", "idle"])),
            }
        if choice(st.booleans()):
            any_ev = True
            g["ev"] = {
                "share": 1.0,
                "charger_kw": choice(st.sampled_from([3.0, 6.0])),
                "v2x_kw": choice(st.sampled_from([0.0, 6.0])),
            }
        if choice(st.booleans()):
            g["deferrable"] = {
                "energy_kwh": choice(st.sampled_from([5.0, 60.0])),
                "power_kw": 10.0,
                "days": "all",
            }
        if choice(st.booleans()):
            g["heat_pump_water_heater"] = {"share": 1.0}
        lim = choice(st.sampled_from([None, "import", "export"]))
        if lim is not None:
            g["grid"] = {f"{lim}_limit_kw": 3.0}
        groups.append(g)
    kw: dict = {}
    if any_ev:
        kw["control"] = {
            "ev_strategy": choice(st.sampled_from(["now", "pv", "v2h", "v2g"])),
            "v2g_price_jpy_per_kwh": 0.0,
        }
    return Scenario(
        name="mix",
        seed=choice(st.integers(0, 2**16)),
        start="2026-05-11T00:00:00+09:00",
        duration_days=1,
        tick_s=3600,
        sites=groups,
        **kw,
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=mixes())
def test_bounds_hold_in_simulated_runs_of_any_mix(sc):
    rec = simulate(sc)
    k = rec.kpis()
    _check(k, k["pv_generation_kwh"] * 1000.0, k["consumption_kwh"] * 1000.0)
    # consumption = import + PV - export (the sites' AC balance)
    ac = k["grid_import_kwh"] + k["pv_generation_kwh"] - k["grid_export_kwh"]
    assert abs(k["consumption_kwh"] - ac) <= 1e-9 * (1.0 + k["grid_import_kwh"])
