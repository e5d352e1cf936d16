"""Results do not depend on the machine's core count: numpy's BLAS splits large dot
products over threads (partial sums in another order), so a run computes with one
BLAS thread (core/blas.py).  The same scenario with 1 and 2 OpenBLAS threads
allowed gives byte-identical flows, for a group above OpenBLAS's threading
threshold (10,000 elements)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

RUN = """\
import hashlib
from cps_sim.experiment.run import simulate
from cps_sim.scenario.schema import Scenario
sc = Scenario(
    name="blas", seed=2, start="2026-08-03T00:00:00+09:00", duration_days=1, tick_s=900,
    weather={"source": "synthetic"},
    sites=[{"name": "homes", "count": 24000, "pv": {"share": 0.6}, "battery": {"share": 0.3},
            "ev": {"share": 0.3}}],
)
rec = simulate(sc)
print(hashlib.sha256(rec.flows.tobytes()).hexdigest())
"""


def _run(threads: int) -> str:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    r = subprocess.run(
        [sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to differ")
def test_same_flows_with_one_and_two_blas_threads():
    assert _run(1) == _run(2)
