"""Recorder: per-tick aggregates into preallocated arrays, the result tables, and the KPIs
computed from those tables (:mod:`cps_sim.experiment.kpis`).

Ticks of a warm-up (``scenario.warmup_days``) run but are not recorded: the tables and
the KPIs start where the warm-up ends, and times in seconds (``time_s`` of the events,
``start_s`` of the reports) count from there.

The EV events are not held: once per simulated day (:attr:`Recorder.flush_every_s`) the
events whose times are final leave the site groups' logs for ``events.parquet`` (or an
in-memory file), see :mod:`cps_sim.experiment.event_stream`; :meth:`Recorder.events`
reads them back.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa

from cps_sim.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR
from cps_sim.experiment.columns import GROUP_COLUMNS, SIGN_NOTE, SMART_METER_COLUMNS, annotate
from cps_sim.experiment.event_stream import EventStream, claim_sink
from cps_sim.experiment.kpis import META, RunTables, compute_kpis
from cps_sim.world.group import FLOWS
from cps_sim.world.populations import SINKS, SOURCES
from cps_sim.world.world import TickResult, World

__all__ = ["POWER_COLUMNS", "SIGN_NOTE", "Recorder"]

# timeseries.parquet columns (tick averages [W] unless named otherwise): one per flow of
# the registered populations (world.populations.FLOWS), the long-standing ones first
_FIRST = (
    "pv_generation_wh",
    "pv_potential_wh",
    "curtailment_wh",
    "load_wh",
    "ev_charging_wh",
    "battery_charge_wh",
    "battery_discharge_wh",
    "grid_import_wh",
    "grid_export_wh",
    "unserved_wh",
    "ev_driving_wh",
)
POWER_COLUMNS = tuple(
    (f.removesuffix("_wh") + "_w", f)
    for f in (*[f for f in _FIRST if f in FLOWS], *[f for f in FLOWS if f not in _FIRST])
)
# report tables: columns holding simulation times [s] (shifted to the counted period)
_TIME_S = ("start_s", "end_s", "slot_start_s", "t_end_s")


class Recorder:
    """The tables of one run.  ``flush_every_s``: how often (in simulated time, at the end
    of the tick that reaches it) the final EV events are written out of the logs."""

    def __init__(self, world: World, flush_every_s: float = SECONDS_PER_DAY):
        self.world = world
        self.k0 = int(getattr(world, "warmup_ticks", 0))  # ticks of the warm-up
        self.t0_s = self.k0 * world.tick_s
        n = max(world.n_ticks - self.k0, 0)
        self.flows = np.zeros((n, len(FLOWS)))
        self.groups = {g.name: np.zeros((n, len(FLOWS))) for g in world.groups}
        self.group_stored_wh = {g.name: np.full(n, np.nan) for g in world.groups}
        self.group_extra: dict[str, dict[str, np.ndarray]] = {g.name: {} for g in world.groups}
        self.peak_site_import_wh = np.zeros(n)
        self.battery_soc = np.full(n, np.nan)
        self.ev_soc = np.full(n, np.nan)
        self.ev_plugged = np.zeros(n, dtype=np.int64)
        self.residual_wh = np.zeros(n)
        self.stored_wh = np.full(n, np.nan)
        rs = world.record_sites
        self.site_net_wh = np.zeros((n, rs.size)) if rs.size else None
        self.ticks_done = 0  # rows recorded (ticks after the warm-up)
        self.extra: dict[str, np.ndarray] = {}
        # energy in every store where the counted period starts
        self.stored_initial_wh = world.ledger.stored_initial_wh
        # the same per site group (closes each group's books from its first row)
        self.group_stored_initial_wh = {g.name: g.stored_wh() for g in world.groups}
        # the EV events: into the results folder's events.parquet when run_scenario offers
        # it (event_stream.stream_events), else into memory
        self.flush_every_s = float(flush_every_s)
        self.event_stream = EventStream(world.clock, self.t0_s, claim_sink())

    def on_tick(self, r: TickResult) -> None:
        every = self.flush_every_s
        if r.t_end_s // every > (r.t_end_s - self.world.tick_s) // every:
            # the tick just settled at t_end_s: every event before it is logged, every
            # later one will be at or after it (event_stream's docstring)
            self.event_stream.flush(self._logs(), r.t_end_s)
        if r.k < self.k0:  # warm-up: runs, not recorded
            self.stored_initial_wh = r.stored_wh
            self.group_stored_initial_wh.update(r.group_stored_wh or {})
            return
        k = r.k - self.k0
        n = self.flows.shape[0]
        self.flows[k] = r.flows if r.flows is not None else [r.flows_wh[f] for f in FLOWS]
        for name, f in r.by_group.items():
            self.groups[name][k] = f
        for name, v in (r.group_stored_wh or {}).items():
            self.group_stored_wh[name][k] = v
        for name, cols in (r.group_columns or {}).items():
            store = self.group_extra[name]
            for c, v in cols.items():
                if c not in store:
                    store[c] = np.full(n, np.nan)
                store[c][k] = v
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
                    col = self.extra[name] = np.full(n, np.nan)
                col[k] = v
        self.ticks_done = k + 1

    # ------------------------------------------------------------------ tables
    def _times(self) -> pa.Array:
        w = self.world
        t = self.t0_s + np.arange(self.ticks_done) * w.tick_s
        idx = w.clock.utc_index(t)
        return pa.array(idx.as_unit("us"), type=pa.timestamp("us", tz="UTC"))

    def _grid_co2(self, n: int) -> np.ndarray:
        """CO2 intensity of the imports per tick: the system layer's, else the scenario's."""
        sys = self.extra.get("system_co2_g_per_kwh")
        if sys is not None:
            return np.nan_to_num(sys[:n])
        return np.full(n, float(self.world.scenario.emissions.grid_co2_g_per_kwh))

    def timeseries(self) -> pa.Table:
        n = self.ticks_done
        w = self.world
        to_w = SECONDS_PER_HOUR / w.tick_s
        ix = {f: i for i, f in enumerate(FLOWS)}
        s = slice(self.k0, self.k0 + n)
        cols: dict[str, pa.Array] = {"time": self._times()}
        for col, flow in POWER_COLUMNS:
            cols[col] = pa.array(self.flows[:n, ix[flow]] * to_w)
        cols["losses_w"] = pa.array(
            (self.flows[:n, ix["battery_loss_wh"]] + self.flows[:n, ix["ev_loss_wh"]]) * to_w
        )
        cols["peak_site_import_w"] = pa.array(self.peak_site_import_wh[:n] * to_w)
        cols["battery_soc_mean"] = pa.array(self.battery_soc[:n])
        cols["ev_soc_mean"] = pa.array(self.ev_soc[:n])
        cols["ev_plugged"] = pa.array(self.ev_plugged[:n])
        cols["irradiance_w_m2"] = pa.array(np.asarray(w.irradiance_w_m2)[s])
        cols["import_price_jpy_per_kwh"] = pa.array(w.import_price_jpy_per_kwh[s])
        cols["export_price_jpy_per_kwh"] = pa.array(w.export_price_jpy_per_kwh[s])
        cols["carbon_price_jpy_per_t"] = pa.array(w.carbon_price_jpy_per_t[s])
        cols["grid_co2_g_per_kwh"] = pa.array(self._grid_co2(n))
        cols["balance_residual_wh"] = pa.array(self.residual_wh[:n])
        cols["stored_wh"] = pa.array(self.stored_wh[:n])  # in every store at the tick's end
        for name in sorted(self.extra):
            cols[name] = pa.array(self.extra[name][:n])
        return annotate(pa.table(cols))

    def timeseries_by_group(self) -> pa.Table:
        n = self.ticks_done
        to_w = SECONDS_PER_HOUR / self.world.tick_s
        ix = {f: i for i, f in enumerate(FLOWS)}
        times = self._times()
        extra_names = sorted({c for cols in self.group_extra.values() for c in cols})
        parts = []
        for name, arr in self.groups.items():
            cols = {"time": times, "group": pa.array([name] * n, type=pa.string())}
            for col, flow in POWER_COLUMNS:
                cols[col] = pa.array(arr[:n, ix[flow]] * to_w)
            cols["stored_wh"] = pa.array(self.group_stored_wh[name][:n])
            for c in extra_names:
                v = self.group_extra[name].get(c)
                cols[c] = pa.array(v[:n] if v is not None else np.full(n, np.nan))
            parts.append(pa.table(cols))
        return annotate(pa.concat_tables(parts), GROUP_COLUMNS) if parts else pa.table({})

    def sites(self) -> pa.Table | None:
        if self.site_net_wh is None:
            return None
        n = self.ticks_done
        to_w = SECONDS_PER_HOUR / self.world.tick_s
        cols = {"time": self._times()}
        for j, s in enumerate(self.world.record_sites.tolist()):
            cols[f"site_{s}_net_import_w"] = pa.array(self.site_net_wh[:n, j] * to_w)
        return pa.table(cols)

    def smart_meter(self) -> pa.Table | None:
        """The smart meters' readings at every local 30-minute boundary from the start
        of the counted period (``smart_meter.parquet``), or None without meters."""
        from cps_sim.models import smart_meter as sm

        parts = []
        for g in self.world.groups:
            m = g.meter
            if m is None:
                continue
            rows = [r for r in m.readings if r[0] >= self.t0_s - 1e-6]
            if not rows:
                continue
            t = np.array([r[0] for r in rows])
            imp = np.stack([r[1] for r in rows]).astype(np.int64)  # (boundaries, sites)
            exp = np.stack([r[2] for r in rows]).astype(np.int64)
            pw = np.stack([r[3] for r in rows]).astype(np.int64)
            d_imp = np.full(imp.shape, np.nan)
            d_exp = np.full(exp.shape, np.nan)
            d_imp[1:] = sm.interval_wh(imp[1:], imp[:-1], m.spec)
            d_exp[1:] = sm.interval_wh(exp[1:], exp[:-1], m.spec)
            nb, n = imp.shape
            parts.append(
                {
                    "time_s": np.repeat(t - self.t0_s, n),
                    "group": [g.name] * (nb * n),
                    "site": np.tile(np.arange(n, dtype=np.int64) + g.site_offset, nb),
                    "import_register": imp.ravel(),
                    "export_register": exp.ravel(),
                    "import_cumulative_wh": sm.register_wh(imp, m.spec).ravel(),
                    "export_cumulative_wh": sm.register_wh(exp, m.spec).ravel(),
                    "import_interval_wh": d_imp.ravel(),
                    "export_interval_wh": d_exp.ravel(),
                    "instantaneous_power_w": pw.ravel(),
                    "resolution_wh": np.full(nb * n, m.spec.resolution_wh),
                }
            )
        if not parts:
            return None
        cols = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
        order = np.lexsort((cols["site"], cols["time_s"]))
        times = self.world.clock.utc_index(cols["time_s"][order] + self.t0_s)
        out = {"time": pa.array(times.as_unit("us"), type=pa.timestamp("us", tz="UTC"))}
        for k, v in cols.items():
            v = np.asarray(v)[order]
            out[k] = pa.array(v.tolist(), type=pa.string()) if k == "group" else pa.array(v)
        return annotate(pa.table(out), SMART_METER_COLUMNS)

    def _logs(self):
        return [g.log for g in self.world.groups]

    def finish_events(self) -> dict[str, str]:
        """End the events stream: the events still logged, the last row group and the
        footer, whose metadata is :meth:`metadata` and the facts of the results folder
        (``run_scenario``).  Returns that metadata; again, does nothing more.  No events
        are recorded after it."""
        s = self.event_stream
        if s.metadata is None:
            s.flush(self._logs(), math.inf)
            s.close({**self.metadata(), **s.facts})
        assert s.metadata is not None
        return s.metadata

    def events(self) -> pa.Table:
        """The EV departures and arrivals after the warm-up, by time, EV and kind: read
        back from what was streamed (:meth:`finish_events` ends the stream first)."""
        self.finish_events()
        return self.event_stream.read().replace_schema_metadata(None)

    def reports(self) -> dict[str, pa.Table]:
        """Per-request / per-slot / per-run reports of the tick hooks that keep them
        (``<name>_report``), without the rows of the warm-up."""
        out: dict[str, pa.Table] = {}
        for hook in self.world.tick_hooks:
            report = getattr(hook, "report", None)
            if callable(report):
                out[f"{hook.name}_report"] = self._trim(report())
        return out

    def _trim(self, rep: dict[str, np.ndarray]) -> pa.Table:
        if self.k0:
            if "tick" in rep:
                t = np.asarray(rep["tick"]) * self.world.tick_s
            else:
                key = next((c for c in ("start_s", "slot_start_s") if c in rep), None)
                t = np.asarray(rep[key]) if key is not None else None
            if t is not None:
                keep = t >= self.t0_s - 1e-9
                rep = {k: np.asarray(v)[keep] for k, v in rep.items()}
                for c in _TIME_S:
                    if c in rep:
                        rep[c] = rep[c] - self.t0_s
                if "tick" in rep:
                    rep["tick"] = rep["tick"] - self.k0
        return pa.table(rep)

    # ------------------------------------------------------------------ facts and KPIs
    def metadata(self) -> dict[str, str]:
        """Facts the KPIs need beyond the columns (Parquet schema metadata, ``cps_sim.*``)."""
        w = self.world
        facts = {
            "tick_s": repr(float(w.tick_s)),
            "warmup_s": repr(float(self.t0_s)),
            "sites": str(sum(g.n for g in w.groups)),
            "evs": str(sum(g.evs.n for g in w.groups if g.evs is not None)),
            "stored_initial_wh": repr(float(self.stored_initial_wh)),
            "stored_initial_wh_by_group": json.dumps(
                {name: float(v) for name, v in self.group_stored_initial_wh.items()}
            ),
            "device_groups": json.dumps(
                {key: [g.name for g in w.groups if key in g.by_key] for key in ("hpwh", "hvac")},
                sort_keys=True,
            ),
            "sign_convention": SIGN_NOTE,
        }
        if w.tick_hooks:  # (imported only when a run has them: they are not small)
            from cps_sim.control.vpp_runtime import VppRuntime
            from cps_sim.grid.system import SystemHook
            from cps_sim.market.balancing_group import BalancingGroupHook

            for hook in w.tick_hooks:
                if isinstance(hook, SystemHook):
                    facts["system"] = json.dumps(hook.kpi_facts(self.k0), sort_keys=True)
                elif isinstance(hook, VppRuntime):
                    facts["vpp"] = hook.name
                elif isinstance(hook, BalancingGroupHook):
                    facts["balancing_group"] = hook.name
        return {META + k: v for k, v in facts.items()}

    def tables(self, events: pa.Table | None = None) -> RunTables:
        """The result tables as they are written (what the KPIs are computed from)."""
        return RunTables(
            timeseries=self.timeseries(),
            events=events if events is not None else self.events(),
            groups=self.timeseries_by_group(),
            reports=self.reports(),
            meta=self.metadata(),
        )

    def kpis(self, events: pa.Table | None = None) -> dict[str, float]:
        out = compute_kpis(self.tables(events), FLOWS, SOURCES, SINKS)
        for hook in self.world.tick_hooks:  # wall time: measured, not in the tables
            if getattr(hook, "name", "") == "powerflow" and hasattr(hook, "call_s"):
                runs = out.get("powerflow_runs", 0.0)
                out["powerflow_wall_s_per_run"] = hook.call_s / runs if runs else 0.0
        return out
