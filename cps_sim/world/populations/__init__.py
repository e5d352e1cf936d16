"""Device populations as plug-ins of the site groups, and what is derived from them.

``REGISTRY`` is every :class:`~.base.Population` subclass defined in a module of
this package, found at import time and sorted by its ``order``: the order of
the site balance (inputs first, then loads that may be cut in this order under
an import limit, then the battery that responds to the rest; per-tick devices
after).  A new device family is one module here — nothing to register by hand
(see docs/architecture.md, "Adding a device").

Derived from the registry, never kept in step by hand:

* ``FLOWS`` / ``IX`` — the per-tick accumulators of a site group (the connection's
  own flows first, then each population's);
* ``SOURCES`` / ``SINKS`` — the ledger identity (:class:`~cps_sim.core.ledger.EnergyLedger`);
* ``SETPOINT_KEYS`` — every control key a group can accept (``World.apply``);
* ``OBSERVED`` — the observation fields the populations fill;
* the recorder's columns (one ``<flow>_w`` column per flow).
"""

from __future__ import annotations

import importlib
import pkgutil

from cps_sim.world.populations.base import (
    Cut,
    Flow,
    Population,
    Segment,
    SetpointKey,
    TickContext,
)
from cps_sim.world.populations.battery import BatteryPopulation
from cps_sim.world.populations.deferrable import DeferrablePopulation
from cps_sim.world.populations.ev import ARRIVAL, DEPARTURE, EventLog, EvPopulation
from cps_sim.world.populations.hpwh import HpwhPopulation
from cps_sim.world.populations.inputs import SiteInputs


def _discover() -> tuple[type[Population], ...]:
    """Every Population subclass defined in a module of this package, by ``order``."""
    found: dict[str, type[Population]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(mod).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Population)
                and obj is not Population
                and obj.__module__ == mod.__name__
                and obj.key
            ):
                if obj.key in found:  # pragma: no cover - a packaging mistake
                    raise RuntimeError(f"two populations with key {obj.key!r}")
                found[obj.key] = obj
    return tuple(sorted(found.values(), key=lambda c: (c.order, c.key)))


REGISTRY: tuple[type[Population], ...] = _discover()

# flows of the grid connection itself (world/connection.py) and of measurements
CONNECTION_FLOWS: tuple[Flow, ...] = (
    Flow("grid_import_wh", "source", "energy drawn from the grid at the sites' connections"),
    Flow("grid_export_wh", "sink", "energy fed into the grid at the sites' connections"),
    Flow(
        "measured_correction_wh",
        "source",
        "energy a measurement of a device bound to real "
        "hardware added to (+) or removed from (−) the model's store",
    ),
)
CONNECTION_SETPOINTS: tuple[SetpointKey, ...] = (
    SetpointKey(
        "import_limit_w", "site", "import limit per site (tightens the site's own)", min_w=0.0
    ),
    SetpointKey(
        "export_limit_w", "site", "export limit per site (tightens the site's own)", min_w=0.0
    ),
)

FLOW_DEFS: tuple[Flow, ...] = CONNECTION_FLOWS + tuple(f for p in REGISTRY for f in p.FLOWS)
FLOWS: tuple[str, ...] = tuple(f.name for f in FLOW_DEFS)
IX: dict[str, int] = {name: i for i, name in enumerate(FLOWS)}
SOURCES: tuple[str, ...] = tuple(f.name for f in FLOW_DEFS if f.role == "source")
SINKS: tuple[str, ...] = tuple(f.name for f in FLOW_DEFS if f.role == "sink")
SETPOINT_DEFS: dict[str, tuple[type[Population] | None, SetpointKey]] = {
    **{k.name: (None, k) for k in CONNECTION_SETPOINTS},
    **{k.name: (p, k) for p in REGISTRY for k in p.SETPOINTS},
}
SETPOINT_KEYS: tuple[str, ...] = tuple(SETPOINT_DEFS)
OBSERVED: tuple[str, ...] = tuple(f for p in REGISTRY for f in p.OBSERVES)

if len(set(FLOWS)) != len(FLOWS):  # pragma: no cover - a registry mistake
    raise RuntimeError(f"two populations declare the same flow: {FLOWS}")

__all__ = [
    "ARRIVAL",
    "DEPARTURE",
    "FLOWS",
    "IX",
    "OBSERVED",
    "REGISTRY",
    "SETPOINT_KEYS",
    "SINKS",
    "SOURCES",
    "BatteryPopulation",
    "Cut",
    "DeferrablePopulation",
    "EvPopulation",
    "EventLog",
    "Flow",
    "HpwhPopulation",
    "Population",
    "Segment",
    "SetpointKey",
    "SiteInputs",
    "TickContext",
]
