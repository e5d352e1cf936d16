"""Assembly of one batch's block-diagonal LP: pieces, columns, rows, objective vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from cps_sim.control.oracle.data import (
    ARRIVAL,
    FloatArray,
    IntArray,
    Objective,
    SiteInputs,
)


# ----------------------------------------------------------------------------- assembly
@dataclass
class Cols:
    """Column allocator: lower/upper bounds and objective pieces."""

    n: int = 0
    lb: list = field(default_factory=list)
    ub: list = field(default_factory=list)

    def add(self, count: int, lb, ub) -> IntArray:
        idx = np.arange(self.n, self.n + count, dtype=np.int64)
        self.n += count
        self.lb.append(np.broadcast_to(np.asarray(lb, float), (count,)))
        self.ub.append(np.broadcast_to(np.asarray(ub, float), (count,)))
        return idx


class Rows:
    """COO row builder for one family of constraints (eq or ub)."""

    def __init__(self) -> None:
        self.n = 0
        self.r: list = []
        self.c: list = []
        self.v: list = []
        self.rhs: list = []

    def new(self, count: int, rhs) -> IntArray:
        idx = np.arange(self.n, self.n + count, dtype=np.int64)
        self.n += count
        self.rhs.append(np.broadcast_to(np.asarray(rhs, float), (count,)))
        return idx

    def add(self, rows, cols, vals) -> None:
        rows, cols, vals = np.broadcast_arrays(
            np.asarray(rows), np.asarray(cols), np.asarray(vals, float)
        )
        self.r.append(rows.ravel())
        self.c.append(cols.ravel())
        self.v.append(vals.ravel())

    def matrix(self, n_cols: int):
        if not self.n:
            return None, None
        a = sp.csr_array(
            (np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
            shape=(self.n, n_cols),
        )
        return a, np.concatenate(self.rhs)


@dataclass
class Lp:
    """One batch's LP plus the index maps needed to read the solution."""

    c_prim: FloatArray  # primary objective incl. penalties, per column
    const_prim: FloatArray  # per site: terminal value of the initial stored energy
    const_cost: FloatArray
    c_cost: FloatArray  # cost incl. penalties (lexicographic second stage)
    c_tie: FloatArray  # tie-breaks (wear, curtailment epsilon)
    lb: FloatArray
    ub: FloatArray
    a_eq: sp.csr_array
    b_eq: FloatArray
    a_ub: sp.csr_array | None
    b_ub: FloatArray | None
    col_site: IntArray  # site of each column (for per-site objective values)
    integrality: IntArray | None
    maps: dict


def pieces(inp: SiteInputs) -> dict:
    """Cut each site's horizon at tick boundaries and its own event times (integer ms)."""
    n, t_n = inp.n_sites, inp.n_ticks
    tick_ms = round(inp.tick_s * 1000)
    d_ms = t_n * tick_ms
    span = d_ms + 1
    grid = np.arange(t_n + 1, dtype=np.int64) * tick_ms
    keys = [(np.arange(n, dtype=np.int64)[:, None] * span + grid[None, :]).ravel()]
    ev = None
    # EVs at home at t = 0: all but those whose first trip event is a return (they start
    # the run away: world.trips.place_at_start, charging sessions)
    home0 = np.ones(inp.evs.n if inp.evs is not None else 0, bool)
    if inp.evs is not None and inp.evs.n and inp.trips is not None and inp.trips.ev.size:
        tr = inp.trips
        t_ms = np.round(tr.time_s * 1000.0).astype(np.int64)
        first = np.lexsort((t_ms, tr.ev))
        lead = np.ones(first.size, bool)
        lead[1:] = tr.ev[first][1:] != tr.ev[first][:-1]
        f = first[lead]
        home0[tr.ev[f]] = tr.kind[f] != ARRIVAL
        ok = (t_ms >= 0) & (t_ms < d_ms)  # the engine applies events strictly before the end
        order = np.lexsort((t_ms[ok], tr.ev[ok]))
        ev = {
            "ev": tr.ev[ok][order],
            "t": t_ms[ok][order],
            "kind": tr.kind[ok][order],
            "trip_kwh": tr.trip_wh[ok][order] / 1000.0,
        }
        keys.append(inp.evs.site[ev["ev"]] * span + ev["t"])
    win = None
    if inp.jobs is not None and inp.jobs.windows_s.size:
        w = np.round(np.asarray(inp.jobs.windows_s, float) * 1000.0).astype(np.int64)
        w = w[(w[:, 0] < d_ms) & (w[:, 1] > 0)]
        w = np.clip(w, 0, d_ms)
        win = w
        js = np.flatnonzero(inp.jobs.max_w > 0)
        if js.size and w.size:
            keys.append((js[:, None] * span + w.ravel()[None, :]).ravel())
    key = np.unique(np.concatenate(keys))
    site = key // span
    t = key % span
    same = site[1:] == site[:-1]
    p_site = site[:-1][same]
    p_t0 = t[:-1][same]
    p_t1 = t[1:][same]
    return {
        "site": p_site,
        "t0": p_t0,
        "t1": p_t1,
        "k": p_t0 // tick_ms,
        "h": (p_t1 - p_t0) / 3.6e6,
        "start": np.searchsorted(p_site, np.arange(n + 1)),
        "span": span,
        "d_ms": d_ms,
        "tick_ms": tick_ms,
        "ev": ev,
        "home0": home0,
        "win": win,
    }


