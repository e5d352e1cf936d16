"""Hostile and malformed input, by class of problem, for every command that reads a file.

Each class is one parametrised test over its kinds and the commands (or fields) it
applies to, run in-process through the console entry point (``cps_sim.cli.main``) with a
timeout, so a hang fails the test instead of stalling the suite.  Every case asserts:
a non-zero exit, one ``error:`` message without a traceback that names the file (and
the path inside it where there is one), and nothing changed in the workspace.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import SCENARIO, SWEEP, invoke, run_cli

pytestmark = pytest.mark.timeout(60)


def snapshot(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif p.is_file() and not p.is_fifo():
                out[rel] = ("file", st.st_size, st.st_mtime_ns)
            else:
                out[rel] = ("other", st.st_mode)
    return out


def refused(code: int, out: str, err: str, *words: str) -> None:
    """The one-error contract: non-zero exit, ``error:`` first, no traceback, no internal
    error, and every word (file name, path inside it, problem) in the message."""
    assert code != 0, out
    assert err.startswith("error:"), err
    assert "Traceback" not in out + err
    assert "internal error" not in err, err
    assert len(err) < 20_000, f"{len(err)} characters of error"
    for w in words:
        assert w in err, (w, err)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """Scenario, sweep, a finished run, and the hostile non-regular files."""
    ws = tmp_path_factory.mktemp("hostile")
    (ws / "tiny.yaml").write_text(SCENARIO)
    (ws / "sweep.yaml").write_text(SWEEP)
    r = run_cli(["run", "tiny.yaml", "--out", "run", "-q"], cwd=ws)
    assert r.returncode == 0, r.stderr
    os.mkfifo(ws / "fifo.yaml")
    os.symlink("fifo.yaml", ws / "link_to_fifo.yaml")
    (ws / "folder.yaml").mkdir()
    (ws / "userdir").mkdir()
    (ws / "userdir" / "thesis.tex").write_text("\\begin{document}")
    return ws


@pytest.fixture
def here(ws: Path, monkeypatch) -> Path:
    monkeypatch.chdir(ws)
    monkeypatch.setenv("CI", "true")
    return ws


def _check_untouched(ws: Path, before: dict[str, object], fresh: Path) -> None:
    assert snapshot(ws) == before, "files in the workspace changed"
    assert not fresh.exists() or not any(fresh.iterdir())


# ----------------------------------------------------------------------------- class 1
# Not a regular file: read forever (FIFO, /dev/zero) or misread (a folder) before.

NOT_REGULAR = {
    "fifo": ("fifo.yaml", "named pipe"),
    "symlink to fifo": ("link_to_fifo.yaml", "named pipe"),
    "folder": ("folder.yaml", "directory"),
    "char device": ("/dev/zero", "character device"),
    "missing": ("nope.yaml", "not found"),
}

FILE_COMMANDS = {
    "validate": lambda f, o: ["validate", f],
    "run": lambda f, o: ["run", f, "--out", o, "-q"],
    "hil": lambda f, o: ["hil", f, "--out", o, "-q"],
    "sweep": lambda f, o: ["sweep", f, "--out", o, "-q", "--workers", "1"],
    "emulate": lambda f, o: ["emulate", f, "--duration", "1s", "-q"],
}


@pytest.mark.parametrize("kind", list(NOT_REGULAR))
@pytest.mark.parametrize("command", list(FILE_COMMANDS))
def test_input_that_is_not_a_regular_file_is_refused(here, tmp_path, capsys, command, kind):
    name, what = NOT_REGULAR[kind]
    fresh = tmp_path / "out"
    before = snapshot(here)
    code, out, err = invoke(FILE_COMMANDS[command](name, str(fresh)), capsys)
    refused(code, out, err, Path(name).name, what)
    _check_untouched(here, before, fresh)


@pytest.mark.parametrize("kind", ["fifo", "folder", "char device"])
@pytest.mark.parametrize(
    "field", ["weather: {source: csv, file: X}", "tariff: {type: dynamic, prices_csv: X}"]
)
def test_referenced_data_file_that_is_not_a_regular_file_is_refused_by_validate_and_run(
    here, tmp_path, capsys, kind, field
):
    name = NOT_REGULAR[kind][0]
    (here / "refs.yaml").write_text(SCENARIO + field.replace("X", name) + "\n")
    key = field.split(":")[0]
    try:
        before = snapshot(here)
        for args in (["validate", "refs.yaml"], ["run", "refs.yaml", "--out", tmp_path / "o"]):
            code, out, err = invoke(args, capsys)
            refused(code, out, err, "refs.yaml", key)
            assert snapshot(here) == before
    finally:
        (here / "refs.yaml").unlink()


def test_validate_applies_runs_rule_for_files_outside_the_scenario_folder(here, tmp_path, capsys):
    outside = tmp_path / "weather.csv"
    outside.write_text("timestamp,ghi_w_m2,temp_air_c,wind_speed_m_s\n")
    (here / "outside.yaml").write_text(SCENARIO + f"weather: {{source: csv, file: {outside}}}\n")
    try:
        code, out, err = invoke(["validate", "outside.yaml"], capsys)
        refused(code, out, err, "outside.yaml", "weather.file", "outside the scenario folder")
    finally:
        (here / "outside.yaml").unlink()


# ----------------------------------------------------------------------------- class 2
# YAML structure: depth, alias bombs and cycles, object tags, several documents, size.

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
YAML_BOMBS = {
    "deep flow list": ("description: " + "[" * 100_000 + "]" * 100_000 + "\n", "nest"),
    "deep flow map": ("x: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", "nested"),
    "deep block map": (
        "".join(" " * i + f"k{i}:\n" for i in range(80)) + " " * 80 + "v: 1\n",
        "nested",
    ),
    "alias bomb": (ALIAS_BOMB, "alias"),
    "many aliases": ("a: &a 1\nb: [" + ", ".join(["*a"] * 500) + "]\n", "aliases"),
    "recursive anchor": ("a: &a [*a]\n", "inside itself"),
    "recursive merge": ("x: &x\n  <<: *x\n", "inside itself"),
    "python tag": ("x: !!python/object/apply:os.system ['true']\n", "!!python/object"),
    "binary tag": ("name: !!binary aGVsbG8=\n", "!!binary"),
    "set tag": ("name: !!set {a, b}\n", "!!set"),
    "local tag": ("name: !foo tiny\n", "!foo"),
    "two documents": ("name: a\n---\nname: b\n", "second YAML document"),
    "too large": ("x: " + "a" * (2 * 1024 * 1024) + "\n", "larger than"),
}


def _yaml_file(here: Path, kind: str, text: str, suffix: str) -> str:
    name = f"bomb_{kind.replace(' ', '_')}{suffix}.yaml"
    (here / name).write_text(text)
    return name


@pytest.mark.parametrize("kind", list(YAML_BOMBS))
@pytest.mark.parametrize("command", ["validate", "sweep", "emulate"])
def test_yaml_bombs_are_refused_before_anything_is_built(here, tmp_path, capsys, command, kind):
    text, word = YAML_BOMBS[kind]
    name = _yaml_file(here, kind, text, f"_{command}")
    try:
        before = snapshot(here)
        args = FILE_COMMANDS[command](name, str(tmp_path / "out"))
        code, out, err = invoke(args, capsys)
        refused(code, out, err, name, word)
        assert snapshot(here) == before
    finally:
        (here / name).unlink()


def test_forty_thousand_unknown_keys_list_a_hundred_problems(here, capsys):
    (here / "keys.yaml").write_text(SCENARIO + "".join(f"k{i}: {i}\n" for i in range(40_000)))
    try:
        code, out, err = invoke(["validate", "keys.yaml"], capsys)
        refused(code, out, err, "keys.yaml", "k0: unknown key", "more problems")
        assert err.count("unknown key") <= 101
    finally:
        (here / "keys.yaml").unlink()


# ----------------------------------------------------------------------------- class 3
# Encodings and documents that are not a mapping.

ENCODINGS = {
    "empty": (b"", "mapping"),
    "null": (b"null\n", "mapping"),
    "list": (b"- 1\n- 2\n", "mapping"),
    "text": (b"hello\n", "mapping"),
    "utf-16": (SCENARIO.encode("utf-16"), "UTF-16"),
    "utf-16 without BOM": (SCENARIO.encode("utf-16-le"), "invalid YAML"),
    "binary": (bytes(range(256)) * 4, "UTF-8"),
    "latin-1": (("description: caf\xe9\n" + SCENARIO).encode("latin-1"), "UTF-8"),
    "nul byte": (SCENARIO.encode() + b"\x00\n", "invalid YAML"),
}


@pytest.mark.parametrize("kind", list(ENCODINGS))
def test_undecodable_or_non_mapping_files_are_refused(here, capsys, kind):
    data, word = ENCODINGS[kind]
    (here / "enc.yaml").write_bytes(data)
    try:
        for args in (["validate", "enc.yaml"], ["sweep", "enc.yaml", "--out", "never"]):
            code, out, err = invoke(args, capsys)
            refused(code, out, err, "enc.yaml", word)
        assert not (here / "never").exists()
    finally:
        (here / "enc.yaml").unlink()


def test_a_utf8_byte_order_mark_is_accepted(here, capsys):
    (here / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + SCENARIO.encode())
    try:
        code, _, err = invoke(["validate", "bom.yaml"], capsys)
        assert code == 0, err
    finally:
        (here / "bom.yaml").unlink()


# ----------------------------------------------------------------------------- class 4
# Numbers: non-finite, huge, booleans and text where numbers belong, out of range.

BAD_NUMBERS = {
    "nan": (".nan", "finite"),
    "inf": (".inf", "finite"),
    "-inf": ("-.inf", "finite"),
    "1e309": ("1e309", "finite"),
    "10**400": ("1" + "0" * 400, ""),
    "true": ("true", "boolean"),
    "text": ("'10'", "text"),
    "negative": ("-5", "must be"),
    "-0": ("-0.0", "must be"),
}
NUMBER_FIELDS = ["tick_s", "duration_days", "sites[0].count", "sites[0].battery.capacity_kwh"]


@pytest.mark.parametrize("value", list(BAD_NUMBERS))
@pytest.mark.parametrize("field", NUMBER_FIELDS)
def test_bad_numbers_are_refused_with_the_path(here, capsys, field, value):
    text, word = BAD_NUMBERS[value]
    code, out, err = invoke(["validate", "tiny.yaml", "--set", f"{field}={text}"], capsys)
    refused(code, out, err, "tiny.yaml", f"{field}:", word)
    assert code == 2


@pytest.mark.parametrize(
    "value",
    ["1775400000", "1775400000.5", "'1775400000'", "2026-02-30T00:00:00+09:00", "2026-04-06"],
)
def test_start_must_be_a_date_time_with_offset(here, capsys, value):
    code, out, err = invoke(["validate", "tiny.yaml", "--set", f"start={value}"], capsys)
    refused(code, out, err, "tiny.yaml", "start")


@pytest.mark.parametrize(
    "value", ["A" * 100_000, "Mars/Olympus", "../../../../etc/passwd", "Asia", "9"]
)
def test_time_zones_must_be_iana_names(here, capsys, value):
    code, out, err = invoke(["validate", "tiny.yaml", "--set", f"timezone={value}"], capsys)
    refused(code, out, err, "tiny.yaml", "timezone")
    assert len(err) < 400


@pytest.mark.parametrize(
    "dist,word",
    [
        ("{distribution: normal, mean: 10, std: 0.001, min: 50, max: 60}", "standard deviations"),
        ("{distribution: normal, mean: 10, std: 1e-300, min: 11, max: 12}", "standard deviations"),
        ("{distribution: lognormal, mean: 5, cv: 0.001, max: 1}", "standard deviations"),
        ("{distribution: lognormal, mean: 1e-300, cv: 100}", "round to 0"),
        ("{distribution: lognormal, mean: 1e15, cv: 100}", "give 'max'"),
        ("{distribution: uniform, low: 10, high: 1}", "low must be <= high"),
    ],
)
def test_distributions_that_cannot_be_drawn_are_refused(here, capsys, dist, word):
    path = "sites[0].battery.capacity_kwh"
    code, out, err = invoke(["validate", "tiny.yaml", "--set", f"{path}={dist}"], capsys)
    refused(code, out, err, "tiny.yaml", path, word)
    assert "valid number" not in err


def test_a_run_too_large_for_memory_is_refused_by_validate_naming_the_file(here, capsys):
    args = ["--set", "sites[0].count=10000000", "--set", "duration_days=3650"]
    code, out, err = invoke(["validate", "tiny.yaml", *args, "--set", "tick_s=60"], capsys)
    refused(code, out, err, "tiny.yaml", "too large", "GB")
    assert code == 2


# ----------------------------------------------------------------------------- class 5
# Paths of --set and of sweep parameters: one strict grammar.

BAD_PATHS = [
    "sites[[0]].count",
    "sites[0]].count",
    "sites[a].count",
    "sites[-1].count",
    "sites..count",
    ".seed",
    "seed.",
    "sites[0]count",
    "sites[" + "9" * 40 + "].count",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_refused_by_set_and_by_sweeps(here, tmp_path, capsys, path):
    code, out, err = invoke(["validate", "tiny.yaml", "--set", f"{path}=2"], capsys)
    refused(code, out, err, "tiny.yaml", "bad path")
    (here / "badpath.yaml").write_text(SWEEP.replace("sites[0].pv.share", path))
    try:
        code, out, err = invoke(["sweep", "badpath.yaml", "--out", tmp_path / "o"], capsys)
        refused(code, out, err, "badpath.yaml", "parameters[0].path")
        assert not (tmp_path / "o").exists()
    finally:
        (here / "badpath.yaml").unlink()


@pytest.mark.parametrize(
    "seeds,word",
    [("[1.5]", "fractional"), ("['1']", "text"), ("[true]", "boolean"), ("[-1]", ">= 0")],
)
def test_sweep_seeds_are_whole_numbers(here, tmp_path, capsys, seeds, word):
    (here / "seeds.yaml").write_text(SWEEP + f"seeds: {seeds}\n")
    try:
        code, out, err = invoke(["sweep", "seeds.yaml", "--out", tmp_path / "o"], capsys)
        refused(code, out, err, "seeds.yaml", "seeds[0]", word)
    finally:
        (here / "seeds.yaml").unlink()


# ----------------------------------------------------------------------------- class 6
# Damaged run folders for report and compare; nothing written into them.

DAMAGE = {
    "kpis missing": ("kpis.json", None),
    "kpis empty": ("kpis.json", b""),
    "kpis cut": ("kpis.json", b'{"grid_import_kwh": 1'),
    "kpis garbage": ("kpis.json", bytes(range(256))),
    "kpis a list": ("kpis.json", b"[1, 2]"),
    "kpis text values": ("kpis.json", b'{"grid_import_kwh": "x"}'),
    "kpis nested deep": ("kpis.json", b"[" * 100_000 + b"]" * 100_000),
    "kpis a fifo": ("kpis.json", "fifo"),
    "manifest a list": ("manifest.json", b"[]"),
    "manifest a fifo": ("manifest.json", "fifo"),
    "timeseries garbage": ("timeseries.parquet", bytes(range(256)) * 8),
    "timeseries empty": ("timeseries.parquet", b""),
    "timeseries a folder": ("timeseries.parquet", "folder"),
    "timeseries a fifo": ("timeseries.parquet", "fifo"),
}


@pytest.fixture(scope="module")
def damaged(ws: Path) -> Path:
    root = ws / "damaged"
    root.mkdir()
    for kind, (name, content) in DAMAGE.items():
        d = root / kind.replace(" ", "_")
        shutil.copytree(ws / "run", d)
        (d / name).unlink()
        if content == "fifo":
            os.mkfifo(d / name)
        elif content == "folder":
            (d / name).mkdir()
        elif content is not None:
            (d / name).write_bytes(content)
    return root


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_run_folders_are_named_and_left_alone(here, damaged, tmp_path, capsys, kind):
    d = damaged / kind.replace(" ", "_")
    name = DAMAGE[kind][0]
    fresh = tmp_path / "out"
    before = snapshot(here)
    for args in (["report", d, "--out", fresh], ["compare", "run", d, "--out", fresh]):
        code, out, err = invoke(args, capsys)
        refused(code, out, err, d.name)
        assert code == 2, (args[0], err)  # a damaged folder given as input is bad input
        if "no " + name not in err:  # compare: 'not a cps_sim run folder (no kpis.json)'
            assert f"{d.name}/{name}" in err, err
        _check_untouched(here, before, fresh)


@pytest.mark.parametrize("target", ["run", "fifo.yaml", "folder.yaml", "/dev/zero"])
def test_replay_of_what_is_not_a_recording_is_refused(here, tmp_path, capsys, target):
    fresh = tmp_path / "out"
    before = snapshot(here)
    code, out, err = invoke(["replay", target, "--out", fresh], capsys)
    refused(code, out, err, Path(target).name)
    _check_untouched(here, before, fresh)


# ----------------------------------------------------------------------------- class 7
# emulate: every option is checked before an embedded broker starts.


@pytest.mark.parametrize(
    "opts",
    [
        ["--start", "notadate"],
        ["--start", "99999-01-01"],
        ["--id-prefix", "../x"],
        ["--weather", "rain"],
        ["--count", "0"],
        ["--interval", "nan"],
        ["--telemetry-qos", "7"],
    ],
    ids=lambda o: " ".join(o),
)
def test_emulate_options_are_refused_before_a_broker_starts(
    here, tmp_path, capsys, monkeypatch, opts
):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a broker folder goes
    code, out, err = invoke(["emulate", "tasmota_plug", *opts, "--duration", "1s"], capsys)
    refused(code, out, err, opts[0].lstrip("-").split("-")[0])
    assert "embedded" not in out + err
    assert not list(tmp_path.glob("cps-sim-broker-*")), "a broker was started"


def test_damaged_fixture_is_complete(damaged):
    assert sorted(p.name for p in damaged.iterdir()) == sorted(k.replace(" ", "_") for k in DAMAGE)
    assert json.loads((damaged.parent / "run" / "kpis.json").read_text())


# ----------------------------------------------------------------------------- class 8
# Damaged sweep folders: report and --resume must not hang on a FIFO nor crash.


@pytest.fixture(scope="module")
def sweep_dir(ws: Path) -> Path:
    r = run_cli(["sweep", "sweep.yaml", "--out", "sw", "-q", "--workers", "1"], cwd=ws)
    assert r.returncode == 0, r.stderr
    return ws / "sw"


SWEEP_DAMAGE = {
    "plan a fifo": ("plan.json", "fifo"),
    "plan nested deep": ("plan.json", b"[" * 100_000 + b"]" * 100_000),
    "catalog a folder": ("catalog.parquet", "folder"),
    "catalog a fifo": ("catalog.parquet", "fifo"),
    "run.json a fifo": ("RUN/run.json", "fifo"),
    "run manifest a fifo": ("RUN/manifest.json", "fifo"),
}


@pytest.mark.parametrize("kind", list(SWEEP_DAMAGE))
def test_damaged_sweep_folders_neither_hang_nor_crash(here, sweep_dir, tmp_path, capsys, kind):
    name, content = SWEEP_DAMAGE[kind]
    d = tmp_path / "sw"
    shutil.copytree(sweep_dir, d)
    first_run = sorted((d / "runs").iterdir())[0]
    target = d / name.replace("RUN", f"runs/{first_run.name}")
    target.unlink()
    if content == "fifo":
        os.mkfifo(target)
    elif content == "folder":
        target.mkdir()
    else:
        target.write_bytes(content)
    for args in (
        ["report", d, "--out", tmp_path / "rep"],
        ["sweep", "sweep.yaml", "--out", d, "--resume", "-q", "--workers", "1"],
    ):
        code, out, err = invoke(args, capsys)
        assert "Traceback" not in out + err
        assert "internal error" not in err, err
        if code != 0:
            assert err.startswith("error:"), err
    if "RUN" not in name and "catalog" not in name:
        assert target.exists()  # a damaged plan: the folder is refused, not rewritten


# ----------------------------------------------------------------------------- class 9
# hil options: checked before a broker starts or a real-time run begins; --record never
# overwrites a file cps-sim did not write.


@pytest.mark.parametrize(
    "opts,word",
    [
        (["--speed", "inf"], "--speed"),
        (["--speed", "nan"], "--speed"),
        (["--strict-lag-s", "nan"], "--strict-lag-s"),
        (["--record", "userdir/thesis.tex"], "not a cps-sim recording"),
        (["--record", "userdir"], "directory"),
        (["--record", "/dev/full"], "character device"),
        (["--record", "userdir/thesis.tex/x"], "not a folder"),
    ],
    ids=lambda o: " ".join(o) if isinstance(o, list) else o,
)
def test_hil_options_are_refused_before_the_run(here, tmp_path, capsys, opts, word):
    fresh = tmp_path / "out"
    before = snapshot(here)
    code, out, err = invoke(["hil", "tiny.yaml", *opts, "--out", fresh, "-q"], capsys)
    refused(code, out, err, word)
    _check_untouched(here, before, fresh)


def test_emulate_ca_file_that_is_a_fifo_is_refused(here, capsys):
    args = ["emulate", "tasmota_plug", "--ca-file", "fifo.yaml", "--broker", "mqtts://127.0.0.1:1"]
    code, out, err = invoke([*args, "--duration", "1s", "-q"], capsys)
    refused(code, out, err, "fifo.yaml", "named pipe")
