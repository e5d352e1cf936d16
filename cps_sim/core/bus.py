"""Message bus: the transport interface, its in-memory twin, and setpoint holding.

Controllers publish setpoints and subscribe to events through a
:class:`Transport`; they never know whether a message travels through memory
(:class:`MemoryTransport`, here) or a broker (the MQTT transport in
``cps_sim.bridge``).  The topic schema lives in :class:`Topics`.

* Topics are ``/``-separated levels of ``[A-Za-z0-9_-]``; subscription
  patterns may use the MQTT wildcards ``+`` (one level) and ``#`` (the rest,
  last level only).  Published topics may not contain wildcards.
* Payloads are flat mappings of ``str`` to float, int, bool, str or a numpy
  array (one message can carry the setpoints of a whole population).  Arrays
  are copied on publish, so a publisher that reuses its buffer cannot change a
  message in flight.
* :class:`MemoryTransport` delivers each message to every matching
  subscription after ``latency_s + U(0, jitter_s)``, or drops it with
  probability ``loss`` (message-level loss, drawn per delivery).  All draws
  come from the ``numpy.random.Generator`` it is given (the run's named
  stream), so a run is reproducible.  With jitter, messages can arrive out of
  order; :class:`SetpointHolder` keeps the newest by send time.
* Setpoints are latest-value-wins with a time to live: a device follows its
  last valid setpoint until it is older than ``ttl_s`` and then falls back to
  its safe behaviour.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import simpy

from cps_sim.core.errors import CpsSimError
from cps_sim.core.types import any_nan

_LEVEL = r"[A-Za-z0-9_-]+"
TOPIC_RE = re.compile(rf"^{_LEVEL}(/{_LEVEL})*$")
_LEVEL_RE = re.compile(rf"^{_LEVEL}$")

PayloadValue = float | int | bool | str | np.ndarray

# ``battery_mode`` setpoint values (one per site): follow ``battery_setpoint_w``, or the
# battery's built-in self-consumption rule.  NaN is never a valid setpoint value.
BATTERY_FOLLOW = 0.0
BATTERY_AUTO = 1.0
# hpwh_mode (per site): follow hpwh_setpoint_w / the water heater's own rule (night, surplus)
HPWH_FOLLOW = 0.0
HPWH_AUTO = 1.0
Payload = Mapping[str, PayloadValue]


class BusError(CpsSimError):
    """A topic, pattern or payload that the bus refuses."""


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid publish topic, else raise :class:`BusError`."""
    if not isinstance(topic, str) or not TOPIC_RE.match(topic):
        raise BusError(
            f"invalid topic {topic!r}: levels of [A-Za-z0-9_-] separated by '/', no wildcards"
        )
    return topic


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid subscription pattern (``+``/``#`` wildcards)."""
    if not isinstance(pattern, str) or not pattern:
        raise BusError(f"invalid subscription pattern {pattern!r}")
    levels = pattern.split("/")
    for i, level in enumerate(levels):
        if level == "#" and i == len(levels) - 1:
            continue
        if level == "+" or _LEVEL_RE.match(level):
            continue
        raise BusError(
            f"invalid subscription pattern {pattern!r}: level {i} is {level!r} "
            "('#' only as the last level, '+' alone in a level)"
        )
    return pattern


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT matching: ``+`` matches one level, a trailing ``#`` the remaining (>= 0) levels."""
    p = pattern.split("/")
    t = topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(p) == len(t)


def validate_payload(payload: Payload) -> dict[str, PayloadValue]:
    """Check a payload and return a private copy (arrays copied and made read-only)."""
    if not isinstance(payload, Mapping):
        raise BusError(f"payload must be a mapping, got {type(payload).__name__}")
    out: dict[str, PayloadValue] = {}
    for key, value in payload.items():
        if not isinstance(key, str) or not _LEVEL_RE.match(key):
            raise BusError(f"payload key {key!r}: must be a non-empty [A-Za-z0-9_-] string")
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise BusError(f"payload[{key!r}]: array dtype {value.dtype} not numeric")
            arr = np.array(value, copy=True)
            arr.setflags(write=False)
            out[key] = arr
        elif isinstance(value, (bool, int, float, str, np.floating, np.integer)):
            out[key] = value.item() if isinstance(value, np.generic) else value
        else:
            raise BusError(
                f"payload[{key!r}]: unsupported type {type(value).__name__} "
                "(float, int, bool, str or numpy array)"
            )
    return out


def is_setpoint_topic(topic: str) -> bool:
    """``cps/<group>/setpoints`` (:meth:`Topics.setpoints`)."""
    levels = topic.split("/")
    return len(levels) == 3 and levels[0] == Topics.ROOT and levels[2] == "setpoints"


def nan_setpoint(payload: Mapping[str, Any]) -> str | None:
    """The first key of a setpoint payload holding NaN (never a valid setpoint: the
    battery's built-in rule is ``battery_mode`` = :data:`BATTERY_AUTO`), else None."""
    for key, value in payload.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and any_nan(value):
                return key
        elif isinstance(value, float) and math.isnan(value):
            return key
    return None


def check_setpoint_payload(topic: str, payload: Mapping[str, Any]) -> None:
    """Refuse NaN in a message on a setpoint topic (a controller bug, raised at publish)."""
    if is_setpoint_topic(topic):
        key = nan_setpoint(payload)
        if key is not None:
            raise BusError(
                f"{topic}: {key} holds NaN, which is never a valid setpoint "
                "(the battery's built-in rule is battery_mode = BATTERY_AUTO)"
            )


@dataclass(frozen=True)
class Message:
    """One delivered message."""

    topic: str
    payload: Mapping[str, Any]
    sent_s: float  # simulation time of publish
    seq: int  # publish sequence number on this transport (tie-break for equal sent_s)
    delivered_s: float = math.nan


class Transport(Protocol):
    """What controllers and devices talk through."""

    def publish(self, topic: str, payload: Payload) -> None: ...

    def subscribe(self, pattern: str) -> simpy.Store: ...


@dataclass
class BusCounters:
    published: int = 0  # publish() calls
    delivered: int = 0  # messages put into a subscriber's store
    dropped: int = 0  # deliveries lost (probability ``loss``)
    unrouted: int = 0  # published messages that matched no subscription


class MemoryTransport:
    """In-memory transport delivering inside SimPy with latency, jitter and loss.

    Parameters
    ----------
    env : the SimPy environment.
    rng : generator for jitter and loss draws (use the run's named stream,
        e.g. ``RngStreams(seed).generator("bus")``).  Not needed when jitter
        and loss are both zero.
    latency_s : fixed delay of every delivery [s].
    jitter_s : extra delay, uniform in ``[0, jitter_s)`` per delivery [s].
    loss : probability that a delivery is dropped (0..1).
    """

    def __init__(
        self,
        env: simpy.Environment,
        rng: np.random.Generator | None = None,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        loss: float = 0.0,
    ):
        if not (latency_s >= 0 and jitter_s >= 0):
            raise BusError(f"latency_s and jitter_s must be >= 0, got {latency_s}, {jitter_s}")
        if not 0.0 <= loss <= 1.0:
            raise BusError(f"loss must be in [0, 1], got {loss}")
        if rng is None and (jitter_s > 0 or loss > 0):
            raise BusError("a seeded rng is required when jitter_s > 0 or loss > 0")
        self.env = env
        self.rng = rng
        self.latency_s = float(latency_s)
        self.jitter_s = float(jitter_s)
        self.loss = float(loss)
        self.counters = BusCounters()
        self._subs: list[tuple[str, simpy.Store]] = []
        # topic -> its subscribers' stores: a topic is validated and matched once, the
        # cache cleared by every new subscription
        self._routes: dict[str, list[simpy.Store]] = {}
        self._seq = 0

    def subscribe(self, pattern: str) -> simpy.Store:
        store = simpy.Store(self.env)
        self._subs.append((validate_pattern(pattern), store))
        self._routes.clear()
        return store

    def _route(self, topic: str) -> list[simpy.Store]:
        stores = self._routes.get(topic) if isinstance(topic, str) else None
        if stores is None:
            validate_topic(topic)
            stores = [store for pattern, store in self._subs if topic_matches(pattern, topic)]
            self._routes[topic] = stores
        return stores

    def publish(self, topic: str, payload: Payload) -> None:
        targets = self._route(topic)
        body = validate_payload(payload)
        check_setpoint_payload(topic, body)
        self.counters.published += 1
        seq = self._seq
        self._seq += 1
        if not targets:
            self.counters.unrouted += 1
            return
        n = len(targets)
        rng = self.rng  # set whenever jitter or loss is (checked in __init__)
        # the loss draws come before the jitter draws (the run's seeded stream)
        lost: list[bool] = (
            (rng.random(n) < self.loss).tolist()
            if rng is not None and self.loss > 0
            else [False] * n
        )
        extra: list[float] = (
            (rng.random(n) * self.jitter_s).tolist()
            if rng is not None and self.jitter_s > 0
            else [0.0] * n
        )
        now = float(self.env.now)
        for store, is_lost, jit in zip(targets, lost, extra, strict=True):
            if is_lost:
                self.counters.dropped += 1
                continue
            delay = self.latency_s + jit
            msg = Message(topic, body, now, seq, now + delay)
            ev = self.env.timeout(delay)
            ev.callbacks.append(self._deliverer(store, msg))

    def _deliverer(self, store: simpy.Store, msg: Message) -> Callable[[simpy.Event], None]:
        def deliver(_event: simpy.Event) -> None:
            self.counters.delivered += 1
            store.put(msg)

        return deliver


class Topics:
    """The topic schema (one place): ``cps/<group>/<kind>[/<name>]``."""

    ROOT = "cps"

    @classmethod
    def setpoints(cls, group: str) -> str:
        return validate_topic(f"{cls.ROOT}/{group}/setpoints")

    @classmethod
    def event(cls, group: str, kind: str) -> str:
        return validate_topic(f"{cls.ROOT}/{group}/event/{kind}")

    @classmethod
    def events(cls, group: str) -> str:
        return validate_pattern(f"{cls.ROOT}/{group}/event/#")

    @classmethod
    def report(cls, group: str, name: str) -> str:
        return validate_topic(f"{cls.ROOT}/{group}/report/{name}")


@dataclass
class SetpointHolder:
    """Device-side memory of the last valid setpoint message (latest value wins).

    ``offer`` accepts a message only if it is newer (by send time, then
    sequence) than the one held and its arrays have the expected lengths;
    ``current`` returns the held setpoints while they are younger than their
    ``ttl_s`` (from the payload, else ``default_ttl_s``), and ``None`` after
    that: the caller then applies its safe behaviour.
    """

    sizes: Mapping[str, int]  # expected array length per setpoint key
    default_ttl_s: float = math.inf
    accepted: int = 0
    rejected_stale: int = 0  # older than the held one (reordered by jitter)
    rejected_invalid: int = 0
    reasons: list[str] = field(default_factory=list)
    _msg: Message | None = None

    def offer(self, msg: Message) -> bool:
        held = self._msg
        if held is not None and (msg.sent_s, msg.seq) <= (held.sent_s, held.seq):
            self.rejected_stale += 1
            return False
        problem = self._check(msg.payload)
        if problem is not None:
            self.rejected_invalid += 1
            if len(self.reasons) < 100:
                self.reasons.append(f"{msg.topic} @ {msg.sent_s:g} s: {problem}")
            return False
        self._msg = msg
        self.accepted += 1
        return True

    def _check(self, payload: Mapping[str, Any]) -> str | None:
        known = [k for k in payload if k in self.sizes]
        if not known:
            return f"no setpoint key among {sorted(self.sizes)}"
        for key in known:
            value = np.asarray(payload[key], dtype=float)
            n = self.sizes[key]
            if value.ndim != 1 or value.shape[0] != n:
                return f"{key}: expected an array of length {n}, got shape {value.shape}"
            if any_nan(value):
                return f"{key}: NaN is not a valid setpoint (battery_mode selects the rule)"
        ttl = payload.get("ttl_s", self.default_ttl_s)
        if not isinstance(ttl, (int, float)) or not ttl > 0:
            return f"ttl_s must be > 0, got {ttl!r}"
        return None

    def ttl_s(self) -> float:
        if self._msg is None:
            return self.default_ttl_s
        return float(self._msg.payload.get("ttl_s", self.default_ttl_s))

    def expires_s(self) -> float:
        """Simulation time at which the held setpoint goes stale (inf if none/never)."""
        if self._msg is None:
            return math.inf
        return self._msg.sent_s + self.ttl_s()

    def is_fallback(self, now_s: float) -> bool:
        return self._msg is None or now_s >= self.expires_s()

    def current(self, now_s: float) -> dict[str, np.ndarray] | None:
        """The held setpoints (key -> array) if still valid at ``now_s``, else None."""
        if self.is_fallback(now_s):
            return None
        assert self._msg is not None
        return {
            k: np.asarray(v, dtype=float) for k, v in self._msg.payload.items() if k in self.sizes
        }
