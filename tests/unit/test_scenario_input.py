"""Scenario input cases Y1–Y10 of the reliability matrix: one clear error, nothing run."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from cps_sim.core.errors import ScenarioError
from cps_sim.scenario.loader import (
    MAX_FILE_BYTES,
    load_scenario,
    load_scenario_text,
    resolve_data_path,
)

GOOD = """\
name: t
start: 2026-04-01T00:00:00+09:00
duration_days: 1
sites:
  - name: homes
    count: 10
    battery: {capacity_kwh: 10}
"""


def err(text: str, file: str = "s.yaml", overrides=()) -> ScenarioError:
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(text, file, overrides)
    return ei.value


def test_good_file_loads():
    sc = load_scenario_text(GOOD, "s.yaml")
    assert sc.sites[0].battery.capacity_kwh == 10


def test_y1_wrong_type_names_file_line_and_path():
    e = err(GOOD.replace("capacity_kwh: 10", 'capacity_kwh: "ten"'))
    assert str(e).startswith("s.yaml:7:")
    assert "sites[0].battery.capacity_kwh" in str(e)
    assert "'ten'" in str(e)


def test_y1_missing_required_field():
    e = err(GOOD.replace("    count: 10\n", ""))
    assert "sites[0].count: required field is missing" in str(e)


def test_y2_unknown_key_suggests_the_right_one():
    e = err(GOOD.replace("capacity_kwh: 10", "capcity_kwh: 10"))
    assert "sites[0].battery.capcity_kwh: unknown key; did you mean 'capacity_kwh'?" in str(e)


def test_y3_impossible_physics_all_reported_at_once():
    text = GOOD.replace(
        "battery: {capacity_kwh: 10}",
        "battery: {capacity_kwh: -5, charge_efficiency: 1.2, soc_min: 0.9, "
        "soc_max: 0.5}\n    pv: {capacity_kw: {distribution: uniform, low: -1, "
        "high: 3}}",
    )
    text = text.replace("duration_days: 1", "duration_days: 0")
    e = err(text)
    msg = str(e)
    assert "sites[0].battery.capacity_kwh: must be > 0, got -5" in msg
    assert "sites[0].battery.charge_efficiency: must be <= 1, got 1.2" in msg
    assert "duration_days: must be > 0, got 0" in msg
    assert "sites[0].pv.capacity_kw" in msg and "-1" in msg
    assert len(e.issues) >= 4


def test_y3_soc_window_and_tick():
    e = err(
        GOOD.replace("capacity_kwh: 10", "capacity_kwh: 10, soc_min: 0.9, soc_max: 0.5")
        + "tick_s: 7\n"
    )
    assert "soc_min must be < soc_max" in str(e)
    assert "tick_s: must be a whole number of seconds that divides 86400" in str(e)


def test_y4_alias_bomb_rejected_fast_and_small():
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n"
    prev = "a"
    for name in "bcdefghi":
        bomb += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    e = err(bomb)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50 * 1024  # KiB
    assert "aliases" in str(e)


def test_y5_object_tags_rejected():
    e = err("name: !!python/object/apply:os.system ['echo hacked']\n")
    assert "s.yaml:1:" in str(e)
    assert "tag" in str(e)


def test_y6_huge_file_rejected_with_advice(tmp_path: Path):
    p = tmp_path / "huge.yaml"
    p.write_bytes(GOOD.encode() + b"#" * (MAX_FILE_BYTES + 10))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    assert str(p) in str(ei.value)
    assert "CSV or Parquet" in str(ei.value)


def test_y7_duplicate_keys_rejected():
    e = err(GOOD + "name: other\n")
    assert "duplicate key 'name'" in str(e)
    assert "first defined on line 1" in str(e)


def test_y8_non_utf8_reports_byte_offset(tmp_path: Path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(GOOD.encode().replace(b"homes", b"h\xf6mes"))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    assert "not valid UTF-8" in str(ei.value)
    assert "byte offset" in str(ei.value)


def test_y8_utf8_bom_accepted_utf16_rejected(tmp_path: Path):
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_scenario(p).name == "t"
    p.write_bytes(GOOD.encode("utf-16"))
    with pytest.raises(ScenarioError, match="UTF-16"):
        load_scenario(p)


def test_y8_tabs_reported_with_position():
    e = err(GOOD.replace("    count: 10", "\tcount: 10"))
    assert "s.yaml:" in str(e) and "tab" in str(e).lower()


def test_y9_path_traversal_rejected(tmp_path: Path):
    scen_dir = tmp_path / "scen"
    scen_dir.mkdir()
    (scen_dir / "ok.csv").write_text("x\n")
    assert resolve_data_path("ok.csv", scen_dir) == (scen_dir / "ok.csv").resolve()
    with pytest.raises(ScenarioError, match="outside the scenario folder"):
        resolve_data_path("../../etc/passwd", scen_dir, file="s.yaml", field="profile")
    with pytest.raises(ScenarioError, match="outside the scenario folder"):
        resolve_data_path("/etc/passwd", scen_dir)
    (scen_dir / "link.csv").symlink_to("/etc/passwd")
    with pytest.raises(ScenarioError, match="outside the scenario folder"):
        resolve_data_path("link.csv", scen_dir)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_y10_nan_and_inf_rejected(value: str):
    e = err(GOOD.replace("capacity_kwh: 10", f"capacity_kwh: {value}"))
    assert "sites[0].battery.capacity_kwh" in str(e)
    assert "finite" in str(e) or "must be > 0" in str(e)


def test_every_schema_error_names_its_path():
    # One wrong value in each section: each message carries the dotted path.
    bad = {
        "tick_s: 900": "tick_s: -1",
        "capacity_kwh: 10": "capacity_kwh: 10, power_kw: 0",
        "count: 10": "count: 0",
    }
    text = GOOD + "tick_s: 900\nlocation: {latitude: 95}\nweather: {source: rainy}\n"
    for old, new in bad.items():
        text = text.replace(old, new)
    e = err(text)
    paths = {i.path for i in e.issues}
    assert {
        "tick_s",
        "sites[0].battery.power_kw",
        "sites[0].count",
        "location.latitude",
        "weather.source",
    } <= paths
    assert all(i.line is not None for i in e.issues)


def test_overrides_apply_and_errors_name_the_path():
    sc = load_scenario_text(
        GOOD, "s.yaml", ["sites[0].battery.capacity_kwh=12", "seed=5", "sites.0.count=3"]
    )
    assert sc.sites[0].battery.capacity_kwh == 12
    assert sc.seed == 5 and sc.sites[0].count == 3
    e = err(GOOD, overrides=["sites[3].count=1"])
    assert "sites[3].count" in str(e) and "no list item" in str(e)
    e = err(GOOD, overrides=["novalue"])
    assert "expected path=value" in str(e)


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)


def test_builtin_scenarios_validate(repo: Path):
    files = sorted((repo / "scenarios").glob("*.yaml"))
    assert files, "no built-in scenarios"
    for f in files:
        load_scenario(f)
