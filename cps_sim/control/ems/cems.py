"""CEMS: a community of sites behind one point of common coupling (PCC).

Self-owned-line microgrid (自営線マイクログリッド, seed L1152-1175): the
community's sites share private lines, so what one site exports another can
use; only the *net* flows through the PCC:

    pcc_import = sum_i import_i - sum_i export_i  <=  pcc_limit   (0 when islanded)

The CEMS acts only through setpoints, per decision, over all member sites at
once (concatenated member groups, no per-site loop):

1. EV charging (delegated strategy) and home batteries (self-consumption) are
   decided with powers the devices can *hold* until the next decision, so the
   predicted site nets stay true over the interval (load and PV are constant
   within a settlement tick; the interval divides the tick);
2. the shared battery (sites of ``shared`` groups) charges from the community
   surplus (less the margin) and discharges into its deficit, within its power
   and what it can hold for the interval; while connected it discharges only
   above ``shared_reserve_soc`` and refills to it from the grid (PCC limit
   permitting), so an outage finds it charged; while islanded, once its usable
   energy is less than the top priority class's present demand until the end
   of the outage, it discharges only for that class (rationing);
3. allowed import ``A = pcc_limit + sum of site exports - margin``; if the
   demand fits, each site's import limit is its own demand (no limits while
   grid-connected with no PCC limit); otherwise EV charging stops at every site
   (steps 1-2 are redone without it, so PV that EVs took is exported), then
   load is shed by priority class: the highest class is served first, a class
   that does not fit gets the same fraction of its demand at every site, the
   classes below get nothing.  The engine enforces the limits (EV throttled
   first, then load unserved), so the PCC bound holds at every instant of the
   interval up to floating-point rounding;
4. islanded, nothing may leave either: each exporting site's ``export_limit_w``
   is its predicted export scaled so that the exports add up to the imports
   served; the surplus nobody can use or store is curtailed at the sites, and
   EV charging is capped at what each EV can hold until the next decision.

Things that would break the bound and are excluded: EV discharge counted as
supply (EV setpoints >= 0 here), transport latency (setpoints apply late),
per-site export limits (exports curtailed by the engine are not seen).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from cps_sim.control.base import battery_setpoints
from cps_sim.control.ems.common import EvDelegate, site_sum
from cps_sim.control.observation import FloatArray, IntArray, Observation
from cps_sim.core.bus import Topics, Transport
from cps_sim.core.units import SECONDS_PER_HOUR


@dataclass(frozen=True)
class CemsConfig:
    groups: tuple[str, ...]  # member groups, keyed group first
    shared: tuple[bool, ...]  # per member group: its batteries serve the community
    priority: IntArray  # per site of the concatenation; higher = shed last
    evs: tuple[EvDelegate, ...]
    interval_s: float = 900.0
    pcc_import_limit_w: float = np.inf
    outages_s: tuple[tuple[float, float], ...] = ()
    margin_w: float = 1.0
    shared_reserve_soc: float = 0.5  # kept for outages while connected


@dataclass
class CemsStats:
    times_s: list[float] = field(default_factory=list)
    islanded: list[bool] = field(default_factory=list)
    allowed_import_w: list[float] = field(default_factory=list)
    demand_w: list[float] = field(default_factory=list)
    shed_w: list[FloatArray] = field(default_factory=list)  # per site load shed [W]
    limit_w: list[FloatArray] = field(default_factory=list)  # per site import limit [W]
    shared_battery_w: list[float] = field(default_factory=list)
    export_limit_w: list[FloatArray] = field(default_factory=list)  # per site [W]


class CemsController:
    """Decides for several groups at once: ``decide(now_s, {group: obs}) -> {group: setpoints}``."""

    def __init__(self, cfg: CemsConfig, name: str = "cems"):
        self.cfg = cfg
        self.name = name
        self.interval_s = cfg.interval_s
        self.stats = CemsStats()

    def islanded(self, now_s: float) -> bool:
        return any(a <= now_s < b for a, b in self.cfg.outages_s)

    def decide(
        self, now_s: float, obs_by_group: dict[str, Observation]
    ) -> dict[str, dict[str, np.ndarray]]:
        cfg = self.cfg
        island = self.islanded(now_s)
        obs = [obs_by_group[g] for g in cfg.groups]
        sizes = [o.n_sites for o in obs]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # ---- EVs (charging only) and each site's own battery
        ev_sp, ev_site, base, lo_all, hi_all, shared_site = [], [], [], [], [], []
        for o, d, sh in zip(obs, cfg.evs, cfg.shared, strict=True):
            sp = d(now_s, o)
            if sp is None:
                sp = np.where(o.ev_plugged & (o.ev_soc < 1.0), o.ev_charger_w, 0.0)
            # only plugged EVs draw; an EV arriving before the next decision waits for it
            sp = np.where(o.ev_plugged, np.clip(sp, 0.0, o.ev_charger_w), 0.0)
            if island:
                # islanded, an EV must hold its power until the next decision (filling
                # up or tapering, its site's import would fall and another site's
                # export would leave the island): the EV model's holdable range
                sp = np.minimum(sp, o.ev_range_w(cfg.interval_s)[1])
            ev_sp.append(sp)
            ev_site.append(site_sum(o, sp))
            base.append(o.site_load_w - o.site_pv_w)
            lo, hi = o.battery_range_w(cfg.interval_s)
            lo_all.append(lo)
            hi_all.append(hi)
            shared_site.append(np.full(o.n_sites, sh))
        ev_w = np.concatenate(ev_site)
        load_net = np.concatenate(base)
        lo = np.concatenate(lo_all)
        hi = np.concatenate(hi_all)
        shared = np.concatenate(shared_site)
        energy = np.concatenate([o.battery_energy_wh for o in obs])
        cap = np.concatenate([o.battery_capacity_wh for o in obs])
        sh_cap = float(cap[shared].sum())
        sh_soc = float(energy[shared].sum()) / sh_cap if sh_cap > 0 else 0.0
        limit_pcc = 0.0 if island else cfg.pcc_import_limit_w

        top = cfg.priority == cfg.priority.max()
        emin = np.concatenate([o.battery_spec.energy_min_wh for o in obs])
        eta_d = np.concatenate([o.battery_spec.discharge_efficiency for o in obs])
        usable_wh = float((np.maximum(energy - emin, 0.0) * eta_d)[shared].sum())
        ends = [b for a, b in cfg.outages_s if a <= now_s < b]
        left_h = (max(ends) - now_s) / SECONDS_PER_HOUR if ends else 0.0

        def balance(ev: FloatArray) -> tuple[FloatArray, FloatArray, float]:
            """Battery powers and site nets for EV power ``ev`` (per site)."""
            net = load_net + ev
            bat = np.where(shared, 0.0, np.clip(-net, lo, hi))  # own batteries
            comm = float((net + bat).sum())  # shared sites' own net included
            if comm < 0:  # surplus: charge (connected: keeping the margin exported)
                keep = 0.0 if island else cfg.margin_w  # islanded, what is left is curtailed
                p = min(max(-comm - keep, 0.0), float(hi[shared].sum()))
            elif island or sh_soc > cfg.shared_reserve_soc:  # deficit (+ the margin)
                cover = comm
                if island:  # ration: keep the energy the top class needs to the outage end
                    top_w = float(np.maximum(net + bat, 0.0)[top].sum())
                    if usable_wh < top_w * left_h:
                        cover = min(comm, top_w)
                p = max(-cover - cfg.margin_w, float(lo[shared].sum()))
            else:
                p = 0.0
            if not island and sh_soc < cfg.shared_reserve_soc:  # refill the outage reserve
                room = limit_pcc - comm - cfg.margin_w
                p = max(p, min(float(hi[shared].sum()), max(room, 0.0)))
            rng = np.where(p >= 0, hi, -lo)
            tot = float(rng[shared].sum())
            if shared.any() and tot > 0:
                bat = np.where(shared, p * rng / tot, bat)
            else:
                p = 0.0
            return bat, net + bat, p

        bat, site_net, p_sh = balance(ev_w)
        # ---- PCC: allowed import and shedding by priority
        demand = np.maximum(site_net, 0.0)
        allowed = limit_pcc + float(np.maximum(-site_net, 0.0).sum()) - cfg.margin_w
        total = float(demand.sum())
        shed = np.zeros_like(demand)
        if np.isfinite(allowed) and total > allowed + 1e-6 * (1.0 + total):
            # short: EV charging stops everywhere, then load is shed by priority class
            bat, site_net, p_sh = balance(np.zeros_like(ev_w))
            ev_sp = [np.zeros_like(sp) for sp in ev_sp]
            demand = np.maximum(site_net, 0.0)
            allowed = max(limit_pcc + float(np.maximum(-site_net, 0.0).sum()) - cfg.margin_w, 0.0)
            total = float(demand.sum())
            classes, cls_idx = np.unique(cfg.priority, return_inverse=True)
            cls_dem = np.bincount(cls_idx, weights=demand, minlength=classes.size)
            order = np.arange(classes.size)[::-1]  # serve from the highest class down
            before = np.cumsum(cls_dem[order]) - cls_dem[order]
            served = np.clip(allowed - before, 0.0, cls_dem[order])
            frac_cls = np.ones(classes.size)
            frac_cls[order] = np.divide(
                served, cls_dem[order], out=np.ones_like(served), where=cls_dem[order] > 0
            )
            limit = demand * frac_cls[cls_idx]
            shed = demand - limit
        elif np.isfinite(allowed):
            limit = demand  # exactly each site's demand: nothing may grow until next decision
        else:
            limit = np.full_like(demand, np.inf)
        # ---- PCC export: islanded, the sites may export only what other sites import
        supply = np.maximum(-site_net, 0.0)
        if island:
            room = float(np.minimum(limit, demand).sum())  # imports served this interval
            total_sup = float(supply.sum())
            scale = min(1.0, room / total_sup) if total_sup > 0 else 0.0
            export_limit = supply * scale  # the rest of the surplus is curtailed at the sites
        else:
            export_limit = np.full_like(supply, np.inf)
        self.stats.times_s.append(now_s)
        self.stats.islanded.append(island)
        self.stats.allowed_import_w.append(allowed)
        self.stats.demand_w.append(total)
        self.stats.shed_w.append(shed)
        self.stats.limit_w.append(limit)
        self.stats.shared_battery_w.append(p_sh)
        self.stats.export_limit_w.append(export_limit)
        out: dict[str, dict[str, np.ndarray]] = {}
        for i, (g, o) in enumerate(zip(cfg.groups, obs, strict=True)):
            s = slice(bounds[i], bounds[i + 1])
            out[g] = {
                "ev_setpoint_w": ev_sp[i],
                **battery_setpoints(bat[s], o.battery_capacity_wh > 0),
                "import_limit_w": np.maximum(limit[s], 0.0),
                "export_limit_w": np.maximum(export_limit[s], 0.0),
            }
        return out


def cems_process(
    env: simpy.Environment,
    world: Any,
    controller: CemsController,
    transport: Transport,
    *,
    ttl_s: float | None = None,
) -> Generator[simpy.Event, Any, None]:
    """Observe every member group -> decide -> publish one setpoint message per group.

    The multi-group twin of ``control.base.controller_process`` (same topics and
    payloads, so ``device_process`` applies them unchanged).
    """
    interval = float(controller.interval_s)
    ttl = float(ttl_s) if ttl_s is not None else 3.0 * interval
    groups = controller.cfg.groups
    edges = sorted({t for window in controller.cfg.outages_s for t in window})
    while True:
        now = float(env.now)
        world.advance_to(now)
        obs = {g: world.observe(g) for g in groups}
        for g, sp in controller.decide(now, obs).items():
            payload: dict[str, Any] = {k: np.asarray(v, dtype=float) for k, v in sp.items()}
            payload["ttl_s"] = ttl
            transport.publish(Topics.setpoints(g), payload)
        # next decision: the next multiple of the interval, or an outage start/end if sooner
        nxt = (math.floor(now / interval + 1e-9) + 1) * interval
        for t in edges:
            if now < t < nxt:
                nxt = t
                break
        yield env.timeout(nxt - now)
