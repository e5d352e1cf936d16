"""Battery populations: exact constant-power stepping, CC-CV taper, self-discharge, ageing.

One population is a :class:`BatterySpec` (frozen arrays, one entry per device) and a
:class:`BatteryState`.  :func:`step` advances every device by ``dt_s`` at a requested
terminal power (load convention: + charging, - discharging) and returns
:class:`BatteryFlows` whose energy terms close exactly::

    energy_in_wh == stored_change_wh + loss_conversion_wh + loss_self_discharge_wh
                    + loss_fade_wh

Model
-----
Stored energy ``E`` [Wh] moves between ``E_min = soc_min * C`` and ``E_max = soc_max * C``,
with ``C`` the present (aged) capacity.

* Charging at terminal power ``p`` stores ``eta_c * p``; discharging ``p`` removes
  ``p / eta_d``.
* CC-CV taper: above ``taper_soc`` the charge limit falls linearly to zero at ``soc_max``,
  ``P_lim(E) = P_c,max * (E_max - E) / (E_max - E_taper)``.  Under this limit the stored
  energy approaches ``E_max`` exponentially with time constant
  ``tau_h = (E_max - E_taper) / (eta_c * P_c,max)``, which is the constant-voltage
  current decay of a CC-CV charger to first order.  A constant request ``p`` is
  integrated exactly in two phases: constant power until ``P_lim(E) = p``, then the
  exponential tail.
* Self-discharge ``f`` per 30-day month: ``E <- E * exp(-k t)`` with
  ``k = -ln(1 - f) / 720 h``, applied after the power step and logged as a loss.
* Ageing (NREL BLAST-Lite form; Smith et al., "Life prediction model for grid-connected
  Li-ion battery energy storage system", ACC 2017, Kokam 75 Ah NMC111|graphite):

  - calendar: ``q_cal = q1 * t_days ** q2``,
    ``q1 = q1_0 exp(q1_1 / T_N) exp(q1_2 U_N / T_N)``, ``T_N = T / 308.15 K``,
    ``U_N = U_a(soc) / 0.123 V`` with ``U_a`` the graphite open-circuit potential
    (Safari & Delacourt 2011 fit, as used by Smith et al. 2017);
  - cycling: ``q_cyc = q3 * EFC ** q4``,
    ``q3 = q3_0 exp(q3_1 / T_N) exp(q3_2 exp(DoD ** 2))``.

  With time-varying stress the power laws are advanced by the equivalent-time rule used
  by BLAST-Lite, which for ``q = k x**p`` is exactly
  ``q_new ** (1/p) = q ** (1/p) + k ** (1/p) * dx`` (order-independent, vectorised).
  The throughput term uses an assumed cycle depth ``dod_assumed``; :func:`rainflow_cycle_fade`
  replaces it with ASTM E1049 rainflow-counted depths from a SoC history.
  Capacity ``C = C_0 (1 - q_cal - q_cyc)``, both rates multiplied by ``ageing_scale``;
  BLAST-Lite's LAM (sigmoid knee) term and resistance growth are not modelled.

Ageing parameters default to the BLAST-Lite Kokam values (q1_0=2.66e7, q1_1=-17.8,
q1_2=-5.21, q2=0.357, q3_0=3.80e3, q3_1=-18.4, q3_2=1.04, q4=0.778).  Other chemistries
are approximated by scaling them (``ageing_scale``, BLAST-Lite's ``degradation_scalar``):
an assumption, not a fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
HOURS_PER_MONTH = 720.0  # 30-day month, the convention of datasheet self-discharge rates
T_REF_K = 308.15  # BLAST-Lite normalising temperature (35 degC)
UA_REF_V = 0.123  # graphite potential at 50 % SoC used for normalisation


def _arr(x, n: int | None = None) -> FloatArray:
    a = np.asarray(x, dtype=float)
    if n is not None and a.ndim == 0:
        a = np.full(n, float(a))
    return a


def _safe_div(num, den, fill: float = 0.0):
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, fill, dtype=float)
    with np.errstate(over="ignore"):
        np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------------- spec & state
@dataclass(frozen=True)
class BatterySpec:
    """Static parameters of a battery population (arrays of shape ``(n,)``).

    Attributes
    ----------
    capacity_wh : nominal (beginning-of-life) usable capacity [Wh].
    max_charge_power_w, max_discharge_power_w : terminal power limits [W], both >= 0.
    charge_efficiency, discharge_efficiency : one-way efficiencies (0..1].
    soc_min, soc_max : SoC window (fractions of the present capacity).
    taper_soc : SoC above which the CC-CV taper starts (>= soc_max disables it).
    self_discharge_per_month : fraction of stored energy lost per 30 days.
    ageing_scale : multiplier on both ageing rates (0 disables ageing).
    dod_assumed : cycle depth used by the throughput ageing term inside :func:`step`.
    q1_0 .. q4 : BLAST-Lite-form ageing parameters (see module docstring).
    """

    capacity_wh: FloatArray
    max_charge_power_w: FloatArray
    max_discharge_power_w: FloatArray
    charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    soc_min: FloatArray
    soc_max: FloatArray
    taper_soc: FloatArray
    self_discharge_per_month: FloatArray
    ageing_scale: FloatArray
    dod_assumed: FloatArray
    q1_0: float = 2.66e7
    q1_1: float = -17.8
    q1_2: float = -5.21
    q2: float = 0.357
    q3_0: float = 3.80e3
    q3_1: float = -18.4
    q3_2: float = 1.04
    q4: float = 0.778

    @property
    def n(self) -> int:
        return int(self.capacity_wh.shape[0])


@dataclass(frozen=True)
class BatteryState:
    """Dynamic state of a battery population.

    ``energy_wh`` stored energy; ``capacity_wh`` present (aged) capacity;
    ``q_loss_cal``/``q_loss_cyc`` relative capacity lost to calendar/cycle ageing;
    ``age_s`` seconds in service; ``efc`` equivalent full cycles so far.
    """

    energy_wh: FloatArray
    capacity_wh: FloatArray
    q_loss_cal: FloatArray
    q_loss_cyc: FloatArray
    age_s: FloatArray
    efc: FloatArray

    @property
    def soc(self) -> FloatArray:
        return _safe_div(self.energy_wh, self.capacity_wh)


@dataclass(frozen=True)
class BatteryFlows:
    """What happened during one step (arrays of shape ``(n,)``).

    ``power_w`` is the average terminal power actually held (+charge), ``unmet_w`` the
    requested minus the held power.  Energies in Wh over the step; the identity
    ``energy_in_wh = stored_change_wh + loss_conversion_wh + loss_self_discharge_wh +
    loss_fade_wh`` holds to floating point.
    """

    power_w: FloatArray
    unmet_w: FloatArray
    energy_in_wh: FloatArray
    stored_change_wh: FloatArray
    loss_conversion_wh: FloatArray
    loss_self_discharge_wh: FloatArray
    loss_fade_wh: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def loss_wh(self) -> FloatArray:
        return self.loss_conversion_wh + self.loss_self_discharge_wh + self.loss_fade_wh


# Presets.  All values are labelled assumptions of typical 2020s products, not a
# specific datasheet.
PRESETS: dict[str, dict[str, float]] = {
    # residential LFP ~10 kWh / 5 kW hybrid-inverter system
    "home": dict(capacity_kwh=10.0, charge_kw=5.0, discharge_kw=5.0, eta_c=0.95, eta_d=0.95,
                 soc_min=0.05, soc_max=1.0, taper_soc=0.9, sd_month=0.02, ageing_scale=0.7,
                 dod=0.8),
    # building/commercial ~100 kWh / 50 kW
    "building": dict(capacity_kwh=100.0, charge_kw=50.0, discharge_kw=50.0, eta_c=0.955,
                     eta_d=0.955, soc_min=0.05, soc_max=1.0, taper_soc=0.92, sd_month=0.02,
                     ageing_scale=0.7, dod=0.8),
    # grid-scale 4-hour BESS, 10 MW / 40 MWh, ~86 % AC round trip
    "grid": dict(capacity_kwh=40_000.0, charge_kw=10_000.0, discharge_kw=10_000.0,
                 eta_c=0.927, eta_d=0.927, soc_min=0.05, soc_max=0.95, taper_soc=0.95,
                 sd_month=0.01, ageing_scale=1.0, dod=0.9),
    # second-life EV pack (e.g. 40 kWh car pack at ~70 % SoH), derated power, faster ageing
    "second_life": dict(capacity_kwh=28.0, charge_kw=7.0, discharge_kw=7.0, eta_c=0.93,
                        eta_d=0.93, soc_min=0.1, soc_max=0.95, taper_soc=0.85, sd_month=0.03,
                        ageing_scale=1.5, dod=0.8),
}


def battery_spec(
    n: int,
    preset: str = "home",
    **overrides: float | npt.ArrayLike,
) -> BatterySpec:
    """Build a population of ``n`` identical batteries from a preset.

    Overrides use the :class:`BatterySpec` field names (SI units), e.g.
    ``battery_spec(100, "home", capacity_wh=13_500.0)``; arrays broadcast to ``(n,)``.
    """
    p = PRESETS[preset]
    base = dict(
        capacity_wh=p["capacity_kwh"] * 1000.0,
        max_charge_power_w=p["charge_kw"] * 1000.0,
        max_discharge_power_w=p["discharge_kw"] * 1000.0,
        charge_efficiency=p["eta_c"],
        discharge_efficiency=p["eta_d"],
        soc_min=p["soc_min"],
        soc_max=p["soc_max"],
        taper_soc=p["taper_soc"],
        self_discharge_per_month=p["sd_month"],
        ageing_scale=p["ageing_scale"],
        dod_assumed=p["dod"],
    )
    scalars = {k: v for k, v in overrides.items() if k.startswith("q")}
    arrays = {k: v for k, v in overrides.items() if not k.startswith("q")}
    unknown = set(arrays) - set(base)
    if unknown:
        raise TypeError(f"unknown BatterySpec fields: {sorted(unknown)}")
    base.update(arrays)
    fields = {k: np.broadcast_to(_arr(v), (n,)).astype(float).copy() for k, v in base.items()}
    return BatterySpec(**fields, **{k: float(v) for k, v in scalars.items()})


def initial_state(spec: BatterySpec, soc: npt.ArrayLike = 0.5) -> BatteryState:
    """Fresh (unaged) state at the given SoC."""
    n = spec.n
    cap = spec.capacity_wh.copy()
    z = np.zeros(n)
    return BatteryState(energy_wh=np.broadcast_to(_arr(soc), (n,)) * cap, capacity_wh=cap,
                        q_loss_cal=z.copy(), q_loss_cyc=z.copy(), age_s=z.copy(), efc=z.copy())


# --------------------------------------------------------------------------- physics kernels
def charge_exact(
    energy_wh: FloatArray,
    e_max_wh: FloatArray,
    e_taper_wh: FloatArray,
    p_max_w: FloatArray,
    eta: FloatArray,
    request_w: FloatArray,
    dt_s: float,
) -> FloatArray:
    """Stored energy after charging at constant request under a linear CC-CV taper.

    Parameters
    ----------
    energy_wh : stored energy at the start [Wh].
    e_max_wh : energy at which charging stops (``soc_max * C``) [Wh].
    e_taper_wh : energy where the taper starts; ``>= e_max_wh`` disables it [Wh].
    p_max_w : terminal charge limit in the CC phase [W].
    eta : charge efficiency.
    request_w : requested terminal charge power (>= 0) [W].
    dt_s : step length [s].

    Returns
    -------
    Stored energy at the end [Wh] (>= ``energy_wh``; unchanged if already above ``e_max``).

    Notes
    -----
    Phase 1 holds ``c = min(request, p_max)`` until ``E_1 = E_max - (c/p_max) W`` with
    ``W = E_max - E_taper`` (where the taper limit equals ``c``); phase 2 follows
    ``E(t) = E_max - (E_max - E_s) exp(-t / tau)``, ``tau_h = W / (eta p_max)``.
    Both phases are closed form, so the result is exact for any ``dt_s``.
    """
    t_h = dt_s / SECONDS_PER_HOUR
    e0 = np.asarray(energy_wh, dtype=float)
    c = np.clip(request_w, 0.0, p_max_w)
    width = np.maximum(e_max_wh - e_taper_wh, 0.0)
    tapered = (width > 0) & (p_max_w > 0) & (eta > 0)
    e1 = e_max_wh - _safe_div(c, p_max_w) * width  # where P_lim(E) == c (== E_max w/o taper)
    rate = eta * c  # stored W in the constant-power phase
    active = (rate > 0) & (e0 < e_max_wh)
    t_to_e1 = _safe_div(np.maximum(e1 - e0, 0.0), rate, fill=np.inf)
    reached = active & (t_to_e1 < t_h)
    t1 = np.where(reached, t_to_e1, t_h)
    e_lin = e0 + rate * t1
    e_s = np.where(reached, np.maximum(e0, e1), e_lin)
    tau_h = _safe_div(width, eta * p_max_w, fill=np.inf)
    decay = np.where(tapered, np.exp(-_safe_div(t_h - t1, tau_h, fill=np.inf)), 0.0)
    e_tail = e_max_wh - (e_max_wh - e_s) * decay
    e_end = np.where(reached, e_tail, e_lin)
    return np.where(active, np.maximum(e_end, e0), e0)


def holdable_charge_power_w(
    energy_wh: FloatArray,
    e_max_wh: FloatArray,
    e_taper_wh: FloatArray,
    p_max_w: FloatArray,
    eta: FloatArray,
    dt_s: float,
) -> FloatArray:
    """Largest constant charge power held for the whole step under the taper.

    ``c <= P_lim(E(dt))`` with ``E(dt) = E0 + eta c dt`` gives
    ``c = (E_max - E0) / (eta dt_h + W / p_max)``, capped at ``p_max``.
    """
    t_h = dt_s / SECONDS_PER_HOUR
    width = np.maximum(e_max_wh - e_taper_wh, 0.0)
    headroom = np.maximum(e_max_wh - energy_wh, 0.0)
    c = _safe_div(headroom, eta * t_h + _safe_div(width, p_max_w))
    return np.clip(c, 0.0, p_max_w)


def graphite_potential_v(soc: npt.ArrayLike) -> FloatArray:
    """Graphite anode open-circuit potential vs Li/Li+ [V] at cell SoC.

    Safari & Delacourt (2011) fit, with the lithiation map ``x = 0.0085 + soc (0.78 -
    0.0085)`` used by Smith et al. (2017) / BLAST-Lite.  ``U_a(0.5) = 0.123 V``.
    """
    s = np.clip(np.asarray(soc, dtype=float), 0.0, 1.0)
    x = 8.5e-3 + s * (7.8e-1 - 8.5e-3)
    return (0.6379 + 0.5416 * np.exp(-305.5309 * x)
            + 0.044 * np.tanh(-(x - 0.1958) / 0.1088)
            - 0.1978 * np.tanh((x - 1.0571) / 0.0854)
            - 0.6875 * np.tanh((x + 0.0117) / 0.0529)
            - 0.0175 * np.tanh((x - 0.5692) / 0.0875))


def calendar_rate(spec: BatterySpec, soc: npt.ArrayLike, temperature_c: npt.ArrayLike
                  ) -> FloatArray:
    """BLAST-Lite calendar rate ``q1`` [1/day**q2] at SoC and cell temperature."""
    t_n = (np.asarray(temperature_c, dtype=float) + 273.15) / T_REF_K
    u_n = graphite_potential_v(soc) / UA_REF_V
    return spec.q1_0 * np.exp(spec.q1_1 / t_n) * np.exp(spec.q1_2 * u_n / t_n)


def cycle_rate(spec: BatterySpec, dod: npt.ArrayLike, temperature_c: npt.ArrayLike
               ) -> FloatArray:
    """BLAST-Lite cycling rate ``q3`` [1/EFC**q4] at cycle depth and temperature."""
    t_n = (np.asarray(temperature_c, dtype=float) + 273.15) / T_REF_K
    d = np.asarray(dod, dtype=float)
    return spec.q3_0 * np.exp(spec.q3_1 / t_n) * np.exp(spec.q3_2 * np.exp(d**2))


def _advance_power_law(q: FloatArray, k: FloatArray, exponent: float, dx: FloatArray
                       ) -> FloatArray:
    """Equivalent-time update of ``q = k x**p``: ``q'**(1/p) = q**(1/p) + k**(1/p) dx``."""
    inv = 1.0 / exponent
    return (np.maximum(q, 0.0) ** inv + np.maximum(k, 0.0) ** inv * np.maximum(dx, 0.0)) ** exponent


