"""Solving batches with HiGHS: bound, replayable schedule, lexicographic stage, chunks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from cps_sim.control.oracle.assembly import Lp, build
from cps_sim.control.oracle.data import (
    FloatArray,
    IntArray,
    Objective,
    OracleError,
    OracleSchedule,
    SiteInputs,
)


def _run_highs(lp: Lp, c: FloatArray, extra_ub: tuple | None = None) -> FloatArray:
    a_ub, b_ub = lp.a_ub, lp.b_ub
    if extra_ub is not None:
        a_ub = extra_ub[0] if a_ub is None else sp.vstack([a_ub, extra_ub[0]]).tocsr()
        b_ub = extra_ub[1] if b_ub is None else np.concatenate([b_ub, extra_ub[1]])
    if lp.integrality is None:
        res = linprog(
            c,
            A_ub=a_ub,
            b_ub=b_ub,
            A_eq=lp.a_eq,
            b_eq=lp.b_eq,
            bounds=np.column_stack([lp.lb, lp.ub]),
            method="highs",
        )
        ok, status, msg = res.status == 0, res.status, res.message
    else:
        cons = [LinearConstraint(lp.a_eq, lp.b_eq, lp.b_eq)]
        if a_ub is not None:
            cons.append(LinearConstraint(a_ub, -np.inf, b_ub))
        res = milp(
            c,
            integrality=lp.integrality,
            bounds=Bounds(lp.lb, lp.ub),
            constraints=cons,
            options={"mip_rel_gap": 1e-6},
        )
        ok, status, msg = res.status == 0 and res.x is not None, res.status, res.message
    if not ok:
        raise OracleError(f"HiGHS did not solve the oracle LP (status {status}): {msg}")
    return np.asarray(res.x, float)


def _site_values(lp: Lp, c: FloatArray, x: FloatArray, n: int) -> FloatArray:
    """Per-site objective value (primary vector: its terminal-value constant included)."""
    v = np.bincount(lp.col_site, weights=c * x, minlength=n)
    return v + lp.const_prim if c is lp.c_prim else v


def solve_sites(inp: SiteInputs, obj: Objective) -> OracleSchedule:
    """Solve the oracle for all sites of ``inp`` as one block-diagonal LP (or MILP).

    Solves (1) the relaxed LP — V2X floor as its convex hull, no taper rows — whose
    objective is the certified lower bound; (2) if the solution discharges an EV
    below its floor or taper rows apply, the replayable LP (taper rows, discharge
    forbidden in the offending EV-ticks, repeated until none remain); (3) for
    non-cost objectives, the cheapest schedule among the optima of (2).
    """
    n = inp.n_sites
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    lp = build(inp, obj, relaxed=True)
    build_s = time.perf_counter() - t0
    solve_s = 0.0
    solves = 0

    def run(lp_: Lp, c, extra=None):
        nonlocal solve_s, solves
        t = time.perf_counter()
        x_ = _run_highs(lp_, c, extra)
        solve_s += time.perf_counter() - t
        solves += 1
        return x_

    x = run(lp, lp.c_prim + lp.c_tie)
    bound = _site_values(lp, lp.c_prim, x, n)
    has_taper = _has_taper(inp) and obj.taper == "inner"
    banned = None
    repairs = 0
    bad = _below_floor(inp, lp, x)
    while has_taper or bad.any():
        banned = bad if banned is None else banned | bad
        repairs += int(bad.sum())
        t = time.perf_counter()
        lp = build(inp, obj, relaxed=False, no_discharge=banned)
        build_s += time.perf_counter() - t
        x = run(lp, lp.c_prim + lp.c_tie)
        has_taper = False
        bad = _below_floor(inp, lp, x)
        if repairs > 50 * max(1, n) and bad.any():
            raise OracleError("V2X floor repairs do not converge")
    value = _site_values(lp, lp.c_prim, x, n)
    if obj.kind != "cost":
        # lexicographic: the cheapest among the schedules within 1e-7 of the optimum
        rows = sp.csr_array(
            (lp.c_prim, (lp.col_site, np.arange(lp.c_prim.size))), shape=(n, lp.c_prim.size)
        )
        tol = 1e-7 * np.maximum(np.abs(value), 1.0)
        x = run(lp, lp.c_cost + lp.c_tie, (rows, value - lp.const_prim + tol))
        value = _site_values(lp, lp.c_prim, x, n)
    sched = _extract(inp, lp, x)
    sched.objective = value
    sched.bound = np.minimum(bound, value)
    sched.build_time_s = build_s
    sched.solve_time_s = solve_s
    sched.n_solves = solves
    sched.extra["cpu_s"] = time.process_time() - cpu0  # in the process that solved it
    sched.floor_repairs = repairs
    sched.n_variables = lp.c_prim.size
    sched.n_constraints = lp.a_eq.shape[0] + (0 if lp.a_ub is None else lp.a_ub.shape[0])
    return sched


def _has_taper(inp: SiteInputs) -> bool:
    b = inp.battery
    has_b = (b.capacity_wh > 0) & (b.energy_taper_wh < b.energy_max_wh - 1e-6)
    e = inp.evs
    has_e = e is not None and e.n and bool((e.energy_taper_wh < e.energy_max_wh - 1e-6).any())
    return bool(has_b.any() or has_e)


def _below_floor(inp: SiteInputs, lp: Lp, x: FloatArray) -> npt.NDArray[np.bool_]:
    """EV-ticks (m, T) whose discharge takes the EV below its V2X floor in some piece."""
    evs = inp.evs
    if evs is None or not evs.n or "ed" not in lp.maps:
        return np.zeros((0, inp.n_ticks), bool)
    mp = lp.maps
    ed = mp["ed"]
    d = np.where(ed >= 0, x[np.maximum(ed, 0)], 0.0)
    q_ev, q_k = mp["q_ev"], mp["q_k"]
    e_end = x[mp["ee"]]
    low = mp["plugged"] & (d[q_ev, q_k] > 1e-7) & (e_end < evs.energy_min_wh[q_ev] / 1000.0 - 1e-6)
    out = np.zeros(ed.shape, bool)
    out[q_ev[low], q_k[low]] = True
    return out


def _extract(inp: SiteInputs, lp: Lp, x: FloatArray) -> OracleSchedule:
    n, t_n = inp.n_sites, inp.n_ticks
    mp = lp.maps
    pc = mp["pieces"]
    p_site, p_k, p_h = pc["site"], pc["k"], pc["h"]
    x = np.where(np.abs(x) < 1e-10, 0.0, x)

    def per_tick(vals_kw, pieces) -> FloatArray:
        return np.bincount(
            p_site[pieces] * t_n + p_k[pieces],
            weights=vals_kw * p_h[pieces] * 1000.0,
            minlength=n * t_n,
        ).reshape(n, t_n)

    allp = np.arange(p_site.size)
    imp = per_tick(x[mp["gi"]], allp)
    exp = per_tick(x[mp["ge"]], allp)
    curt = per_tick(x[mp["cu"]], mp["cu_p"])
    uns = per_tick(x[mp["us"]], mp["us_p"])
    bat = np.full((n, t_n), np.nan)
    if "bs" in mp:
        bat[mp["bs"]] = (x[mp["bc"]] - x[mp["bd"]]) * 1000.0
    m = inp.evs.n if inp.evs is not None else 0
    ev_sp = np.zeros((m, t_n))
    simultaneous = 0
    unmet = np.zeros(n)
    short = np.zeros(n)
    if m and "ec" in mp:
        ec, ed = mp["ec"], mp["ed"]
        ch = np.where(ec >= 0, x[np.maximum(ec, 0)], 0.0)
        dis = np.where(ed >= 0, x[np.maximum(ed, 0)], 0.0)
        simultaneous = int(((ch > 1e-6) & (dis > 1e-6)).sum())
        ev_sp = (ch - dis) * 1000.0
        evs = inp.evs
        if "dep_q" in mp and mp["dep_q"].size:
            e_dep = x[mp["ee"]][mp["dep_q"]]
            u = np.maximum(evs.target_wh[mp["dep_ev"]] - e_dep * 1000.0, 0.0)
            unmet += np.bincount(evs.site[mp["dep_ev"]], weights=u, minlength=n)
        if "dep0_unmet_kwh" in mp:
            unmet += mp["dep0_unmet_kwh"] * 1000.0
        if "sf" in mp:
            short += np.bincount(evs.site[mp["arr_ev"]], weights=x[mp["sf"]] * 1000.0, minlength=n)
    jobs_w = np.zeros((n, t_n))
    job_unmet = np.zeros(n)
    if "jc" in mp:
        jc = mp["jc"]
        jobs_w[mp["js"]] = np.where(jc >= 0, x[np.maximum(jc, 0)], 0.0) * 1000.0
        job_unmet[mp["js"]] = x[mp["ju"]].sum(axis=1) * 1000.0
    stored = np.zeros(n)
    if "bs" in mp:
        stored[mp["bs"]] += x[mp["be"][:, -1]] * 1000.0
    if "q_last" in mp:
        stored += np.bincount(inp.evs.site, weights=x[mp["ee"][mp["q_last"]]] * 1000.0, minlength=n)
    pi = inp.import_price_jpy_per_kwh
    pe = inp.export_price_jpy_per_kwh
    energy_cost = (imp @ pi - exp @ pe) / 1000.0
    carbon = imp @ inp.carbon_jpy_per_kwh / 1000.0
    co2 = imp @ inp.co2_g_per_kwh / 1e6
    hp = _hpwh_parts(inp, mp, x)
    return OracleSchedule(
        **hp,
        tick_s=inp.tick_s,
        battery_w=bat,
        ev_setpoint_w=ev_sp,
        deferrable_w=jobs_w,
        import_wh=imp,
        export_wh=exp,
        curtailment_wh=curt,
        unserved_wh=uns,
        cost_jpy=energy_cost + carbon,
        energy_cost_jpy=energy_cost,
        co2_kg=co2,
        ev_unmet_wh=unmet,
        ev_shortfall_wh=short,
        job_unmet_wh=job_unmet,
        stored_final_wh=stored,
        objective=np.zeros(n),
        bound=np.zeros(n),
        simultaneous_ev=simultaneous,
    )


def _hpwh_parts(inp: SiteInputs, mp: dict, x: FloatArray) -> dict:
    """Water heaters' power per tick, heat in, hot water not delivered, heat at the end."""
    if inp.hpwh is None:
        return {}
    n, t_n = inp.n_sites, inp.n_ticks
    hw = np.full((n, t_n), np.nan)
    heat, unmet, final = np.zeros(n), np.zeros(n), np.zeros(n)
    stored = np.full((n, t_n), np.nan)
    if "hs" in mp:
        hs = mp["hs"]
        w = x[mp["hw"]]
        hw[hs] = w * 1000.0
        heat[hs] = (w * mp["h_cop"]).sum(axis=1) * inp.tick_s / 3.6
        unmet[hs] = x[mp["hun"]].sum(axis=1) * 1000.0
        final[hs] = x[mp["hst"][:, -1]] * 1000.0
        stored[hs] = x[mp["hst"]] * 1000.0
    return {
        "hpwh_w": hw,
        "hpwh_heat_in_wh_th": heat,
        "hpwh_unmet_wh_th": unmet,
        "hpwh_stored_final_wh_th": final,
        "hpwh_stored_wh_th": stored,
    }


