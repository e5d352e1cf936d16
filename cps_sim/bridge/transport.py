"""``MqttTransport``: the bus of ``core.bus`` over an MQTT broker (paho-mqtt 2.x).

Threads and time
----------------
paho runs its network loop in its own thread.  Its callbacks do one thing:
put the raw message (wall time, topic, bytes, retain, QoS) or a connection
change on a bounded :class:`InboundQueue`; when the queue is full the message
is dropped and counted (``queue_drops``), never silently.  One SimPy process
(:meth:`MqttTransport.start`) wakes every ``poll_s`` of simulated time, takes
what is queued, decodes it strictly (``bridge.schema``) and puts accepted
messages into the subscribers' ``simpy.Store`` s.  Everything the run consumes
from outside passes through that process and is recorded (``MessageLog``) with
the simulation time it was taken at, so a run is single-threaded and
deterministic given its inputs, and ``cps-sim replay`` reproduces it.

Loopback
--------
Messages this run publishes on topics it also subscribes to (a controller and
a simulated device talking over the broker) are delivered ``loopback_s`` of
simulated time after their publish time (default 0): a timer at that instant
drains the queue and waits for them (at most ``loopback_timeout_s`` of wall
time, then counts ``loopback_timeouts``).  So a controller sees exactly the
same run over MQTT as over ``MemoryTransport(latency_s=loopback_s)``, while
every message really travels through the broker.

Outages
-------
paho reconnects with exponential backoff (``reconnect_min_s`` ..
``reconnect_max_s``); ``on_connect`` subscribes again.  While the run knows
it is disconnected, setpoints are latest-value-wins: only the newest per topic
is kept and sent on reconnect if its ttl has not run out (``superseded``,
``expired_offline``); other messages are dropped and counted
(``dropped_offline``).  QoS 1 for setpoints, events and availability; a last
will sets ``<prefix>/status`` to ``offline`` (retained).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import simpy

from cps_sim.bridge import schema as S
from cps_sim.core.bus import (
    Message,
    Payload,
    check_setpoint_payload,
    topic_matches,
    validate_pattern,
    validate_payload,
    validate_topic,
)
from cps_sim.core.errors import BridgeAuthError, BridgeError, BridgeTlsError, BridgeUnavailable

log = logging.getLogger("cps_sim.bridge")

CONNECTED = "$connected"
DISCONNECTED = "$disconnected"
CONNECT_FAILED = "$connect_failed"


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None  # None: the system's trusted CAs
    cert_file: Path | None = None  # client certificate (brokers with require_certificate)
    key_file: Path | None = None


@dataclass(frozen=True)
class ConnectionConfig:
    """How to reach the broker.  ``password`` is never logged or written anywhere."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsConfig | None = None
    protocol: str = "5"  # "5" or "3.1.1"
    client_id: str | None = None
    keepalive_s: int = 10
    connect_timeout_s: float = 5.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    session_expiry_s: int = 300  # MQTT 5: broker keeps our subscriptions this long offline
    max_outgoing: int = 10_000  # paho's outgoing QoS 1 queue (bounded)

    def endpoint(self) -> tuple[str, int, bool]:
        """(host, port, tls) from ``url`` (``mqtt://host:port`` or ``mqtts://``)."""
        return parse_url(self.url)


