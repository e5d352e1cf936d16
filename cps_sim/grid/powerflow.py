"""Optional AC power flow of a distribution feeder (pandapower), as a World tick hook.

One site group sits on the load buses of a low-voltage network bundled with pandapower
(:data:`cps_sim.scenario.powerflow_schema.NETWORKS`).  Every ``every_ticks`` ticks the
hook reads the group's per-site net import of the tick just closed
(``SiteGroup.last_site_net_wh``, set by ``take_tick``), aggregates it to the network's
loads with ``np.bincount``, and runs ``pandapower.runpp`` (Newton-Raphson, constant-PQ
loads).  Columns (``powerflow_*``) are written on the ticks where the power flow runs and
are NaN on the others; a run that does not converge is counted and its columns are NaN.

Sign: the sites' net import is load-positive, so a bus whose sites export has a negative
load.  Reactive power per site is ``|P|·tan(acos(power_factor))`` (see
:class:`~cps_sim.scenario.powerflow_schema.PowerFlowSpec`).  See ``docs/powerflow.md``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cps_sim.core.errors import CpsSimError, ScenarioError
from cps_sim.scenario.powerflow_schema import NETWORKS, PowerFlowSpec

if TYPE_CHECKING:
    from cps_sim.world.group import SiteGroup
    from cps_sim.world.world import TickResult, World

F = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

COLUMNS = (
    "powerflow_vm_min_pu",
    "powerflow_vm_max_pu",
    "powerflow_line_loading_max_percent",
    "powerflow_trafo_loading_max_percent",
    "powerflow_buses_out_of_band",
    "powerflow_losses_w",
    "powerflow_converged",
)


def _import_pandapower() -> tuple[Any, Any]:
    try:
        import pandapower
        import pandapower.networks
    except ImportError as exc:
        raise CpsSimError(
            "the 'powerflow:' block needs pandapower: pip install 'cps-sim[grid]'"
        ) from exc
    return pandapower, pandapower.networks


def load_network(name: str) -> Any:
    """Build a bundled pandapower network by its scenario name (no download)."""
    _, networks = _import_pandapower()
    try:
        return getattr(networks, NETWORKS[name])()
    except TypeError as exc:  # pandapower 3.5 fails like this under pandas 3 (it pins ~=2.3)
        import pandas

        raise CpsSimError(
            f"pandapower could not build network {name!r} ({exc}); pandapower "
            f"3.5 supports pandas ~= 2.3, this environment has pandas "
            f"{pandas.__version__}"
        ) from exc


def map_sites_to_loads(n_sites: int, load_p_mw: F, mapping: str) -> IntArray:
    """Index of the network load (``net.load`` row) that each site of a group feeds.

    ``round_robin``: site i → load i mod L.  ``proportional``: the counts follow the loads'
    nominal ``p_mw`` by the largest-remainder method (equal shares if all are ≤ 0), and
    sites fill load 0, then load 1, ... in contiguous blocks.
    """
    n_loads = load_p_mw.size
    if n_loads == 0:
        raise ValueError("the network has no loads")
    if mapping == "round_robin":
        return np.arange(n_sites, dtype=np.int64) % n_loads
    if mapping != "proportional":
        raise ValueError(f"unknown mapping {mapping!r}")
    w = np.clip(np.asarray(load_p_mw, dtype=float), 0.0, None)
    w = w / w.sum() if w.sum() > 0 else np.full(n_loads, 1.0 / n_loads)
    quota = w * n_sites
    counts = np.floor(quota).astype(np.int64)
    rest = n_sites - int(counts.sum())
    if rest:
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[:rest]] += 1
    return np.repeat(np.arange(n_loads, dtype=np.int64), counts)


class PowerFlowHook:
    """Runs the feeder power flow every ``spec.every_ticks`` ticks (see module docstring)."""

    name = "powerflow"

    def __init__(self, spec: PowerFlowSpec, world: World, group: SiteGroup, net: Any):
        self.spec = spec
        self.group = group
        self.net = net
        self.tick_s = world.tick_s
        self.n_ticks = world.n_ticks
        self._pp, _ = _import_pandapower()
        self._not_converged = self._pp.LoadflowNotConverged
        self.n_loads = len(net.load)
        self.site_load = map_sites_to_loads(
            group.n, net.load["p_mw"].to_numpy(dtype=float), spec.mapping
        )
        self.tan_phi = math.tan(math.acos(spec.power_factor))
        # the sites replace the network's nominal loads: constant power, scaling 1
        net.load["scaling"] = 1.0
        net.load["p_mw"] = 0.0
        net.load["q_mvar"] = 0.0
        self.ticks: list[int] = []
        self.rows: dict[str, list[float]] = {c: [] for c in COLUMNS}
        self.failures = 0
        self.call_s = 0.0  # wall time spent in runpp
        self._warm = False  # the last run converged: the next one may recycle it

    # ------------------------------------------------------------------ per tick
    def bus_powers_w(self, site_net_wh: F) -> tuple[F, F]:
        """P and Q [W, var] per network load from the sites' net import of one tick [Wh]."""
        p_site = np.asarray(site_net_wh, dtype=float) * (3600.0 / self.tick_s) * self.spec.scale
        p = np.bincount(self.site_load, weights=p_site, minlength=self.n_loads)
        q = np.bincount(self.site_load, weights=np.abs(p_site), minlength=self.n_loads)
        return p, q * self.tan_phi

    def solve(self, p_w: F, q_var: F) -> dict[str, float]:
        """Set the loads, run the power flow, return this run's columns (NaN if it failed)."""
        import time

        net = self.net
        net.load["p_mw"] = p_w / 1e6
        net.load["q_mvar"] = q_var / 1e6
        # After a converged run only the bus injections change, so pandapower's `recycle`
        # reuses the admittance matrix and starts from the last solution (about half the
        # cost of a full run, same result to ~1e-7 pu); after a failure a full run starts
        # afresh from a flat/DC initialisation.
        recycle = {"bus_pq": True, "trafo": False, "gen": False} if self._warm else None
        t0 = time.perf_counter()
        try:
            self._pp.runpp(
                net,
                algorithm="nr",
                max_iteration=self.spec.max_iterations,
                voltage_depend_loads=False,
                numba=False,
                recycle=recycle,
            )
            # a full run raises when it does not converge; a recycled one only says so here
            ok = bool(net["_ppc"]["success"])
        except self._not_converged:
            ok = False
        self.call_s += time.perf_counter() - t0
        self._warm = ok
        if not ok:
            self.failures += 1
            out = dict.fromkeys(COLUMNS, float("nan"))
            out["powerflow_converged"] = 0.0
            return out
        vm = net.res_bus["vm_pu"].to_numpy(dtype=float)
        vm = vm[np.isfinite(vm)]  # isolated buses have NaN results
        s = self.spec
        line = net.res_line["loading_percent"].to_numpy(dtype=float)
        trafo = net.res_trafo["loading_percent"].to_numpy(dtype=float)
        losses_mw = float(net.res_line["pl_mw"].sum()) + float(net.res_trafo["pl_mw"].sum())
        return {
            "powerflow_vm_min_pu": float(vm.min()),
            "powerflow_vm_max_pu": float(vm.max()),
            "powerflow_line_loading_max_percent": float(line.max()) if line.size else 0.0,
            "powerflow_trafo_loading_max_percent": float(trafo.max()) if trafo.size else 0.0,
            "powerflow_buses_out_of_band": float(
                ((vm < s.voltage_min_pu) | (vm > s.voltage_max_pu)).sum()
            ),
            "powerflow_losses_w": losses_mw * 1e6,
            "powerflow_converged": 1.0,
        }

    def on_tick(self, world: World, result: TickResult) -> dict[str, float]:
        k = result.k
        if k % self.spec.every_ticks:
            return {}
        net_wh = self.group.last_site_net_wh
        if net_wh is None:
            raise CpsSimError(
                f"powerflow: site group {self.group.name!r} did not track its "
                f"per-site net import (track_site_net is off)"
            )
        out = self.solve(*self.bus_powers_w(net_wh))
        self.ticks.append(k)
        for c in COLUMNS:
            self.rows[c].append(out[c])
        return out

    # ------------------------------------------------------------------ end of run
    def kpis(self) -> dict[str, float]:
        """KPIs of the runs so far (the function that computes them from
        ``powerflow_report.parquet``: experiment/kpis.py) and the wall time per run."""
        from cps_sim.experiment.kpis import powerflow_kpis

        out = powerflow_kpis(self.report())
        out["powerflow_wall_s_per_run"] = self.call_s / len(self.ticks) if self.ticks else 0.0
        return out

    def report(self) -> dict[str, np.ndarray]:
        """One row per power-flow run (``powerflow_report.parquet``)."""
        rep: dict[str, np.ndarray] = {
            "tick": np.asarray(self.ticks, dtype=np.int64),
            "t_end_s": (np.asarray(self.ticks, dtype=float) + 1.0) * self.tick_s,
        }
        # each run stands for the ticks until the next one (fewer at the end of the run)
        rep["span_s"] = np.minimum(self.spec.every_ticks, self.n_ticks - rep["tick"]) * self.tick_s
        for c in COLUMNS:
            rep[c.removeprefix("powerflow_")] = np.asarray(self.rows[c], dtype=float)
        return rep


def build_powerflow(
    scenario: object, world: World, spec: PowerFlowSpec | None = None
) -> PowerFlowHook:
    """The power-flow tick hook of a scenario (``scenario.powerflow``) or of an explicit spec.

    Switches on the group's per-site net tracking (``track_site_net``) and builds the
    bundled network.  Raises :class:`ScenarioError` if the group does not exist.
    """
    if spec is None:
        spec = getattr(scenario, "powerflow", None)
    if spec is None:
        raise ValueError("the scenario has no 'powerflow:' block")
    try:
        group = world.group(spec.group)
    except KeyError:
        names = ", ".join(g.name for g in world.groups)
        raise ScenarioError.single(
            None,
            "powerflow.group",
            f"no site group named {spec.group!r}; the scenario has: {names}",
        ) from None
    group.track_site_net = True
    return PowerFlowHook(spec, world, group, load_network(spec.network))
