"""Wind turbines and farms from manufacturer power curves, vectorised over farms.

Power curves come from the OEDB turbine library snapshot that ships *inside*
windpowerlib 0.2.2 (``windpowerlib/data/default_turbine_data/power_curves.csv``,
67 turbine types, power in W against wind speed in m/s).  The file is read
from disk; no OEDB download function of windpowerlib is ever called.

Chain per farm (all as numpy broadcasting over times × farms):

1. hub-height wind speed from the measured speed:
   logarithmic profile  v_hub = v·ln(h_hub/z0)/ln(h_meas/z0)  or
   Hellmann power law   v_hub = v·(h_hub/h_meas)^α
   (the formulas of ``windpowerlib.wind_speed.logarithmic_profile`` / ``hellman``);
2. optional air-density correction, IEC 61400-12-1 normalisation for
   pitch-regulated turbines: the curve is read at v·(ρ/ρ₀)^{1/3}, ρ₀ = 1.225 kg/m³;
3. piecewise-linear interpolation of the power curve (as windpowerlib's
   ``power_curve``); zero below the first curve point and above the cut-out
   speed (the last curve point unless ``cut_out_m_s`` is given; no hysteresis);
4. farm = n_turbines × efficiency × single-turbine power (a constant wake and
   availability efficiency per farm).

Outputs named ``*_ac_power_w`` are generation and therefore non-negative.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.core.types import FloatArray

STANDARD_AIR_DENSITY_KG_M3 = 1.225  # ISA sea level, 15 °C
GAS_CONSTANT_DRY_AIR_J_KG_K = 287.058
GRAVITY_M_S2 = 9.80665
LAPSE_RATE_K_M = 0.0065


@dataclass(frozen=True)
class PowerCurve:
    """A turbine's power curve: ``power_w[i]`` at ``wind_speed_m_s[i]`` (ascending)."""

    turbine_type: str
    wind_speed_m_s: FloatArray
    power_w: FloatArray

    @property
    def nominal_power_w(self) -> float:
        return float(self.power_w.max())


@functools.cache
def _table() -> pd.DataFrame:
    """windpowerlib's bundled OEDB power-curve table (read once, from disk)."""
    from cps_sim.core.deps import require

    wpl = require("windpowerlib", "wind turbine power curves")
    path = resources.files(wpl) / "data" / "default_turbine_data" / "power_curves.csv"
    with resources.as_file(path) as p:
        return pd.read_csv(p, index_col=0)


def turbine_types() -> list[str]:
    """Turbine types with a power curve in windpowerlib's bundled OEDB snapshot."""
    return list(_table().index)


def load_power_curve(turbine_type: str) -> PowerCurve:
    """Power curve of ``turbine_type`` (e.g. ``"E-126/4200"``) from the bundled CSV."""
    table = _table()
    if turbine_type not in table.index:
        close = [t for t in table.index if turbine_type.split("/")[0] in t][:5]
        raise KeyError(
            f"turbine_type {turbine_type!r} not in windpowerlib's bundled power "
            f"curves; similar: {close}; see turbine_types()"
        )
    row = table.loc[turbine_type].dropna()
    speeds = row.index.astype(float).to_numpy()
    order = np.argsort(speeds)
    return PowerCurve(turbine_type, speeds[order], row.to_numpy(dtype=float)[order])


def hub_wind_speed_m_s(
    wind_speed_m_s: npt.ArrayLike,
    measurement_height_m: float,
    hub_height_m: npt.ArrayLike,
    *,
    method: str = "logarithmic",
    roughness_length_m: float = 0.15,
    hellman_exponent: float = 1.0 / 7.0,
) -> FloatArray:
    """Wind speed at hub height, shape (n_times, n_farms).

    ``"logarithmic"``: v·ln(h_hub/z0)/ln(h_meas/z0) (neutral stability, no
    obstacle height; z0 = 0.15 m ≈ farmland with hedges).
    ``"hellman"``: v·(h_hub/h_meas)^α, α = 1/7 by default (neutral, open terrain).
    """
    v = np.asarray(wind_speed_m_s, dtype=float).reshape(-1, 1)
    h = np.atleast_1d(np.asarray(hub_height_m, dtype=float))[None, :]
    if np.any(h <= 0) or measurement_height_m <= 0:
        raise ValueError("heights must be > 0 m")
    if method == "logarithmic":
        if np.any(h <= roughness_length_m) or measurement_height_m <= roughness_length_m:
            raise ValueError("heights must exceed the roughness length")
        factor = np.log(h / roughness_length_m) / np.log(measurement_height_m / roughness_length_m)
    elif method == "hellman":
        factor = (h / measurement_height_m) ** hellman_exponent
    else:
        raise ValueError(f"method must be 'logarithmic' or 'hellman', got {method!r}")
    return v * factor


