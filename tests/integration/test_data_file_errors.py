"""Every data file a scenario can reference: a header without rows, or a gap, is one clear
error naming the file and the problem (issue 10 item 12).

Each case writes a real file next to a real scenario and runs it through the public entry
point (``run_file``, what ``cps-sim run`` calls).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from cps_sim.core.errors import CpsSimError
from cps_sim.experiment.run import run_file

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
PVLIB_TMY3 = Path(pd.__file__).parents[1] / "pvlib" / "data" / "723170TYA.CSV"

SCENARIO = """\
version: 1
name: files
start: 2026-04-06T00:00:00+09:00
duration_days: 1
tick_s: 3600
holidays: null
sites:
  - name: homes
    count: 2
    pv: {capacity_kw: 4}
"""


def _hours(n: int, start: str = "2026-04-05T00:00:00+09:00", step: str = "1h") -> list[str]:
    return [t.isoformat() for t in pd.date_range(start, periods=n, freq=step)]


def _weather_csv(times: list[str]) -> str:
    rows = "".join(f"{t},{200},{100},{100},15,2\n" for t in times)
    return "timestamp,ghi_w_m2,dni_w_m2,dhi_w_m2,temp_air_c,wind_speed_m_s\n" + rows


def _prices_csv(times: list[str]) -> str:
    return "timestamp,price_jpy_per_kwh\n" + "".join(f"{t},12.5\n" for t in times)


def _load_csv(times: list[str]) -> str:
    return "timestamp,home_a_kw\n" + "".join(f"{t},0.5\n" for t in times)


def _gap(times: list[str]) -> list[str]:
    return times[:10] + times[14:]  # four intervals missing in the middle


def _header(path: Path, lines: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[:lines])


def _drop_middle(path: Path, keep_head: int, drop: int) -> bytes:
    lines = path.read_bytes().splitlines(keepends=True)
    return b"".join(lines[: keep_head + 5] + lines[keep_head + 5 + drop :])


NO_ROWS = "no data rows|no data lines|at least two data lines|no sessions after the header"
HOURS = _hours(72)
CASES = {
    # name: (scenario addition, file name, file bytes/text, words expected in the error)
    "weather csv header only": (
        "weather: {source: csv, file: w.csv}\n",
        "w.csv",
        _weather_csv([]),
        [NO_ROWS],
    ),
    "weather csv gap": (
        "weather: {source: csv, file: w.csv}\n",
        "w.csv",
        _weather_csv(_gap(HOURS)),
        ["gap", "2026-04-05"],
    ),
    "tmy3 header only": (
        "weather: {source: tmy3, file: w.csv}\n",
        "w.csv",
        _header(PVLIB_TMY3, 2),
        [NO_ROWS],
    ),
    "tmy3 missing hours": (
        "weather: {source: tmy3, file: w.csv}\n",
        "w.csv",
        _drop_middle(PVLIB_TMY3, 2, 30),
        ["gap"],
    ),
    "epw header only": (
        "weather: {source: epw, file: w.epw}\n",
        "w.epw",
        "LOCATION,Tokyo,,JPN,,476620,35.69,139.76,9.0,5.0\n"
        "DESIGN CONDITIONS,0\nTYPICAL/EXTREME PERIODS,0\n"
        "GROUND TEMPERATURES,0\nHOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0\n"
        "COMMENTS 1,x\nCOMMENTS 2,x\nDATA PERIODS,1,1,Data,Sunday,1/1,12/31\n",
        [NO_ROWS],
    ),
    "prices header only": (
        "tariff: {type: dynamic, prices_csv: p.csv}\n",
        "p.csv",
        _prices_csv([]),
        [NO_ROWS],
    ),
    "prices gap": (
        "tariff: {type: dynamic, prices_csv: p.csv}\n",
        "p.csv",
        _prices_csv(_gap(HOURS)),
        ["gap"],
    ),
    "jepx header only": (
        "tariff: {type: jepx, jepx_csv: j.csv}\n",
        "j.csv",
        _header(DATA / "jepx_spot_sample.csv", 1),
        [NO_ROWS],
    ),
    "jepx gap": (
        "tariff: {type: jepx, jepx_csv: j.csv}\n",
        "j.csv",
        _drop_middle(DATA / "jepx_spot_sample.csv", 1, 6),
        ["gap"],
    ),
    "load profile header only": ("", "l.csv", _load_csv([]), [NO_ROWS]),
    "load profile gap": ("", "l.csv", _load_csv(_gap(_hours(72, step="30min"))), ["gap"]),
    "ev sessions header only": (
        "",
        "ev.csv",
        _header(DATA / "ev_sessions_generic_sample.csv", 1),
        [NO_ROWS],
    ),
    "tso header only": (
        "system: {demand: {profile: tso_csv, tso_csv: t.csv}}\n",
        "t.csv",
        _header(DATA / "tso_area_demand_30min.csv", 2),
        [NO_ROWS],
    ),
    "tso gap": (
        "system: {demand: {profile: tso_csv, tso_csv: t.csv}}\n",
        "t.csv",
        _drop_middle(DATA / "tso_area_demand_30min.csv", 2, 5),
        ["gap"],
    ),
    "balancing plan header only": (
        "balancing_group: {groups: [homes], plan: file, plan_file: b.csv}\n",
        "b.csv",
        "timestamp,net_import_kwh\n",
        [NO_ROWS],
    ),
    "balancing plan gap": (
        "balancing_group: {groups: [homes], plan: file, plan_file: b.csv}\n",
        "b.csv",
        "timestamp,net_import_kwh\n"
        + "".join(f"{t},1.0\n" for t in _gap(_hours(96, "2026-04-06T00:00:00+09:00", "30min"))),
        ["gap"],
    ),
    "dr requests bad time": (
        "vpp: {groups: [homes], requests_file: dr.csv}\n",
        "dr.csv",
        "event_id,kind,start,end,requested_kw\ne1,absorb,2026-04-06T10:00:00+09:00,noon,5\n",
        [r"events\[0\]\.end", "noon"],
    ),
    "imbalance price header only": (
        "balancing_group: {groups: [homes], price: file, price_file: b.csv}\n",
        "b.csv",
        "timestamp,price_jpy_per_kwh\n",
        [NO_ROWS],
    ),
}


def _scenario(tmp_path: Path, name: str) -> Path:
    extra, fname, content, _ = CASES[name]
    f = tmp_path / fname
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    text = SCENARIO + extra
    if name.startswith("load profile"):
        text = text.replace(
            "    pv: {capacity_kw: 4}\n",
            "    pv: {capacity_kw: 4}\n    load: {profile: csv, profile_csv: l.csv}\n",
        )
    if name.startswith("dr requests"):
        text = text.replace(
            "    pv: {capacity_kw: 4}\n", "    pv: {capacity_kw: 4}\n    battery: {share: 1}\n"
        )
    if name.startswith("ev sessions"):
        text = text.replace(
            "    pv: {capacity_kw: 4}\n",
            "    pv: {capacity_kw: 4}\n    ev: {sessions: {csv: ev.csv}}\n",
        )
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", list(CASES))
def test_empty_or_gappy_data_files_name_the_file_and_the_problem(tmp_path, name):
    p = _scenario(tmp_path, name)
    fname = CASES[name][1]
    with pytest.raises(CpsSimError) as e:
        run_file(p, out_dir=tmp_path / "out", quiet=True)
    msg = str(e.value)
    assert fname in msg, msg
    for w in CASES[name][3]:
        assert re.search(w, msg), msg
    assert not (tmp_path / "out").exists()


def test_a_price_file_that_ends_before_the_run_names_the_file(tmp_path):
    (tmp_path / "p.csv").write_text(_prices_csv(_hours(12, "2026-04-06T00:00:00+09:00")))
    p = tmp_path / "s.yaml"
    p.write_text(SCENARIO + "tariff: {type: dynamic, prices_csv: p.csv}\n")
    with pytest.raises(CpsSimError, match=r"p\.csv: .*no price for 2026-04-06 12:00"):
        run_file(p, out_dir=tmp_path / "out", quiet=True)


@pytest.mark.parametrize("name", list(CASES))
def test_validate_refuses_every_data_file_the_run_refuses(tmp_path, name, capsys):
    """``cps-sim validate`` reads the data files as the run's set-up does: it does not say
    OK to a scenario that ``cps-sim run`` refuses at its start, and says the same."""
    from tests.e2e.cli_helpers import invoke

    p = _scenario(tmp_path, name)
    with pytest.raises(CpsSimError) as e:
        run_file(p, out_dir=tmp_path / "out", quiet=True)
    code, out, err = invoke(["validate", p], capsys)
    assert code == 2, out + err
    assert "OK" not in out
    assert str(e.value).splitlines()[0] in err
    assert CASES[name][1] in err
    assert not (tmp_path / "out").exists()
