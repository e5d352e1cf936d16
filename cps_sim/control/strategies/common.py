"""Shared pieces of the EV charging strategies: configuration, timers state,
site/EV index helpers, surplus, sharing under a limit, departure reserves.

Every strategy is ``setpoints_w(now_s, obs, state, cfg) -> (ev_setpoint_w,
state)``: a vectorised function over the whole EV population of a group
(no per-device Python loop), returning the new timers state.

Charger electrics (Japan defaults): a home charger is single-phase 200 V, so
the IEC 61851 minimum of 6 A gives 6 A x 200 V = 1.2 kW; a three-phase 200 V
(line-to-line) charger draws sqrt(3) x 200 V x 6 A = 2.08 kW at minimum
current.  For 230/400 V grids set ``voltage_v=230`` and
``three_phase_w_per_a=690``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cps_sim.control.observation import (
    BoolArray,
    FloatArray,
    IntArray,
    Observation,
    site_forecast,
)

SECONDS_PER_WEEK = 7 * 86400.0


@dataclass(frozen=True)
class StrategyConfig:
    """Knobs of every strategy (one object so that a controller can switch strategy)."""

    interval_s: float = 60.0  # decision interval
    hold_s: float | None = None  # longest a setpoint may be followed (its ttl; default
    # 3 intervals, the controller_process default): look-ahead of the v2x reserve
    # --- charger electrics
    voltage_v: float = 200.0  # single-phase voltage
    min_current_a: float = 6.0  # per phase (IEC 61851)
    max_current_a: float = 32.0  # per phase
    three_phase_w_per_a: float = math.sqrt(3.0) * 200.0  # W per A per phase-set, 3-phase
    charge_efficiency: float = 0.9  # assumed grid->battery, for planning
    discharge_efficiency: float = 0.9  # assumed battery->grid, for planning
    # --- surplus hysteresis (pv, min_pv)
    enable_threshold_w: float = 0.0  # surplus above minimum power needed to start
    disable_threshold_w: float = 0.0  # grid draw tolerated below minimum power before stop
    enable_delay_s: float = 60.0
    disable_delay_s: float = 180.0
    phase_up_delay_s: float = 60.0  # 1p -> 3p when surplus >= 3p minimum this long
    phase_down_delay_s: float = 180.0  # 3p -> 1p when surplus < 3p minimum this long
    # --- home battery vs EV priority (surplus strategies)
    priority: str = "ev"  # "ev": EV first; "battery": battery first below priority_soc
    battery_priority_soc: float = 0.5
    battery_reserve_w: float = 2000.0  # surplus kept for the battery while it has priority
    # --- load (site import limit)
    limit_margin_w: float = 0.0
    # --- cost planner
    slot_s: float = 1800.0
    horizon_s: float = 48 * 3600.0
    price_forecast: Callable[[FloatArray], FloatArray] | None = None  # times_s -> JPY/kWh
    export_price_forecast: Callable[[FloatArray], FloatArray] | None = None  # times -> JPY/kWh
    pv_forecast: Callable[..., FloatArray] | None = None
    # times_s (T,) -> (n_sites, T) PV power [W] (observation.site_forecast: may take the
    # sites too); None: persistence (same slot yesterday)
    value_surplus: bool = True  # cost planner: PV surplus at its opportunity cost
    store_surplus: bool = True  # cost planner: also store cheap surplus beyond the target
    week_offset_s: float = 0.0  # local seconds since Monday 00:00 at simulation time 0
    default_departure_h: float | None = 6.0  # local hour assumed for an unknown departure
    # (no world departure, no weekly plan); None = unknown stays unknown (inf)
    # --- v2h / v2g
    v2h_hours: tuple[float, float] = (17.0, 23.0)  # local window for discharge to the home
    v2g_price_jpy_per_kwh: float = math.inf  # discharge to grid when export price >= this
    reserve_margin_soc: float = 0.02  # extra SoC kept on top of the reserve
    planning_rate_factor: float = 0.9  # share of the charging power the planner counts on

    @property
    def hold_time_s(self) -> float:
        return float(self.hold_s) if self.hold_s is not None else 3.0 * self.interval_s

    @property
    def min_1p_w(self) -> float:
        return self.min_current_a * self.voltage_v

    @property
    def max_1p_w(self) -> float:
        return self.max_current_a * self.voltage_v

    @property
    def min_3p_w(self) -> float:
        return self.min_current_a * self.three_phase_w_per_a


@dataclass(frozen=True)
class WeeklyPlan:
    """Repeating weekly departure plan per EV (used when a departure is not known).

    ``departure_s_of_day[k, d]`` is EV k's departure on weekday d (0 = Monday),
    local seconds after midnight, NaN for no departure that day;
    ``target_soc[k, d]`` the SoC wanted then.
    """

    departure_s_of_day: FloatArray  # (n_evs, 7)
    target_soc: FloatArray  # (n_evs, 7)


@dataclass
class StrategyState:
    """Timers and inputs of the strategies, one entry per EV (or per site)."""

    enabled: BoolArray  # surplus charging on
    three_phase: BoolArray  # 3-phase mode active
    three_phase_capable: BoolArray
    cond_since_s: FloatArray  # when the pending enable/disable condition began (NaN none)
    phase_since_s: FloatArray  # when the pending phase-switch condition began (NaN none)
    switches: IntArray  # on/off toggles counted (for tests and KPIs)
    phase_switches: IntArray
    plan: WeeklyPlan | None = None
    trip_departure_s: FloatArray | None = None  # known upcoming trip (NaN none)
    trip_energy_wh: FloatArray | None = None
    grid_request_w: FloatArray | None = None  # per site: supply (+) wanted by the grid (v2g)
    extra: dict = field(default_factory=dict)

    def evolve(self, **changes: object) -> StrategyState:
        """A copy with ``changes`` (what ``dataclasses.replace`` gives: the state has no
        ``__post_init__`` or init-only fields), without re-running ``__init__`` (the
        strategies make one per decision)."""
        new = object.__new__(StrategyState)
        new.__dict__.update(self.__dict__)
        for name, value in changes.items():
            if name not in self.__dict__:
                raise TypeError(f"StrategyState has no field {name!r}")
            new.__dict__[name] = value
        return new

    @classmethod
    def initial(cls, n_evs: int, three_phase_capable: np.ndarray | bool = False) -> StrategyState:
        cap = np.broadcast_to(np.asarray(three_phase_capable, bool), (n_evs,)).copy()
        return cls(
            enabled=np.zeros(n_evs, bool),
            three_phase=np.zeros(n_evs, bool),
            three_phase_capable=cap,
            cond_since_s=np.full(n_evs, np.nan),
            phase_since_s=np.full(n_evs, np.nan),
            switches=np.zeros(n_evs, np.int64),
            phase_switches=np.zeros(n_evs, np.int64),
        )


# ---------------------------------------------------------------- index helpers
def site_sum(obs: Observation, per_ev: FloatArray) -> FloatArray:
    """Sum of a per-EV quantity over the EVs of each site."""
    return np.bincount(obs.ev_site, weights=per_ev, minlength=obs.n_sites).astype(float)


def weight_fractions(site: IntArray, weight: FloatArray, n_sites: int) -> FloatArray:
    """Each EV's fraction of the ``weight`` (>= 0) of its site's EVs (0 where none)."""
    total = np.bincount(site, weights=weight, minlength=n_sites)[site]
    return np.divide(weight, total, out=np.zeros_like(weight, dtype=float), where=total > 0)


def share_by_weight(obs: Observation, site_amount_w: FloatArray, weight: FloatArray) -> FloatArray:
    """Split a per-site amount among the site's EVs in proportion to ``weight`` (>= 0)."""
    return site_amount_w[obs.ev_site] * weight_fractions(obs.ev_site, weight, obs.n_sites)


