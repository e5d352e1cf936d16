"""docs/ems.md's setpoint table lists every control key a group can accept."""

from __future__ import annotations

import re
from pathlib import Path

from cps_sim.world.populations import SETPOINT_KEYS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "ems.md").read_text()


def test_setpoint_table_lists_every_engine_key():
    table = DOC.split("| key | per | meaning |")[1].split("\n\n")[0]
    keys = {
        k
        for row in re.findall(r"^\| (`[^|]+) \|", table, re.M)
        for k in re.findall(r"`(\w+)`", row)
    }
    assert keys == set(SETPOINT_KEYS)
