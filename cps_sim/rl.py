"""Gymnasium environment: an RL agent as the controller of one site group.

``CpsSimEnv`` wraps a scenario (a path, a :class:`~cps_sim.scenario.schema.Scenario`
or ``None`` for a small built-in one).  Each ``step`` applies the agent's action
as setpoints (``World.apply``) and advances SimPy by one decision interval.
Needs the optional extra ``rl`` (``gymnasium>=1.0``).

Action (``Box(-1, 1)``, float32):

* ``action_mode="per_device"`` (default): ``n_sites x ev_per_site`` EV slots
  followed by ``n_sites`` battery slots (no battery slots when the group has no
  battery spec, no EV slots when it has no EVs).  EV slot ``s*ev_per_site + r``
  drives the ``r``-th EV of site ``s`` (``ev_per_site`` = ``ev.per_site``, or 1
  for share-based fleets, whose sites have at most one EV); slots without a
  vehicle are ignored, so the layout does not change with the seed.  A value
  ``a >= 0`` asks for ``a x charger power``; ``a < 0`` for ``|a| x V2X power``
  (discharge; 0 for vehicles that are not bidirectional).  A battery value is a
  fraction of the battery's power rating (+ charge, - discharge).
* ``action_mode="aggregate"``: two values, the EV fraction and the battery
  fraction, broadcast to every EV and every battery of the group.

The engine clips every setpoint to what the device can do (plugged state,
SoC window, ratings, site import limit).

Observation (``Box``, float32, SI units except prices; values are clipped to the
bounds), see :data:`OBS_FEATURES`:

====  ===============================  =======================================
 i    feature                          unit / range
====  ===============================  =======================================
 0    time_of_day_sin                  sin(2 pi hour/24)
 1    time_of_day_cos                  cos(2 pi hour/24)
 2    import_price_jpy_per_kwh         JPY/kWh, current tick
 3    export_price_jpy_per_kwh         JPY/kWh, current tick
 4    pv_w_per_site                    W, group mean of the current tick
 5    load_w_per_site                  W, group mean of the current tick
 6    battery_soc_mean                 0..1 (capacity-weighted; 0 if none)
 7    ev_soc_mean                      0..1 over plugged EVs (capacity-weighted)
 8    ev_plugged_fraction              0..1
 9    ev_energy_to_target_wh_per_ev    Wh, mean over plugged EVs of the energy
                                       still missing to their departure target
 10   time_left_s                      s until the end of the episode
====  ===============================  =======================================

Reward per step [JPY]: ``-(import_kWh x import price - export_kWh x export
price)`` of the group over the step (each tick at its own prices), minus
``unmet_penalty_jpy_per_kwh x`` the EV energy missing at departures in the
step.  An episode is the scenario's duration; it ends with ``truncated=True``
(a time limit, the state is not terminal); ``terminated`` is always False.

Seeding: ``reset(seed=s)`` rebuilds the world with the scenario's seed replaced
by ``s`` (same seed and actions => same trajectory, bit for bit);
``reset()`` without a seed draws one from the environment's generator.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from cps_sim.core.environment import make_env
from cps_sim.core.units import SECONDS_PER_HOUR, WH_PER_KWH
from cps_sim.experiment.recorder import Recorder
from cps_sim.scenario.schema import Scenario
from cps_sim.world.group import DEPARTURE, IX
from cps_sim.world.run import start_run

ENV_ID = "cps_sim/Hems-v0"

OBS_FEATURES = (
    "time_of_day_sin",
    "time_of_day_cos",
    "import_price_jpy_per_kwh",
    "export_price_jpy_per_kwh",
    "pv_w_per_site",
    "load_w_per_site",
    "battery_soc_mean",
    "ev_soc_mean",
    "ev_plugged_fraction",
    "ev_energy_to_target_wh_per_ev",
    "time_left_s",
)
_OBS_LOW = np.array([-1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.float32)
_OBS_HIGH = np.array([1, 1, 1e4, 1e4, 1e7, 1e7, 1, 1, 1, 1e6, 4e8], dtype=np.float32)


def default_scenario() -> Scenario:
    """Ten Tokyo homes, one spring day: PV, a 10 kWh battery and a V2H-capable EV each,
    time-of-use tariff (cheap nights, dear evenings)."""
    return Scenario(
        name="hems_rl",
        seed=0,
        start="2026-04-06T00:00:00+09:00",
        duration_days=1,
        tick_s=900,
        tariff={
            "type": "tou",
            "export_jpy_per_kwh": 8.5,
            "periods": [
                {"name": "night", "price_jpy_per_kwh": 20, "start_hour": 0, "end_hour": 7},
                {"name": "night_late", "price_jpy_per_kwh": 20, "start_hour": 23, "end_hour": 24},
                {"name": "peak", "price_jpy_per_kwh": 45, "start_hour": 17, "end_hour": 21},
                {"name": "day", "price_jpy_per_kwh": 32},
            ],
        },
        sites=[
            {
                "name": "homes",
                "count": 10,
                "pv": {"share": 1.0},
                "battery": {"share": 1.0, "control": "self_consumption"},
                "ev": {"per_site": 1, "v2x_kw": 6},
            }
        ],
    )


def other_controllers(scenario: Scenario, group: str) -> list[str]:
    """What besides an agent sends setpoints to ``group``'s devices (empty: nothing)."""
    out = []
    if scenario.control.for_group(group).ev_strategy is not None:
        out.append(
            f"the EV strategy control.ev_strategy={scenario.control.for_group(group).ev_strategy!r}"
        )
    for key, ems in scenario.ems.items():
        members = [key, *getattr(ems, "member_groups", [])]
        if group in members:
            where = f"ems.{key}" + (" (a member group)" if key != group else "")
            out.append(f"a {ems.kind.upper()} ({where})")
    if scenario.vpp is not None and group in scenario.vpp.groups:
        out.append("the VPP (vpp.groups)")
    bridge = getattr(scenario, "bridge", None)
    if bridge is not None and any(e.group == group for e in getattr(bridge, "expose", [])):
        out.append("an external controller over MQTT (bridge.expose)")
    return out


