"""The one run recipe: build the world, wire its control, simulate.

:func:`start_run` is what every caller that runs a scenario uses
(:func:`cps_sim.experiment.run.simulate` for ``cps-sim run``/``hil``/sweeps, the
Gymnasium environment in :mod:`cps_sim.rl`, the balancing group's baseline run in
:mod:`cps_sim.market.balancing_group`):

1. :func:`cps_sim.world.build.build_world` samples the populations and binds the inputs;
2. the SimPy environment is the one given, else the scenario's ``mode``/``speed``;
3. :meth:`World.start <cps_sim.world.world.World.start>` registers the world's processes
   and wires the scenario's controllers (:func:`cps_sim.world.wiring.wire`);
4. every settled tick is checked for energy balance (:func:`check_balance`: a residual
   stops the run) before the caller's ``on_tick`` sees it.

A scenario's ``warmup_days`` is part of the world (``world.warmup_ticks``; the recorder
leaves those ticks out); a real-time environment runs them unpaced and paces from
``start`` on.

The caller then runs it to the end (:meth:`Run.run_to_end`) or steps it (RL).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simpy

from cps_sim.core.environment import make_env
from cps_sim.core.errors import SimulationError
from cps_sim.world.build import build_world
from cps_sim.world.world import TickResult, World

RESIDUAL_REL_TOL = 1e-9


def check_balance(world: World, r: TickResult) -> None:
    """Raise :class:`SimulationError` when tick ``r``'s books do not close: the residual
    may be at most ``RESIDUAL_REL_TOL`` x 1000 of the largest flow (+ 1e-3 of the energy
    stored + 1 Wh)."""
    stored = r.stored_wh if math.isfinite(r.stored_wh) else world.stored_wh()
    scale = max(abs(v) for v in r.flows_wh.values()) + stored * 1e-3 + 1.0
    if abs(r.residual_wh) > RESIDUAL_REL_TOL * scale * 1e3:
        raise SimulationError(
            f"energy balance broken in tick {r.k}: residual {r.residual_wh:.6g} Wh"
        )


@dataclass
class Run:
    """A started run: the world and the environment its processes are registered on."""

    world: World
    env: simpy.Environment

    @property
    def end_s(self) -> float:
        """Run the environment until here to settle every tick (half a tick past the end)."""
        return float(self.world.scenario.duration_s + 0.5 * self.world.tick_s)

    def run_to_end(self) -> None:
        self.env.run(until=self.end_s)


def start_run(
    scenario: Any,
    on_tick: Callable[[TickResult], None] | None = None,
    *,
    base_dir: Path | None = None,
    env: simpy.Environment | None = None,
    transport: Any = None,
) -> Run:
    """Build the world of ``scenario``, start it on ``env`` (default: the scenario's mode)
    with its controllers wired on ``transport`` (default: the in-memory bus), and call
    ``on_tick(result)`` after every settled tick whose energy balance closes."""
    world = build_world(scenario, base_dir)
    env = env if env is not None else make_env(scenario.mode, scenario.speed)
    k0 = world.warmup_ticks  # scenario.warmup_days: simulated before start, not recorded
    factor = getattr(env, "factor", None) if k0 else None
    if factor is not None:  # a real-time environment runs the warm-up unpaced
        env._factor = 0.0  # type: ignore[attr-defined]  # simpy.rt's wall s per sim s

    def settled(r: TickResult) -> None:
        check_balance(world, r)
        if r.k == k0 - 1 and factor is not None:  # pacing starts at `start`
            env._factor = factor  # type: ignore[attr-defined]
            env.env_start = env.now  # type: ignore[attr-defined]  # sync() resets the wall side
            env.sync()  # type: ignore[attr-defined]
        if on_tick is not None:
            on_tick(r)

    world.start(env, settled, transport=transport)
    return Run(world, env)
