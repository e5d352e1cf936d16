"""Energy ledger: every Wh is in a store, a flow or a logged loss.

Balance over any interval::

    grid_import + pv_generation + measured_correction
        = load + grid_export + ev_driving + losses + Δ(stored energy)

(``battery_fade`` is energy stranded above an aged battery's shrunken window;
``measured_correction`` is energy a measurement of a device bound to real
hardware added to (+) or removed from (−) the model's store: a measured SoC that
disagrees with the integrated one, or a measured power that would leave the
store's physical range.)

where stored energy is that of stationary batteries and EV batteries.  The
residual of this identity is computed per tick and over the run; it must be
zero to floating-point precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCES = ("grid_import_wh", "pv_generation_wh", "measured_correction_wh")
SINKS = (
    "load_wh",
    "grid_export_wh",
    "ev_driving_wh",
    "battery_loss_wh",
    "ev_loss_wh",
    "battery_fade_wh",
    "deferrable_wh",
)


@dataclass
class EnergyLedger:
    """Sources and sinks default to the engine's built-in flows; the world passes the
    ones derived from its registered populations (``world.populations``)."""

    stored_initial_wh: float
    totals: dict[str, float] = field(default_factory=dict)
    max_abs_tick_residual_wh: float = 0.0
    sources: tuple[str, ...] = SOURCES
    sinks: tuple[str, ...] = SINKS

    def residual_wh(
        self, flows: dict[str, float], stored_before_wh: float, stored_after_wh: float
    ) -> float:
        """Sources − sinks − Δstored for one interval (should be ~0)."""
        src = sum(flows.get(k, 0.0) for k in self.sources)
        snk = sum(flows.get(k, 0.0) for k in self.sinks)
        return src - snk - (stored_after_wh - stored_before_wh)

    def add_tick(
        self, flows: dict[str, float], stored_before_wh: float, stored_after_wh: float
    ) -> float:
        for k, v in flows.items():
            self.totals[k] = self.totals.get(k, 0.0) + v
        r = self.residual_wh(flows, stored_before_wh, stored_after_wh)
        self.max_abs_tick_residual_wh = max(self.max_abs_tick_residual_wh, abs(r))
        return r

    def run_residual_wh(self, stored_final_wh: float) -> float:
        return self.residual_wh(self.totals, self.stored_initial_wh, stored_final_wh)
