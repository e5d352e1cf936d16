"""Device populations attached to site groups: EVs, and the log of discrete events."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

F = NDArray[np.float64]
I = NDArray[np.int64]  # noqa: E741


@dataclass
class EvPopulation:
    site: I
    capacity_wh: F
    energy_wh: F
    charger_w: F
    efficiency: F
    energy_max_wh: F
    target_wh: F
    consumption_wh_per_km: F
    plugged: NDArray[np.bool_]
    away_until_s: F  # time of the pending arrival; -inf when at home
    ids: I  # global EV ids (for event records)
    setpoint_w: F = None  # requested AC power, + charge / − discharge; +inf = as much as allowed
    v2x_w: F = None  # discharge (V2H/V2G) power limit; 0 = not bidirectional
    energy_min_wh: F = None  # discharge floor
    departure_s: F = None  # next planned departure; inf when none is planned
    taper_soc: F = None  # CC-CV taper starts here (>= soc_max: no taper)
    taper_line_w: F = None  # CC power of the pack's taper line (default: the charger's)

    def __post_init__(self) -> None:
        n = self.site.size
        if self.setpoint_w is None:
            self.setpoint_w = np.full(n, np.inf)
        if self.v2x_w is None:
            self.v2x_w = np.zeros(n)
        if self.energy_min_wh is None:
            self.energy_min_wh = np.zeros(n)
        if self.departure_s is None:
            self.departure_s = np.full(n, np.inf)
        if self.taper_soc is None:
            self.taper_soc = np.ones(n)
        if self.taper_line_w is None:
            self.taper_line_w = self.charger_w.copy()
        # where the taper starts [Wh] (>= energy_max_wh: none)
        self.energy_taper_wh = np.minimum(self.taper_soc * self.capacity_wh,
                                          self.energy_max_wh)

    @property
    def n(self) -> int:
        return int(self.site.size)


@dataclass
class EventLog:
    """Columnar log of discrete events (appended per round, concatenated at the end)."""

    time_s: list[F] = field(default_factory=list)
    ev_id: list[I] = field(default_factory=list)
    site: list[I] = field(default_factory=list)
    kind: list[NDArray[np.int8]] = field(default_factory=list)
    soc: list[F] = field(default_factory=list)
    energy_wh: list[F] = field(default_factory=list)  # trip energy (arrival)
    unmet_wh: list[F] = field(default_factory=list)  # below target (departure) / shortfall

    def append(self, t, ev_id, site, kind, soc, energy_wh, unmet_wh) -> None:
        self.time_s.append(np.asarray(t, dtype=float))
        self.ev_id.append(np.asarray(ev_id, dtype=np.int64))
        self.site.append(np.asarray(site, dtype=np.int64))
        self.kind.append(np.asarray(kind, dtype=np.int8))
        self.soc.append(np.asarray(soc, dtype=float))
        self.energy_wh.append(np.asarray(energy_wh, dtype=float))
        self.unmet_wh.append(np.asarray(unmet_wh, dtype=float))

    def columns(self) -> dict[str, np.ndarray]:
        def cat(parts, dtype):
            return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

        return {"time_s": cat(self.time_s, float), "ev_id": cat(self.ev_id, np.int64),
                "site": cat(self.site, np.int64), "kind": cat(self.kind, np.int8),
                "soc": cat(self.soc, float), "energy_wh": cat(self.energy_wh, float),
                "unmet_wh": cat(self.unmet_wh, float)}
