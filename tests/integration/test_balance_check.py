"""The engine refuses a tick whose books do not close (``world/run.check_balance``):
energy that appears in or leaves a store without a booked flow stops the run with the
tick named, whichever store it is and whether it happens between or within ticks."""

from __future__ import annotations

import pytest

from cps_sim.core.errors import SimulationError
from cps_sim.scenario.schema import Scenario
from cps_sim.world.run import start_run

TICK_S = 900.0


def _scenario() -> Scenario:
    return Scenario(
        name="books",
        seed=5,
        start="2026-06-01T00:00:00+09:00",
        duration_days=1,
        tick_s=TICK_S,
        weather={"source": "synthetic"},
        sites=[
            {
                "name": "homes",
                "count": 20,
                "pv": {"share": 0.5},
                "battery": {"share": 1.0},
                "ev": {"per_site": 1},
            }
        ],
    )


def test_balanced_run_passes():
    run = start_run(_scenario())
    run.run_to_end()
    assert run.world.ledger.max_abs_tick_residual_wh < 1e-6


@pytest.mark.parametrize("store", ["battery", "ev"])
# at a tick boundary the change is booked to the tick that ends there (its settlement
# comes after the tampering process, scheduled first, at that instant)
@pytest.mark.parametrize(
    ("at_s", "tick"), [(5 * TICK_S, 4), (5 * TICK_S + 300.0, 5)], ids=["boundary", "within"]
)
@pytest.mark.parametrize("delta_wh", [500.0, -500.0])
def test_unbooked_energy_stops_the_run(store, at_s, tick, delta_wh):
    run = start_run(_scenario())
    world, env = run.world, run.env
    g = world.groups[0]

    def tamper():
        yield env.timeout(at_s)
        world.advance_to(at_s)
        arr = g.batteries.energy_wh if store == "battery" else g.evs.energy_wh
        i = int(arr.argmax())
        arr[i] += delta_wh  # no flow booked
        if store == "ev":
            g.evs.changed()

    env.process(tamper())
    with pytest.raises(SimulationError, match=rf"energy balance broken in tick {tick}\b"):
        run.run_to_end()
