"""Bridge loop latency at real time: `python benchmarks/bridge_latency.py [--seconds 120]`.

One `cps-sim hil` run at speed 1 with 1-second ticks on a private Mosquitto:

* group `lab` (3 homes) is exposed; `examples/external_controller.py` answers every
  observation with a group setpoint;
* group `homes` (4 homes) runs a HEMS deciding every second; site 0's EV charger is an
  emulated device (`--emulate`) that acknowledges each setpoint on its state topic.

Reported (from the run's own records, `kpis.json` and `bridge.parquet`):

* real-time lag of the settlement ticks (p50 / p99 / max);
* external controller: its publish (`ts`) -> taken by the simulation (poll), and the full
  loop observation published -> setpoint taken (p50 / p99);
* emulated charger: setpoint published -> acknowledgement received (p50 / p99);
* messages lost (inbound queue drops, sequence gaps) and rejected;
* the machine's load average before and after (figures on a loaded machine are not
  final; say so when quoting them).

Writes `benchmarks/out/bridge_latency.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cps_sim.bridge.broker import MosquittoBroker  # noqa: E402


def scenario(seconds: int) -> dict:
    return {
        "version": 1,
        "name": "bridge_latency",
        "seed": 5,
        "start": "2026-05-11T11:00:00+09:00",
        "duration_days": seconds / 86400,
        "tick_s": 1,
        "weather": {"source": "constant", "constant_ghi_w_m2": 600},
        "sites": [
            {
                "name": "homes",
                "count": 4,
                "pv": {"share": 1, "capacity_kw": 5},
                "battery": {"share": 1, "capacity_kwh": 10, "power_kw": 3, "control": "idle"},
                "ev": {"share": 1, "charger_kw": 6, "initial_soc": 0.3},
            },
            {
                "name": "lab",
                "count": 3,
                "pv": {"share": 1, "capacity_kw": 4},
                "ev": {"share": 1, "charger_kw": 6, "initial_soc": 0.5},
            },
        ],
        "ems": {"homes": {"kind": "hems", "ev_strategy": "pv", "interval_s": 1}},
        "bridge": {
            "prefix": "cps/bench",
            "expose": ["lab"],
            "devices": [
                {
                    "name": "charger0",
                    "binds": {"group": "homes", "site": 0, "kind": "ev"},
                    "emulated": True,
                    "ttl_s": 30,
                }
            ],
        },
    }


def pct(x) -> dict:
    x = np.asarray(x, float)
    if not x.size:
        return {"n": 0}
    return {
        "n": int(x.size),
        "p50_ms": float(np.percentile(x, 50) * 1e3),
        "p99_ms": float(np.percentile(x, 99) * 1e3),
        "max_ms": float(x.max() * 1e3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=120, help="simulated = wall seconds")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "s.yaml").write_text(yaml.safe_dump(scenario(args.seconds)))
        with MosquittoBroker(tmp / "broker") as b:
            ctl = subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "examples/external_controller.py"),
                    b.host,
                    str(b.port),
                    "cps/bench",
                ]
            )
            time.sleep(1.0)
            try:
                r = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "cps_sim",
                        "hil",
                        str(tmp / "s.yaml"),
                        "--emulate",
                        "--broker",
                        b.url,
                        "--speed",
                        "1",
                        "--out",
                        str(tmp / "out"),
                        "-q",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            finally:
                ctl.kill()
                ctl.wait()
        if r.returncode:
            sys.exit(r.stderr)
        k = json.loads((tmp / "out" / "kpis.json").read_text())
        log = pq.read_table(tmp / "out" / "bridge.parquet").to_pandas()
    sp = log[(log.direction == "in") & (log.topic == "cps/bench/group/lab/setpoint")]
    ts = np.array([json.loads(p)["ts"] for p in sp.payload])
    obs = log[(log.direction == "out") & (log.topic == "cps/bench/group/lab/observation")]
    obs_wall = np.sort(obs.wall_time_s.to_numpy())
    idx = np.searchsorted(obs_wall, ts, side="right") - 1
    loop = sp.taken_wall_s.to_numpy()[idx >= 0] - obs_wall[idx[idx >= 0]]
    out = {
        "seconds": args.seconds,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "lag": {
            "p50_ms": k["hil_lag_p50_s"] * 1e3,
            "p99_ms": k["hil_lag_p99_s"] * 1e3,
            "max_ms": k["hil_lag_max_s"] * 1e3,
        },
        "external_publish_to_taken": pct(sp.taken_wall_s.to_numpy() - ts),
        "observation_to_setpoint_taken": pct(loop),
        "device_setpoint_to_ack": {
            "p50_ms": k.get("bridge_dev_charger0_ack_p50_s", np.nan) * 1e3,
            "p99_ms": k.get("bridge_dev_charger0_ack_p99_s", np.nan) * 1e3,
        },
        "messages_in": k["bridge_received"],
        "messages_out": k["bridge_published"],
        "rejected": k["bridge_rejected"],
        "queue_drops": k["bridge_queue_drops"],
        "seq_missing": k["bridge_seq_missing"],
    }
    dest = REPO / "benchmarks" / "out"
    dest.mkdir(exist_ok=True)
    (dest / "bridge_latency.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
