"""The scenario gallery: every built-in scenario's question, headline KPIs, claims and a plot.

``cps-sim report --gallery [SCENARIOS_DIR] [--out docs]`` runs every ``*.yaml`` of the
folder at its own size and seed (no overrides), and writes

* ``<out>/gallery.md`` — per scenario: the question (the first line of its header
  comment), its description, the command that reproduces it, a table of headline KPIs
  (the KPIs its ``expect:`` names, plus the usual site and system KPIs), its claims with
  their results, and one small plot;
* ``<out>/gallery/<name>.png`` — grid exchange and PV over the run (left) and the mean
  daily profile or the system dispatch (right), ~40-80 KB each;
* ``<out>/gallery/gallery.json`` — the same numbers, machine-readable (the test that
  checks the gallery against a fresh run reads it).

Numbers are printed with four significant digits; runs are deterministic (same scenario
and seed give the same results), so a fresh run reproduces every printed number.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from cps_sim.core.errors import ResultsError

SITE_KPIS = (
    "self_sufficiency",
    "grid_import_kwh",
    "grid_export_kwh",
    "peak_import_kw",
    "cost_jpy",
    "co2_kg",
    "unserved_kwh",
)
SYSTEM_KPIS = (
    "system_re_share",
    "system_co2_intensity_g_per_kwh",
    "system_unserved_mwh",
    "system_curtailed_mwh",
)
MAX_KPIS = 12
DPI = 72


@dataclass
class Entry:
    name: str
    file: str
    question: str
    description: str
    kpis: dict[str, float]
    claims: list[dict[str, Any]] = field(default_factory=list)
    image: str = ""
    wall_time_s: float = 0.0


def fmt(v: float) -> str:
    """How the gallery prints a number (4 significant digits; thousands separated)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if abs(v) < 1e-9:
        return "0"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def question(path: Path) -> str:
    """The first sentence of the scenario's header comment (its question or claim)."""
    parts: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s.startswith("#"):
            if parts or s:
                break
            continue
        text = s.lstrip("#").strip()
        if not text:
            if parts:
                break
            continue
        parts.append(text)
        if text.endswith((".", "?", ":", ")")) or len(parts) == 3:
            break
    text = " ".join(parts)
    end = text.find(". ")
    return (text[: end + 1] if end > 0 else text).rstrip(":")


def headline(kpis: dict[str, float], expect_texts: list[str]) -> list[str]:
    named = []
    for t in expect_texts:
        named += re.findall(r"kpi\.([A-Za-z0-9_]+)", t)
    order = [*named, *SITE_KPIS, *(SYSTEM_KPIS if "system_demand_mwh" in kpis else ())]
    out: list[str] = []
    for k in order:
        if k in kpis and k not in out:
            out.append(k)
    return out[:MAX_KPIS]


def _plot(ts: pd.DataFrame, path: Path, title: str) -> None:
    kw = ts / 1000.0
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw={"width_ratios": [2.2, 1]})
    for col, label, colour in (
        ("grid_import_w", "grid import", "#3969ac"),
        ("grid_export_w", "grid export", "#e73f74"),
        ("pv_generation_w", "PV", "#f2b701"),
        ("ev_charging_w", "EV charging", "#11a579"),
    ):
        if col in kw and kw[col].abs().sum() > 0:
            a.plot(kw.index, kw[col], lw=0.8, color=colour, label=label)
    a.set_ylabel("sites [kW]", fontsize=8)
    a.legend(fontsize=7, ncol=4, loc="upper left")
    a.tick_params(labelsize=7)
    if "system_demand_w" in ts:
        mw = ts / 1e6
        hour = mw.index.hour + mw.index.minute / 60.0
        for col, label in (
            ("system_demand_w", "demand"),
            ("system_plants_w", "plants"),
            ("system_utility_pv_w", "utility PV"),
            ("system_wind_w", "wind"),
            ("system_curtailment_w", "curtailment"),
        ):
            if col in mw and mw[col].abs().sum() > 0:
                prof = mw[col].groupby(hour).mean()
                b.plot(prof.index, prof.values, lw=1.0, label=label)
        b.set_ylabel("system, mean day [MW]", fontsize=8)
    else:
        hour = kw.index.hour + kw.index.minute / 60.0
        for col, label in (
            ("load_w", "load"),
            ("pv_generation_w", "PV"),
            ("grid_import_w", "import"),
        ):
            if col in kw and kw[col].abs().sum() > 0:
                prof = kw[col].groupby(hour).mean()
                b.plot(prof.index, prof.values, lw=1.0, label=label)
        b.set_ylabel("mean day [kW]", fontsize=8)
    b.set_xlim(0, 24)
    b.set_xticks(range(0, 25, 6))
    b.legend(fontsize=6)
    b.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def run_entry(path: Path, img_dir: Path, overrides: list[str] | None = None) -> Entry:
    """Run one scenario file as it is and build its gallery entry."""
    from cps_sim.experiment.run import run_file

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".cps_sim-gallery-") as tmp:
        res = run_file(path, overrides or [], out_dir=Path(tmp) / "run")
        manifest = json.loads((res.out_dir / "manifest.json").read_text(encoding="utf-8"))
        ts = pd.read_parquet(res.out_dir / "timeseries.parquet")
    tz = manifest["scenario"].get("timezone", "UTC")
    ts = ts.set_index(pd.DatetimeIndex(ts["time"]).tz_convert(tz)).drop(columns="time")
    rep = res.expectations
    texts = [r.text for r in rep.results] if rep else []
    keys = headline(res.kpis, texts)
    name = manifest["scenario"]["name"]
    img = img_dir / f"{name}.png"
    _plot(ts, img, f"{name}: {manifest['scenario'].get('description', '')}"[:110])
    claims = (
        [{"name": r.name, "check": r.text, "status": r.status} for r in rep.results] if rep else []
    )
    return Entry(
        name,
        str(path),
        question(path),
        manifest["scenario"].get("description", ""),
        {k: float(res.kpis[k]) for k in keys},
        claims,
        f"gallery/{img.name}",
        time.perf_counter() - t0,
    )


