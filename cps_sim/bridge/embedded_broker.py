"""A broker with no setup: Mosquitto when installed, else amqtt (pure Python) in-process.

``start_embedded_broker(folder)`` is what ``cps-sim hil`` and ``cps-sim emulate`` call
when no ``--broker`` is given: it prefers the ``mosquitto`` binary (a
:class:`~cps_sim.bridge.broker.MosquittoBroker` on a free port) and falls back to
:class:`AmqttBroker`, an `amqtt <https://github.com/Yakifo/amqtt>`_ broker served by
a child Python process.  Both have the same ``start() / stop() / restart() / kill() /
freeze() / thaw() / running() / url / host / port / mqtt_versions`` interface;
``cps-sim hil`` and ``cps-sim emulate`` connect to amqtt with MQTT 3.1.1.

amqtt is an optional extra (``pip install "cps-sim[broker]"``; it pins
``websockets==15.0.1``).  It speaks MQTT 3.1.1 only (``mqtt_versions``) and has no
password file, TLS or ACL set-up here; the fault tests use Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cps_sim.bridge.broker import MosquittoBroker, free_port, mosquitto_binary, port_open
from cps_sim.core.errors import BridgeError


class AmqttBroker:
    """An amqtt broker on ``127.0.0.1:port``, served by a child Python process.

    A child process (not a thread of ours) keeps amqtt's asyncio loop and its
    resource handling out of the simulation process, and lets ``kill()``,
    ``freeze()``/``thaw()`` and ``restart()`` work as with Mosquitto.
    """

    kind = "amqtt"
    mqtt_versions = ("3.1.1",)

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "amqtt.log"

    def start(self, timeout_s: float = 20.0) -> AmqttBroker:
        if self.running():
            return self
        if importlib.util.find_spec("amqtt") is None:
            raise BridgeError(
                "no MQTT broker available: install Mosquitto (apt-get install mosquitto) or the "
                'pure-Python fallback (pip install "cps-sim[broker]"), or pass --broker URL'
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cps_sim.bridge.embedded_broker", self.host, str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise BridgeError(
                    f"amqtt broker exited at start (code {self.proc.returncode}):"
                    f" {self.log()[-500:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BridgeError(f"amqtt did not open port {self.port} within {timeout_s:g} s")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BridgeError("broker not started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(10)

    def freeze(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self, timeout_s: float = 20.0) -> AmqttBroker:
        """Start again on the same port (retained messages are lost)."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.start(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> AmqttBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(host: str, port: int) -> None:
    """Child process: run amqtt until SIGTERM."""
    from amqtt.broker import Broker

    logging.basicConfig(level=logging.WARNING)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def main() -> None:
        broker = Broker(config)
        await broker.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await broker.shutdown()

    asyncio.run(main())


def start_embedded_broker(folder: Path, prefer: str = "mosquitto") -> MosquittoBroker | AmqttBroker:
    """Start a private broker in ``folder``: Mosquitto if on PATH, else amqtt.

    ``prefer="amqtt"`` skips Mosquitto.  The result has ``.kind`` ("mosquitto" or
    "amqtt"), ``.url`` and ``.stop()``.
    """
    if prefer not in ("mosquitto", "amqtt"):
        raise BridgeError(f"prefer must be mosquitto or amqtt, got {prefer!r}")
    if prefer == "mosquitto" and mosquitto_binary() is not None:
        return MosquittoBroker(Path(folder)).start()
    return AmqttBroker(Path(folder)).start()


if __name__ == "__main__":  # python -m cps_sim.bridge.embedded_broker HOST PORT
    _serve(sys.argv[1], int(sys.argv[2]))
