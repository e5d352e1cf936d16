"""EMS controllers (HEMS, BEMS, FEMS, CEMS) on the real engine, through the bus.

Each run builds the world, starts it and the EMS processes (``start_ems``) and
runs the SimPy environment; every KPI below is the engine's own accounting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cps_sim.core.environment import make_env
from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.recorder import Recorder
from cps_sim.scenario.ems_schema import EmsSection
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from cps_sim.world.group import IX
from cps_sim.world.wiring import start_ems

START = "2026-05-11T00:00:00+09:00"  # a Monday in May (sunny synthetic weather)


def run(d: dict, ems: dict):
    sc = Scenario.model_validate(d)
    world = build_world(sc)
    env = make_env("fast")
    rec = Recorder(world)
    world.start(env, rec.on_tick)
    ctl = start_ems(env, world, EmsSection.model_validate({"ems": ems}).ems)
    env.run(until=sc.duration_s + 1)
    k = rec.kpis(rec.events())
    # energy balance of the whole run and of every tick (the ledger's identity)
    assert abs(k["balance_residual_wh"]) < 1e-3
    assert np.abs(rec.residual_wh).max() < 1e-3
    return k, world, rec, ctl


def homes(n=8, days=2, battery_control="idle", **ev):
    return {
        "version": 1,
        "name": "h",
        "seed": 3,
        "start": START,
        "duration_days": days,
        "tick_s": 900,
        "sites": [
            {
                "name": "homes",
                "count": n,
                "pv": {"share": 1, "capacity_kw": 5},
                "battery": {
                    "share": 1,
                    "capacity_kwh": 10,
                    "power_kw": 5,
                    "control": battery_control,
                },
                "ev": {"share": 1, "charger_kw": 6, **ev},
            }
        ],
    }


# ----------------------------------------------------------------------------- HEMS


def test_hems_raises_self_consumption():
    base, *_ = run(homes(), {})  # no control: idle battery, EVs charge on arrival
    rule, w, _, ctl = run(homes(), {"homes": {"kind": "hems"}})
    mpc, *_ = run(
        homes(),
        {"homes": {"kind": "hems", "battery_mode": "mpc", "ev_strategy": "now", "interval_s": 300}},
    )
    # measured: 0.24 -> 0.62 (rule + pv EVs) and 0.49 (MPC battery, EVs 'now')
    assert rule["self_consumption"] > base["self_consumption"] + 0.2
    assert mpc["self_consumption"] > base["self_consumption"] + 0.1
    assert rule["grid_import_kwh"] < base["grid_import_kwh"]
    cs, ds = w.wiring.ems_stats["homes"]
    # one decision a minute for 2 days (+1 at the end), all applied through the bus
    assert cs.decisions == 2 * 1440 + 1 and ds.applied == cs.decisions
    assert ctl["homes"].name == "hems_homes"


def test_hems_mpc_with_noisy_forecast_runs_and_keeps_soc():
    _k, _w, rec, ctl = run(
        homes(n=4),
        {
            "homes": {
                "kind": "hems",
                "battery_mode": "mpc",
                "forecast": "noisy",
                "interval_s": 900,
                "mpc_horizon_h": 12,
            }
        },
    )
    st = ctl["homes"].mpc_state
    assert st.solves == 2 * 24 + 1  # hourly re-plans, 2 days (+1 at the end)
    soc = rec.battery_soc
    assert np.nanmin(soc) >= 0.1 - 1e-9 and np.nanmax(soc) <= 1.0 + 1e-9


def test_hems_dr_reduces_import_in_window():
    dr = [
        {"start": "2026-05-11T18:00:00+09:00", "end": "2026-05-11T21:00:00+09:00", "reduce_kw": 2.0}
    ]
    spec = {"kind": "hems", "ev_strategy": "now"}
    _a, _, ra, _ = run(homes(), {"homes": spec})
    _b, _, rb, cb = run(homes(), {"homes": {**spec, "dr_windows": dr}})
    win = slice(18 * 4, 21 * 4)  # ticks 72..83 of day 0
    imp_a = ra.flows[win, IX["grid_import_wh"]].sum()
    imp_b = rb.flows[win, IX["grid_import_wh"]].sum()
    # request: 2 kW x 8 homes x 3 h = 48 kWh less than without the request; the
    # baseline imports only imp_a (measured 14.3 kWh: the batteries cover most of the
    # evening), so meeting the request means no import in the window.  The battery
    # kept its charge (no discharge in the 3 h before), EV charging pauses to what
    # departures need and the battery no longer feeds it (measured 0 Wh).
    assert imp_a > 1000.0
    assert imp_b <= max(imp_a - 48_000.0, 0.0) + 100.0  # measured 5e-13 Wh
    st = cb["homes"].stats
    assert sum(st.dr_requested_w) > 0 and sum(st.dr_ev_cut_w) > 0
    # outside the window import is not lowered by the request (it is shifted later)
    assert (
        rb.flows[96:, IX["grid_import_wh"]].sum() >= 0.9 * ra.flows[96:, IX["grid_import_wh"]].sum()
    )


# ----------------------------------------------------------------------------- BEMS


def buildings(days=3):
    return {
        "version": 1,
        "name": "b",
        "seed": 7,
        "start": START,
        "duration_days": days,
        "tick_s": 900,
        "record": {"sites": [0, 1]},
        "sites": [
            {
                "name": "offices",
                "kind": "building",
                "count": 2,
                "load": {"annual_kwh": 200000, "profile": "office"},
                "pv": {"share": 1, "capacity_kw": 20, "model": "simple"},
                "battery": {"share": 1, "capacity_kwh": 100, "power_kw": 30},
                "ev": {"share": 1, "per_site": 4, "charger_kw": 6},
            }
        ],
    }


def peak_30min_kw(rec) -> float:
    net_wh = np.maximum(rec.site_net_wh, 0.0)  # per site per 15-min tick
    half_hour = net_wh.reshape(-1, 2, net_wh.shape[1]).sum(axis=1)
    return float(half_hour.max()) / 0.5 / 1000.0  # Wh in 30 min -> kW


def test_bems_lowers_monthly_peak():
    _, _, r0, _ = run(buildings(), {})  # battery self-consumption rule, EVs 'now'
    p0 = peak_30min_kw(r0)
    _, _, r1, ctl = run(
        buildings(), {"offices": {"kind": "bems", "initial_threshold_kw": 0.6 * p0}}
    )
    p1 = peak_30min_kw(r1)
    # threshold 60 % of the uncontrolled peak.  Measured 54.5 -> 48.5 kW (-11 %): on
    # these load samples an evening plateau of 37-48 kW lasts for hours above the
    # threshold, so the battery (100 kWh, 30 kW) is empty before the plateau's top.
    # The rule is not energy-aware (it does not raise its threshold ahead of a long
    # plateau); docs/ems.md says so.  Before the truncated distributions (issue 10
    # item 13) changed the samples it was 64.1 -> 38.5 kW.
    assert p1 < 0.9 * p0, (p0, p1)
    thr = ctl["offices"].state.history_thr_w
    assert min(thr) >= 0.6 * p0 * 1000 - 1e-6  # never below the initial threshold
    assert thr == sorted(thr)  # within a month it only rises (to the peak so far)


# ----------------------------------------------------------------------------- FEMS


def factory(days=3):
    # two deferrable processes of 120 kWh at <= 30 kW each, window 20:00 -> 16:00 next day
    # (engine hook: EV slot with one daily 'trip' 16:00-20:00 consuming 120 km x 1 kWh/km)
    trip = {"probability": 1, "departure_h": 16, "duration_h": 4, "distance_km": 120}
    return {
        "version": 1,
        "name": "f",
        "seed": 5,
        "start": START,
        "duration_days": days,
        "tick_s": 900,
        "sites": [
            {
                "name": "factory",
                "kind": "factory",
                "count": 1,
                "load": {"annual_kwh": 300000, "profile": "factory"},
                "pv": {"share": 1, "capacity_kw": 250, "model": "simple"},
                "battery": {"share": 1, "capacity_kwh": 100, "power_kw": 50},
                "ev": {
                    "share": 1,
                    "per_site": 2,
                    "charger_kw": 30,
                    "capacity_kwh": 120,
                    "initial_soc": 0.0,
                    "soc_max": 1.0,
                    "departure_soc_target": 1.0,
                    "charge_efficiency": 1.0,
                    "consumption_kwh_per_100km": 100,
                    "trips": {"weekday": trip, "weekend": trip},
                },
            }
        ],
    }


def _process_stats(rec):
    # the factory is the only site group: every event is its (the group's log is written
    # out day by day, so the events come from the recorder's table)
    events = rec.events()
    dep = np.asarray(events.column("kind").to_pylist()) == "departure"
    f = rec.flows
    surplus = f[:, IX["pv_potential_wh"]] > f[:, IX["load_wh"]]
    return (
        events.column("unmet_wh").to_numpy()[dep],
        f[surplus, IX["ev_charging_wh"]].sum(),
        f[:, IX["ev_charging_wh"]].sum(),
    )


def test_fems_meets_deadlines_and_shifts_into_surplus():
    k0, _, r0, _ = run(factory(), {})
    k1, _, r1, _ = run(factory(), {"factory": {"kind": "fems"}})
    _unmet0, sur0, _tot0 = _process_stats(r0)
    unmet1, sur1, tot1 = _process_stats(r1)
    # 3 days x 2 processes = 6 deadlines, every one met with the full 120 kWh
    assert unmet1.size == 6 and np.all(unmet1 < 1e-6)
    assert k1["ev_driving_kwh"] == pytest.approx(6 * 120.0)
    # uncontrolled: full power from 20:00 (no PV) -> 0 kWh in surplus ticks;
    # FEMS: measured 634 of 720 kWh in surplus ticks
    assert sur0 == 0.0 and sur1 > 0.7 * tot1
    assert k1["self_consumption"] > k0["self_consumption"] + 0.05


def test_fems_deadline_forces_full_power_without_pv():
    d = factory(days=2)
    d["sites"][0]["pv"] = None  # no surplus at all: only the deadline rule runs processes
    _, _, rec, ctl = run(d, {"factory": {"kind": "fems"}})
    unmet, _, _ = _process_stats(rec)
    assert unmet.size == 4 and np.all(unmet < 1e-6)
    assert ctl["factory"].must_run_decisions > 0


# ----------------------------------------------------------------------------- CEMS

OUTAGE = ("2026-05-11T12:00:00+09:00", "2026-05-12T12:00:00+09:00")


def community(days=2):
    return {
        "version": 1,
        "name": "c",
        "seed": 11,
        "start": START,
        "duration_days": days,
        "tick_s": 900,
        "sites": [
            {
                "name": "village",
                "count": 6,
                "pv": {"share": 1, "capacity_kw": 4},
                "ev": {"share": 0.5, "charger_kw": 6},
            },
            {
                "name": "clinic",
                "kind": "building",
                "count": 1,
                "load": {"annual_kwh": 50000, "profile": "hospital"},
            },
            {
                "name": "shops",
                "kind": "building",
                "count": 2,
                "load": {"annual_kwh": 15000, "profile": "retail"},
            },
            {
                "name": "hub",
                "kind": "community",
                "count": 1,
                "load": {"annual_kwh": 1, "profile": "constant", "noise_cv": 0},
                "battery": {"share": 1, "capacity_kwh": 300, "power_kw": 15, "initial_soc": 0.9},
            },
        ],
    }


def cems_spec(**kw):
    return {
        "village": {
            "kind": "cems",
            "member_groups": ["clinic", "shops", "hub"],
            "shared_battery_groups": ["hub"],
            "outages": [list(OUTAGE)],
            "priority": [0] * 6 + [2] + [1, 1] + [0],
            **kw,
        }
    }


def test_cems_islanded_never_imports_and_sheds_by_priority():
    _k, _w, rec, ctl = run(community(), cems_spec())
    pcc_wh = sum(
        rec.groups[g][:, IX["grid_import_wh"]] - rec.groups[g][:, IX["grid_export_wh"]]
        for g in ("village", "clinic", "shops", "hub")
    )
    k0, k1 = 12 * 4, 36 * 4  # outage ticks 48..143
    # islanded: nothing flows through the PCC, either way (float rounding only)
    assert np.abs(pcc_wh[k0:k1]).max() <= 1e-6, np.abs(pcc_wh[k0:k1]).max()
    assert pcc_wh[:k0].max() > 1000.0  # while connected the community does import
    unserved = {g: rec.groups[g][:, IX["unserved_wh"]] for g in rec.groups}
    assert unserved["village"].sum() > 0  # the outage night is short of energy
    assert unserved["village"][:k0].sum() == 0 and unserved["village"][k1:].sum() == 0
    # the critical clinic is shed only in ticks where every lower class gets no grid-side
    # supply (village and shops import nothing: what they have is their own PV)
    hit = unserved["clinic"] > 0
    for g in ("village", "shops"):
        assert rec.groups[g][hit, IX["grid_import_wh"]].sum() == pytest.approx(0.0, abs=1e-6)
    # rationing keeps the shared battery for the clinic until the outage ends: measured
    # unserved village 31.1 kWh, shops 49.9 kWh, clinic 0.002 kWh (the 1 W margin)
    assert unserved["clinic"].sum() < 1e-3 * (unserved["shops"].sum() + unserved["village"].sum())
    assert unserved["shops"].sum() > 0
    # per decision: a class is shed only when every lower class gets no import at all
    st = ctl["village"].stats
    pr = ctl["village"].cfg.priority
    n_checked = 0
    for shed, lim, isl in zip(st.shed_w, st.limit_w, st.islanded, strict=True):
        for c in (1, 2):
            if isl and shed[pr == c].sum() > 0:
                assert lim[pr < c].sum() == 0.0
                n_checked += 1
    assert n_checked > 0
    # the shared battery discharged during the outage
    assert min(st.shared_battery_w) < -1000.0


def _pcc_wh(rec):
    imp = sum(a[:, IX["grid_import_wh"]] for a in rec.groups.values())
    return imp - sum(a[:, IX["grid_export_wh"]] for a in rec.groups.values())


@pytest.mark.parametrize("case", ["full_battery", "off_grid_times", "built_in"])
def test_islanded_community_neither_imports_nor_exports(case):
    """Islanded means no flow either way: surplus that the community cannot use or
    store is curtailed at the sites (issue 10 item 2: self_owned_microgrid exported
    about 1.1 MWh during its outage while the shared battery was full)."""
    if case == "built_in":
        from cps_sim.experiment.run import simulate
        from cps_sim.scenario.loader import load_scenario

        sc = load_scenario(Path(__file__).parents[2] / "scenarios" / "self_owned_microgrid.yaml")
        rec = simulate(sc)
        k0, k1 = 36 * 4, 60 * 4  # 2026-06-09 12:00 .. 06-10 12:00
        k = rec.kpis(rec.events())
        assert abs(k["balance_residual_wh"]) < 1e-3
    else:
        d = community()
        d["sites"][0]["pv"]["capacity_kw"] = 9  # a big midday surplus
        d["sites"][3]["battery"]["initial_soc"] = 1.0 if case == "full_battery" else 0.6
        outage = OUTAGE
        if case == "off_grid_times":  # not on the decision grid (15 min)
            outage = ("2026-05-11T12:07:00+09:00", "2026-05-12T11:53:00+09:00")
        k, _w, rec, _ = run(d, cems_spec(outages=[list(outage)], interval_s=300))
        k0, k1 = (12 * 4, 36 * 4) if case != "off_grid_times" else (12 * 4 + 1, 36 * 4 - 1)
    pcc = _pcc_wh(rec)
    assert np.abs(pcc[k0:k1]).max() <= 1e-6, np.abs(pcc[k0:k1]).max()
    # there was surplus to get rid of: it was curtailed, and only while islanded
    curt = sum(a[:, IX["curtailment_wh"]] for a in rec.groups.values())
    assert curt[k0:k1].sum() > 1000.0
    assert curt[: k0 - 1].sum() == 0.0 and curt[k1 + 1 :].sum() == 0.0
    assert pcc[: k0 - 1].max() > 0  # connected, the community imports


def test_cems_pcc_limit_while_connected():
    _k, _w, rec, _ctl = run(community(days=1), cems_spec(outages=[], pcc_import_limit_kw=5.0))
    pcc_wh = sum(
        rec.groups[g][:, IX["grid_import_wh"]] - rec.groups[g][:, IX["grid_export_wh"]]
        for g in ("village", "clinic", "shops", "hub")
    )
    # 5 kW for a 15-min tick = 1250 Wh
    assert pcc_wh.max() <= 1250.0 + 1e-6


def test_ems_spec_errors():
    with pytest.raises(ValueError, match="extra"):
        EmsSection.model_validate({"ems": {"homes": {"kind": "hems", "batery_mode": "rule"}}})
    sc = Scenario.model_validate(homes(n=2, days=1))
    world = build_world(sc)
    env = make_env("fast")
    world.start(env, Recorder(world).on_tick)
    bad = EmsSection.model_validate({"ems": {"homes": {"kind": "cems", "priority": [0, 1, 2]}}})
    with pytest.raises(ScenarioError, match="priority: 3 values for 2 sites"):
        start_ems(env, world, bad.ems)