class Build:
    """The LP of one batch under construction: column/row builders, objective parts and the
    index maps that read the solution back."""

    def __init__(
        self,
        inp: SiteInputs,
        obj: Objective,
        relaxed: bool,
        no_discharge: npt.NDArray[np.bool_] | None,
    ) -> None:
        self.inp, self.obj, self.relaxed, self.no_discharge = inp, obj, relaxed, no_discharge
        self.n, self.t_n = inp.n_sites, inp.n_ticks
        self.pc = pieces(inp)
        self.p_site, self.p_k, self.p_h = self.pc["site"], self.pc["k"], self.pc["h"]
        self.n_p = self.p_site.size
        self.tick_h = inp.tick_s / 3600.0
        self.load = inp.load_w[self.p_site, self.p_k] / 1000.0
        self.pv = np.maximum(inp.pv_w[self.p_site, self.p_k], 0.0) / 1000.0
        self.cols = Cols()
        self.eq, self.ub = Rows(), Rows()
        self.c_cost: list = []  # (cols, vals) pairs of each objective family
        self.c_co2: list = []
        self.c_curt: list = []
        self.c_pen: list = []
        self.c_tie: list = []
        self.site_of: list = []
        self.maps: dict = {"pieces": self.pc}
        self.bal = self.gi = None

    def col_site(self, idx, s) -> None:
        self.site_of.append(np.broadcast_to(np.asarray(s, np.int64), np.shape(idx)).ravel())


def build(
    inp: SiteInputs,
    obj: Objective,
    relaxed: bool,
    no_discharge: npt.NDArray[np.bool_] | None = None,
) -> Lp:
    """The batch's LP (``relaxed``: without the taper rows, for the bound)."""
    from cps_sim.control.oracle.evs import add_evs

    b = Build(inp, obj, relaxed, no_discharge)
    add_grid(b)
    add_batteries(b)
    if inp.hpwh is not None and inp.hpwh.has.any():
        add_hpwh(b)
    if inp.evs is not None and inp.evs.n:
        add_evs(b)
    add_processes(b)
    if obj.kind == "peak":
        add_peak(b)
    return finish(b)


