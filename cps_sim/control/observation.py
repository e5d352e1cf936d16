"""What a controller sees of one site group at one instant.

``World.observe(group_name)`` returns an :class:`Observation`; controllers
(``cps_sim.control.base``) and strategies (``cps_sim.control.strategies``)
read only this.  Units are in the names; sign convention of
``cps_sim.core.units`` (power into a device positive).

Two index spaces:

* ``site_*``, ``battery_*`` and the prices are arrays over the group's sites
  (length ``n_sites``; a site without a battery has capacity 0);
* ``ev_*`` are arrays over the group's EVs (length ``n_evs``);
  ``ev_site[k]`` is the index of the site EV ``k`` belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

import numpy as np

from cps_sim.core.types import BoolArray, FloatArray, IntArray
from cps_sim.models.battery import BatterySpec, feasible_power_w
from cps_sim.models.ev_physics import feasible_range_w


@dataclass(frozen=True)
class Observation:
    """Measurements, limits and prices of one group at ``now_s``."""

    now_s: float  # simulation time [s since scenario start]
    tick_s: float  # settlement tick [s]
    # --- per site -------------------------------------------------------
    site_load_w: FloatArray  # household/building load (>= 0)
    site_pv_w: FloatArray  # PV generation as a non-negative number
    site_import_limit_w: FloatArray  # breaker / contract limit (inf if none)
    battery_energy_wh: FloatArray
    battery_capacity_wh: FloatArray  # 0 where the site has no battery
    battery_power_w: FloatArray  # + charge, - discharge
    # --- per EV ---------------------------------------------------------
    ev_site: IntArray  # site index of each EV
    ev_soc: FloatArray  # 0..1
    ev_energy_wh: FloatArray
    ev_capacity_wh: FloatArray
    ev_plugged: BoolArray
    ev_charger_w: FloatArray  # max charging power (> 0)
    ev_v2x_w: FloatArray  # max discharge power as a positive number, 0 if not capable
    ev_soc_min: FloatArray  # floor the controller must keep, 0..1
    ev_target_wh: FloatArray  # energy wanted at departure
    ev_departure_s: FloatArray  # next planned departure, inf if unknown
    # --- per site, current tick ----------------------------------------
    import_price_jpy_per_kwh: FloatArray
    export_price_jpy_per_kwh: FloatArray
    # --- per site: deferrable process (max power 0 where a site has none) --
    deferrable_max_w: FloatArray | None = None
    deferrable_remaining_wh: FloatArray | None = None  # still to deliver before the deadline
    deferrable_deadline_s: FloatArray | None = None  # inf when no window is open
    # --- per site: export limit in force (inf if none) --------------------
    site_export_limit_w: FloatArray | None = None
    # --- per EV: top of the SoC window and charging efficiency -----------
    ev_energy_max_wh: FloatArray | None = None
    ev_charge_efficiency: FloatArray | None = None
    # --- device limits: the group's battery spec (per site; capacity 0 where none) --
    battery_spec: BatterySpec | None = None
    # --- per EV: CC-CV taper (where it starts [Wh], the pack's line [W]) ----
    ev_energy_taper_wh: FloatArray | None = None
    ev_taper_line_w: FloatArray | None = None
    # --- control keys the group accepts and their array lengths (from the world) --
    setpoint_sizes: Mapping[str, int] | None = None
    # --- fields of device populations that have no attribute above -------
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Observation:
        """``Observation(**fields)`` without the frozen dataclass's ``__init__``, which sets
        its 30-odd fields one ``object.__setattr__`` at a time (the world makes one per
        decision).  ``fields`` holds every field without a default (others take their
        default; ``extra`` has none: give it); there is no ``__post_init__``, so the
        object is the same.  A missing field is a ``TypeError``, an unknown one too."""
        obs = object.__new__(cls)
        d = obs.__dict__
        d.update(_DEFAULTS)
        d.update(fields)
        if d.keys() != OBSERVATION_FIELDS:
            missing = sorted(OBSERVATION_FIELDS - d.keys())
            unknown = sorted(d.keys() - OBSERVATION_FIELDS)
            raise TypeError(f"observation fields missing: {missing}; unknown: {unknown}")
        return obs

    def ev_range_w(
        self, hold_s: float, energy_wh: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """(lowest, highest) power [W, + charge] each EV can hold for ``hold_s`` from
        ``energy_wh`` (default: its present energy): the EV model's
        :func:`cps_sim.models.ev_physics.feasible_range_w` with the limits that come
        with the observation; 0 for EVs that are not plugged in."""
        e = self.ev_energy_wh if energy_wh is None else energy_wh
        cap = self.ev_capacity_wh
        e_max = self.ev_energy_max_wh if self.ev_energy_max_wh is not None else cap
        eff = (
            self.ev_charge_efficiency
            if self.ev_charge_efficiency is not None
            else np.ones_like(cap)
        )
        taper = self.ev_energy_taper_wh if self.ev_energy_taper_wh is not None else e_max
        line = self.ev_taper_line_w if self.ev_taper_line_w is not None else self.ev_charger_w
        on = self.ev_plugged
        return feasible_range_w(
            e,
            self.ev_soc_min * cap,
            e_max,
            taper,
            line,
            np.where(on, self.ev_charger_w, 0.0),
            np.where(on, self.ev_v2x_w, 0.0),
            eff,
            eff,
            hold_s,
        )

    def battery_range_w(self, hold_s: float) -> tuple[FloatArray, FloatArray]:
        """(lowest, highest) battery power [W, + charge] each site's battery can hold for
        ``hold_s`` (the model's :func:`cps_sim.models.battery.feasible_power_w`), so the
        engine never clips it; zeros where a site has no battery or no spec is known."""
        if self.battery_spec is None:
            z = np.zeros(self.n_sites)
            return z, z.copy()
        return feasible_power_w(self.battery_spec, self.battery_energy_wh, hold_s)

    @property
    def n_sites(self) -> int:
        return int(np.shape(self.site_load_w)[0])

    @property
    def n_evs(self) -> int:
        return int(np.shape(self.ev_soc)[0])

    def site_net_w(self) -> FloatArray:
        """Site net demand without EV and battery: load - PV (negative = surplus)."""
        return np.asarray(self.site_load_w, float) - np.asarray(self.site_pv_w, float)


# every field of an observation (what World.observe keeps; the rest goes to ``extra``)
OBSERVATION_FIELDS = frozenset(Observation.__dataclass_fields__)
# the fields an observation may omit, with their defaults (``extra``'s factory excepted)
_DEFAULTS = {
    name: f.default
    for name, f in Observation.__dataclass_fields__.items()
    if f.default is not MISSING
}


def site_forecast(
    forecast: Any, times_s: FloatArray, sites: IntArray | None, n_sites: int
) -> FloatArray:
    """Values of a per-site forecast ``forecast(times_s) -> (n_sites, T)`` at the
    given ``sites`` only, ``(len(sites), T)`` (every site for None).

    A forecast that can compute a subset of the sites itself says so with a
    ``takes_sites = True`` attribute and is called as ``forecast(times_s, sites)``
    (the world's PV forecast does: a planner that looks at the few sites with a
    plugged EV does not compute every site's PV); any other callable is called
    with the times alone and its rows are picked.
    """
    t = np.asarray(times_s, dtype=float)
    if sites is not None and getattr(forecast, "takes_sites", False):
        return np.asarray(forecast(t, sites), dtype=float).reshape(len(sites), t.size)
    out = np.asarray(forecast(t), dtype=float).reshape(n_sites, t.size)
    return out if sites is None else out[sites]
