"""VPP aggregator: flexibility of many sites and EVs, requests split into setpoints.

Flexibility is measured against a *baseline* (what each device would do
anyway: the EV strategy's setpoint, the battery's current power) and for a
*window* of ``duration_s``: a device offers only the power it can hold for
the whole window with the energy it has room for.  Load convention: ``up``
= more consumption (absorb surplus, avoid curtailment), ``down`` = less
consumption or more supply (shortage, DR).

* EVs (plugged): up to full charger power while not full; down to full V2X
  discharge, never taking an EV below its reserve (SoC floor, and the energy
  from which its departure target is still reachable,
  ``strategies.common.reserve_wh``).  An EV leaving within the window offers
  nothing.
* Home batteries: up/down to what each battery can hold for the window
  (:meth:`Observation.battery_range_w`, i.e. the battery model's
  ``feasible_power_w`` with the limits that come with the observation: ratings,
  SoC window, efficiencies, CC-CV taper).

A request is split among devices in proportion to their headroom, so no
device is asked for more than it offers and the total dispatched is
``min(requested, available)``.  :func:`delivered_w` measures what the
devices actually did between two observations.  Day-ahead plan vs actual of
the balancing group is settled with ``cps_sim.market.balancing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from cps_sim.control.base import battery_auto, battery_setpoints
from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.strategies.common import StrategyConfig, reserve_wh
from cps_sim.core.units import SECONDS_PER_HOUR

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class Flexibility:
    """Per-device headroom [W, >= 0] and energy [Wh, >= 0] for one window."""

    duration_s: float
    ev_baseline_w: FloatArray  # baseline as it can be held for the window (a charging
    # baseline that would fill the EV before the window ends is lowered to what fits)
    ev_up_w: FloatArray
    ev_down_w: FloatArray
    ev_up_wh: FloatArray
    ev_down_wh: FloatArray
    battery_up_w: FloatArray
    battery_down_w: FloatArray
    battery_up_wh: FloatArray
    battery_down_wh: FloatArray

    @property
    def up_w(self) -> float:
        return float(self.ev_up_w.sum() + self.battery_up_w.sum())

    @property
    def down_w(self) -> float:
        return float(self.ev_down_w.sum() + self.battery_down_w.sum())

    def by_site(self, obs: Observation) -> dict[str, FloatArray]:
        """Per-site totals (for a grid operator looking at feeders)."""

        def ev(x):
            return np.bincount(obs.ev_site, weights=x, minlength=obs.n_sites)

        return {
            "up_w": ev(self.ev_up_w) + self.battery_up_w,
            "down_w": ev(self.ev_down_w) + self.battery_down_w,
        }


def flexibility(
    obs: Observation,
    duration_s: float,
    *,
    ev_baseline_w: FloatArray | None = None,
    battery_baseline_w: FloatArray | None = None,
    cfg: StrategyConfig | None = None,
) -> Flexibility:
    """Headroom of every EV and battery of a group for a window of ``duration_s``."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    cfg = cfg or StrategyConfig()
    h = duration_s / SECONDS_PER_HOUR
    n_ev = obs.n_evs
    base_ev = np.zeros(n_ev) if ev_baseline_w is None else np.asarray(ev_baseline_w, float)
    leaving = obs.ev_departure_s < obs.now_s + duration_s
    on = obs.ev_plugged & ~leaving
    # up: charge harder, limited by the room left (grid side = stored / efficiency)
    room_wh = np.maximum(obs.ev_capacity_wh - obs.ev_energy_wh, 0.0) / cfg.charge_efficiency
    base_ev = np.where(base_ev > 0, np.minimum(base_ev, room_wh / h), base_ev)
    up_wh = np.where(on, np.maximum(room_wh - np.maximum(base_ev, 0.0) * h, 0.0), 0.0)
    ev_up = np.where(on, np.clip(obs.ev_charger_w - base_ev, 0.0, None), 0.0)
    ev_up = np.minimum(ev_up, up_wh / h)
    # down: charge less and discharge, never below the reserve at the window end
    res = reserve_wh(obs.now_s + duration_s, obs, obs.ev_departure_s, obs.ev_target_wh, cfg)
    above_wh = np.maximum(obs.ev_energy_wh - res, 0.0) * cfg.discharge_efficiency
    lowest_w = -np.minimum(obs.ev_v2x_w, above_wh / h)  # most negative power allowed
    ev_down = np.where(on, np.clip(base_ev - lowest_w, 0.0, None), 0.0)
    down_wh = ev_down * h
    # home batteries
    cap = obs.battery_capacity_wh
    base_b = (
        np.asarray(obs.battery_power_w, float)
        if battery_baseline_w is None
        else np.nan_to_num(np.asarray(battery_baseline_w, float))
    )
    b_lo, b_hi = obs.battery_range_w(duration_s)
    has = cap > 0
    b_up = np.where(has, np.clip(b_hi - base_b, 0.0, None), 0.0)
    b_down = np.where(has, np.clip(base_b - b_lo, 0.0, None), 0.0)
    return Flexibility(
        duration_s=duration_s,
        ev_baseline_w=base_ev,
        ev_up_w=ev_up,
        ev_down_w=ev_down,
        ev_up_wh=ev_up * h,
        ev_down_wh=down_wh,
        battery_up_w=b_up,
        battery_down_w=b_down,
        battery_up_wh=b_up * h,
        battery_down_wh=b_down * h,
    )


