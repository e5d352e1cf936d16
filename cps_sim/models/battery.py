"""Battery populations: one model for home, building and grid batteries.

A population is a :class:`BatterySpec` (frozen arrays, one entry per device;
capacity 0 marks "no battery at this site") and its stored energy ``energy_wh``.
Everything the engine, the system layer's grid storage and the controllers use
is here, as pure functions over whole arrays:

* :func:`exchange_wh` — the engine's step over one segment: charge or discharge
  towards a requested AC energy, within the power limits, the energy window and
  the CC-CV taper; exact for a constant request;
* :func:`step` — the same exchange plus self-discharge, with every flow reported
  (:class:`BatteryFlows`; grid storage and studies use it);
* :func:`feasible_power_w` — the lowest and highest power a battery can *hold*
  for a given time (what controllers may ask without being clipped);
* :func:`self_discharge_wh` — exponential decay of what is stored;
* :func:`measured_exchange_wh` — book a measured exchange of a battery bound to
  real hardware.

Capacity fade lives in :mod:`cps_sim.models.battery_ageing`, which returns a new
spec with the shrunken capacity.

Model
-----
Stored energy ``E`` [Wh] moves between ``E_min = soc_min C`` and
``E_max = soc_max C``.  Charging at AC power ``p`` stores ``eta_c p``;
discharging ``p`` removes ``p / eta_d``.

CC-CV taper: above ``taper_soc`` the charge limit falls linearly to zero at
``soc_max``, ``P_lim(E) = P_line (E_max - E) / (E_max - E_taper)``, where
``P_line`` is the constant-current power (the battery's charge rating; for an EV
the pack's line, see :mod:`cps_sim.models.ev_physics`).  Under this limit the
stored energy approaches ``E_max`` exponentially with time constant
``tau_h = (E_max - E_taper) / (eta_c P_line)`` — the constant-voltage current
decay of a CC-CV charger to first order.  A constant request ``c`` is integrated
exactly in two phases: constant power until ``P_lim(E) = c``, then the
exponential tail (:func:`charge_exact`).  ``taper_soc >= soc_max`` disables it.

Self-discharge ``f`` per 30-day month: ``E <- E exp(-k t)``,
``k = -ln(1 - f) / 30 d``, logged as a loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import numpy.typing as npt

from cps_sim.core.types import FloatArray
from cps_sim.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR

Array = FloatArray  # kept for callers of the former name
SECONDS_PER_MONTH = 30 * SECONDS_PER_DAY  # the convention of datasheet self-discharge rates
Selector = slice | npt.NDArray[np.int64]  # which devices a step touches (all, or indices)
ALL = _ALL = slice(None)  # every device (a selector that is a view)


def _safe_div(num: npt.ArrayLike, den: npt.ArrayLike, fill: float = 0.0) -> FloatArray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, fill, dtype=float)
    with np.errstate(over="ignore"):
        np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class BatterySpec:
    """Static parameters of a battery population (arrays of shape ``(n,)``, SI units).

    Attributes
    ----------
    capacity_wh : present usable capacity [Wh] (0: no battery at this site).
    max_charge_power_w, max_discharge_power_w : AC power limits [W], both >= 0.
    charge_efficiency, discharge_efficiency : one-way efficiencies (0..1].
    soc_min, soc_max : SoC window (fractions of the capacity).
    taper_soc : SoC above which the CC-CV taper starts (>= soc_max disables it).
    self_discharge_per_month : fraction of stored energy lost per 30 days.

    Derived (computed once): ``energy_min_wh``, ``energy_max_wh``,
    ``energy_taper_wh``, ``self_discharge_per_s``, and the flags ``any_taper`` and
    ``any_self_discharge`` the engine uses to skip work.
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
    energy_min_wh: FloatArray = field(init=False, repr=False)
    energy_max_wh: FloatArray = field(init=False, repr=False)
    energy_taper_wh: FloatArray = field(init=False, repr=False)
    self_discharge_per_s: FloatArray = field(init=False, repr=False)
    any_taper: bool = field(init=False, repr=False)
    any_self_discharge: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cap = self.capacity_wh
        s = object.__setattr__
        s(self, "energy_min_wh", cap * self.soc_min)
        s(self, "energy_max_wh", cap * self.soc_max)
        s(self, "energy_taper_wh", cap * np.minimum(self.taper_soc, self.soc_max))
        s(self, "any_taper", bool(((self.taper_soc < self.soc_max) & (cap > 0)).any()))
        sd = np.clip(self.self_discharge_per_month, 0.0, 0.999999)
        s(self, "self_discharge_per_s", -np.log1p(-sd) / SECONDS_PER_MONTH)
        s(self, "any_self_discharge", bool(((sd > 0) & (cap > 0)).any()))

    @property
    def n(self) -> int:
        return int(self.capacity_wh.shape[0])

    def take(self, idx: npt.NDArray[np.intp]) -> BatterySpec:
        """The spec of devices ``idx`` (the derived arrays are the same numbers)."""
        return BatterySpec(**{f.name: getattr(self, f.name)[idx] for f in fields(self) if f.init})