def air_density_kg_m3(
    temp_air_c: npt.ArrayLike,
    hub_height_m: npt.ArrayLike,
    *,
    pressure_pa: npt.ArrayLike = 101325.0,
    temperature_height_m: float = 2.0,
    pressure_height_m: float = 0.0,
) -> FloatArray:
    """Air density at hub height, shape (n_times, n_farms).

    T_hub = T - 0.0065 K/m·(h_hub - h_T); p_hub = p·exp(-g(h_hub - h_p)/(R_d·T_hub));
    ρ = p_hub/(R_d·T_hub), R_d = 287.058 J/(kg K) (dry air, ideal gas).
    """
    t_k = np.asarray(temp_air_c, dtype=float).reshape(-1, 1) + 273.15
    p = np.asarray(pressure_pa, dtype=float)
    p = p.reshape(-1, 1) if p.ndim else p
    h = np.atleast_1d(np.asarray(hub_height_m, dtype=float))[None, :]
    t_hub = t_k - LAPSE_RATE_K_M * (h - temperature_height_m)
    r_d = GAS_CONSTANT_DRY_AIR_J_KG_K
    p_hub = p * np.exp(-GRAVITY_M_S2 * (h - pressure_height_m) / (r_d * t_hub))
    return p_hub / (GAS_CONSTANT_DRY_AIR_J_KG_K * t_hub)


def turbine_ac_power_w(
    hub_wind_speed: npt.ArrayLike,
    curve: PowerCurve,
    *,
    air_density: npt.ArrayLike | None = None,
    cut_out_m_s: float | None = None,
) -> FloatArray:
    """Single-turbine output [W, ≥ 0] from its power curve, any array shape.

    With ``air_density`` (kg/m³) the curve is read at v·(ρ/1.225)^{1/3}
    (IEC 61400-12-1).  Below the first curve point and above the cut-out speed
    (default: the last curve point) the output is 0.
    """
    v = np.asarray(hub_wind_speed, dtype=float)
    if air_density is not None:
        v = v * (np.asarray(air_density, dtype=float) / STANDARD_AIR_DENSITY_KG_M3) ** (1.0 / 3.0)
    power = np.interp(v, curve.wind_speed_m_s, curve.power_w, left=0.0, right=0.0)
    cut_out = curve.wind_speed_m_s[-1] if cut_out_m_s is None else cut_out_m_s
    return np.where(v > cut_out, 0.0, np.clip(power, 0.0, None))


def wind_farm_ac_power_w(
    weather: pd.DataFrame,
    turbine_type: str | list[str],
    hub_height_m: npt.ArrayLike,
    n_turbines: npt.ArrayLike = 1,
    efficiency: npt.ArrayLike = 1.0,
    *,
    method: str = "logarithmic",
    roughness_length_m: float = 0.15,
    hellman_exponent: float = 1.0 / 7.0,
    density_correction: bool = False,
    pressure_pa: float = 101325.0,
    cut_out_m_s: float | None = None,
) -> FloatArray:
    """AC output [W, ≥ 0] of a population of wind farms, shape (n_times, n_farms).

    Parameters
    ----------
    weather
        Frame with ``wind_speed_m_s`` (measured at ``attrs["wind_height_m"]``,
        default 10 m) and, for density correction, ``temp_air_c``.
    turbine_type
        One bundled type for all farms or one per farm (see :func:`turbine_types`).
    hub_height_m, n_turbines, efficiency
        Per farm (or scalar).  ``efficiency`` (0..1) lumps wake and availability.
    method, roughness_length_m, hellman_exponent
        Hub-height extrapolation (see :func:`hub_wind_speed_m_s`).
    density_correction, pressure_pa
        Apply the IEC density correction with ρ from :func:`air_density_kg_m3`.
    """
    hub = np.atleast_1d(np.asarray(hub_height_m, dtype=float))
    types = [turbine_type] if isinstance(turbine_type, str) else list(turbine_type)
    n_farms = max(hub.size, len(types))
    hub = np.broadcast_to(hub, (n_farms,))
    types_arr = np.broadcast_to(np.asarray(types, dtype=object), (n_farms,))
    scale = np.broadcast_to(np.asarray(n_turbines, dtype=float), (n_farms,)) * np.broadcast_to(
        np.asarray(efficiency, dtype=float), (n_farms,)
    )
    if np.any(scale < 0):
        raise ValueError("n_turbines and efficiency must be >= 0")
    height = float(weather.attrs.get("wind_height_m", 10.0))
    v_hub = hub_wind_speed_m_s(
        weather["wind_speed_m_s"].to_numpy(dtype=float),
        height,
        hub,
        method=method,
        roughness_length_m=roughness_length_m,
        hellman_exponent=hellman_exponent,
    )
    rho = None
    if density_correction:
        rho = air_density_kg_m3(
            weather["temp_air_c"].to_numpy(dtype=float), hub, pressure_pa=pressure_pa
        )
    out = np.empty_like(v_hub)
    for name in dict.fromkeys(types_arr.tolist()):  # loop over distinct types only
        cols = np.flatnonzero(types_arr == name)
        curve = load_power_curve(name)
        out[:, cols] = turbine_ac_power_w(
            v_hub[:, cols],
            curve,
            air_density=None if rho is None else rho[:, cols],
            cut_out_m_s=cut_out_m_s,
        )
    return out * scale[None, :]
