"""Atomic results directories and deterministic file writers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cps_sim.core.errors import ResultsError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success it becomes ``final``.

    A killed or failing run leaves either the previous complete result or the
    new complete one, never a mix: files are written into
    ``.<name>.tmp-<uuid>`` and the directory is renamed into place.  An
    existing ``final`` is swapped out and removed only after the rename.
    """
    final = Path(final)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{parent}: cannot create results folder: {exc.strerror}") from None
    tmp = parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        old = None
        if final.exists():
            old = parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def write_parquet(path: Path, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    """Deterministic Parquet: same table ⇒ same bytes (no timestamps in metadata)."""
    if metadata:
        md = dict(table.schema.metadata or {})
        md.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(md)
    pq.write_table(table, path, compression="zstd", use_dictionary=True,
                   write_statistics=True)