def make_spec(
    capacity_wh: npt.ArrayLike,
    power_w: npt.ArrayLike,
    *,
    n: int | None = None,
    charge_efficiency: npt.ArrayLike = 0.95,
    discharge_efficiency: npt.ArrayLike = 0.95,
    soc_min: npt.ArrayLike = 0.0,
    soc_max: npt.ArrayLike = 1.0,
    taper_soc: npt.ArrayLike = 1.0,
    self_discharge_per_month: npt.ArrayLike = 0.0,
    max_discharge_power_w: npt.ArrayLike | None = None,
) -> BatterySpec:
    """A spec from per-device values or scalars (broadcast to ``n`` or to the first array)."""
    cap = np.asarray(capacity_wh, dtype=float)
    size = n if n is not None else int(np.broadcast(cap, np.asarray(power_w)).size)

    def a(x: npt.ArrayLike) -> FloatArray:
        return np.broadcast_to(np.asarray(x, dtype=float), (size,)).astype(float)

    return BatterySpec(
        capacity_wh=a(cap),
        max_charge_power_w=a(power_w),
        max_discharge_power_w=a(
            power_w if max_discharge_power_w is None else max_discharge_power_w
        ),
        charge_efficiency=a(charge_efficiency),
        discharge_efficiency=a(discharge_efficiency),
        soc_min=a(soc_min),
        soc_max=a(soc_max),
        taper_soc=a(taper_soc),
        self_discharge_per_month=a(self_discharge_per_month),
    )


def no_batteries(n: int) -> BatterySpec:
    """A population of ``n`` sites without a battery (capacity 0)."""
    return make_spec(np.zeros(n), np.zeros(n), n=n, charge_efficiency=1.0, discharge_efficiency=1.0)


# Presets.  All values are labelled assumptions of typical 2020s products, not a
# specific datasheet.  (Ageing presets: models.battery_ageing.PRESETS.)
PRESETS: dict[str, dict[str, float]] = {
    # residential LFP ~10 kWh / 5 kW hybrid-inverter system
    "home": dict(
        capacity_kwh=10.0,
        charge_kw=5.0,
        discharge_kw=5.0,
        eta_c=0.95,
        eta_d=0.95,
        soc_min=0.05,
        soc_max=1.0,
        taper_soc=0.9,
        sd_month=0.02,
    ),
    # building/commercial ~100 kWh / 50 kW
    "building": dict(
        capacity_kwh=100.0,
        charge_kw=50.0,
        discharge_kw=50.0,
        eta_c=0.955,
        eta_d=0.955,
        soc_min=0.05,
        soc_max=1.0,
        taper_soc=0.92,
        sd_month=0.02,
    ),
    # grid-scale 4-hour BESS, 10 MW / 40 MWh, ~86 % AC round trip
    "grid": dict(
        capacity_kwh=40_000.0,
        charge_kw=10_000.0,
        discharge_kw=10_000.0,
        eta_c=0.927,
        eta_d=0.927,
        soc_min=0.05,
        soc_max=0.95,
        taper_soc=0.95,
        sd_month=0.01,
    ),
    # second-life EV pack (e.g. 40 kWh car pack at ~70 % SoH), derated power
    "second_life": dict(
        capacity_kwh=28.0,
        charge_kw=7.0,
        discharge_kw=7.0,
        eta_c=0.93,
        eta_d=0.93,
        soc_min=0.1,
        soc_max=0.95,
        taper_soc=0.85,
        sd_month=0.03,
    ),
}


