"""Sweep analysis for ``cps-sim report SWEEP_DIR``: what a paper needs from a sweep.

* **Design points with replicate statistics**: for every design point, the mean of each
  KPI over its replicates (seeds) and a 95 % confidence interval of that mean,
  ``mean ± t(0.975, n-1) · s / sqrt(n)`` (Student t, ``s`` the sample standard
  deviation); one replicate gives no interval.
* **Sensitivity** (``sensitivity.png``): each KPI against each parameter, design-point
  means with their intervals; numeric parameters as lines (one per value of the next
  parameter), categorical ones as grouped bars with error bars.
* **Heatmap** (``heatmap.png``, two or more parameters): the objective's mean over the
  first two parameters (averaged over any others); cells that break a constraint are
  crossed out.
* **Ranking under constraints**: ``--objective cost_jpy --constraint
  "ev_unmet_at_departure_kwh <= 1"`` (repeatable) ranks the design points by the
  objective's mean among those whose means meet every constraint; the others are listed
  after them with what they break, so a strategy that leaves EV demand unmet cannot rank
  best.
* **Trade-off** (``tradeoff.png``): objective against a second KPI (``--tradeoff``,
  default ``co2_kg``), one labelled point per design point with its intervals, the Pareto
  front of the feasible points (both lower-is-better; prefix a KPI with ``-`` to maximise
  it, e.g. ``--tradeoff=-self_sufficiency``) drawn as a line.

Unknown KPIs (objective, constraint, trade-off) are errors that list the sweep's KPIs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cps_sim.core.errors import ResultsError

CONFIDENCE = 0.95
_CONSTRAINT = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|==|<|>)\s*"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
DPI = 110


@dataclass(frozen=True)
class Constraint:
    kpi: str
    op: str
    value: float

    def holds(self, x: float | np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return {
            "<=": x <= self.value,
            ">=": x >= self.value,
            "<": x < self.value,
            ">": x > self.value,
            "==": np.isclose(x, self.value),
        }[self.op]

    def __str__(self) -> str:
        return f"{self.kpi} {self.op} {self.value:g}"


def check_kpi(name: str, kpis: Sequence[str], what: str) -> None:
    if name not in kpis:
        import difflib

        hint = difflib.get_close_matches(name, list(kpis), n=1)
        more = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ResultsError(
            f"{what} {name!r} is not a KPI of this sweep{more} (KPIs: {', '.join(kpis)})"
        )


def parse_constraint(text: str, kpis: Sequence[str]) -> Constraint:
    """``"ev_unmet_at_departure_kwh <= 1"`` -> Constraint; the KPI must exist."""
    m = _CONSTRAINT.match(text)
    if m is None:
        raise ResultsError(
            f"--constraint {text!r}: write '<kpi> <op> <number>' with op one of "
            "<=, >=, <, >, ==, e.g. 'ev_unmet_at_departure_kwh <= 1'"
        )
    check_kpi(m.group(1), kpis, "--constraint")
    return Constraint(m.group(1), m.group(2), float(m.group(3)))


def t_critical(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value for n samples (NaN for n < 2)."""
    if n < 2:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, n - 1))


def point_stats(ok: pd.DataFrame, params: list[str], kpis: list[str]) -> pd.DataFrame:
    """One row per design point: parameters, ``n`` replicates, and per KPI
    ``<k>_mean``, ``<k>_ci_low``, ``<k>_ci_high`` (95 % CI of the mean)."""
    rows = []
    for point, g in ok.groupby("point", sort=True):
        row: dict[str, object] = {"point": int(point), "n": len(g)}
        for p in params:
            row[p] = g[p].iloc[0]
        for k in kpis:
            x = g[k].to_numpy(dtype=float)
            x = x[np.isfinite(x)]
            n = x.size
            mean = float(x.mean()) if n else math.nan
            half = t_critical(n) * float(x.std(ddof=1)) / math.sqrt(n) if n >= 2 else math.nan
            row[f"{k}_mean"] = mean
            row[f"{k}_ci_low"] = mean - half
            row[f"{k}_ci_high"] = mean + half
        rows.append(row)
    return pd.DataFrame(rows)


