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

``BatteryFleet`` and ``EVChargerFleet`` live here; ``PVFleet``, ``LoadFleet`` and
``HeatPumpFleet`` (driven by weather and daily profiles) in
:mod:`cps_sim.bridge.emulator_ambient`.

Every fleet books the AC energy it exchanged (``energy_wh`` net, ``energy_in_wh``,
``energy_out_wh``; load convention) so that reported energy is exactly the integral
of the power the model held.  Without a valid command (none yet, expired, or
``mode: auto``) a device follows its own fail-safe behaviour (documented per kind).
Parameters not given are labelled assumptions of the device class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.bridge.profiles import Rated
from cps_sim.models import battery as bat
from cps_sim.models import ev_physics as evp

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

    def warm(self, horizon_s: float) -> None:
        """Precompute what the first ``horizon_s`` of device time needs (profiles)."""
        days = max(1, min(7, int(np.ceil(horizon_s / DAY_S))))
        for prof in self.profiles():
            prof.warm(days)

    def profiles(self) -> list:
        return []

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
    from cps_sim.bridge.emulator_ambient import HeatPumpFleet, LoadFleet, PVFleet

    if kind == "pv":
        return PVFleet(n, rng, start, r, **options)
    if kind in ("plug", "meter"):
        return LoadFleet(n, rng, start, r, kind=kind)
    if kind == "heat_pump":
        return HeatPumpFleet(n, rng, start, r, **options)
    raise ValueError(f"unknown device kind {kind!r}; known: {KINDS}")