# ----------------------------------------------------------------------------- batches
def _solve_chunk(args: tuple[SiteInputs, Objective]) -> OracleSchedule:
    return solve_sites(*args)


def chunks_of(inp: SiteInputs, chunk_sites: int) -> list[IntArray]:
    """Site index chunks; sites with nothing to schedule are not solved at all."""
    n = inp.n_sites
    busy = np.zeros(n, bool)
    b = inp.battery
    busy |= (b.capacity_wh > 0) & ((b.max_charge_w > 0) | (b.max_discharge_w > 0))
    if inp.evs is not None and inp.evs.n:
        busy[inp.evs.site] = True
    if inp.jobs is not None:
        busy |= inp.jobs.max_w > 0
    if inp.hpwh is not None:
        busy |= inp.hpwh.has
    idx = np.flatnonzero(busy)
    return [idx[i : i + chunk_sites] for i in range(0, idx.size, chunk_sites)]


def passive_schedule(inp: SiteInputs, sites: IntArray) -> OracleSchedule:
    """Sites with no battery, EV or process: their grid flows follow from load and PV."""
    sub = inp.subset(sites)
    n, t_n = sub.n_sites, sub.n_ticks
    h = sub.tick_s / 3600.0
    net = (sub.load_w - np.maximum(sub.pv_w, 0.0)) * h
    imp = np.maximum(net, 0.0)
    lim_i = sub.import_limit_w[:, None] * h
    uns = np.maximum(imp - lim_i, 0.0)
    imp = imp - uns
    exp = np.maximum(-net, 0.0)
    lim_e = sub.export_limit_w[:, None] * h
    curt = np.maximum(exp - lim_e, 0.0)
    exp = exp - curt
    pi, pe = sub.import_price_jpy_per_kwh, sub.export_price_jpy_per_kwh
    energy_cost = (imp @ pi - exp @ pe) / 1000.0
    cost = energy_cost + imp @ sub.carbon_jpy_per_kwh / 1000.0
    co2 = imp @ sub.co2_g_per_kwh / 1e6
    z = np.zeros(n)
    return OracleSchedule(
        tick_s=sub.tick_s,
        battery_w=np.full((n, t_n), np.nan),
        ev_setpoint_w=np.zeros((0, t_n)),
        deferrable_w=np.zeros((n, t_n)),
        import_wh=imp,
        export_wh=exp,
        curtailment_wh=curt,
        unserved_wh=uns,
        cost_jpy=cost,
        energy_cost_jpy=energy_cost,
        co2_kg=co2,
        ev_unmet_wh=z,
        ev_shortfall_wh=z.copy(),
        job_unmet_wh=z.copy(),
        stored_final_wh=z.copy(),
        objective=z.copy(),
        bound=z.copy(),
    )