def add_grid(b: Build) -> None:
    """Grid import/export, curtailment and unserved load per piece; the balance rows."""
    inp = b.inp
    obj = b.obj
    p_site = b.p_site
    p_k = b.p_k
    p_h = b.p_h
    n_p = b.n_p
    load = b.load
    pv = b.pv
    cols = b.cols
    eq = b.eq
    maps = b.maps
    col_site = b.col_site
    c_cost = b.c_cost
    c_co2 = b.c_co2
    c_curt = b.c_curt
    c_pen = b.c_pen
    c_tie = b.c_tie
    # ---- grid per piece
    gi = cols.add(n_p, 0.0, inp.import_limit_w[p_site] / 1000.0)
    ge = cols.add(n_p, 0.0, inp.export_limit_w[p_site] / 1000.0)
    col_site(gi, p_site)
    col_site(ge, p_site)
    p_imp = inp.import_price_jpy_per_kwh[p_k]
    p_exp = inp.export_price_jpy_per_kwh[p_k]
    c_cost += [(gi, p_h * (p_imp + inp.carbon_jpy_per_kwh[p_k])), (ge, -p_h * p_exp)]
    c_co2.append((gi, p_h * inp.co2_g_per_kwh[p_k] / 1000.0))
    bal = eq.new(n_p, load - pv)
    eq.add(bal, gi, 1.0)
    eq.add(bal, ge, -1.0)
    # curtailment can only be forced where PV minus load exceeds the export limit, and load
    # can only go unserved where it alone exceeds the import limit (every device may idle)
    exp_lim = inp.export_limit_w[p_site] / 1000.0
    cu_p = np.flatnonzero(np.isfinite(exp_lim) & (pv - load > exp_lim - 1e-9) & (pv > 0))
    cu = cols.add(cu_p.size, 0.0, pv[cu_p])
    col_site(cu, p_site[cu_p])
    eq.add(bal[cu_p], cu, -1.0)
    c_curt.append((cu, p_h[cu_p]))
    c_tie.append((cu, p_h[cu_p] * obj.curtail_eps))
    imp_lim = inp.import_limit_w[p_site] / 1000.0
    us_p = np.flatnonzero(np.isfinite(imp_lim) & (load - pv > imp_lim - 1e-9) & (load > 0))
    us = cols.add(us_p.size, 0.0, load[us_p])
    col_site(us, p_site[us_p])
    eq.add(bal[us_p], us, 1.0)
    c_pen.append((us, p_h[us_p] * obj.penalty * obj.unserved_factor))
    maps.update(gi=gi, ge=ge, cu=cu, cu_p=cu_p, us=us, us_p=us_p)
    b.bal, b.gi = bal, gi


