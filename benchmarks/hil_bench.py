"""Hardware-in-the-loop benchmark (issue 9): emulated devices in a real-time run over MQTT.

    python benchmarks/hil_bench.py                       # the issue's cases, 10 min each
    python benchmarks/hil_bench.py --minutes 1           # short runs while developing
    python benchmarks/hil_bench.py --case 100@1 --minutes 2

Cases (``<devices>@<speed>``): 100@1, 100@60, 1000@1.  Each case:

1. starts a private Mosquitto (``set_tcp_nodelay true``) on a free port;
2. starts the emulators in their own process (``cps-sim emulate generic --kind battery``,
   one MQTT connection and last will per device, telemetry every second of wall time at
   QoS 1, the device clock at the run's speed);
3. runs ``cps-sim hil`` (:func:`cps_sim.bridge.hil.run_hil`) on a scenario whose group of
   N homes has one battery per home bound to an emulated battery, and a HEMS deciding every
   second of wall time (``interval_s`` = speed), so every battery gets a new setpoint on
   every decision the rule changes it on;
4. reads ``bridge.parquet`` (every message in and out, with wall-clock times) and
   ``kpis.json``.

Figures:

* **msgs/s sustained**: messages through the bridge (in + out) per wall second, the
  lowest 10-second window after the first 10 s, and the mean;
* **reaction latency**: wall time from the bridge publishing a setpoint to the bridge
  receiving the device's acknowledgement (``state`` with that ``setpoint_seq``), p50/p99
  over every setpoint;
* **real-time lag**: the runner's lag behind the wall clock per tick (``hil_lag_*`` in
  kpis.json), p50/p99/max;
* **lost**: setpoints never acknowledged (those sent in the last 2 s of the run excepted:
  their acknowledgement may arrive after the log closed), telemetry messages missing by
  sequence number (per device; telemetry is QoS 1), and messages the bridge dropped
  because its inbound queue was full (``queue_full``; counted, never silent).

Results go to ``benchmarks/out/hil_bench.json`` and a Markdown table on stdout.  Figures
measured on a loaded machine are marked so (the load average is recorded with them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CASES = ("100@1", "100@60", "1000@1")
START = "2026-05-11T10:00:00+09:00"


def scenario(n: int, speed: float, minutes: float, prefix: str) -> dict:
    tick = max(1.0, speed)  # one decision and one tick per wall second
    sim_s = minutes * 60.0 * speed
    return {
        "version": 1,
        "name": f"hilbench{n}",
        "seed": 1,
        "start": START,
        "duration_days": round(sim_s / tick) * tick / 86400.0,
        "tick_s": tick,
        "weather": {"source": "constant", "constant_ghi_w_m2": 500},
        "sites": [
            {
                "name": "bench",
                "count": n,
                "pv": {"share": 1, "capacity_kw": 4},
                "battery": {
                    "share": 1,
                    "capacity_kwh": 10,
                    "power_kw": 5,
                    "control": "idle",
                    "initial_soc": 0.5,
                },
            }
        ],
        "ems": {
            "bench": {
                "kind": "hems",
                "interval_s": tick,
                "ev_strategy": None,
                "battery_mode": "rule",
            }
        },
        "bridge": {
            "prefix": prefix,
            "devices": [
                {
                    "ttl_s": 60.0 * speed,  # the same wall time at every speed
                    "name": f"battery-{i:04d}",
                    "profile": "generic",
                    "emulated": True,
                    "binds": {"group": "bench", "site": i, "kind": "battery"},
                }
                for i in range(n)
            ],
        },
    }


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def analyse(out_dir: Path, prefix: str, wall_s: float, emulator: dict) -> dict:
    import pyarrow.parquet as pq

    log = pq.read_table(out_dir / "bridge.parquet").to_pandas()
    kpis = json.loads((out_dir / "kpis.json").read_text())
    msgs = log[log["direction"].isin(["in", "out"])]
    t = msgs["wall_time_s"].to_numpy()
    t0 = t.min() if len(t) else 0.0
    counts = np.bincount(((t - t0) // 10.0).astype(int)) / 10.0 if len(t) else np.zeros(1)
    steady = counts[1:-1] if len(counts) > 2 else counts

    dev = f"{prefix}/dev/"
    out = msgs[
        (msgs["direction"] == "out")
        & msgs["topic"].str.endswith("/setpoint")
        & msgs["topic"].str.startswith(dev)
    ]
    sent: dict[tuple[str, int], float] = {}
    sent_ts: dict[tuple[str, int], float] = {}
    for topic, payload, wall in zip(out["topic"], out["payload"], out["wall_time_s"], strict=True):
        body = json.loads(payload)
        key = (topic.rsplit("/", 2)[1], int(body["seq"]))
        sent[key] = float(wall)
        sent_ts[key] = float(body["ts"])
    inn = msgs[msgs["direction"] == "in"]
    acked: dict[tuple[str, int], float] = {}
    applied_ts: dict[tuple[str, int], float] = {}  # the device's clock when it applied it
    tel_seq: dict[str, list[int]] = {}
    for topic, payload, wall in zip(inn["topic"], inn["payload"], inn["wall_time_s"], strict=True):
        if not topic.startswith(dev):
            continue
        name, leaf = topic[len(dev) :].split("/", 1)
        if leaf == "state" and payload:
            body = json.loads(payload)
            if "setpoint_seq" in body and body.get("reason") is None:
                key = (name, int(body["setpoint_seq"]))
                if key not in acked:
                    acked[key] = float(wall)
                    applied_ts[key] = float(body["ts"])
        elif leaf == "telemetry" and payload:  # dropped messages are logged without payload
            tel_seq.setdefault(name, []).append(int(json.loads(payload)["seq"]))
    refused = inn[~inn["accepted"].astype(bool)]
    rejected_by = {str(k): int(v) for k, v in refused["reason"].value_counts().items()}
    lat = np.array([acked[k] - v for k, v in sent.items() if k in acked])
    # the same round trip split at the device (one machine, one wall clock)
    there = np.array([applied_ts[k] - sent_ts[k] for k in sent if k in acked])
    back = np.array([acked[k] - applied_ts[k] for k in sent if k in acked])
    # a setpoint sent in the last 2 s of the run may be acknowledged after the log closed
    end = float(t.max()) if len(t) else 0.0
    lost = [k for k, v in sent.items() if k not in acked and v < end - 2.0]
    gaps = 0
    for seqs in tel_seq.values():
        s = np.unique(np.asarray(seqs))
        gaps += int((s[-1] - s[0] + 1) - len(s)) if len(s) else 0
    received_tel = sum(len(v) for v in tel_seq.values())
    return {
        "wall_s": wall_s,
        "messages": len(msgs),
        "msgs_per_s_mean": float(len(msgs) / wall_s) if wall_s else 0.0,
        "msgs_per_s_sustained_min10s": float(steady.min()) if len(steady) else 0.0,
        "setpoints_sent": len(sent),
        "setpoints_acked": len(lat),
        "setpoints_lost": len(lost),
        "reaction_p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else float("nan"),
        "reaction_p99_ms": float(np.percentile(lat, 99) * 1e3) if len(lat) else float("nan"),
        "reaction_max_ms": float(lat.max() * 1e3) if len(lat) else float("nan"),
        "to_device_p99_ms": float(np.percentile(there, 99) * 1e3) if len(lat) else float("nan"),
        "ack_back_p99_ms": float(np.percentile(back, 99) * 1e3) if len(lat) else float("nan"),
        "lag_p50_ms": kpis.get("hil_lag_p50_s", float("nan")) * 1e3,
        "lag_p99_ms": kpis.get("hil_lag_p99_s", float("nan")) * 1e3,
        "lag_max_ms": kpis.get("hil_lag_max_s", float("nan")) * 1e3,
        "telemetry_received": received_tel,
        "telemetry_gaps": gaps,
        "bridge_rejected": kpis.get("bridge_rejected", float("nan")),
        "bridge_refused_by_reason": rejected_by,
        "bridge_queue_drops": rejected_by.get("queue_full", 0),
        "emulator_lateness_p99_ms": emulator.get("lateness_p99_s", float("nan")) * 1e3,
        "emulator_commands": emulator.get("commands", -1),
        "emulator_clamped": emulator.get("clamped", -1),
        "emulator_ignored": emulator.get("ignored", {}),
        "emulator_rejected": emulator.get("rejected", {}),
    }


def _merge_summaries(parts: list[dict]) -> dict:
    """One emulator summary from several processes' (counts added, lateness the worst)."""
    out: dict = {}
    for p in parts:
        for k, v in p.items():
            if isinstance(v, dict):
                d = out.setdefault(k, {})
                for r, c in v.items():
                    d[r] = d.get(r, 0) + c
            elif k.startswith("lateness"):
                out[k] = max(out.get(k, v), v)
            elif isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
    return out


