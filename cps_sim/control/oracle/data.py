"""Inputs, objective and result of the oracle LP (see :mod:`cps_sim.control.oracle`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import numpy.typing as npt

from cps_sim.core.errors import CpsSimError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEPARTURE = 0
ARRIVAL = 1
OBJECTIVES = ("cost", "co2", "peak", "curtailment")
DEFAULT_UNMET_PENALTY = {"cost": 100.0, "co2": 5.0, "peak": 10.0, "curtailment": 10.0}
"""Per kWh of service shortfall, in the objective's unit (JPY, kg, kW, kWh); assumptions,
each above the largest marginal value of one kWh under that objective, so that every
feasible target is met."""


class OracleError(CpsSimError):
    """The oracle LP could not be solved."""


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class BatteryData:
    """Per-site stationary batteries (capacity 0 where a site has none)."""

    capacity_wh: FloatArray
    max_charge_w: FloatArray
    max_discharge_w: FloatArray
    charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    energy_min_wh: FloatArray
    energy_max_wh: FloatArray
    energy_wh: FloatArray  # at t = 0
    energy_taper_wh: FloatArray  # CC-CV taper from here (>= energy_max_wh: none)
    self_discharge_per_s: FloatArray  # exponential decay rate of what is stored
    final_energy_min_wh: FloatArray | None = None  # lowest energy at the horizon end (MPC)

    @classmethod
    def none(cls, n: int) -> BatteryData:
        z = np.zeros(n)
        return cls(z, z, z, np.ones(n), np.ones(n), z, z, z, z, z)

    @classmethod
    def from_spec(cls, spec, energy_wh: FloatArray) -> BatteryData:
        """From the engine's battery model (``models.battery.BatterySpec``) and stored energy."""
        c = np.array
        return cls(
            capacity_wh=c(spec.capacity_wh, float),
            max_charge_w=c(spec.max_charge_power_w, float),
            max_discharge_w=c(spec.max_discharge_power_w, float),
            charge_efficiency=c(spec.charge_efficiency, float),
            discharge_efficiency=c(spec.discharge_efficiency, float),
            energy_min_wh=c(spec.energy_min_wh, float),
            energy_max_wh=c(spec.energy_max_wh, float),
            energy_wh=c(energy_wh, float),
            energy_taper_wh=c(spec.energy_taper_wh, float),
            self_discharge_per_s=c(spec.self_discharge_per_s, float),
        )


@dataclass(frozen=True)
class EvData:
    """Per-EV parameters; ``site`` is the site index within the problem (sorted)."""

    site: IntArray
    capacity_wh: FloatArray
    charger_w: FloatArray
    v2x_w: FloatArray
    efficiency: FloatArray
    energy_max_wh: FloatArray
    energy_min_wh: FloatArray  # V2X floor
    energy_wh: FloatArray  # at t = 0 (at home unless its first trip event is a return)
    target_wh: FloatArray
    energy_taper_wh: FloatArray  # CC-CV taper from here (>= energy_max_wh: none)
    taper_line_w: FloatArray  # CC power of the pack's taper line

    @property
    def n(self) -> int:
        return int(self.site.size)


@dataclass(frozen=True)
class TripEvents:
    """Departures (kind 0) and returns (kind 1) of the EVs, exact times [s]."""

    ev: IntArray
    time_s: FloatArray
    kind: npt.NDArray[np.int8]
    trip_wh: FloatArray  # energy deducted at a return


@dataclass(frozen=True)
class JobData:
    """Deferrable processes: per site rated power and energy per window; windows shared."""

    max_w: FloatArray
    energy_wh: FloatArray
    windows_s: FloatArray  # (W, 2): [open, deadline) of every window in the run