def battery_spec(n: int, preset: str = "home", **overrides: npt.ArrayLike) -> BatterySpec:
    """A population of ``n`` identical batteries from a preset.

    Overrides use the :class:`BatterySpec` field names (SI units), e.g.
    ``battery_spec(100, "home", capacity_wh=13_500.0)``; arrays broadcast to ``(n,)``.
    """
    p = PRESETS[preset]
    base: dict[str, npt.ArrayLike] = dict(
        capacity_wh=p["capacity_kwh"] * 1000.0,
        max_charge_power_w=p["charge_kw"] * 1000.0,
        max_discharge_power_w=p["discharge_kw"] * 1000.0,
        charge_efficiency=p["eta_c"],
        discharge_efficiency=p["eta_d"],
        soc_min=p["soc_min"],
        soc_max=p["soc_max"],
        taper_soc=p["taper_soc"],
        self_discharge_per_month=p["sd_month"],
    )
    unknown = set(overrides) - set(base)
    if unknown:
        raise TypeError(f"unknown BatterySpec fields: {sorted(unknown)}")
    base.update(overrides)
    fields_ = {
        k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).astype(float).copy()
        for k, v in base.items()
    }
    return BatterySpec(**fields_)


def concat(specs: list[BatterySpec]) -> BatterySpec:
    """One population of several (e.g. every grid battery and pumped-hydro plant)."""
    names = (
        "capacity_wh",
        "max_charge_power_w",
        "max_discharge_power_w",
        "charge_efficiency",
        "discharge_efficiency",
        "soc_min",
        "soc_max",
        "taper_soc",
        "self_discharge_per_month",
    )
    return BatterySpec(**{k: np.concatenate([getattr(s, k) for s in specs]) for k in names})