def run_case(
    n: int, speed: float, minutes: float, work: Path, quiet: bool, processes: int = 1
) -> dict:
    from cps_sim.bridge.broker import MosquittoBroker, MosquittoConfig
    from cps_sim.bridge.hil import HilOptions, run_hil

    prefix = f"bench{n}x{int(speed)}"
    broker = MosquittoBroker(
        work / "broker",
        MosquittoConfig(extra=["set_tcp_nodelay true"], max_queued_messages=100_000),
    ).start()
    path = work / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario(n, speed, minutes, prefix), sort_keys=False))
    base_cmd = [
        sys.executable,
        "-m",
        "cps_sim",
        "emulate",
        "generic",
        "--kind",
        "battery",
        "--broker",
        broker.url,
        "--prefix",
        prefix,
        "--id-prefix",
        "battery",
        "--speed",
        str(speed),
        "--interval",
        "1",
        "--telemetry-qos",
        "1",
        "--start",
        START,
        "--ttl",
        str(30 * max(speed, 1)),
        "--duration",
        f"{minutes * 60 + 30:.0f}s",
        "--quiet",
    ]
    load_before = _load_average()
    k = max(1, min(processes, n))
    bounds = [round(j * n / k) for j in range(k + 1)]  # devices [lo, hi) per process
    emus = [
        subprocess.Popen(
            [*base_cmd, "--count", str(hi - lo), "--first-id", str(lo)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "CI": "true"},
        )
        for lo, hi in itertools.pairwise(bounds)
    ]
    texts: list[str] = []
    try:
        time.sleep(3.0 + n / 300)  # every device online before the run starts
        t0 = time.perf_counter()
        res = run_hil(
            path, HilOptions(broker=broker.url, speed=speed, quiet=quiet), out_dir=work / "run"
        )
        wall = time.perf_counter() - t0
    finally:
        for emu in emus:
            emu.terminate()
        for emu in emus:
            try:
                text, _ = emu.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                emu.kill()
                text, _ = emu.communicate()
            texts.append(text or "")
        broker.stop()
    parts = []
    for text in texts:
        for line in reversed(text.splitlines()):
            if line.startswith("{"):
                parts.append(json.loads(line))
                break
    emulator = _merge_summaries(parts)
    row = {
        "case": f"{n}@{speed:g}",
        "devices": n,
        "speed": speed,
        "minutes": minutes,
        "emulator_processes": k,
        **analyse(res.out_dir, prefix, wall, emulator),
        "load_avg_before": load_before,
        "load_avg_after": _load_average(),
        "cpus": os.cpu_count(),
    }
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| case | min | msgs/s mean | msgs/s min (10 s) | reaction p50 / p99 ms | "
        "lag p50 / p99 / max ms | setpoints lost | telemetry gaps | queue drops | load avg |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['minutes']:g} | {r['msgs_per_s_mean']:.0f} | "
            f"{r['msgs_per_s_sustained_min10s']:.0f} | {r['reaction_p50_ms']:.1f} / "
            f"{r['reaction_p99_ms']:.1f} | {r['lag_p50_ms']:.1f} / {r['lag_p99_ms']:.1f} / "
            f"{r['lag_max_ms']:.0f} | {r['setpoints_lost']} of {r['setpoints_sent']} | "
            f"{r['telemetry_gaps']} | {r['bridge_queue_drops']} | {r['load_avg_before']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="wall minutes per case")
    ap.add_argument("--case", action="append", help=f"<devices>@<speed>; default {CASES}")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "hil_bench.json")
    ap.add_argument("--verbose", action="store_true", help="show the hil status line")
    ap.add_argument(
        "--emulator-processes",
        type=int,
        default=1,
        help="spread the emulated devices over this many `cps-sim emulate` processes",
    )
    ap.add_argument("--keep", type=Path, help="keep each case's run folder under this folder")
    args = ap.parse_args()
    rows = []
    for case in args.case or CASES:
        n, speed = case.split("@")
        with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp:
            work = Path(tmp)
            if args.keep is not None:
                work = args.keep / case.replace("@", "x")
                work.mkdir(parents=True, exist_ok=True)
            row = run_case(
                int(n),
                float(speed),
                args.minutes,
                work,
                not args.verbose,
                args.emulator_processes,
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(rows, indent=2))
    os.replace(tmp_out, args.out)
    print(table(rows))


if __name__ == "__main__":
    main()