def rank_within_site(obs: Observation, key: FloatArray, active: BoolArray) -> IntArray:
    """0-based rank of each active EV among the active EVs of its site by ``key``
    (smaller first); inactive EVs get a large rank."""
    n = obs.n_evs
    big = np.iinfo(np.int64).max // 2
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), key, ~active, obs.ev_site))
    site_sorted = obs.ev_site[order]
    first = np.searchsorted(site_sorted, site_sorted, side="left")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - first
    return np.where(active, rank, big)


def wants_energy(obs: Observation, margin_wh: float = 1.0) -> BoolArray:
    """Plugged and not full."""
    return obs.ev_plugged & (obs.ev_energy_wh < obs.ev_capacity_wh - margin_wh)


def local_time(cfg: StrategyConfig, now_s: float) -> tuple[int, float]:
    """(weekday 0=Monday, local seconds after midnight) at ``now_s``."""
    s = (now_s + cfg.week_offset_s) % SECONDS_PER_WEEK
    return int(s // 86400.0), float(s % 86400.0)


# ---------------------------------------------------------------- surplus
def surplus_for_evs_w(obs: Observation, cfg: StrategyConfig) -> FloatArray:
    """Per-site PV surplus the EVs may use: PV - load, minus what the home battery
    keeps while it has priority (``cfg.priority == "battery"`` and its SoC is
    below ``battery_priority_soc``)."""
    surplus = np.maximum(obs.site_pv_w - obs.site_load_w, 0.0)
    if cfg.priority == "battery":
        cap = obs.battery_capacity_wh
        soc = np.divide(obs.battery_energy_wh, cap, out=np.ones_like(cap), where=cap > 0)
        keep = (cap > 0) & (soc < cfg.battery_priority_soc)
        surplus = surplus - np.where(keep, np.minimum(surplus, cfg.battery_reserve_w), 0.0)
    elif cfg.priority != "ev":
        raise ValueError(f"priority must be 'ev' or 'battery', got {cfg.priority!r}")
    return surplus


def phase_limits_w(
    obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, FloatArray]:
    """Minimum and maximum charging power of each EV in its current phase mode."""
    charger = obs.ev_charger_w
    if not state.three_phase.any():  # every charger single-phase: the same values
        hi = np.minimum(charger, cfg.max_1p_w)
        return np.minimum(cfg.min_1p_w, hi), hi
    lo = np.where(state.three_phase, cfg.min_3p_w, cfg.min_1p_w)
    hi = np.where(state.three_phase, charger, np.minimum(charger, cfg.max_1p_w))
    return np.minimum(lo, hi), hi


# ---------------------------------------------------------------- sharing under a limit
def site_headroom_w(obs: Observation, cfg: StrategyConfig) -> FloatArray:
    """Power the EVs of a site may draw without the site import exceeding its limit
    (load - PV counted; battery assumed not to import, as under self-consumption)."""
    return obs.site_import_limit_w - (obs.site_load_w - obs.site_pv_w) - cfg.limit_margin_w


def allocate_under_limit(
    obs: Observation,
    budget_w: FloatArray,
    want_w: FloatArray,
    min_w: FloatArray | float,
    priority_key: FloatArray,
) -> FloatArray:
    """Share a per-site budget among EVs wanting ``want_w`` with a minimum power.

    The EVs first in ``priority_key`` (per site) that fit at their minimum
    power are started; the rest of the budget is split in proportion to the
    room above minimum.  The sum per site never exceeds ``max(budget, 0)``.
    """
    want = np.maximum(want_w, 0.0)
    lo = np.minimum(np.broadcast_to(np.asarray(min_w, float), want.shape), want)
    active = want > 0
    budget = np.maximum(np.nan_to_num(budget_w, posinf=1e18), 0.0)
    # how many EVs per site fit at minimum: cumulative minimum power in priority order
    rank = rank_within_site(obs, priority_key, active)
    order = np.lexsort((rank, obs.ev_site))
    lo_sorted = np.where(active, lo, 0.0)[order]
    cum = np.cumsum(lo_sorted)
    site_sorted = obs.ev_site[order]
    first = np.searchsorted(site_sorted, site_sorted, side="left")
    before = np.concatenate(([0.0], cum))[first]
    cum_in_site = np.empty_like(cum)
    cum_in_site[order] = cum - before
    chosen = active & (cum_in_site <= budget[obs.ev_site] + 1e-9)
    base = np.where(chosen, lo, 0.0)
    rest = np.maximum(budget - site_sum(obs, base), 0.0)
    room = np.where(chosen, want - base, 0.0)
    extra = np.minimum(share_by_weight(obs, rest, room), room)
    return base + extra


# ---------------------------------------------------------------- departure & reserve
def departure_and_target(
    now_s: float, obs: Observation, state: StrategyState, cfg: StrategyConfig
) -> tuple[FloatArray, FloatArray]:
    """Next departure [s] and energy wanted then [Wh] per EV.

    The world's departure is used when known; else the weekly plan's next
    departure (and its target SoC), else the next ``cfg.default_departure_h``
    local time (conservative: a driver may leave in the morning).  A known
    upcoming trip that leaves before that departure becomes the departure,
    and raises the target to the floor plus the trip energy (capped at
    capacity).  Unknown and no default: inf.
    """
    dep = np.asarray(obs.ev_departure_s, float).copy()
    target = np.asarray(obs.ev_target_wh, float).copy()
    cap = obs.ev_capacity_wh
    if state.plan is not None and obs.n_evs:
        wd, sod = local_time(cfg, now_s)
        day_s = state.plan.departure_s_of_day
        best = np.full(obs.n_evs, np.inf)
        best_soc = np.full(obs.n_evs, np.nan)
        for ahead in range(8):  # 8 days: 7 weekdays, today again after its departure
            d = (wd + ahead) % 7
            t = now_s + ahead * 86400.0 + (day_s[:, d] - sod)
            ok = np.isfinite(t) & (t > now_s) & (t < best)
            best = np.where(ok, t, best)
            best_soc = np.where(ok, state.plan.target_soc[:, d], best_soc)
        use = ~np.isfinite(dep) & np.isfinite(best)
        dep = np.where(use, best, dep)
        target = np.where(use, np.maximum(target, best_soc * cap), target)
    if cfg.default_departure_h is not None:
        _, sod = local_time(cfg, now_s)
        ahead = (cfg.default_departure_h * 3600.0 - sod) % 86400.0
        ahead = ahead if ahead > 0 else 86400.0
        dep = np.where(np.isfinite(dep), dep, now_s + ahead)
    if state.trip_departure_s is not None and state.trip_energy_wh is not None:
        trip_t = state.trip_departure_s
        known = np.isfinite(trip_t) & (trip_t >= now_s) & (trip_t <= dep)
        dep = np.where(known, trip_t, dep)
        need = obs.ev_soc_min * cap + np.nan_to_num(state.trip_energy_wh)
        target = np.where(known, np.maximum(target, need), target)
    return dep, np.minimum(target, cap)


def planning_rate_w(obs: Observation, cfg: StrategyConfig) -> FloatArray:
    """Charging power [W] the planners count on per EV: the charger's, capped by
    the site's import headroom now (shared among the site's plugged EVs), never
    below the minimum current, times ``cfg.planning_rate_factor``."""
    head = site_headroom_w(obs, cfg)
    n_plugged = np.bincount(
        obs.ev_site, weights=obs.ev_plugged.astype(float), minlength=obs.n_sites
    )
    per_ev = (head / np.maximum(n_plugged, 1.0))[obs.ev_site]
    rate = np.minimum(obs.ev_charger_w, np.maximum(per_ev, cfg.min_1p_w))
    return rate * cfg.planning_rate_factor


def reserve_wh(
    t_s: float,
    obs: Observation,
    departure_s: FloatArray,
    target_wh: FloatArray,
    cfg: StrategyConfig,
) -> FloatArray:
    """Energy an EV must hold at ``t_s`` so that, charging at its planning rate
    (``planning_rate_w``) from then on, it still reaches ``target_wh`` by
    ``departure_s``; never below its floor (plus the margin)."""
    floor = (obs.ev_soc_min + cfg.reserve_margin_soc) * obs.ev_capacity_wh
    left_h = np.maximum(departure_s - t_s, 0.0) / 3600.0
    left_h = np.where(np.isfinite(left_h), left_h, 1e9)
    reach = (
        target_wh
        + cfg.reserve_margin_soc * obs.ev_capacity_wh
        - planning_rate_w(obs, cfg) * cfg.charge_efficiency * left_h
    )
    return np.minimum(np.maximum(floor, reach), obs.ev_capacity_wh)


# ---------------------------------------------------------------- site forecasts
def remember_site_inputs(
    now_s: float, obs: Observation, state: StrategyState, slot_s: float
) -> None:
    """Keep the load and PV seen in each slot of the day (persistence forecasts):
    ``state.extra["site_hist"]`` (2, n_sites, slots per day), load then PV, NaN where
    not seen yet."""
    per_day = max(1, round(86400.0 / slot_s))
    hist = state.extra.get("site_hist")
    if hist is None or hist.shape != (2, obs.n_sites, per_day):
        hist = state.extra["site_hist"] = np.full((2, obs.n_sites, per_day), np.nan)
    k = int(now_s // slot_s) % per_day
    hist[0, :, k] = obs.site_load_w
    hist[1, :, k] = obs.site_pv_w


def surplus_forecast_w(
    now_s: float,
    obs: Observation,
    state: StrategyState,
    cfg: StrategyConfig,
    starts_s: FloatArray,
    sites: IntArray | None = None,
) -> FloatArray:
    """PV surplus (PV - load, >= 0) per site in the slots starting at ``starts_s``, (n, T);
    with ``sites``, of those sites only, (len(sites), T).

    Slot 0 is the observed surplus now.  Later slots: PV from ``cfg.pv_forecast``
    (at the slot middle) if given, else persistence; load by persistence (the same
    slot yesterday, else the load now).  Persistence keeps no history across runs: on
    the first day unknown slots repeat the present (PV: 0 after dark is learnt the
    first evening).
    """
    sel = slice(None) if sites is None else sites
    load_now, pv_now = obs.site_load_w[sel], obs.site_pv_w[sel]
    out = np.empty((len(load_now), len(starts_s)))
    out[:, 0] = np.maximum(pv_now - load_now, 0.0)
    later_s = starts_s[1:]
    if later_s.size:
        per_day = max(1, round(86400.0 / cfg.slot_s))
        idx = (later_s // cfg.slot_s).astype(np.int64) % per_day
        hist = state.extra.get("site_hist")
        load = _persistence(hist, 0, sites, idx, load_now)
        if cfg.pv_forecast is not None:
            pv = site_forecast(cfg.pv_forecast, later_s + 0.5 * cfg.slot_s, sites, obs.n_sites)
        else:
            pv = _persistence(hist, 1, sites, idx, pv_now)
        np.maximum(pv - load, 0.0, out=out[:, 1:])
    return out


def _persistence(
    hist: FloatArray | None, q: int, sites: IntArray | None, idx: IntArray, now: FloatArray
) -> FloatArray:
    """Quantity ``q`` of the history (0 load, 1 PV) at ``sites`` in the slots of the day
    ``idx``, (len(sites), len(idx)); ``now`` where the slot was not seen yet."""
    if hist is None:
        return np.repeat(now[:, None], idx.size, axis=1)
    past = hist[q] if sites is None else hist[q].take(sites, axis=0)
    past = past.take(idx, axis=1)  # take() gathers many times faster than [ix_]
    return np.where(np.isnan(past), now[:, None], past)