def parse_url(url: str) -> tuple[str, int, bool]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BridgeError(f"broker URL {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise BridgeError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise BridgeError(f"broker URL {url!r}: no host")
    if parts.username or parts.password:
        raise BridgeError(
            f"broker URL {parts.scheme}://...@{parts.hostname}: put the user name "
            "in bridge.username and the password in an environment variable or "
            "file, not in the URL"
        )
    if parts.path not in ("", "/"):
        raise BridgeError(f"broker URL {url!r}: unexpected path {parts.path!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return parts.hostname, port or (8883 if tls else 1883), tls


# ----------------------------------------------------------------------------- inbound


@dataclass
class RawIn:
    """One thing the network thread handed over: a message or a connection change."""

    wall_s: float
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0
    parsed: Any = None  # strict parse cached by the loopback check


class InboundQueue:
    """Bounded, thread-safe hand-over from paho's thread to the simulation.

    Messages beyond ``maxsize`` are dropped and counted with their topic and
    wall time; connection changes are never dropped.
    """

    def __init__(self, maxsize: int = 10_000):
        self.maxsize = int(maxsize)
        self._items: deque[RawIn] = deque()
        self._n_msgs = 0
        self._cv = threading.Condition()
        self.dropped: list[tuple[float, str, int]] = []  # (wall, topic, bytes)
        self.drops_total = 0

    def put(self, raw: RawIn) -> bool:
        with self._cv:
            is_msg = not raw.topic.startswith("$")
            if is_msg and self._n_msgs >= self.maxsize:
                self.drops_total += 1
                if len(self.dropped) < 100_000:
                    self.dropped.append((raw.wall_s, raw.topic, len(raw.payload)))
                return False
            self._items.append(raw)
            self._n_msgs += is_msg
            self._cv.notify()
            return True

    def take_all(self) -> tuple[list[RawIn], list[tuple[float, str, int]]]:
        with self._cv:
            items = list(self._items)
            self._items.clear()
            self._n_msgs = 0
            dropped, self.dropped = self.dropped, []
        return items, dropped

    def get(self, timeout_s: float) -> RawIn | None:
        with self._cv:
            if not self._items:
                self._cv.wait(timeout=max(timeout_s, 0.0))
            if not self._items:
                return None
            raw = self._items.popleft()
            self._n_msgs -= not raw.topic.startswith("$")
            return raw

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    @property
    def messages(self) -> int:
        """Messages waiting (connection changes not counted)."""
        with self._cv:
            return self._n_msgs


# ----------------------------------------------------------------------------- records

IN, OUT, CONN = "in", "out", "conn"


class MessageLog:
    """Every message in and out, as columns (``bridge.parquet``)."""

    COLUMNS = (
        "drain",
        "sim_time_s",
        "wall_time_s",
        "direction",
        "topic",
        "payload",
        "qos",
        "retain",
        "accepted",
        "reason",
        "detail",
        "taken_wall_s",
    )

    def __init__(self) -> None:
        self.rows: dict[str, list[Any]] = {c: [] for c in self.COLUMNS}

    def add(
        self,
        drain: int,
        sim_s: float,
        wall_s: float,
        direction: str,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        accepted: bool,
        reason: str = "",
        detail: str = "",
        taken_wall_s: float = float("nan"),
    ) -> None:
        r = self.rows
        r["taken_wall_s"].append(float(taken_wall_s))
        r["drain"].append(int(drain))
        r["sim_time_s"].append(float(sim_s))
        r["wall_time_s"].append(float(wall_s))
        r["direction"].append(direction)
        r["topic"].append(topic)
        r["payload"].append(bytes(payload))
        r["qos"].append(int(qos))
        r["retain"].append(bool(retain))
        r["accepted"].append(bool(accepted))
        r["reason"].append(reason)
        r["detail"].append(detail[:300])

    def __len__(self) -> int:
        return len(self.rows["topic"])

    def table(self):
        import pyarrow as pa

        r = self.rows
        return pa.table(
            {
                "drain": pa.array(r["drain"], pa.int64()),
                "sim_time_s": pa.array(r["sim_time_s"], pa.float64()),
                "wall_time_s": pa.array(r["wall_time_s"], pa.float64()),
                "direction": pa.array(r["direction"], pa.string()),
                "topic": pa.array(r["topic"], pa.string()),
                "payload": pa.array(r["payload"], pa.binary()),
                "qos": pa.array(r["qos"], pa.int8()),
                "retain": pa.array(r["retain"], pa.bool_()),
                "accepted": pa.array(r["accepted"], pa.bool_()),
                "reason": pa.array(r["reason"], pa.string()),
                "detail": pa.array(r["detail"], pa.string()),
                "taken_wall_s": pa.array(r["taken_wall_s"], pa.float64()),
            }
        )


@dataclass
class BridgeEvent:
    sim_time_s: float
    kind: str  # rejected, clock_skew, disconnected, connected, fallback, stale, ...
    subject: str  # topic or device id
    detail: str


@dataclass
class TransportCounters:
    published: int = 0  # messages handed to the broker
    publish_failed: int = 0  # paho refused (queue full, not connected)
    held_offline: int = 0  # setpoints kept while disconnected (latest per topic)
    superseded: int = 0  # held setpoints replaced by a newer one on the same topic
    expired_offline: int = 0  # held setpoints whose ttl ran out before reconnect
    dropped_offline: int = 0  # non-setpoint messages not sent while disconnected
    received: int = 0  # messages taken from the inbound queue
    accepted: int = 0
    rejected: int = 0
    queue_drops: int = 0  # inbound messages lost because the queue was full
    clock_skew: int = 0
    unknown_keys: int = 0  # telemetry keys tolerated but not understood
    disconnects: int = 0
    reconnects: int = 0
    loopback_timeouts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- links


class LiveLink:
    """The paho client.  Only :meth:`_on_*` run on paho's thread; they only enqueue."""

    replay = False

    def __init__(self, cfg: ConnectionConfig, status_topic: str, queue: InboundQueue):
        self.cfg = cfg
        self.status_topic = status_topic
        self.queue = queue
        self._subs: dict[str, int] = {}  # wire pattern -> qos
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._first_rc: Any = None
        self._acked = threading.Condition()
        self._acked_mids: set[int] = set()
        self.client: Any = None

    # -- paho thread --------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        try:
            if reason_code.is_failure:
                if not self._first.is_set():
                    self._first_rc = reason_code
                    self._first.set()
                else:
                    self.queue.put(RawIn(time.time(), CONNECT_FAILED, str(reason_code).encode()))
                return
            with self._lock:
                subs = [(pattern, self._options(qos)) for pattern, qos in self._subs.items()]
            if subs:
                client.subscribe(subs)
            sock = client.socket()
            if sock is not None:  # no Nagle: a setpoint must not wait for a delayed ACK
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.publish(self.status_topic, b"online", qos=1, retain=True)
            if not self._first.is_set():
                self._first_rc = reason_code
                self._first.set()
            self.queue.put(RawIn(time.time(), CONNECTED, b""))
        except Exception:  # never let an exception kill paho's thread
            log.exception("bridge: error in on_connect")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        try:
            self.queue.put(RawIn(time.time(), DISCONNECTED, str(reason_code).encode()))
        except Exception:
            log.exception("bridge: error in on_disconnect")

    def _on_message(self, client, userdata, msg) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = "$invalid-topic"
            self.queue.put(
                RawIn(time.time(), topic, bytes(msg.payload), bool(msg.retain), int(msg.qos))
            )
        except Exception:
            log.exception("bridge: error in on_message")

    # -- simulation thread ----------------------------------------------------------
    def connect(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        cfg = self.cfg
        host, port, tls = cfg.endpoint()
        v5 = cfg.protocol == "5"
        if cfg.protocol not in ("5", "3.1.1"):
            raise BridgeError(f"protocol must be '5' or '3.1.1', got {cfg.protocol!r}")
        client_id = cfg.client_id or f"cps-sim-{uuid.uuid4().hex[:12]}"
        kwargs: dict[str, Any] = {
            "client_id": client_id,
            "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        }
        if not v5:
            kwargs["clean_session"] = True
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if tls or cfg.tls is not None:
            t = cfg.tls or TlsConfig()
            try:
                ctx = ssl.create_default_context(cafile=str(t.ca_file) if t.ca_file else None)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                if t.cert_file:
                    ctx.load_cert_chain(str(t.cert_file), str(t.key_file) if t.key_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise BridgeTlsError(
                    f"TLS set-up for {host}:{port} failed: {exc} (check "
                    "bridge.tls.ca_file / cert_file / key_file)"
                ) from None
            client.tls_set_context(ctx)
        client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(cfg.max_outgoing)
        client.connect_timeout = cfg.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(cfg.session_expiry_s)
        who = f"{host}:{port}"
        if tls or cfg.tls is not None:
            _tls_preflight(host, port, ctx, cfg.connect_timeout_s)
        try:
            if v5:
                client.connect(host, port, cfg.keepalive_s, properties=props)
            else:
                client.connect(host, port, cfg.keepalive_s)
        except ssl.SSLCertVerificationError as exc:
            raise BridgeTlsError(
                f"TLS certificate of broker {who} not accepted: "
                f"{exc.verify_message or exc} (is bridge.tls.ca_file the CA "
                "that signed the broker's certificate, and does the host name "
                "match it?)"
            ) from None
        except ssl.SSLError as exc:
            raise BridgeTlsError(
                f"TLS handshake with broker {who} failed: {exc.reason or exc}"
            ) from None
        except (TimeoutError, OSError) as exc:
            raise BridgeUnavailable(
                f"cannot reach MQTT broker at {who}: "
                f"{exc.strerror or exc} (is it running? "
                "check --broker / bridge.url)"
            ) from None
        self.client = client
        client.loop_start()
        if not self._first.wait(cfg.connect_timeout_s):
            self.close()
            hint = " (is it a TLS port? use mqtts://)" if not tls else ""
            raise BridgeUnavailable(
                f"no CONNACK from MQTT broker {who} within {cfg.connect_timeout_s:g} s{hint}"
            )
        rc = self._first_rc
        if rc is not None and rc.is_failure:
            self.close()
            value = getattr(rc, "value", None)
            if value in (4, 5, 134, 135, 140):  # v3 bad credentials / not authorised, v5 same
                user = f"user {cfg.username!r}" if cfg.username else "an anonymous client"
                raise BridgeAuthError(
                    f"MQTT broker {who} refused the login of {user}: {rc} "
                    "(check bridge.username and the password from "
                    "bridge.password_env / password_file)"
                )
            raise BridgeError(f"MQTT broker {who} refused the connection: {rc}")

    def _options(self, qos: int) -> Any:
        """Subscription options: under MQTT 5 with *retain as published*, so that a
        setpoint a controller publishes retained is seen as retained (and rejected) also
        when it arrives live; MQTT 3.1.1 brokers clear the flag on live delivery."""
        if self.cfg.protocol != "5":
            return qos
        from paho.mqtt.subscribeoptions import SubscribeOptions

        return SubscribeOptions(qos=qos, retainAsPublished=True)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        with self._acked:
            self._acked_mids.add(mid)
            self._acked.notify_all()

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        """Subscribe and wait (bounded) for the broker's SUBACK, so that messages
        published after this call are delivered."""
        with self._lock:
            if pattern in self._subs:
                return
            self._subs[pattern] = qos
        if self.client is None:
            return
        opts = self._options(qos)
        if isinstance(opts, int):
            _rc, mid = self.client.subscribe(pattern, qos=opts)
        else:
            _rc, mid = self.client.subscribe(pattern, options=opts)
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        with self._acked:
            while mid not in self._acked_mids and time.monotonic() < deadline:
                self._acked.wait(deadline - time.monotonic())
            self._acked_mids.discard(mid)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        import paho.mqtt.client as mqtt

        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def close(self, final: list[tuple[str, bytes]] = ()) -> None:
        c = self.client
        if c is None:
            return
        try:
            for topic, payload in final:
                info = c.publish(topic, payload, qos=1, retain=True)
                info.wait_for_publish(1.0)
            c.disconnect()
        except (RuntimeError, ValueError, OSError):
            pass
        c.loop_stop()
        self.client = None


def _tls_preflight(host: str, port: int, ctx: ssl.SSLContext, timeout_s: float) -> None:
    """One TLS handshake of our own before paho's, so that a refused certificate gives a
    clear error (and no half-open socket is left behind)."""
    who = f"{host}:{port}"
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        raise BridgeTlsError(
            f"TLS certificate of broker {who} not accepted: "
            f"{exc.verify_message or exc} (is bridge.tls.ca_file the CA that "
            "signed the broker's certificate, and does the host name match "
            "it?)"
        ) from None
    except ssl.SSLError as exc:
        raise BridgeTlsError(
            f"TLS handshake with broker {who} failed: {exc.reason or exc} (is it a TLS port?)"
        ) from None
    except (TimeoutError, OSError) as exc:
        raise BridgeUnavailable(
            f"cannot reach MQTT broker at {who}: {exc.strerror or exc} "
            "(is it running? check --broker / bridge.url)"
        ) from None


class ReplayLink:
    """Feeds recorded inbound rows back at the simulation times they were taken."""

    replay = True

    def __init__(self, batches: dict[float, list[RawIn]]):
        self.batches = batches
        self.published: list[tuple[str, bytes, int, bool]] = []

    def connect(self) -> None:
        pass

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        self.published.append((topic, payload, qos, retain))
        return True

    def close(self, final: list[tuple[str, bytes]] = ()) -> None:
        pass


# ----------------------------------------------------------------------------- transport

WireHandler = Callable[[RawIn, float], "S.Reject | str | None"]


class _HandlerIndex:
    """Wire handlers by pattern: exact topics in a dict, wildcard patterns scanned.

    A run binds hundreds to thousands of device topics; scanning every pattern for every
    inbound message cost O(messages x devices).  ``match`` returns the handlers in the
    order they were added, as the plain list did.
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[tuple[int, WireHandler]]] = {}
        self._wild: list[tuple[int, str, WireHandler]] = []
        self._n = 0

    def add(self, pattern: str, handler: WireHandler) -> None:
        if "+" in pattern.split("/") or pattern.split("/")[-1] == "#":
            self._wild.append((self._n, pattern, handler))
        else:
            self._exact.setdefault(pattern, []).append((self._n, handler))
        self._n += 1

    def match(self, topic: str) -> list[WireHandler]:
        hits = list(self._exact.get(topic, ()))
        hits += [(i, h) for i, p, h in self._wild if topic_matches(p, topic)]
        if len(hits) > 1:
            hits.sort(key=lambda ih: ih[0])
        return [h for _, h in hits]


class MqttTransport:
    """The ``core.bus.Transport`` protocol over MQTT (see the module docstring).

    Parameters
    ----------
    env : the run's environment (``RealtimeEnvironment`` live, any in replay).
    topics : wire topics of the run (``schema.Topics(prefix)``).
    link : ``LiveLink`` (paho) or ``ReplayLink`` (a recording).
    poll_s : simulated seconds between two takes of the inbound queue; a power
        of two keeps the poll instants exact (:func:`poll_period`).
    exposed : groups whose setpoint topic accepts external controllers; on other
        groups' setpoint topics only this run's own messages are accepted.
    """

    def __init__(
        self,
        env: simpy.Environment,
        topics: S.Topics,
        link: LiveLink | ReplayLink,
        *,
        poll_s: float = 1.0,
        loopback_s: float = 0.0,
        sid: str | None = None,
        exposed: frozenset[str] | set[str] = frozenset(),
        loopback_timeout_s: float = 1.0,
        max_skew_s: float = S.DEFAULT_MAX_SKEW_S,
        log_messages: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        if not poll_s > 0:
            raise BridgeError(f"poll_s must be > 0, got {poll_s}")
        self.env = env
        self.topics = topics
        self.link = link
        self.poll_s = float(poll_s)
        if not loopback_s >= 0:
            raise BridgeError(f"loopback_s must be >= 0, got {loopback_s}")
        self.loopback_s = float(loopback_s)
        self.drains = 0  # drain() calls so far: the key of a recorded batch
        self.sid = sid or uuid.uuid4().hex[:16]
        self.exposed = frozenset(exposed)
        self.loopback_timeout_s = float(loopback_timeout_s)
        self.max_skew_s = float(max_skew_s)
        self.clock = clock
        self.counters = TransportCounters()
        self.streams = S.StreamTracker()
        self.log = MessageLog() if log_messages else None
        self.events: list[BridgeEvent] = []
        self.connected = True
        self.group_sizes: dict[str, dict[str, int]] = {}
        self.inbound_queue = getattr(link, "queue", None)
        self._subs: list[tuple[str, simpy.Store]] = []  # internal pattern -> store
        self._wire_subs: set[str] = set()  # wire patterns of the internal subscriptions
        self._handlers = _HandlerIndex()  # wire pattern -> handler
        self._seq: dict[str, int] = {}
        self._held: dict[str, tuple[bytes, int, float, float]] = {}  # topic->(body,qos,t,ttl)
        self._expected: dict[tuple[str, int], float] = {}  # own loopback (topic, seq) -> t
        self._carry: list[RawIn] = []  # own messages published at the poll instant
        self._rx_seq = 0
        self._drain_index = -1
        self._taken_wall = float("nan")  # wall clock of the current live drain
        self._started = False

    # ------------------------------------------------------------------ Transport
    def subscribe(self, pattern: str) -> simpy.Store:
        validate_pattern(pattern)
        store = simpy.Store(self.env)
        self._subs.append((pattern, store))
        wire = self.topics.from_bus(pattern)
        self._wire_subs.add(wire)
        self.link.subscribe(wire, 1)
        return store

    def publish(self, topic: str, payload: Payload) -> None:
        validate_topic(topic)
        body = validate_payload(payload)
        check_setpoint_payload(topic, body)
        wire = self.topics.from_bus(topic)
        now = float(self.env.now)
        seq = self._next_seq(wire)
        env = S.Envelope(S.SCHEMA_VERSION, seq, self.clock(), self.sid, now)
        data = S.encode_bus_payload(body, env)
        setpoint = wire.endswith("/setpoint")
        qos = 1 if setpoint or "/event/" in wire else 0
        ttl = float(body.get("ttl_s", math.inf)) if setpoint else 0.0
        self._send(wire, data, qos, setpoint=setpoint, ttl_s=ttl, seq=seq)
        if self._loops_back(wire):
            self._loopback_timer()

    # ------------------------------------------------------------------ wire level
    def subscribe_wire(self, pattern: str, handler: WireHandler, qos: int = 1) -> None:
        """Call ``handler(raw, now_s)`` in the simulation for each message on ``pattern``.

        The handler returns a :class:`~cps_sim.bridge.schema.Reject`, or None/a
        note when it used the message; the transport counts and records either.
        """
        validate_pattern(pattern)
        self._handlers.add(pattern, handler)
        self.link.subscribe(pattern, qos)

    def publish_wire(
        self,
        topic: str,
        data: bytes,
        qos: int = 0,
        *,
        retain: bool = False,
        setpoint: bool = False,
        ttl_s: float = math.inf,
        seq: int | None = None,
    ) -> None:
        """Publish ready-made bytes (the bridge's own topics).  ``setpoint=True``:
        latest-value-wins while disconnected; never retained."""
        if setpoint and retain:
            raise BridgeError("setpoints are never retained")
        self._send(topic, data, qos, retain=retain, setpoint=setpoint, ttl_s=ttl_s, seq=seq)

    def arrival(self) -> int:
        """A number that orders what this run takes in: the ``seq`` of every delivered bus
        message and of anything a wire handler stamps with it (one counter)."""
        n = self._rx_seq
        self._rx_seq += 1
        return n

    def next_seq(self, topic: str) -> int:
        """Next sequence number of this run's stream on ``topic``."""
        return self._next_seq(topic)

    def envelope(self, topic: str) -> S.Envelope:
        return S.Envelope(
            S.SCHEMA_VERSION, self._next_seq(topic), self.clock(), self.sid, float(self.env.now)
        )

    def _next_seq(self, topic: str) -> int:
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        return seq

    def _send(
        self,
        topic: str,
        data: bytes,
        qos: int,
        *,
        retain: bool = False,
        setpoint: bool = False,
        ttl_s: float = math.inf,
        seq: int | None = None,
    ) -> None:
        now = float(self.env.now)
        wall = self.clock()
        if not self.connected:
            if setpoint:
                if topic in self._held:
                    self.counters.superseded += 1
                self._held[topic] = (data, qos, now, ttl_s)
                self.counters.held_offline += 1
                self._record(now, wall, OUT, topic, data, qos, retain, False, "held_offline")
            else:
                self.counters.dropped_offline += 1
                self._record(now, wall, OUT, topic, data, qos, retain, False, "dropped_offline")
            return
        ok = self.link.publish(topic, data, qos, retain)
        if ok:
            self.counters.published += 1
            if seq is not None and not self.link.replay and self._loops_back(topic):
                self._expected[(topic, seq)] = now + self.loopback_s
        else:
            self.counters.publish_failed += 1
            if setpoint:
                self._held[topic] = (data, qos, now, ttl_s)
        self._record(now, wall, OUT, topic, data, qos, retain, ok, "" if ok else "publish_failed")

    def _loops_back(self, wire_topic: str) -> bool:
        return any(topic_matches(p, wire_topic) for p in self._wire_subs)

    # ------------------------------------------------------------------ the drain process
    def start(self) -> None:
        """Start the poll process (call once, before ``env.run``)."""
        if self._started:
            raise BridgeError("MqttTransport.start() called twice")
        self._started = True
        self.env.process(self._poll())

    def _poll(self) -> Iterator[simpy.Event]:
        k = 0
        while True:
            k += 1
            yield self.env.timeout(max(k * self.poll_s - self.env.now, 0.0))
            self.drain()

    def _loopback_timer(self) -> None:
        ev = self.env.timeout(self.loopback_s)
        ev.callbacks.append(lambda _ev: self.drain(loopback=True))

    def drain(self, loopback: bool = False) -> None:
        """Take what arrived and deliver it, at the current simulation time.

        ``loopback``: this drain is the delivery instant of own messages published
        ``loopback_s`` ago; it waits for those to come back from the broker.
        """
        now = float(self.env.now)
        index = self.drains
        self.drains += 1
        if self.link.replay:
            for raw in self.link.batches.pop(index, []):  # type: ignore[union-attr]
                self._process(raw, now, index)
            return
        batch, dropped = self._collect(now, loopback)
        self._taken_wall = time.time()
        for wall, topic, size in dropped:
            self._process(RawIn(wall, topic, b"", parsed=("dropped", size)), now, index)
        for raw in batch:
            self._process(raw, now, index)

    def _own(self, raw: RawIn) -> tuple[int, float] | None:
        """(seq, due time) if ``raw`` is this run's own message, else None."""
        if raw.topic.startswith("$") or raw.topic not in self._seq:
            return None
        if raw.parsed is None:
            raw.parsed = S.parse_json(raw.payload)
        obj = raw.parsed
        if isinstance(obj, dict) and obj.get("sid") == self.sid:
            seq, sim = obj.get("seq"), obj.get("sim_time_s")
            if S._is_int(seq) and S._is_num(sim):
                return int(seq), float(sim) + self.loopback_s
        return None

    def _collect(
        self,
        now: float,
        loopback: bool,
    ) -> tuple[list[RawIn], list[tuple[float, str, int]]]:
        queue = self.link.queue  # type: ignore[union-attr]
        items, dropped = queue.take_all()
        batch = self._carry + items
        self._carry = []
        for raw in items:
            self._meet(raw)

        def waiting() -> bool:
            return any(t < now or (loopback and t <= now) for t in self._expected.values())

        deadline = time.monotonic() + self.loopback_timeout_s
        while self.connected and waiting():
            if any(r.topic == DISCONNECTED for r in batch):
                break
            raw = queue.get(deadline - time.monotonic())
            if raw is None:
                late = [k for k, t in self._expected.items() if t <= now]
                self.counters.loopback_timeouts += len(late)
                for k in late:
                    del self._expected[k]
                break
            batch.append(raw)
            self._meet(raw)
        if any(r.topic == DISCONNECTED for r in batch):
            self._expected.clear()
        out = []
        for raw in batch:
            own = self._own(raw)
            if own is not None and (own[1] > now or (own[1] == now and not loopback)):
                self._carry.append(raw)  # its delivery instant is later (or its own timer)
            else:
                out.append(raw)
        return out, dropped

    def _meet(self, raw: RawIn) -> None:
        own = self._own(raw)
        if own is not None:
            self._expected.pop((raw.topic, own[0]), None)

    # ------------------------------------------------------------------ processing
    def _record(
        self, sim_s, wall_s, direction, topic, payload, qos, retain, accepted, reason="", detail=""
    ) -> None:
        if self.log is not None:
            drain = self._drain_index if direction != OUT else -1
            self.log.add(
                drain,
                sim_s,
                wall_s,
                direction,
                topic,
                payload,
                qos,
                retain,
                accepted,
                reason,
                detail,
                self._taken_wall if direction != OUT else float("nan"),
            )

    def event(self, kind: str, subject: str, detail: str = "") -> None:
        """Log a bridge event; every kind but ``rejected`` (which can come in floods and is
        counted instead) is also published on ``<prefix>/event/<kind>`` (QoS 1)."""
        now = float(self.env.now)
        self.events.append(BridgeEvent(now, kind, subject, detail))
        if kind != "rejected":
            topic = self.topics.event(kind)
            env = self.envelope(topic)
            body = {
                "v": env.v,
                "seq": env.seq,
                "ts": env.ts,
                "sid": env.sid,
                "sim_time_s": now,
                "kind": kind,
                "subject": subject,
                "detail": detail,
            }
            self._send(topic, S.dumps(body), 1)

    def _reject(self, raw: RawIn, now: float, rej: S.Reject) -> None:
        c = self.counters
        c.rejected += 1
        c.reasons[rej.reason] = c.reasons.get(rej.reason, 0) + 1
        self._record(
            now,
            raw.wall_s,
            IN,
            raw.topic,
            raw.payload,
            raw.qos,
            raw.retain,
            False,
            rej.reason,
            rej.detail,
        )
        self.event("rejected", raw.topic, str(rej))
        if c.reasons[rej.reason] <= 20 or c.rejected % 1000 == 0:
            log.warning(
                "bridge: rejected %s on %s (%s): %s",
                rej.reason,
                raw.topic,
                S.excerpt(raw.payload),
                rej.detail,
            )

    def _process(self, raw: RawIn, now: float, index: int = -1) -> None:
        self._drain_index = index
        topic = raw.topic
        if topic.startswith("$"):
            self._connection_change(raw, now)
            return
        if isinstance(raw.parsed, tuple) and raw.parsed and raw.parsed[0] == "dropped":
            self.counters.queue_drops += 1
            self.counters.received += 1
            self._reject(
                raw, now, S.Reject(S.QUEUE_FULL, f"inbound queue full ({raw.parsed[1]} bytes lost)")
            )
            return
        self.counters.received += 1
        internal = self.topics.to_bus(topic)
        used = False
        if internal is not None and any(topic_matches(p, internal) for p, _ in self._subs):
            result = self._bus_message(raw, internal, now)
            if isinstance(result, S.Reject):
                self._reject(raw, now, result)
                return
            used = True
        for handler in self._handlers.match(topic):
            result = handler(raw, now)
            if isinstance(result, S.Reject):
                self._reject(raw, now, result)
                return
            used = True
        if not used:
            self._reject(raw, now, S.Reject(S.UNKNOWN_TOPIC, "no subscriber for this topic"))
            return
        self.counters.accepted += 1
        self._record(now, raw.wall_s, IN, topic, raw.payload, raw.qos, raw.retain, True)

    def check(
        self,
        raw: RawIn,
        obj: dict[str, Any] | S.Reject | None = None,
    ) -> tuple[dict[str, Any], S.Envelope, float] | S.Reject:
        """Strict parse + envelope + stream checks of one message.

        Returns (object, envelope, sender time) where the sender time is ``ts``, or
        the receive wall time when ``ts`` is off by more than ``max_skew_s`` (T14).
        """
        if obj is None:
            obj = (
                raw.parsed
                if isinstance(raw.parsed, (dict, S.Reject))
                else S.parse_json(raw.payload)
            )
        if isinstance(obj, S.Reject):
            return obj
        env = S.check_envelope(obj)
        if isinstance(env, S.Reject):
            return env
        stream = f"{raw.topic}|{env.sid or ''}"
        seq = self.streams.check(stream, env)
        if isinstance(seq, S.Reject):
            return seq
        ts = env.ts
        if abs(env.ts - raw.wall_s) > self.max_skew_s:
            self.counters.clock_skew += 1
            self.event(
                "clock_skew",
                raw.topic,
                f"ts {env.ts:.3f} is {env.ts - raw.wall_s:+.1f}"
                f" s from the receive time; receive time used",
            )
            ts = raw.wall_s
        return obj, env, ts

    def _bus_message(self, raw: RawIn, internal: str, now: float) -> S.Reject | None:
        setpoint = internal.endswith("/setpoints")
        if setpoint and raw.retain:
            return S.Reject(
                S.RETAINED_COMMAND,
                "a retained setpoint (stale command from an "
                "earlier session); setpoints are never retained",
            )
        checked = self.check(raw)
        if isinstance(checked, S.Reject):
            return checked
        obj, env, ts = checked
        own = env.sid == self.sid
        group = internal.split("/")[1]
        if setpoint:
            if not own and group not in self.exposed:
                return S.Reject(
                    S.NOT_EXPOSED,
                    f"group {group!r} is not exposed to external controllers (bridge.expose)",
                )
            payload = S.decode_group_setpoint(obj, self.group_sizes.get(group))
            if isinstance(payload, S.Reject):
                return payload
            ttl = payload.get("ttl_s", math.inf)
            if raw.wall_s - ts > ttl:
                return S.Reject(S.EXPIRED, f"sent {raw.wall_s - ts:.1f} s ago, ttl_s {ttl:g}")
        else:
            payload = S.decode_bus_payload(obj)
            if isinstance(payload, S.Reject):
                return payload
        sent = (
            env.sim_time_s if own and env.sim_time_s is not None and env.sim_time_s <= now else now
        )
        if own and env.sim_time_s is not None and env.sim_time_s > now:
            sent = now
        msg = Message(internal, payload, float(sent), self.arrival(), now)
        for pattern, store in self._subs:
            if topic_matches(pattern, internal):
                store.put(msg)
        return None

    def _connection_change(self, raw: RawIn, now: float) -> None:
        self._record(now, raw.wall_s, CONN, raw.topic, raw.payload, 0, False, True)
        if raw.topic == DISCONNECTED:
            if self.connected:
                self.counters.disconnects += 1
            self.connected = False
            self.event("disconnected", self.topics.status(), raw.payload.decode(errors="replace"))
            log.warning(
                "bridge: disconnected from the broker (%s); reconnecting",
                raw.payload.decode(errors="replace"),
            )
        elif raw.topic == CONNECTED:
            was = self.connected
            self.connected = True
            if not was:
                self.counters.reconnects += 1
                self.event("reconnected", self.topics.status(), "")
                log.warning("bridge: reconnected to the broker")
            self._flush_held(now)
        elif raw.topic == CONNECT_FAILED:
            self.event("connect_failed", self.topics.status(), raw.payload.decode(errors="replace"))

    def _flush_held(self, now: float) -> None:
        held, self._held = self._held, {}
        for topic, (data, qos, t, ttl) in held.items():
            if now - t >= ttl:
                self.counters.expired_offline += 1
                continue
            self._send(topic, data, qos, setpoint=True, ttl_s=ttl - (now - t))

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Publish ``offline`` on the status topic (retained) and disconnect."""
        self.link.close([(self.topics.status(), b"offline")])

    def summary(self) -> dict[str, float]:
        c = self.counters
        out = {f"bridge_{k}": float(v) for k, v in c.__dict__.items() if k != "reasons"}
        out["bridge_seq_gaps"] = float(self.streams.gaps)
        out["bridge_seq_missing"] = float(self.streams.missing)
        out["bridge_publisher_restarts"] = float(self.streams.restarts)
        for reason in sorted(c.reasons):
            out[f"bridge_rejected_{reason}"] = float(c.reasons[reason])
        return out


def poll_period(speed: float, wall_s: float = 0.005) -> float:
    """Simulated seconds between polls: ``wall_s × speed`` rounded to a power of two
    (exact in binary, so poll instants fall on whole simulated seconds)."""
    target = max(wall_s * speed, 2.0**-10)
    return 2.0 ** round(math.log2(target))


def connect(
    env: simpy.Environment,
    cfg: ConnectionConfig,
    prefix: str,
    *,
    queue_size: int = 10_000,
    **kwargs: Any,
) -> MqttTransport:
    """Connect to the broker and return a started-not-yet transport (call ``start()``).

    Raises :class:`BridgeUnavailable`, :class:`BridgeAuthError` or
    :class:`BridgeTlsError` with a message that names the broker and what to check.
    """
    topics = S.Topics(prefix)
    link = LiveLink(cfg, topics.status(), InboundQueue(queue_size))
    link.connect()
    return MqttTransport(env, topics, link, **kwargs)