@dataclass(frozen=True)
class FlexRequest:
    """A grid operator's request: ``up`` = absorb ``power_w`` more (avoid
    curtailment), ``down`` = consume ``power_w`` less / supply it (shortage, DR)."""

    direction: Direction
    power_w: float
    start_s: float
    duration_s: float
    name: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {self.direction!r}")
        if not (self.power_w >= 0 and self.duration_s > 0):
            raise ValueError(
                f"power_w must be >= 0 and duration_s > 0, got {self.power_w}, {self.duration_s}"
            )

    def active(self, now_s: float) -> bool:
        return self.start_s <= now_s < self.start_s + self.duration_s


@dataclass(frozen=True)
class Dispatch:
    """A request split into setpoints; powers in the request's direction (>= 0)."""

    request: FlexRequest
    available_w: float
    dispatched_w: float
    ev_delta_w: FloatArray  # signed change of each EV's power vs baseline (load convention)
    battery_delta_w: FloatArray
    ev_setpoint_w: FloatArray
    battery_setpoint_w: FloatArray  # 0 where untouched (battery_follow false)
    battery_follow: NDArray[np.bool_]  # false: the battery stays on its built-in rule

    @property
    def shortfall_w(self) -> float:
        return max(self.request.power_w - self.dispatched_w, 0.0)


def dispatch(
    obs: Observation,
    request: FlexRequest,
    flex: Flexibility,
    *,
    battery_baseline_w: FloatArray | None = None,
) -> Dispatch:
    """Split ``request`` over the devices in proportion to their headroom.

    EV setpoints are the baseline held in ``flex`` plus each EV's share."""
    up = request.direction == "up"
    ev_head = flex.ev_up_w if up else flex.ev_down_w
    b_head = flex.battery_up_w if up else flex.battery_down_w
    available = float(ev_head.sum() + b_head.sum())
    dispatched = min(float(request.power_w), available)
    frac = dispatched / available if available > 0 else 0.0
    sign = 1.0 if up else -1.0
    ev_delta = sign * frac * ev_head
    b_delta = sign * frac * b_head
    base_ev = flex.ev_baseline_w
    base_b = (
        np.asarray(obs.battery_power_w, float)
        if battery_baseline_w is None
        else np.nan_to_num(np.asarray(battery_baseline_w, float))
    )
    follow = b_head > 0  # untouched: built-in rule
    b_sp = np.where(follow, base_b + b_delta, 0.0)
    return Dispatch(
        request, available, dispatched, ev_delta, b_delta, base_ev + ev_delta, b_sp, follow
    )


def delivered_w(
    before: Observation,
    after: Observation,
    *,
    ev_baseline_w: FloatArray,
    battery_baseline_w: FloatArray,
    cfg: StrategyConfig | None = None,
) -> float:
    """Power actually delivered vs baseline between two observations (load convention:
    positive = consumed more), from the stored-energy changes (EV grid side via the
    assumed efficiencies) and the batteries' measured power."""
    cfg = cfg or StrategyConfig()
    dt_h = (after.now_s - before.now_s) / SECONDS_PER_HOUR
    if not dt_h > 0:
        raise ValueError("observations must be in time order")
    d_wh = after.ev_energy_wh - before.ev_energy_wh
    ev_grid_w = (
        np.where(d_wh > 0, d_wh / cfg.charge_efficiency, d_wh * cfg.discharge_efficiency) / dt_h
    )
    ev = float((ev_grid_w - ev_baseline_w).sum())
    bat = float((after.battery_power_w - np.nan_to_num(battery_baseline_w)).sum())
    return ev + bat


@dataclass
class VppReport:
    """Requested vs dispatched vs delivered, one row per decision in a request."""

    t_s: list[float] = field(default_factory=list)
    request: list[str] = field(default_factory=list)
    requested_w: list[float] = field(default_factory=list)
    available_w: list[float] = field(default_factory=list)
    dispatched_w: list[float] = field(default_factory=list)

    def add(self, t_s: float, d: Dispatch) -> None:
        self.t_s.append(t_s)
        self.request.append(d.request.name or d.request.direction)
        self.requested_w.append(d.request.power_w)
        self.available_w.append(d.available_w)
        self.dispatched_w.append(d.dispatched_w)


class VppController:
    """A controller: a base EV strategy, overridden during grid requests.

    Between requests it publishes the base controller's setpoints (the
    baseline).  While a request is active it adds the request's split.
    """

    def __init__(
        self,
        base,
        requests: list[FlexRequest],
        *,
        cfg: StrategyConfig | None = None,
        name: str = "vpp",
    ):
        self.base = base
        self.requests = sorted(requests, key=lambda r: r.start_s)
        self.cfg = cfg or getattr(base, "cfg", None) or StrategyConfig()
        self.name = name
        self.interval_s = float(base.interval_s)
        self.report = VppReport()

    def decide(self, now_s: float, observation: Observation) -> dict[str, np.ndarray]:
        out = dict(self.base.decide(now_s, observation))
        base_ev = np.asarray(out.get("ev_setpoint_w", np.zeros(observation.n_evs)), float)
        active = [r for r in self.requests if r.active(now_s)]
        if not active:
            if "battery_setpoint_w" not in out and "battery_mode" not in out:
                out.update(battery_auto(observation.n_sites))
            return out
        req = active[0]
        left_s = req.start_s + req.duration_s - now_s
        base_b = np.zeros(observation.n_sites)
        flex = flexibility(
            observation, left_s, ev_baseline_w=base_ev, battery_baseline_w=base_b, cfg=self.cfg
        )
        d = dispatch(observation, req, flex, battery_baseline_w=base_b)
        self.report.add(now_s, d)
        out["ev_setpoint_w"] = d.ev_setpoint_w
        out.update(battery_setpoints(d.battery_setpoint_w, d.battery_follow))
        return out
