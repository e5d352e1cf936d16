"""Electric-vehicle populations: catalog, charging (AC/DC, CC-CV), V2H/V2G, driving energy.

Catalog
-------
One YAML file per vehicle class in ``devices/ev/*.yaml`` (fields of :class:`EVModel`).
The shipped classes (kei 20 kWh, compact 40 kWh, mid 60 kWh, SUV 80 kWh, light van,
light truck) carry spec-sheet order-of-magnitude numbers and are labelled assumptions.

Charging
--------
Terminal (wall-side) charge power is limited by ``min(vehicle limit, charger limit)``
where the vehicle limit is the on-board charger (AC) or the DC inlet limit (DC).  The
pack's CC-CV taper is a line in absolute power: above ``taper_soc`` the pack accepts at
most ``P_dc,max (E_max - E) / (E_max - E_taper)``; so a slow AC charge runs at constant
power almost to full while a DC fast charge tapers from ``taper_soc``.  Integration is
exact for a constant request (:func:`cps_sim.models.battery.charge_exact`).

Discharging (V2H/V2G) is limited by ``min(vehicle v2x_max, charger bidirectional limit)``
and stops at the reserve ``soc_min``.

Driving
-------
Energy of a trip ``E = d * c * f(T)`` with ``c`` the battery-side consumption [Wh/km]
and the temperature factor (labelled assumption, chosen to reproduce the order of the
range losses reported by AAA (2019) with cabin HVAC in use: about -35 % at -7 degC,
-13 % at 35 degC)::

    f(T) = 1 + a_cold * max(0, T_cold - T) + a_hot * max(0, T - T_hot)
    a_cold = 0.025 /K, T_cold = 15 degC, a_hot = 0.015 /K, T_hot = 25 degC
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from cps_sim.core.errors import ScenarioError
from cps_sim.core.types import BoolArray, FloatArray
from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.models.battery import _safe_div, charge_ac_wh, holdable_charge_power_w

DEFAULT_CATALOG_DIR = Path(__file__).resolve().parents[2] / "devices" / "ev"
V2X_KINDS = ("none", "v2h", "v2g")

# temperature dependence of consumption (labelled assumption, see module docstring)
COLD_REF_C = 15.0
COLD_COEFF_PER_K = 0.025
HOT_REF_C = 25.0
HOT_COEFF_PER_K = 0.015


@dataclass(frozen=True)
class EVModel:
    """One vehicle class as written in ``devices/ev/<name>.yaml`` (edge units kW/kWh)."""

    name: str
    segment: str
    capacity_kwh: float
    consumption_kwh_per_100km: float
    ac_max_kw: float
    dc_max_kw: float
    v2x: str
    v2x_max_kw: float
    charge_efficiency: float = 0.90
    dc_charge_efficiency: float = 0.94
    discharge_efficiency: float = 0.90
    taper_soc: float = 0.80
    source: str = "assumption"


_POSITIVE = ("capacity_kwh", "consumption_kwh_per_100km")
_NONNEG = ("ac_max_kw", "dc_max_kw", "v2x_max_kw")
_FRACTION = ("charge_efficiency", "dc_charge_efficiency", "discharge_efficiency", "taper_soc")


def _validate(doc: object, file: str) -> EVModel:
    if not isinstance(doc, Mapping):
        raise ScenarioError.single(file, "", "must be a mapping of EV fields")
    known = {f.name for f in fields(EVModel)}
    for key in doc:
        if key not in known:
            raise ScenarioError.single(file, str(key), f"unknown field; known: {sorted(known)}")
    for key in ("name", "segment", *_POSITIVE, *_NONNEG, "v2x"):
        if key not in doc:
            raise ScenarioError.single(file, key, "required field missing")
    for key in _POSITIVE:
        if not float(doc[key]) > 0:
            raise ScenarioError.single(file, key, f"must be > 0, got {doc[key]}")
    for key in _NONNEG:
        if not float(doc[key]) >= 0:
            raise ScenarioError.single(file, key, f"must be >= 0, got {doc[key]}")
    for key in _FRACTION:
        if key in doc and not 0 < float(doc[key]) <= 1:
            raise ScenarioError.single(file, key, f"must be in (0, 1], got {doc[key]}")
    if doc["v2x"] not in V2X_KINDS:
        raise ScenarioError.single(file, "v2x", f"must be one of {V2X_KINDS}, got {doc['v2x']!r}")
    return EVModel(**dict(doc))


def load_catalog(directory: str | Path | None = None) -> dict[str, EVModel]:
    """Load every ``*.yaml`` vehicle class in ``directory`` (default ``devices/ev``).

    Raises :class:`~cps_sim.core.errors.ScenarioError` naming the file and field on a bad
    entry or a duplicated name.
    """
    root = Path(directory) if directory is not None else DEFAULT_CATALOG_DIR
    out: dict[str, EVModel] = {}
    for path in sorted(root.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            model = _validate(yaml.safe_load(fh), str(path))
        if model.name in out:
            raise ScenarioError.single(str(path), "name", f"duplicate EV name {model.name!r}")
        out[model.name] = model
    return out


# --------------------------------------------------------------------------- spec & state
@dataclass(frozen=True)
class EVSpec:
    """Static parameters of an EV population (SI, arrays of shape ``(n,)``)."""

    capacity_wh: FloatArray
    consumption_wh_per_km: FloatArray
    ac_max_w: FloatArray
    dc_max_w: FloatArray
    v2x_max_w: FloatArray
    charge_efficiency: FloatArray
    dc_charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    taper_soc: FloatArray
    soc_min: FloatArray  # V2X reserve: discharge to the grid/home stops here
    soc_max: FloatArray

    @property
    def n(self) -> int:
        return int(self.capacity_wh.shape[0])


@dataclass(frozen=True)
class EVState:
    """Dynamic state: stored energy and the charger each vehicle is plugged into."""

    energy_wh: FloatArray
    plugged: BoolArray
    charger_max_w: FloatArray  # charger's charge limit (AC EVSE or DC station)
    charger_dc: BoolArray
    charger_v2x_w: FloatArray  # charger's discharge limit (0 = unidirectional)

    def soc(self, spec: EVSpec) -> FloatArray:
        return _safe_div(self.energy_wh, spec.capacity_wh)


@dataclass(frozen=True)
class EVFlows:
    """One charging/discharging step; ``energy_in_wh = stored_change_wh + loss_wh``."""

    power_w: FloatArray
    unmet_w: FloatArray
    energy_in_wh: FloatArray
    stored_change_wh: FloatArray
    loss_wh: FloatArray


@dataclass(frozen=True)
class DriveFlows:
    """One driving segment: traction energy drawn and the part the pack could not give."""

    energy_wh: FloatArray
    shortfall_wh: FloatArray


def ev_spec(
    catalog: Mapping[str, EVModel],
    names: Sequence[str],
    soc_min: npt.ArrayLike = 0.2,
    soc_max: npt.ArrayLike = 1.0,
) -> EVSpec:
    """Population spec with one vehicle per entry of ``names`` (classes from ``catalog``).

    ``soc_min`` is the V2X reserve (default 20 %, labelled assumption).
    """
    models = [catalog[nm] for nm in names]
    n = len(models)

    def col(attr: str, scale: float = 1.0) -> FloatArray:
        return np.array([float(getattr(m, attr)) * scale for m in models], dtype=float)

    v2x_ok = np.array([m.v2x != "none" for m in models], dtype=bool)
    return EVSpec(
        capacity_wh=col("capacity_kwh", 1000.0),
        consumption_wh_per_km=col("consumption_kwh_per_100km", 10.0),
        ac_max_w=col("ac_max_kw", 1000.0),
        dc_max_w=col("dc_max_kw", 1000.0),
        v2x_max_w=np.where(v2x_ok, col("v2x_max_kw", 1000.0), 0.0),
        charge_efficiency=col("charge_efficiency"),
        dc_charge_efficiency=col("dc_charge_efficiency"),
        discharge_efficiency=col("discharge_efficiency"),
        taper_soc=col("taper_soc"),
        soc_min=np.broadcast_to(np.asarray(soc_min, dtype=float), (n,)).copy(),
        soc_max=np.broadcast_to(np.asarray(soc_max, dtype=float), (n,)).copy(),
    )


def initial_state(spec: EVSpec, soc: npt.ArrayLike = 0.5) -> EVState:
    """Unplugged population at the given SoC."""
    n = spec.n
    return EVState(
        energy_wh=np.broadcast_to(np.asarray(soc, dtype=float), (n,)) * spec.capacity_wh,
        plugged=np.zeros(n, dtype=bool),
        charger_max_w=np.zeros(n),
        charger_dc=np.zeros(n, dtype=bool),
        charger_v2x_w=np.zeros(n),
    )


def plug_in(
    state: EVState,
    mask: npt.ArrayLike,
    charger_max_w: npt.ArrayLike,
    dc: npt.ArrayLike = False,
    charger_v2x_w: npt.ArrayLike = 0.0,
) -> EVState:
    """Connect the vehicles selected by ``mask`` to chargers with the given limits."""
    m = np.asarray(mask, dtype=bool)
    n = state.energy_wh.shape[0]

    def bc(x: npt.ArrayLike, dtype: type = float) -> npt.NDArray[Any]:
        return np.broadcast_to(np.asarray(x, dtype=dtype), (n,))

    return replace(
        state,
        plugged=state.plugged | m,
        charger_max_w=np.where(m, bc(charger_max_w), state.charger_max_w),
        charger_dc=np.where(m, bc(dc, bool), state.charger_dc),
        charger_v2x_w=np.where(m, bc(charger_v2x_w), state.charger_v2x_w),
    )


def unplug(state: EVState, mask: npt.ArrayLike) -> EVState:
    """Disconnect the vehicles selected by ``mask``."""
    m = np.asarray(mask, dtype=bool)
    return replace(
        state,
        plugged=state.plugged & ~m,
        charger_max_w=np.where(m, 0.0, state.charger_max_w),
        charger_dc=state.charger_dc & ~m,
        charger_v2x_w=np.where(m, 0.0, state.charger_v2x_w),
    )


# --------------------------------------------------------------------------- limits
def _charge_params(spec: EVSpec, state: EVState) -> tuple[FloatArray, FloatArray, FloatArray]:
    vehicle_limit = np.where(state.charger_dc, spec.dc_max_w, spec.ac_max_w)
    cc_limit = np.where(state.plugged, np.minimum(vehicle_limit, state.charger_max_w), 0.0)
    pack_line = np.maximum(spec.dc_max_w, spec.ac_max_w)  # taper line of the pack
    eta = np.where(state.charger_dc, spec.dc_charge_efficiency, spec.charge_efficiency)
    return cc_limit, pack_line, eta


def discharge_limit_w(spec: EVSpec, state: EVState) -> FloatArray:
    """V2H/V2G discharge power limit [W] (>= 0): vehicle x charger, 0 if unplugged."""
    return np.where(state.plugged, np.minimum(spec.v2x_max_w, state.charger_v2x_w), 0.0)


def feasible_range_w(
    energy_wh: FloatArray,
    energy_min_wh: FloatArray,
    energy_max_wh: FloatArray,
    energy_taper_wh: FloatArray,
    taper_line_w: FloatArray,
    charge_limit_w: FloatArray,
    discharge_limit_w: FloatArray,
    charge_efficiency: FloatArray,
    discharge_efficiency: FloatArray,
    dt_s: float,
) -> tuple[FloatArray, FloatArray]:
    """Lower (V2X discharge, <= 0) and upper (charge, >= 0) AC power [W] that EVs can
    hold for ``dt_s``: charge limit, room below ``energy_max_wh`` and the CC-CV taper;
    discharge limit and the energy above ``energy_min_wh``.  Pass 0 limits for EVs
    that are not plugged in."""
    t_h = dt_s / SECONDS_PER_HOUR
    hi = holdable_charge_power_w(
        energy_wh, energy_max_wh, energy_taper_wh, taper_line_w, charge_efficiency, dt_s
    )
    hi = np.minimum(hi, charge_limit_w)
    avail = np.maximum(energy_wh - energy_min_wh, 0.0)
    lo = -np.minimum(discharge_limit_w, avail * discharge_efficiency / t_h)
    return lo, hi


def feasible_power_w(spec: EVSpec, state: EVState, dt_s: float) -> tuple[FloatArray, FloatArray]:
    """Lower (V2X discharge, <= 0) and upper (charge, >= 0) power [W] holdable for dt_s."""
    cc_limit, pack_line, eta = _charge_params(spec, state)
    return feasible_range_w(
        state.energy_wh,
        spec.soc_min * spec.capacity_wh,
        spec.soc_max * spec.capacity_wh,
        spec.taper_soc * spec.capacity_wh,
        pack_line,
        cc_limit,
        discharge_limit_w(spec, state),
        eta,
        spec.discharge_efficiency,
        dt_s,
    )


def step(
    state: EVState, spec: EVSpec, power_w: npt.ArrayLike, dt_s: float
) -> tuple[EVState, EVFlows]:
    """Charge (+) or discharge (-) plugged vehicles at constant request for ``dt_s``.

    Unplugged vehicles hold 0 W (their request is returned as unmet).  Exact for a
    constant request: charging follows the CC-CV line, discharging holds the request
    until the reserve ``soc_min`` and then stops.
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    n = spec.n
    t_h = dt_s / SECONDS_PER_HOUR
    req = np.broadcast_to(np.asarray(power_w, dtype=float), (n,))
    e0 = state.energy_wh
    cc_limit, pack_line, eta = _charge_params(spec, state)
    term_chg = charging_ac_wh(
        e0,
        spec.soc_max * spec.capacity_wh,
        spec.taper_soc * spec.capacity_wh,
        pack_line,
        cc_limit,
        eta,
        np.maximum(req, 0.0) * t_h,
        dt_s,
    )
    stored_chg = term_chg * eta
    dis = np.minimum(np.maximum(-req, 0.0), discharge_limit_w(spec, state))
    avail = np.maximum(e0 - spec.soc_min * spec.capacity_wh, 0.0) * spec.discharge_efficiency
    term_dis = np.minimum(dis * t_h, avail)
    stored_dis = _safe_div(term_dis, spec.discharge_efficiency)
    charging = req > 0
    energy_in = np.where(charging, term_chg, -term_dis)
    stored = np.where(charging, stored_chg, -stored_dis)
    power = energy_in / t_h
    flows = EVFlows(
        power_w=power,
        unmet_w=req - power,
        energy_in_wh=energy_in,
        stored_change_wh=stored,
        loss_wh=energy_in - stored,
    )
    return replace(state, energy_wh=e0 + stored), flows


