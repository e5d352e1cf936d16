"""Smart meters read over the B-route (``sites[].smart_meter``) and a HEMS acting on them.

The meter's Parquet is checked against the truth the engine writes independently
(``sites.parquet`` per site, ``timeseries.parquet`` for the group), on real result
folders written by ``cps-sim run``'s code path.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cps_sim.core.environment import make_env
from cps_sim.core.errors import ScenarioError
from cps_sim.experiment.recorder import Recorder
from cps_sim.experiment.run import run_file
from cps_sim.scenario.loader import load_scenario_text
from cps_sim.world.build import build_world

BASE = """\
version: 1
name: meter
seed: 5
start: 2026-05-11T00:00:00+09:00
duration_days: 1
tick_s: {tick}
weather: {{source: synthetic}}
sites:
  - name: homes
    count: 4
    pv: {{share: 1.0, capacity_kw: 4}}
{devices}    smart_meter: {meter}
record: {{sites: [0, 1, 2, 3]}}
{rest}"""


def write(tmp: Path, *, tick=900, devices="", meter="{}", rest="", name="s.yaml") -> Path:
    p = tmp / name
    p.write_text(
        BASE.format(tick=tick, devices=textwrap.indent(devices, "    "), meter=meter, rest=rest),
        encoding="utf-8",
    )
    return p


def run(tmp: Path, path: Path, out: str, *overrides: str) -> Path:
    run_file(path, overrides, out_dir=tmp / out, quiet=True)
    return tmp / out


def read(d: Path, name: str) -> pd.DataFrame:
    return pq.read_table(d / name).to_pandas()


def test_registers_are_the_integrated_truth_at_local_half_hours(tmp_path):
    # load and PV only: each site's power is constant over a tick, so the tick's net import
    # in sites.parquet splits exactly into import and export
    d = run(tmp_path, write(tmp_path), "a")
    m = read(d, "smart_meter.parquet")
    sites = read(d, "sites.parquet")
    # readings exactly at every local (JST) 30-minute boundary, start included: 49 per site
    local = m["time"].dt.tz_convert("Asia/Tokyo")
    assert set(local.dt.minute) == {0, 30} and set(local.dt.second) == {0}
    assert len(m) == 4 * 49 and (m.groupby("site").size() == 49).all()
    assert local.iloc[0] == pd.Timestamp("2026-05-11T00:00:00+09:00")
    res = 100.0  # 0.1 kWh per count
    assert (m["resolution_wh"] == res).all()
    for s in range(4):
        net_wh = sites[f"site_{s}_net_import_w"].to_numpy() * 0.25  # 15-min ticks
        imp = np.concatenate([[0.0], np.cumsum(np.maximum(net_wh, 0.0))])[::2]
        exp = np.concatenate([[0.0], np.cumsum(np.maximum(-net_wh, 0.0))])[::2]
        ms = m[m["site"] == s].sort_values("time")
        # registers: the truth truncated to whole counts (within one resolution, never above)
        np.testing.assert_array_equal(ms["import_register"], np.floor(imp / res + 1e-9))
        np.testing.assert_array_equal(ms["export_register"], np.floor(exp / res + 1e-9))
        assert (np.diff(ms["import_register"]) >= 0).all()
        assert (np.diff(ms["export_register"]) >= 0).all()
        # the export register moves only in half hours with export
        exported = np.add.reduceat(np.maximum(-net_wh, 0.0), np.arange(0, net_wh.size, 2))
        moved = np.diff(ms["export_register"].to_numpy()) > 0
        assert not (moved & (exported == 0)).any()
        assert moved.any()  # May, 4 kW of PV: the homes export at noon
        # instantaneous power (0xE7) at a boundary = the site's power just before it
        inst = ms["instantaneous_power_w"].to_numpy()[1:]
        np.testing.assert_array_equal(
            inst, np.rint(sites[f"site_{s}_net_import_w"].to_numpy()[1::2])
        )
        assert ms["import_interval_wh"].isna().iloc[0]
        np.testing.assert_allclose(
            ms["import_interval_wh"].to_numpy()[1:], np.diff(ms["import_register"].to_numpy()) * res
        )


def test_group_registers_rebuild_timeseries_with_batteries_and_evs(tmp_path):
    devices = "battery: {share: 1.0, capacity_kwh: 5}\nev: {share: 1.0}\n"
    d = run(tmp_path, write(tmp_path, devices=devices), "b")
    m = read(d, "smart_meter.parquet")
    ts = read(d, "timeseries.parquet")
    imp = np.concatenate([[0.0], np.cumsum(ts["grid_import_w"].to_numpy() * 0.25)])[::2]
    exp = np.concatenate([[0.0], np.cumsum(ts["grid_export_w"].to_numpy() * 0.25)])[::2]
    by_t = m.groupby("time_s")[["import_cumulative_wh", "export_cumulative_wh"]].sum()
    # each of the 4 registers is below its site's truth by less than one count (100 Wh)
    for got, want in ((by_t["import_cumulative_wh"], imp), (by_t["export_cumulative_wh"], exp)):
        gap = want - got.to_numpy()
        assert (gap > -1e-6).all() and (gap < 4 * 100.0).all()
    assert imp[-1] > 500 and exp[-1] > 500


def test_the_meter_does_not_change_the_physics(tmp_path):
    devices = "battery: {share: 1.0, capacity_kwh: 5}\nev: {share: 1.0}\n"
    with_m = run(tmp_path, write(tmp_path, devices=devices), "w")
    p = tmp_path / "n.yaml"
    p.write_text((tmp_path / "s.yaml").read_text().replace("    smart_meter: {}\n", ""))
    without = run(tmp_path, p, "wo")
    assert not (without / "smart_meter.parquet").exists()
    a, b = read(with_m, "timeseries.parquet"), read(without, "timeseries.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_registers_wrap_and_start_where_the_scenario_says(tmp_path):
    meter = "{digits: 5, resolution_kwh: 0.1, initial_import_kwh: 9999.5}"  # wraps at 9999.9
    d = run(tmp_path, write(tmp_path, meter=meter), "wrap")
    m = read(d, "smart_meter.parquet").sort_values(["site", "time"])
    first = m.groupby("site").first()
    assert (first["import_register"] == 99995).all()
    reg = m["import_register"].to_numpy()
    assert reg.min() < 99995  # wrapped for every site that imported more than 0.5 kWh
    dif = m.groupby("site")["import_interval_wh"].sum()
    last = m.groupby("site")["import_register"].last()
    np.testing.assert_allclose(dif, ((last - 99995) % 100000) * 100.0)


def test_warm_up_boundaries_are_not_written(tmp_path):
    text = (write(tmp_path)).read_text().replace("duration_days: 1", "duration_days: 2")
    sc = load_scenario_text(text)
    world = build_world(sc)
    world.warmup_ticks = 96  # the first day runs, not recorded
    rec = Recorder(world)
    env = make_env("fast")
    world.start(env, rec.on_tick)
    env.run(until=sc.duration_s + 1)
    t = rec.smart_meter().to_pandas()
    assert t["time_s"].min() == 0.0 and len(t) == 4 * 49
    local = t["time"].dt.tz_convert("Asia/Tokyo")
    assert local.min() == pd.Timestamp("2026-05-12T00:00:00+09:00")
    # registers count from the start of the run: the warm-up day's energy is in them
    assert t[t["time_s"] == 0.0]["import_register"].sum() > 0


@pytest.mark.parametrize(
    ("tick", "start", "where", "what"),
    [
        (1200, "2026-05-11T00:00:00+09:00", "sites[0].smart_meter", "tick_s must divide 1800"),
        (900, "2026-05-11T00:10:00+09:00", "sites[0].smart_meter", "local 30-minute boundaries"),
    ],
)
def test_ticks_that_miss_the_half_hours_are_refused(tmp_path, tick, start, where, what):
    text = write(tmp_path, tick=tick).read_text().replace("2026-05-11T00:00:00+09:00", start)
    with pytest.raises(ScenarioError) as e:
        load_scenario_text(text, file="s.yaml")
    msg = str(e.value)
    assert where in msg and what in msg and "s.yaml:" in msg


def test_a_hems_observing_the_meter_needs_one_and_the_rule(tmp_path):
    text = write(tmp_path).read_text().replace("    smart_meter: {}\n", "")
    text += "ems:\n  homes: {kind: hems, observe: meter}\n"
    with pytest.raises(ScenarioError, match=r"ems\.homes\.observe: observe: meter needs a smart"):
        load_scenario_text(text, file="s.yaml")
    text = write(
        tmp_path, rest="ems:\n  homes: {kind: hems, observe: meter, battery_mode: mpc}\n"
    ).read_text()
    with pytest.raises(ScenarioError, match="battery_mode: rule"):
        load_scenario_text(text, file="s.yaml")


def test_hems_on_meter_data_loses_self_sufficiency_and_the_books_close(tmp_path):
    devices = "battery: {share: 1.0, capacity_kwh: 6}\n"
    rest = "ems:\n  homes: {kind: hems, ev_strategy: null, observe: meter, interval_s: 300}\n"
    p = write(tmp_path, devices=devices, rest=rest, meter="{instantaneous_poll_s: 300}")
    truth = run(tmp_path, p, "truth", "ems.homes.observe=truth")
    polled = run(tmp_path, p, "polled")
    half_hourly = run(tmp_path, p, "hh", "sites[0].smart_meter.instantaneous_poll_s=null")
    k = {
        n: __import__("json").loads((d / "kpis.json").read_text())
        for n, d in (("truth", truth), ("polled", polled), ("hh", half_hourly))
    }
    for v in k.values():
        assert abs(v["balance_residual_wh"]) < 1e-3
    # the truth knows each tick's load and PV at its start; the meter lags: polled by up
    # to a poll interval (5 min) after each tick boundary, half-hourly registers by 30-60 minutes
    imp = {n: v["grid_import_kwh"] for n, v in k.items()}
    assert imp["truth"] <= imp["polled"] + 1e-6 < imp["hh"]
    assert imp["hh"] > imp["truth"] + 0.5
    assert k["hh"]["self_sufficiency"] < k["truth"]["self_sufficiency"]
    # the decisions differ in the expected direction: on stale data the battery
    # discharges into export and charges from import
    ts = read(half_hourly, "timeseries.parquet")
    assert (ts["battery_discharge_w"] * ts["grid_export_w"] > 0).any()


def test_polled_power_is_the_truth_just_before_each_poll(tmp_path):
    # load and PV only (constant power per tick); a HEMS observing the meter makes the
    # poll process run every 300 s; a probe started after it reads each poll
    from cps_sim.experiment.run import simulate

    rest = "ems:\n  homes: {kind: hems, ev_strategy: null, observe: meter, interval_s: 300}\n"
    sc = load_scenario_text(
        write(tmp_path, meter="{instantaneous_poll_s: 300}", rest=rest).read_text()
    )
    seen = []

    def probe(env, world):
        meter = world.group("homes").meter

        def run_probe():
            t = 0.0
            while t <= sc.duration_s:
                yield env.timeout(t - env.now)
                seen.append((meter.poll_t, meter.poll_w.copy()))
                t += 300.0

        env.process(run_probe())

    rec = simulate(sc, setup=probe)
    net_w = rec.site_net_wh * 4.0  # (ticks, sites) Wh per 15 min -> W
    assert len(seen) == 24 * 12 + 1
    for t, polled in seen[1:]:
        k = int(np.ceil(t / 900.0)) - 1  # the tick just before the poll instant
        np.testing.assert_array_equal(polled, np.rint(net_w[k]))
    assert seen[0][0] == 0.0 and (seen[0][1] == 0).all()  # nothing measured at the start


def test_meter_file_is_listed_and_deterministic(tmp_path):
    p = write(tmp_path, devices="battery: {share: 0.5, capacity_kwh: 5}\n")
    a, b = run(tmp_path, p, "a"), run(tmp_path, p, "b")
    assert (a / "smart_meter.parquet").read_bytes() == (b / "smart_meter.parquet").read_bytes()
    manifest = __import__("json").loads((a / "manifest.json").read_text())
    assert "smart_meter.parquet" in manifest["files"]
    # every column carries its unit and description (experiment/columns.py)
    for f in pq.read_schema(a / "smart_meter.parquet"):
        assert f.metadata and b"unit" in f.metadata and b"description" in f.metadata, f.name
