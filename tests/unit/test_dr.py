from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cps_sim.market.dr import DrEvent, DrEventError, DrSchedule, load_dr_events

TZ = "Asia/Tokyo"


def _t(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=TZ)


def test_active_mask_and_requested_change():
    sched = DrSchedule(
        (
            DrEvent("r", _t("2026-08-03 13:00"), _t("2026-08-03 14:00"), "reduce", 500_000.0),
            DrEvent(
                "a",
                _t("2026-08-03 13:30"),
                _t("2026-08-03 15:00"),
                "absorb",
                200_000.0,
                sites=("home1",),
            ),
        )
    )
    times = pd.date_range("2026-08-03 12:30", periods=6, freq="30min", tz=TZ)
    # 12:30 none, 13:00 r, 13:30 r+a, 14:00 a, 14:30 a, 15:00 none (end exclusive)
    np.testing.assert_array_equal(sched.active(times), [0, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(sched.active(times, kind="reduce"), [0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(sched.active(times, site="home2"), [0, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(
        sched.requested_change_w(times), [0, -500e3, -300e3, 200e3, 200e3, 0]
    )
    np.testing.assert_allclose(
        sched.requested_change_w(times, site="home2"), [0, -500e3, -500e3, 0, 0, 0]
    )
    # UTC query of the same instants gives the same answer
    np.testing.assert_array_equal(sched.active(times.tz_convert("UTC")), sched.active(times))


def test_delivery_requested_vs_delivered():
    ev = DrEvent("r", _t("2026-08-03 13:00"), _t("2026-08-03 14:00"), "reduce", 2000.0)
    times = pd.date_range("2026-08-03 12:00", periods=4, freq="30min", tz=TZ)
    base = np.array([5000.0, 5000, 5000, 5000])
    act = np.array([5000.0, 5000, 3000, 4000])
    d = DrSchedule((ev,)).delivery(times, base, act, 1800)
    # requested 2 kW x 1 h = 2000 Wh; delivered (2 kW + 1 kW) x 0.5 h = 1500 Wh
    assert d.loc["r", "requested_wh"] == pytest.approx(2000)
    assert d.loc["r", "delivered_wh"] == pytest.approx(1500)
    assert d.loc["r", "delivered_ratio"] == pytest.approx(0.75)


def test_load_yaml_and_csv(tmp_path):
    y = tmp_path / "dr.yaml"
    y.write_text(
        "events:\n"
        "  - {id: e2, start: '2026-08-04T10:00+09:00', end: '2026-08-04T12:00+09:00',"
        " kind: absorb, requested_kw: 100}\n"
        "  - {id: e1, start: '2026-08-03 13:00', end: '2026-08-03 16:00', kind: reduce,"
        " requested_kw: 500, sites: [home1, home2]}\n",
        encoding="utf-8",
    )
    s = load_dr_events(y)
    assert [e.event_id for e in s.events] == ["e1", "e2"]  # sorted by start
    assert s.events[0].requested_w == 500_000
    assert s.events[0].start == _t("2026-08-03 13:00")
    assert s.events[0].sites == ("home1", "home2")
    c = tmp_path / "dr.csv"
    c.write_text(
        "event_id,start,end,kind,requested_kw,sites\n"
        "x,2026-08-03 13:00,2026-08-03 14:00,reduce,5,home1;home3\n"
        "y,2026-08-03 15:00,2026-08-03 16:00,absorb,7,\n",
        encoding="utf-8",
    )
    s = load_dr_events(c)
    assert s.events[0].sites == ("home1", "home3")
    assert s.events[1].sites is None
    assert s.events[1].requested_w == 7000


def test_load_errors_name_file_event_and_field(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text(
        "- {id: e1, start: '2026-08-03 13:00', end: '2026-08-03 12:00',"
        " kind: reduce, requested_kw: 5}\n",
        encoding="utf-8",
    )
    with pytest.raises(DrEventError, match=r"bad\.yaml: events\[0\] \(e1\): .*must be after"):
        load_dr_events(y)
    y.write_text(
        "- {id: e1, start: '2026-08-03 13:00', end: '2026-08-03 14:00',"
        " kind: lower, requested_kw: 5}\n",
        encoding="utf-8",
    )
    with pytest.raises(DrEventError, match="kind must be one of"):
        load_dr_events(y)
    y.write_text(
        "- {id: e1, start: '2026-08-03 13:00', kind: reduce, requested_kw: 5}\n", encoding="utf-8"
    )
    with pytest.raises(DrEventError, match="missing field 'end'"):
        load_dr_events(y)
    y.write_text(
        "- {id: e1, start: '2026-08-03 13:00', end: '2026-08-03 14:00',"
        " kind: reduce, requested_kw: 5, power: 3}\n",
        encoding="utf-8",
    )
    with pytest.raises(DrEventError, match="unknown field"):
        load_dr_events(y)


def test_empty_schedule():
    times = pd.date_range("2026-08-03", periods=3, freq="h", tz=TZ)
    s = DrSchedule()
    assert not s.active(times).any()
    np.testing.assert_array_equal(s.requested_change_w(times), [0, 0, 0])
