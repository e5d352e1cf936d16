"""``cps-sim report RESULTS-DIR``: PNG plots and one self-contained HTML page.

For a **run** directory (``timeseries.parquet`` + ``kpis.json``):

* ``energy_flows.png`` — supply (PV used on site, battery discharge, grid
  import) stacked against demand (load, EV and battery charging, export)
  over the chosen week;
* ``soc_price.png`` — mean battery and EV state of charge, and the import and
  export prices (``import_price_jpy_per_kwh`` / ``export_price_jpy_per_kwh``
  of the time series, else the flat tariff of the manifest) over the chosen
  week;
* ``daily_profiles.png`` — mean power by local hour of day;
* a KPI table (in the HTML page).

The chosen week is the 7 days starting ``week_start`` (a local date), by
default the week with the highest grid import peak.

For a **sweep** directory (``catalog.parquet`` or ``plan.json``):

* ``sensitivity.png`` — each KPI against each swept parameter (every run as
  a dot, the mean over replicates as a line);
* ``tradeoff.png`` — cost against CO2, one dot per run, coloured by the
  first parameter;
* best / worst runs by an objective KPI and a table of failed runs (HTML).

Everything lands in ``RESULTS-DIR/report/``; ``report.html`` embeds the PNGs
as base64, so it can be mailed or opened offline (no CDN, no scripts).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cps_sim.core.errors import ResultsError, ResultsInputError
from cps_sim.core.files import write_text_atomic

SWEEP_KPIS = (
    "self_sufficiency",
    "self_consumption",
    "cost_jpy",
    "co2_kg",
    "peak_import_kw",
    "grid_import_kwh",
    "unserved_kwh",
    "ev_unmet_at_departure_kwh",
)
DPI = 110


@dataclass
class Report:
    out_dir: Path
    html: Path
    pngs: list[Path] = field(default_factory=list)
    kind: str = "run"
    points: pd.DataFrame | None = None  # sweeps: design points, ranked


def make_report(
    results_dir: str | Path,
    *,
    week_start: str | None = None,
    objective: str = "cost_jpy",
    out_dir: str | Path | None = None,
    constraints: Sequence[str] = (),
    tradeoff: str = "co2_kg",
) -> Report:
    """Render the report of a run or a sweep directory (detected from its files)."""
    src = Path(results_dir)
    if not src.is_dir():
        raise ResultsInputError(f"{src}: no such results directory")
    out = Path(out_dir) if out_dir is not None else src / "report"
    from cps_sim.experiment.outdir import check_report_out, make_parents

    # Read and check every input before the report folder is touched.
    if (src / "catalog.parquet").exists() or (src / "plan.json").exists():
        cat = _read_catalog(src)
        _check_objective(cat, objective)
        from cps_sim.experiment import sweep_analysis as sa

        kpi_cols = list(cat.attrs.get("kpi_columns", []))
        for c in constraints:
            sa.parse_constraint(c, kpi_cols)
        if kpi_cols and tradeoff:
            sa.check_kpi(tradeoff.lstrip("-"), kpi_cols, "--tradeoff")
        check_report_out(out)
        make_parents(out)
        return _sweep_report(src, out, objective, cat, constraints, tradeoff)
    if (src / "timeseries.parquet").exists():
        run = _load_run(src)
        week = choose_week(run[0], week_start)
        check_report_out(out)
        make_parents(out)
        return _run_report(src, out, run, week)
    raise ResultsInputError(
        f"{src}: neither a run (timeseries.parquet) nor a sweep (catalog.parquet) results directory"
    )


def _read_catalog(src: Path) -> pd.DataFrame:
    from cps_sim.experiment.catalog import read_catalog

    try:
        return read_catalog(src)
    except ResultsError:
        raise
    except Exception as exc:
        from cps_sim.experiment.results import damaged

        raise damaged(src / "catalog.parquet", exc) from None


def _check_objective(cat: pd.DataFrame, objective: str) -> None:
    kpis = list(cat.attrs.get("kpi_columns", []))
    if kpis and objective not in kpis:
        raise ResultsInputError(
            f"--objective {objective!r} is not a KPI of this sweep; choose one "
            f"of: {', '.join(kpis)}"
        )


# ----------------------------------------------------------------------------- run


def _load_run(src: Path) -> tuple[pd.DataFrame, dict[str, float], dict[str, Any]]:
    from cps_sim.experiment.results import read_run

    return read_run(src)


def _col(ts: pd.DataFrame, name: str) -> pd.Series:
    return ts[name] if name in ts else pd.Series(0.0, index=ts.index)


def choose_week(ts: pd.DataFrame, week_start: str | None) -> pd.DataFrame:
    """Seven days of ``ts`` from ``week_start`` (local date), or the peak-import week."""
    if ts.empty:
        return ts
    if week_start is not None:
        try:
            start = pd.Timestamp(_dt.date.fromisoformat(str(week_start).strip()))
        except ValueError:
            raise ResultsInputError(
                f"--week {week_start!r}: expected a local date such as "
                f"{ts.index[0]:%Y-%m-%d} (YYYY-MM-DD)"
            ) from None
        start = start.tz_localize(ts.index.tz)
    else:
        daily_peak = _col(ts, "grid_import_w").resample("1D").max()
        weekly = daily_peak.rolling(7, min_periods=1).max()
        end_day = weekly.idxmax() if weekly.notna().any() else daily_peak.index[0]
        start = max(end_day - pd.Timedelta(days=6), ts.index[0].normalize())
    week = ts[(ts.index >= start) & (ts.index < start + pd.Timedelta(days=7))]
    if week.empty:
        raise ResultsInputError(
            f"week starting {week_start} is outside the run "
            f"({ts.index[0]:%Y-%m-%d} .. {ts.index[-1]:%Y-%m-%d})"
        )
    return week


def _energy_flows(week: pd.DataFrame, path: Path) -> None:
    kw = week / 1000.0
    pv_used = (_col(kw, "pv_generation_w") - _col(kw, "grid_export_w")).clip(lower=0)
    supply = {
        "PV used on site": pv_used,
        "battery discharge": _col(kw, "battery_discharge_w"),
        "grid import": _col(kw, "grid_import_w"),
        "unserved": _col(kw, "unserved_w"),
    }
    demand = {
        "household load": _col(kw, "load_w"),
        "EV charging": _col(kw, "ev_charging_w"),
        "battery charge": _col(kw, "battery_charge_w"),
        "grid export": _col(kw, "grid_export_w"),
    }
    fig, ax = plt.subplots(figsize=(11, 4.8))
    x = kw.index
    ax.stackplot(
        x,
        *supply.values(),
        labels=list(supply),
        step="post",
        alpha=0.85,
        colors=["#f2b701", "#3969ac", "#7f3c8d", "#e73f74"],
    )
    ax.stackplot(
        x,
        *[-v for v in demand.values()],
        labels=list(demand),
        step="post",
        alpha=0.85,
        colors=["#80ba5a", "#11a579", "#008695", "#a5aa99"],
    )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("power [kW]  (supply > 0 > demand)")
    ax.set_title("Energy flows (all sites)")
    ax.legend(ncol=4, fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _prices(week: pd.DataFrame, manifest: dict[str, Any]) -> dict[str, pd.Series]:
    """Import/export price series [JPY/kWh] for the week (per tick, else the flat tariff)."""
    out = {}
    for col, label in (
        ("import_price_jpy_per_kwh", "import price"),
        ("export_price_jpy_per_kwh", "export price"),
    ):
        if col in week:
            out[label] = week[col]
    if not out:
        tariff = (manifest.get("scenario") or {}).get("tariff") or {}
        for key, label in (
            ("import_jpy_per_kwh", "import tariff (flat)"),
            ("export_jpy_per_kwh", "export tariff (flat)"),
        ):
            if isinstance(tariff.get(key), (int, float)):
                out[label] = pd.Series(float(tariff[key]), index=week.index)
    return out


def _soc_price(week: pd.DataFrame, manifest: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for col, label, color in (
        ("battery_soc_mean", "battery SoC (mean)", "#3969ac"),
        ("ev_soc_mean", "EV SoC (mean)", "#11a579"),
    ):
        if col in week:
            ax.step(week.index, week[col], where="post", label=label, color=color)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("state of charge [0..1]")
    lines, labels = ax.get_legend_handles_labels()
    prices = _prices(week, manifest)
    if prices:
        ax2 = ax.twinx()
        top = 1.0
        for (label, series), color in zip(prices.items(), ("#e73f74", "#f2b701"), strict=False):
            ax2.step(week.index, series, where="post", color=color, lw=1.2, label=label)
            top = max(top, float(series.max()))
        ax2.set_ylabel("price [JPY/kWh]")
        ax2.set_ylim(0, top * 1.2)
        l2, lb2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lb2
    ax.legend(lines, labels, loc="upper left", fontsize=8, ncol=2)
    ax.set_title("State of charge and prices")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _daily_profiles(ts: pd.DataFrame, path: Path) -> None:
    hour = ts.index.hour + ts.index.minute / 60.0
    cols = [
        ("load_w", "household load"),
        ("pv_generation_w", "PV generation"),
        ("ev_charging_w", "EV charging"),
        ("grid_import_w", "grid import"),
        ("grid_export_w", "grid export"),
    ]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for col, label in cols:
        if col in ts:
            prof = (ts[col] / 1000.0).groupby(hour).mean()
            ax.plot(prof.index, prof.values, label=label, drawstyle="steps-post")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xlabel(f"local hour of day ({ts.index.tz})")
    ax.set_ylabel("mean power [kW]")
    ax.set_title(f"Daily profiles (mean over {ts.index.normalize().nunique()} day(s))")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _run_report(
    src: Path,
    out: Path,
    run: tuple[pd.DataFrame, dict[str, float], dict[str, Any]],
    week: pd.DataFrame,
) -> Report:
    ts, kpis, manifest = run
    rep = Report(out, out / "report.html", kind="run")
    for name, draw in (
        ("energy_flows.png", lambda p: _energy_flows(week, p)),
        ("soc_price.png", lambda p: _soc_price(week, manifest, p)),
        ("daily_profiles.png", lambda p: _daily_profiles(ts, p)),
    ):
        draw(out / name)
        rep.pngs.append(out / name)
    from cps_sim.experiment import summary

    run = summary.RunData.load(src)
    blocks = summary.blocks(run)
    # one plot per enabled block (system, storage, VPP, islanding, ...)
    rep.pngs.extend(summary.plot_blocks(run, week, out, dpi=DPI))
    title = f"Run {manifest.get('scenario', {}).get('name', src.name)}"
    facts = {
        "results": str(src),
        "seed": manifest.get("seed"),
        "scenario hash": str(manifest.get("scenario_hash", ""))[:16],
        "week shown": f"{week.index[0]:%Y-%m-%d} .. {week.index[-1]:%Y-%m-%d}",
        "wall time [s]": _fmt(manifest.get("wall_time_s")),
    }
    kpi_rows = [[k, _fmt(v)] for k, v in sorted(kpis.items())]
    summary_html = [
        f"<h3>{html.escape(b.title)}</h3>"
        + _table(["", ""], [[label, value] for label, value in b.items])
        for b in blocks
    ]
    body = [
        _table(["", ""], [[k, html.escape(str(v))] for k, v in facts.items()]),
        "<h2>Summary</h2>",
        *summary_html,
        *(_img(p) for p in rep.pngs),
        "<h2>KPIs</h2>",
        _table(["KPI", "value"], kpi_rows),
    ]
    _write_html(rep.html, title, body)
    return rep


# ----------------------------------------------------------------------------- sweep


def _sweep_report(
    src: Path,
    out: Path,
    objective: str,
    cat: pd.DataFrame,
    constraints: Sequence[str] = (),
    tradeoff: str = "co2_kg",
) -> Report:
    """See :mod:`cps_sim.experiment.sweep_analysis` for what is drawn and ranked."""
    from cps_sim.experiment import sweep_analysis as sa

    params = [p for p in cat.attrs.get("param_columns", []) if p in cat]
    kpi_cols = list(cat.attrs.get("kpi_columns", []))
    cons = [sa.parse_constraint(c, kpi_cols) for c in constraints]
    other = tradeoff.lstrip("-")
    ok = cat[cat.status == "ok"]
    kpis = [k for k in SWEEP_KPIS if k in kpi_cols] or kpi_cols[:6]
    kpis = [k for k in kpis if not ok.empty and (ok[k].fillna(0) != 0).any()] or kpis
    wanted = list(
        dict.fromkeys(
            [objective, *([other] if other in kpi_cols else []), *(c.kpi for c in cons), *kpis]
        )
    )
    rep = Report(out, out / "report.html", kind="sweep")
    points = sa.point_stats(ok, params, wanted) if not ok.empty else pd.DataFrame()
    ranked = None
    if not points.empty:
        if params and kpis:
            sa.plot_sensitivity(points, params, kpis, out / "sensitivity.png")
            rep.pngs.append(out / "sensitivity.png")
        if len(params) >= 2:
            sa.plot_heatmap(points, params, objective, cons, out / "heatmap.png")
            rep.pngs.append(out / "heatmap.png")
        if other in kpi_cols and other != objective:
            sa.plot_tradeoff(
                points,
                params,
                objective,
                other,
                tradeoff.startswith("-"),
                cons,
                out / "tradeoff.png",
            )
            rep.pngs.append(out / "tradeoff.png")
        ranked = sa.rank(points, objective, cons)
    counts = cat.status.value_counts().to_dict()
    facts = {
        "results": str(src),
        "runs": len(cat),
        **{f"status {k}": v for k, v in sorted(counts.items())},
        "parameters": ", ".join(params) or "(none)",
        "design points": len(points),
        "objective": f"{objective} (lower is better)",
        "constraints": "; ".join(str(c) for c in cons) or "(none)",
        "intervals": "95 % CI of the replicate mean (Student t)",
    }
    body = [_table(["", ""], [[k, html.escape(str(v))] for k, v in facts.items()])]
    if ranked is not None:
        show = [k for k in wanted][:6]
        head = ["rank", *params, "n", *[f"{k} (mean ± CI)" for k in show], "violates"]
        rows = []
        for _, r in ranked.iterrows():
            cells = [
                str(r["rank"]) if r["rank"] else "-",
                *[_fmt(r[p]) for p in params],
                str(r["n"]),
            ]
            for k in show:
                m, lo, hi = r[f"{k}_mean"], r[f"{k}_ci_low"], r[f"{k}_ci_high"]
                half = (hi - lo) / 2 if np.isfinite(hi - lo) else math.nan
                cells.append(_fmt(m) + (f" ± {_fmt(half)}" if np.isfinite(half) else ""))
            cells.append(r["violates"])
            rows.append(cells)
        title = f"Design points ranked by {objective}" + (
            " under " + "; ".join(str(c) for c in cons) if cons else ""
        )
        body += [f"<h2>{html.escape(title)}</h2>", _table(head, rows)]
        points_csv = out / "points.csv"
        ranked.to_csv(points_csv, index=False)
    body += [_img(p) for p in rep.pngs]
    if objective in ok and not ok.empty:
        shown = ["run_id", *params, "seed", objective, *[k for k in kpis if k != objective]]
        by_run = ok.sort_values([objective, "run_id"])
        for title, part in (
            (f"Best runs (lowest {objective})", by_run.head(5)),
            (f"Worst runs (highest {objective})", by_run.tail(5)[::-1]),
        ):
            body += [
                f"<h2>{html.escape(title)}</h2>",
                _table(shown, [[_fmt(r[c]) for c in shown] for _, r in part.iterrows()]),
            ]
    bad = cat[cat.status != "ok"]
    if not bad.empty:
        cols = ["run_id", *params, "seed", "status", "error"]
        body += [
            "<h2>Runs that did not finish</h2>",
            _table(cols, [[_fmt(r[c]) for c in cols] for _, r in bad.head(50).iterrows()]),
        ]
    _write_html(rep.html, f"Sweep {src.name}", body)
    rep.points = ranked
    return rep


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    )


def _write_html(path: Path, title: str, body: list[str]) -> None:
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "figure{margin:1em 0}figcaption{font-size:12px;color:#666}"
    )
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    write_text_atomic(path, doc)