# --------------------------------------------------------------------------- public API
def feasible_power_w(spec: BatterySpec, state: BatteryState, dt_s: float
                     ) -> tuple[FloatArray, FloatArray]:
    """Lower (discharge, <= 0) and upper (charge, >= 0) power [W] holdable for ``dt_s``.

    Upper: :func:`holdable_charge_power_w` (energy headroom and taper).  Lower:
    ``-min(P_d,max, (E - E_min) eta_d / dt_h)``.  Self-discharge in the same step is
    not reserved (it is applied after the power step).
    """
    t_h = dt_s / SECONDS_PER_HOUR
    cap = state.capacity_wh
    e_min = spec.soc_min * cap
    e_max = spec.soc_max * cap
    hi = holdable_charge_power_w(state.energy_wh, e_max, spec.taper_soc * cap,
                                 spec.max_charge_power_w, spec.charge_efficiency, dt_s)
    avail = np.maximum(state.energy_wh - e_min, 0.0) * spec.discharge_efficiency / t_h
    lo = -np.minimum(spec.max_discharge_power_w, avail)
    return lo, hi


def step(
    state: BatteryState,
    spec: BatterySpec,
    power_w: npt.ArrayLike,
    dt_s: float,
    temperature_c: npt.ArrayLike = 25.0,
    ageing: bool = True,
) -> tuple[BatteryState, BatteryFlows]:
    """Advance a battery population by ``dt_s`` at constant requested power.

    Parameters
    ----------
    state, spec : population state and parameters.
    power_w : requested terminal power per device [W] (+ charge, - discharge).
    dt_s : step length [s] (> 0).
    temperature_c : cell temperature for ageing [degC] (scalar or per device).
    ageing : update capacity fade (disable for short HIL loops or tests).

    Returns
    -------
    (new_state, flows).  The request is clipped to power limits, the CC-CV taper and the
    energy available; ``flows.unmet_w`` is the clipped part.  The integration is exact
    for a constant request: discharge holds ``p`` until ``E_min`` then stops; charge
    follows :func:`charge_exact`.
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    n = spec.n
    t_h = dt_s / SECONDS_PER_HOUR
    req = np.broadcast_to(_arr(power_w), (n,)).astype(float)
    cap = state.capacity_wh
    e0 = state.energy_wh
    e_min = spec.soc_min * cap
    e_max = spec.soc_max * cap
    eta_c = spec.charge_efficiency
    eta_d = spec.discharge_efficiency

    # charging branch
    e_chg = charge_exact(e0, e_max, spec.taper_soc * cap, spec.max_charge_power_w, eta_c,
                         np.maximum(req, 0.0), dt_s)
    stored_chg = e_chg - e0  # >= 0
    term_chg = _safe_div(stored_chg, eta_c)
    # discharging branch
    dis_req = np.minimum(np.maximum(-req, 0.0), spec.max_discharge_power_w)
    avail_term_wh = np.maximum(e0 - e_min, 0.0) * eta_d
    term_dis = np.minimum(dis_req * t_h, avail_term_wh)  # delivered Wh (>= 0)
    stored_dis = _safe_div(term_dis, eta_d)

    charging = req > 0
    energy_in = np.where(charging, term_chg, -term_dis)
    stored_pow = np.where(charging, stored_chg, -stored_dis)
    loss_conv = np.where(charging, term_chg - stored_chg, stored_dis - term_dis)
    e_p = e0 + stored_pow

    # self-discharge after the power step (exact exponential decay)
    k_per_h = -np.log1p(-np.clip(spec.self_discharge_per_month, 0.0, 0.999999)) / HOURS_PER_MONTH
    e_sd = np.maximum(e_p, 0.0) * np.exp(-k_per_h * t_h) + np.minimum(e_p, 0.0)
    loss_sd = e_p - e_sd

    d_efc = _safe_div(np.abs(stored_pow), 2.0 * spec.capacity_wh)
    aged = replace(state, energy_wh=e_sd, age_s=state.age_s + dt_s, efc=state.efc + d_efc)
    loss_fade = np.zeros(n)
    if ageing:
        soc_mean = 0.5 * (_safe_div(e0, cap) + _safe_div(e_sd, cap))
        aged, loss_fade = age(aged, spec, dt_s, d_efc, soc_mean, temperature_c)
    e_end = aged.energy_wh

    avg_power = energy_in / t_h
    flows = BatteryFlows(
        power_w=avg_power,
        unmet_w=req - avg_power,
        energy_in_wh=energy_in,
        stored_change_wh=e_end - e0,
        loss_conversion_wh=loss_conv,
        loss_self_discharge_wh=loss_sd,
        loss_fade_wh=loss_fade,
    )
    return aged, flows


def age(
    state: BatteryState,
    spec: BatterySpec,
    elapsed_s: npt.ArrayLike,
    d_efc: npt.ArrayLike,
    soc_mean: npt.ArrayLike,
    temperature_c: npt.ArrayLike = 25.0,
) -> tuple[BatteryState, FloatArray]:
    """Apply calendar and cycle ageing for ``elapsed_s`` and ``d_efc`` equivalent full cycles.

    :func:`step` calls this every step; to save time on long runs call
    ``step(..., ageing=False)`` (which still counts ``state.efc``) and apply this once a
    day with the cycles counted since the last call and the mean SoC of the period.
    Because the power laws advance by the equivalent-time rule, coarse and fine cadences
    agree exactly for constant stress.

    Returns the new state and the stored energy lost because the SoC window shrank [Wh]
    (``loss_fade_wh`` in the ledger).
    """
    scale = spec.ageing_scale
    k1 = calendar_rate(spec, soc_mean, temperature_c) * scale
    k3 = cycle_rate(spec, spec.dod_assumed, temperature_c) * scale
    n = spec.n
    days = np.broadcast_to(np.asarray(elapsed_s, dtype=float) / SECONDS_PER_DAY, (n,))
    q_cal = _advance_power_law(state.q_loss_cal, k1, spec.q2, days)
    q_cyc = _advance_power_law(state.q_loss_cyc, k3, spec.q4,
                               np.broadcast_to(np.asarray(d_efc, dtype=float), (n,)))
    new_cap = spec.capacity_wh * np.clip(1.0 - q_cal - q_cyc, 0.0, 1.0)
    # energy above the shrunken window is lost (logged, keeps the ledger closed)
    e_end = np.minimum(state.energy_wh, np.maximum(spec.soc_max * new_cap, 0.0))
    return (replace(state, energy_wh=e_end, capacity_wh=new_cap, q_loss_cal=q_cal,
                    q_loss_cyc=q_cyc), state.energy_wh - e_end)


def rainflow_cycle_fade(
    spec: BatterySpec,
    soc_history: npt.ArrayLike,
    temperature_c: float = 25.0,
) -> FloatArray:
    """Cycle-ageing capacity loss ``q_cyc`` from rainflow-counted SoC histories.

    Parameters
    ----------
    spec : population parameters (``q3_*``, ``q4``, ``ageing_scale``).
    soc_history : array ``(T, n)`` of SoC samples per device.
    temperature_c : cell temperature [degC].

    Returns
    -------
    Relative capacity loss per device, ``(n,)``.

    Notes
    -----
    Cycles are extracted with the ``rainflow`` package (ASTM E1049-85).  A cycle of
    depth ``d`` and count ``c`` (0.5 for half cycles) adds ``c d`` equivalent full cycles
    at the depth-dependent rate ``q3(d)``; by the equivalent-time rule
    ``q ** (1/q4) = sum_i (q3(d_i) ** (1/q4)) c_i d_i``.  This loops over devices in
    Python (the rainflow package works per series); call it offline or once per
    simulated day, not per tick.
    """
    from cps_sim.core.deps import require

    rainflow = require("rainflow", "battery cycle ageing (rainflow counting)")
    hist = np.asarray(soc_history, dtype=float)
    if hist.ndim == 1:
        hist = hist[:, None]
    n = hist.shape[1]
    out = np.zeros(n)
    inv = 1.0 / spec.q4
    scale = np.broadcast_to(spec.ageing_scale, (n,))
    for j in range(n):  # per-series reversal extraction; not a hot path
        cycles = np.array([(rng, cnt) for rng, _mean, cnt, _i0, _i1
                           in rainflow.extract_cycles(hist[:, j])], dtype=float)
        if cycles.size == 0:
            continue
        d, c = cycles[:, 0], cycles[:, 1]
        k = cycle_rate(spec, d, temperature_c) * scale[j]
        out[j] = float(np.sum(k**inv * c * d)) ** spec.q4
    return out
