"""What cps_sim may write to, and what it may delete: results folders and staging names.

The rule: **cps_sim never deletes, replaces or mixes into anything it did not
write.**  Before anything is simulated, an output folder given with ``--out``
is checked:

* it does not exist → created (with its missing parents);
* it exists and is empty → used;
* it holds a cps_sim result *of the same kind* (a run: ``manifest.json``
  with a ``cps_sim`` key; a sweep: ``plan.json`` with a ``cps_sim`` key) →
  a run result is replaced only when it holds nothing but what cps_sim wrote
  there; a sweep result is continued with ``--resume``;
* anything else — a file, a folder with other content, a result of the
  other kind, the scenario's own folder or one of its parents — is refused
  with one clear message, and nothing is touched.

Every temporary name cps_sim creates starts with :data:`PREFIX`
(``.cps_sim-``) and carries the creating process's id and host, so a later
run removes exactly the leftovers of dead cps_sim processes and never a
user's hidden file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cps_sim.core.errors import ResultsError
from cps_sim.core.files import PREFIX, host_tag
from cps_sim.experiment.summary import BLOCK_PLOT_FILES

MARKER = "cps_sim"  # key in manifest.json (runs) and plan.json (sweeps)
# What `cps-sim report` writes into RESULTS_DIR/report (a report folder may be replaced
# with a run result when it holds only these).
REPORT_FILES = (
    frozenset(
        {
            "report.html",
            "energy_flows.png",
            "soc_price.png",
            "daily_profiles.png",
            "sensitivity.png",
            "tradeoff.png",
            "heatmap.png",
            "points.csv",
        }
    )
    | BLOCK_PLOT_FILES
)


def _owner(entry: str) -> tuple[int, str] | None:
    """(pid, host) of a name made by :func:`owned_name`, else None."""
    if not entry.startswith(PREFIX):
        return None
    parts = entry.split(".", 5)  # '', 'cps_sim-kind', pid, host, uuid, name
    if len(parts) < 6 or not parts[2].isdigit():
        return None
    return int(parts[2]), parts[3]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True  # a zombie counts as alive here: never remove what may still be in use


def clean_stale(folder: Path) -> list[Path]:
    """Remove the staging leftovers of dead cps_sim processes (this host) in ``folder``.

    Only names made by :func:`owned_name` are considered; a user's file never
    matches.  Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    host = host_tag()
    for entry in entries:
        owner = _owner(entry)
        if owner is None or owner[1] != host or _alive(owner[0]) or owner[0] == os.getpid():
            continue
        p = folder / entry
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def normalise(path: str | os.PathLike[str]) -> Path:
    """Absolute path with ``.``/``..`` folded; a symbolic link is followed to its target."""
    p = Path(os.path.abspath(os.fspath(path)))
    if p.is_symlink():
        if not p.exists():
            raise ResultsError(
                f"{path}: is a broken symbolic link (to {os.readlink(p)}); give a folder"
            )
        p = p.resolve()
    return p


def _read_json(p: Path) -> Any:
    """A JSON file, or None when it cannot be read (missing, damaged, not a regular file:
    a FIFO in a results folder must not hang the check)."""
    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import read_json_input

    try:
        return read_json_input(p)
    except InputFileError:
        return None


def result_kind(folder: Path) -> str | None:
    """``"run"``, ``"sweep"`` or None: which cps_sim result ``folder`` holds, by its marker."""
    m = _read_json(folder / "manifest.json")
    if isinstance(m, dict):
        marker = m.get(MARKER)
        if isinstance(marker, dict) and marker.get("kind") == "run":
            return "run"
        if MARKER not in m and "cps-sim" in (m.get("versions") or {}):  # before the marker
            return "run"
    p = _read_json(folder / "plan.json")
    if isinstance(p, dict):
        marker = p.get(MARKER)
        if isinstance(marker, dict) and marker.get("kind") == "sweep":
            return "sweep"
        if MARKER not in p and {"runs", "param_columns", "sweep"} <= set(p):
            return "sweep"
    return None


