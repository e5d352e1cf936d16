"""The network side of an emulator fleet: paho clients served by one selector loop.

paho-mqtt runs here without its own threads (``loop_read`` / ``loop_write`` /
``loop_misc`` are called from this loop), so one thread serves every connection:
one per device (``clients="device"``: each with its own last will, like real
hardware) or one for the fleet (``clients="shared"``).  Callbacks only record what
arrived; commands are handled after each read round, outside paho's callbacks.
Lost connections are re-established with backoff (0.5 s doubling to 10 s); on
reconnect a device re-subscribes and re-announces ``online``.
"""

from __future__ import annotations

import contextlib
import math
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from cps_sim.core.errors import BridgeError

if TYPE_CHECKING:
    from cps_sim.bridge.emulate import EmulatorFleet

SLOT_S = 0.02  # telemetry of a fleet is spread over slots of about this length
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0
MAX_COMMAND_ROUNDS = 8  # command rounds handled before changed devices report


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of ``mqtt://host:port`` / ``mqtts://host:port``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BridgeError(f"broker URL {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BridgeError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port")
    if parts.username or parts.password:
        raise BridgeError("broker URL: give the user name and password as options, not in the URL")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


class _Client:
    def __init__(self, k: int, devices: list[int], client: Any):
        self.k = k
        self.devices = devices
        self.paho = client
        self.sock: Any = None
        self.mask = 0
        self.connected = False
        self.failed_rc: Any = None
        self.retry_at = math.inf
        self.backoff = RECONNECT_MIN_S
        self.ever_connected = False


