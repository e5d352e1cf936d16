"""Configuration, rating and counters of an emulator fleet (:mod:`cps_sim.bridge.emulate`)."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cps_sim.bridge.emulator_models import DEFAULT_RATED, KINDS
from cps_sim.bridge.profiles import Rated, load_profile
from cps_sim.core.errors import BridgeError, cut

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MODES = ("auto", "setpoint")


@dataclass
class EmulatorConfig:
    """What to emulate and where (see module docstring)."""

    profile: str = "generic"
    kind: str | None = None  # default: the profile's first kind (generic: required)
    count: int = 1
    broker_url: str = "mqtt://127.0.0.1:1883"
    prefix: str = "cps/emu"  # generic profile: device topic <prefix>/dev/<id>
    id_prefix: str | None = None  # device ids <id_prefix>-0000 ... (default: the kind)
    first_id: int = 0  # number of the first device id (several processes, one rig)
    device_ids: list[str] | None = None  # exact device ids (one per device) instead
    interval_s: float = 1.0  # telemetry period [wall s]
    speed: float = 1.0  # device clock / wall clock
    duration_s: float | None = None  # wall; None = until stopped
    seed: int = 0
    default_ttl_s: float = 60.0  # command lifetime when the message has no ttl_s [device s]
    max_command_age_s: float = 60.0  # commands stamped older than this are ignored [wall s]
    clients: str = "device"  # "device" (one connection + will each) or "shared"
    protocol: str = "3.1.1"  # "3.1.1" or "5"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    keepalive_s: int = 10
    start: str | None = None  # device clock start (ISO); default now
    tz: str = "Asia/Tokyo"
    weather: str = "synthetic"  # pv / heat pump: synthetic or clear
    rated: dict[str, float] = field(default_factory=dict)  # overrides of the rating
    telemetry_qos: int | None = None  # default: the profile's
    homeassistant: bool = False
    ha_prefix: str = "homeassistant"
    ha_remove_on_stop: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific (ev_model, ...)

    def check(self) -> None:
        if self.count < 1 or self.count > 100_000:
            raise BridgeError(f"count must be in 1..100000, got {self.count}")
        for name in ("interval_s", "speed", "default_ttl_s", "max_command_age_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise BridgeError(f"{name} must be a finite number > 0, got {v!r}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise BridgeError(f"duration must be > 0, got {self.duration_s}")
        if not (isinstance(self.first_id, int) and 0 <= self.first_id <= 10_000_000):
            raise BridgeError(f"first id must be an integer in 0..10000000, got {self.first_id!r}")
        if self.device_ids is not None and len(self.device_ids) != self.count:
            raise BridgeError(f"device_ids has {len(self.device_ids)} ids for {self.count} devices")
        if self.telemetry_qos not in (None, 0, 1, 2):
            raise BridgeError(f"telemetry QoS must be 0, 1 or 2, got {self.telemetry_qos!r}")
        if self.clients not in ("device", "shared"):
            raise BridgeError(f"clients must be device or shared, got {self.clients!r}")
        if self.protocol not in ("3.1.1", "5"):
            raise BridgeError(f"protocol must be 3.1.1 or 5, got {self.protocol!r}")
        for level in self.prefix.split("/"):
            if not ID_RE.match(level):
                raise BridgeError(f"prefix {self.prefix!r}: levels of [A-Za-z0-9_-]{{1,64}}")
        if self.weather not in ("synthetic", "clear"):
            raise BridgeError(f"weather must be synthetic or clear, got {self.weather!r}")
        if self.id_prefix is not None and not ID_RE.match(f"{self.id_prefix}-0000"):
            raise BridgeError(f"id prefix {self.id_prefix!r}: device ids are [A-Za-z0-9_-]{{1,64}}")
        if self.start is not None:
            self.start_timestamp()
        if self.ca_file is not None:
            from cps_sim.core.errors import InputFileError
            from cps_sim.core.files import require_regular_file

            try:
                require_regular_file(self.ca_file, what="CA certificate file")
            except InputFileError as exc:
                raise BridgeError(f"--ca-file {exc}") from None

    def start_timestamp(self) -> Any:
        """``start`` as a pandas Timestamp (``tz`` when it has no offset), or None; a
        :class:`BridgeError` for text that is not an ISO 8601 date-time of 1900..2199."""
        if self.start is None:
            return None
        import datetime as _dt

        import pandas as pd

        text = str(self.start).strip()
        shown = repr(cut(text))
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise BridgeError(
                f"start {shown}: expected an ISO 8601 date-time such as 2026-04-01T08:00:00+09:00"
            ) from None
        if not 1900 <= parsed.year < 2200:
            raise BridgeError(f"start {shown}: the year must be in 1900..2199")
        ts = pd.Timestamp(parsed)
        return ts.tz_localize(self.tz) if ts.tzinfo is None else ts


def merged_rating(kind: str, profile_rated: Rated, overrides: dict[str, float]) -> Rated:
    """The kind's default rating, overridden by what the profile states, then by the user."""
    base = DEFAULT_RATED[kind]
    blank = Rated()
    stated = {k: v for k, v in profile_rated.__dict__.items() if v != getattr(blank, k)}
    try:
        return base.merged(stated).merged(overrides)
    except TypeError as exc:
        raise BridgeError(f"rated: {exc} (known: {sorted(blank.__dict__)})") from None


@dataclass
class Stats:
    telemetry: int = 0
    state: int = 0
    commands: int = 0
    clamped: int = 0
    fallbacks: int = 0
    ignored: Counter = field(default_factory=Counter)  # reason -> count
    rejected: Counter = field(default_factory=Counter)
    publish_failed: int = 0
    reconnects: int = 0
    ha_announcements: int = 0
    lateness_s: list[float] = field(default_factory=list)  # telemetry slot lateness

    def as_dict(self) -> dict[str, Any]:
        late = np.asarray(self.lateness_s[-100_000:] or [0.0])
        return {
            "telemetry": self.telemetry,
            "state": self.state,
            "commands": self.commands,
            "clamped": self.clamped,
            "fallbacks": self.fallbacks,
            "ignored": dict(self.ignored),
            "rejected": dict(self.rejected),
            "publish_failed": self.publish_failed,
            "ha_announcements": self.ha_announcements,
            "reconnects": self.reconnects,
            "lateness_p50_s": float(np.percentile(late, 50)),
            "lateness_p99_s": float(np.percentile(late, 99)),
        }


def resolve_kind(profile_name: str, kind: str | None) -> str:
    """The device kind to emulate with a profile (checked; clear error otherwise)."""
    profile = load_profile(profile_name)
    kinds = profile.spec.kinds
    if kind is None:
        if profile.name == "generic":
            raise BridgeError(f"the generic profile needs --kind: one of {KINDS}")
        kind = kinds[0]
    if kind not in KINDS:
        raise BridgeError(f"unknown device kind {kind!r}; known: {KINDS}")
    if kind not in kinds:
        raise BridgeError(f"profile {profile.name} is for {list(kinds)}, not {kind}")
    return kind