class CpsSimEnv(gymnasium.Env):
    """One site group of a cps_sim scenario under an RL controller (see module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        scenario: Scenario | str | Path | None = None,
        group: str | None = None,
        decision_interval_s: float | None = None,
        action_mode: str = "per_device",
        unmet_penalty_jpy_per_kwh: float = 50.0,
        base_dir: str | Path | None = None,
    ):
        if scenario is None:
            scenario = default_scenario()
        elif not isinstance(scenario, Scenario):
            from cps_sim.scenario.loader import load_scenario

            path = Path(scenario)
            base_dir = base_dir or path.parent
            scenario = load_scenario(path)
        self.scenario: Scenario = scenario
        self.base_dir = Path(base_dir) if base_dir is not None else None
        specs = {s.name: s for s in scenario.sites}
        self.group_name = group or scenario.sites[0].name
        if self.group_name not in specs:
            raise ValueError(
                f"no site group named {self.group_name!r} (groups: {', '.join(specs)})"
            )
        others = other_controllers(scenario, self.group_name)
        if others:
            raise ValueError(
                f"group {self.group_name!r} is already driven by "
                f"{' and '.join(others)}; the agent must be its only "
                "controller (two controllers would fight over its devices): "
                "remove them from the scenario or choose another group"
            )
        if action_mode not in ("per_device", "aggregate"):
            raise ValueError(
                f"action_mode must be 'per_device' or 'aggregate', got {action_mode!r}"
            )
        self.action_mode = action_mode
        self.dt_s = float(decision_interval_s or scenario.tick_s)
        if not self.dt_s > 0:
            raise ValueError("decision_interval_s must be > 0")
        self.unmet_penalty = float(unmet_penalty_jpy_per_kwh)
        spec = specs[self.group_name]
        self.n_sites = spec.count
        self.ev_per_site = 0 if spec.ev is None else (spec.ev.per_site or 1)
        self.n_bat_slots = self.n_sites if spec.battery is not None else 0
        n_act = (
            self.n_sites * self.ev_per_site + self.n_bat_slots if action_mode == "per_device" else 2
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n_act,), dtype=np.float32)
        self.observation_space = spaces.Box(_OBS_LOW, _OBS_HIGH, dtype=np.float32)
        self.world = None
        self._t0_s = 0.0  # end of the warm-up [s of the world's clock]

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        world_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**63 - 1))
        sc = self.scenario.model_copy(update={"seed": world_seed})
        self._cost_jpy = 0.0
        self._import_wh = 0.0
        self._export_wh = 0.0
        self._log_read = 0
        self._unmet_wh = 0.0

        def on_tick(r) -> None:
            if r.k >= world.warmup_ticks:
                self._read_unmet()  # before the recorder writes the logged events out
            self.recorder.on_tick(r)
            self._log_read = len(self.group.log.kind)  # what is left was read
            if r.k < world.warmup_ticks:  # scenario.warmup_days: before the episode
                return
            f = r.by_group[self.group_name]
            imp, exp = f[IX["grid_import_wh"]], f[IX["grid_export_wh"]]
            self._import_wh += imp
            self._export_wh += exp
            self._cost_jpy += (
                imp * world.import_price_jpy_per_kwh[r.k]
                - exp * world.export_price_jpy_per_kwh[r.k]
            ) / WH_PER_KWH

        run = start_run(sc, on_tick, base_dir=self.base_dir, env=make_env("fast"))
        self.world = world = run.world
        self.sim = run.env
        self.group = world.group(self.group_name)
        self.recorder = Recorder(world)
        self._t0_s = world.warmup_ticks * world.tick_s
        if self._t0_s:  # the warm-up runs under the engine's own rules, without the agent
            self.sim.run(until=self._t0_s)
        self._drain(self._t0_s)
        self._log_read = len(self.group.log.kind)  # departures of the warm-up not counted
        g = self.group
        if g.evs is not None and g.evs.n:
            site = g.evs.site
            first = np.searchsorted(site, site, side="left")
            self._ev_slot = site * self.ev_per_site + (np.arange(site.size) - first)
        else:
            self._ev_slot = np.empty(0, dtype=np.int64)
        return self._obs(), self._info(0.0, 0.0)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.world is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(
            np.asarray(action, dtype=np.float64).reshape(self.action_space.shape), -1.0, 1.0
        )
        self._apply(a)
        end = self._t0_s + float(self.scenario.duration_s)
        target = min(float(self.sim.now) + self.dt_s, end)
        cost0, unmet0 = self._cost_jpy, self._unmet_wh
        self._drain(target)  # every event up to and at the target, in the engine's order
        if target > self.sim.now:  # nothing scheduled at the target itself
            self.sim.run(until=target)
        self._read_unmet()
        d_cost = self._cost_jpy - cost0
        d_unmet_kwh = (self._unmet_wh - unmet0) / WH_PER_KWH
        reward = float(-d_cost - self.unmet_penalty * d_unmet_kwh)
        truncated = target >= end - 1e-9
        return self._obs(), reward, False, bool(truncated), self._info(d_cost, d_unmet_kwh)

    # ------------------------------------------------------------------ internals
    def _drain(self, t: float) -> None:
        """Process every event scheduled up to and at time ``t`` (at ``t``: the settlement
        of the tick that ends there and the next tick's inputs), so the observation is
        current."""
        while self.sim.peek() <= t:
            self.sim.step()

    def _apply(self, a: np.ndarray) -> None:
        g = self.group
        ev_sp = bat_sp = None
        if self.action_mode == "aggregate":
            ev_frac = np.full(self._ev_slot.size, a[0])
            bat_frac = np.full(g.n, a[1]) if self.n_bat_slots else None
        else:
            n_ev_slots = self.n_sites * self.ev_per_site
            ev_frac = a[:n_ev_slots][self._ev_slot] if self._ev_slot.size else None
            bat_frac = a[n_ev_slots:] if self.n_bat_slots else None
        if g.evs is not None and g.evs.n:
            ev_sp = np.where(ev_frac >= 0, ev_frac * g.evs.charger_w, ev_frac * g.evs.v2x_w)
        if bat_frac is not None:
            b = g.battery
            bat_sp = np.where(
                bat_frac >= 0, bat_frac * b.max_charge_power_w, bat_frac * b.max_discharge_power_w
            )
        self.world.apply(self.group_name, ev_setpoint_w=ev_sp, battery_setpoint_w=bat_sp)

    def _read_unmet(self) -> None:
        log = self.group.log
        for kind, unmet in zip(
            log.kind[self._log_read :], log.unmet_wh[self._log_read :], strict=True
        ):
            self._unmet_wh += float(unmet[kind == DEPARTURE].sum())
        self._log_read = len(log.kind)

    def _obs(self) -> np.ndarray:
        w = self.world
        o = w.observe(self.group_name)
        now = float(w.now_s)
        hour = w.clock.local_hour(now)
        ang = 2.0 * math.pi * hour / 24.0
        total = np.add.reduce  # the sum of .sum() and .mean(), without their wrappers
        cap = float(total(o.battery_capacity_wh))
        bat_soc = float(total(o.battery_energy_wh)) / cap if cap > 0 else 0.0
        plugged = o.ev_plugged
        n_ev = o.n_evs
        n_plugged = int(np.count_nonzero(plugged))
        if n_plugged:
            e = o.ev_energy_wh[plugged]
            ev_soc = float(total(e)) / float(total(o.ev_capacity_wh[plugged]))
            need = float(total(np.maximum(o.ev_target_wh[plugged] - e, 0.0))) / n_plugged
        else:
            ev_soc = need = 0.0
        n = o.n_sites
        x = np.array(
            [
                math.sin(ang),
                math.cos(ang),
                float(o.import_price_jpy_per_kwh[0]) if n else 0.0,
                float(o.export_price_jpy_per_kwh[0]) if n else 0.0,
                float(total(o.site_pv_w)) / n if n else math.nan,
                float(total(o.site_load_w)) / n if n else math.nan,
                bat_soc,
                ev_soc,
                n_plugged / n_ev if n_ev else 0.0,
                need,
                max(self._t0_s + float(self.scenario.duration_s) - now, 0.0),
            ],
            dtype=np.float64,
        )
        return np.minimum(np.maximum(x, _OBS_LOW), _OBS_HIGH).astype(np.float32)  # clip

    def _info(self, d_cost: float, d_unmet_kwh: float) -> dict[str, Any]:
        return {
            "time_s": float(self.world.now_s) - self._t0_s,
            "cost_jpy": float(d_cost),
            "unmet_ev_kwh": float(d_unmet_kwh),
            "episode_cost_jpy": float(self._cost_jpy),
            "episode_import_kwh": float(self._import_wh) / WH_PER_KWH,
            "episode_export_kwh": float(self._export_wh) / WH_PER_KWH,
            "step_hours": self.dt_s / SECONDS_PER_HOUR,
        }


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="cps_sim.rl:CpsSimEnv")
