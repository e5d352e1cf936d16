"""Heat-pump water heaters (EcoCute-like CO2 heat pump + hot-water tank), vectorised.

The controller decides *when* to heat (night tariff, daytime PV surplus, ...); this
model decides *what happens*: electric input -> heat via a COP, a fully mixed tank with
UA losses, and hot-water draws that may go unmet.

Tank (stratification-free, one node)
------------------------------------
Thermal capacity ``C = V rho c_p`` [Wh/K] (``rho c_p = 1.163 Wh/(L K)`` for water).
With constant heat input ``q`` [W_th], draw ``d`` [W_th] and ambient ``T_env``::

    C dT/dt = q - d - UA (T - T_env)
    T(t)    = T0 e + T_env (1 - e) + (q - d) A,   e = exp(-t/tau), tau = C/UA,
    A       = (1 - e)/UA   (-> t/C as UA -> 0)

which is exact for constant inputs over the step.  Heating stops at the setpoint
(``q`` is cut so that ``T_end <= T_set``); draws are cut so that ``T_end >= T_floor``
(``min_usable_c``; the part cut is *unmet hot water*).  The energy ledger closes
exactly: ``heat_in - draw_delivered - loss = C (T_end - T0)``, and
``electric_in + ambient_heat = heat_in``.

COP
---
Carnot fraction (documented regression, labelled assumption)::

    COP = clip(eta_c * T_sink / (T_sink - T_source), cop_min, cop_max)
    T_source = T_air - dT_evap,   T_sink = (T_cold + T_set)/2 + dT_cond   [K]

The sink is the mean of the water temperature glide because a CO2 (R744) heat pump
water heater heats cold mains water to the setpoint in one pass.  ``eta_c = 0.45``
with ``dT_evap = dT_cond = 5 K`` gives COP ~ 4.1 at 16 degC air / 17 degC mains /
65 degC (the order of Japanese mid-season rated COPs) and ~ 2.9 at 2 degC air;
no defrost penalty is modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from cps_sim.core.types import FloatArray
from cps_sim.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR

WH_PER_L_K = 4186.0 / SECONDS_PER_HOUR  # water, 1 kg/L assumed
KELVIN = 273.15

# Japanese household hot-water draw shape, share of the daily energy per clock hour
# (labelled assumption: small morning peak, large evening bath peak 19-22 h).
JP_HOURLY_DRAW_SHARE = np.array(
    [
        0.03,
        0.01,
        0.00,
        0.00,
        0.00,
        0.01,
        0.05,
        0.07,
        0.04,
        0.02,
        0.02,
        0.02,
        0.03,
        0.02,
        0.01,
        0.01,
        0.02,
        0.04,
        0.07,
        0.12,
        0.14,
        0.13,
        0.10,
        0.04,
    ]
)
# ~450 L/day of 40 degC water from 17 degC mains (4-person household, assumption)
DEFAULT_DAILY_DRAW_WH_TH = 450 * WH_PER_L_K * (40.0 - 17.0)


@dataclass(frozen=True)
class HeatPumpSpec:
    """Parameters of a heat-pump water heater population (arrays ``(n,)``)."""

    tank_volume_l: FloatArray
    setpoint_c: FloatArray
    min_usable_c: FloatArray
    tank_ua_w_per_k: FloatArray
    heat_output_max_w: FloatArray  # thermal [W_th]
    carnot_fraction: FloatArray
    cop_min: FloatArray
    cop_max: FloatArray
    evaporator_approach_k: FloatArray
    condenser_approach_k: FloatArray

    @property
    def n(self) -> int:
        return int(self.tank_volume_l.shape[0])

    @property
    def capacity_wh_per_k(self) -> FloatArray:
        return self.tank_volume_l * WH_PER_L_K


@dataclass(frozen=True)
class HeatPumpState:
    """Mixed tank temperature [degC]."""

    tank_temp_c: FloatArray


@dataclass(frozen=True)
class HeatPumpFlows:
    """One step.  Energies [Wh]; ``*_th`` thermal."""

    power_w: FloatArray  # electric input held (>= 0)
    unmet_w: FloatArray  # requested - held electric power
    electric_in_wh: FloatArray
    ambient_heat_wh_th: FloatArray  # heat drawn from outdoor air
    heat_in_wh_th: FloatArray
    draw_delivered_wh_th: FloatArray
    draw_unmet_wh_th: FloatArray
    loss_wh_th: FloatArray  # tank losses to ambient
    stored_change_wh_th: FloatArray
    cop: FloatArray


def ecocute_spec(n: int, **overrides: npt.ArrayLike) -> HeatPumpSpec:
    """``n`` EcoCute-like units: 370 L tank at 65 degC, 4.5 kW_th, UA 1.5 W/K.

    All defaults are labelled assumptions of the product class (370/460 L tanks and
    ~4.5 kW thermal output are typical catalogue figures).
    """
    base: dict[str, npt.ArrayLike] = dict(
        tank_volume_l=370.0,
        setpoint_c=65.0,
        min_usable_c=17.0,
        tank_ua_w_per_k=1.5,
        heat_output_max_w=4500.0,
        carnot_fraction=0.45,
        cop_min=1.0,
        cop_max=6.0,
        evaporator_approach_k=5.0,
        condenser_approach_k=5.0,
    )
    unknown = set(overrides) - set(base)
    if unknown:
        raise TypeError(f"unknown HeatPumpSpec fields: {sorted(unknown)}")
    base.update(overrides)
    return HeatPumpSpec(
        **{k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy() for k, v in base.items()}
    )


def initial_state(spec: HeatPumpSpec, tank_temp_c: npt.ArrayLike = 60.0) -> HeatPumpState:
    return HeatPumpState(np.broadcast_to(np.asarray(tank_temp_c, dtype=float), (spec.n,)).copy())


def cop(
    spec: HeatPumpSpec, ambient_c: npt.ArrayLike, cold_water_c: npt.ArrayLike = 17.0
) -> FloatArray:
    """Coefficient of performance (Carnot fraction with a glide-mean sink)."""
    t_src = np.asarray(ambient_c, dtype=float) - spec.evaporator_approach_k + KELVIN
    t_sink = (
        0.5 * (np.asarray(cold_water_c, dtype=float) + spec.setpoint_c)
        + spec.condenser_approach_k
        + KELVIN
    )
    lift = np.maximum(t_sink - t_src, 1e-6)
    return np.clip(spec.carnot_fraction * t_sink / lift, spec.cop_min, spec.cop_max)


def stored_energy_wh_th(
    spec: HeatPumpSpec, state: HeatPumpState, cold_water_c: npt.ArrayLike = 17.0
) -> FloatArray:
    """Heat in the tank above mains temperature [Wh_th]."""
    return spec.capacity_wh_per_k * (state.tank_temp_c - np.asarray(cold_water_c, dtype=float))


def _relax(spec: HeatPumpSpec, dt_s: float) -> tuple[FloatArray, FloatArray]:
    """``e = exp(-t/tau)`` and ``A = (1-e)/UA`` [K per W] with the UA->0 limit."""
    t_h = dt_s / SECONDS_PER_HOUR
    c = spec.capacity_wh_per_k
    x = spec.tank_ua_w_per_k * t_h / c
    e = np.exp(-x)
    phi = np.where(x > 1e-12, -np.expm1(-x) / np.where(x > 1e-12, x, 1.0), 1.0)
    return e, t_h / c * phi


def _heat_cap_w(
    spec: HeatPumpSpec, t0: FloatArray, t_env: npt.ArrayLike, d_w: npt.ArrayLike, dt_s: float
) -> FloatArray:
    e, a = _relax(spec, dt_s)
    room = (spec.setpoint_c - t0 * e - np.asarray(t_env, dtype=float) * (1.0 - e)) / a + np.asarray(
        d_w, dtype=float
    )
    return np.clip(np.minimum(room, spec.heat_output_max_w), 0.0, None)


def feasible_power_w(
    spec: HeatPumpSpec,
    state: HeatPumpState,
    dt_s: float,
    ambient_c: npt.ArrayLike,
    cold_water_c: npt.ArrayLike = 17.0,
    draw_w_th: npt.ArrayLike = 0.0,
    tank_env_c: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Electric power range [W] holdable for ``dt_s``: ``(0, min(Q_max, Q_to_setpoint)/COP)``."""
    env = ambient_c if tank_env_c is None else tank_env_c
    q = _heat_cap_w(
        spec,
        state.tank_temp_c,
        np.asarray(env, dtype=float),
        np.asarray(draw_w_th, dtype=float),
        dt_s,
    )
    return np.zeros(spec.n), q / cop(spec, ambient_c, cold_water_c)


