"""``cps-sim compare RUN_A RUN_B [...]``: the same question answered by several runs, side by side.

Writes into one folder:

* ``kpis.csv`` and a KPI table in the HTML page: every numeric KPI of every run, and for
  each run after the first its difference from the first (absolute and in %);
* ``week_overlay.png`` — grid import, grid export, EV charging and the mean battery SoC of
  every run over the same local week (default: the week of the first run's highest import
  peak; ``--week`` picks another);
* ``daily_profiles_overlay.png`` — mean power by local hour of day of every run;
* ``compare.html`` — all of it in one self-contained page (images embedded).

Runs must cover the same horizon (start and end); otherwise the comparison is refused
with the horizons listed, since differences would mix weather, calendars and seasons.
"""

from __future__ import annotations

import csv
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from cps_sim.core.errors import ResultsError, ResultsInputError
from cps_sim.experiment.report import DPI, _fmt, _img, _table, _write_html, choose_week

COMPARE_FILES = frozenset(
    {"compare.html", "kpis.csv", "week_overlay.png", "daily_profiles_overlay.png"}
)
HEADLINE = (
    "self_sufficiency",
    "self_consumption",
    "grid_import_kwh",
    "grid_export_kwh",
    "peak_import_kw",
    "cost_jpy",
    "co2_kg",
    "curtailment_kwh",
    "unserved_kwh",
    "ev_charging_kwh",
    "ev_unmet_at_departure_kwh",
)
WEEK_PANELS = (
    ("grid_import_w", "grid import [kW]", 1e-3),
    ("grid_export_w", "grid export [kW]", 1e-3),
    ("ev_charging_w", "EV charging [kW]", 1e-3),
    ("battery_soc_mean", "battery SoC (mean)", 1.0),
)
PROFILE_COLUMNS = (
    ("grid_import_w", "grid import"),
    ("grid_export_w", "grid export"),
    ("ev_charging_w", "EV charging"),
    ("pv_generation_w", "PV generation"),
)
COLOURS = ("#3969ac", "#e73f74", "#11a579", "#f2b701", "#7f3c8d", "#80ba5a", "#008695", "#a5aa99")


@dataclass
class Run:
    path: Path
    label: str
    ts: pd.DataFrame
    kpis: dict[str, float]
    manifest: dict[str, Any]
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass
class Comparison:
    out_dir: Path
    html: Path
    csv: Path
    pngs: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None


def _load(path: Path) -> Run:
    from cps_sim.experiment.results import damaged, read_run

    if not path.is_dir():
        what = "no such run folder" if not path.exists() else "not a folder (give a run folder)"
        raise ResultsInputError(f"{path}: {what}")
    for f in ("timeseries.parquet", "kpis.json", "manifest.json"):
        if not (path / f).exists() and not (path / f).is_symlink():
            raise ResultsInputError(f"{path}: not a cps_sim run folder (no {f})")
    ts, kpis, manifest = read_run(path)
    sc = manifest.get("scenario") or {}
    try:
        start = pd.Timestamp(sc["start"]).tz_convert(ts.index.tz)
        end = start + pd.Timedelta(days=float(sc["duration_days"]))
    except Exception as exc:  # a manifest without (or with a broken) start / duration
        raise damaged(path / "manifest.json", f"scenario start/duration: {exc!r}") from None
    return Run(path, str(sc.get("name", path.name)), ts, kpis, manifest, start, end)


def _labels(runs: list[Run]) -> None:
    """Scenario names, made unique with the folder name (and the overrides) when needed."""
    names = [r.label for r in runs]
    for r in runs:
        if names.count(r.label) > 1:
            r.label = f"{r.label} ({r.path.name})"
    names = [r.label for r in runs]
    for k, r in enumerate(runs):
        if names.count(r.label) > 1:
            r.label = f"{r.label} #{k + 1}"


