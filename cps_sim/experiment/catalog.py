"""The sweep catalog: one Parquet table of parameters × KPIs, derived from the run dirs.

``OUT/catalog.parquet`` has one row per planned run (``run_id`` is unique):

========== ===============================================================
run_id     deterministic id (hash of scenario, parameters, seed, version)
point      index of the design point; ``replicate`` its seed index
seed       the run's root seed
status     ``ok``, ``failed``, ``timeout``, ``invalid`` or ``missing``
<params>   one column per swept parameter (its ``name``)
<kpis>     one float column per KPI of ``kpis.json`` (``kpi_<name>`` if
           the KPI name collides with a parameter or reserved column)
wall_time_s, attempts, error_type, error
========== ===============================================================

It is rebuilt from ``plan.json``, ``runs/run_id=*/run.json`` and
``failed/*.json`` — never appended to — so a resumed sweep's catalog has
each run exactly once.  Query it with pandas::

    df = pd.read_parquet("results/pv_battery/catalog.parquet")
    df[df.status == "ok"].groupby("pv_share").self_sufficiency.mean()

or DuckDB, together with the runs' time series (hive partitioning turns the
``run_id=<id>`` folder names into a column)::

    duckdb.sql("SELECT pv_share, avg(cost_jpy) FROM 'OUT/catalog.parquet' "
               "WHERE status = 'ok' GROUP BY ALL ORDER BY 1")
    duckdb.sql("SELECT c.pv_share, max(t.grid_import_w) FROM 'OUT/catalog.parquet' c "
               "JOIN read_parquet('OUT/runs/*/timeseries.parquet', hive_partitioning=true) t "
               "USING (run_id) GROUP BY ALL")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cps_sim.core.errors import ResultsError, ResultsInputError
from cps_sim.core.files import write_atomic
from cps_sim.experiment.sweep_spec import RESERVED_COLUMNS
from cps_sim.experiment.worker import failed_path, read_record

CATALOG = "catalog.parquet"
PLAN = "plan.json"


def read_plan(out: Path) -> dict[str, Any]:
    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import read_json_input

    try:
        plan = read_json_input(out / PLAN)
    except InputFileError as exc:
        if exc.reason == "file not found":
            raise ResultsInputError(f"{out}: not a sweep results directory (no {PLAN})") from None
        raise ResultsInputError(f"{out / PLAN}: unreadable ({exc.reason})") from None
    if not isinstance(plan, dict):
        raise ResultsInputError(f"{out / PLAN}: unreadable (not a JSON object)")
    return plan


def build_catalog(out: str | Path) -> pd.DataFrame:
    """Derive the catalog table from the per-run directories (see module doc)."""
    out = Path(out)
    plan = read_plan(out)
    param_cols: list[str] = plan["param_columns"]
    rows = []
    kpi_names: list[str] = []
    for run in plan["runs"]:
        run_id = run["run_id"]
        row: dict[str, Any] = {
            "run_id": run_id,
            "point": run["point"],
            "replicate": run["replicate"],
            "seed": run["seed"],
        }
        row.update({c: run["params"].get(c) for c in param_cols})
        rec = read_record(out, run_id)
        if rec is None:
            from cps_sim.experiment.worker import read_json_or_none

            rec = read_json_or_none(failed_path(out, run_id))
        if rec is None:
            row.update(status="missing", wall_time_s=None, attempts=0, error_type=None, error=None)
        else:
            row.update(
                status=rec["status"],
                wall_time_s=rec.get("wall_time_s"),
                attempts=rec.get("attempts", 1),
                error_type=rec.get("error_type"),
                error=rec.get("error"),
            )
            for k, v in (rec.get("kpis") or {}).items():
                col = k if k not in param_cols and k not in RESERVED_COLUMNS else f"kpi_{k}"
                row[col] = float(v)
                if col not in kpi_names:
                    kpi_names.append(col)
        rows.append(row)
    base = ["run_id", "point", "replicate", "seed", "status", *param_cols]
    tail = ["wall_time_s", "attempts", "error_type", "error"]
    df = pd.DataFrame(rows, columns=[*base, *sorted(kpi_names), *tail])
    for c in param_cols:
        df[c] = _uniform_column(df[c])
    df["attempts"] = df["attempts"].astype("int64")
    df["wall_time_s"] = df["wall_time_s"].astype("float64")
    for k in kpi_names:
        df[k] = df[k].astype("float64")
    for c in ("error_type", "error"):
        df[c] = df[c].astype("string")
    df.attrs["kpi_columns"] = sorted(kpi_names)
    return df


def _uniform_column(col: pd.Series) -> pd.Series:
    """One Parquet type per parameter column.

    Numbers stay numbers; mappings and lists (e.g. a distribution as a
    parameter value) become JSON text; a column mixing kinds becomes text.
    """
    vals = [v for v in col if v is not None]
    if any(isinstance(v, (dict, list)) for v in vals):
        return col.map(lambda v: None if v is None else json.dumps(v, sort_keys=True))
    kinds = {
        bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in vals
    }
    if len(kinds) > 1:
        return col.map(lambda v: None if v is None else str(v))
    return col


def write_catalog(out: str | Path, df: pd.DataFrame | None = None) -> Path:
    """Write ``catalog.parquet`` atomically (temp file, fsync, rename)."""
    out = Path(out)
    df = build_catalog(out) if df is None else df
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"cps_sim.kpi_columns"] = json.dumps(df.attrs.get("kpi_columns", [])).encode()
    meta[b"cps_sim.param_columns"] = json.dumps(read_plan(out)["param_columns"]).encode()
    table = table.replace_schema_metadata(meta)
    path = out / CATALOG
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_catalog(out: str | Path) -> pd.DataFrame:
    """Read ``catalog.parquet`` (rebuilding it from the run dirs if absent)."""
    out = Path(out)
    path = out / CATALOG
    if not path.exists() and not path.is_symlink():
        write_catalog(out)
    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import require_regular_file

    try:
        require_regular_file(path, what="Parquet file")
        table = pq.read_table(path)
    except InputFileError as exc:
        raise ResultsInputError(f"{path}: cannot be read ({exc.reason})") from None
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise ResultsError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    df = table.to_pandas()
    meta = table.schema.metadata or {}
    df.attrs["kpi_columns"] = json.loads(meta.get(b"cps_sim.kpi_columns", b"[]"))
    df.attrs["param_columns"] = json.loads(meta.get(b"cps_sim.param_columns", b"[]"))
    return df
