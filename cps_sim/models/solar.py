"""Photovoltaic populations on pvlib, vectorised over thousands of systems.

The chain mirrors pvlib's ``ModelChain.with_pvwatts`` (PVWatts v5 style):

1. solar position — ``pvlib.solarposition.get_solarposition`` (NREL SPA), once
   for all systems;
2. plane-of-array irradiance — ``pvlib.irradiance.get_total_irradiance``
   (Perez 1990 by default; Hay-Davies or isotropic selectable), evaluated
   once per *distinct* (tilt, azimuth) with numpy broadcasting
   (times × orientations), in chunks to bound memory;
3. incidence-angle modifier — ``pvlib.iam.physical`` (Fresnel + Beer-Lambert,
   n = 1.526, K = 4 m⁻¹, L = 2 mm) on the beam component:
   E_eff = E_beam·IAM(θ) + E_diffuse;
4. cell temperature — ``pvlib.temperature.sapm_cell`` (King et al. 2004),
   T_c = E·exp(a + b·ws) + T_a + E/1000·ΔT, default open-rack glass/polymer
   (a = -3.56, b = -0.075, ΔT = 3);
5. DC power — ``pvlib.pvsystem.pvwatts_dc``:
   P_dc = P_dc0·E_eff/1000·(1 + γ(T_c - 25 °C));
6. system losses — P_dc·(1 - L/100) with L = 14.08 % (the PVWatts default from
   ``pvlib.pvsystem.pvwatts_losses``);
7. inverter — ``pvlib.inverter.pvwatts`` (Dobos 2014): efficiency
   η = η_nom/η_ref·(-0.0162ζ - 0.0059/ζ + 0.9858), ζ = P_dc/P_dc0,inv, with
   P_dc0,inv = P_ac,limit/η_nom, so the AC output is clipped at each system's
   own AC limit.

The result ``ac_power_w`` is *generation* and therefore non-negative (the
load-positive sign convention applies when it enters a site balance as
``-ac_power_w``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pvlib

from cps_sim.core.types import FloatArray
from cps_sim.models.weather import library_deprecations_ignored

ArrayLike = npt.ArrayLike

DEFAULT_LOSSES_PERCENT = 14.08  # pvlib.pvsystem.pvwatts_losses() defaults (14.0757), rounded
SAPM_OPEN_RACK_GLASS_POLYMER = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][
    "open_rack_glass_polymer"
]


def _site(
    weather: pd.DataFrame,
    latitude_deg: float | None,
    longitude_deg: float | None,
    altitude_m: float | None,
) -> tuple[float, float, float]:
    lat = weather.attrs.get("latitude_deg") if latitude_deg is None else latitude_deg
    lon = weather.attrs.get("longitude_deg") if longitude_deg is None else longitude_deg
    alt = weather.attrs.get("altitude_m", 0.0) if altitude_m is None else altitude_m
    if lat is None or lon is None:
        raise ValueError("latitude_deg/longitude_deg not given and not in weather.attrs")
    return float(lat), float(lon), float(alt)


def solar_position(
    weather: pd.DataFrame,
    latitude_deg: float | None = None,
    longitude_deg: float | None = None,
    altitude_m: float | None = None,
) -> pd.DataFrame:
    """Solar position for the weather's timestamps (NREL SPA via pvlib).

    Uses ``temp_air_c`` for the refraction correction, as pvlib's ModelChain does.
    Site defaults come from ``weather.attrs``.  Returns pvlib's columns
    (``apparent_zenith``, ``zenith``, ``azimuth``, ... in degrees).
    """
    lat, lon, alt = _site(weather, latitude_deg, longitude_deg, altitude_m)
    kwargs = {}
    if "temp_air_c" in weather:
        kwargs["temperature"] = weather["temp_air_c"]
    with library_deprecations_ignored():
        return pvlib.solarposition.get_solarposition(
            weather.index, lat, lon, altitude=alt, pressure=pvlib.atmosphere.alt2pres(alt), **kwargs
        )


def plane_of_array_w_m2(
    weather: pd.DataFrame,
    tilt_deg: ArrayLike,
    azimuth_deg: ArrayLike,
    solpos: pd.DataFrame,
    *,
    albedo: float = 0.25,
    transposition_model: str = "perez",
) -> tuple[FloatArray, FloatArray]:
    """Plane-of-array global and IAM-weighted effective irradiance [W/m²].

    ``tilt_deg`` and ``azimuth_deg`` (0 = north, 90 = east, 180 = south) are
    1-D arrays of orientations; everything is broadcast as (n_times, n_orient).

    Returns
    -------
    poa_global_w_m2, effective_irradiance_w_m2 : ndarray (n_times, n_orient)
    """
    tilt = np.atleast_1d(np.asarray(tilt_deg, dtype=float))[None, :]
    azim = np.atleast_1d(np.asarray(azimuth_deg, dtype=float))[None, :]
    zen = solpos["apparent_zenith"].to_numpy(dtype=float)[:, None]
    sazi = solpos["azimuth"].to_numpy(dtype=float)[:, None]
    with library_deprecations_ignored():
        dni_extra = np.asarray(pvlib.irradiance.get_extra_radiation(weather.index))[:, None]
        airmass = np.asarray(pvlib.atmosphere.get_relative_airmass(zen[:, 0]))[:, None]
        irr = pvlib.irradiance.get_total_irradiance(
            tilt,
            azim,
            zen,
            sazi,
            weather["dni_w_m2"].to_numpy(dtype=float)[:, None],
            weather["ghi_w_m2"].to_numpy(dtype=float)[:, None],
            weather["dhi_w_m2"].to_numpy(dtype=float)[:, None],
            dni_extra=dni_extra,
            airmass=airmass,
            albedo=albedo,
            model=transposition_model,
        )
        aoi = pvlib.irradiance.aoi(tilt, azim, zen, sazi)
        iam = pvlib.iam.physical(aoi)
    poa_global = np.nan_to_num(np.asarray(irr["poa_global"], dtype=float))
    poa_direct = np.nan_to_num(np.asarray(irr["poa_direct"], dtype=float))
    poa_diffuse = np.nan_to_num(np.asarray(irr["poa_diffuse"], dtype=float))
    effective = poa_direct * np.nan_to_num(np.asarray(iam, dtype=float)) + poa_diffuse
    return poa_global, effective


def pv_ac_power_w(
    weather: pd.DataFrame,
    tilt_deg: ArrayLike,
    azimuth_deg: ArrayLike,
    dc_capacity_w: ArrayLike,
    ac_limit_w: ArrayLike,
    *,
    gamma_pdc_per_c: ArrayLike = -0.004,
    losses_percent: ArrayLike = DEFAULT_LOSSES_PERCENT,
    eta_inv_nom: float = 0.96,
    eta_inv_ref: float = 0.9637,
    albedo: float = 0.25,
    transposition_model: str = "perez",
    temperature_model_parameters: dict[str, float] | None = None,
    latitude_deg: float | None = None,
    longitude_deg: float | None = None,
    altitude_m: float | None = None,
    solpos: pd.DataFrame | None = None,
    chunk_columns: int = 256,
) -> FloatArray:
    """AC output [W, generation ≥ 0] of a population of PV systems.

    Parameters
    ----------
    weather
        Frame from :mod:`cps_sim.models.weather` (columns ``ghi_w_m2``,
        ``dni_w_m2``, ``dhi_w_m2``, ``temp_air_c``, ``wind_speed_m_s``).
    tilt_deg, azimuth_deg
        Per system; azimuth 180 = south-facing.  Identical orientations are
        computed once.
    dc_capacity_w
        PVWatts P_dc0 per system [W] (module nameplate at STC).
    ac_limit_w
        Inverter AC rating per system [W]; AC output never exceeds it.
    gamma_pdc_per_c
        DC temperature coefficient [1/°C] (scalar or per system).
    losses_percent
        PVWatts system losses [%] (scalar or per system).
    eta_inv_nom, eta_inv_ref
        PVWatts inverter nominal and reference efficiencies.
    temperature_model_parameters
        SAPM ``a``, ``b``, ``deltaT``; default open-rack glass/polymer.
    latitude_deg, longitude_deg, altitude_m
        Site; default from ``weather.attrs``.
    solpos
        Precomputed :func:`solar_position` (to share between populations).
    chunk_columns
        Orientations / systems processed per block (memory bound).

    Returns
    -------
    ndarray, shape (n_times, n_systems)
        Instantaneous AC power at each timestamp [W].
    """
    tilt = np.atleast_1d(np.asarray(tilt_deg, dtype=float))
    azim = np.atleast_1d(np.asarray(azimuth_deg, dtype=float))
    tilt, azim = np.broadcast_arrays(tilt, azim)
    n_sys = tilt.size
    pdc0 = np.broadcast_to(np.asarray(dc_capacity_w, dtype=float), (n_sys,))
    pac_max = np.broadcast_to(np.asarray(ac_limit_w, dtype=float), (n_sys,))
    gamma = np.broadcast_to(np.asarray(gamma_pdc_per_c, dtype=float), (n_sys,))
    loss_factor = 1.0 - np.broadcast_to(np.asarray(losses_percent, dtype=float), (n_sys,)) / 100
    if np.any(pdc0 < 0) or np.any(pac_max <= 0):
        raise ValueError("dc_capacity_w must be >= 0 and ac_limit_w > 0")
    if np.any((tilt < 0) | (tilt > 180)):
        raise ValueError("tilt_deg must be within [0, 180]")
    params = temperature_model_parameters or SAPM_OPEN_RACK_GLASS_POLYMER
    if solpos is None:
        solpos = solar_position(weather, latitude_deg, longitude_deg, altitude_m)

    # ---- irradiance and cell temperature per distinct orientation
    orient, inverse = np.unique(np.column_stack([tilt, azim % 360.0]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_t = len(weather)
    temp_air = weather["temp_air_c"].to_numpy(dtype=float)[:, None]
    wind = weather["wind_speed_m_s"].to_numpy(dtype=float)[:, None]
    # Rows without any irradiance (night) have POA = 0 and T_cell = T_air exactly;
    # computing the optics only on lit rows halves the work for a year.
    lit = (weather[["ghi_w_m2", "dni_w_m2", "dhi_w_m2"]].to_numpy(dtype=float) > 0).any(axis=1)
    w_lit, sp_lit = weather.iloc[lit], solpos.iloc[lit]
    eff = np.zeros((n_t, len(orient)))
    t_cell = np.broadcast_to(temp_air, (n_t, len(orient))).copy()
    for lo in range(0, len(orient), chunk_columns):
        sl = slice(lo, lo + chunk_columns)
        poa, e = plane_of_array_w_m2(
            w_lit,
            orient[sl, 0],
            orient[sl, 1],
            sp_lit,
            albedo=albedo,
            transposition_model=transposition_model,
        )
        eff[lit, sl] = e
        t_cell[lit, sl] = pvlib.temperature.sapm_cell(
            poa, temp_air[lit], wind[lit], params["a"], params["b"], params["deltaT"]
        )

    # ---- DC, losses and inverter per system (PVWatts); block-wise to bound memory
    out = np.empty((n_t, n_sys))
    pdc0_inv = pac_max / eta_inv_nom
    for lo in range(0, n_sys, chunk_columns):
        sl = slice(lo, lo + chunk_columns)
        cols = inverse[sl]
        pdc = pvlib.pvsystem.pvwatts_dc(eff[:, cols], t_cell[:, cols], pdc0[sl], gamma[sl])
        pdc = np.asarray(pdc) * loss_factor[sl]
        with np.errstate(divide="ignore", invalid="ignore"):
            pac = pvlib.inverter.pvwatts(pdc, pdc0_inv[sl], eta_inv_nom, eta_inv_ref)
        out[:, sl] = np.clip(np.nan_to_num(np.asarray(pac, dtype=float)), 0.0, pac_max[sl])
    return out


def energy_wh(ac_power_w: FloatArray, dt_s: float) -> FloatArray:
    """Energy per system [Wh] of power samples held for ``dt_s`` each (rectangle rule)."""
    return np.asarray(ac_power_w).sum(axis=0) * dt_s / 3600.0


# --------------------------------------------------------------------------- simple model
STC_IRRADIANCE_W_M2 = 1000.0


def simple_ac_power_w(
    capacity_w: npt.ArrayLike,
    ghi_w_m2: npt.ArrayLike,
    performance_ratio: npt.ArrayLike,
    ac_limit_w: npt.ArrayLike,
) -> FloatArray:
    """Foundation PV model (``pv.model: simple``): AC power [W, >= 0] from GHI.

    ``P_ac = min(C_dc · GHI / 1000 W/m² · PR, P_ac,max)`` with ``C_dc`` the DC
    capacity at standard test conditions and ``PR`` the performance ratio
    (temperature, soiling, wiring, inverter and orientation losses lumped
    together); broadcasts over systems and times.  The full pvlib chain is
    :func:`pv_ac_power_w`.
    """
    p = (
        np.asarray(capacity_w, dtype=float)
        * (np.asarray(ghi_w_m2, dtype=float) / STC_IRRADIANCE_W_M2)
        * np.asarray(performance_ratio, dtype=float)
    )
    return np.minimum(p, np.asarray(ac_limit_w, dtype=float))


# --------------------------------------------------------------------------- sites
def site_ac_power_w(
    capacity_w: FloatArray,
    unit_w_per_w: FloatArray,
    orientation: npt.NDArray[np.int64],
    ac_limit_w: FloatArray | None,
    out: FloatArray | None = None,
) -> FloatArray:
    """AC power [W] of a population of PV systems from the output of each orientation per
    DC watt (``unit_w_per_w``, AC W per W of DC capacity, the tick means the world
    computes once per orientation): ``min(C_dc · unit[orientation], P_ac,max)``.

    ``unit_w_per_w`` of one instant, ``(n_orientations,)``, gives ``(n,)``; of T instants,
    ``(T, n_orientations)``, gives ``(n, T)``.  ``ac_limit_w`` None: no system has an
    inverter limit (the same values as an all-infinite one, without the pass).  The
    engine's tick inputs and the PV forecasts controllers get both call this.
    """
    u = np.asarray(unit_w_per_w, dtype=float)
    if u.ndim == 1:
        p = np.multiply(capacity_w, u[orientation], out=out)
        return p if ac_limit_w is None else np.minimum(p, ac_limit_w, out=p)
    p = capacity_w[:, None] * u[:, orientation].T
    return p if ac_limit_w is None else np.minimum(p, ac_limit_w[:, None], out=p)
