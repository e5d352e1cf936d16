"""Perfect-foresight schedule of sites: one LP per site over the whole horizon, in batches.

The *oracle* knows everything a run will see — load, PV, prices, the EV trips
(departure and return times, trip energies) and the deferrable-process windows
— and schedules every site's battery, EVs and deferrable process so that an
objective is as small as possible.  Sites do not interact (each has its own
connection and limits), so the problem decomposes into one LP per site;
a *batch* of sites is one block-diagonal sparse LP solved by one HiGHS call
(``scipy.optimize.linprog`` / ``milp``), built with numpy index arithmetic and
no Python loop over sites.

Time grid.  Load, PV and prices are constant within a settlement tick; EV
events happen at exact times inside ticks.  Each site's horizon is cut into
*pieces* at the tick boundaries and at its own event times (EV departures and
returns, process windows), so everything is constant within a piece.  Device
set-points are constant per tick (what a controller deciding once per tick
sends); grid import/export are per piece, so a tick in which an EV leaves or
returns is metered exactly as the engine does.

Variables (internal units kW / kWh / h)::

    per piece p       g_imp, g_exp >= 0; curt (PV curtailed, only under an export limit);
                      uns (load unserved, only under an import limit)
    per battery, tick b_ch, b_dis (power), b_e (energy at the tick end)
    per EV, tick      e_ch, e_dis (set-point, applied while plugged)
    per EV, piece     e_e (energy at the piece end)
    per departure     u_dep (energy below target); per return: sf (trip shortfall)
    per process site  j (set-point per tick), u_job (energy not delivered per window)

Constraints::

    balance (piece)   g_imp - g_exp - curt + uns - b_ch + b_dis
                        - sum_plugged EVs (e_ch - e_dis) - j*open = load - pv
    battery (tick)    b_e = a*(b_e[-1] + eta_c*H*b_ch - H*b_dis/eta_d),  a = exp(-k_sd*tick)
    EV (piece)        e_e = e_e[-1] + eta*h_plug*e_ch - h_plug*e_dis/eta - trip + sf
    return            e_e[-1] - trip + sf >= 0
    departure         e_e(departure) + u_dep >= target
    V2X floor         e_e >= floor - u_dep(previous)    (sessions starting above the floor)
                      e_e >= floor * e_dis / P_v2x      (other sessions; see below)
    CC-CV taper       e_ch <= P*(top - e_e/cap)/(top - soc_taper)   (taper="inner")
    process window    sum h_open*j + u_job = E
    bounds            g_imp <= import limit, g_exp <= export limit, curt <= pv,
                      battery/EV energy windows and power ratings

Objective (``Objective.kind``): ``cost`` = import x (price + carbon) - export x
export price [JPY]; ``co2`` = import x grid intensity [kg]; ``peak`` = the
site's highest tick-average import [kW]; ``curtailment`` [kWh].  Every kWh of
service shortfall (EV below target at departure, trip shortfall, process
energy not delivered) costs ``unmet_penalty`` in the objective's unit, and
unserved load ten times that.  Non-cost objectives are solved
lexicographically: first the objective, then the cost among its optima.
A tiny wear cost on discharge (``wear_jpy_per_kwh``, 1e-4) breaks ties and
keeps the LP from charging and discharging at once.

Where the LP is a relaxation and where it is exact (see docs/oracle.md):

* The engine lets a V2X EV discharge only down to its floor.  A plugged-in
  session that starts at or above the floor (the run start, or a return after a
  trip no longer than ``target - floor``) then stays at or above it, so
  ``e_e >= floor - u_dep`` (the previous departure's shortfall) is implied:
  exact.  Other sessions (a very long trip) use the convex hull of "no
  discharge, or end the tick at or above the floor" (``e_e >= floor*e_dis/P``),
  a valid relaxation; EV-ticks where a solution discharges below the floor are
  forbidden to discharge and the batch is re-solved (``floor_repairs``).  The
  first objective is the certified lower bound (``bound``), the repaired one is
  what the replay follows.
* CC-CV taper: the engine caps the charge power at ``P*(top - soc)/(top - s0)``
  (never below 5 % of ``P``) evaluated at each integration segment's start.
  ``taper="inner"`` imposes it at the piece end (the highest energy of the
  piece), which the engine can always follow; the relaxed LP without the taper
  is solved first and gives the bound.
* Minimum charging current: the engine accepts any set-point, so the default
  LP has none (a valid lower bound for every strategy).  With
  ``min_charge_w > 0`` each EV set-point is semi-continuous (0 or within
  [min, max]) and ``scipy.optimize.milp`` solves the batch.
"""

from __future__ import annotations

from cps_sim.control.oracle.data import (
    ARRIVAL,
    DEFAULT_UNMET_PENALTY,
    DEPARTURE,
    OBJECTIVES,
    BatteryData,
    EvData,
    JobData,
    Objective,
    OracleError,
    OracleSchedule,
    SiteInputs,
    TripEvents,
)
from cps_sim.control.oracle.solve import chunks_of, passive_schedule, solve, solve_sites

__all__ = [
    "ARRIVAL",
    "DEFAULT_UNMET_PENALTY",
    "DEPARTURE",
    "OBJECTIVES",
    "BatteryData",
    "EvData",
    "JobData",
    "Objective",
    "OracleError",
    "OracleSchedule",
    "SiteInputs",
    "TripEvents",
    "chunks_of",
    "passive_schedule",
    "solve",
    "solve_sites",
]
