"""HEMS model-predictive control: battery and EVs co-planned, receding horizon.

Each re-plan solves, for the homes due, the same per-site LP as the oracle
(:mod:`cps_sim.control.oracle`) over ``horizon_steps`` steps of ``step_s`` from
*now*, with forecasts instead of knowledge:

* load and PV per site from ``MpcConfig.load_forecast`` / ``pv_forecast``
  (``perfect``: the run's own values; ``noisy``: those x (1 + sigma sqrt(lead) z),
  seeded; ``None``: persistence — what the HEMS measured in the same step of the
  day before, else the value now); step 0 is the measurement now;
* import and export prices from the tariff (known ahead: TOU or day-ahead);
* every plugged-in EV with its energy now, its departure (the known trip, else the
  delegated strategy's assumption, ``strategies.common.departure_and_target``)
  and its target there; after the departure the EV is away for the rest of the
  horizon (its return is not known in advance);
* the battery from the observation's battery model spec; the stored energy left at
  the horizon end is worth the horizon's lowest import price (``terminal value``),
  and the battery keeps ``final_soc`` there.

* every heat-pump water heater (``plan_hpwh``): its tank heat per step (one mixed
  node, UA losses to the outdoor air, exact per step), COP per step from the
  forecast outdoor temperature (a coefficient: the LP stays linear), the hot-water
  draw forecast (``draw_forecast``: the units' own daily draw and hourly shape;
  noisy with the same sigma; ``None``: persistence of the draws measured the day
  before, else now), the rated output, the setpoint temperature as the top and the
  unit's reserve (+1 % of its usable range) as the comfort floor; heat left at the
  horizon end is worth the terminal value / COP there.  Its power goes out as
  ``hpwh_setpoint_w`` for the tick starting now (at a tick start) or next.

A home is re-planned every ``replan_s`` and at once when the set of its plugged-in
EVs changes (an arrival or a departure), the others keep their plans: LPs are per
site, so an arrival costs one small LP.  Between re-plans each device follows its
plan's current step.  EVs that arrived since their home's last plan (none after
the immediate re-plan) follow the delegated strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from cps_sim.control.observation import FloatArray, Observation, site_forecast
from cps_sim.control.oracle import (
    DEPARTURE,
    BatteryData,
    EvData,
    Objective,
    SiteInputs,
    TripEvents,
    solve,
)
from cps_sim.control.oracle.data import HpwhData
from cps_sim.core.bus import HPWH_AUTO, HPWH_FOLLOW

COMFORT_MARGIN = 0.01  # above the unit's reserve, share of its usable range
COLD_WATER_C = 17.0  # mains temperature of the water-heater model (models.heat_pump)

SiteSeries = Callable[[FloatArray], FloatArray]  # times_s (T,) -> (n_sites, T) [W]
PriceSeries = Callable[[FloatArray], FloatArray]  # times_s (T,) -> (T,) [JPY/kWh]
Departures = Callable[[float, Observation], tuple[FloatArray, FloatArray]]


@dataclass(frozen=True)
class MpcConfig:
    pv_forecast: SiteSeries | None
    import_price_forecast: PriceSeries
    export_price_forecast: PriceSeries
    load_forecast: SiteSeries | None = None  # None: persistence
    horizon_steps: int = 96
    step_s: float = 900.0
    replan_s: float = 3600.0
    final_soc: float = 0.3
    chunk_homes: int = 25
    plan_evs: bool = True  # co-plan the plugged-in EVs (else they enter as load now)
    forecast_name: str = "perfect"  # what the forecasts are (for stats and docs)
    plan_hpwh: bool = True  # co-plan the heat-pump water heaters (obs.extra["hpwh_*"])
    draw_forecast: Callable[[FloatArray], FloatArray] | None = None  # -> (units, T) Wh_th
    temp_forecast: Callable[[FloatArray], FloatArray] | None = None  # -> (T,) degC


@dataclass
class MpcState:
    plan_start_s: FloatArray | None = None  # per site
    next_periodic_s: float = np.inf  # the next re-plan of every home
    battery_w: FloatArray | None = None  # (n_sites, H)
    ev_w: FloatArray | None = None  # (n_evs, H)
    ev_in_plan: np.ndarray | None = None  # (n_evs,) bool
    plugged_at_plan: np.ndarray | None = None  # (n_evs,) bool
    hist: FloatArray | None = None  # (steps per day, n_sites, 2): load, PV seen
    hpwh_w: FloatArray | None = None  # (n_sites, H) water-heater plan, NaN: none
    draw_hist: FloatArray | None = None  # (steps per day, n_units) draws seen [W_th]
    hpwh_pred_c: FloatArray | None = None  # (n_sites, H) planned tank temperature, step ends
    # plan vs engine: |observed tank temperature - the previous plan's prediction| at every
    # re-plan of a home with a water heater (LP-vs-engine agreement of the tank)
    hpwh_pred_err_max_k: float = 0.0
    hpwh_pred_err_sum_k: float = 0.0
    hpwh_pred_checks: int = 0
    solves: int = 0  # periodic re-plans
    event_solves: int = 0  # re-plans of homes whose plugged-in EVs changed
    sites_planned: int = 0
    solve_time_s: float = 0.0
    replan_wall_s: list[float] = field(default_factory=list)


class HomeMpc:
    """Receding-horizon co-planning of a home group's batteries and EVs."""

    def __init__(self, cfg: MpcConfig, departures: Departures):
        self.cfg = cfg
        self.departures = departures
        self.state = MpcState()

    # ------------------------------------------------------------------ forecasts
    def _hpwh(self, obs: Observation) -> dict | None:
        """The water heaters of the observation, when they are planned."""
        x = obs.extra
        if not self.cfg.plan_hpwh or "hpwh_site" not in x or not np.size(x["hpwh_site"]):
            return None
        return x

    def _base_load_w(self, obs: Observation) -> FloatArray:
        """Site load without the planned water heaters' power (they are LP variables)."""
        x = self._hpwh(obs)
        if x is None:
            return obs.site_load_w
        out = obs.site_load_w.copy()
        np.subtract.at(out, x["hpwh_site"], x["hpwh_power_w"])
        return np.maximum(out, 0.0)

    def _remember(self, now_s: float, obs: Observation) -> None:
        per_day = max(1, round(86400.0 / self.cfg.step_s))
        st = self.state
        if st.hist is None:
            st.hist = np.full((per_day, obs.n_sites, 2), np.nan)
        slot = int(now_s // self.cfg.step_s) % per_day
        st.hist[slot] = np.column_stack([self._base_load_w(obs), obs.site_pv_w])
        x = self._hpwh(obs)
        if x is not None:
            if st.draw_hist is None:
                st.draw_hist = np.full((per_day, x["hpwh_site"].size), np.nan)
            st.draw_hist[slot] = x["hpwh_draw_w_th"]

    def _series(
        self,
        fc: SiteSeries | None,
        col: int,
        now_w: FloatArray,
        times: FloatArray,
        sites: np.ndarray,
    ) -> FloatArray:
        if fc is not None:
            out = site_forecast(fc, times, sites, -1)
        else:
            per_day = self.state.hist.shape[0]
            idx = (times // self.cfg.step_s).astype(np.int64) % per_day
            past = self.state.hist.take(sites, axis=1).take(idx, axis=0)[:, :, col].T
            out = np.where(np.isnan(past), now_w[sites, None], past)
        out = np.maximum(out, 0.0)
        out[:, 0] = now_w[sites]
        return out

    # ------------------------------------------------------------------ planning
    def _due(self, now_s: float, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        st, c = self.state, self.cfg
        n = obs.n_sites
        if st.plan_start_s is None:
            st.next_periodic_s = now_s + c.replan_s
            return np.arange(n), np.zeros(n, bool)
        if now_s >= st.next_periodic_s - 1e-9:  # every home, on a fixed grid
            while st.next_periodic_s <= now_s + 1e-9:
                st.next_periodic_s += c.replan_s
            periodic = np.ones(n, bool)
        else:
            periodic = now_s - st.plan_start_s >= c.horizon_steps * c.step_s - 1e-9
        changed = np.zeros(n, bool)
        if obs.n_evs and c.plan_evs:
            diff = obs.ev_plugged != st.plugged_at_plan
            changed[obs.ev_site[diff]] = True
        due = periodic | changed
        return np.flatnonzero(due), changed & ~periodic

    def _plan(
        self, now_s: float, obs: Observation, sites: np.ndarray, ev_site_w: FloatArray | None = None
    ) -> None:
        import time

        t0 = time.perf_counter()
        c, st = self.cfg, self.state
        h = c.horizon_steps
        times = now_s + c.step_s * np.arange(h)
        load = self._series(c.load_forecast, 0, self._base_load_w(obs), times, sites)
        if ev_site_w is not None:  # EVs decided by their strategy: load now
            load[:, 0] += np.maximum(ev_site_w[sites], 0.0)
        pv = self._series(c.pv_forecast, 1, obs.site_pv_w, times, sites)
        p_imp = np.asarray(c.import_price_forecast(times), float).reshape(h)
        p_exp = np.asarray(c.export_price_forecast(times), float).reshape(h)
        spec = obs.battery_spec
        if spec is not None:
            bat = BatteryData.from_spec(spec, obs.battery_energy_wh)
            final = np.clip(c.final_soc * spec.capacity_wh, spec.energy_min_wh, spec.energy_max_wh)
        else:
            bat = BatteryData.none(obs.n_sites)
            final = np.zeros(obs.n_sites)
        evs = trips = None
        ev_idx = np.empty(0, np.int64)
        if c.plan_evs and obs.n_evs:
            in_sites = np.isin(obs.ev_site, sites)
            ev_idx = np.flatnonzero(in_sites & obs.ev_plugged)
        if ev_idx.size:
            dep, target = self.departures(now_s, obs)
            cap = obs.ev_capacity_wh[ev_idx]
            e_max = (
                obs.ev_energy_max_wh if obs.ev_energy_max_wh is not None else obs.ev_capacity_wh
            )[ev_idx]
            eff = (
                obs.ev_charge_efficiency
                if obs.ev_charge_efficiency is not None
                else np.full(obs.n_evs, 0.9)
            )[ev_idx]
            taper = (
                obs.ev_energy_taper_wh if obs.ev_energy_taper_wh is not None else obs.ev_capacity_wh
            )[ev_idx]
            line = (obs.ev_taper_line_w if obs.ev_taper_line_w is not None else obs.ev_charger_w)[
                ev_idx
            ]
            local = np.searchsorted(sites, obs.ev_site[ev_idx])
            energy = obs.ev_energy_wh[ev_idx]
            evs = EvData(
                site=local.astype(np.int64),
                capacity_wh=cap,
                charger_w=obs.ev_charger_w[ev_idx],
                v2x_w=obs.ev_v2x_w[ev_idx],
                efficiency=eff,
                energy_max_wh=np.maximum(e_max, energy),
                energy_min_wh=obs.ev_soc_min[ev_idx] * cap,
                energy_wh=energy,
                target_wh=np.minimum(target[ev_idx], e_max),
                energy_taper_wh=np.minimum(taper, e_max),
                taper_line_w=line,
            )
            rel = dep[ev_idx] - now_s
            inside = np.isfinite(rel) & (rel > 0) & (rel < h * c.step_s)
            k = np.flatnonzero(inside)
            trips = TripEvents(
                ev=k.astype(np.int64),
                time_s=rel[k],
                kind=np.full(k.size, DEPARTURE, np.int8),
                trip_wh=np.zeros(k.size),
            )
        sub_bat = BatteryData(
            **{
                f: getattr(bat, f)[sites]
                for f in bat.__dataclass_fields__
                if f != "final_energy_min_wh"
            },
            final_energy_min_wh=final[sites],
        )
        inp = SiteInputs(
            tick_s=c.step_s,
            load_w=load,
            pv_w=pv,
            import_price_jpy_per_kwh=p_imp,
            export_price_jpy_per_kwh=p_exp,
            carbon_jpy_per_kwh=np.zeros(h),
            co2_g_per_kwh=np.zeros(h),
            import_limit_w=obs.site_import_limit_w[sites],
            export_limit_w=(
                np.full(sites.size, np.inf)
                if obs.site_export_limit_w is None
                else obs.site_export_limit_w[sites]
            ),
            battery=sub_bat,
            evs=evs,
            trips=trips,
        )
        self._check_prediction(now_s, obs, sites)
        hw, cop_end = self._hpwh_data(now_s, obs, sites, times)
        if hw is not None:
            inp = replace(inp, hpwh=hw)
        obj = Objective(kind="cost", terminal_value=float(np.min(p_imp)), terminal_cop=cop_end)
        sched = solve(inp, obj, chunk_sites=c.chunk_homes)
        n = obs.n_sites
        if st.plan_start_s is None:
            st.plan_start_s = np.full(n, now_s)
            st.battery_w = np.zeros((n, h))
            st.ev_w = np.zeros((obs.n_evs, h))
            st.ev_in_plan = np.zeros(obs.n_evs, bool)
            st.plugged_at_plan = obs.ev_plugged.copy()
        st.plan_start_s[sites] = now_s
        st.battery_w[sites] = np.nan_to_num(sched.battery_w)
        if hw is not None:
            if st.hpwh_w is None:
                st.hpwh_w = np.full((n, h), np.nan)
            st.hpwh_w[sites] = sched.hpwh_w
            if st.hpwh_pred_c is None:
                st.hpwh_pred_c = np.full((n, h), np.nan)
            st.hpwh_pred_c[sites] = COLD_WATER_C + sched.hpwh_stored_wh_th / np.maximum(
                hw.capacity_wh_per_k[:, None], 1e-9
            )
        if obs.n_evs:
            at = np.isin(obs.ev_site, sites)
            st.ev_in_plan[at] = False
            st.ev_in_plan[ev_idx] = True
            if ev_idx.size:
                st.ev_w[ev_idx] = sched.ev_setpoint_w
            st.plugged_at_plan[at] = obs.ev_plugged[at]
        st.sites_planned += sites.size
        st.solve_time_s += sched.solve_time_s
        st.replan_wall_s.append(time.perf_counter() - t0)

    def _check_prediction(self, now_s: float, obs: Observation, sites: np.ndarray) -> None:
        """Compare each planned tank's temperature now with its plan's prediction for the
        end of the step that ended now (only at step ends, i.e. not for event re-plans
        inside a step)."""
        st, c = self.state, self.cfg
        x = self._hpwh(obs)
        if x is None or st.hpwh_pred_c is None:
            return
        unit_site = x["hpwh_site"]
        units = np.flatnonzero(np.isin(unit_site, sites))
        if not units.size:
            return
        s = unit_site[units]
        steps = (now_s - st.plan_start_s[s]) / c.step_s
        k = np.round(steps).astype(np.int64)
        ok = (np.abs(steps - k) < 1e-9) & (k >= 1) & (k <= c.horizon_steps)
        if not ok.any():
            return
        pred = st.hpwh_pred_c[s[ok], k[ok] - 1]
        err = np.abs(x["hpwh_tank_temp_c"][units[ok]] - pred)
        err = err[np.isfinite(err)]
        if err.size:
            st.hpwh_pred_err_max_k = max(st.hpwh_pred_err_max_k, float(err.max()))
            st.hpwh_pred_err_sum_k += float(err.sum())
            st.hpwh_pred_checks += int(err.size)

    def _hpwh_data(
        self, now_s: float, obs: Observation, sites: np.ndarray, times: FloatArray
    ) -> tuple[HpwhData | None, float]:
        """The planned sites' water heaters for the LP, and the COP at the horizon end."""
        x = self._hpwh(obs)
        if x is None:
            return None, 0.0
        c = self.cfg
        unit_site = x["hpwh_site"]
        units = np.flatnonzero(np.isin(unit_site, sites))
        if not units.size:
            return None, 0.0
        from cps_sim.models import heat_pump as hp

        spec = x["hpwh_spec"]
        h = times.size
        step_h = c.step_s / 3600.0
        amb = (
            np.asarray(c.temp_forecast(times), float).reshape(h)
            if c.temp_forecast is not None
            else np.full(h, 15.0)
        )
        if c.draw_forecast is not None:
            draw = np.asarray(c.draw_forecast(times), float).reshape(-1, h)
        else:  # persistence: the same step the day before, else the draw now
            st = self.state
            per_day = st.draw_hist.shape[0]
            idx = (times // c.step_s).astype(np.int64) % per_day
            past = st.draw_hist[idx].T
            draw = np.where(np.isnan(past), x["hpwh_draw_w_th"][:, None], past) * step_h
        draw = np.maximum(draw, 0.0)
        draw[:, 0] = x["hpwh_draw_w_th"] * step_h  # step 0: measured
        local = np.searchsorted(sites, unit_site[units])
        n = sites.size

        def per_site(v: FloatArray, fill: float = 0.0) -> FloatArray:
            out = np.full((n, *np.shape(v)[1:]), fill)
            out[local] = v
            return out

        cap = spec.capacity_wh_per_k[units]
        lo, top = spec.min_usable_c[units], spec.setpoint_c[units]
        comfort_c = lo + (float(x["hpwh_reserve_fraction"]) + COMFORT_MARGIN) * (top - lo)
        cop = hp.cop(spec, amb[:, None], COLD_WATER_C).T[units]  # (units, H)
        has = np.zeros(n, bool)
        has[local] = True
        data = HpwhData(
            has=has,
            capacity_wh_per_k=per_site(cap, 1.0),
            ua_w_per_k=per_site(spec.tank_ua_w_per_k[units]),
            heat_max_w=per_site(spec.heat_output_max_w[units]),
            stored_wh_th=per_site(cap * (x["hpwh_tank_temp_c"][units] - COLD_WATER_C)),
            floor_wh_th=per_site(cap * np.maximum(lo - COLD_WATER_C, 0.0)),
            comfort_wh_th=per_site(cap * (comfort_c - COLD_WATER_C)),
            max_wh_th=per_site(cap * (top - COLD_WATER_C)),
            ambient_c=amb,
            cold_water_c=COLD_WATER_C,
            cop=per_site(cop, 1.0),
            draw_wh_th=per_site(draw[units]),
        )
        return data, float(np.mean(cop[:, -1]))

    def device_setpoints(self, now_s: float, obs: Observation) -> dict[str, FloatArray]:
        """``hpwh_setpoint_w``/``hpwh_mode`` per site from the plans (empty without water
        heaters in a plan): the plan's value for the tick that starts now (a setpoint
        applied at a tick start re-decides that tick) or next (applied mid-tick, it takes
        effect at the next tick)."""
        st, c = self.state, self.cfg
        if st.hpwh_w is None or self._hpwh(obs) is None:
            return {}
        tick = float(obs.tick_s)
        at_start = abs(now_s / tick - round(now_s / tick)) < 1e-9
        t_send = now_s if at_start else (np.floor(now_s / tick) + 1.0) * tick
        k = np.clip(
            ((t_send - st.plan_start_s) // c.step_s).astype(np.int64), 0, c.horizon_steps - 1
        )
        w = st.hpwh_w[np.arange(obs.n_sites), k]
        planned = np.isfinite(w)
        return {
            "hpwh_setpoint_w": np.where(planned, np.maximum(w, 0.0), 0.0),
            "hpwh_mode": np.where(planned, HPWH_FOLLOW, HPWH_AUTO),
        }

    # ------------------------------------------------------------------ decide
    def step(
        self,
        now_s: float,
        obs: Observation,
        ev_fallback_w: FloatArray | None,
        ev_site_w: FloatArray | None = None,
    ) -> tuple[FloatArray, FloatArray | None]:
        """(battery set-point per site, EV set-points or None when EVs are not planned).

        ``ev_fallback_w``: the delegated strategy's EV set-points (for EVs not in a plan);
        ``ev_site_w``: their power per site, load in step 0 when EVs are not planned."""
        self._remember(now_s, obs)
        due, by_event = self._due(now_s, obs)
        if due.size:
            extra = None if self.cfg.plan_evs or ev_site_w is None else ev_site_w
            self._plan(now_s, obs, due, extra)
            if by_event[due].all():
                self.state.event_solves += 1
            else:
                self.state.solves += 1
        st, c = self.state, self.cfg
        k = np.minimum(
            ((now_s - st.plan_start_s) // c.step_s).astype(np.int64), c.horizon_steps - 1
        )
        bat = st.battery_w[np.arange(obs.n_sites), k]
        if not (c.plan_evs and obs.n_evs):
            return bat, None
        ev = st.ev_w[np.arange(obs.n_evs), k[obs.ev_site]]
        if ev_fallback_w is not None:
            ev = np.where(st.ev_in_plan, ev, ev_fallback_w)
        return bat, np.where(obs.ev_plugged, ev, 0.0)
