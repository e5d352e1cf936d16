"""``cps-sim hil`` and ``cps-sim replay``: a scenario in real time over MQTT, and its exact
offline re-run from the recording.

``run_hil`` loads the scenario, starts an embedded broker when no ``--broker``
is given (Mosquitto when installed, else the pure-Python amqtt broker of the
``broker`` extra), connects the :class:`~cps_sim.bridge.transport.MqttTransport`,
runs the world on ``simpy.rt.RealtimeEnvironment`` at ``speed`` simulated
seconds per wall second with the :class:`~cps_sim.bridge.runtime.BridgeRuntime`,
shows a status line, and writes the results directory like ``cps-sim run`` plus

* ``bridge.parquet`` — every message in and out (simulation time, wall time,
  direction, topic, payload, QoS, retain, accepted, reject reason) and every
  connection change; its schema metadata holds what replay needs;
* ``bridge_events.parquet`` — rejections, clamps, fallbacks, stale / offline
  devices, disconnects;
* ``hil_ticks.parquet`` — wall time and real-time lag of every tick;
* KPIs ``hil_lag_p50_s`` / ``hil_lag_p99_s`` / ``hil_lag_max_s`` and the bridge
  counters (``bridge_*``) in ``kpis.json``.

``run_replay`` feeds the recorded inbound messages back at the simulation
times (poll instants) they were taken at, in a fast environment, through the
same transport and runtime code: the KPIs and time series equal the live run's.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cps_sim.bridge import schema as S
from cps_sim.bridge.runtime import BridgeRuntime, check_bridge
from cps_sim.bridge.transport import (
    CONN,
    IN,
    ConnectionConfig,
    MqttTransport,
    RawIn,
    ReplayLink,
    TlsConfig,
    connect,
    poll_period,
)
from cps_sim.core.errors import BridgeError, ResultsError, ScenarioError
from cps_sim.core.files import write_atomic
from cps_sim.experiment.progress import progress_enabled
from cps_sim.scenario.bridge_schema import BridgeDeviceSpec, BridgeSpec
from cps_sim.scenario.schema import Scenario

RECORDING_KEY = b"cps_sim.recording"
RECORDING_VERSION = 1


@dataclass
class HilOptions:
    broker: str | None = None  # mqtt://host:port; None: the scenario's url or an embedded one
    speed: float | None = None  # default: the scenario's speed (1 = real time)
    duration_s: float | None = None
    record: Path | None = None  # also write the recording here
    quiet: bool = False
    emulate: bool = False  # start emulators for devices marked emulated
    loopback_s: float = 0.0
    poll_wall_s: float = 0.005
    strict_lag_s: float | None = None  # stop when a tick settles later (default bridge.max_lag_s)
    check_expect: bool = True  # check the scenario's expect: block


@dataclass
class HilResult:
    out_dir: Path
    kpis: dict[str, float]
    wall_time_s: float
    interrupted: bool
    broker_url: str
    overrun: str | None = None  # why a strict real-time run stopped early
    expectations: Any = None  # the scenario's expect: report (RunResult.expectations)


# ----------------------------------------------------------------------------- helpers


def parse_duration(text: str) -> float:
    """``90`` / ``90s`` / ``15m`` / ``2h`` / ``1d`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(text))
    if not m:
        raise BridgeError(
            f"--duration {text!r}: a number with an optional unit s, m, h or d (e.g. 10m)"
        )
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not value > 0:
        raise BridgeError(f"--duration must be > 0, got {text!r}")
    return value


def with_duration(scenario: Scenario, duration_s: float) -> Scenario:
    tick = scenario.tick_s
    if abs(duration_s / tick - round(duration_s / tick)) > 1e-9:
        raise BridgeError(
            f"--duration {duration_s:g} s is not a whole number of ticks of {tick:g} s"
        )
    data = scenario.model_dump(mode="json")
    data["duration_days"] = duration_s / 86400.0
    return Scenario.model_validate(data)


def resolve_password(spec: BridgeSpec, base_dir: Path | None) -> str | None:
    """The password from ``password_env`` or ``password_file`` (never from the scenario)."""
    if spec.password_env:
        value = os.environ.get(spec.password_env)
        if value is None:
            raise BridgeError(
                f"bridge.password_env: the environment variable {spec.password_env} is not set"
            )
        return value
    if spec.password_file:
        path = Path(spec.password_file)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        from cps_sim.core.errors import InputFileError
        from cps_sim.core.files import read_input

        try:
            raw = read_input(path, max_bytes=64 * 1024, what="password file")
            lines = raw.decode("utf-8", errors="replace").splitlines()
        except InputFileError as exc:
            raise BridgeError(f"bridge.password_file: {exc}") from None
        return lines[0] if lines else ""
    return None


def connection_config(spec: BridgeSpec, url: str, base_dir: Path | None) -> ConnectionConfig:
    tls = None
    if spec.tls is not None:

        def p(x: str | None) -> Path | None:
            if x is None:
                return None
            q = Path(x)
            return q if q.is_absolute() or base_dir is None else base_dir / q

        tls = TlsConfig(p(spec.tls.ca_file), p(spec.tls.cert_file), p(spec.tls.key_file))
    return ConnectionConfig(
        url=url,
        username=spec.username,
        password=resolve_password(spec, base_dir),
        tls=tls,
        protocol=spec.protocol,
        keepalive_s=spec.keepalive_s,
    )


class HilStatus:
    """One status line: on a terminal updated in place, else every 10 s; silent when quiet
    or under CI=true."""

    def __init__(self, quiet: bool, name: str):
        self.tty = progress_enabled(quiet)
        ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
        self.lines = not quiet and not ci and not self.tty
        self.name = name
        self._last = 0.0

    def update(self, world: Any, result: Any, rt: BridgeRuntime) -> None:
        if not (self.tty or self.lines):
            return
        now = time.monotonic()
        if now - self._last < (0.25 if self.tty else 10.0):
            return
        self._last = now
        c = rt.tr.counters
        lag = rt.lag_s[-1] if rt.lag_s else math.nan
        online = sum(1 for link in rt.links if link.available)
        stale = sum(1 for link in rt.links if not link.member.measured)
        sim = world.clock.to_datetime(float(result.t_end_s)).strftime("%Y-%m-%d %H:%M:%S")
        text = (
            f"{self.name} {sim}  lag {lag * 1000:7.1f} ms  in {c.received} out "
            f"{c.published}  rejected {c.rejected}  devices {online}/{len(rt.links)} online, "
            f"{stale} on model  {'connected' if rt.tr.connected else 'DISCONNECTED'}"
        )
        if self.tty:
            sys.stderr.write("\r" + text[:200].ljust(120))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ----------------------------------------------------------------------------- live run


def run_hil(
    path: str | Path,
    options: HilOptions,
    overrides: Sequence[str] = (),
    out_dir: Path | None = None,
) -> HilResult:
    """``cps-sim hil``: see the module docstring."""
    from cps_sim.core.environment import make_env
    from cps_sim.experiment.run import default_out_dir, run_scenario, simulate
    from cps_sim.scenario.loader import load_scenario

    file = str(path)
    scenario = load_scenario(path, list(overrides))
    if options.duration_s is not None:
        scenario = with_duration(scenario, options.duration_s)
    base_dir = Path(path).parent
    if scenario.warmup_days:
        raise BridgeError(
            f"{file}: warmup_days: cps-sim hil runs from `start` in real time "
            f"and cannot simulate a warm-up first; set it to 0 "
            f"(--set warmup_days=0)"
        )
    spec = scenario.bridge or BridgeSpec()
    speed = float(options.speed if options.speed is not None else scenario.speed)
    if not (math.isfinite(speed) and speed > 0):
        raise BridgeError(f"--speed must be a finite number > 0, got {speed:g}")
    lag = options.strict_lag_s
    if lag is not None and not (math.isfinite(lag) and lag > 0):
        raise BridgeError(f"--strict-lag-s must be a finite number > 0, got {lag:g}")
    if options.record is not None:
        check_record_target(Path(options.record))
    check_bridge(scenario, spec, speed, file)
    prefix = spec.prefix_for(scenario.name)
    url = options.broker or spec.url
    broker = None
    tmp = None
    fleets: list[Any] = []
    t0 = time.perf_counter()
    try:
        if url is None:
            tmp = tempfile.TemporaryDirectory(prefix="cps-sim-broker-")
            broker = start_broker(Path(tmp.name))
            url = broker.url
            versions = getattr(broker, "mqtt_versions", ("3.1.1", "5"))
            if spec.protocol not in versions:  # amqtt speaks MQTT 3.1.1 only
                spec = spec.model_copy(update={"protocol": versions[0]})
        if not options.quiet:
            kind = f"embedded {broker.kind} " if broker is not None else ""
            print(
                f"broker {kind}{url} (MQTT {spec.protocol}), topic prefix {prefix}/",
                file=sys.stderr,
                flush=True,
            )
        cfg = connection_config(spec, url, base_dir)
        if options.emulate:
            fleets, spec = start_scenario_emulators(spec, url, prefix, speed, cfg, scenario)
        env = make_env("realtime", speed)
        poll = poll_period(speed, options.poll_wall_s)
        tr = connect(
            env,
            cfg,
            prefix,
            poll_s=poll,
            loopback_s=options.loopback_s,
            exposed={e.group for e in spec.expose},
            max_skew_s=spec.max_skew_s,
            queue_size=spec.queue_size,
        )
        rt = BridgeRuntime(
            spec, tr, speed=speed, live=True, base_dir=base_dir, max_lag_s=options.strict_lag_s
        )
        status = HilStatus(options.quiet, scenario.name)
        meta = _recording_meta(scenario, tr, speed, spec, url)

        def simulator(bd):
            try:
                return simulate(
                    scenario,
                    quiet=True,
                    base_dir=bd,
                    env=env,
                    transport=tr,
                    setup=rt.setup,
                    interruptible=True,
                    on_tick=lambda w, r: (rt.on_tick(w, r), status.update(w, r, rt)),
                )
            except ScenarioError as exc:
                if exc.file is None:
                    raise ScenarioError(file, exc.issues) from None
                raise
            finally:
                status.close()
                rt.close()

        state: dict[str, Any] = {}

        def extras(recorder, folder: Path, kpis: dict[str, float]) -> None:
            state["interrupted"] = bool(getattr(recorder, "interrupted", False))
            kpis.update(rt.kpis())
            kpis["hil_speed"] = speed
            kpis["hil_interrupted"] = float(state["interrupted"])
            meta["kpis_live"] = {
                k: v
                for k, v in kpis.items()
                if k.startswith(("hil_lag", "hil_overrun", "hil_max_lag"))
                or k == "hil_interrupted"
                or "_ack_p" in k
            }
            meta["ticks_done"] = int(recorder.ticks_done)
            _write_tables(folder, rt, meta)
            if options.record is not None:
                _write_recording(Path(options.record), tr, meta)

        res = run_scenario(
            scenario,
            out_dir or default_out_dir(scenario),
            quiet=True,
            source_file=file,
            overrides=list(overrides),
            base_dir=base_dir,
            simulator=simulator,
            extras=extras,
            check_expect=options.check_expect,
        )
    finally:
        for fleet in fleets:
            fleet.stop()
        if broker is not None:
            broker.stop()
        if tmp is not None:
            tmp.cleanup()
    return HilResult(
        res.out_dir,
        res.kpis,
        time.perf_counter() - t0,
        state.get("interrupted", False),
        url,
        rt.overrun_message() if rt.overrun is not None else None,
        res.expectations,
    )


def start_broker(folder: Path):
    """An embedded broker: Mosquitto when installed, else amqtt (extra ``broker``)."""
    try:
        from cps_sim.bridge.embedded_broker import start_embedded_broker
    except ImportError:  # the amqtt fallback is not installed in this version
        from cps_sim.bridge.broker import MosquittoBroker

        return MosquittoBroker(folder).start()
    return start_embedded_broker(folder)


def start_scenario_emulators(
    spec: BridgeSpec, url: str, prefix: str, speed: float, cfg: ConnectionConfig, scenario: Scenario
):
    """Emulators (``cps-sim emulate``, in this process) for the devices marked
    ``emulated: true``; returns the fleets and the spec with the devices' topics
    pointing at them."""
    try:
        from cps_sim.bridge.emulate import start_emulators
    except ImportError:
        raise BridgeError(
            "--emulate needs the device emulators (cps_sim.bridge.emulate), "
            "which this installation does not have"
        ) from None
    kinds = {"ev": "ev_charger", "battery": "battery", "pv": "pv", "load": "plug"}
    fleets = []
    devices = []
    for d in spec.devices:
        if not d.emulated:
            devices.append(d)
            continue
        rated = {}
        if d.max_power_w is not None:
            rated["power_w_max"] = d.max_power_w
        if d.min_power_w is not None:
            rated["power_w_min"] = d.min_power_w
        fleet = start_emulators(
            kinds[d.binds.kind],
            d.profile,
            1,
            url,
            prefix=prefix,
            id_prefix=d.name,
            # the generic profile's topic is <prefix>/dev/<name> (docs/mqtt.md): that id
            device_ids=[d.name] if d.profile == "generic" and d.topic is None else None,
            speed=speed,
            username=cfg.username,
            password=cfg.password,
            rated=rated,
            seed=scenario.seed,
            start=scenario.start.isoformat(),
            interval_s=max(5.0 / speed, 0.02),  # telemetry every 5 simulated seconds
            homeassistant=spec.homeassistant,
            ha_prefix=spec.discovery_prefix,
        )
        fleets.append(fleet)
        topic = fleet.device_topics[0]
        devices.append(
            d.model_copy(update={"topic": topic})
            if d.profile != "generic" or topic != f"{prefix}/dev/{d.name}"
            else d
        )
    return fleets, spec.model_copy(update={"devices": devices})


# ----------------------------------------------------------------------------- recording


def _recording_meta(
    scenario: Scenario, tr: MqttTransport, speed: float, spec: BridgeSpec, url: str
) -> dict[str, Any]:
    return {
        "version": RECORDING_VERSION,
        "scenario": scenario.model_dump(mode="json"),
        "prefix": tr.topics.prefix,
        "sid": tr.sid,
        "poll_s": tr.poll_s,
        "loopback_s": tr.loopback_s,
        "max_skew_s": tr.max_skew_s,
        "speed": speed,
        "exposed": sorted(tr.exposed),
        "devices": [d.model_dump(mode="json") for d in spec.devices],
        "broker": re.sub(r"//[^@/]*@", "//", url),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write_tables(folder: Path, rt: BridgeRuntime, meta: dict[str, Any]) -> None:
    from cps_sim.experiment.results import write_parquet

    _write_recording(folder / "bridge.parquet", rt.tr, meta)
    write_parquet(folder / "bridge_events.parquet", rt.events_table(), {})
    if rt.live:
        write_parquet(folder / "hil_ticks.parquet", rt.ticks_table(), {})


def _write_recording(path: Path, tr: MqttTransport, meta: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    if tr.log is None:
        raise BridgeError("this transport keeps no message log")
    table = tr.log.table()
    table = table.replace_schema_metadata({RECORDING_KEY: json.dumps(meta).encode()})
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))
    except OSError as exc:
        raise ResultsError(f"{path}: cannot write the recording: {exc.strerror or exc}") from None


def check_record_target(path: Path) -> None:
    """``--record PATH`` checked before the run: a new file in an existing (or creatable)
    folder, or a recording cps-sim wrote (replaced); never a folder, a device or a file of
    the user's (it would be overwritten when the run ends)."""
    if path.exists() or path.is_symlink():
        from cps_sim.core.errors import InputFileError
        from cps_sim.core.files import require_regular_file

        try:
            require_regular_file(path, what="recording")
        except InputFileError as exc:
            raise BridgeError(f"--record {exc}") from None
        try:
            read_recording(path)
        except ResultsError:
            raise BridgeError(
                f"--record {path}: exists and is not a cps-sim recording; cps-sim will not "
                "overwrite it (give a new file name)"
            ) from None
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BridgeError(f"--record {path}: {parent} is not a folder")
            break


# what run_replay takes from a recording's metadata
_RECORDING_FIELDS = (
    "version",
    "scenario",
    "prefix",
    "poll_s",
    "loopback_s",
    "sid",
    "exposed",
    "max_skew_s",
    "speed",
)


def read_recording(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The message table and the metadata of a recording (``bridge.parquet`` or a file
    written by ``--record``; a results directory works too)."""
    import pyarrow.parquet as pq

    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import require_regular_file

    p = Path(path)
    if p.is_dir():
        p = p / "bridge.parquet"
    if not p.exists():
        raise ResultsError(
            f"{p}: no such recording (give bridge.parquet, a results "
            "directory of cps-sim hil, or a file written by --record)"
        )
    try:
        require_regular_file(p, what="recording")
    except InputFileError as exc:
        raise ResultsError(str(exc)) from None
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ResultsError(f"{p}: not a Parquet recording: {exc}") from None
    raw = (table.schema.metadata or {}).get(RECORDING_KEY)
    if raw is None:
        raise ResultsError(
            f"{p}: a Parquet file, but not a cps-sim hil recording (no "
            f"{RECORDING_KEY.decode()} metadata)"
        )
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ResultsError(f"{p}: the recording's metadata is damaged ({exc})") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{p}: the recording's metadata is damaged (not a JSON object)")
    missing = sorted(set(_RECORDING_FIELDS) - set(meta))
    if missing:
        raise ResultsError(f"{p}: the recording's metadata lacks {', '.join(missing)}")
    if meta.get("version") != RECORDING_VERSION:
        raise ResultsError(
            f"{p}: recording version {meta.get('version')}, this cps-sim reads "
            f"version {RECORDING_VERSION}"
        )
    return table, meta


def replay_batches(table) -> dict[int, list[RawIn]]:
    """Inbound messages and connection changes by the drain that took them."""
    cols = table.to_pydict()
    batches: dict[int, list[RawIn]] = {}
    for i, direction in enumerate(cols["direction"]):
        if direction not in (IN, CONN):
            continue
        raw = RawIn(
            cols["wall_time_s"][i],
            cols["topic"][i],
            cols["payload"][i],
            cols["retain"][i],
            cols["qos"][i],
        )
        if cols["reason"][i] == S.QUEUE_FULL:
            raw.parsed = ("dropped", 0)
        batches.setdefault(int(cols["drain"][i]), []).append(raw)
    return batches


def run_replay(recording: str | Path, out_dir: Path | None = None, quiet: bool = True):
    """``cps-sim replay``: re-run a recorded hil run offline (see module docstring)."""
    import simpy

    from cps_sim.experiment.run import run_scenario, simulate

    table, meta = read_recording(recording)
    if not isinstance(meta["scenario"], dict):
        raise ResultsError(f"{recording}: the recording's scenario is not a mapping")
    data = dict(meta["scenario"])
    data["mode"] = "fast"
    from cps_sim.scenario.loader import validate_data

    try:
        scenario = validate_data(data, Scenario, f"{recording} (recorded scenario)")
    except ScenarioError as exc:
        raise ResultsError(f"the recording's scenario is not valid:\n{exc}") from None
    done = meta.get("ticks_done")
    if done is not None and 0 < done < scenario.n_ticks:  # stopped early (Ctrl-C, overrun)
        scenario = with_duration(scenario, done * scenario.tick_s)
    spec = scenario.bridge or BridgeSpec()
    devices = meta.get("devices")
    if devices:  # --emulate may have pointed device topics at the emulators
        spec = spec.model_copy(
            update={"devices": [BridgeDeviceSpec.model_validate(d) for d in devices]}
        )
    env = simpy.Environment()
    link = ReplayLink(replay_batches(table))
    tr = MqttTransport(
        env,
        S.Topics(meta["prefix"]),
        link,
        poll_s=meta["poll_s"],
        loopback_s=meta["loopback_s"],
        sid=meta["sid"],
        exposed=set(meta["exposed"]),
        max_skew_s=meta["max_skew_s"],
        clock=lambda: 0.0,
    )
    rt = BridgeRuntime(spec, tr, speed=meta["speed"], live=False)

    def simulator(bd):
        try:
            return simulate(
                scenario,
                quiet=quiet,
                base_dir=bd,
                env=env,
                transport=tr,
                setup=rt.setup,
                on_tick=rt.on_tick,
            )
        finally:
            rt.close()  # the same final messages as live (recorded, not sent)

    def extras(recorder, folder: Path, kpis: dict[str, float]) -> None:
        kpis.update(rt.kpis())
        kpis["hil_speed"] = float(meta["speed"])
        kpis.update(meta.get("kpis_live", {}))  # wall-clock figures: the live run's
        left = sum(len(v) for v in link.batches.values())
        if left:
            raise ResultsError(
                f"replay: {left} recorded inbound messages were never taken "
                "(the recording does not belong to this version of cps-sim)"
            )
        from cps_sim.experiment.results import write_parquet

        write_parquet(folder / "bridge_events.parquet", rt.events_table(), {})
        _write_recording(folder / "bridge.parquet", tr, {**meta, "replayed_from": str(recording)})

    out = out_dir or Path("results") / f"{scenario.name}-replay"
    return run_scenario(
        scenario, out, quiet=True, source_file=None, simulator=simulator, extras=extras
    )