def _listing(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(sorted(names)[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _visible_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` except cps_sim's own temporary names."""
    return [e for e in os.listdir(folder) if not e.startswith(PREFIX)]


def check_protected(out: Path, protect: Iterable[str | os.PathLike[str] | None], what: str) -> None:
    """Refuse an output folder that is, or contains, one of the input files or their folder."""
    real = Path(os.path.realpath(out))
    for f in protect:
        if f is None:
            continue
        src = Path(os.path.realpath(f))
        folder = src.parent
        if real == src:
            raise ResultsError(
                f"{out}: is the {what} input file {f} itself; give a new folder for the results"
            )
        if real == folder or real in folder.parents:
            rel = "the folder of" if real == folder else "a folder containing"
            raise ResultsError(
                f"{out}: is {rel} the input file {f}; cps_sim will not write "
                "results there; give a new folder (e.g. results/<name>)"
            )


def _foreign_in_run(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Entries of a run result that cps_sim did not write (by the manifest's file list)."""
    listed = set(manifest.get("files") or []) | {"manifest.json"}
    foreign = []
    for e in _visible_entries(folder):
        if e in listed:
            continue
        p = folder / e
        if (
            e == "report"
            and p.is_dir()
            and not p.is_symlink()
            and set(_visible_entries(p)) <= REPORT_FILES
        ):
            continue
        foreign.append(e)
    return foreign


def check_run_out(
    out: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str] | None] = ()
) -> Path:
    """Check ``cps-sim run --out``; return the folder to write (see module doc).

    Raises :class:`ResultsError` naming the folder and the reason; writes nothing.
    """
    shown = os.fspath(out)
    p = normalise(out)
    check_protected(p, protect, "scenario")
    if p.exists() and not p.is_dir():
        raise ResultsError(
            f"{shown}: exists and is not a folder; cps_sim will not replace it; "
            "give a new folder for the results"
        )
    if p.is_dir():
        try:
            entries = _visible_entries(p)
        except OSError as exc:
            raise ResultsError(f"{shown}: cannot read the folder: {exc.strerror}") from None
        if os.path.ismount(p):
            raise ResultsError(
                f"{shown}: is a mount point; a run's results folder is put in "
                "place as a whole, so it cannot be a mount point: give a new "
                "folder inside it"
            )
        if entries:
            kind = result_kind(p)
            if kind == "sweep":
                raise ResultsError(
                    f"{shown}: holds a cps_sim sweep, not a run result; give another folder"
                )
            if kind != "run":
                raise ResultsError(
                    f"{shown}: exists and is not a cps_sim run result ({len(entries)} "
                    f"entries, e.g. {_listing(entries, 3)}); cps_sim only replaces its own "
                    "results: give a new or empty folder"
                )
            foreign = _foreign_in_run(p, _read_json(p / "manifest.json") or {})
            if foreign:
                raise ResultsError(
                    f"{shown}: is a cps_sim run result but also holds files cps_sim did not "
                    f"write ({_listing(foreign)}); replacing it would delete them: move them "
                    "or give another folder"
                )
    check_writable(p, shown)
    return p


def check_writable(p: Path, shown: str) -> None:
    """The nearest existing folder at or above ``p`` must be a folder we may write into."""
    probe = p if p.is_dir() else p.parent
    while not probe.exists():
        if probe.is_symlink():
            raise ResultsError(f"{shown}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise ResultsError(
            f"{shown}: {probe} is a file, not a folder; cannot create the results folder under it"
        )
    # The folder itself is renamed into place next to it, so its parent must be writable.
    target = p.parent if p.is_dir() else probe
    if not os.access(target, os.W_OK | os.X_OK):
        raise ResultsError(
            f"{shown}: cannot write into {target} (permission denied or a read-only file system)"
        )


def check_report_out(out: Path) -> None:
    """``cps-sim report --out``: new, empty, or a folder holding only report files."""
    if out.exists() and not out.is_dir():
        raise ResultsError(f"{out}: exists and is not a folder; cps_sim will not replace it")
    if out.is_dir():
        foreign = [e for e in _visible_entries(out) if e not in REPORT_FILES]
        if foreign:
            raise ResultsError(
                f"{out}: holds files that are not a cps_sim report "
                f"({_listing(foreign)}); cps_sim will not overwrite or mix "
                "into them: give a new or empty folder"
            )
    check_writable(out, str(out))


def check_sweep_out(
    out: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str] | None], resume: bool
) -> Path:
    """Check ``cps-sim sweep --out``; return the folder.  Writes nothing.

    New or empty: fine.  A cps_sim sweep: fine with ``--resume`` (the plan
    is compared later, under the sweep's lock), refused without it when it
    holds runs.  Anything else is refused.
    """
    shown = os.fspath(out)
    p = normalise(out)
    check_protected(p, protect, "sweep")
    if p.exists() and not p.is_dir():
        raise ResultsError(
            f"{shown}: exists and is not a folder; cps_sim will not replace it; "
            "give a new folder for the sweep"
        )
    if p.is_dir():
        try:
            entries = _visible_entries(p)
        except OSError as exc:
            raise ResultsError(f"{shown}: cannot read the folder: {exc.strerror}") from None
        if entries:
            kind = result_kind(p)
            if kind == "run":
                raise ResultsError(
                    f"{shown}: holds a cps_sim run result, not a sweep; give another folder"
                )
            if kind != "sweep":
                raise ResultsError(
                    f"{shown}: exists and is not a cps_sim sweep folder ({len(entries)} "
                    f"entries, e.g. {_listing(entries, 3)}); a sweep writes hundreds of "
                    "files and cps_sim will not mix them into yours: give a new or empty "
                    "folder"
                )
            if not resume:
                raise ResultsError(
                    f"{shown}: already holds sweep results; pass --resume to "
                    "continue that sweep, or choose another --out"
                )
    check_writable(p, shown)
    return p


def remove_created(created: Sequence[Path]) -> None:
    """Remove folders this process created, innermost first, if they are still empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def make_parents(p: Path) -> list[Path]:
    """``mkdir -p`` that returns the folders it created (outermost first)."""
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        q = q.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            remove_created(created)
            raise ResultsError(f"{d}: cannot create folder: {exc.strerror}") from None
        created.append(d)
    return created
