"""Emulated devices that follow the weather and daily profiles: PV, loads, heat pumps.

Part of :mod:`cps_sim.bridge.emulator_models` (same conventions): thin shells around
:func:`cps_sim.models.solar.pv_ac_power_w` on :func:`cps_sim.models.weather.synthetic_weather`,
:func:`cps_sim.models.loads.household_power_w` and :func:`cps_sim.models.heat_pump.step`.
Per-minute profiles are generated one simulated day at a time (the next day in a helper
thread), and integrated exactly between any two instants.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from cps_sim.bridge.emulator_models import DAY_S, GRID_S, Commands, DeviceFleet, FloatArray, _u
from cps_sim.models import heat_pump as hp
from cps_sim.models.loads import household_power_w
from cps_sim.models.solar import pv_ac_power_w
from cps_sim.models.weather import TOKYO, synthetic_weather


# --------------------------------------------------------------------------- profiles by day
class _DailyProfile:
    """Cumulative energy [Wh] of a per-minute power profile, one simulated day at a time.

    Days are built when first needed, or ahead with :meth:`warm` (the fleet warms the days
    its run will cover before it connects, so the device loop does not stall on them; a
    run without a duration stalls once per simulated day, for about a second per thousand
    household loads).  Each day draws from its own seeded generator: same seed, same
    profile, in any order.  (No helper thread: the model libraries silence their own
    deprecation warnings with ``warnings.catch_warnings``, which is not thread-safe.)
    """

    def __init__(self, make_day):
        self._make_day = make_day  # day index -> (n_minutes, n) power [W]
        self._days: dict[int, np.ndarray] = {}

    def warm(self, days: int = 1) -> None:
        """Build days ``0 .. days-1`` now."""
        for d in range(days):
            self._cum(d)

    def _cum(self, day: int) -> np.ndarray:
        got = self._days.get(day)
        if got is None:
            p = self._make_day(day)
            got = np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p * GRID_S / 3600.0, axis=0)])
            for old in [d for d in self._days if d < day - 1]:
                del self._days[old]
            self._days[day] = got
        return got

    def energy_wh(self, t_s: float) -> FloatArray:
        """Energy from the start of day ``t_s // 86400`` to ``t_s`` (exact piecewise)."""
        day = int(t_s // DAY_S)
        x = (t_s - day * DAY_S) / GRID_S
        k = min(int(x), int(DAY_S / GRID_S) - 1)
        cum = self._cum(day)
        return cum[k] + (cum[k + 1] - cum[k]) * (x - k)

    def between_wh(self, t0: float, t1: float) -> FloatArray:
        d0, d1 = int(t0 // DAY_S), int(t1 // DAY_S)
        if d0 == d1:
            return self.energy_wh(t1) - self.energy_wh(t0)
        total = self._cum(d0)[-1] - self.energy_wh(t0)
        for d in range(d0 + 1, d1):
            total = total + self._cum(d)[-1]
        return total + self.energy_wh(t1)

    def value_at(self, t_s: float) -> FloatArray:
        day = int(t_s // DAY_S)
        k = min(int((t_s - day * DAY_S) / GRID_S), int(DAY_S / GRID_S) - 1)
        cum = self._cum(day)
        return (cum[k + 1] - cum[k]) * 3600.0 / GRID_S


def _day_index(start: pd.Timestamp, day: int) -> pd.DatetimeIndex:
    return pd.date_range(
        start + pd.Timedelta(days=day), periods=int(DAY_S / GRID_S), freq=f"{int(GRID_S)}s"
    )


def _weather_day(start: pd.Timestamp, day: int, seed: int, sky: str) -> pd.DataFrame:
    rng = np.random.default_rng([seed, day])
    kw = {}
    if sky == "clear":  # the synthetic model pinned to (almost) clear sky
        kw = dict(
            monthly_clear_sky_index=(0.999,) * 12,
            clear_sky_index_concentration=1e6,
            intraday_std=0.0,
        )
    elif sky != "synthetic":
        raise ValueError(f"weather must be synthetic or clear, got {sky!r}")
    return synthetic_weather(
        rng,
        start=start + pd.Timedelta(days=day),
        periods=int(DAY_S / GRID_S),
        freq=f"{int(GRID_S)}s",
        latitude_deg=TOKYO[0],
        longitude_deg=TOKYO[1],
        tz=TOKYO[2],
        **kw,
    )


# --------------------------------------------------------------------------- PV
class PVFleet(DeviceFleet):
    """PV inverters (3-6 kWp, tilt 20/30 deg, azimuth SE/S/SW, AC limit 0.9 x DC;
    assumptions) in Tokyo weather.  Command ``power_w`` <= 0 caps generation at ``-power_w``
    (load convention); ``on: false`` stops it.  Fail-safe: no cap (MPPT)."""

    kind = "pv"
    accepts = ("power_w", "on", "mode")

    def __init__(self, n, rng, start, rated, weather: str = "synthetic"):
        super().__init__(n, rng, start, rated)
        self.dc_w = _u(rng, 3000, 6000, n)
        self.ac_w = 0.9 * self.dc_w
        self.tilt = rng.choice([20.0, 30.0], n)
        self.azimuth = rng.choice([135.0, 180.0, 225.0], n)
        seed = int(rng.integers(2**31))
        self.available = _DailyProfile(
            lambda d: pv_ac_power_w(
                _weather_day(start, d, seed, weather), self.tilt, self.azimuth, self.dc_w, self.ac_w
            )
        )
        self.rated = replace(rated, power_w_min=-float(self.ac_w.max()), power_w_max=0.0)

    def profiles(self) -> list:
        return [self.available]

    def _exchange_wh(self, t_s, dt_s, cmd):
        avail_wh = self.available.between_wh(t_s, t_s + dt_s)
        cap_wh = np.where(
            cmd.active & ~np.isnan(cmd.power_w),
            np.maximum(-cmd.power_w, 0.0) * dt_s / 3600.0,
            np.inf,
        )
        cap_wh = np.where(cmd.active & (cmd.on == 0), 0.0, cap_wh)
        return -np.minimum(avail_wh, cap_wh)

    def signals(self):
        return {"status": np.where(self.last_power_w < -1.0, "producing", "idle")}


# --------------------------------------------------------------------------- loads
class LoadFleet(DeviceFleet):
    """Household consumption (the Japanese shape of :mod:`cps_sim.models.loads`) behind a
    meter or a smart plug.  A plug's relay follows ``on`` (or ``power_w`` > 0); fail-safe:
    relay on.  Annual energy per device: meter 3,000-5,500 kWh, plug 300-1,500 kWh
    (assumptions)."""

    accepts = ("on", "power_w", "mode")

    def __init__(self, n, rng, start, rated, kind: str = "plug"):
        super().__init__(n, rng, start, rated)
        self.kind = kind
        if kind == "meter":
            self.accepts = ()
        lo, hi = (3000.0, 5500.0) if kind == "meter" else (300.0, 1500.0)
        annual = _u(rng, lo, hi, n)
        seed = int(rng.integers(2**31))

        def day(d: int) -> np.ndarray:
            p = household_power_w(
                _day_index(start, d),
                annual,
                np.random.default_rng([seed, d]),
                profile="japan",
                tz=str(start.tz),
            )
            return np.minimum(p, rated.power_w_max)

        self.load = _DailyProfile(day)

    def profiles(self) -> list:
        return [self.load]

    def relay(self, cmd: Commands) -> np.ndarray:
        on = np.where(cmd.on >= 0, cmd.on == 1, ~(cmd.power_w <= 0))
        return np.where(cmd.active, on, True)

    def _exchange_wh(self, t_s, dt_s, cmd):
        wh = self.load.between_wh(t_s, t_s + dt_s)
        return np.where(self.relay(cmd), wh, 0.0)

    def on_state(self, cmd):
        return self.relay(cmd)


# --------------------------------------------------------------------------- heat pump
class HeatPumpFleet(DeviceFleet):
    """EcoCute-like water heaters (:func:`cps_sim.models.heat_pump.ecocute_spec`), outdoor
    air from the synthetic weather, the Japanese hot-water draw.  Command: compressor power
    0..rated (1.5 kW, assumption) or on/off.  Fail-safe / ``mode: auto``: the unit's own
    thermostat (heat at full power below setpoint - 10 K until the setpoint)."""

    kind = "heat_pump"
    accepts = ("power_w", "on", "mode")

    def __init__(self, n, rng, start, rated, weather: str = "synthetic"):
        super().__init__(n, rng, start, rated)
        self.spec = hp.ecocute_spec(n)
        self.state = hp.initial_state(self.spec, _u(rng, 45.0, 62.0, n))
        self.heating = np.zeros(n, bool)
        seed = int(rng.integers(2**31))
        self.air = _DailyProfile(  # outdoor temperature per minute (as a one-column profile)
            lambda d: _weather_day(start, d, seed, weather)["temp_air_c"].to_numpy()[:, None]
        )
        midnight = start.normalize()
        self.offset_s = (start - midnight).total_seconds()

    def profiles(self) -> list:
        return [self.air]

    def ambient_c(self, t_s: float) -> float:
        return float(self.air.value_at(t_s)[0])

    def _exchange_wh(self, t_s, dt_s, cmd):
        pmax = self.rated.power_w_max
        t = self.state.tank_temp_c
        self.heating = np.where(
            t < self.spec.setpoint_c - 10.0,
            True,
            np.where(t >= self.spec.setpoint_c - 0.05, False, self.heating),
        )
        own = np.where(self.heating, pmax, 0.0)
        req = np.where(
            ~np.isnan(cmd.power_w),
            np.clip(cmd.power_w, 0.0, pmax),
            np.where(cmd.on == 1, pmax, own),
        )
        req = np.where(cmd.on == 0, 0.0, req)
        req = np.where(cmd.active, req, own)
        draw = hp.draw_energy_wh_th(self.offset_s + t_s, dt_s) * np.ones(self.n)
        self.state, flows = hp.step(self.state, self.spec, req, dt_s, self.ambient_c(t_s), draw)
        return flows.electric_in_wh

    def signals(self):
        return {
            "temperature_c": self.state.tank_temp_c.copy(),
            "status": np.where(self.last_power_w > 1.0, "heating", "idle"),
        }
