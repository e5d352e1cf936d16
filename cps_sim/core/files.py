"""Reading input files safely, and writing files so that a reader never sees half of one.

:func:`read_input` is the one way every command reads a file it is given (scenario, sweep,
device profile, weather and data CSV, the JSON of a results folder): it refuses what is
not a regular file (a FIFO, ``/dev/zero``, ``/dev/stdin``, a folder) instead of reading
it forever, and a file over a size limit instead of filling memory.
:func:`require_regular_file` is the same check for files handed to a library reader
(Parquet).

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
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cps_sim.core.errors import InputFileError

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


# ----------------------------------------------------------------------------- reading

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _size(n: int) -> str:
    return f"{n:,} bytes"


def _refuse_mode(path: str, mode: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        raise InputFileError(
            path, f"is {_kind(mode)}, not a {what}; give a regular file saved on disk"
        )


def _open_error(path: str, exc: OSError, what: str) -> InputFileError:
    if isinstance(exc, FileNotFoundError):
        return InputFileError(path, "file not found")
    if isinstance(exc, IsADirectoryError):
        return InputFileError(path, f"is a directory, not a {what}")
    if isinstance(exc, NotADirectoryError):
        return InputFileError(path, "file not found (a part of the path is not a folder)")
    if isinstance(exc, PermissionError):
        return InputFileError(path, "permission denied")
    return InputFileError(path, f"cannot read: {exc.strerror or exc}")


def _check_name(path: str) -> None:
    if "\x00" in path:
        raise InputFileError(repr(path), "path contains a NUL byte")
    if len(path) > 4096:
        raise InputFileError(path[:80] + "...", f"path is {len(path):,} characters long")


def require_regular_file(path: str | os.PathLike[str], *, what: str = "file") -> Path:
    """``path`` if it is a regular file (symbolic links followed); else
    :class:`InputFileError` saying what it is (missing, a folder, a FIFO, a device)."""
    shown = os.fspath(path)
    _check_name(shown)
    try:
        st = os.stat(shown)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError):
            raise InputFileError(shown, f"cannot read: {exc}") from None
        raise _open_error(shown, exc, what) from None
    _refuse_mode(shown, st.st_mode, what)
    return Path(shown)


def read_input(path: str | os.PathLike[str], *, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Opened without blocking (a FIFO with no writer does not hang the open) and checked
    with ``fstat`` on the open descriptor: anything but a regular file, and a file larger
    than ``max_bytes`` (by its size, or by what it yields: ``/proc`` files report 0),
    raises :class:`InputFileError` naming the file and the problem.
    """
    shown = os.fspath(path)
    _check_name(shown)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(shown, flags)
    except OSError as exc:
        raise _open_error(shown, exc, what) from None
    try:
        st = os.fstat(fd)
        _refuse_mode(shown, st.st_mode, what)
        too_large = InputFileError(
            shown,
            f"is larger than the {_size(max_bytes)} limit for a {what}"
            + (f" ({_size(st.st_size)})" if st.st_size > max_bytes else ""),
        )
        if st.st_size > max_bytes:
            raise too_large
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            except OSError as exc:
                raise InputFileError(shown, f"cannot read: {exc.strerror or exc}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise too_large
        return b"".join(chunks)
    finally:
        os.close(fd)


MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json_input(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file"
) -> Any:
    """:func:`read_input` of a JSON document (UTF-8; NaN/Infinity accepted as Python's
    ``json`` writes them); a damaged file (empty, cut short, garbage, nested too deeply)
    raises :class:`InputFileError` with the line and column of the problem."""
    shown = os.fspath(path)
    raw = read_input(path, max_bytes=max_bytes, what=what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            shown, f"is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    if not text.strip():
        raise InputFileError(shown, f"is empty; not a {what}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            shown, f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise InputFileError(shown, "is not a JSON file cps_sim wrote: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise InputFileError(shown, f"is not valid JSON ({exc})") from None
