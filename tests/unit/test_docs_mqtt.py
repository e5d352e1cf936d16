"""docs/mqtt.md is the contract for independent clients: every example decodes with the
code that runs, and every list in it (reason codes, unit keys, event kinds, observation
keys) matches the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from cps_sim.bridge import schema as S
from cps_sim.core.bus import BATTERY_AUTO, BATTERY_FOLLOW
from cps_sim.core.environment import make_env
from cps_sim.scenario.schema import Scenario
from cps_sim.world.build import build_world
from tests.conftest import BASE

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "mqtt.md").read_text()


def example(name: str) -> bytes:
    m = re.search(rf"<!-- example: {name} -->\n```json\n(.*?)\n```", DOC, re.S)
    assert m, name
    return m.group(1).encode()


def section(title: str) -> str:
    m = re.search(rf"\n##+ {re.escape(title)}\n(.*?)(?=\n## |\Z)", DOC, re.S)
    assert m, title
    return m.group(1)


def test_group_setpoint_example():
    obj = S.parse_json(example("group_setpoint"))
    assert isinstance(S.check_envelope(obj), S.Envelope)
    out = S.decode_group_setpoint(
        obj, {"ev_setpoint_w": 3, "battery_setpoint_w": 3, "import_limit_w": 3}
    )
    assert not isinstance(out, S.Reject), out
    np.testing.assert_array_equal(out["ev_setpoint_w"], [3000, 0, np.inf])
    np.testing.assert_array_equal(out["battery_setpoint_w"], [1500, 0, -2000])
    np.testing.assert_array_equal(
        out["battery_mode"], [BATTERY_FOLLOW, BATTERY_AUTO, BATTERY_FOLLOW]
    )
    np.testing.assert_array_equal(out["import_limit_w"], [np.inf, 4000, 4000])
    keys = set(re.findall(r"^\| `(\w+)` \|", section("Group setpoint"), re.M))
    assert keys == {"ttl_s", *S.MODE_KEYS, *S.GROUP_SETPOINT_KEYS}


def test_device_examples_decode_without_unknown_keys():
    m = S.decode_measurement(example("telemetry"))
    assert isinstance(m, S.Measurement) and m.unknown_keys == ()
    st = S.decode_measurement(example("state"), role="state")
    assert isinstance(st, S.Measurement) and st.unknown_keys == ()
    sp = S.decode_setpoint(example("device_setpoint"))
    assert not isinstance(sp, S.Reject) and sp[0].power_w == 3600.0
    msp = S.decode_setpoint(example("member_setpoint"))
    assert not isinstance(msp, S.Reject) and msp[0].power_w == 1500.0
    controls = set(re.findall(r"^\| [^|]+ \| `(\w+)`", section("Member setpoint"), re.M))
    assert controls == set(S.SETPOINT_CONTROLS) - {"current_a"}
    for name in ("clock", "event"):
        assert isinstance(S.check_envelope(S.parse_json(example(name))), S.Envelope)
    tel = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", section("Telemetry"), re.M))
    assert {k for pair in tel for k in pair if k} == set(S.TELEMETRY_FIELDS)
    state = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", section("State"), re.M))
    assert {k for pair in state for k in pair if k} == set(S.STATE_FIELDS)


def test_lists_match_the_code():
    reasons = set(re.findall(r"^\| `(\w+)` \|", section("Reason codes"), re.M))
    assert reasons == {*S.REASONS, "invalid_payload"}
    units = set(
        re.findall(
            r"`(\w+)`",
            DOC.split("keys that name another unit are rejected as `wrong_unit`:")[1].split("\n*")[
                0
            ],
        )
    )
    assert units == set(S.WRONG_UNIT_KEYS)
    kinds = set()
    for row in re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", section("Events"), re.M):
        kinds |= set(re.findall(r"`(\w+)`", row))
    code = "".join(
        (REPO / "cps_sim/bridge" / f).read_text()
        for f in ("transport.py", "runtime.py", "exposed.py")
    )
    used = set(re.findall(r"\.event\(\s*\"(\w+)\"", code))
    used |= set(re.findall(r"\"(\w+)\" if (?:active|online) else \"(\w+)\"", code)[0])
    used |= set(re.findall(r"\"(\w+)\" if online else \"(\w+)\"", code)[0])
    assert used - {"rejected"} <= kinds, used - kinds
    assert S.MAX_PAYLOAD_BYTES == 65536 and "65536 bytes" in DOC
    assert f"nesting at most\n  {S.MAX_DEPTH} levels" in DOC


def test_observation_example_matches_what_the_simulator_sends():
    sc = Scenario.model_validate(
        {
            **BASE,
            "tick_s": 60,
            "sites": [
                {
                    "name": "lab",
                    "count": 2,
                    "pv": {"share": 1},
                    "battery": {"share": 1},
                    "ev": {"share": 0.5},
                }
            ],
        }
    )
    world = build_world(sc)
    world.start(make_env("fast"), lambda r: None)
    obs = world.observe("lab")
    sent = json.loads(
        S.observation_json(
            obs, "lab", S.Envelope(1, 0, 1.7e9, "x", 0.0), "2026-04-06T00:00:00+09:00"
        )
    )
    ex = json.loads(example("observation"))
    optional = {"site_export_limit_w", "ev_energy_max_wh", "ev_charge_efficiency"}
    assert set(ex) <= set(sent) and set(sent) - set(ex) <= optional
    for key, value in ex.items():
        if isinstance(value, list):
            n = ex["n_evs"] if key.startswith("ev_") else ex["n_sites"]
            assert len(value) == n, key
    table = section("Observation")
    for name in S.OBSERVATION_ARRAYS:
        assert f"`{name}`" in table, name
