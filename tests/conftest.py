"""Shared test helpers: small scenarios built from dicts (validated like files)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from cps_sim.scenario.schema import Scenario

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "version": 1,
    "name": "t",
    "seed": 7,
    "start": "2026-04-06T00:00:00+09:00",  # a Monday, not a holiday
    "duration_days": 1,
    "tick_s": 900,
    "sites": [],
}


def scenario(sites: list[dict], **top) -> Scenario:
    d = copy.deepcopy(BASE)
    d["sites"] = sites
    d.update(top)
    return Scenario.model_validate(d)


def fixed_trip(
    departure_h: float, duration_h: float, distance_km: float, probability: float = 1.0
) -> dict:
    day = {
        "probability": probability,
        "departure_h": departure_h,
        "duration_h": duration_h,
        "distance_km": distance_km,
    }
    return {"weekday": day, "weekend": day}


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def mosquitto(tmp_path):
    """A private Mosquitto on a free port (anonymous, no persistence), stopped after the test.

    For other settings build ``MosquittoBroker(tmp_path / "broker", MosquittoConfig(...))``
    in the test; the broker object can kill(), freeze()/thaw() and restart() itself.
    """
    from cps_sim.bridge.broker import MosquittoBroker, mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (.ci/run installs it)")
    broker = MosquittoBroker(tmp_path / "broker").start()
    try:
        yield broker
    finally:
        broker.stop()
