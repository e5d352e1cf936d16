"""The ``cost`` planner against a plain per-EV reference: every plugged EV with room
fills its free-surplus, exported-surplus and grid tiers cheapest first (ties: earlier
slot and tier first), the surplus forecast from what was seen in the same slot of the
day (or now) and the PV forecast (or the PV seen), shared among a site's planned EVs by
charger.  Random sites with several EVs each, export limits, price ties, EVs at their
target (only storing surplus), overdue EVs and departures beyond the horizon."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from cps_sim.control.strategies.common import StrategyConfig, StrategyState, planning_rate_w
from cps_sim.control.strategies.cost import charge_plan_w
from tests.unit.control_helpers import make_obs

H = 3600.0


def _import_price(t):
    return np.where((np.asarray(t) // H) % 24 < 7, 20.0, 30.0)  # long runs of ties


def _export_price(t):
    return np.where((np.asarray(t) // H) % 24 < 12, 8.5, 20.0)  # ties with the import price


def _pv_peak_w(n_sites):
    return np.linspace(0.0, 6000.0, n_sites)


def _pv_forecast(n_sites):
    peak = _pv_peak_w(n_sites)

    def fc(t):
        hour = (np.asarray(t) % 86400.0) / H
        return peak[:, None] * np.clip(np.sin((hour - 6.0) / 12.0 * math.pi), 0.0, None)

    return fc


def _reference_w(now_s, obs, cfg, dep_s, target_wh, seen):
    """Setpoints [W] of the planner computed EV by EV with explicit loops; ``seen``:
    {(site, slot of the day): (load, pv)} observed before (and now)."""
    n = obs.n_evs
    slot = cfg.slot_s
    per_day = round(86400.0 / slot)
    planned = [
        k for k in range(n) if obs.ev_plugged[k] and obs.ev_energy_wh[k] < obs.ev_capacity_wh[k] - 1
    ]
    out = np.zeros(n)
    if not planned:
        return out
    rate = planning_rate_w(obs, cfg)
    end = {k: min(dep_s[k], now_s + cfg.horizon_s) for k in planned}
    active = {k: target_wh[k] > obs.ev_energy_wh[k] + 1.0 for k in planned}
    overdue = {k: active[k] and end[k] <= now_s for k in planned}
    last = max(now_s if overdue[k] else max(end[k], now_s + 1.0) for k in planned)
    t0 = math.floor(now_s / slot) * slot
    n_slots = max(1, math.ceil((last - t0) / slot - 1e-9))
    starts = [t0 + slot * s for s in range(n_slots)]
    imp = [float(_import_price(t)) for t in starts]
    exp = [float(_export_price(t)) for t in starts]
    limit = obs.site_export_limit_w

    def surplus_w(site, s):
        load_now, pv_now = obs.site_load_w[site], obs.site_pv_w[site]
        if s == 0:
            return max(pv_now - load_now, 0.0)
        load, pv = seen.get((site, int(starts[s] // slot) % per_day), (load_now, pv_now))
        if cfg.pv_forecast is not None:
            pv = float(cfg.pv_forecast(np.array([starts[s] + 0.5 * slot]))[site, 0])
        return max(pv - load, 0.0)

    for k in planned:
        site = obs.ev_site[k]
        mates = [q for q in planned if obs.ev_site[q] == site]
        frac = obs.ev_charger_w[k] / sum(obs.ev_charger_w[q] for q in mates)
        tiers = []  # (price, order, capacity Wh)
        for s in range(n_slots):
            h = max(min(starts[s] + slot, end[k]) - max(starts[s], now_s), 0.0) / H
            cap = rate[k] * h if active[k] else 0.0
            sur = surplus_w(site, s)
            free = max(sur - limit[site], 0.0)
            free_wh = min(free * frac * h, cap)
            paid_wh = min((sur - free) * frac * h, cap - free_wh)
            tiers += [(0.0, 3 * s, free_wh), (exp[s], 3 * s + 1, paid_wh)]
            tiers.append((imp[s], 3 * s + 2, cap - free_wh - paid_wh))
        left = (target_wh[k] - obs.ev_energy_wh[k]) / cfg.charge_efficiency if active[k] else 0
        now_wh = [0.0, 0.0, 0.0]
        for _, order, cap in sorted(tiers):
            take = min(max(left, 0.0), cap)
            left -= take
            if order < 3:
                now_wh[order] = take
        h_now = max(min(starts[0] + slot, end[k]) - max(starts[0], now_s), 0.0) / H
        p = sum(now_wh) / h_now if h_now > 0 else 0.0
        if p >= rate[k] - 1e-6:
            p = obs.ev_charger_w[k]
        last_slot = end[k] - now_s <= slot
        if p < cfg.min_1p_w and now_wh[2] <= 1e-9 and not overdue[k] and not last_slot:
            p = 0.0
        sur_now = surplus_w(site, 0)
        opp_now = 0.0 if sur_now > limit[site] else exp[0]
        if opp_now < min(imp) and sur_now * frac >= cfg.min_1p_w:
            p = max(p, sur_now * frac)
        p = max(p, cfg.min_1p_w) if p > 1e-6 else 0.0
        if overdue[k]:
            p = obs.ev_charger_w[k]
        out[k] = min(p, obs.ev_charger_w[k])
    return out


@pytest.mark.parametrize("pv_forecast", [True, False])
def test_cost_plan_equals_a_per_ev_cheapest_tiers_reference(pv_forecast):
    rng = np.random.default_rng(11)
    n_sites = 7
    ev_site = np.sort(rng.integers(0, n_sites, 16))
    n = ev_site.size
    cfg = StrategyConfig(
        price_forecast=_import_price,
        export_price_forecast=_export_price,
        pv_forecast=_pv_forecast(n_sites) if pv_forecast else None,
        horizon_s=14 * H,
    )
    cap_wh = rng.choice([30_000.0, 60_000.0], n)
    base = make_obs(
        n_sites,
        ev_site,
        ev_capacity_wh=cap_wh,
        ev_charger_w=rng.choice([3000.0, 6000.0], n),
        site_import_limit_w=np.where(rng.random(n_sites) < 0.3, 4000.0, np.inf),
    )
    limit_w = np.where(rng.random(n_sites) < 0.5, 1500.0, np.inf)
    state = StrategyState.initial(n)
    seen: dict[tuple[int, int], tuple[float, float]] = {}
    per_day = round(86400.0 / cfg.slot_s)
    fc = _pv_forecast(n_sites)
    buying = storing = 0
    for step in range(45):
        now_s = 5 * H + step * 2900.0  # not on slot bounds; 36 h, so yesterday is seen
        load_w = rng.uniform(200.0, 2500.0, n_sites)
        pv_w = fc(np.array([now_s]))[:, 0] * rng.uniform(0.5, 1.2, n_sites)
        energy_wh = rng.uniform(0.1, 1.0, n) * cap_wh
        energy_wh[rng.random(n) < 0.1] = cap_wh[0]  # full (only if cap_wh is the small one)
        target_wh = np.minimum(energy_wh + rng.uniform(-8000.0, 20_000.0, n), cap_wh)
        dep_s = now_s + rng.uniform(-1.0, 20.0, n) * H  # overdue .. beyond the horizon
        obs = dataclasses.replace(
            base,
            now_s=now_s,
            site_load_w=load_w,
            site_pv_w=pv_w,
            ev_energy_wh=energy_wh,
            ev_plugged=rng.random(n) < 0.85,
            site_export_limit_w=limit_w,
        )
        for site in range(n_sites):
            seen[(site, int(now_s // cfg.slot_s) % per_day)] = (load_w[site], pv_w[site])
        got = charge_plan_w(now_s, obs, state, cfg, dep_s, target_wh)
        want = _reference_w(now_s, obs, cfg, dep_s, target_wh, seen)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6, err_msg=f"step {step}")
        room = obs.ev_plugged & (energy_wh < cap_wh - 1)
        buying += int(np.sum((got > 0) & room & (target_wh > energy_wh + 1)))
        storing += int(np.sum((got > 0) & room & (target_wh <= energy_wh + 1)))
    assert buying > 20 and storing > 5  # both kinds of EV were exercised
