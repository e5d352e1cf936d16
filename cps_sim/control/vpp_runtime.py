"""The VPP aggregator as a SimPy process on a World: requests in, setpoints out, delivery measured.

:func:`cps_sim.world.wiring.start_vpp` binds a scenario's ``vpp:`` block to a
started world (it builds the :class:`VppConfig`, the groups' ratings and the
requests, and hands them to :class:`VppRuntime`).  The aggregator (the seed's
*resource aggregator*) wakes at every request start and end and every
``interval_s`` while a request is active (every interval when it runs a
``base_strategy``), and then:

1. observes each of its groups (``world.observe``: state integrated to now);
2. computes each device's *baseline* — the base strategy's setpoint, or the
   engine default (full charger power) without one; a home battery's baseline
   is its self-consumption power (``-(load + EV baseline - PV)`` within its
   rating and energy window, inputs being constant within a tick);
3. measures the flexibility of every EV and battery for the rest of the
   request (:func:`cps_sim.control.vpp.flexibility`), splits the requested
   power over the groups and, within each group, over the devices in
   proportion to their headroom (:func:`cps_sim.control.vpp.dispatch`);
4. publishes per-device setpoints on the world's transport
   (``cps/<group>/setpoints``), where a device process applies them.  During a
   request every battery gets a fixed setpoint (its baseline plus its share), so
   that the self-consumption rule does not undo what an EV at the same site
   absorbs.

Delivery is measured per interval from what the devices stored: for every
dispatched device that stayed plugged in, the grid-side energy it actually
took (stored change over its efficiency) minus the energy of its baseline over
the same interval.  Delivered energy therefore never exceeds what was
dispatched unless the baseline was wrong.

Request kinds map onto :mod:`cps_sim.control.vpp` directions: ``absorb`` ->
``up``; ``supply`` and ``dr_reduce`` -> ``down``, where ``dr_reduce`` uses EVs
only by charging less (no V2X discharge).  When requests overlap, those of the
direction of the earliest-started one are added up and share the delivery in
proportion to their power; an opposite request active at the same time gets
nothing (reported as undelivered).

Automatic curtailment absorption: the runtime is also a world tick hook; it
reads the system layer's ``system_curtailment_w`` of each tick and, at the
next decision, requests ``share x (curtailment + what the VPP absorbed in that
tick)`` for the coming tick (the second term keeps the request from
collapsing once the VPP starts absorbing); no request follows a tick without
curtailment (the counterfactual curtailment is then unknown, and holding the
request would keep the fleet charging from the plants).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from cps_sim.control.base import battery_setpoints
from cps_sim.control.observation import FloatArray, Observation
from cps_sim.control.vpp import FlexRequest, dispatch, flexibility
from cps_sim.core.bus import Topics, Transport
from cps_sim.core.errors import ScenarioError
from cps_sim.core.units import SECONDS_PER_HOUR, WH_PER_KWH

KIND_DIRECTION = {"absorb": "up", "supply": "down", "dr_reduce": "down"}


@dataclass
class VppRequest:
    """A request as the runtime tracks it, with its accumulated measurements [Wh]."""

    id: str
    kind: str
    start_s: float
    end_s: float
    power_w: float
    auto: bool = False
    available_wh: float = 0.0
    dispatched_wh: float = 0.0
    delivered_wh: float = 0.0

    @property
    def direction(self) -> str:
        return KIND_DIRECTION[self.kind]

    @property
    def requested_wh(self) -> float:
        return self.power_w * (self.end_s - self.start_s) / SECONDS_PER_HOUR

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s


@dataclass
class VppGroup:
    """Registration of one aggregated group: constant device data, interval snapshot."""

    name: str
    ev_eff: FloatArray
    ev_max_wh: FloatArray
    ev_min_wh: FloatArray
    bat_power_w: FloatArray
    bat_eta_c: FloatArray
    bat_eta_d: FloatArray
    bat_min_wh: FloatArray
    bat_max_wh: FloatArray
    has_battery: np.ndarray
    bat_rule: bool = True  # batteries on the built-in self-consumption rule (else idle)
    base: Any = None  # StrategyController or None
    pinned: bool = False  # VPP setpoints are in force (release them after the requests)
    # snapshot at the start of the current interval
    obs0: Observation | None = None
    ev_mask: np.ndarray | None = None
    ev_base_w: FloatArray | None = None
    bat_mask: np.ndarray | None = None
    bat_base_w: FloatArray | None = None
    # counterfactual ("shadow") stored energies under the baseline since the request began
    sh_ev_wh: FloatArray | None = None
    sh_bat_wh: FloatArray | None = None


@dataclass
class _Interval:
    t0_s: float
    direction: str
    requests: list[VppRequest]
    requested_w: float
    available_w: float
    dispatched_w: float


@dataclass
class VppIntervalLog:
    t_start_s: list[float] = field(default_factory=list)
    t_end_s: list[float] = field(default_factory=list)
    direction: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    requested_w: list[float] = field(default_factory=list)
    available_w: list[float] = field(default_factory=list)
    dispatched_w: list[float] = field(default_factory=list)
    delivered_w: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class CurtailmentAbsorption:
    """Automatic requests that absorb the system layer's curtailment."""

    share: float
    max_kw: float | None = None
    min_kw: float = 0.0