def load_runs(paths: list[str | Path]) -> list[Run]:
    if len(paths) < 2:
        raise ResultsInputError("compare needs at least two run folders")
    runs = [_load(Path(p)) for p in paths]
    horizons = {(r.start, r.end) for r in runs}
    if len(horizons) > 1:
        rows = "\n".join(
            f"  {r.path}: {r.start:%Y-%m-%d %H:%M %Z} .. {r.end:%Y-%m-%d %H:%M}"
            f" ({(r.end - r.start) / pd.Timedelta(days=1):g} days)"
            for r in runs
        )
        raise ResultsInputError(
            "runs cover different horizons; compare runs of the same start "
            f"and length (rerun with --set start=... duration_days=...):\n{rows}"
        )
    _labels(runs)
    return runs


def kpi_table(runs: list[Run]) -> pd.DataFrame:
    """One row per numeric KPI: each run's value and, per later run, Δ and Δ% vs the first."""
    names = sorted(
        {
            k
            for r in runs
            for k, v in r.kpis.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    order = [k for k in HEADLINE if k in names] + [k for k in names if k not in HEADLINE]
    base = runs[0]
    rows = []
    for k in order:
        row: dict[str, Any] = {"kpi": k}
        b = base.kpis.get(k)
        for r in runs:
            row[r.label] = r.kpis.get(k)
        for r in runs[1:]:
            v = r.kpis.get(k)
            if (
                isinstance(b, (int, float))
                and isinstance(v, (int, float))
                and math.isfinite(b)
                and math.isfinite(v)
            ):
                row[f"Δ {r.label}"] = v - b
                row[f"Δ% {r.label}"] = (
                    (v - b) / abs(b) * 100.0 if b != 0 else (0.0 if v == 0 else math.nan)
                )
            else:
                row[f"Δ {r.label}"] = math.nan
                row[f"Δ% {r.label}"] = math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _week_overlay(runs: list[Run], week_start: str | None, path: Path) -> tuple[str, str]:
    first = choose_week(runs[0].ts, week_start)
    a = first.index[0]
    b = min(a + pd.Timedelta(days=7), runs[0].end)
    panels = [
        p for p in WEEK_PANELS if any(p[0] in r.ts and r.ts[p[0]].abs().sum() > 0 for r in runs)
    ] or list(WEEK_PANELS[:1])
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, 2.3 * len(panels) + 0.6), sharex=True, squeeze=False
    )
    for ax, (col, label, scale) in zip(axes[:, 0], panels, strict=True):
        for r, colour in zip(runs, COLOURS * 4, strict=False):
            if col not in r.ts:
                continue
            part = r.ts[(r.ts.index >= a) & (r.ts.index < b)][col] * scale
            ax.step(part.index, part.values, where="post", lw=1.1, color=colour, label=r.label)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=8, ncol=min(len(runs), 4), loc="upper left")
    axes[0, 0].set_title(
        f"Same week, every run: {a:%Y-%m-%d} .. {b - pd.Timedelta(seconds=1):%Y-%m-%d} ({a.tz})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return f"{a:%Y-%m-%d}", f"{b - pd.Timedelta(seconds=1):%Y-%m-%d}"


def _profiles_overlay(runs: list[Run], path: Path) -> None:
    cols = [
        c for c in PROFILE_COLUMNS if any(c[0] in r.ts and r.ts[c[0]].abs().sum() > 0 for r in runs)
    ] or list(PROFILE_COLUMNS[:1])
    fig, axes = plt.subplots(1, len(cols), figsize=(3.6 * len(cols) + 0.8, 3.4), squeeze=False)
    for ax, (col, label) in zip(axes[0], cols, strict=True):
        for r, colour in zip(runs, COLOURS * 4, strict=False):
            if col not in r.ts:
                continue
            hour = r.ts.index.hour + r.ts.index.minute / 60.0
            prof = (r.ts[col] / 1000.0).groupby(hour).mean()
            ax.plot(prof.index, prof.values, drawstyle="steps-post", color=colour, label=r.label)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(0, 24)
        ax.set_xticks(range(0, 25, 6))
        ax.set_xlabel("local hour", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("mean power [kW]", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Daily profiles (mean over the run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def check_compare_out(out: Path) -> None:
    """New, empty, or a folder holding only a previous comparison."""
    if out.exists() and not out.is_dir():
        raise ResultsError(f"{out}: exists and is not a folder; cps_sim will not replace it")
    if out.is_dir():
        foreign = sorted(
            e.name
            for e in out.iterdir()
            if not e.name.startswith(".") and e.name not in COMPARE_FILES
        )
        if foreign:
            raise ResultsError(
                f"{out}: holds files that are not a cps_sim comparison "
                f"({', '.join(foreign[:5])}); give a new or empty folder"
            )


def default_out(paths: list[str | Path]) -> Path:
    names = "-vs-".join(Path(p).name for p in paths)
    return Path("results") / f"compare-{names}"[:120]


def compare_runs(
    paths: list[str | Path], out_dir: str | Path | None = None, week_start: str | None = None
) -> Comparison:
    """Render the comparison of two or more run folders (see the module doc)."""
    runs = load_runs(paths)
    out = Path(out_dir) if out_dir is not None else default_out(paths)
    check_compare_out(out)
    out.mkdir(parents=True, exist_ok=True)
    table = kpi_table(runs)
    res = Comparison(
        out, out / "compare.html", out / "kpis.csv", labels=[r.label for r in runs], table=table
    )
    with open(res.csv, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(table.columns)
        for row in table.itertuples(index=False):
            w.writerow(
                ["" if (isinstance(v, float) and math.isnan(v)) or v is None else v for v in row]
            )
    wk = _week_overlay(runs, week_start, out / "week_overlay.png")
    _profiles_overlay(runs, out / "daily_profiles_overlay.png")
    res.pngs = [out / "week_overlay.png", out / "daily_profiles_overlay.png"]
    facts = [
        [
            r.label,
            str(r.path),
            str(r.manifest.get("seed", "")),
            str(r.manifest.get("scenario_hash", ""))[:12],
            " ".join(r.manifest.get("overrides") or []) or "-",
        ]
        for r in runs
    ]
    body = [
        f"<p>Horizon {runs[0].start:%Y-%m-%d %H:%M} .. {runs[0].end:%Y-%m-%d %H:%M} "
        f"({runs[0].start.tz}); week shown {wk[0]} .. {wk[1]}; differences are "
        f"relative to <b>{html.escape(runs[0].label)}</b>.</p>",
        _table(["run", "folder", "seed", "scenario hash", "overrides"], facts),
        "<h2>KPIs</h2>",
        _table(
            list(table.columns), [[_fmt(v) for v in row] for row in table.itertuples(index=False)]
        ),
        *(_img(p) for p in res.pngs),
    ]
    _write_html(res.html, "Comparison: " + " vs ".join(r.label for r in runs), body)
    return res


def format_summary(res: Comparison, limit: int = 12) -> str:
    """Terminal summary: the headline KPIs of each run and the Δ% of later runs."""
    t = res.table
    assert t is not None
    lines = [f"comparison: {res.html} ({len(res.pngs)} plots, {res.csv.name})"]
    head = t[t["kpi"].isin(HEADLINE)].head(limit)
    width = max(len(k) for k in head["kpi"]) if len(head) else 10
    lines.append("  " + "kpi".ljust(width) + "".join(f"  {lab[:18]:>18}" for lab in res.labels))
    for _, row in head.iterrows():
        cells = []
        for k, lab in enumerate(res.labels):
            v = row[lab]
            text = _fmt(v) if v is not None else ""
            if k:
                d = row[f"Δ% {lab}"]
                if isinstance(d, float) and math.isfinite(d):
                    text += f" ({d:+.1f}%)"
            cells.append(f"  {text[:18]:>18}")
        lines.append("  " + str(row["kpi"]).ljust(width) + "".join(cells))
    return "\n".join(lines)
