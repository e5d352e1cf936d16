"""Emulated MQTT devices: N devices of one kind, driven by the models, speaking a profile.

``start_emulators(...)`` (in-process, returns an :class:`EmulatorFleet` running in its
own thread) and ``cps-sim emulate PROFILE --count N`` (:func:`run_emulate`) start a
fleet.  Each device

* follows setpoints received in its profile's command format, clamped to its rating
  (:func:`cps_sim.bridge.profiles.clamp_setpoint`, the same code the controller side
  uses), and acknowledges each applied command at once on its state topic (generic:
  ``.../state`` with ``setpoint_seq``; vendors: their echo, e.g. Tasmota
  ``stat/<t>/POWER``);
* reports telemetry every ``interval_s`` wall seconds (staggered over the interval):
  ``power_w`` is the mean power since its previous report and ``energy_wh`` the exact
  integral, so reported energy equals the integral of reported power;
* publishes availability (retained ``online``) with a last will ``offline``: with
  ``clients="device"`` every device has its own MQTT connection and will, like real
  hardware; ``clients="shared"`` uses one connection whose will marks
  ``<prefix>/emulator/<fleet>/status`` offline;
* applies its own fail-safe when commands stop: a command expires ``ttl_s`` after
  arrival (the setpoint's ``ttl_s``, else ``default_ttl_s``) on the device's clock;
* ignores retained commands (a stale command left on the broker, reliability P9),
  commands whose ``ts`` is older than ``max_command_age_s``, duplicates and
  out-of-order commands (by ``ts``, then ``seq``).

Time: the device clock runs at ``speed`` x wall time from ``start``; ``ttl_s`` is in
device seconds.  All connections are served by one thread with a selector (paho
without its own threads), so 1,000 devices need one thread, not 1,000.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd

from cps_sim.bridge.emulate_config import (
    ID_RE,
    MODES,
    EmulatorConfig,
    Stats,
    merged_rating,
    resolve_kind,
)
from cps_sim.bridge.emulator_io import Links
from cps_sim.bridge.emulator_models import Commands, make_fleet
from cps_sim.bridge.profiles import (
    BoundDevice,
    Ignored,
    Reject,
    Setpoint,
    clamp_setpoint,
    load_profile,
)
from cps_sim.bridge.realtime_gc import hold_heap, release_heap
from cps_sim.core.errors import BridgeError


class EmulatorFleet:
    """A running fleet (see module docstring).  ``stop()`` ends it cleanly."""

    def __init__(self, cfg: EmulatorConfig):
        cfg.check()
        self.cfg = cfg
        self.profile = load_profile(cfg.profile)
        kind = resolve_kind(cfg.profile, cfg.kind)
        self.kind = kind
        self.rated = merged_rating(kind, self.profile.rated, cfg.rated)
        n = cfg.count
        self.n = n
        idp = cfg.id_prefix or kind.replace("_", "-")
        first = cfg.first_id
        width = max(4, len(str(first + n - 1)))
        if cfg.device_ids is not None:
            self.device_ids = list(cfg.device_ids)
        else:
            self.device_ids = [f"{idp}-{i:0{width}d}" for i in range(first, first + n)]
        for d in self.device_ids[: n if cfg.device_ids is not None else 1]:
            if not ID_RE.match(d):
                src = "" if cfg.device_ids is not None else f" from id prefix {idp!r}"
                raise BridgeError(f"invalid device id {d!r}{src}: ids are [A-Za-z0-9_-]{{1,64}}")
        if self.profile.name == "generic":
            self.device_topics = [f"{cfg.prefix}/dev/{d}" for d in self.device_ids]
        else:
            self.device_topics = list(self.device_ids)
        self.bound: list[BoundDevice] = [
            BoundDevice(self.profile, t, self.rated) for t in self.device_topics
        ]
        self.fleet_id = f"{idp}-{uuid.uuid4().hex[:6]}"
        self.sid = uuid.uuid4().hex[:8]
        start = cfg.start_timestamp() if cfg.start else pd.Timestamp.now(tz=cfg.tz).floor("s")
        self.start_ts = start
        # a rig spread over processes (first_id) gets different devices in each
        self.rng = np.random.default_rng(cfg.seed if not first else [cfg.seed, first])
        self.model = make_fleet(kind, n, self.rng, start, self.rated, **self._model_options())
        self.rated = self.model.rated  # PV narrows its rating to the inverters
        horizon = cfg.duration_s * cfg.speed if cfg.duration_s else 86400.0
        self.model.warm(horizon + 3600.0)  # profiles built before the devices go online
        self.cmd = Commands.none(n)
        self.expires_s = np.full(n, np.inf)
        self.fallback = np.zeros(n, bool)
        self.mode_auto = np.zeros(n, bool)
        self.last_ts = np.full(n, -np.inf)
        self.last_seq = np.full(n, -1, dtype=np.int64)
        self.last_cmd_seq = np.full(n, -1, dtype=np.int64)
        self.seq = {"telemetry": np.zeros(n, np.int64), "state": np.zeros(n, np.int64)}
        self.rep_e = np.zeros(n)
        self.rep_t = np.full(n, np.nan)
        self.stats = Stats()
        self.t_s = 0.0  # device clock [s since start]
        self._mono0 = 0.0
        self._wall0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self.changed: set[int] = set()
        self._topic_index: dict[str, int] = {}
        for i, b in enumerate(self.bound):
            for t in b.command_topics:
                self._topic_index[t] = i
        self.links = Links(self)

    def _model_options(self) -> dict[str, Any]:
        opts = dict(self.cfg.options)
        if self.kind in ("pv", "heat_pump"):
            opts.setdefault("weather", self.cfg.weather)
        return opts

    # ------------------------------------------------------------------ clock
    def now_s(self) -> float:
        """Device clock [s since start]."""
        return (time.monotonic() - self._mono0) * self.cfg.speed

    def wall_of(self, t_s: float) -> float:
        return self._wall0 + t_s / self.cfg.speed

    def advance_to(self, t_s: float) -> None:
        if t_s > self.t_s:
            self.model.advance(self.t_s, t_s - self.t_s, self.cmd)
            self.t_s = t_s

    # ------------------------------------------------------------------ commands
    def telemetry_signals(self) -> set[str]:
        """The canonical signals this fleet publishes (telemetry and state)."""
        base = {
            "power_w",
            "energy_wh",
            "energy_in_wh",
            "energy_out_wh",
            "voltage_v",
            "on",
            "current_a",
            "mode",
            "fallback",
        }
        return base | set(self.model.signals())

    def announce_homeassistant(self) -> None:
        from cps_sim.bridge.homeassistant import fleet_discovery

        for i, topic, payload in fleet_discovery(self):
            self.links.publish(i, topic, payload, 1, True)
        self.stats.ha_announcements += 1

    def handle_command(self, topic: str, payload: bytes, retained: bool) -> None:
        if self.cfg.homeassistant and topic == f"{self.cfg.ha_prefix}/status":
            if payload.strip() == b"online":  # Home Assistant (re)started: announce again
                self.announce_homeassistant()
            return
        i = self._topic_index.get(topic)
        if i is None:
            self.stats.ignored["unknown_topic"] += 1
            return
        if retained:  # P9: a command left on the broker is never acted on
            self.stats.ignored["retained"] += 1
            return
        sp = self.bound[i].decode_command(topic, payload)
        if isinstance(sp, Ignored):
            self.stats.ignored["no_command"] += 1
            return
        if isinstance(sp, Reject):
            self.stats.rejected["invalid"] += 1
            self._ack(i, reason=f"{sp.reason}: {sp.detail}"[:200])
            return
        wall = time.time()
        if sp.ts is not None:
            if wall - sp.ts > self.cfg.max_command_age_s:
                self.stats.ignored["stale"] += 1
                return
            if sp.ts < self.last_ts[i]:
                self.stats.ignored["out_of_order"] += 1
                return
            if sp.ts == self.last_ts[i] and sp.seq is not None and sp.seq <= self.last_seq[i]:
                self.stats.ignored["duplicate"] += 1
                return
        elif sp.seq is not None and sp.seq == self.last_seq[i]:
            self.stats.ignored["duplicate"] += 1
            return
        self.apply(i, sp)

    def apply(self, i: int, sp: Setpoint) -> str | None:
        """Hold one device's command and acknowledge it.  Returns the reject reason."""
        held, reason = self.hold(i, sp)
        self._ack(i, reason=reason)
        if held:
            self.changed.add(i)  # its report window closes at the change (flush_changed)
        return None if held else reason

    def hold(self, i: int, sp: Setpoint) -> tuple[bool, str | None]:
        """Clamp ``sp`` to the rating and hold it (no I/O).  Returns (held, note/reason)."""
        accepts = self.model.accepts
        given = sp.given()
        if not accepts:
            self.stats.rejected["not_controllable"] += 1
            return False, f"{self.kind} takes no commands"
        bad = [k for k in given if k not in accepts]
        if bad:
            self.stats.rejected["unsupported"] += 1
            return False, f"{self.kind} does not take {bad}; it takes {list(accepts)}"
        if sp.mode is not None and sp.mode not in MODES:
            self.stats.rejected["bad_mode"] += 1
            return False, f"mode must be one of {MODES}, got {sp.mode!r}"
        if sp.ttl_s is not None and not (math.isfinite(sp.ttl_s) and sp.ttl_s > 0):
            self.stats.rejected["invalid"] += 1
            return False, f"ttl_s must be > 0, got {sp.ttl_s!r}"
        try:
            clamped, notes = clamp_setpoint(sp, self.rated)
        except BridgeError as exc:
            self.stats.rejected["invalid"] += 1
            return False, str(exc)
        if notes:
            self.stats.clamped += 1
        self.stats.commands += 1
        if sp.ts is not None:
            self.last_ts[i] = sp.ts
        if sp.seq is not None:
            self.last_seq[i] = sp.seq
            self.last_cmd_seq[i] = sp.seq
        c = self.cmd
        if sp.mode == "auto":
            c.active[i] = False
            self.mode_auto[i] = True
        else:
            self.mode_auto[i] = False
            c.active[i] = True
            if clamped.power_w is not None or clamped.current_a is not None:
                c.power_w[i] = np.nan if clamped.power_w is None else clamped.power_w
                c.current_a[i] = np.nan if clamped.current_a is None else clamped.current_a
                if clamped.on is None:
                    c.on[i] = -1
            if clamped.on is not None:
                c.on[i] = 1 if clamped.on else 0
        ttl = sp.ttl_s if sp.ttl_s is not None else self.cfg.default_ttl_s
        self.expires_s[i] = self.t_s + ttl
        self.fallback[i] = False
        return True, "; ".join(notes) or None

    def handle_commands(self, batch: list[tuple[str, bytes, bool]], report: bool = True) -> None:
        """Commands that arrived together: the physics advances once to now, each command
        is held and acknowledged, and (``report``) each changed device reports once.
        The network loop passes ``report=False`` and reports when no command is
        waiting, so that acknowledgements of a burst do not queue behind telemetry."""
        self.advance_to(self.now_s())
        for topic, payload, retained in batch:
            self.handle_command(topic, payload, retained)
        if report:
            self.flush_changed()

    def flush_changed(self) -> None:
        if self.changed:
            self.publish_telemetry(np.fromiter(sorted(self.changed), dtype=np.int64))
            self.changed.clear()

    def expire(self) -> None:
        """Watchdog: commands older than their ttl give way to the fail-safe."""
        due = np.flatnonzero(self.expires_s <= self.t_s)
        if not len(due):
            return
        self.cmd.active[due] = False
        self.expires_s[due] = np.inf
        self.fallback[due] = ~self.mode_auto[due]
        self.stats.fallbacks += int(self.fallback[due].sum())
        for i in due.tolist():
            self._ack(int(i), reason="watchdog: no command within ttl_s; fail-safe applied")
        self.publish_telemetry(due)

    def next_expiry_s(self) -> float:
        return float(self.expires_s.min()) if self.n else math.inf

    # ------------------------------------------------------------------ publishing
    def _state_signals(self, i: int) -> dict[str, Any]:
        c = self.cmd
        sig: dict[str, Any] = {
            "mode": "auto" if (self.mode_auto[i] or not c.active[i]) else "setpoint",
            "fallback": bool(self.fallback[i]),
            "on": bool(self.model.on_state(c)[i]),
        }
        if c.active[i]:
            if not math.isnan(c.power_w[i]):
                sig["setpoint_power_w"] = float(c.power_w[i])
            if not math.isnan(c.current_a[i]):
                sig["setpoint_current_a"] = float(c.current_a[i])
        if self.kind == "ev_charger":
            lim = self.model.limit_current_a(c)[i]  # type: ignore[attr-defined]
            sig["current_limit_a"] = float(lim)
            sig["on"] = bool(lim > 0)
        if self.last_cmd_seq[i] >= 0:
            sig["setpoint_seq"] = int(self.last_cmd_seq[i])
        return sig

    def _ack(self, i: int, reason: str | None = None) -> str | None:
        sig = self._state_signals(i)
        if reason:
            sig["reason"] = reason
        self._publish(i, "state", sig)
        return reason

    def _publish(self, i: int, role: str, sig: dict[str, Any]) -> None:
        b = self.bound[i]
        self.seq[role][i] += 1
        t_wall = self.wall_of(self.t_s)
        sig = {**sig, "seq": int(self.seq[role][i]), "ts": t_wall, "sid": self.sid}
        msgs = b.encode(role, sig)
        if not msgs and role == "state":
            # vendors without a state topic echo through telemetry (Shelly NotifyStatus)
            keep = {k: v for k, v in sig.items() if k in ("on", "current_limit_a", "ts", "seq")}
            msgs = b.encode("telemetry", keep)
        for topic, payload, qos, retain in msgs:
            if role == "telemetry" and self.cfg.telemetry_qos is not None:
                qos = self.cfg.telemetry_qos
            self.links.publish(i, topic, payload, qos, retain)
        if role == "state":
            self.stats.state += 1

    def publish_telemetry(self, idx: np.ndarray) -> None:
        if not len(idx):
            return
        m = self.model
        t = self.t_s
        e = m.energy_wh[idx]
        dt = t - self.rep_t[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(dt > 0, (e - self.rep_e[idx]) * 3600.0 / dt, m.last_power_w[idx])
        self.rep_e[idx] = e
        self.rep_t[idx] = t
        extra = m.signals()
        on = m.on_state(self.cmd)
        local = self.start_ts + pd.Timedelta(seconds=t)
        device_time = local.strftime("%Y-%m-%dT%H:%M:%S")
        for k, i in enumerate(idx.tolist()):
            sig: dict[str, Any] = {
                "power_w": float(avg[k]),
                "energy_wh": float(m.energy_wh[i]),
                "energy_in_wh": float(m.energy_in_wh[i]),
                "energy_out_wh": float(m.energy_out_wh[i]),
                "voltage_v": self.rated.voltage_v,
                "on": bool(on[i]),
                "device_time": device_time,
            }
            for name, arr in extra.items():
                v = arr[i]
                sig[name] = v.item() if hasattr(v, "item") else v
            if "current_a" not in sig:
                sig["current_a"] = abs(sig["power_w"]) / (self.rated.voltage_v * self.rated.phases)
            self._publish(i, "telemetry", sig)
        self.stats.telemetry += len(idx)

    # ------------------------------------------------------------------ running
    def start(self, timeout_s: float = 30.0) -> EmulatorFleet:
        """Connect every device, publish availability, start the loop thread (once)."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._run, name=f"emulate-{self.fleet_id}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise BridgeError(
                f"emulators did not connect to {self.cfg.broker_url} within {timeout_s:g} s"
            )
        if self._error is not None:
            err = self._error
            self._thread.join(5)
            raise err if isinstance(err, BridgeError) else BridgeError(str(err))
        return self

    def _run(self) -> None:
        try:
            self.links.connect_all()
            self._mono0 = time.monotonic()
            self._wall0 = time.time()
            self.links.announce(True)
            if self.cfg.homeassistant:
                self.announce_homeassistant()
            hold_heap()  # no full-heap collection delays a command
            self._ready.set()
            try:
                self.links.serve(self._stop)
            finally:
                release_heap()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                self.links.close(clean=not isinstance(self._error, KeyboardInterrupt))

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the fleet stops (duration reached or stop()); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
            raise (
                self._error
                if isinstance(self._error, BridgeError)
                else BridgeError(f"emulator loop failed: {self._error!r}")
            )
        return not self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish ``offline`` for every device (removing HA entities if configured), then
        disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "profile": self.profile.name,
            "count": self.n,
            "device_time_s": self.t_s,
            **self.stats.as_dict(),
        }

    def __enter__(self) -> EmulatorFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulators(
    kind: str | None,
    profile: str = "generic",
    count: int = 1,
    broker_url: str = "mqtt://127.0.0.1:1883",
    **options: Any,
) -> EmulatorFleet:
    """Start a fleet in a background thread of this process (for ``cps-sim hil --emulate``
    and tests); ``options`` are :class:`EmulatorConfig` fields.  Call ``.stop()``."""
    cfg = EmulatorConfig(profile=profile, kind=kind, count=count, broker_url=broker_url, **options)
    return EmulatorFleet(cfg).start()