def step(
    state: HeatPumpState,
    spec: HeatPumpSpec,
    electric_power_w: npt.ArrayLike,
    dt_s: float,
    ambient_c: npt.ArrayLike,
    draw_wh_th: npt.ArrayLike = 0.0,
    cold_water_c: npt.ArrayLike = 17.0,
    tank_env_c: npt.ArrayLike | None = None,
) -> tuple[HeatPumpState, HeatPumpFlows]:
    """Advance by ``dt_s`` with a constant electric request and a hot-water draw.

    Parameters
    ----------
    electric_power_w : requested compressor power [W] (>= 0; the controller decides when).
    ambient_c : outdoor air temperature [degC] (heat source).
    draw_wh_th : hot-water heat demanded during the step [Wh_th] (see :func:`draw_energy_wh_th`).
    cold_water_c : mains water temperature [degC].
    tank_env_c : temperature around the tank [degC] (default: ``ambient_c``, outdoor unit).
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    n = spec.n
    t_h = dt_s / SECONDS_PER_HOUR
    req = np.broadcast_to(np.asarray(electric_power_w, dtype=float), (n,))
    env = np.broadcast_to(
        np.asarray(ambient_c if tank_env_c is None else tank_env_c, dtype=float), (n,)
    )
    d_req_w = np.broadcast_to(np.maximum(np.asarray(draw_wh_th, dtype=float), 0.0) / t_h, (n,))
    k = cop(spec, ambient_c, cold_water_c)
    t0 = state.tank_temp_c
    e, a = _relax(spec, dt_s)

    q = np.minimum(np.maximum(req, 0.0) * k, _heat_cap_w(spec, t0, env, d_req_w, dt_s))
    # draw delivered so that the tank does not end below the usable floor
    d_max = q - (spec.min_usable_c - t0 * e - env * (1.0 - e)) / a
    d_w = np.clip(np.minimum(d_req_w, d_max), 0.0, None)
    t_end = t0 * e + env * (1.0 - e) + (q - d_w) * a

    heat_in = q * t_h
    draw = d_w * t_h
    stored = spec.capacity_wh_per_k * (t_end - t0)
    electric = heat_in / k
    flows = HeatPumpFlows(
        power_w=electric / t_h,
        unmet_w=req - electric / t_h,
        electric_in_wh=electric,
        ambient_heat_wh_th=heat_in - electric,
        heat_in_wh_th=heat_in,
        draw_delivered_wh_th=draw,
        draw_unmet_wh_th=d_req_w * t_h - draw,
        loss_wh_th=heat_in - draw - stored,
        stored_change_wh_th=stored,
        cop=k,
    )
    return replace(state, tank_temp_c=t_end), flows


def draw_energy_wh_th(
    t0_s: npt.ArrayLike,
    dt_s: float,
    daily_draw_wh_th: npt.ArrayLike = DEFAULT_DAILY_DRAW_WH_TH,
    hourly_share: npt.ArrayLike = JP_HOURLY_DRAW_SHARE,
) -> FloatArray:
    """Hot-water heat demanded in ``[t0, t0 + dt)`` [Wh_th], exact for any ``dt_s``.

    ``t0_s`` counts seconds from a local midnight.  The cumulative draw is piecewise
    linear within each clock hour: ``F(t) = daily * (days(t) + S(hour fraction))``.
    Broadcasts ``t0_s`` (times) against ``daily_draw_wh_th`` (devices).
    """
    share = np.asarray(hourly_share, dtype=float)
    share = share / share.sum()
    knots_s = np.arange(25) * SECONDS_PER_HOUR
    cum = np.concatenate([[0.0], np.cumsum(share)])

    def cumulative(t: npt.ArrayLike) -> FloatArray:
        t = np.asarray(t, dtype=float)
        days, rem = np.divmod(t, SECONDS_PER_DAY)
        return days + np.interp(rem, knots_s, cum)

    t0 = np.asarray(t0_s, dtype=float)
    frac = cumulative(t0 + dt_s) - cumulative(t0)
    return (
        np.multiply.outer(frac, np.asarray(daily_draw_wh_th, dtype=float))
        if np.ndim(daily_draw_wh_th)
        else frac * float(np.asarray(daily_draw_wh_th))
    )