def solve(
    inp: SiteInputs,
    obj: Objective,
    *,
    chunk_sites: int = 25,
    workers: int = 1,
    on_chunk: Callable[[int, int], None] | None = None,
) -> OracleSchedule:
    """The oracle for every site of ``inp``: LPs of ``chunk_sites`` sites each, on
    ``workers`` processes; sites with nothing to schedule are metered directly.

    ``on_chunk(done, total)`` reports progress.  The result is assembled in site order.
    """
    n = inp.n_sites
    parts = chunks_of(inp, max(1, int(chunk_sites)))
    busy = np.concatenate(parts) if parts else np.empty(0, np.int64)
    idle = np.setdiff1d(np.arange(n), busy)
    results: list[OracleSchedule | None] = [None] * len(parts)
    tasks = [(inp.subset(s), obj) for s in parts]
    if workers > 1 and len(parts) > 1:
        import multiprocessing as mpc
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            max_workers=workers, mp_context=mpc.get_context("forkserver")
        ) as pool:
            for i, r in enumerate(pool.map(_solve_chunk, tasks)):
                results[i] = r
                if on_chunk is not None:
                    on_chunk(i + 1, len(parts))
    else:
        for i, task in enumerate(tasks):
            results[i] = _solve_chunk(task)
            if on_chunk is not None:
                on_chunk(i + 1, len(parts))
    out = _merge(
        inp,
        [*results, passive_schedule(inp, idle)] if idle.size else results,
        [*parts, idle] if idle.size else parts,
    )
    if idle.size:
        # passive sites: objective and bound are their (fixed) objective value
        v = _passive_objective(out, idle, obj)
        out.objective[idle] = v
        out.bound[idle] = v
    return out


