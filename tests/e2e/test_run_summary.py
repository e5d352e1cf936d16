"""``cps-sim run`` prints, and ``cps-sim report`` plots, what each enabled block is about
(issue 10 item 7).

Every built-in scenario runs from the CLI (scaled down with ``--set``); the blocks its
YAML enables are worked out here from the file itself, and the printed summary must
carry each block's KPIs, with the numbers of ``kpis.json``.  A scenario without a block
must not print it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.cli_helpers import run_cli, run_in_process

SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
# scaled down: one day, except where the point of the scenario lies later
SCALE = {"self_owned_microgrid": ["--set", "duration_days=3"]}


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    """``python -m cps_sim ARGS`` from the repository, in CI mode (a whole built-in run
    may take minutes on a slow machine)."""
    return run_cli(args, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, dict, str, Path]]:
    base = tmp_path_factory.mktemp("summary")
    out = {}
    for i, f in enumerate(SCENARIOS):
        o = base / f.stem
        args = SCALE.get(f.stem, ["--set", "duration_days=1"])
        # the first as a real command, the others through the same entry point here
        run = _cli if i == 0 else run_in_process
        r = run(["run", str(f), "--out", str(o), "-q", *args])
        assert r.returncode in (0, 3), f"{f.name}: {r.stderr}"  # 3: an expect: failed
        out[f.stem] = (
            yaml.safe_load(f.read_text()),
            json.loads((o / "kpis.json").read_text()),
            r.stdout,
            o,
        )
    return out


def _expected_labels(sc: dict) -> dict[str, list[str]]:
    """Block title -> labels that must follow it, from the scenario file alone."""
    sites = sc["sites"]
    want = {
        "sites (": [
            "grid import",
            "export",
            "PV",
            "peak import",
            "self-consumption",
            "self-sufficiency",
            "cost",
            "CO2",
        ]
    }
    if any("battery" in g for g in sites):
        want["batteries:"] = ["charged", "discharged", "losses"]
    if any("ev" in g for g in sites):
        want["EVs ("] = [
            "strategy",
            "charged",
            "driven",
            "charged in PV surplus",
            "departures",
            "below target",
            "unmet at departure",
        ]
    if any("heat_pump_water_heater" in g for g in sites):
        want["heat-pump water heaters:"] = ["electricity", "hot water delivered", "unmet", "COP"]
    if any("deferrable" in g for g in sites):
        want["deferrable processes:"] = ["delivered", "unmet by the deadline"]
    ems = sc.get("ems") or {}
    if ems:
        want["EMS:"] = list(ems)
    if any(e.get("outages") for e in ems.values()):
        want["islanding (grid outage):"] = [
            "outage",
            "served",
            "shed",
            "PCC import while islanded",
            "PCC export",
        ]
    system = sc.get("system")
    if system:
        want["power system:"] = [
            "demand",
            "peak",
            "unserved",
            "loss-of-load",
            "curtailed",
            "of RE",
            "CO2",
            "gen renewable",
            *(f"gen {p['technology']}" for p in system["plants"]),
        ]
        if system.get("storage"):
            want["grid storage:"] = ["charged", "discharged", "min SoC"]
        if system.get("electrolysers"):
            want["hydrogen:"] = ["electrolysers", "H2", "kg", "utilisation"]
    if sc.get("vpp"):
        want["VPP ("] = [
            "requests",
            "requested",
            "delivered",
            "delivered share",
            "shortfall",
            "partial or missed requests",
        ]
    return want


ALL_TITLES = (
    "batteries:",
    "EVs (",
    "heat-pump water heaters:",
    "deferrable processes:",
    "EMS:",
    "islanding (grid outage):",
    "power system:",
    "grid storage:",
    "hydrogen:",
    "VPP (",
)


@pytest.mark.parametrize("name", [f.stem for f in SCENARIOS])
def test_every_built_in_scenario_runs_from_the_cli_and_balances(runs, name):
    """Each built-in parses, builds and runs from the CLI (scaled down) and its books
    balance (the fixture ran them; exit 3 only for a failed expect: line)."""
    _sc, kpis, _stdout, out = runs[name]
    assert (out / "timeseries.parquet").is_file() and (out / "manifest.json").is_file()
    assert abs(kpis["balance_residual_wh"]) < 1e-3, name


@pytest.mark.parametrize("name", [f.stem for f in SCENARIOS])
def test_run_prints_the_kpis_of_every_enabled_block_and_no_other(runs, name):
    sc, kpis, stdout, _ = runs[name]
    want = _expected_labels(sc)
    lines = stdout.splitlines()
    for title, labels in want.items():
        start = [i for i, ln in enumerate(lines) if ln.startswith(f"  {title}")]
        assert len(start) == 1, f"{name}: block {title!r} not printed once:\n{stdout}"
        i = start[0]
        block = lines[i]
        for ln in lines[i + 1 :]:  # continuation lines are indented by 4
            if not ln.startswith("    "):
                break
            block += " " + ln.strip()
        for label in labels:
            assert label in block, f"{name}: {title} lacks {label!r}: {block}"
    for title in ALL_TITLES:
        if title not in want:
            assert f"  {title}" not in stdout, f"{name}: {title} printed but not enabled"
    # the numbers are the run's (kpis.json), formatted
    assert f"self-sufficiency {100 * kpis['self_sufficiency']:.1f} %" in stdout
    if "power system:" in want:
        assert f"unserved {kpis['system_unserved_mwh']:,.3f} MWh" in stdout
        assert f"loss-of-load {kpis['system_loss_of_load_hours']:,.2f} h" in stdout
        assert f"curtailed {kpis['system_curtailed_mwh']:,.1f} MWh" in stdout
        for p in sc["system"]["plants"]:
            t = p["technology"]
            assert (
                f"gen {t} {kpis[f'system_{t}_mwh']:,.0f} MWh "
                f"({100 * kpis[f'system_share_{t}']:.1f} %)" in stdout
            )
    if "hydrogen:" in want:
        assert f"H2 {kpis['system_h2_kg']:,.0f} kg" in stdout
    if "VPP (" in want:
        name_ = sc["vpp"].get("name", "vpp")
        assert f"delivered share {100 * kpis[f'{name_}_delivered_ratio']:.1f} %" in stdout


def test_system_shares_add_up_and_islanding_shows_the_outage(runs):
    for name, (sc, kpis, _, _) in runs.items():
        if sc.get("system"):
            total = sum(v for k, v in kpis.items() if k.startswith("system_share_"))
            assert total == pytest.approx(1.0, abs=1e-9), name
    sc, _, stdout, out = runs["self_owned_microgrid"]
    # the 24 h outage lies inside the 3 days run: all of it is reported, with no flow
    # through the point of common coupling either way while islanded
    assert "outage 24.00 h" in stdout
    assert "PCC import while islanded 0.0 kWh, PCC export 0.0 kWh" in stdout
    groups = pd.read_parquet(out / "timeseries_groups.parquet")
    shed = groups.loc[groups["group"] == "village", "unserved_w"].sum() * 0.25 / 1000
    assert f"village shed {shed:,.1f} of" in stdout


def test_report_plots_each_enabled_block(runs, tmp_path):
    expected = {
        "surplus_bev_absorption": {
            "system_dispatch.png",
            "system_storage.png",
            "vpp_requests.png",
            "evs.png",
        },
        "power_to_hydrogen": {"system_dispatch.png", "hydrogen.png"},
        "self_owned_microgrid": {"islanding.png"},
        "hpwh_daytime_shift": {"heat_pumps.png"},
        "quickstart": {"evs.png"},
    }
    not_expected = {
        "quickstart": {
            "system_dispatch.png",
            "vpp_requests.png",
            "islanding.png",
            "hydrogen.png",
            "heat_pumps.png",
        }
    }
    for i, (name, pngs) in enumerate(expected.items()):
        out = tmp_path / name
        r = (_cli if i == 0 else run_in_process)(["report", str(runs[name][3]), "--out", str(out)])
        assert r.returncode == 0, r.stderr
        made = {p.name for p in out.glob("*.png")}
        assert pngs <= made, (name, made)
        assert not (not_expected.get(name, set()) & made), (name, made)
        page = (out / "report.html").read_text()
        assert "<h2>Summary</h2>" in page
        for png in pngs:
            assert f"<figcaption>{png}</figcaption>" in page
    # re-rendering into the same folder is allowed (the block plots are report files)
    r = run_in_process(
        ["report", str(runs["power_to_hydrogen"][3]), "--out", str(tmp_path / "power_to_hydrogen")]
    )
    assert r.returncode == 0, r.stderr


def test_kpis_without_a_value_print_as_n_a_not_a_crash(tmp_path):
    # no PV anywhere: self-consumption is undefined (NaN in the run, null in kpis.json)
    r = _cli(
        [
            "run",
            "scenarios/quickstart.yaml",
            "--out",
            str(tmp_path / "o"),
            "-q",
            "--set",
            "duration_days=1",
            "--set",
            "sites[0].count=5",
            "--set",
            "sites[0].pv.share=0",
            # quickstart's claims need its PV; this test is about printing KPIs
            "--expect",
            "report",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "kpis.json").read_text())["self_consumption"] is None
    assert "self-consumption n/a" in r.stdout
    assert "-0.0 %" not in r.stdout