def rank(points: pd.DataFrame, objective: str, constraints: Sequence[Constraint]) -> pd.DataFrame:
    """Design points ordered: feasible ones by the objective's mean, then the others."""
    out = points.copy()
    broken = [
        [str(c) for c in constraints if not bool(c.holds(r[f"{c.kpi}_mean"]))]
        for _, r in out.iterrows()
    ]
    out["feasible"] = [not b for b in broken]
    out["violates"] = ["; ".join(b) for b in broken]
    out = out.sort_values(
        ["feasible", f"{objective}_mean", "point"], ascending=[False, True, True], kind="stable"
    )
    out.insert(0, "rank", np.where(out["feasible"], np.cumsum(out["feasible"]), 0))
    return out.reset_index(drop=True)


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points not dominated when both coordinates are lower-is-better."""
    pts = np.column_stack([x, y])
    keep = np.zeros(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        if not np.all(np.isfinite(p)):
            continue
        dominated = np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
        keep[i] = not dominated
    return keep


def label(row: pd.Series, params: list[str]) -> str:
    return ", ".join(f"{p}={_short(row[p])}" for p in params) or f"point {row['point']}"


def _short(v: object) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


# ----------------------------------------------------------------------------- plots


def plot_sensitivity(points: pd.DataFrame, params: list[str], kpis: list[str], path: Path) -> None:
    fig, axes = plt.subplots(
        len(kpis),
        len(params),
        squeeze=False,
        figsize=(3.9 * len(params) + 0.6, 2.5 * len(kpis) + 0.5),
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, p in enumerate(params):
        others = [q for q in params if q != p]
        series_key = others[0] if others else None
        groups = list(points.groupby(series_key, sort=True)) if series_key else [(None, points)]
        for i, k in enumerate(kpis):
            ax = axes[i][j]
            mean, lo, hi = f"{k}_mean", f"{k}_ci_low", f"{k}_ci_high"
            if _numeric(points[p]):
                for (gv, g), c in zip(groups, colours * 8, strict=False):
                    g = g.groupby(p, sort=True)[[mean, lo, hi]].mean().reset_index()
                    err = np.vstack([g[mean] - g[lo], g[hi] - g[mean]])
                    ax.errorbar(
                        g[p],
                        g[mean],
                        yerr=np.nan_to_num(err),
                        marker="o",
                        ms=3,
                        lw=1.2,
                        capsize=3,
                        color=c,
                        label=f"{series_key}={_short(gv)}" if series_key else None,
                    )
            else:  # categorical: grouped bars with error bars
                levels = sorted(points[p].astype(str).unique())
                width = 0.8 / max(len(groups), 1)
                for gi, ((gv, g), c) in enumerate(zip(groups, colours * 8, strict=False)):
                    g = g.assign(_lvl=g[p].astype(str)).groupby("_lvl")[[mean, lo, hi]].mean()
                    g = g.reindex(levels)
                    x = np.arange(len(levels)) + (gi - (len(groups) - 1) / 2) * width
                    err = np.vstack([g[mean] - g[lo], g[hi] - g[mean]])
                    ax.bar(
                        x,
                        g[mean],
                        width=width * 0.95,
                        color=c,
                        alpha=0.85,
                        yerr=np.nan_to_num(err),
                        capsize=3,
                        label=f"{series_key}={_short(gv)}" if series_key else None,
                    )
                ax.set_xticks(range(len(levels)), levels, fontsize=7)
            if i == len(kpis) - 1:
                ax.set_xlabel(p)
            if j == 0:
                ax.set_ylabel(k, fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0 and series_key:
                ax.legend(fontsize=6)
    fig.suptitle(
        "Sensitivity: design-point means with 95 % confidence intervals (replicates)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (2.5 * len(kpis) + 0.5)))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_heatmap(
    points: pd.DataFrame,
    params: list[str],
    objective: str,
    constraints: Sequence[Constraint],
    path: Path,
) -> None:
    a, b = params[0], params[1]
    mean = f"{objective}_mean"
    feas = np.ones(len(points), dtype=bool)
    for c in constraints:
        feas &= c.holds(points[f"{c.kpi}_mean"].to_numpy())
    df = points.assign(_feasible=feas)
    grid = df.pivot_table(index=b, columns=a, values=mean, aggfunc="mean")
    ok = df.pivot_table(index=b, columns=a, values="_feasible", aggfunc="min")
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 3.2, 0.8 * grid.shape[0] + 2.2))
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(im, ax=ax, label=f"{objective} (mean)")
    ax.set_xticks(range(grid.shape[1]), [_short(v) for v in grid.columns], fontsize=8)
    ax.set_yticks(range(grid.shape[0]), [_short(v) for v in grid.index], fontsize=8)
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    vals = grid.to_numpy(dtype=float)
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            v = vals[r, c]
            if not np.isfinite(v):
                continue
            light = (v - lo) / (hi - lo) > 0.6 if hi > lo else False
            ax.text(
                c,
                r,
                f"{v:.4g}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if light else "white",
            )
            if not bool(ok.to_numpy()[r, c]):
                ax.plot([c - 0.45, c + 0.45], [r - 0.45, r + 0.45], color="#e73f74", lw=1.5)
                ax.plot([c - 0.45, c + 0.45], [r + 0.45, r - 0.45], color="#e73f74", lw=1.5)
    rest = [p for p in params[2:]]
    note = f" (mean over {', '.join(rest)})" if rest else ""
    title = f"{objective}: mean per design point{note}"
    if constraints:
        title += "\ncrossed out: breaks " + "; ".join(str(c) for c in constraints)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_tradeoff(
    points: pd.DataFrame,
    params: list[str],
    objective: str,
    other: str,
    maximise_other: bool,
    constraints: Sequence[Constraint],
    path: Path,
) -> np.ndarray:
    """Returns the Pareto mask (over all points; infeasible points are never on it)."""
    x = points[f"{other}_mean"].to_numpy(dtype=float)
    y = points[f"{objective}_mean"].to_numpy(dtype=float)
    feas = np.ones(len(points), dtype=bool)
    for c in constraints:
        feas &= c.holds(points[f"{c.kpi}_mean"].to_numpy())
    xs = -x if maximise_other else x
    front = np.zeros(len(points), dtype=bool)
    if feas.any():
        front[np.flatnonzero(feas)] = pareto_mask(xs[feas], y[feas])
    fig, ax = plt.subplots(figsize=(8, 6))
    for sel, style in (
        (feas & ~front, dict(color="#3969ac", label="design point")),
        (front, dict(color="#e73f74", label="Pareto front (feasible)")),
        (~feas, dict(color="#a5aa99", label="breaks a constraint")),
    ):
        if not sel.any():
            continue
        xe = np.vstack(
            [
                x[sel] - points[f"{other}_ci_low"].to_numpy()[sel],
                points[f"{other}_ci_high"].to_numpy()[sel] - x[sel],
            ]
        )
        ye = np.vstack(
            [
                y[sel] - points[f"{objective}_ci_low"].to_numpy()[sel],
                points[f"{objective}_ci_high"].to_numpy()[sel] - y[sel],
            ]
        )
        ax.errorbar(
            x[sel],
            y[sel],
            xerr=np.nan_to_num(xe),
            yerr=np.nan_to_num(ye),
            fmt="o",
            ms=5,
            capsize=2,
            lw=0.8,
            mfc="white" if style["color"] == "#a5aa99" else style["color"],
            **style,
        )
    if front.any():
        order = np.argsort(x[front])
        ax.plot(x[front][order], y[front][order], color="#e73f74", lw=1.6, zorder=0)
    for i, (_, row) in enumerate(points.iterrows()):
        ax.annotate(
            label(row, params),
            (x[i], y[i]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=6,
            color="#444",
        )
    ax.set_xlabel(f"{other} (mean; {'higher' if maximise_other else 'lower'} is better)")
    ax.set_ylabel(f"{objective} (mean; lower is better)")
    ax.set_title("Trade-off: design points with 95 % confidence intervals", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return front