def _passive_objective(s: OracleSchedule, idx: IntArray, obj: Objective) -> FloatArray:
    pen = s.unserved_wh[idx].sum(axis=1) / 1000.0 * obj.penalty * obj.unserved_factor
    if obj.kind == "cost":
        return s.cost_jpy[idx] + pen
    if obj.kind == "co2":
        return s.co2_kg[idx] + pen
    if obj.kind == "peak":
        return s.peak_kw[idx] + pen
    return s.curtailment_wh[idx].sum(axis=1) / 1000.0 + pen


def _merge(inp: SiteInputs, parts: list, sites: list[IntArray]) -> OracleSchedule:
    n, t_n = inp.n_sites, inp.n_ticks
    m = inp.evs.n if inp.evs is not None else 0

    def site_arr(shape_t: bool, fill=0.0):
        return np.full((n, t_n), fill) if shape_t else np.full(n, fill)

    out = OracleSchedule(
        tick_s=inp.tick_s,
        battery_w=site_arr(True, np.nan),
        ev_setpoint_w=np.zeros((m, t_n)),
        deferrable_w=site_arr(True),
        import_wh=site_arr(True),
        export_wh=site_arr(True),
        curtailment_wh=site_arr(True),
        unserved_wh=site_arr(True),
        cost_jpy=site_arr(False),
        energy_cost_jpy=site_arr(False),
        co2_kg=site_arr(False),
        ev_unmet_wh=site_arr(False),
        ev_shortfall_wh=site_arr(False),
        job_unmet_wh=site_arr(False),
        stored_final_wh=site_arr(False),
        objective=site_arr(False),
        bound=site_arr(False),
    )
    if inp.hpwh is not None:
        out.hpwh_w = site_arr(True, np.nan)
        out.hpwh_heat_in_wh_th = site_arr(False)
        out.hpwh_unmet_wh_th = site_arr(False)
        out.hpwh_stored_final_wh_th = site_arr(False)
        out.hpwh_stored_wh_th = site_arr(True, np.nan)
    for part, s in zip(parts, sites, strict=True):
        if inp.hpwh is not None and part.hpwh_w is not None:
            for name in (
                "hpwh_w",
                "hpwh_heat_in_wh_th",
                "hpwh_unmet_wh_th",
                "hpwh_stored_final_wh_th",
                "hpwh_stored_wh_th",
            ):
                getattr(out, name)[s] = getattr(part, name)
        for name in (
            "battery_w",
            "deferrable_w",
            "import_wh",
            "export_wh",
            "curtailment_wh",
            "unserved_wh",
            "cost_jpy",
            "energy_cost_jpy",
            "co2_kg",
            "ev_unmet_wh",
            "ev_shortfall_wh",
            "job_unmet_wh",
            "stored_final_wh",
            "objective",
            "bound",
        ):
            getattr(out, name)[s] = getattr(part, name)
        if m and part.ev_setpoint_w.shape[0]:
            evs = np.flatnonzero(np.isin(inp.evs.site, s))
            out.ev_setpoint_w[evs] = part.ev_setpoint_w
        out.solve_time_s += part.solve_time_s
        out.build_time_s += part.build_time_s
        out.n_variables += part.n_variables
        out.n_constraints += part.n_constraints
        out.n_solves += part.n_solves
        out.floor_repairs += part.floor_repairs
        out.simultaneous_ev += part.simultaneous_ev
    out.extra["chunks"] = len([p for p in parts if p.n_solves])
    out.extra["cpu_s"] = float(sum(p.extra.get("cpu_s", 0.0) for p in parts))
    return out
