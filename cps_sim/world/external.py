"""Members of a population bound to an external (real or emulated) device.

The MQTT bridge binds a device to one member of a site group with
:meth:`World.bind_external <cps_sim.world.world.World.bind_external>` and then

* feeds its measurements: ``m.set_measured_w(t_s, power_w)`` — the world is
  integrated to ``t_s`` first (so everything before ``t_s`` used the previous
  value), and from ``t_s`` on the member's power is the measured value until the
  next call.  Load convention: + into the device (charging, consumption),
  − out of it (generation, discharge);
* releases it when the measurement is stale or lost: ``m.release(t_s, reason)``
  — from ``t_s`` the member runs on its model again (flagged: ``m.measured`` is
  False, ``m.releases`` counts the releases, ``m.release_reasons`` keeps them);
* forwards setpoints: ``m.setpoint_mode`` says what the scenario's controllers
  last applied to this member — ``"none"`` (nothing yet), ``"setpoint"`` (a power,
  ``m.setpoint_w`` [W]) or ``"auto"`` (a battery on its built-in rule,
  ``battery_mode``); ``m.setpoint_w`` is NaN unless the mode is ``"setpoint"``.
  ``m.on_setpoint(callback)`` registers ``callback(t_s, setpoint_w)``, called
  whenever the setpoint or the mode changes;
* reads what the model knows for clamping and display: ``m.state``
  (:class:`MemberState`: stored energy, SoC, plugged, rated power limits).

Energy of a bound member enters the books exactly like a modelled member's: its
measured power is integrated between events into the same flows
(``ev_charging_wh``, ``battery_charge_wh``, ``load_wh``, ``pv_generation_wh`` …), so
the per-tick balance still closes.  The engine does not clip a measured power
(the device did what it did); where that would take the model's stored energy
outside [0, capacity], or where a measured SoC disagrees with the integrated
one (``set_measured_w(..., soc=...)``), the difference is booked in the ledger's
``measured_correction_wh`` flow instead of being overwritten silently.
``m.energy_wh`` is the AC energy the engine booked for the member while it was
measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cps_sim.core.bus import BATTERY_AUTO

if TYPE_CHECKING:
    from cps_sim.world.group import SiteGroup
    from cps_sim.world.world import World

KINDS = ("ev", "battery", "pv", "load")
# which control setpoint key reaches a member of each kind (None: not controllable)
SETPOINT_KEY = {"ev": "ev_setpoint_w", "battery": "battery_setpoint_w", "pv": None, "load": None}
# the keys that change a member's setpoint or mode
SETPOINT_KEYS_OF = {
    "ev": ("ev_setpoint_w",),
    "battery": ("battery_setpoint_w", "battery_mode"),
    "pv": (),
    "load": (),
}

SetpointCallback = Callable[[float, float], None]


@dataclass(frozen=True)
class MemberState:
    """What the model knows about a member (SI units; NaN where not applicable)."""

    kind: str
    energy_wh: float
    capacity_wh: float
    soc: float
    plugged: bool
    max_charge_w: float  # largest power into the device (load: inf; PV: 0)
    max_discharge_w: float  # largest power out of it, as a positive number


@dataclass
class ExternalMember:
    """One member of a site group whose power comes from an external device."""

    world: World
    group: SiteGroup
    kind: str
    site: int  # index within the group
    index: int  # EV index within the group's EVs (ev), else the site
    measured: bool = False
    measurements: int = 0
    releases: int = 0
    release_reasons: list[str] = field(default_factory=list)
    setpoint_w: float = math.nan
    setpoint_mode: str = "none"  # "none" | "setpoint" | "auto"
    _callbacks: list[SetpointCallback] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.group.name}-{self.site}-{self.kind}"

    # ------------------------------------------------------------------ measurements
    def set_measured_w(
        self, t_s: float, power_w: float, *, soc: float | None = None, plugged: bool | None = None
    ) -> None:
        """From ``t_s`` on, the member runs at the measured ``power_w`` [W].

        ``soc`` (EV, battery) sets the stored energy to a measured state of charge,
        booking the difference as ``measured_correction_wh``; ``plugged`` (EV) sets
        whether the vehicle is connected.
        """
        p = float(power_w)
        if not math.isfinite(p):
            raise ValueError(f"{self.name}: measured power must be finite, got {power_w!r}")
        if soc is not None and not (math.isfinite(soc) and 0.0 <= soc <= 1.0):
            raise ValueError(f"{self.name}: measured soc must be in [0, 1], got {soc!r}")
        self.world.advance_to(float(t_s))
        g = self.group
        if soc is not None:
            if self.kind not in ("ev", "battery"):
                raise ValueError(f"{self.name}: a {self.kind} has no state of charge")
            cap = (g.evs.capacity_wh if self.kind == "ev" else g.battery.capacity_wh)[self.index]
            g.correct_energy(self.kind, self.index, float(soc) * float(cap))
        if plugged is not None:
            if self.kind != "ev":
                raise ValueError(f"{self.name}: only an EV can be plugged in")
            g.evs.plugged[self.index] = bool(plugged)
            g.evs.changed()
        g.set_measured(self.kind, self.index, p)
        self.measured = True
        self.measurements += 1

    def release(self, t_s: float, reason: str = "") -> None:
        """The measurement is stale or lost: from ``t_s`` the member runs on its model."""
        self.world.advance_to(float(t_s))
        if self.measured:
            self.group.set_measured(self.kind, self.index, math.nan)
            self.measured = False
            self.releases += 1
            if len(self.release_reasons) < 100:
                self.release_reasons.append(
                    f"{float(t_s):g} s: {reason}" if reason else f"{float(t_s):g} s"
                )

    @property
    def energy_wh(self) -> float:
        """AC energy [Wh, load convention] the engine booked while the member was measured."""
        booked = self.group.measured_wh.get(self.kind)
        return float(booked[self.index]) if booked is not None else 0.0

    # ------------------------------------------------------------------ setpoints
    def on_setpoint(self, callback: SetpointCallback) -> None:
        """Call ``callback(t_s, setpoint_w)`` whenever the member's setpoint changes."""
        self._callbacks.append(callback)

    def _offer_setpoint(self, t_s: float, value: float, mode: str) -> None:
        if mode == self.setpoint_mode and (mode != "setpoint" or value == self.setpoint_w):
            return
        self.setpoint_mode = mode
        self.setpoint_w = value if mode == "setpoint" else math.nan
        for cb in list(self._callbacks):
            cb(t_s, self.setpoint_w)

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> MemberState:
        g = self.group
        i = self.index
        nan = math.nan
        if self.kind == "ev":
            evs = g.evs
            cap = float(evs.capacity_wh[i])
            e = float(evs.energy_wh[i])
            return MemberState(
                "ev",
                e,
                cap,
                e / cap if cap > 0 else nan,
                bool(evs.plugged[i]),
                float(evs.charger_w[i]),
                float(evs.v2x_w[i]),
            )
        if self.kind == "battery":
            b = g.battery
            cap = float(b.capacity_wh[i])
            e = float(g.battery_energy_wh[i])
            return MemberState(
                "battery",
                e,
                cap,
                e / cap if cap > 0 else nan,
                True,
                float(b.max_charge_power_w[i]),
                float(b.max_discharge_power_w[i]),
            )
        if self.kind == "pv":
            rated = float(g.pv_capacity_w[i])
            if np.isfinite(g.pv_ac_limit_w[i]):
                rated = min(rated, float(g.pv_ac_limit_w[i]))
            return MemberState("pv", nan, nan, nan, True, 0.0, rated)
        return MemberState("load", nan, nan, nan, True, math.inf, 0.0)


def member_setpoint(group: SiteGroup, kind: str, index: int) -> tuple[float, str]:
    """``(setpoint_w, mode)`` a controller applied to one member: mode ``"setpoint"``
    with the power [W] (an EV's "as much as allowed", +inf, is its charger's rating),
    ``"auto"`` for a battery on its built-in rule (value NaN), ``"none"`` otherwise."""
    if kind == "ev":
        v = float(group.evs.setpoint_w[index])
        return (float(group.evs.charger_w[index]) if v == math.inf else v), "setpoint"
    if kind == "battery":
        b = group.batteries
        if b.mode[index] == BATTERY_AUTO:
            return math.nan, "auto"
        return float(b.target_w[index]), "setpoint"
    return math.nan, "none"
