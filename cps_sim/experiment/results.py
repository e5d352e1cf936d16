"""Atomic results directories and deterministic file writers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cps_sim.core.errors import ResultsError, ResultsInputError, cut
from cps_sim.core.files import STAGING, TMP, fsync_dir, owned_name


@contextlib.contextmanager
def atomic_directory(
    final: Path, recheck: Callable[[Path], object] | None = None
) -> Iterator[Path]:
    """Yield a staging directory next to ``final``; on success it becomes ``final``.

    A killed or failing run leaves either the previous complete result or the
    new complete one, never a mix: files are written into a staging folder
    named ``.cps_sim-staging.<pid>.<host>.<uuid>.<name>`` (see
    :mod:`cps_sim.experiment.outdir`; leftovers of dead processes are removed
    here on the next run) and the folder is renamed into place.  The staging
    folder is created *before* the caller computes anything, so an unwritable
    location fails at once.  ``recheck(final)`` runs again just before the
    rename (the folder may have changed meanwhile); an existing ``final`` is
    swapped out and removed only after the new one is in place.
    """
    from cps_sim.experiment import outdir

    final = Path(final)
    parent = final.parent
    created = outdir.make_parents(parent)
    outdir.clean_stale(parent)
    tmp = parent / owned_name(STAGING, final.name)
    try:
        tmp.mkdir()
    except OSError as exc:
        outdir.remove_created(created)
        raise ResultsError(f"{final}: cannot write results into {parent}: {exc.strerror}") from None
    keep = False  # True once the staging folder holds results that could not be published
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        if recheck is not None:
            try:
                recheck(final)
            except ResultsError as exc:  # keep what was computed, where the user sees it
                kept = parent / f"{final.name}-unpublished-{os.getpid()}"
                os.replace(tmp, kept)
                raise ResultsError(
                    f"{exc} (it changed during the run); the new results are in {kept}"
                ) from None
        old = None
        try:
            if final.exists() and any(final.iterdir()):
                old = parent / owned_name(TMP, final.name)
                os.replace(final, old)
            os.replace(tmp, final)
        except OSError as exc:  # keep what was computed, where the user sees it
            if old is not None and not final.exists():
                os.replace(old, final)
            kept = parent / f"{final.name}-unpublished-{os.getpid()}"
            try:
                os.replace(tmp, kept)
            except OSError:
                kept = tmp
                keep = True
            raise ResultsError(
                f"{final}: cannot put the results in place: {exc.strerror}; "
                f"the new results are in {kept}"
            ) from None
        fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        outdir.remove_created(created)
        raise


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_clean(data), fh, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
        fh.write("\n")


# how every Parquet file of a run is written (also the streamed events.parquet)
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": True,
    "write_statistics": True,
}


def write_parquet(path: Path, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    """Deterministic Parquet: same table ⇒ same bytes (no timestamps in metadata)."""
    if metadata:
        md = dict(table.schema.metadata or {})
        md.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(md)
    pq.write_table(table, path, **PARQUET_OPTIONS)


# ----------------------------------------------------------------------------- reading back

_DAMAGED = "the file is damaged or not what cps_sim wrote: rerun to regenerate it"


def damaged(path: Path, exc: BaseException | str) -> ResultsError:
    """The error for a results file that exists but cannot be used (exit code 2)."""
    why = cut(exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}", 300)
    return ResultsInputError(f"{path}: cannot be read ({why}); {_DAMAGED}")


def _unusable(path: Path, exc: Any) -> ResultsError:
    """The error for a results file the input-file checks refused (an ``InputFileError``):
    missing, or there but not a file cps_sim could have written."""
    if exc.reason == "file not found":
        return ResultsInputError(f"{path}: file not found; not a complete cps_sim result")
    return damaged(path, exc.reason)


def read_json_result(path: Path) -> dict[str, Any]:
    """A JSON object written by cps_sim (``manifest.json``, ``kpis.json``, ``run.json``)
    read back through :func:`cps_sim.core.files.read_json_input`: a missing, empty, cut,
    garbage, too deeply nested or non-object file, a FIFO or a folder in its place, is a
    :class:`ResultsError` naming the file."""
    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import read_json_input

    try:
        data = read_json_input(path, what="cps_sim results file")
    except InputFileError as exc:
        raise _unusable(path, exc) from None
    if not isinstance(data, dict):
        raise damaged(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def read_parquet_result(path: Path, columns: list[str] | None = None):
    """A Parquet file written by cps_sim as a DataFrame; a file that is missing, not a
    regular file (a folder would be read as an empty dataset) or not Parquet is a
    :class:`ResultsError` naming the file."""
    import pandas as pd

    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import require_regular_file

    try:
        require_regular_file(path, what="Parquet file")
    except InputFileError as exc:
        raise _unusable(path, exc) from None
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise damaged(path, exc) from None


def require_columns(df: Any, path: Path, columns: tuple[str, ...]) -> None:
    """:class:`ResultsError` when a table read back lacks columns cps_sim always writes."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise damaged(path, f"no column {', '.join(map(repr, missing))}")


def read_kpis(path: Path) -> dict[str, float]:
    """``kpis.json`` read back: names to numbers (``null`` is NaN, as written)."""
    data = read_json_result(path)
    out: dict[str, float] = {}
    for key, value in data.items():
        if value is None:
            out[key] = math.nan
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                out[key] = float(value)
            except OverflowError:
                raise damaged(path, f"KPI {key!r} is not a number") from None
        else:
            raise damaged(path, f"KPI {key!r} is {type(value).__name__}, not a number")
    return out


def read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` read back; its ``scenario`` (when present) must be a mapping."""
    data = read_json_result(path)
    if not isinstance(data.get("scenario", {}), dict):
        raise damaged(path, "'scenario' is not a mapping")
    return data


def read_run(src: Path) -> tuple[Any, dict[str, float], dict[str, Any]]:
    """A run folder read back for ``report`` and ``compare``: its time series indexed by
    local time (the scenario's zone), its KPIs and its manifest.  A missing or damaged
    file, a time series without rows or ``time`` column, an unknown zone: a
    :class:`ResultsInputError` naming the file."""
    import pandas as pd

    path = src / "timeseries.parquet"
    ts = read_parquet_result(path)
    kpis = read_kpis(src / "kpis.json")  # a run folder always has both (a missing one is
    manifest = read_manifest(src / "manifest.json")  # a damaged or foreign folder)
    require_columns(ts, path, ("time",))
    if ts.empty:
        raise damaged(path, "no rows")
    tz = str((manifest.get("scenario") or {}).get("timezone", "UTC"))
    try:
        ts = ts.set_index(pd.DatetimeIndex(ts["time"]).tz_convert(tz)).drop(columns="time")
    except Exception as exc:  # not a time column, or an unknown zone in the manifest
        raise damaged(path, exc) from None
    return ts, kpis, manifest