@dataclass(frozen=True)
class HpwhData:
    """Per-site heat-pump water heaters (``has`` False where a site has none).

    Heat is counted above the mains temperature: ``stored = C (T - T_cold)`` [Wh_th]
    with ``C`` the tank's capacity [Wh/K].  Per tick (ambient constant within it) the
    one-node tank of :mod:`cps_sim.models.heat_pump` is *linear* in the heat input:
    ``S_end = e S_0 + C (1 - e)(T_env - T_cold) + phi (COP w h - draw)``, ``e = exp(-x)``,
    ``phi = (1 - e)/x``, ``x = UA h / C`` — exact, not a linearisation.
    """

    has: npt.NDArray[np.bool_]  # (n,)
    capacity_wh_per_k: FloatArray  # (n,)
    ua_w_per_k: FloatArray  # (n,)
    heat_max_w: FloatArray  # (n,) thermal output limit
    stored_wh_th: FloatArray  # (n,) at t = 0
    floor_wh_th: FloatArray  # (n,) the tank's usable floor (draws are cut there)
    comfort_wh_th: FloatArray  # (n,) lowest stored heat at tick ends (soft, penalised)
    max_wh_th: FloatArray  # (n,) at the setpoint temperature
    ambient_c: FloatArray  # (T,) outdoor air = the tank's surroundings
    cold_water_c: float
    cop: FloatArray  # (n, T) per tick, from the ambient temperature
    draw_wh_th: FloatArray  # (n, T) hot-water heat demanded per tick

    def subset(self, s: IntArray) -> HpwhData:
        return replace(
            self,
            **{
                f.name: getattr(self, f.name)[s]
                for f in fields(self)
                if f.name not in ("ambient_c", "cold_water_c")
            },
        )


@dataclass(frozen=True)
class SiteInputs:
    """Everything the oracle knows about ``n`` sites over ``T`` ticks."""

    tick_s: float
    load_w: FloatArray  # (n, T) tick averages (heat-pump water heaters included)
    pv_w: FloatArray  # (n, T) PV potential
    import_price_jpy_per_kwh: FloatArray  # (T,)
    export_price_jpy_per_kwh: FloatArray  # (T,)
    carbon_jpy_per_kwh: FloatArray  # (T,) carbon price x intensity on imports
    co2_g_per_kwh: FloatArray  # (T,)
    import_limit_w: FloatArray  # (n,) inf = none
    export_limit_w: FloatArray  # (n,)
    battery: BatteryData
    evs: EvData | None = None
    trips: TripEvents | None = None
    jobs: JobData | None = None
    hpwh: HpwhData | None = None

    @property
    def n_sites(self) -> int:
        return int(self.load_w.shape[0])

    @property
    def n_ticks(self) -> int:
        return int(self.load_w.shape[1])

    def subset(self, sites: npt.ArrayLike) -> SiteInputs:
        """The sites ``sites`` (sorted indices) with their EVs, trips and processes."""
        s = np.asarray(sites, dtype=np.int64)
        b = self.battery
        bat = replace(
            b,
            **{
                f.name: getattr(b, f.name)[s]
                for f in fields(b)
                if isinstance(getattr(b, f.name), np.ndarray)
            },
        )
        evs = trips = None
        if self.evs is not None and self.evs.n:
            keep = np.isin(self.evs.site, s)
            idx = np.flatnonzero(keep)
            e = self.evs
            evs = replace(e, **{f.name: getattr(e, f.name)[idx] for f in fields(e)})
            evs = replace(evs, site=np.searchsorted(s, evs.site).astype(np.int64))
            if self.trips is not None:
                t = self.trips
                tk = np.isin(t.ev, idx)
                trips = TripEvents(
                    ev=np.searchsorted(idx, t.ev[tk]).astype(np.int64),
                    time_s=t.time_s[tk],
                    kind=t.kind[tk],
                    trip_wh=t.trip_wh[tk],
                )
        jobs = None
        if self.jobs is not None:
            jobs = replace(self.jobs, max_w=self.jobs.max_w[s], energy_wh=self.jobs.energy_wh[s])
        return replace(
            self,
            hpwh=None if self.hpwh is None else self.hpwh.subset(s),
            load_w=self.load_w[s],
            pv_w=self.pv_w[s],
            import_limit_w=self.import_limit_w[s],
            export_limit_w=self.export_limit_w[s],
            battery=bat,
            evs=evs,
            trips=trips,
            jobs=jobs,
        )


