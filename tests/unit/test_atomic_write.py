"""The one atomic-write helper (cps_sim.core.files) and that cps_sim has no other."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cps_sim.core.files import PREFIX, write_atomic, write_json_atomic, write_text_atomic
from cps_sim.experiment.outdir import clean_stale

PACKAGE = Path(__file__).resolve().parents[2] / "cps_sim"


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    write_text_atomic(target, "new ünïcode")
    assert target.read_text(encoding="utf-8") == "new ünïcode"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.parquet"
    target.write_bytes(b"old")

    def half(tmp: Path) -> None:
        tmp.write_bytes(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, half)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


def test_temporary_names_are_owned_and_cleaned_when_their_process_is_gone(tmp_path: Path):
    seen: list[str] = []
    write_atomic(tmp_path / "x.json", lambda tmp: (seen.append(tmp.name), tmp.write_text("1")))
    assert seen[0].startswith(PREFIX) and seen[0].endswith(".x.json")
    # a leftover of a dead process (pid 2**22 + 1 is above Linux's default pid_max)
    stale = tmp_path / seen[0].replace(seen[0].split(".")[2], str(2**22 + 1), 1)
    stale.write_text("leftover")
    (tmp_path / ".user.tmp").write_text("not ours")
    assert clean_stale(tmp_path) == [stale]
    assert (tmp_path / ".user.tmp").exists()


def test_json_creates_the_folder(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "d" / "r.json", {"b": 1, "a": [1.5]}, durable=False)
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}


def test_no_other_module_renames_a_temporary_file_into_place() -> None:
    """``os.replace``/``os.rename``/``Path.replace`` appear only in core/files.py and in
    experiment/results.py + worker.py, which publish whole result folders."""
    allowed = {"core/files.py", "experiment/results.py", "experiment/worker.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            f = node.func
            if (
                isinstance(f.value, ast.Name)
                and f.value.id == "os"
                and f.attr in ("replace", "rename")
                and rel not in allowed
            ):
                found.append(f"{rel}:{node.lineno}")
            if f.attr == "replace" and isinstance(f.value, ast.Name) and f.value.id == "tmp":
                found.append(f"{rel}:{node.lineno}")
    assert found == []
