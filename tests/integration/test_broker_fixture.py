"""The private Mosquitto used by the MQTT tests and ``cps-sim hil``: it starts on a free
port, carries messages, survives kill -9 + restart on the same port, and refuses bad logins."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
import pytest

from cps_sim.bridge.broker import MosquittoBroker, MosquittoConfig, make_password_file

pytestmark = pytest.mark.mqtt


def _client(broker: MosquittoBroker, **creds: str) -> tuple[mqtt.Client, queue.Queue]:
    inbox: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if creds:
        c.username_pw_set(creds["user"], creds["password"])
    c.on_message = lambda _c, _u, msg: inbox.put((msg.topic, msg.payload))
    c.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
    c.connect(broker.host, broker.port)
    c.loop_start()
    rc = connected.get(timeout=5)
    if rc.is_failure:
        c.loop_stop()
        raise ConnectionRefusedError(str(rc))
    return c, inbox


def test_round_trip_and_restart_on_same_port(mosquitto):
    sub, inbox = _client(mosquitto)
    subscribed: queue.Queue = queue.Queue()
    sub.on_subscribe = lambda *_args: subscribed.put(True)
    sub.subscribe("t/#", qos=1)
    subscribed.get(timeout=5)  # publish only once the subscription is active (SUBACK)
    pub, _ = _client(mosquitto)
    pub.publish("t/a", b"1", qos=1).wait_for_publish(5)
    assert inbox.get(timeout=5) == ("t/a", b"1")
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running()
    mosquitto.restart()
    assert mosquitto.port == port and mosquitto.running()
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()


def test_wrong_password_is_refused(tmp_path):
    folder = tmp_path / "b"
    pw = make_password_file(folder, {"sim": "right"})
    with MosquittoBroker(folder, MosquittoConfig(allow_anonymous=False, password_file=pw)) as b:
        c, _ = _client(b, user="sim", password="right")
        c.loop_stop()
        c.disconnect()
        with pytest.raises(ConnectionRefusedError):
            _client(b, user="sim", password="wrong")
        with pytest.raises(ConnectionRefusedError):
            _client(b)