def write_markdown(entries: list[Entry], md: Path, scenarios_dir: str) -> None:
    mark = {
        "passed": "✓",
        "failed": "✗ FAILED",
        "vacuous": "n/a",
        "error": "✗ ERROR",
        "pending": "open",
    }
    lines = [
        "# Scenario gallery",
        "",
        "Every built-in scenario, run at its own size and seed: the question it asks, its",
        "headline KPIs, the claims it checks (`expect:`, docs/expectations.md) and one plot.",
        "Generated by",
        "",
        "```bash",
        f"cps-sim report --gallery {scenarios_dir} --out docs",
        "```",
        "",
        "(all scenarios at full size: a few minutes; `tests/e2e/test_gallery.py` reruns the",
        "fast ones and checks every number printed here). Left plot: the sites' grid",
        "exchange, PV and EV charging over the run; right: the mean day (of the sites, or of",
        "the bulk system's dispatch when the scenario has a `system:` block).",
        "",
    ]
    for e in entries:
        lines += [f"## {e.name}", ""]
        if e.question:
            lines += [f"**{e.question}**", ""]
        if e.description:
            lines += [e.description, ""]
        lines += [f"Reproduce: `cps-sim run {e.file}`", "", "| KPI | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in e.kpis.items()]
        if e.claims:
            lines += ["", "Claims:", ""]
            lines += [
                f"- {mark.get(c['status'], c['status'])} `{c['name']}`: `{c['check']}`"
                for c in e.claims
            ]
        lines += ["", f"![{e.name}]({e.image})", ""]
    md.write_text("\n".join(lines), encoding="utf-8")


def build_gallery(
    scenarios_dir: str | Path = "scenarios",
    out_dir: str | Path = "docs",
    only: list[str] | None = None,
) -> list[Entry]:
    """Run the scenarios and write gallery.md, gallery/*.png and gallery/gallery.json."""
    src = Path(scenarios_dir)
    files = sorted(src.glob("*.yaml"))
    if only:
        files = [f for f in files if f.stem in only]
    if not files:
        raise ResultsError(f"{src}: no scenario files (*.yaml)")
    out = Path(out_dir)
    md = out / "gallery.md"
    if md.exists() and not md.read_text(encoding="utf-8").startswith("# Scenario gallery"):
        raise ResultsError(
            f"{md}: exists and was not written by cps-sim report --gallery; "
            "cps_sim will not overwrite it (give another --out)"
        )
    img_dir = out / "gallery"
    img_dir.mkdir(parents=True, exist_ok=True)
    entries = [run_entry(f, img_dir) for f in files]
    write_markdown(entries, out / "gallery.md", str(scenarios_dir))
    data = {
        e.name: {
            "file": e.file,
            "kpis": e.kpis,
            "claims": e.claims,
            "image": e.image,
            "wall_time_s": round(e.wall_time_s, 1),
        }
        for e in entries
    }
    (img_dir / "gallery.json").write_text(
        json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return entries