@dataclass(frozen=True)
class Objective:
    """What the oracle minimises and how it treats service shortfall."""

    kind: str = "cost"
    unmet_penalty: float | None = None  # per kWh, objective units; None: DEFAULT_UNMET_PENALTY
    unserved_factor: float = 10.0  # unserved load costs this x unmet_penalty
    wear_jpy_per_kwh: float = 1e-4  # on battery and EV discharge (tie-break)
    curtail_eps: float = 1e-6  # per kWh curtailed (prefer export to curtailment)
    min_charge_w: float = 0.0  # > 0: EV set-points semi-continuous (MILP)
    taper: str = "inner"  # "inner": replayable; "relax": no taper rows
    terminal_value: float = 0.0
    """Value of a kWh stored at the end (objective units): the objective counts
    ``terminal_value x (stored at start - stored at end)``, so emptying batteries and
    EVs before the horizon ends is not free."""
    terminal_value_jpy_per_kwh: float = 0.0  # the same in JPY (cost stage of other kinds)
    terminal_cop: float = 0.0
    """Heat left in water-heater tanks is worth ``terminal_value / terminal_cop`` per kWh_th
    (the electricity that would reheat it); 0: not valued."""

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.kind!r}")
        if self.taper not in ("inner", "relax"):
            raise ValueError(f"taper must be 'inner' or 'relax', got {self.taper!r}")

    @property
    def penalty(self) -> float:
        return (
            DEFAULT_UNMET_PENALTY[self.kind]
            if self.unmet_penalty is None
            else float(self.unmet_penalty)
        )


# ----------------------------------------------------------------------------- result
@dataclass
class OracleSchedule:
    """The optimum: set-points per tick and what they give, per site and tick."""

    tick_s: float
    battery_w: FloatArray  # (n, T) + charge; NaN where a site has no battery
    ev_setpoint_w: FloatArray  # (m, T) + charge / - discharge, while plugged
    deferrable_w: FloatArray  # (n, T)
    import_wh: FloatArray  # (n, T)
    export_wh: FloatArray
    curtailment_wh: FloatArray
    unserved_wh: FloatArray
    cost_jpy: FloatArray  # (n,) energy + carbon
    energy_cost_jpy: FloatArray
    co2_kg: FloatArray
    ev_unmet_wh: FloatArray  # (n,) below target at departures
    ev_shortfall_wh: FloatArray  # (n,) trip energy the EV did not have
    job_unmet_wh: FloatArray  # (n,)
    stored_final_wh: FloatArray  # (n,) batteries + EVs at the end
    objective: FloatArray  # (n,) replayable LP objective incl. penalties (no tie-breaks)
    bound: FloatArray  # (n,) relaxed LP objective: a lower bound on ``objective``
    solve_time_s: float = 0.0
    build_time_s: float = 0.0
    n_variables: int = 0
    n_constraints: int = 0
    n_solves: int = 0
    floor_repairs: int = 0
    simultaneous_ev: int = 0  # EV-ticks with charge and discharge both > 0 (netted)
    extra: dict = field(default_factory=dict)
    hpwh_w: FloatArray | None = None  # (n, T) water-heater electric power; NaN: no unit
    hpwh_heat_in_wh_th: FloatArray | None = None  # (n,) heat put into the tanks
    hpwh_unmet_wh_th: FloatArray | None = None  # (n,) hot water not delivered
    hpwh_stored_final_wh_th: FloatArray | None = None  # (n,) tank heat at the end
    hpwh_stored_wh_th: FloatArray | None = None  # (n, T) tank heat at each tick end; NaN: none

    @property
    def peak_kw(self) -> FloatArray:
        """Highest tick-average import per site [kW]."""
        return self.import_wh.max(axis=1, initial=0.0) * 3.6 / self.tick_s

    @property
    def n_sites(self) -> int:
        return int(self.import_wh.shape[0])