class Links:
    """All MQTT connections of one fleet."""

    def __init__(self, fleet: EmulatorFleet):
        self.f = fleet
        self.host, self.port, self.tls = parse_broker_url(fleet.cfg.broker_url)
        self.sel = selectors.DefaultSelector()
        self.clients: list[_Client] = []
        self.dev_client = np.zeros(fleet.n, dtype=np.int64)
        self.inbox: list[tuple[str, bytes, bool]] = []
        self.fleet_status = f"{fleet.cfg.prefix}/emulator/{fleet.fleet_id}/status"

    # ------------------------------------------------------------------ set-up
    def _new_paho(self, k: int, client_id: str, will: tuple[str, bytes] | None) -> Any:
        import paho.mqtt.client as mqtt

        cfg = self.f.cfg
        v5 = cfg.protocol == "5"
        kwargs: dict[str, Any] = {
            "client_id": client_id,
            "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            "userdata": k,
        }
        if not v5:
            kwargs["clean_session"] = True
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if self.tls or cfg.ca_file:
            try:
                ctx = ssl.create_default_context(cafile=cfg.ca_file)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            except (OSError, ssl.SSLError) as exc:
                raise BridgeError(f"TLS set-up failed: {exc} (check --ca-file)") from None
            c.tls_set_context(ctx)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.max_queued_messages_set(10_000)
        c.max_inflight_messages_set(1000)
        return c

    def connect_all(self, timeout_s: float = 30.0) -> None:
        f = self.f
        if f.cfg.clients == "shared":
            paho = self._new_paho(0, f"emu-{f.fleet_id}", (self.fleet_status, b"offline"))
            self.clients.append(_Client(0, list(range(f.n)), paho))
        else:
            for i in range(f.n):
                avail = f.bound[i].availability(False)
                will = (avail[0], avail[1]) if avail else None
                paho = self._new_paho(i, f"emu-{f.device_ids[i]}-{f.sid}", will)
                self.clients.append(_Client(i, [i], paho))
                self.dev_client[i] = i
        for c in self.clients:
            self._connect(c, first=True)
        deadline = time.monotonic() + timeout_s
        while not all(c.connected for c in self.clients):
            failed = [c for c in self.clients if c.failed_rc is not None]
            if failed:
                raise self._refused(failed[0].failed_rc)
            if time.monotonic() > deadline:
                n_ok = sum(c.connected for c in self.clients)
                raise BridgeError(
                    f"only {n_ok} of {len(self.clients)} emulator connections to "
                    f"{self.host}:{self.port} got a CONNACK within {timeout_s:g} s"
                )
            self._poll(0.05)

    def _refused(self, rc: Any) -> BridgeError:
        who = f"{self.host}:{self.port}"
        value = getattr(rc, "value", rc)
        if value in (4, 5, 134, 135, 140):
            user = self.f.cfg.username
            return BridgeError(
                f"MQTT broker {who} refused the login of "
                f"{'user ' + repr(user) if user else 'an anonymous client'}: {rc}"
            )
        return BridgeError(f"MQTT broker {who} refused the connection: {rc}")

    def _connect(self, c: _Client, first: bool = False) -> bool:
        cfg = self.f.cfg
        try:
            if c.ever_connected or not first:
                c.paho.reconnect()
            else:
                c.paho.connect(self.host, self.port, cfg.keepalive_s)
        except ssl.SSLCertVerificationError as exc:
            raise BridgeError(
                f"TLS certificate of broker {self.host}:{self.port} not accepted: "
                f"{exc.verify_message or exc}"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            if first:
                raise BridgeError(
                    f"cannot reach MQTT broker at {self.host}:{self.port}: "
                    f"{getattr(exc, 'strerror', None) or exc} (is it running? "
                    "check --broker)"
                ) from None
            c.retry_at = time.monotonic() + c.backoff
            c.backoff = min(c.backoff * 2, RECONNECT_MAX_S)
            return False
        c.sock = c.paho.socket()
        # small messages must not wait for Nagle's algorithm (40 ms with delayed ACKs)
        with contextlib.suppress(OSError, AttributeError):
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.mask = selectors.EVENT_READ
        self.sel.register(c.sock, c.mask, c)
        c.retry_at = math.inf
        self._flush(c)
        return True

    def _drop(self, c: _Client) -> None:
        if c.sock is not None and c.ever_connected:
            self.f.stats.reconnects += 1
        if c.sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(c.sock)
            c.sock = None
        c.connected = False
        if c.retry_at == math.inf:
            c.retry_at = time.monotonic() + c.backoff
            c.backoff = min(c.backoff * 2, RECONNECT_MAX_S)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client, k, flags, rc, properties=None) -> None:
        c = self.clients[k]
        if rc.is_failure:
            c.failed_rc = rc
            return
        c.connected = True
        c.backoff = RECONNECT_MIN_S
        # MQTT 5: retain as published, so that a command published retained is ignored
        # also when it arrives live (3.1.1 brokers clear the flag on live delivery)
        opt: Any = 1
        if self.f.cfg.protocol == "5":
            from paho.mqtt.subscribeoptions import SubscribeOptions

            opt = SubscribeOptions(qos=1, retainAsPublished=True)
        topics = [(t, opt) for i in c.devices for t in self.f.bound[i].command_topics]
        if self.f.cfg.homeassistant and c.k == 0:
            topics.append((f"{self.f.cfg.ha_prefix}/status", opt))
        for lo in range(0, len(topics), 200):
            client.subscribe(topics[lo : lo + 200])
        if c.ever_connected:  # a reconnect: tell the world we are back
            self._announce_client(c, True)
        c.ever_connected = True

    def _on_disconnect(self, client, k, flags, rc, properties=None) -> None:
        self.clients[k].connected = False

    def _on_message(self, client, k, msg) -> None:
        self.inbox.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    # ------------------------------------------------------------------ I/O
    def _flush(self, c: _Client) -> None:
        p = c.paho
        if c.sock is None:
            return
        if p.want_write():
            p.loop_write()
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if p.want_write() else 0)
        if want != c.mask:
            c.mask = want
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.modify(c.sock, want, c)

    def _poll(self, timeout_s: float) -> None:
        import paho.mqtt.client as mqtt

        events = self.sel.select(max(timeout_s, 0.0)) if self.sel.get_map() else []
        if not events and timeout_s > 0 and not self.sel.get_map():
            time.sleep(min(timeout_s, 0.05))
        for key, mask in events:
            c: _Client = key.data
            rc = mqtt.MQTT_ERR_SUCCESS
            if mask & selectors.EVENT_READ:
                rc = c.paho.loop_read()
                sock = c.sock
                while (
                    rc == mqtt.MQTT_ERR_SUCCESS
                    and sock is not None
                    and hasattr(sock, "pending")
                    and sock.pending()
                ):
                    rc = c.paho.loop_read()
            if rc == mqtt.MQTT_ERR_SUCCESS and mask & selectors.EVENT_WRITE:
                rc = c.paho.loop_write()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._drop(c)
            else:
                self._flush(c)

    def publish(self, i: int, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        import paho.mqtt.client as mqtt

        c = self.clients[int(self.dev_client[i])]
        info = c.paho.publish(topic, payload, qos=qos, retain=retain)
        if (
            info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN
        ) or info.rc == mqtt.MQTT_ERR_NO_CONN:
            self.f.stats.publish_failed += 1
        self._flush(c)

    def _announce_client(self, c: _Client, online: bool) -> list[Any]:
        infos = []
        for i in c.devices:
            msg = self.f.bound[i].availability(online)
            if msg is not None:
                infos.append(c.paho.publish(msg[0], msg[1], qos=msg[2], retain=msg[3]))
        if self.f.cfg.clients == "shared":
            infos.append(
                c.paho.publish(
                    self.fleet_status, b"online" if online else b"offline", qos=1, retain=True
                )
            )
        return infos

    def announce(self, online: bool) -> list[Any]:
        infos = []
        for c in self.clients:
            if c.connected:
                infos += self._announce_client(c, online)
                self._flush(c)
        return infos

    # ------------------------------------------------------------------ main loop
    def serve(self, stop: Any) -> None:
        f = self.f
        cfg = f.cfg
        n = f.n
        slots = max(1, min(n, round(cfg.interval_s / SLOT_S)))
        period = cfg.interval_s / slots
        groups = [np.arange(j, n, slots) for j in range(slots)]
        mono0 = f._mono0
        end = mono0 + cfg.duration_s if cfg.duration_s else math.inf
        slot = 0
        next_slot = mono0
        next_misc = mono0 + 1.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            exp = f.next_expiry_s()
            exp_mono = mono0 + exp / cfg.speed if math.isfinite(exp) else math.inf
            retry = min((c.retry_at for c in self.clients), default=math.inf)
            wake = min(next_slot, exp_mono, next_misc, retry, end)
            self._poll(min(wake - now, 0.5))
            rounds = 0
            while self.inbox and rounds < MAX_COMMAND_ROUNDS:
                # commands first: acknowledge what is waiting, look again, then report
                batch, self.inbox = self.inbox, []
                f.handle_commands(batch, report=False)
                self._poll(0.0)
                rounds += 1
            f.flush_changed()
            t_now = f.now_s()
            while f.next_expiry_s() <= t_now:
                f.advance_to(f.next_expiry_s())
                f.expire()
            now = time.monotonic()
            if now >= next_slot:
                f.advance_to(t_now)
                f.stats.lateness_s.append(now - next_slot)
                f.publish_telemetry(groups[slot])
                slot = (slot + 1) % slots
                next_slot += period
                if next_slot < now - cfg.interval_s:  # far behind: skip, do not burst
                    next_slot = now
            if now >= next_misc:
                for c in self.clients:
                    if c.sock is not None:
                        c.paho.loop_misc()
                        self._flush(c)
                next_misc = now + 1.0
            for c in self.clients:
                if c.sock is None and c.retry_at <= now:
                    self._connect(c)
        f.advance_to(f.now_s())

    def close(self, clean: bool = True) -> None:
        f = self.f
        if clean:
            if f.cfg.homeassistant and f.cfg.ha_remove_on_stop:
                from cps_sim.bridge.homeassistant import fleet_removal

                for i, topic, payload in fleet_removal(f):
                    self.publish(i, topic, payload, 1, True)
            infos = self.announce(False)
            # wait for the broker's PUBACKs: closing a socket with unread data sends a TCP
            # reset, and the broker then drops what it has not read yet (the offlines)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and (
                any(not i.is_published() for i in infos)
                or any(c.sock is not None and c.paho.want_write() for c in self.clients)
            ):
                self._poll(0.02)
        for c in self.clients:
            try:
                if c.sock is not None:
                    c.paho.disconnect()
                    c.paho.loop_write()
            except Exception:
                pass
            if c.sock is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.sel.unregister(c.sock)
                c.sock = None
        self.sel.close()