def add_batteries(b: Build) -> None:
    """Battery set-points and energy per tick."""
    inp = b.inp
    obj = b.obj
    n = b.n
    t_n = b.t_n
    p_site = b.p_site
    p_k = b.p_k
    tick_h = b.tick_h
    cols = b.cols
    eq = b.eq
    ub = b.ub
    maps = b.maps
    col_site = b.col_site
    c_tie = b.c_tie
    relaxed = b.relaxed
    bal = b.bal
    # ---- batteries per tick
    b = inp.battery
    bs = np.flatnonzero((b.capacity_wh > 0) & ((b.max_charge_w > 0) | (b.max_discharge_w > 0)))
    nb = bs.size
    if nb:
        a = np.exp(-b.self_discharge_per_s[bs] * inp.tick_s)[:, None] * np.ones(t_n)
        bc = cols.add(nb * t_n, 0.0, np.repeat(b.max_charge_w[bs] / 1000.0, t_n)).reshape(nb, t_n)
        bd = cols.add(nb * t_n, 0.0, np.repeat(b.max_discharge_w[bs] / 1000.0, t_n)).reshape(
            nb, t_n
        )
        be_lb = np.repeat(b.energy_min_wh[bs] / 1000.0, t_n).reshape(nb, t_n)
        if b.final_energy_min_wh is not None:  # MPC: keep this much at the horizon end
            be_lb[:, -1] = np.minimum(
                np.maximum(be_lb[:, -1], b.final_energy_min_wh[bs] / 1000.0),
                b.energy_max_wh[bs] / 1000.0,
            )
        be = cols.add(
            nb * t_n, be_lb.ravel(), np.repeat(b.energy_max_wh[bs] / 1000.0, t_n)
        ).reshape(nb, t_n)
        for x in (bc, bd, be):
            col_site(x, bs[:, None])
        c_tie.append((bd, np.full(bd.shape, tick_h * obj.wear_jpy_per_kwh)))
        # balance: the battery's tick set-point in every piece of the tick
        bidx = np.full(n, -1)
        bidx[bs] = np.arange(nb)
        pb = np.flatnonzero(bidx[p_site] >= 0)
        eq.add(bal[pb], bc[bidx[p_site[pb]], p_k[pb]], -1.0)
        eq.add(bal[pb], bd[bidx[p_site[pb]], p_k[pb]], 1.0)
        e0 = b.energy_wh[bs] / 1000.0
        rhs = np.zeros((nb, t_n))
        rhs[:, 0] = a[:, 0] * e0
        dyn = eq.new(nb * t_n, rhs.ravel()).reshape(nb, t_n)
        eq.add(dyn, be, 1.0)
        eq.add(dyn[:, 1:], be[:, :-1], -a[:, 1:])
        eq.add(dyn, bc, -a * b.charge_efficiency[bs][:, None] * tick_h)
        eq.add(dyn, bd, a * tick_h / b.discharge_efficiency[bs][:, None])
        # CC-CV taper line P_line (E_max - E)/(E_max - E_taper), imposed at each tick end
        e_max = b.energy_max_wh[bs] / 1000.0
        den = e_max - b.energy_taper_wh[bs] / 1000.0
        tap = np.flatnonzero(den > 1e-9)
        if tap.size and not relaxed and obj.taper == "inner":
            line = b.max_charge_w[bs][tap] / 1000.0
            r = ub.new(tap.size * t_n, np.repeat(line * e_max[tap] / den[tap], t_n)).reshape(
                -1, t_n
            )
            ub.add(r, bc[tap], 1.0)
            ub.add(r, be[tap], (line / den[tap])[:, None] * np.ones(t_n))
        maps.update(bs=bs, bc=bc, bd=bd, be=be)


def add_hpwh(b: Build) -> None:
    """Heat-pump water heaters: electric power per tick, tank heat at each tick end.

    ``S[t] = e S[t-1] + C (1 - e)(T_env - T_cold) + phi (COP[t] w[t] h - draw[t] + u[t])``
    (kWh_th; ``u``: hot water not delivered, penalised), ``floor <= S <= max``, and
    ``S + c >= comfort`` with ``c`` penalised per kWh_th and tick hour; ``w <= Q_max/COP``.
    """
    inp, obj = b.inp, b.obj
    hw = inp.hpwh
    t_n, tick_h = b.t_n, b.tick_h
    hs = np.flatnonzero(hw.has)
    nh = hs.size
    cap = hw.capacity_wh_per_k[hs] / 1000.0  # kWh_th/K
    x = hw.ua_w_per_k[hs] / 1000.0 * tick_h / cap
    e = np.exp(-x)
    phi = np.where(x > 1e-12, -np.expm1(-x) / np.where(x > 1e-12, x, 1.0), 1.0)
    cop = np.maximum(hw.cop[hs], 1e-6)
    draw = hw.draw_wh_th[hs] / 1000.0
    w = b.cols.add(nh * t_n, 0.0, (hw.heat_max_w[hs][:, None] / 1000.0 / cop).ravel()).reshape(
        nh, t_n
    )
    st = b.cols.add(
        nh * t_n,
        np.repeat(hw.floor_wh_th[hs] / 1000.0, t_n),
        np.repeat(hw.max_wh_th[hs] / 1000.0, t_n),
    ).reshape(nh, t_n)
    un = b.cols.add(nh * t_n, 0.0, draw.ravel()).reshape(nh, t_n)
    cf = b.cols.add(nh * t_n, 0.0, np.inf).reshape(nh, t_n)
    for v in (w, st, un, cf):
        b.col_site(v, hs[:, None])
    b.c_pen.append((un, np.full(un.shape, obj.penalty)))
    b.c_pen.append((cf, np.full(cf.shape, obj.penalty * tick_h)))
    # balance: the unit's tick power in every piece of the tick
    hidx = np.full(b.n, -1)
    hidx[hs] = np.arange(nh)
    ph = np.flatnonzero(hidx[b.p_site] >= 0)
    b.eq.add(b.bal[ph], w[hidx[b.p_site[ph]], b.p_k[ph]], -1.0)
    env = (hw.ambient_c - hw.cold_water_c)[None, :] * (cap * (1.0 - e))[:, None]
    rhs = env - phi[:, None] * draw
    rhs[:, 0] += e * hw.stored_wh_th[hs] / 1000.0
    dyn = b.eq.new(nh * t_n, rhs.ravel()).reshape(nh, t_n)
    b.eq.add(dyn, st, 1.0)
    b.eq.add(dyn[:, 1:], st[:, :-1], -e[:, None] * np.ones(t_n - 1))
    b.eq.add(dyn, w, -(phi[:, None] * cop * tick_h))
    b.eq.add(dyn, un, -phi[:, None] * np.ones(t_n))
    r = b.ub.new(nh * t_n, np.repeat(-hw.comfort_wh_th[hs] / 1000.0, t_n)).reshape(nh, t_n)
    b.ub.add(r, st, -1.0)
    b.ub.add(r, cf, -1.0)
    b.maps.update(hs=hs, hw=w, hst=st, hun=un, hcf=cf, h_phi=phi, h_cop=cop)


