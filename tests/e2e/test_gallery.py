"""docs/gallery.md: every built-in scenario is in it, and its numbers match a fresh run.

The gallery runs each scenario at its own size and seed (``cps-sim report --gallery
scenarios --out docs``).  Runs are deterministic, so a fresh run must print the same
numbers.  The fast scenarios are rerun here; demand_growth_2022_mix (a fiscal year) and the
larger ones are covered by the structure checks and by tests/e2e/test_builtin_expectations.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from cps_sim.experiment.gallery import build_gallery, fmt
from cps_sim.experiment.run import run_file

REPO = Path(__file__).resolve().parents[2]
GALLERY = REPO / "docs" / "gallery.md"
FAST = ("quickstart", "self_owned_microgrid", "hil_demo", "cloudy_windless_backup")


def sections() -> dict[str, str]:
    text = GALLERY.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {p.split("\n", 1)[0].strip(): p for p in parts}


def table(section: str) -> dict[str, str]:
    return dict(re.findall(r"^\| ([a-z0-9_.]+) \| ([^|]+) \|$", section, flags=re.M))


def test_every_built_in_scenario_is_in_the_gallery_with_a_small_image():
    sec = sections()
    for f in sorted((REPO / "scenarios").glob("*.yaml")):
        assert f.stem in sec, f"{f.name} is missing from docs/gallery.md: regenerate it"
        s = sec[f.stem]
        assert f"cps-sim run scenarios/{f.name}" in s and table(s)
        img = re.search(r"!\[[^\]]*\]\(([^)]+)\)", s).group(1)
        png = GALLERY.parent / img
        assert png.stat().st_size < 150_000
        with Image.open(png) as im:
            im.verify()


@pytest.mark.parametrize("name", FAST)
def test_gallery_numbers_match_a_fresh_run(name, tmp_path):
    res = run_file(REPO / "scenarios" / f"{name}.yaml", out_dir=tmp_path / "run")
    printed = table(sections()[name])
    assert printed
    for k, v in printed.items():
        assert fmt(res.kpis[k]) == v.strip(), (
            f"{name}: {k} is {fmt(res.kpis[k])} in a fresh "
            f"run, {v} in docs/gallery.md; regenerate it: "
            "cps-sim report --gallery scenarios --out docs"
        )
    claims = set(re.findall(r"^- [^`]+`([^`]+)`: ", sections()[name], flags=re.M))
    assert claims == {r.name for r in res.expectations.results}


def test_build_gallery_writes_markdown_images_and_json(tmp_path):
    entries = build_gallery(REPO / "scenarios", tmp_path, only=["hil_demo"])
    assert [e.name for e in entries] == ["hil_demo"]
    md = (tmp_path / "gallery.md").read_text(encoding="utf-8")
    assert md.startswith("# Scenario gallery") and "## hil_demo" in md
    assert (tmp_path / "gallery" / "hil_demo.png").exists()
    assert (tmp_path / "gallery" / "gallery.json").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "gallery.md").write_text("my notes")
    from cps_sim.core.errors import ResultsError

    with pytest.raises(ResultsError, match="was not written by cps-sim report --gallery"):
        build_gallery(REPO / "scenarios", tmp_path / "other", only=["hil_demo"])
    assert (tmp_path / "other" / "gallery.md").read_text() == "my notes"