def charging_ac_wh(
    energy_wh: FloatArray,
    energy_max_wh: FloatArray,
    energy_taper_wh: FloatArray,
    taper_line_w: FloatArray,
    limit_w: FloatArray,
    efficiency: FloatArray,
    request_wh: FloatArray,
    dt_s: float | FloatArray,
    any_taper: bool = True,
) -> FloatArray:
    """The EV charging law: AC energy [Wh] taken over ``dt_s`` at a constant request.

    The request is limited by the charge limit (``limit_w``: charger x vehicle),
    the room below ``energy_max_wh`` and the pack's CC-CV taper: above
    ``energy_taper_wh`` the pack accepts at most ``taper_line_w (E_max - E) /
    (E_max - E_taper)``, integrated exactly
    (:func:`cps_sim.models.battery.charge_ac_wh`).  :func:`step` and the engine's
    EV population (``world/group.py``) both call this; stored energy is the
    result times ``efficiency``.
    """
    return charge_ac_wh(
        energy_wh,
        energy_max_wh,
        energy_taper_wh,
        taper_line_w,
        limit_w,
        efficiency,
        request_wh,
        dt_s,
        any_taper,
    )


# --------------------------------------------------------------------------- driving
def consumption_factor(ambient_c: npt.ArrayLike) -> FloatArray:
    """Multiplier on nominal consumption at ambient temperature (labelled assumption)."""
    t = np.asarray(ambient_c, dtype=float)
    return (
        1.0
        + COLD_COEFF_PER_K * np.maximum(COLD_REF_C - t, 0.0)
        + HOT_COEFF_PER_K * np.maximum(t - HOT_REF_C, 0.0)
    )