def add_processes(b: Build) -> None:
    """Deferrable-process set-points per tick and energy per window."""
    inp = b.inp
    obj = b.obj
    n = b.n
    t_n = b.t_n
    pc = b.pc
    p_site = b.p_site
    p_k = b.p_k
    p_h = b.p_h
    cols = b.cols
    eq = b.eq
    maps = b.maps
    col_site = b.col_site
    c_pen = b.c_pen
    bal = b.bal
    # ---- deferrable processes
    jb = inp.jobs
    win = pc["win"]
    if jb is not None and win is not None and win.size and (jb.max_w > 0).any():
        js = np.flatnonzero(jb.max_w > 0)
        nw = win.shape[0]
        jidx = np.full(n, -1)
        jidx[js] = np.arange(js.size)
        w = np.searchsorted(win[:, 0], pc["t0"], side="right") - 1
        inwin = (w >= 0) & (jidx[p_site] >= 0)
        inwin[inwin] &= pc["t1"][inwin] <= win[w[inwin], 1]
        pj = np.flatnonzero(inwin)
        open_h = np.bincount(
            jidx[p_site[pj]] * t_n + p_k[pj], weights=p_h[pj], minlength=js.size * t_n
        ).reshape(js.size, t_n)
        onj = open_h > 1e-12
        jc = np.full((js.size, t_n), -1, np.int64)
        jc[onj] = cols.add(
            int(onj.sum()), 0.0, np.broadcast_to(jb.max_w[js][:, None] / 1000.0, onj.shape)[onj]
        )
        col_site(jc[onj], np.broadcast_to(js[:, None], onj.shape)[onj])
        eq.add(bal[pj], jc[jidx[p_site[pj]], p_k[pj]], -1.0)
        ju = cols.add(js.size * nw, 0.0, np.inf).reshape(js.size, nw)
        col_site(ju, js[:, None])
        c_pen.append((ju.ravel(), np.full(ju.size, obj.penalty)))
        r = eq.new(js.size * nw, np.repeat(jb.energy_wh[js] / 1000.0, nw)).reshape(js.size, nw)
        eq.add(r, ju, 1.0)
        # energy per (site, window): sum over its pieces of h * j[tick]
        eq.add(r[jidx[p_site[pj]], w[pj]], jc[jidx[p_site[pj]], p_k[pj]], p_h[pj])
        maps.update(js=js, jc=jc, ju=ju)