# --------------------------------------------------------------------------- CC-CV law
def charge_exact(
    energy_wh: FloatArray,
    e_max_wh: FloatArray,
    e_taper_wh: FloatArray,
    p_max_w: FloatArray,
    eta: FloatArray,
    request_w: FloatArray,
    dt_s: float | FloatArray,
) -> FloatArray:
    """Stored energy after charging at constant request under a linear CC-CV taper.

    Parameters
    ----------
    energy_wh : stored energy at the start [Wh].
    e_max_wh : energy at which charging stops (``soc_max * C``) [Wh].
    e_taper_wh : energy where the taper starts; ``>= e_max_wh`` disables it [Wh].
    p_max_w : the taper line's constant-current power [W].
    eta : charge efficiency.
    request_w : requested charge power (>= 0) [W].
    dt_s : step length [s] (scalar or per device).

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
    t_h = np.asarray(dt_s, dtype=float) / SECONDS_PER_HOUR
    e0 = np.asarray(energy_wh, dtype=float)
    # one errstate for the whole law: every division whose denominator may be 0 is
    # masked by np.where (c <= p_max, so c / p_max is taken only where p_max > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = np.clip(request_w, 0.0, p_max_w)
        width = np.maximum(e_max_wh - e_taper_wh, 0.0)
        tapered = (width > 0) & (p_max_w > 0) & (eta > 0)
        # where P_lim(E) == c (== E_max without a taper)
        e1 = e_max_wh - np.where(p_max_w != 0, c / p_max_w, 0.0) * width
        rate = eta * c  # stored W in the constant-power phase
        active = (rate > 0) & (e0 < e_max_wh)
        t_to_e1 = np.maximum(e1 - e0, 0.0) / rate
        reached = active & (t_to_e1 < t_h)  # rate 0: inf or NaN, not reached
        t1 = np.where(reached, t_to_e1, t_h)
        e_lin = e0 + rate * t1
        e_s = np.where(reached, np.maximum(e0, e1), e_lin)
        tau_h = width / (eta * p_max_w)  # finite and > 0 where tapered
        decay = np.where(tapered, np.exp(-((t_h - t1) / tau_h)), 0.0)
        e_tail = e_max_wh - (e_max_wh - e_s) * decay
    e_end = np.where(reached, e_tail, e_lin)
    return np.where(active, np.maximum(e_end, e0), e0)


def taper_start_wh(
    e_max_wh: FloatArray, e_taper_wh: FloatArray, p_line_w: FloatArray, rate_w: FloatArray
) -> FloatArray:
    """Stored energy at which a constant charge power ``rate_w`` meets the taper line
    (``e_max_wh`` without a taper): from there on the power falls by itself."""
    width = np.maximum(e_max_wh - e_taper_wh, 0.0)
    return e_max_wh - np.minimum(_safe_div(rate_w, p_line_w), 1.0) * width


def charge_ac_wh(
    energy_wh: FloatArray,
    e_max_wh: FloatArray,
    e_taper_wh: FloatArray,
    p_line_w: FloatArray,
    limit_w: FloatArray,
    eta: FloatArray,
    request_wh: FloatArray,
    dt_s: float | FloatArray,
    any_taper: bool = True,
) -> FloatArray:
    """AC energy [Wh] a population takes over ``dt_s`` at a constant request.

    The request (``request_wh`` spread evenly over ``dt_s``) is limited by
    ``limit_w`` (charger / inverter), the room below ``e_max_wh`` and, where
    ``e_taper_wh < e_max_wh``, the CC-CV taper line through ``p_line_w``
    (:func:`charge_exact`).  Without a taper this is
    ``min(request, limit·dt, room / eta)``, exactly.  Stored energy is the result
    times ``eta``.
    """
    h = np.asarray(dt_s, dtype=float) / SECONDS_PER_HOUR
    with np.errstate(divide="ignore", invalid="ignore"):
        room_ac = np.maximum(e_max_wh - energy_wh, 0.0) / eta
        # an infinite limit over dt = 0: no limit (fmin)
        ac = np.minimum(np.fmin(request_wh, limit_w * h), room_ac)
        if not any_taper:
            return ac
        # The taper law can only bind where the stored energy would pass the taper start
        # or the request exceeds the taper line's power; elsewhere charge_exact is the
        # constant-power line, which is ``ac``.  Only those devices take the exact law
        # (a few per step in a large population).
        near = (
            (ac > 0)
            & (e_taper_wh < e_max_wh)
            & ((energy_wh + ac * eta > e_taper_wh) | (ac > p_line_w * h))
        )
        if not near.any():
            return ac
        i = np.flatnonzero(near)
        shape = near.shape

        def at(x: npt.ArrayLike) -> FloatArray:
            a = np.asarray(x, dtype=float)
            if not a.ndim:
                return a
            return a[i] if a.shape == shape else np.broadcast_to(a, shape)[i]

        e0, eta_i, req_i, h_i = at(energy_wh), at(eta), at(request_wh), at(h)
        c = np.minimum(np.where(h_i > 0, req_i / h_i, 0.0), at(limit_w))
        e_end = charge_exact(e0, at(e_max_wh), at(e_taper_wh), at(p_line_w), eta_i, c, at(dt_s))
        out = ac if ac.shape == shape else np.array(np.broadcast_to(ac, shape), dtype=float)
        out[i] = np.minimum(np.where(eta_i != 0, (e_end - e0) / eta_i, 0.0), out[i])
    return out


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


# --------------------------------------------------------------------------- engine step
def feasible_power_w(
    spec: BatterySpec, energy_wh: FloatArray, dt_s: float
) -> tuple[FloatArray, FloatArray]:
    """Lower (discharge, <= 0) and upper (charge, >= 0) AC power [W] holdable for ``dt_s``.

    Upper: the charge rating, the room below ``energy_max_wh`` and the CC-CV taper
    (:func:`holdable_charge_power_w`); lower: the discharge rating and the energy
    above ``energy_min_wh``.  Self-discharge in the same step is not reserved.
    Controllers call this (with the limits that come with their observation) so
    that the engine never clips what they ask.
    """
    h = dt_s / SECONDS_PER_HOUR
    e = np.asarray(energy_wh, dtype=float)
    hi = np.minimum(
        spec.max_charge_power_w,
        np.maximum(spec.energy_max_wh - e, 0.0) / spec.charge_efficiency / h,
    )
    if spec.any_taper:
        tapered = spec.energy_taper_wh < spec.energy_max_wh
        hi = np.where(
            tapered,
            holdable_charge_power_w(
                e,
                spec.energy_max_wh,
                spec.energy_taper_wh,
                spec.max_charge_power_w,
                spec.charge_efficiency,
                dt_s,
            ),
            hi,
        )
    avail = np.maximum(e - spec.energy_min_wh, 0.0) * spec.discharge_efficiency
    lo = -np.minimum(spec.max_discharge_power_w, avail / h)
    return lo, hi


def exchange_wh(
    spec: BatterySpec,
    energy_wh: FloatArray,
    desired_wh: FloatArray,
    dt_s: float | FloatArray,
    sel: Selector = _ALL,
) -> tuple[FloatArray, FloatArray]:
    """Charge or discharge towards ``desired_wh`` (AC side, + charge / − discharge).

    ``desired_wh`` is a constant power held over ``dt_s`` (scalar or per device in
    ``sel``).  Charging takes :func:`charge_ac_wh` (power limit, room, CC-CV taper);
    discharging delivers ``min(desired, P_d·dt, (E − E_min)·eta_d)``.  Updates
    ``energy_wh[sel]`` in place and returns ``(ac_wh, losses_wh)``.
    """
    h = np.asarray(dt_s, dtype=float) / SECONDS_PER_HOUR
    e = energy_wh[sel]
    eta_c = spec.charge_efficiency[sel]
    eta_d = spec.discharge_efficiency[sel]
    upper = charge_ac_wh(
        e,
        spec.energy_max_wh[sel],
        spec.energy_taper_wh[sel],
        spec.max_charge_power_w[sel],
        spec.max_charge_power_w[sel],
        eta_c,
        np.maximum(desired_wh, 0.0),
        dt_s,
        spec.any_taper,
    )
    lower = -np.minimum(
        spec.max_discharge_power_w[sel] * h, np.maximum(e - spec.energy_min_wh[sel], 0.0) * eta_d
    )
    ac = np.where(desired_wh > 0, upper, np.maximum(desired_wh, lower))
    d_e = np.where(ac > 0, ac * eta_c, ac / eta_d)
    energy_wh[sel] = e + d_e
    return ac, ac - d_e


def self_discharge_wh(
    spec: BatterySpec, energy_wh: FloatArray, dt_s: float | FloatArray, sel: Selector = _ALL
) -> FloatArray:
    """Exponential self-discharge over ``dt_s``: updates ``energy_wh[sel]`` in place and
    returns the energy lost [Wh]."""
    e = energy_wh[sel]
    lost = e * -np.expm1(-spec.self_discharge_per_s[sel] * dt_s)
    energy_wh[sel] = e - lost
    return lost


def measured_exchange_wh(
    spec: BatterySpec, energy_wh: FloatArray, ac_wh: FloatArray, sel: Selector = _ALL
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Book a *measured* AC exchange ``ac_wh`` (+ charge / − discharge), unclipped.

    A device bound to a real battery exchanged what was measured, whatever the
    model's power limit or energy window says.  The stored energy follows the
    same efficiencies as :func:`exchange_wh`; where it would leave the physical
    range [0, capacity] it is clipped and the difference is returned as a
    correction (+: energy the books must add, −: energy they must remove), so
    stored energy is never overwritten silently.  Updates ``energy_wh[sel]`` in
    place and returns ``(ac_wh, losses_wh, correction_wh)``.
    """
    e = energy_wh[sel]
    ac = np.asarray(ac_wh, dtype=float)
    d_e = np.where(ac > 0, ac * spec.charge_efficiency[sel], ac / spec.discharge_efficiency[sel])
    new = e + d_e
    clipped = np.clip(new, 0.0, spec.capacity_wh[sel])
    energy_wh[sel] = clipped
    return ac, ac - d_e, clipped - new


