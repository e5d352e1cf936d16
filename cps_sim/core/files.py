"""Writing files so that a reader never sees half of one: the one atomic-write helper.

Every temporary name cps_sim creates starts with :data:`PREFIX` (``.cps_sim-``) and
carries the creating process's id and host (:func:`owned_name`), so a later run removes
exactly the leftovers of dead cps_sim processes
(:func:`cps_sim.experiment.outdir.clean_stale`) and never a user's hidden file.

:func:`write_atomic` fills such a temporary file in the target's folder, flushes it to
disk (``durable``), renames it over the target (``os.replace``: readers see the old file
or the new one) and removes it again on any failure.  Results *folders* are published
the same way, as a whole, by :func:`cps_sim.experiment.results.atomic_dir`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

PREFIX = ".cps_sim-"
STAGING = f"{PREFIX}staging"
TMP = f"{PREFIX}tmp"


def host_tag() -> str:
    """This host's name, reduced to ``[A-Za-z0-9_-]`` and 40 characters (for owned names)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]


def owned_name(kind: str, name: str) -> str:
    """A temporary name owned by this process: ``.cps_sim-<kind>.<pid>.<host>.<uuid>.<name>``."""
    return f"{kind}.{os.getpid()}.{host_tag()}.{uuid.uuid4().hex[:8]}.{name}"


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; silently a no-op where the
    platform cannot open folders."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, durable: bool = True
) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file owned by this
    process in the same folder, which is fsynced (``durable``) and renamed over ``path``.

    On any failure (including ``KeyboardInterrupt``) the temporary file is removed and
    ``path`` is left as it was.  The folder must exist.  Returns ``path``.
    """
    target = Path(path)
    tmp = target.with_name(owned_name(TMP, target.name))
    try:
        write(tmp)
        if durable:
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """:func:`write_atomic` of a UTF-8 text."""
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"), durable=durable)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> Path:
    """:func:`write_atomic` of ``obj`` as JSON (indent 1, sorted keys, ``str`` for the
    rest); creates the folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=1, sort_keys=True, default=str)
    return write_text_atomic(target, text, durable=durable)
