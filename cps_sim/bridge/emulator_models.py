"""Physics of emulated devices: thin, vectorised shells around ``cps_sim.models``.

One fleet object holds N devices of one kind as numpy arrays.  ``advance(t_s, dt_s,
cmd)`` integrates ``[t_s, t_s + dt_s)`` with the commands held constant, calling the
model functions (no physics is written here):

* ``ev_charger`` - a charger with a car: arrivals and departures, trips
  (:func:`cps_sim.models.ev_physics.drive`), CC-CV charging
  (:func:`~cps_sim.models.ev_physics.step`); the command is a current limit;
* ``battery`` - a home battery (:func:`cps_sim.models.battery.exchange_wh`);
* ``pv`` - a PV inverter (:func:`cps_sim.models.solar.pv_ac_power_w` on
  :func:`cps_sim.models.weather.synthetic_weather`, synthetic or clear sky); the
  command caps generation;
* ``plug`` / ``meter`` - household load (:func:`cps_sim.models.loads.household_power_w`,
  the ``japan`` shape); a plug has a relay;
* ``heat_pump`` - an EcoCute-like heat-pump water heater
  (:func:`cps_sim.models.heat_pump.step` with the hot-water draw of
  :func:`~cps_sim.models.heat_pump.draw_energy_wh_th`).

Every fleet books the AC energy it exchanged (``energy_wh`` net, ``energy_in_wh``,
``energy_out_wh``; load convention) so that reported energy is exactly the integral
of the power the model held.  Without a valid command (none yet, expired, or
``mode: auto``) a device follows its own fail-safe behaviour (documented per kind).
Parameters not given are labelled assumptions of the device class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.bridge.profiles import Rated
from cps_sim.models import battery as bat
from cps_sim.models import ev_physics as evp
from cps_sim.models import heat_pump as hp
from cps_sim.models.loads import household_power_w
from cps_sim.models.solar import pv_ac_power_w
from cps_sim.models.weather import TOKYO, synthetic_weather

FloatArray = npt.NDArray[np.float64]
KINDS = ("ev_charger", "battery", "pv", "plug", "meter", "heat_pump")
DAY_S = 86400.0
GRID_S = 60.0  # resolution of precomputed load/PV/weather profiles


@dataclass
class Commands:
    """The command each device holds (``active`` False: its own fail-safe behaviour)."""

    active: npt.NDArray[np.bool_]
    power_w: FloatArray  # nan = not given
    current_a: FloatArray  # nan = not given
    on: npt.NDArray[np.int8]  # -1 not given, 0 off, 1 on

    @classmethod
    def none(cls, n: int) -> Commands:
        return cls(
            np.zeros(n, bool), np.full(n, np.nan), np.full(n, np.nan), np.full(n, -1, np.int8)
        )


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> FloatArray:
    return rng.uniform(lo, hi, n)


class DeviceFleet:
    """Common book-keeping; subclasses implement :meth:`_exchange_wh` and :meth:`signals`."""

    kind = "device"
    accepts: tuple[str, ...] = ()  # setpoint keys the device can follow

    def __init__(self, n: int, rng: np.random.Generator, start: pd.Timestamp, rated: Rated):
        self.n = n
        self.rng = rng
        self.start = start
        self.rated = rated
        self.energy_wh = np.zeros(n)
        self.energy_in_wh = np.zeros(n)
        self.energy_out_wh = np.zeros(n)
        self.last_power_w = np.zeros(n)

    def advance(self, t_s: float, dt_s: float, cmd: Commands) -> None:
        if dt_s <= 0:
            return
        ac_wh = self._exchange_wh(t_s, dt_s, cmd)
        self.energy_wh += ac_wh
        self.energy_in_wh += np.maximum(ac_wh, 0.0)
        self.energy_out_wh += np.maximum(-ac_wh, 0.0)
        self.last_power_w = ac_wh * 3600.0 / dt_s

    def _exchange_wh(self, t_s: float, dt_s: float, cmd: Commands) -> FloatArray:
        raise NotImplementedError

    def signals(self) -> dict[str, np.ndarray]:
        return {}

    def on_state(self, cmd: Commands) -> np.ndarray:
        """Relay/enable state reported (True unless commanded off)."""
        return ~(cmd.active & (cmd.on == 0))


# --------------------------------------------------------------------------- battery
class BatteryFleet(DeviceFleet):
    """Home batteries.  Fail-safe: 0 W (idle).  Assumptions: 10 kWh, 5 kW, 95 %/95 %,
    SoC window 10-95 %, initial SoC uniform 30-70 %."""

    kind = "battery"
    accepts = ("power_w", "on", "mode")

    def __init__(self, n, rng, start, rated, capacity_kwh: float = 10.0):
        super().__init__(n, rng, start, rated)
        cap = np.full(n, capacity_kwh * 1000.0)
        p = np.full(n, min(abs(rated.power_w_min), rated.power_w_max))
        self.spec = bat.make_spec(
            cap, p, charge_efficiency=0.95, discharge_efficiency=0.95, soc_min=0.10, soc_max=0.95
        )
        self.stored_wh = _u(rng, 0.3, 0.7, n) * cap

    def _exchange_wh(self, t_s, dt_s, cmd):
        req = np.where(cmd.active & ~np.isnan(cmd.power_w), cmd.power_w, 0.0)
        req = np.where(cmd.active & (cmd.on == 0), 0.0, req)
        req = np.clip(req, self.rated.power_w_min, self.rated.power_w_max)
        ac, _loss = bat.exchange_wh(self.spec, self.stored_wh, req * dt_s / 3600.0, dt_s)
        return ac

    def signals(self):
        return {"soc": self.stored_wh / self.spec.capacity_wh}


# --------------------------------------------------------------------------- EV charger
class EVChargerFleet(DeviceFleet):
    """Chargers with a car.  The car arrives, stays 2-10 h, leaves for 1-8 h and comes back
    after a 5-50 km trip (uniform, assumptions).  Command: a current limit (or power,
    converted at the rated voltage and phases); below ``min_current_a`` the charger pauses.
    Fail-safe: ``failsafe_current_a`` (default the minimum 6 A: the car keeps charging
    slowly, the grid never sees full load from a charger that lost its controller)."""

    kind = "ev_charger"
    accepts = ("current_a", "power_w", "on", "mode")

    def __init__(
        self,
        n,
        rng,
        start,
        rated,
        ev_model: str = "compact_40kwh",
        failsafe_current_a: float | None = None,
    ):
        super().__init__(n, rng, start, rated)
        catalog = evp.load_catalog()
        if ev_model not in catalog:
            raise ValueError(f"unknown EV model {ev_model!r}; known: {sorted(catalog)}")
        self.spec = evp.ev_spec(catalog, [ev_model] * n)
        self.va = rated.voltage_v * rated.phases
        self.failsafe_current_a = (
            rated.min_current_a if failsafe_current_a is None else failsafe_current_a
        )
        self.state = evp.initial_state(self.spec, soc=_u(rng, 0.2, 0.8, n))
        plugged = rng.random(n) < 0.5
        self.state = evp.plug_in(self.state, plugged, rated.current_a_max * self.va)
        self.next_event_s = np.where(plugged, _u(rng, 2, 10, n), _u(rng, 1, 8, n)) * 3600.0
        self.trip_km = np.zeros(n)
        self.session_wh = np.zeros(n)
        self.limit_a = np.zeros(n)
        self.arrivals = 0
        self.departures = 0

    def _events(self, t_s: float) -> None:
        due = self.next_event_s <= t_s
        if not due.any():
            return
        leaving = due & self.state.plugged
        arriving = due & ~self.state.plugged
        if leaving.any():
            self.state = evp.unplug(self.state, leaving)
            self.trip_km = np.where(leaving, _u(self.rng, 5, 50, self.n), self.trip_km)
            self.next_event_s = np.where(
                leaving, t_s + _u(self.rng, 1, 8, self.n) * 3600.0, self.next_event_s
            )
            self.departures += int(leaving.sum())
        if arriving.any():
            self.state, _ = evp.drive(self.state, self.spec, np.where(arriving, self.trip_km, 0.0))
            self.state = evp.plug_in(self.state, arriving, self.rated.current_a_max * self.va)
            self.session_wh = np.where(arriving, 0.0, self.session_wh)
            self.next_event_s = np.where(
                arriving, t_s + _u(self.rng, 2, 10, self.n) * 3600.0, self.next_event_s
            )
            self.arrivals += int(arriving.sum())

    def limit_current_a(self, cmd: Commands) -> FloatArray:
        r = self.rated
        from_power = np.maximum(cmd.power_w, 0.0) / self.va
        i = np.where(
            ~np.isnan(cmd.current_a),
            cmd.current_a,
            np.where(
                ~np.isnan(cmd.power_w),
                from_power,
                np.where(cmd.on == 1, r.current_a_max, self.failsafe_current_a),
            ),
        )
        i = np.where(cmd.active, i, self.failsafe_current_a)
        i = np.where(cmd.active & (cmd.on == 0), 0.0, i)
        i = np.clip(i, 0.0, r.current_a_max)
        return np.where(i < r.min_current_a, 0.0, i)

    def _exchange_wh(self, t_s, dt_s, cmd):
        self._events(t_s)
        self.limit_a = self.limit_current_a(cmd)
        self.state, flows = evp.step(self.state, self.spec, self.limit_a * self.va, dt_s)
        self.session_wh += flows.energy_in_wh
        return flows.energy_in_wh

    def signals(self):
        plugged = self.state.plugged
        soc = self.state.soc(self.spec)
        charging = plugged & (self.last_power_w > 1.0)
        full = plugged & (soc >= self.spec.soc_max - 1e-3)
        status = np.where(
            ~plugged,
            "idle",
            np.where(charging, "charging", np.where(full, "complete", "connected")),
        )
        return {
            "soc": soc,
            "plugged": plugged,
            "status": status,
            "current_a": self.last_power_w / self.va,
            "current_limit_a": self.limit_a,
            "session_energy_wh": self.session_wh.copy(),
        }


# --------------------------------------------------------------------------- profiles by day
class _DailyProfile:
    """Cumulative energy [Wh] of a per-minute power profile, generated one day at a time.

    The next day is computed in a helper thread while the current one is in use, so a
    long run does not stall at midnight (a household-load day for 1,000 devices takes
    seconds).  Each day draws from its own seeded generator: same seed, same profile.
    """

    _pool = None

    def __init__(self, make_day):
        self._make_day = make_day  # day index -> (n_minutes, n) power [W]
        self._days: dict[int, Any] = {}

    @classmethod
    def _executor(cls):
        if cls._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            cls._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emu-profile")
        return cls._pool

    def _build(self, day: int) -> np.ndarray:
        p = self._make_day(day)
        return np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p * GRID_S / 3600.0, axis=0)])

    def prefetch(self, day: int) -> None:
        if day not in self._days:
            self._days[day] = self._executor().submit(self._build, day)

    def _cum(self, day: int) -> np.ndarray:
        got = self._days.get(day)
        if got is None:
            got = self._days[day] = self._build(day)
        elif not isinstance(got, np.ndarray):
            got = self._days[day] = got.result()
        if day + 1 not in self._days:
            for old in [d for d in self._days if d < day - 1]:
                del self._days[old]
            self.prefetch(day + 1)
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
        self._weather: dict[int, np.ndarray] = {}
        self._seed, self._sky = seed, weather
        midnight = start.normalize()
        self.offset_s = (start - midnight).total_seconds()

    def ambient_c(self, t_s: float) -> float:
        day = int(t_s // DAY_S)
        if day not in self._weather:
            self._weather = {
                day: _weather_day(self.start, day, self._seed, self._sky)["temp_air_c"].to_numpy()
            }
        k = min(int((t_s - day * DAY_S) / GRID_S), int(DAY_S / GRID_S) - 1)
        return float(self._weather[day][k])

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


DEFAULT_RATED = {
    "ev_charger": Rated(
        power_w_min=0.0,
        power_w_max=7360.0,
        current_a_max=32.0,
        min_current_a=6.0,
        voltage_v=230.0,
        phases=1,
    ),
    "battery": Rated(power_w_min=-5000.0, power_w_max=5000.0),
    "pv": Rated(power_w_min=-6000.0, power_w_max=0.0),
    "plug": Rated(power_w_min=0.0, power_w_max=3680.0),
    "meter": Rated(power_w_min=0.0, power_w_max=12000.0),
    "heat_pump": Rated(power_w_min=0.0, power_w_max=1500.0),
}


def make_fleet(
    kind: str,
    n: int,
    rng: np.random.Generator,
    start: pd.Timestamp,
    rated: Rated | None = None,
    **options,
) -> DeviceFleet:
    """A fleet of ``n`` devices of ``kind`` (see :data:`KINDS`)."""
    r = rated or DEFAULT_RATED[kind]
    if kind == "ev_charger":
        return EVChargerFleet(n, rng, start, r, **options)
    if kind == "battery":
        return BatteryFleet(n, rng, start, r, **options)
    if kind == "pv":
        return PVFleet(n, rng, start, r, **options)
    if kind in ("plug", "meter"):
        return LoadFleet(n, rng, start, r, kind=kind)
    if kind == "heat_pump":
        return HeatPumpFleet(n, rng, start, r, **options)
    raise ValueError(f"unknown device kind {kind!r}; known: {KINDS}")
