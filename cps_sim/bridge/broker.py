"""Start and control a private MQTT broker: Mosquitto on a free port.

Used by ``cps-sim hil`` when no ``--broker`` is given, and by the test suite,
which needs to kill, freeze, restart and configure its broker (passwords,
TLS, ACLs, queue limits, persistence).

The broker runs in its own folder (config, persistence database, log), bound
to 127.0.0.1 on a port found free at start.  Mosquitto started as root drops
to the user ``mosquitto`` and then cannot write its database into a folder
owned by root (it loses persistence without telling any client), so the
config says ``user root`` when we are root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cps_sim.core.errors import BridgeError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` executable (PATH, then /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for cand in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(cand, os.X_OK):
            return cand
    return None


@dataclass
class MosquittoConfig:
    """What the private broker allows.  Defaults: anonymous, no persistence."""

    allow_anonymous: bool = True
    password_file: Path | None = None  # made with ``mosquitto_passwd``
    acl_file: Path | None = None
    certfile: Path | None = None  # TLS server certificate (PEM); TLS when set
    keyfile: Path | None = None
    cafile: Path | None = None  # to verify client certificates (require_certificate)
    require_certificate: bool = False
    persistence: bool = False
    autosave_interval_s: int = 1  # with persistence: lose at most this much on kill -9
    max_queued_messages: int = 1000
    message_size_limit: int = 0  # bytes; 0 = broker default (no limit)
    extra: list[str] = field(default_factory=list)  # raw config lines


class MosquittoBroker:
    """A Mosquitto process on ``127.0.0.1:port`` in ``folder``.

    ``start()`` waits until the port accepts connections; ``kill()`` sends
    SIGKILL, ``freeze()``/``thaw()`` SIGSTOP/SIGCONT, ``restart()`` starts it
    again on the same port and folder (persistence survives when enabled).
    Use as a context manager to stop it on exit.
    """

    kind = "mosquitto"
    mqtt_versions = ("3.1.1", "5")

    def __init__(
        self,
        folder: Path,
        config: MosquittoConfig | None = None,
        port: int | None = None,
        binary: str | None = None,
    ):
        self.folder = Path(folder)
        self.config = config or MosquittoConfig()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.binary = binary or mosquitto_binary()
        if self.binary is None:
            raise BridgeError(
                "mosquitto is not installed (apt-get install mosquitto), and no --broker was given"
            )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.config.certfile else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    def write_config(self) -> Path:
        c = self.config
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if c.allow_anonymous else 'false'}",
            f"max_queued_messages {c.max_queued_messages}",
            "log_dest file " + str(self.log_path),
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            "set_tcp_nodelay true",  # no Nagle delay on setpoints and acks
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")
        if c.password_file is not None:
            lines.append(f"password_file {c.password_file}")
        if c.acl_file is not None:
            lines.append(f"acl_file {c.acl_file}")
        if c.certfile is not None:
            if c.keyfile is None:
                raise BridgeError("MosquittoConfig: certfile needs keyfile")
            lines += [f"certfile {c.certfile}", f"keyfile {c.keyfile}", "tls_version tlsv1.2"]
            if c.cafile is not None:
                lines.append(f"cafile {c.cafile}")
            if c.require_certificate:
                lines.append("require_certificate true")
        if c.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.folder}/",
                f"autosave_interval {c.autosave_interval_s}",
                "autosave_on_changes true",
            ]
        else:
            lines.append("persistence false")
        if c.message_size_limit:
            lines.append(f"message_size_limit {c.message_size_limit}")
        lines += list(c.extra)
        self.conf_path.write_text("\n".join(lines) + "\n")
        return self.conf_path

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.write_config()
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise BridgeError(
                    f"mosquitto exited at start (code {self.proc.returncode}) "
                    f"on port {self.port}: {(err or log).strip()[-500:]}"
                )
            if port_open(self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise BridgeError(f"mosquitto did not open port {self.port} within {timeout_s:g} s")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BridgeError("broker not started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash: no clean persistence save, clients see a reset)."""
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: a half-open broker that only keepalive detects."""
        if self.running():
            os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGCONT (in case it is frozen), SIGTERM, wait; SIGKILL if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def restart(self, timeout_s: float = 10.0) -> MosquittoBroker:
        """Start again on the same port and folder (after kill() or stop())."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.start(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_password_file(folder: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file for ``users`` (made with ``mosquitto_passwd -b``)."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        raise BridgeError("mosquitto_passwd is not installed (package mosquitto)")
    path = Path(folder) / "passwd"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    for user, password in users.items():
        subprocess.run(
            [tool, "-b", str(path), user, password],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    path.chmod(0o600)
    return path