# --------------------------------------------------------------------------- whole step
@dataclass(frozen=True)
class BatteryFlows:
    """What happened during one :func:`step` (arrays of shape ``(n,)``).

    ``power_w`` is the average AC power actually held (+charge), ``unmet_w`` the
    requested minus the held power.  Energies in Wh over the step; the identity
    ``energy_in_wh = stored_change_wh + loss_conversion_wh + loss_self_discharge_wh +
    loss_fade_wh`` holds to floating point.  ``stored_power_wh`` is the stored change
    due to the power alone (what cycle ageing counts).
    """

    power_w: FloatArray
    unmet_w: FloatArray
    energy_in_wh: FloatArray
    stored_change_wh: FloatArray
    loss_conversion_wh: FloatArray
    loss_self_discharge_wh: FloatArray
    stored_power_wh: FloatArray
    loss_fade_wh: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def loss_wh(self) -> FloatArray:
        fade = self.loss_fade_wh if self.loss_fade_wh.size else 0.0
        return self.loss_conversion_wh + self.loss_self_discharge_wh + fade


def initial_energy_wh(spec: BatterySpec, soc: npt.ArrayLike = 0.5) -> FloatArray:
    """Stored energy [Wh] at the given SoC (scalar or per device)."""
    return np.broadcast_to(np.asarray(soc, dtype=float), (spec.n,)) * spec.capacity_wh


def step(
    spec: BatterySpec, energy_wh: FloatArray, power_w: npt.ArrayLike, dt_s: float
) -> tuple[FloatArray, BatteryFlows]:
    """Advance a population by ``dt_s`` at a constant requested AC power.

    The request is clipped to the power limits, the CC-CV taper and the energy
    window (:func:`exchange_wh`, the engine's own step); self-discharge follows.
    Returns the new stored energy (a new array) and the flows.
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    n = spec.n
    t_h = dt_s / SECONDS_PER_HOUR
    req = np.broadcast_to(np.asarray(power_w, dtype=float), (n,)).astype(float)
    e = np.array(energy_wh, dtype=float, copy=True)
    e0 = e.copy()
    ac, loss_conv = exchange_wh(spec, e, req * t_h, dt_s)
    stored_pow = e - e0
    loss_sd = self_discharge_wh(spec, e, dt_s)
    power = ac / t_h
    return e, BatteryFlows(
        power_w=power,
        unmet_w=req - power,
        energy_in_wh=ac,
        stored_change_wh=e - e0,
        loss_conversion_wh=loss_conv,
        loss_self_discharge_wh=loss_sd,
        stored_power_wh=stored_pow,
        loss_fade_wh=np.zeros(n),
    )
