"""EV rows of the oracle LP: set-points per tick, energy per piece, trips, targets, V2X
floor and CC-CV taper."""

from __future__ import annotations

import numpy as np

from cps_sim.control.oracle.assembly import Build
from cps_sim.control.oracle.data import (
    ARRIVAL,
    FloatArray,
)


def add_evs(b: Build) -> None:
    """EV set-points per tick, energy per piece, trips, targets, V2X floor, taper."""
    inp = b.inp
    obj = b.obj
    n = b.n
    t_n = b.t_n
    pc = b.pc
    p_k = b.p_k
    p_h = b.p_h
    cols = b.cols
    eq = b.eq
    ub = b.ub
    maps = b.maps
    col_site = b.col_site
    c_pen = b.c_pen
    c_tie = b.c_tie
    relaxed = b.relaxed
    no_discharge = b.no_discharge
    bal = b.bal
    # ---- EVs
    evs = inp.evs
    m = evs.n
    start = pc["start"]
    cnt = start[evs.site + 1] - start[evs.site]
    q_off = np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)
    n_q = int(q_off[-1])
    q_ev = np.repeat(np.arange(m), cnt)
    q_p = np.arange(n_q) - np.repeat(q_off[:-1], cnt) + np.repeat(start[evs.site], cnt)
    span = pc["span"]
    ev = pc["ev"]
    q_key = q_ev * span + pc["t0"][q_p]
    plugged = np.ones(n_q, bool)
    has_event = np.zeros(n_q, bool)  # an event of this EV at or before the piece start
    j_event = np.full(n_q, -1, np.int64)  # the latest such event
    if ev is not None and ev["ev"].size:
        e_key = ev["ev"] * span + ev["t"]
        j_event = np.searchsorted(e_key, q_key, side="right") - 1
        has_event = j_event >= 0
        has_event[has_event] = ev["ev"][j_event[has_event]] == q_ev[has_event]
        plugged = np.where(has_event, ev["kind"][np.maximum(j_event, 0)] == ARRIVAL, True)
    # before its first event an EV is at home unless it starts the run away
    plugged &= has_event | pc["home0"][q_ev]
    q_h = p_h[q_p] * plugged
    q_k = p_k[q_p]
    plug_h = np.bincount(q_ev * t_n + q_k, weights=q_h, minlength=m * t_n).reshape(m, t_n)
    on = plug_h > 1e-12

    def per_ev(values) -> FloatArray:
        return np.broadcast_to(np.asarray(values, float)[:, None], (m, t_n))

    # set-point columns; with a minimum current they are semi-continuous (0 or >= min)
    ec_col = np.full((m, t_n), -1, np.int64)
    ec_col[on] = cols.add(
        int(on.sum()),
        per_ev(np.minimum(obj.min_charge_w, evs.charger_w) / 1000.0)[on],
        per_ev(evs.charger_w / 1000.0)[on],
    )
    col_site(ec_col[on], per_ev(evs.site)[on].astype(np.int64))
    v2x = (evs.v2x_w > 0)[:, None] & on
    if no_discharge is not None:
        v2x &= ~no_discharge
    ed_col = np.full((m, t_n), -1, np.int64)
    ed_col[v2x] = cols.add(
        int(v2x.sum()),
        per_ev(np.minimum(obj.min_charge_w, evs.v2x_w) / 1000.0)[v2x],
        per_ev(evs.v2x_w / 1000.0)[v2x],
    )
    col_site(ed_col[v2x], per_ev(evs.site)[v2x].astype(np.int64))
    c_tie.append((ed_col[v2x], plug_h[v2x] * obj.wear_jpy_per_kwh))
    e_max = np.maximum(evs.energy_max_wh, evs.energy_wh) / 1000.0
    ee = cols.add(n_q, 0.0, e_max[q_ev])
    col_site(ee, evs.site[q_ev])
    # balance
    qp = np.flatnonzero(plugged)
    eq.add(bal[q_p[qp]], ec_col[q_ev[qp], q_k[qp]], -1.0)
    qd = qp[ed_col[q_ev[qp], q_k[qp]] >= 0]
    eq.add(bal[q_p[qd]], ed_col[q_ev[qd], q_k[qd]], 1.0)
    # dynamics
    first = np.zeros(n_q, bool)
    first[q_off[:-1][cnt > 0]] = True
    rhs = np.where(first, evs.energy_wh[q_ev] / 1000.0, 0.0)
    eta = evs.efficiency[q_ev]
    arr_q = dep_q = np.empty(0, np.int64)
    if ev is not None and ev["ev"].size:
        arr = ev["kind"] == ARRIVAL
        a_key = ev["ev"][arr] * span + ev["t"][arr]
        arr_q = np.searchsorted(q_key, a_key)
        rhs[arr_q] -= ev["trip_kwh"][arr]
        dep = ~arr & (ev["t"] > 0)
        d_key = ev["ev"][dep] * span + ev["t"][dep]
        dep_q = np.searchsorted(q_key, d_key) - 1
        maps.update(
            dep_q=dep_q,
            dep_ev=ev["ev"][dep],
            arr_q=arr_q,
            arr_ev=ev["ev"][arr],
            arr_trip=ev["trip_kwh"][arr],
        )
        dep0 = ~arr & (ev["t"] == 0)  # leaves at t = 0 with its initial energy
        maps["dep0_unmet_kwh"] = np.bincount(
            evs.site[ev["ev"][dep0]],
            weights=np.maximum(evs.target_wh[ev["ev"][dep0]] - evs.energy_wh[ev["ev"][dep0]], 0.0)
            / 1000,
            minlength=n,
        )
    dyn = eq.new(n_q, rhs)
    eq.add(dyn, ee, 1.0)
    nf = np.flatnonzero(~first)
    eq.add(dyn[nf], ee[nf - 1], -1.0)
    eq.add(dyn[qp], ec_col[q_ev[qp], q_k[qp]], -eta[qp] * q_h[qp])
    eq.add(dyn[qd], ed_col[q_ev[qd], q_k[qd]], q_h[qd] / eta[qd])
    if arr_q.size:
        sf = cols.add(arr_q.size, 0.0, np.inf)
        col_site(sf, evs.site[maps["arr_ev"]])
        eq.add(dyn[arr_q], sf, -1.0)
        c_pen.append((sf, np.full(sf.size, obj.penalty)))
        # non-negative right after the trip: e[-1] - trip + sf >= 0
        r = ub.new(arr_q.size, -maps["arr_trip"])
        prev = arr_q - 1  # an arrival is never an EV's first piece (it left first)
        ub.add(r, ee[prev], -1.0)
        ub.add(r, sf, -1.0)
        maps["sf"] = sf
    if dep_q.size:
        ud = cols.add(dep_q.size, 0.0, np.inf)
        col_site(ud, evs.site[maps["dep_ev"]])
        c_pen.append((ud, np.full(ud.size, obj.penalty)))
        r = ub.new(dep_q.size, -evs.target_wh[maps["dep_ev"]] / 1000.0)
        ub.add(r, ee[dep_q], -1.0)
        ub.add(r, ud, -1.0)
        maps["ud"] = ud
        ud_event = np.full(ev["ev"].size, -1, np.int64)
        ud_event[np.flatnonzero(dep)] = ud
        maps["ud_event"] = ud_event
    # V2X floor.  In a session that starts at or above the floor (the run start with
    # e0 >= floor, or a return after a trip no longer than target - floor when the
    # departure met its target) the engine keeps e >= floor throughout, so
    # e >= floor - u_dep(previous departure) is implied: exact.  In other sessions the
    # convex hull of 'no discharge' and 'end the tick at or above the floor' applies
    # (a relaxation; solve_sites repairs EV-ticks that discharge below the floor).
    flo = evs.energy_min_wh / 1000.0
    v2x_q = plugged & (evs.v2x_w[q_ev] > 0)
    strong = v2x_q & ~has_event & (evs.energy_wh[q_ev] / 1000.0 >= flo[q_ev] - 1e-12)
    u_prev = np.full(n_q, -1, np.int64)
    if ev is not None and ev["ev"].size and "ud_event" in maps:
        jj = np.maximum(j_event, 0)
        prev = np.maximum(jj - 1, 0)
        after = v2x_q & has_event
        ok = (
            after
            & (maps["ud_event"][prev] >= 0)
            & (evs.target_wh[q_ev] / 1000.0 - ev["trip_kwh"][jj] >= flo[q_ev] - 1e-12)
        )
        strong |= ok
        u_prev[ok] = maps["ud_event"][prev[ok]]
    qs = np.flatnonzero(strong)
    if qs.size:
        r = ub.new(qs.size, -flo[q_ev[qs]])
        ub.add(r, ee[qs], -1.0)
        qu = np.flatnonzero(u_prev[qs] >= 0)
        ub.add(r[qu], u_prev[qs[qu]], -1.0)
    qw = qd[~strong[qd]]
    if qw.size:
        fl = flo[q_ev[qw]] / (evs.v2x_w[q_ev[qw]] / 1000.0)  # kWh per kW
        r = ub.new(qw.size, 0.0)
        ub.add(r, ed_col[q_ev[qw], q_k[qw]], fl)
        ub.add(r, ee[qw], -1.0)
    # CC-CV taper along the pack's line, imposed at each piece end (the highest energy of a
    # charging piece, so the engine's exact taper never binds below the set-point)
    den_all = (evs.energy_max_wh - evs.energy_taper_wh) / 1000.0
    tq = qp[den_all[q_ev[qp]] > 1e-9]
    if tq.size and not relaxed and obj.taper == "inner":
        e_i = q_ev[tq]
        den = den_all[e_i]
        line = evs.taper_line_w[e_i] / 1000.0
        r = ub.new(tq.size, line * (evs.energy_max_wh[e_i] / 1000.0) / den)
        ub.add(r, ec_col[e_i, q_k[tq]], 1.0)
        ub.add(r, ee[tq], line / den)
    maps["q_last"] = q_off[1:][cnt > 0] - 1
    maps["q_last"] = q_off[1:][cnt > 0] - 1
    maps.update(
        ec=ec_col, ed=ed_col, ee=ee, q_ev=q_ev, q_k=q_k, q_p=q_p, plugged=plugged, plug_h=plug_h
    )