def trip_energy_wh(
    spec: EVSpec, distance_km: npt.ArrayLike, ambient_c: npt.ArrayLike = 20.0
) -> FloatArray:
    """Battery energy [Wh] to drive ``distance_km`` at ambient temperature."""
    return (
        np.asarray(distance_km, dtype=float)
        * spec.consumption_wh_per_km
        * consumption_factor(ambient_c)
    )


def drive(
    state: EVState, spec: EVSpec, distance_km: npt.ArrayLike, ambient_c: npt.ArrayLike = 20.0
) -> tuple[EVState, DriveFlows]:
    """Remove trip energy from the packs (never below 0); report the shortfall.

    A shortfall means the trip could not be completed on battery (the caller decides
    whether that is an en-route fast charge, a cancelled trip, or a KPI).
    """
    need = np.broadcast_to(trip_energy_wh(spec, distance_km, ambient_c), (spec.n,))
    used = np.minimum(need, np.maximum(state.energy_wh, 0.0))
    return (
        replace(state, energy_wh=state.energy_wh - used),
        DriveFlows(energy_wh=used, shortfall_wh=need - used),
    )


def departure_shortfall_wh(spec: EVSpec, state: EVState, required_soc: npt.ArrayLike) -> FloatArray:
    """Unmet energy [Wh] at departure: ``max(0, soc_req * C - E)``."""
    return np.maximum(
        np.asarray(required_soc, dtype=float) * spec.capacity_wh - state.energy_wh, 0.0
    )
