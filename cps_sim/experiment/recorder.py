"""Recorder: per-tick aggregates into preallocated arrays, events, KPIs accumulated in the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from cps_sim.core.units import SECONDS_PER_HOUR
from cps_sim.world.group import ARRIVAL, FLOWS
from cps_sim.world.world import TickResult, World

# timeseries.parquet columns (tick averages [W] unless named otherwise): one per flow of
# the registered populations (world.populations.FLOWS), the long-standing ones first
_FIRST = ("pv_generation_wh", "pv_potential_wh", "curtailment_wh", "load_wh", "ev_charging_wh",
          "battery_charge_wh", "battery_discharge_wh", "grid_import_wh", "grid_export_wh",
          "unserved_wh", "ev_driving_wh")
POWER_COLUMNS = tuple((f.removesuffix("_wh") + "_w", f)
                      for f in (*[f for f in _FIRST if f in FLOWS],
                                *[f for f in FLOWS if f not in _FIRST]))

SIGN_NOTE = ("Rows are settlement ticks [time, time + tick_s). Columns ending in _w are tick-"
             "average powers in W, each named for the direction it carries and so >= 0; "
             "grid_import_w is power drawn from the grid, grid_export_w power fed into it "
             "(measured_correction_w, a correction of stored energy from measurements of "
             "devices bound to hardware, is signed: + added to the stores). stored_wh is the "
             "energy in every store at the end of the tick. Inside the simulator power into "
             "a device is positive.")


class Recorder:
    def __init__(self, world: World):
        self.world = world
        n = world.n_ticks
        self.flows = np.zeros((n, len(FLOWS)))
        self.groups = {g.name: np.zeros((n, len(FLOWS))) for g in world.groups}
        self.peak_site_import_wh = np.zeros(n)
        self.battery_soc = np.full(n, np.nan)
        self.ev_soc = np.full(n, np.nan)
        self.ev_plugged = np.zeros(n, dtype=np.int64)
        self.residual_wh = np.zeros(n)
        self.stored_wh = np.full(n, np.nan)
        rs = world.record_sites
        self.site_net_wh = np.zeros((n, rs.size)) if rs.size else None
        self.ticks_done = 0
        self.extra: dict[str, np.ndarray] = {}

    def on_tick(self, r: TickResult) -> None:
        k = r.k
        self.flows[k] = [r.flows_wh[f] for f in FLOWS]
        for name, f in r.by_group.items():
            self.groups[name][k] = f
        self.peak_site_import_wh[k] = r.peak_site_import_wh
        self.battery_soc[k] = r.battery_soc_mean
        self.ev_soc[k] = r.ev_soc_mean
        self.ev_plugged[k] = r.ev_plugged
        self.residual_wh[k] = r.residual_wh
        self.stored_wh[k] = r.stored_wh
        if self.site_net_wh is not None:
            self.site_net_wh[k] = r.site_net_wh
        if r.extra:
            for name, v in r.extra.items():
                col = self.extra.get(name)
                if col is None:
                    col = self.extra[name] = np.full(self.world.n_ticks, np.nan)
                col[k] = v
        self.ticks_done = k + 1

    # ------------------------------------------------------------------ tables
    def _times(self) -> pa.Array:
        w = self.world
        t = np.arange(self.ticks_done) * w.tick_s
        idx = w.clock.utc_index(t)
        return pa.array(idx.as_unit("us"), type=pa.timestamp("us", tz="UTC"))

    def timeseries(self) -> pa.Table:
        n = self.ticks_done
        w = self.world
        to_w = SECONDS_PER_HOUR / w.tick_s
        ix = {f: i for i, f in enumerate(FLOWS)}
        cols: dict[str, pa.Array] = {"time": self._times()}
        for col, flow in POWER_COLUMNS:
            cols[col] = pa.array(self.flows[:n, ix[flow]] * to_w)
        cols["losses_w"] = pa.array((self.flows[:n, ix["battery_loss_wh"]]
                                     + self.flows[:n, ix["ev_loss_wh"]]) * to_w)
        cols["peak_site_import_w"] = pa.array(self.peak_site_import_wh[:n] * to_w)
        cols["battery_soc_mean"] = pa.array(self.battery_soc[:n])
        cols["ev_soc_mean"] = pa.array(self.ev_soc[:n])
        cols["ev_plugged"] = pa.array(self.ev_plugged[:n])
        cols["irradiance_w_m2"] = pa.array(w.irradiance_w_m2[:n])
        cols["import_price_jpy_per_kwh"] = pa.array(w.import_price_jpy_per_kwh[:n])
        cols["export_price_jpy_per_kwh"] = pa.array(w.export_price_jpy_per_kwh[:n])
        cols["carbon_price_jpy_per_t"] = pa.array(w.carbon_price_jpy_per_t[:n])
        cols["balance_residual_wh"] = pa.array(self.residual_wh[:n])
        cols["stored_wh"] = pa.array(self.stored_wh[:n])  # in every store at the tick's end
        for name in sorted(self.extra):
            cols[name] = pa.array(self.extra[name][:n])
        return pa.table(cols)

    def timeseries_by_group(self) -> pa.Table:
        n = self.ticks_done
        to_w = SECONDS_PER_HOUR / self.world.tick_s
        ix = {f: i for i, f in enumerate(FLOWS)}
        times = self._times()
        parts = []
        for name, arr in self.groups.items():
            cols = {"time": times, "group": pa.array([name] * n, type=pa.string())}
            for col, flow in POWER_COLUMNS:
                cols[col] = pa.array(arr[:n, ix[flow]] * to_w)
            parts.append(pa.table(cols))
        return pa.concat_tables(parts) if parts else pa.table({})

    def sites(self) -> pa.Table | None:
        if self.site_net_wh is None:
            return None
        n = self.ticks_done
        to_w = SECONDS_PER_HOUR / self.world.tick_s
        cols = {"time": self._times()}
        for j, s in enumerate(self.world.record_sites.tolist()):
            cols[f"site_{s}_net_import_w"] = pa.array(self.site_net_wh[:n, j] * to_w)
        return pa.table(cols)

    def events(self) -> pa.Table:
        parts = [g.log.columns() for g in self.world.groups]
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        order = np.lexsort((cols["kind"], cols["ev_id"], cols["time_s"]))
        cols = {k: v[order] for k, v in cols.items()}
        idx = self.world.clock.utc_index(cols["time_s"])
        kind = np.where(cols["kind"] == ARRIVAL, "arrival", "departure")
        return pa.table({
            "time": pa.array(idx.as_unit("us"), type=pa.timestamp("us", tz="UTC")),
            "time_s": pa.array(cols["time_s"]),
            "kind": pa.array(kind.tolist(), type=pa.string()),
            "ev_id": pa.array(cols["ev_id"]),
            "site": pa.array(cols["site"]),
            "soc": pa.array(cols["soc"]),
            "trip_energy_wh": pa.array(cols["energy_wh"]),
            "unmet_wh": pa.array(cols["unmet_wh"]),
        })

    # ------------------------------------------------------------------ KPIs
    def kpis(self, events: pa.Table) -> dict[str, float]:
        w = self.world
        sc = w.scenario
        n = self.ticks_done
        tot = {f: float(self.flows[:n, i].sum()) for i, f in enumerate(FLOWS)}
        kwh = {k.removesuffix("_wh") + "_kwh": v / 1000.0 for k, v in tot.items()}
        pv = tot["pv_generation_wh"]
        consumption = tot["load_wh"] + tot["ev_charging_wh"] + tot["battery_loss_wh"]
        imp = tot["grid_import_wh"]
        to_kw = SECONDS_PER_HOUR / w.tick_s / 1000.0
        import_kw = self.flows[:n, FLOWS.index("grid_import_wh")] * to_kw
        imp_k = self.flows[:n, FLOWS.index("grid_import_wh")]
        exp_k = self.flows[:n, FLOWS.index("grid_export_wh")]
        intensity = self.extra.get("system_co2_g_per_kwh")
        if intensity is None:
            intensity = np.full(n, sc.emissions.grid_co2_g_per_kwh)
        # per tick: imported energy × the grid's CO2 intensity (the system layer's when present)
        co2_kg_k = imp_k * np.nan_to_num(intensity[:n]) / 1e6
        energy_cost = float(imp_k @ w.import_price_jpy_per_kwh[:n]
                            - exp_k @ w.export_price_jpy_per_kwh[:n]) / 1000.0
        co2_kg = float(co2_kg_k.sum())
        carbon_cost = float(co2_kg_k @ w.carbon_price_jpy_per_t[:n]) / 1000.0
        ev = events.to_pandas() if events.num_rows else pd.DataFrame(
            columns=["kind", "soc", "unmet_wh"])
        dep = ev[ev["kind"] == "departure"]
        stored_final = w.stored_wh()
        out: dict[str, float] = {
            **kwh,
            # share of PV used on site; per tick, export beyond that tick's PV (V2G at night,
            # forced battery discharge) is not PV
            "self_consumption": (pv - float(np.minimum(
                exp_k, self.flows[:n, FLOWS.index("pv_generation_wh")]).sum())) / pv
            if pv > 0 else float("nan"),
            "self_sufficiency": (consumption - imp) / consumption if consumption > 0
            else float("nan"),
            "peak_import_kw": float(import_kw.max()) if n else 0.0,
            "peak_site_import_kw": float(self.peak_site_import_wh[:n].max() * to_kw) if n
            else 0.0,
            "cost_jpy": energy_cost + carbon_cost,
            "energy_cost_jpy": energy_cost,
            "carbon_cost_jpy": carbon_cost,
            "co2_kg": co2_kg,
            "ev_departures": float(len(dep)),
            "ev_unmet_at_departure_kwh": float(dep["unmet_wh"].sum()) / 1000.0,
            "ev_departures_below_target": float((dep["unmet_wh"] > 1e-6).sum()),
            "ev_soc_at_departure_mean": float(dep["soc"].mean()) if len(dep) else float("nan"),
            "stored_initial_kwh": w.ledger.stored_initial_wh / 1000.0,
            "stored_final_kwh": stored_final / 1000.0,
            "balance_residual_wh": w.ledger.run_residual_wh(stored_final),
            "balance_max_tick_residual_wh": w.ledger.max_abs_tick_residual_wh,
            "sites": float(sum(g.n for g in w.groups)),
            "evs": float(sum(g.evs.n for g in w.groups if g.evs is not None)),
            "ticks": float(n),
        }
        for hook in w.tick_hooks:
            out.update(hook.kpis())
        aged = [g for g in w.groups if g.battery_ageing is not None]
        if aged:
            soh = np.concatenate([g.battery_ageing.state_of_health(g) for g in aged])
            if soh.size:
                out["battery_soh_mean"] = float(soh.mean())
                out["battery_soh_min"] = float(soh.min())
        for key in dict.fromkeys(p.key for g in w.groups for p in g.populations):
            having = [g for g in w.groups if key in g.by_key]
            for g in having:  # KPIs of device populations (prefixed when in several groups)
                out.update(g.by_key[key].kpis("" if len(having) == 1 else f"{g.name}."))
        return out
