"""Helpers for the MQTT tests: external paho clients, transports, stepping real time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import simpy.rt

from cps_sim.bridge.transport import ConnectionConfig, MqttTransport, connect


def client(
    url_host: str,
    port: int,
    *,
    v5: bool = True,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes] | None = None,
    on_message=None,
    subscribe: list[str] = (),
) -> mqtt.Client:
    """A connected external paho client with its loop running (stop with ``stop(c)``)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    if username:
        c.username_pw_set(username, password)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    if on_message:
        c.on_message = on_message
    c.connect(url_host, port, keepalive=5)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.is_connected()
    for pattern in subscribe:
        _, _mid = c.subscribe(pattern, qos=1)
    if subscribe:
        time.sleep(0.1)  # SUBACK before the test publishes
    return c


def stop(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def send(
    c: mqtt.Client, topic: str, payload: bytes | dict, qos: int = 1, retain: bool = False
) -> None:
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    info = c.publish(topic, data, qos=qos, retain=retain)
    info.wait_for_publish(5)


def rt_env(speed: float) -> simpy.rt.RealtimeEnvironment:
    return simpy.rt.RealtimeEnvironment(factor=1.0 / speed, strict=False)


def transport(
    env, broker, prefix: str = "cps/test", *, poll_s: float = 0.25, **kw
) -> MqttTransport:
    conn_keys = {
        "reconnect_min_s",
        "reconnect_max_s",
        "protocol",
        "username",
        "password",
        "tls",
        "connect_timeout_s",
        "keepalive_s",
        "url",
    }
    conn = {k: kw.pop(k) for k in list(kw) if k in conn_keys}
    conn.setdefault("url", broker.url)
    return connect(env, ConnectionConfig(**conn), prefix, poll_s=poll_s, **kw)


def run_until(env, cond: Callable[[], bool], step_s: float = 1.0, timeout_s: float = 10.0) -> bool:
    """Step the (real-time) environment until ``cond()`` or ``timeout_s`` of wall time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        env.run(until=env.now + step_s)
        if cond():
            return True
    return cond()


def envelope(seq: int, ts: float | None = None, **kw) -> dict:
    return {"v": 1, "seq": seq, "ts": time.time() if ts is None else ts, **kw}