@dataclass(frozen=True)
class VppConfig:
    """Plain settings of one aggregator (built by ``world.wiring`` from the scenario)."""

    name: str
    interval_s: float
    tick_s: float
    end_s: float
    ttl_s: float | None = None
    full_delivery_ratio: float = 0.95
    absorb_system_curtailment: CurtailmentAbsorption | None = None


class VppRuntime:
    """The aggregator process and its bookkeeping; also a World tick hook (``name="vpp"``).

    ``world`` is any :class:`~cps_sim.control.base.ControlledWorld` (only ``observe``
    is used); ``groups`` carry the devices' ratings, ``requests`` are already in
    simulation seconds, ``transport`` carries the setpoints.
    """

    def __init__(
        self,
        env: simpy.Environment,
        world: Any,
        cfg: VppConfig,
        groups: list[VppGroup],
        requests: list[VppRequest],
        transport: Transport,
    ):
        self.env = env
        self.world = world
        self.spec = cfg
        self.name = cfg.name
        self.tick_s = float(cfg.tick_s)
        self.interval_s = float(cfg.interval_s)
        self.end_s = float(cfg.end_s)
        ids = [r.id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request ids (including those of requests_file) must be unique")
        self.requests = sorted(requests, key=lambda r: (r.start_s, r.id))
        self.log = VppIntervalLog()
        self._current: _Interval | None = None
        self._curtailment_w: float | None = None  # of the last settled tick
        self._curtailment_t_s = -math.inf
        self._last_auto: VppRequest | None = None
        self.groups = groups
        self.transport = transport

    # ------------------------------------------------------------------ tick hook
    def on_tick(self, world: Any, result: Any) -> dict[str, float]:
        if self.spec.absorb_system_curtailment is not None:
            extra = result.extra or {}
            if "system_curtailment_w" not in extra:
                raise ScenarioError.single(
                    None,
                    "vpp.absorb_system_curtailment",
                    "needs the system layer (a system: block)",
                )
            self._curtailment_w = float(extra["system_curtailment_w"])
            self._curtailment_t_s = float(result.t_end_s)
        return {}

    def kpis(self) -> dict[str, float]:
        """KPIs from the request report (the function that computes them from
        ``<name>_report.parquet``: experiment/kpis.py)."""
        from cps_sim.experiment.kpis import vpp_kpis

        return vpp_kpis(self.name, self.report())

    # ------------------------------------------------------------------ reports
    def report(self) -> dict[str, np.ndarray]:
        """One row per request (Parquet-ready: ``pyarrow.table(runtime.report())``)."""
        rs = self.requests
        req = np.array([r.requested_wh for r in rs]) / WH_PER_KWH
        dlv = np.array([r.delivered_wh for r in rs]) / WH_PER_KWH
        ratio = np.divide(dlv, req, out=np.zeros_like(req), where=req > 0)
        full = self.spec.full_delivery_ratio
        status = np.where(ratio >= full, "full", np.where(dlv > 1e-9, "partial", "none"))
        return {
            "request_id": np.array([r.id for r in rs], dtype=str),
            "kind": np.array([r.kind for r in rs], dtype=str),
            "automatic": np.array([r.auto for r in rs], dtype=bool),
            "start_s": np.array([r.start_s for r in rs], dtype=float),
            "end_s": np.array([r.end_s for r in rs], dtype=float),
            "requested_kw": np.array([r.power_w for r in rs]) / 1000.0,
            "requested_kwh": req,
            "available_kwh": np.array([r.available_wh for r in rs]) / WH_PER_KWH,
            "dispatched_kwh": np.array([r.dispatched_wh for r in rs]) / WH_PER_KWH,
            "delivered_kwh": dlv,
            "delivered_ratio": ratio,
            "shortfall_kwh": np.maximum(req - dlv, 0.0),
            "status": status.astype(str),
        }

    def intervals(self) -> dict[str, np.ndarray]:
        """One row per decision interval with an active request."""
        return {k: np.asarray(v) for k, v in dataclasses.asdict(self.log).items()}

    # ------------------------------------------------------------------ process
    def _next_wake(self, now: float) -> float:
        nxt = self.end_s
        busy = (
            self._current is not None
            or any(g.base is not None for g in self.groups)
            or any(r.active(now) for r in self.requests)
            or self.spec.absorb_system_curtailment is not None
        )
        if busy:
            nxt = min(nxt, (math.floor(now / self.interval_s + 1e-9) + 1) * self.interval_s)
        if self.spec.absorb_system_curtailment is not None:
            nxt = min(nxt, (math.floor(now / self.tick_s + 1e-9) + 1) * self.tick_s)
        for r in self.requests:
            for t in (r.start_s, r.end_s):
                if now + 1e-9 < t < nxt:
                    nxt = t
        return nxt

    def process(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        while True:
            # let the settlement of this instant (tick end / next tick's inputs) run first
            yield env.timeout(0)
            now = float(env.now)
            if now > self.end_s:
                return
            self._close_interval(now)
            if now >= self.end_s:
                return
            self._auto_request(now)
            obs = {g.name: self.world.observe(g.name) for g in self.groups}
            ttl = float(self.spec.ttl_s or 3.0 * self.interval_s)
            for name, sp in self.decide(now, obs).items():
                self.transport.publish(Topics.setpoints(name), {**sp, "ttl_s": ttl})
            yield env.timeout(self._next_wake(now) - now)

    def _auto_request(self, now: float) -> None:
        a = self.spec.absorb_system_curtailment
        if a is None or self._curtailment_w is None or abs(self._curtailment_t_s - now) > 1e-6:
            return
        absorbed = 0.0
        last = self._last_auto
        if last is not None and abs(last.end_s - now) < 1e-6:
            absorbed = last.delivered_wh * SECONDS_PER_HOUR / (last.end_s - last.start_s)
        # the curtailment without the VPP ~ what is still curtailed + what the fleet took;
        # once nothing is curtailed the counterfactual is unknown, so the requests stop
        curt = self._curtailment_w
        p = a.share * (curt + max(absorbed, 0.0)) if curt > 0 else 0.0
        if a.max_kw is not None:
            p = min(p, a.max_kw * 1000.0)
        self._curtailment_w = None
        if p < max(a.min_kw * 1000.0, 1e-9):
            return
        end = min(now + self.tick_s, self.end_s)
        if end <= now:
            return
        r = VppRequest(f"auto{int(now)}", "absorb", now, end, p, auto=True)
        self.requests.append(r)
        self._last_auto = r

    def decide(
        self, now_s: float, observations: Mapping[str, Observation]
    ) -> dict[str, dict[str, np.ndarray]]:
        """The aggregator's decision, the same shape as every control loop's
        (:mod:`cps_sim.control.base`): ``{group: Observation} -> {group: setpoints}``.
        Setpoints go only to the groups whose devices must change (a request, its end, or
        a base strategy); the caller publishes them.  Updates the interval bookkeeping."""
        now = now_s
        out: dict[str, dict[str, np.ndarray]] = {}
        active = [r for r in self.requests if r.active(now)]
        obs = [observations[g.name] for g in self.groups]
        for g, o in zip(self.groups, obs, strict=True):
            if not active or g.sh_ev_wh is None:  # a new request episode: shadow = actual
                g.sh_ev_wh = o.ev_energy_wh.copy()
                g.sh_bat_wh = o.battery_energy_wh.copy()
        base = [self._baseline(g, o, now) for g, o in zip(self.groups, obs, strict=True)]
        if not active:
            for g, o, (ev_b, _, _) in zip(self.groups, obs, base, strict=True):
                g.obs0 = None
                g.sh_ev_wh = g.sh_bat_wh = None
                if g.base is not None or g.pinned:
                    out[g.name] = self._setpoints(ev_b, np.zeros(o.n_sites), follow=not g.bat_rule)
                    g.pinned = False
            self._current = None
            return out
        first = min(active, key=lambda r: (r.start_s, r.id))
        direction = first.direction
        serve = [r for r in active if r.direction == direction]
        power = sum(r.power_w for r in serve)
        window = max(r.end_s for r in serve) - now
        flexes = []
        for o, (_, ev_on, bat_b) in zip(obs, base, strict=True):
            f = flexibility(o, window, ev_baseline_w=ev_on, battery_baseline_w=bat_b)
            if any(r.kind == "dr_reduce" for r in serve) and direction == "down":
                # 下げDR: EVs only charge less, no discharge below zero
                f = dataclasses.replace(
                    f, ev_down_w=np.minimum(f.ev_down_w, np.maximum(f.ev_baseline_w, 0.0))
                )
            flexes.append(f)
        avail = [f.up_w if direction == "up" else f.down_w for f in flexes]
        total_avail = float(sum(avail))
        total = min(power, total_avail)
        for g, o, (ev_b, ev_on, bat_b), f, a in zip(
            self.groups, obs, base, flexes, avail, strict=True
        ):
            share = total * a / total_avail if total_avail > 0 else 0.0
            d = dispatch(o, FlexRequest(direction, share, now, window), f, battery_baseline_w=bat_b)
            moved = d.ev_delta_w != 0
            ev_sp = np.where(moved, ev_on + d.ev_delta_w, ev_b)
            bat_sp = np.where(g.has_battery, bat_b + d.battery_delta_w, 0.0)
            out[g.name] = self._setpoints(ev_sp, bat_sp, follow=g.has_battery)
            g.pinned = True
            g.obs0 = o
            g.ev_mask = moved & o.ev_plugged
            g.ev_base_w = ev_on
            g.bat_mask = g.has_battery.copy()
            g.bat_base_w = bat_b
        self._current = _Interval(now, direction, serve, power, total_avail, total)
        return out

    def _baseline(
        self, g: VppGroup, o: Observation, now: float
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Baselines [W] at the decision instant for the devices' counterfactual
        (shadow) state: each EV's setpoint (base strategy or full charger power),
        the power a plugged EV would draw with it over the interval, and each
        battery's self-consumption power."""
        cap = o.ev_capacity_wh
        o = dataclasses.replace(
            o,
            ev_energy_wh=g.sh_ev_wh,
            ev_soc=np.divide(g.sh_ev_wh, cap, out=np.zeros_like(cap), where=cap > 0),
            battery_energy_wh=g.sh_bat_wh,
        )
        if g.base is not None:
            ev_b = np.asarray(g.base.decide(now, o).get("ev_setpoint_w", o.ev_charger_w), float)
        else:
            ev_b = np.asarray(o.ev_charger_w, float).copy()
        h = self.interval_s / SECONDS_PER_HOUR
        # what each plugged EV would draw over the interval from its counterfactual state
        ev_room_w = np.maximum(g.ev_max_wh - g.sh_ev_wh, 0.0) / g.ev_eff / h
        ev_avail_w = np.maximum(g.sh_ev_wh - g.ev_min_wh, 0.0) * g.ev_eff / h
        ev_on = np.where(
            o.ev_plugged,
            np.clip(
                ev_b, -np.minimum(o.ev_v2x_w, ev_avail_w), np.minimum(o.ev_charger_w, ev_room_w)
            ),
            0.0,
        )
        ev_site_w = np.bincount(o.ev_site, weights=ev_on, minlength=o.n_sites)
        net = o.site_load_w + ev_site_w - o.site_pv_w
        lo, hi = o.battery_range_w(self.interval_s)  # the model's range, shadow state
        bat_b = np.where(g.has_battery & g.bat_rule, np.clip(-net, lo, hi), 0.0)
        return ev_b, ev_on, bat_b

    @staticmethod
    def _setpoints(
        ev_sp: FloatArray, bat_sp: FloatArray, follow: np.ndarray | bool
    ) -> dict[str, np.ndarray]:
        """``follow``: sites whose battery follows ``bat_sp`` (the others: built-in rule)."""
        return {"ev_setpoint_w": np.asarray(ev_sp, float), **battery_setpoints(bat_sp, follow)}

    def _close_interval(self, now: float) -> None:
        cur = self._current
        if cur is None or now <= cur.t0_s:
            return
        h = (now - cur.t0_s) / SECONDS_PER_HOUR
        delivered_wh = 0.0
        for g in self.groups:
            if g.obs0 is None:
                continue
            o1 = self.world.observe(g.name)
            delivered_wh += self._measure(g, g.obs0, o1, h)
        sign = 1.0 if cur.direction == "up" else -1.0
        delivered_wh *= sign
        total_p = sum(r.power_w for r in cur.requests)
        for r in cur.requests:
            w = r.power_w / total_p if total_p > 0 else 0.0
            r.available_wh += w * cur.available_w * h
            r.dispatched_wh += w * cur.dispatched_w * h
            r.delivered_wh += w * delivered_wh
        lg = self.log
        lg.t_start_s.append(cur.t0_s)
        lg.t_end_s.append(now)
        lg.direction.append(cur.direction)
        lg.requests.append(";".join(r.id for r in cur.requests))
        lg.requested_w.append(cur.requested_w)
        lg.available_w.append(cur.available_w)
        lg.dispatched_w.append(cur.dispatched_w)
        lg.delivered_w.append(delivered_wh / h)
        self._current = None

    def _measure(self, g: VppGroup, o0: Observation, o1: Observation, h: float) -> float:
        """Grid-side energy [Wh, load convention] the dispatched devices took beyond
        their baseline between two observations; advances the shadow state."""
        total = 0.0
        m = g.ev_mask & o1.ev_plugged & (o0.ev_departure_s >= o1.now_s)
        sh_ev = o1.ev_energy_wh.copy()  # devices not measured: shadow = actual
        if m.any():
            eff = g.ev_eff[m]
            d = o1.ev_energy_wh[m] - o0.ev_energy_wh[m]
            actual = np.where(d > 0, d / eff, d * eff)
            s0 = g.sh_ev_wh[m]
            room = np.maximum(g.ev_max_wh[m] - s0, 0.0) / eff
            avail = np.maximum(s0 - g.ev_min_wh[m], 0.0) * eff
            base = np.clip(g.ev_base_w[m] * h, -avail, room)
            total += float((actual - base).sum())
            sh_ev[m] = s0 + np.where(base > 0, base * eff, base / eff)
        g.sh_ev_wh = sh_ev
        mb = g.bat_mask
        if mb is not None and mb.any():
            d = o1.battery_energy_wh[mb] - o0.battery_energy_wh[mb]
            actual = np.where(d > 0, d / g.bat_eta_c[mb], d * g.bat_eta_d[mb])
            s0 = g.sh_bat_wh[mb]
            room = np.maximum(g.bat_max_wh[mb] - s0, 0.0) / g.bat_eta_c[mb]
            avail = np.maximum(s0 - g.bat_min_wh[mb], 0.0) * g.bat_eta_d[mb]
            base = np.clip(g.bat_base_w[mb] * h, -avail, room)
            total += float((actual - base).sum())
            sh_bat = g.sh_bat_wh.copy()
            sh_bat[mb] = s0 + np.where(base > 0, base * g.bat_eta_c[mb], base / g.bat_eta_d[mb])
            g.sh_bat_wh = sh_bat
        return total
