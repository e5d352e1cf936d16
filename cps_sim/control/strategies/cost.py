"""``cost``: cost-optimised — charge in the cheapest slots before departure.

For each plugged EV the planner takes its next departure and target
(``common.departure_and_target``: the world's departure, else the repeating
weekly plan; a known upcoming trip raises the target), lays the horizon
``[now, departure)`` out in price slots (``cfg.slot_s``, prices from
``cfg.price_forecast``), and fills the cheapest slots first (ties: earlier
first) up to the energy needed — the optimum of this linear problem.

PV surplus is priced at its opportunity cost (``cfg.value_surplus``): in each slot
the EV's share of the site's forecast surplus (``common.surplus_forecast_w``: PV
from ``cfg.pv_forecast``, load by persistence; now: the measured surplus) is
energy worth the export price it would otherwise earn, and surplus beyond the
site's export limit (which would be curtailed) is free.  So a slot is split into
up to three tiers — free surplus, exported surplus, grid — and the cheapest tiers
of all slots are filled first: the EV charges on the sun before the cheap night
hours whenever the sun comes before its departure.  Surplus present now whose
opportunity cost is below the cheapest import price of the horizon is also taken
beyond the target (up to the top of the SoC window): it displaces grid energy the
EV would need after its next trip.

The setpoint is the power that delivers the current slot's share in what is left
of the slot (at least the minimum current).  Re-planned at every decision, so
a late arrival, a changed target or a missed slot is absorbed.  When the
target cannot be reached (not enough time) every slot is used, i.e. full
power until departure.  With no known departure the horizon is
``cfg.horizon_s``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cps_sim.control.observation import FloatArray, IntArray, Observation
from cps_sim.control.strategies.common import (
    StrategyConfig,
    StrategyState,
    departure_and_target,
    planning_rate_w,
    remember_site_inputs,
    surplus_forecast_w,
    wants_energy,
    weight_fractions,
)


def plan_charge_w(
    now_s: float,
    obs: Observation,
    cfg: StrategyConfig,
    departure_s: FloatArray,
    target_wh: FloatArray,
    surplus_fn: Callable[[FloatArray, IntArray], FloatArray] | None = None,
) -> FloatArray:
    """Charging power now [W] per EV from the cheapest-slots plan.

    ``surplus_fn(slot_starts_s, sites) -> (len(sites), len(slot_starts_s))``: forecast
    PV surplus at the given sites (one per EV, so they may repeat) per slot (the first
    slot is the one of ``now_s``); None prices every slot at the import price.  Only
    plugged EVs with room are planned (the others get 0 W and take no share of a site's
    surplus), and only those short of their target are laid out over the slots (the
    others only look at the surplus now), so the plan's cost grows with the EVs that
    want energy, not with the fleet.
    """
    n = obs.n_evs
    plugged_room = wants_energy(obs)
    if n == 0 or not plugged_room.any():
        return np.zeros(n)
    j = np.flatnonzero(plugged_room)  # the EVs planned
    m = j.size
    e_wh = obs.ev_energy_wh[j]
    charger_w = obs.ev_charger_w[j]
    tgt_wh = target_wh[j]
    active = tgt_wh > e_wh + 1.0
    needed_grid_wh = np.where(active, (tgt_wh - e_wh) / cfg.charge_efficiency, 0.0)
    end = np.minimum(departure_s[j], now_s + cfg.horizon_s)
    overdue = active & (end <= now_s)  # departure passed but still plugged: full power
    last = float(np.max(np.where(~overdue, np.maximum(end, now_s + 1.0), now_s)))
    t0 = np.floor(now_s / cfg.slot_s) * cfg.slot_s
    n_slots = max(1, int(np.ceil((last - t0) / cfg.slot_s - 1e-9)))
    starts = t0 + cfg.slot_s * np.arange(n_slots)
    if cfg.price_forecast is not None:
        prices = np.asarray(cfg.price_forecast(starts), float).reshape(n_slots)
    else:
        prices = np.full(n_slots, float(np.mean(obs.import_price_jpy_per_kwh)))
    buy = np.flatnonzero(active)  # the planned EVs (rows of j) short of their target
    # hours available in each slot for each EV that buys (len(buy) x n_slots), and in
    # the current slot for every planned EV
    lo = np.maximum(starts, now_s)
    avail_h = np.maximum(np.minimum(starts + cfg.slot_s, end[buy, None]) - lo, 0.0) / 3600.0
    h_now = np.maximum(np.minimum(starts[0] + cfg.slot_s, end) - lo[0], 0.0) / 3600.0
    rate = planning_rate_w(obs, cfg)[j]
    # slot capacity at the planning rate (import headroom, derating), so that a
    # plan that just fits is still met when the home load takes some of the limit
    cap_wh = rate[buy, None] * avail_h
    if surplus_fn is None:
        tier_price = prices[:, None]
        tier_cap = cap_wh[:, :, None]
    else:
        tier_price, tier_cap, share_now, opp_now = _surplus_tiers(
            obs, cfg, j, buy, starts, prices, cap_wh, avail_h, surplus_fn
        )
    # one row per planned EV, zero where it buys nothing: how BLAS rounds a row of the
    # product depends on the matrix's shape, and this shape keeps every plan bit for
    # bit what it is when all the planned EVs are laid out over the slots
    caps_wh = np.zeros((m, tier_price.size))
    caps_wh[buy] = tier_cap.reshape(buy.size, tier_price.size)
    alloc = allocate_now_wh(tier_price, caps_wh, needed_grid_wh)
    # the tiers added in order: alloc.sum(axis=1), without numpy's slow reduce over k columns
    alloc_now = alloc[:, 0].copy()
    for tier in range(1, alloc.shape[1]):
        alloc_now += alloc[:, tier]
    p = np.divide(alloc_now, h_now, out=np.zeros(m), where=h_now > 0)
    # a slot planned full runs at full power (the derating is the planner's margin)
    p = np.where(p >= rate - 1e-6, charger_w, p)
    if surplus_fn is not None:
        # below the minimum current a charger cannot follow a trickle of surplus without
        # importing the rest: charge only where the plan buys grid energy now anyway
        # (the last slot before departure always charges what the target still needs)
        grid_now = alloc[:, 2] > 1e-9
        last_slot = end - now_s <= cfg.slot_s
        p = np.where((p < cfg.min_1p_w) & ~grid_now & ~overdue & ~last_slot, 0.0, p)
        if cfg.store_surplus:
            # surplus now that is cheaper than any grid energy it could displace: store it
            take = (opp_now < float(np.min(prices))) & (share_now >= cfg.min_1p_w)
            p = np.where(take, np.maximum(p, share_now), p)
    p = np.where(p > 1e-6, np.maximum(p, cfg.min_1p_w), 0.0)
    p = np.where(overdue, charger_w, p)
    out = np.zeros(n)
    out[j] = np.minimum(p, charger_w)
    return out


def allocate_now_wh(tier_price: FloatArray, cap_wh: FloatArray, need_wh: FloatArray) -> FloatArray:
    """Energy [Wh] each EV buys in the tiers of the current slot when it fills the
    cheapest tiers first (the optimum of this linear problem).

    ``tier_price`` (n_slots, k): the same for every EV; ``cap_wh`` (n_evs, n_slots * k),
    slot-major; ``need_wh`` (n_evs,).  Returns (n_evs, k).  Ties keep the earlier slot
    (and tier) first.  One stable sort orders the tiers of every EV; what a tier of
    the current slot gets is the need left after every tier sorted before it, so only
    one product of the capacities with a (tiers x k) "sorted before" matrix is needed,
    not the whole allocation.
    """
    k = tier_price.shape[1]
    order = np.argsort(tier_price.reshape(-1), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    before_now = (rank[:, None] < rank[None, :k]).astype(float)
    before = cap_wh @ before_now
    return np.minimum(np.maximum(need_wh[:, None] - before, 0.0), cap_wh[:, :k])


def _surplus_tiers(obs, cfg, j, buy, starts, prices, cap_wh, avail_h, surplus_fn):
    """The tiers free surplus, exported surplus and grid for the planned EVs ``j``: their
    price per slot (n_slots, 3; the same for every EV); their capacity [Wh] per slot
    for the EVs ``j[buy]`` that buy (len(buy), n_slots, 3); every planned EV's surplus
    share now [W] and its opportunity cost [JPY/kWh].  A site's surplus is shared among
    all its planned EVs; it is forecast beyond now at the sites of the EVs that buy."""
    n_slots = starts.size
    site = obs.ev_site[j]
    limit_w = (
        np.full(obs.n_sites, np.inf)
        if obs.site_export_limit_w is None
        else np.asarray(obs.site_export_limit_w, float)
    )
    # each planned EV's share of its site's surplus, in proportion to its charger
    frac = weight_fractions(site, obs.ev_charger_w[j], obs.n_sites)
    if cfg.export_price_forecast is not None:
        p_exp = np.asarray(cfg.export_price_forecast(starts), float).reshape(n_slots)
    else:
        p_exp = np.full(n_slots, float(np.mean(obs.export_price_jpy_per_kwh)))
    price = np.empty((n_slots, 3))
    price[:, 0] = 0.0
    price[:, 1] = p_exp
    price[:, 2] = prices
    sur_now = _in_slots(surplus_fn(starts[:1], site), 1)[:, 0]  # at each EV's site
    share_now = sur_now * frac
    opp_now = np.where(np.maximum(sur_now - limit_w[site], 0.0) > 0, 0.0, p_exp[0])
    # the EVs that buy: their share of the surplus per slot, the curtailed part first
    sur = _in_slots(surplus_fn(starts, site[buy]), n_slots)
    free_w = np.maximum(sur - limit_w[site[buy], None], 0.0)  # would be curtailed
    paid_w = sur - free_w  # would be exported
    f = frac[buy, None]
    cap = np.empty((*cap_wh.shape, 3))  # free, paid, grid per EV and slot
    free_wh = np.minimum(free_w * f * avail_h, cap_wh, out=cap[:, :, 0])
    paid_wh = np.minimum(paid_w * f * avail_h, cap_wh - free_wh, out=cap[:, :, 1])
    np.subtract(cap_wh - free_wh, paid_wh, out=cap[:, :, 2])
    return price, cap, share_now, opp_now


def _in_slots(surplus_w: FloatArray, n_slots: int) -> FloatArray:
    """``surplus_w`` (n, T) cut or padded with zeros to ``n_slots`` columns."""
    surplus_w = np.asarray(surplus_w, float)
    if surplus_w.shape[1] == n_slots:
        return surplus_w
    out = np.zeros((surplus_w.shape[0], n_slots))
    w = min(n_slots, surplus_w.shape[1])
    out[:, :w] = surplus_w[:, :w]
    return out


def charge_plan_w(
    now_s: float,
    obs: Observation,
    state: StrategyState,
    cfg: StrategyConfig,
    departure_s: FloatArray,
    target_wh: FloatArray,
) -> FloatArray:
    """:func:`plan_charge_w` with the PV surplus forecast (``cfg.value_surplus``)."""
    surplus = None
    if cfg.value_surplus:
        remember_site_inputs(now_s, obs, state, cfg.slot_s)

        def surplus(starts: FloatArray, sites: IntArray) -> FloatArray:
            return surplus_forecast_w(now_s, obs, state, cfg, starts, sites)

    return plan_charge_w(now_s, obs, cfg, departure_s, target_wh, surplus)


def setpoints_w(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, StrategyState]:
    dep, target = departure_and_target(now_s, obs, state, cfg)
    return charge_plan_w(now_s, obs, state, cfg, dep, target), state
