"""Radial node tree (site -> feeder -> substation -> area) with capacity limits.

Power aggregates upward without losses: a node's flow is its own injection (a site's
net power, load convention: + import from the grid) plus the flows of its children::

    flow[node] = own[node] + sum(flow[child] for child of node)

so the root's flow is the sum of all site net powers (tested).  Each node has an
import limit (flow > 0, power drawn from upstream) and an export limit (flow < 0, reverse
flow towards upstream).  Excess over the limit is reported per node as overload power
and overload energy ``max(0, flow - cap_import) + max(0, -flow - cap_export)`` times
``dt``.  This is an energy-balance (transport) view; AC power flow with voltages is a
separate, optional concern (pandapower), not done here.

Aggregation is one ``np.bincount`` per tree level for a single tick, and a sparse
ancestor matrix product for a ``(T, n_nodes)`` block of ticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from cps_sim.core.types import FloatArray, IntArray
from cps_sim.core.units import SECONDS_PER_HOUR


@dataclass(frozen=True)
class NodeTree:
    """A radial tree of grid nodes (arrays ``(n_nodes,)``)."""

    names: tuple[str, ...]
    kind: tuple[str, ...]  # "site" | "feeder" | "substation" | "area" | ...
    parent: IntArray  # -1 for a root
    depth: IntArray  # 0 for a root
    import_capacity_w: FloatArray  # +inf = unlimited
    export_capacity_w: FloatArray
    ancestors: sparse.csr_matrix  # (n, n): [a, j] = 1 if a is j or an ancestor of j

    @property
    def n(self) -> int:
        return int(self.parent.shape[0])


def node_tree(
    parent: Sequence[int] | npt.ArrayLike,
    import_capacity_w: npt.ArrayLike = np.inf,
    export_capacity_w: npt.ArrayLike | None = None,
    names: Sequence[str] | None = None,
    kind: Sequence[str] | None = None,
) -> NodeTree:
    """Build and validate a tree from each node's parent index (-1 for roots).

    ``export_capacity_w`` defaults to the import capacity (a symmetric line/transformer).
    Raises ``ValueError`` on an out-of-range parent or a cycle.
    """
    par = np.asarray(parent, dtype=np.int64)
    n = par.shape[0]
    if np.any((par < -1) | (par >= n)):
        bad = int(np.flatnonzero((par < -1) | (par >= n))[0])
        raise ValueError(f"parent[{bad}] = {par[bad]} is not a node index or -1")
    depth = np.zeros(n, dtype=np.int64)
    cur = par.copy()
    rows = [np.arange(n)]
    cols = [np.arange(n)]
    for _ in range(n + 1):  # walks up one level per iteration (tree depth, not devices)
        live = cur >= 0
        if not live.any():
            break
        depth[live] += 1
        rows.append(cur[live])
        cols.append(np.flatnonzero(live))
        cur = np.where(live, par[np.maximum(cur, 0)], -1)
    else:
        raise ValueError("parent array contains a cycle")
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    anc = sparse.csr_matrix((np.ones(r.shape[0]), (r, c)), shape=(n, n))
    imp = np.broadcast_to(np.asarray(import_capacity_w, dtype=float), (n,)).copy()
    exp = (
        imp.copy()
        if export_capacity_w is None
        else np.broadcast_to(np.asarray(export_capacity_w, dtype=float), (n,)).copy()
    )
    return NodeTree(
        names=tuple(names) if names is not None else tuple(f"node{i}" for i in range(n)),
        kind=tuple(kind) if kind is not None else tuple("node" for _ in range(n)),
        parent=par,
        depth=depth,
        import_capacity_w=imp,
        export_capacity_w=exp,
        ancestors=anc,
    )


def injections(tree: NodeTree, site_node: npt.ArrayLike, site_power_w: npt.ArrayLike) -> FloatArray:
    """Sum site net powers onto their nodes: ``(n_sites,) -> (n_nodes,)`` or
    ``(T, n_sites) -> (T, n_nodes)`` (several sites may share one node)."""
    idx = np.asarray(site_node, dtype=np.int64)
    p = np.asarray(site_power_w, dtype=float)
    if p.ndim == 1:
        return np.bincount(idx, weights=p, minlength=tree.n)
    m = sparse.csr_matrix(
        (np.ones(idx.shape[0]), (idx, np.arange(idx.shape[0]))), shape=(tree.n, idx.shape[0])
    )
    return np.asarray((m @ p.T).T)


def aggregate_up(tree: NodeTree, own_power_w: npt.ArrayLike) -> FloatArray:
    """Flow through every node: own injection plus all descendants.

    ``(n_nodes,)``: one ``np.bincount`` per level, deepest first.
    ``(T, n_nodes)``: ``own @ ancestors.T`` (sparse), vectorised over ticks.
    """
    own = np.asarray(own_power_w, dtype=float)
    if own.ndim == 2:
        return np.asarray((tree.ancestors @ own.T).T)
    flow = own.copy()
    for d in range(int(tree.depth.max(initial=0)), 0, -1):
        lvl = np.flatnonzero(tree.depth == d)
        flow += np.bincount(tree.parent[lvl], weights=flow[lvl], minlength=tree.n)
    return flow


@dataclass(frozen=True)
class CapacityReport:
    """Per node (and per tick if 2-D): overload power/energy and loading."""

    flow_w: FloatArray
    overload_w: FloatArray  # >= 0
    overloaded: npt.NDArray[np.bool_]
    overload_energy_wh: FloatArray  # per node, summed over ticks
    loading: FloatArray  # |flow| / capacity in that direction (inf-cap -> 0)


def check_capacity(tree: NodeTree, flow_w: npt.ArrayLike, dt_s: float) -> CapacityReport:
    """Compare node flows with their import/export limits over ticks of ``dt_s``."""
    f = np.asarray(flow_w, dtype=float)
    over = np.maximum(f - tree.import_capacity_w, 0.0) + np.maximum(
        -f - tree.export_capacity_w, 0.0
    )
    cap = np.where(f >= 0, tree.import_capacity_w, tree.export_capacity_w)
    with np.errstate(divide="ignore", invalid="ignore"):
        loading = np.where(
            np.isfinite(cap) & (cap > 0),
            np.abs(f) / cap,
            np.where(np.abs(f) > 0, np.where(np.isfinite(cap), np.inf, 0.0), 0.0),
        )
    e = over * (dt_s / SECONDS_PER_HOUR)
    return CapacityReport(
        flow_w=f,
        overload_w=over,
        overloaded=over > 0,
        overload_energy_wh=e if f.ndim == 1 else e.sum(0),
        loading=loading,
    )


def site_feeder_substation_area(
    n_sites: int,
    sites_per_feeder: int,
    feeders_per_substation: int,
    substations_per_area: int = 10**9,
    site_capacity_w: float = np.inf,
    feeder_capacity_w: float = np.inf,
    substation_capacity_w: float = np.inf,
    area_capacity_w: float = np.inf,
) -> tuple[NodeTree, IntArray]:
    """Regular four-level tree; returns it and each site's node index.

    Node order: areas, substations, feeders, sites (parents before children).
    """
    n_feed = -(-n_sites // sites_per_feeder)
    n_sub = -(-n_feed // feeders_per_substation)
    n_area = -(-n_sub // substations_per_area)
    a0, s0, f0, x0 = 0, n_area, n_area + n_sub, n_area + n_sub + n_feed
    parent = np.concatenate(
        [
            np.full(n_area, -1),
            a0 + np.arange(n_sub) // substations_per_area,
            s0 + np.arange(n_feed) // feeders_per_substation,
            f0 + np.arange(n_sites) // sites_per_feeder,
        ]
    )
    cap = np.concatenate(
        [
            np.full(n_area, area_capacity_w),
            np.full(n_sub, substation_capacity_w),
            np.full(n_feed, feeder_capacity_w),
            np.full(n_sites, site_capacity_w),
        ]
    )
    kind = ["area"] * n_area + ["substation"] * n_sub + ["feeder"] * n_feed + ["site"] * n_sites
    names = (
        [f"area{i}" for i in range(n_area)]
        + [f"sub{i}" for i in range(n_sub)]
        + [f"feeder{i}" for i in range(n_feed)]
        + [f"site{i}" for i in range(n_sites)]
    )
    tree = node_tree(parent, cap, names=names, kind=kind)
    return tree, x0 + np.arange(n_sites)