def add_peak(b: Build) -> None:
    """The site's highest tick-average import (objective 'peak')."""
    obj = b.obj
    n = b.n
    t_n = b.t_n
    p_site = b.p_site
    p_k = b.p_k
    p_h = b.p_h
    tick_h = b.tick_h
    cols = b.cols
    ub = b.ub
    maps = b.maps
    col_site = b.col_site
    gi = b.gi
    # ---- peak (per site)
    if obj.kind == "peak":
        pk = cols.add(n, 0.0, np.inf)
        col_site(pk, np.arange(n))
        r = ub.new(n * t_n, 0.0).reshape(n, t_n)
        ub.add(r[p_site, p_k], gi, p_h / tick_h)
        ub.add(r, pk[:, None], -1.0)
        maps["pk"] = pk


def finish(b: Build) -> Lp:
    """Objective vectors, matrices and bounds."""
    inp = b.inp
    obj = b.obj
    n = b.n
    cols = b.cols
    eq = b.eq
    ub = b.ub
    maps = b.maps
    c_cost = b.c_cost
    c_co2 = b.c_co2
    c_curt = b.c_curt
    c_pen = b.c_pen
    c_tie = b.c_tie
    evs = inp.evs
    nv = cols.n

    def vec(parts) -> FloatArray:
        if not parts:
            return np.zeros(nv)
        idx = np.concatenate([np.asarray(i).ravel() for i, _ in parts])
        val = np.concatenate([np.broadcast_to(v, np.shape(i)).ravel() for i, v in parts])
        return np.bincount(idx, weights=val, minlength=nv)

    # terminal value: - v x (energy stored at the end) + v x (energy stored at the start)
    end_cols: list = []
    e0_site = np.zeros(n)
    if "bs" in maps:
        end_cols.append(maps["be"][:, -1])
        e0_site += np.bincount(
            maps["bs"], weights=inp.battery.energy_wh[maps["bs"]] / 1000.0, minlength=n
        )
    if "ee" in maps:
        last = maps["q_last"]
        end_cols.append(maps["ee"][last])
        e0_site += np.bincount(inp.evs.site, weights=inp.evs.energy_wh / 1000.0, minlength=n)
    end = np.concatenate(end_cols) if end_cols else np.empty(0, np.int64)
    end_w = np.ones(end.size)
    if "hs" in maps and obj.terminal_cop > 0:  # tank heat, in kWh of electricity to reheat
        k_th = 1.0 / obj.terminal_cop
        end = np.concatenate([end, maps["hst"][:, -1]])
        end_w = np.concatenate([end_w, np.full(maps["hs"].size, k_th)])
        e0_site += np.bincount(
            maps["hs"], weights=k_th * inp.hpwh.stored_wh_th[maps["hs"]] / 1000.0, minlength=n
        )
    pen = vec(c_pen)
    v_cost = obj.terminal_value_jpy_per_kwh if obj.kind != "cost" else obj.terminal_value
    cost = vec(c_cost) + pen + vec([(end, -v_cost * end_w)])
    term = vec([(end, -obj.terminal_value * end_w)])
    prim = {
        "cost": cost,
        "co2": vec(c_co2) + pen + term,
        "curtailment": vec(c_curt) + pen + term,
        "peak": (vec([(maps["pk"], np.ones(n))]) + pen + term) if obj.kind == "peak" else None,
    }
    a_eq, b_eq = eq.matrix(nv)
    a_ub, b_ub = ub.matrix(nv)
    integ = None
    if obj.min_charge_w > 0 and evs is not None and evs.n:
        integ = np.zeros(nv, np.int64)
        for key in ("ec", "ed"):
            cc = maps[key]
            integ[cc[cc >= 0]] = 2  # semi-continuous: 0 or within [lb, ub]
    return Lp(
        c_prim=prim[obj.kind],
        const_prim=obj.terminal_value * e0_site,
        const_cost=v_cost * e0_site,
        c_cost=cost,
        c_tie=vec(c_tie),
        lb=np.concatenate(cols.lb),
        ub=np.concatenate(cols.ub),
        a_eq=a_eq,
        b_eq=b_eq,
        a_ub=a_ub,
        b_ub=b_ub,
        col_site=np.concatenate(b.site_of),
        integrality=integ,
        maps=maps,
    )
