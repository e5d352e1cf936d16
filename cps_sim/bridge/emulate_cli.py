"""Body of ``cps-sim emulate`` (``cps_sim/cli.py`` only declares the options)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cps_sim.bridge.emulate import EmulatorConfig, EmulatorFleet, resolve_kind
from cps_sim.core.errors import BridgeError
from cps_sim.core.files import write_text_atomic

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_S = {None: 1.0, "s": 1.0, "ms": 1e-3, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str | float | None) -> float | None:
    """``90``, ``90s``, ``10m``, ``1.5h``, ``2d`` -> seconds (None stays None)."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise BridgeError(
                f"duration {text!r}: expected a number with an optional unit "
                "(ms, s, m, h, d), e.g. 90s or 10m"
            )
        value = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not value > 0:
        raise BridgeError(f"duration must be > 0, got {text!r}")
    return value


def _stop_embedded(embedded: Any, folder: Path | None) -> None:
    """Stop the broker this command started and remove the folder it made for it."""
    if embedded is not None:
        embedded.stop()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _quiet(quiet: bool) -> bool:
    return quiet or os.environ.get("CI", "").lower() in ("1", "true", "yes")


def run_emulate(
    profile: str,
    *,
    kind: str | None = None,
    count: int = 1,
    broker: str | None = None,
    prefix: str = "cps/emu",
    interval_s: float = 1.0,
    speed: float = 1.0,
    duration: str | None = None,
    id_prefix: str | None = None,
    first_id: int = 0,
    seed: int = 0,
    ttl_s: float = 60.0,
    clients: str = "device",
    protocol: str = "3.1.1",
    username: str | None = None,
    password_env: str = "CPS_SIM_MQTT_PASSWORD",
    ca_file: str | None = None,
    homeassistant: bool = False,
    ha_remove: bool = False,
    weather: str = "synthetic",
    start: str | None = None,
    rated: dict[str, float] | None = None,
    telemetry_qos: int | None = None,
    quiet: bool = False,
    summary_json: Path | None = None,
) -> dict[str, Any]:
    """Run a fleet until ``duration`` (wall) or Ctrl-C/SIGTERM; print progress and a summary."""
    quiet = _quiet(quiet)
    kind = resolve_kind(profile, kind)  # bad input fails before any broker starts
    password = os.environ.get(password_env) if username else None
    cfg = EmulatorConfig(
        profile=profile,
        kind=kind,
        count=count,
        broker_url=broker or "mqtt://127.0.0.1:1883",  # the embedded broker's, set below
        prefix=prefix,
        id_prefix=id_prefix,
        first_id=first_id,
        interval_s=interval_s,
        speed=speed,
        duration_s=parse_duration_s(duration),
        seed=seed,
        default_ttl_s=ttl_s,
        clients=clients,
        protocol=protocol,
        username=username,
        password=password,
        ca_file=ca_file,
        homeassistant=homeassistant,
        ha_remove_on_stop=ha_remove,
        weather=weather,
        start=start,
        rated=dict(rated or {}),
        telemetry_qos=telemetry_qos,
    )
    cfg.check()  # every option checked before a broker starts
    embedded = None
    folder: Path | None = None
    if broker is None:
        from cps_sim.bridge.embedded_broker import start_embedded_broker

        folder = Path(tempfile.mkdtemp(prefix="cps-sim-broker-"))
        embedded = start_embedded_broker(folder)
        broker = embedded.url
        print(f"started an embedded {embedded.kind} broker at {broker}", flush=True)
        cfg.broker_url = broker
        if getattr(embedded, "kind", "") == "amqtt":
            cfg.protocol = "3.1.1"
    try:
        fleet = EmulatorFleet(cfg)
    except BaseException:
        _stop_embedded(embedded, folder)  # nothing left running when the fleet cannot be built
        raise
    stopping = {"sig": None}

    def on_term(signum, _frame):
        stopping["sig"] = signum
        fleet.stop(timeout_s=0)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        fleet.start()
        first, last = fleet.device_topics[0], fleet.device_topics[-1]
        print(
            f"emulating {fleet.n} {fleet.kind} device(s), profile {fleet.profile.name}, on "
            f"{broker}: {first}" + (f" .. {last}" if fleet.n > 1 else ""),
            flush=True,
        )
        cmds = fleet.profile.command_subscriptions(first)
        if cmds:
            print(f"  commands on e.g. {cmds[0]}", flush=True)
        t0 = time.monotonic()
        while not fleet.wait(5.0 if not quiet else 60.0):
            if not quiet:
                s = fleet.stats
                print(
                    f"  {time.monotonic() - t0:7.0f} s  device clock {fleet.t_s:9.0f} s  "
                    f"telemetry {s.telemetry}  commands {s.commands}  fallbacks "
                    f"{s.fallbacks}  ignored {sum(s.ignored.values())}  reconnects "
                    f"{s.reconnects}",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("interrupted: devices go offline", file=sys.stderr, flush=True)
    finally:
        fleet.stop()
        signal.signal(signal.SIGTERM, old)
        _stop_embedded(embedded, folder)
    summary = fleet.summary()
    print(json.dumps(summary), flush=True)
    if summary_json is not None:
        write_text_atomic(summary_json, json.dumps(summary, indent=2))
    return summary
