"""Where sweep runs execute: a local process pool (default) or Dask distributed.

Both backends call :func:`cps_sim.experiment.worker.execute_run` on the same
task dictionaries and report one record per task through ``on_record``; a
run's result depends only on its task, so the backends give identical
catalogs.

Local backend (``ProcessPoolExecutor``):

* ``forkserver`` workers with the engine preloaded: fast to start, and they
  inherit no file descriptors from the sweep (so not its lock, B5);
* at most two tasks per worker in flight; when the pool breaks (a worker
  killed by a signal or the OOM killer, B1) the runs that had started (their
  ``.cps_sim-inflight`` marker exists) are retried up to ``retries`` times on a fresh
  pool, then recorded as ``worker_died``; runs that were only queued are
  resubmitted without counting an attempt; the rest continue;
* ``max_tasks_per_child`` recycles workers to bound memory growth (B8);
* each worker exits when the sweep process dies, even by SIGKILL and while it
  is an unreaped zombie (:mod:`cps_sim.experiment.lifeline`), so a killed
  sweep leaves no orphans holding CPU.

Dask backend: a ``LocalCluster`` (processes, one thread each) when no
address is given, else ``Client(address)``; the results directory must then
be on a file system every worker sees.  Dask re-runs tasks whose worker
died (``distributed.scheduler.allowed-failures``) and finally raises
``KilledWorker``, recorded as ``worker_died``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from cps_sim.experiment.worker import execute_run, inflight_path, record_failure

OnRecord = Callable[[dict[str, Any]], None]

MAX_TASKS_PER_CHILD = 100
# Imported once in the fork server, so each worker starts warm (the engine imports pvlib,
# holidays and scipy lazily on its first run: ~0.4 s per worker otherwise).
_PRELOAD = [
    "cps_sim.experiment.forkserver_lifeline",
    "cps_sim.experiment.worker",
    "cps_sim.scenario.schema",
    "cps_sim.experiment.run",
    "pvlib",
    "holidays",
    "scipy.optimize",
    "pandas",
    "pyarrow.parquet",
]


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- local


def _worker_init(fork_server_pid: int | None) -> None:
    """Pool workers die with their fork server, which dies with the sweep (see lifeline).

    ``fork_server_pid`` is the parent a worker must have: a worker whose fork
    server died before this ran has been re-parented already, and exits.
    """
    from cps_sim.experiment.lifeline import bind_to_parent

    bind_to_parent(fork_server_pid)


def _fork_server_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def _preload() -> list[str]:
    import importlib.util

    out = []
    for mod in _PRELOAD:
        with contextlib.suppress(ImportError, ValueError):
            if importlib.util.find_spec(mod) is not None:
                out.append(mod)
    return out


def start_fork_server() -> None:
    """Start the local backend's fork server now, without waiting for it.

    It imports the engine (~1.5 s) in its own process while the caller goes
    on importing, expanding the plan and preparing the results directory.
    """
    from multiprocessing import forkserver

    os.environ["CPS_SIM_SWEEP_PID"] = str(os.getpid())  # read by forkserver_lifeline
    mp.get_context("forkserver").set_forkserver_preload(_preload())
    forkserver.ensure_running()


def _new_pool(workers: int, max_tasks_per_child: int | None) -> ProcessPoolExecutor:
    ctx = mp.get_context("forkserver")
    os.environ["CPS_SIM_SWEEP_PID"] = str(os.getpid())
    ctx.set_forkserver_preload(_preload())  # no effect once the server runs
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(_fork_server_pid(),),
        max_tasks_per_child=max_tasks_per_child,
    )


def run_local(
    tasks: Sequence[dict[str, Any]],
    out: Path,
    workers: int,
    on_record: OnRecord,
    *,
    retries: int = 1,
    max_tasks_per_child: int | None = MAX_TASKS_PER_CHILD,
) -> None:
    """Run ``tasks`` on a process pool of ``workers`` processes."""
    queue: deque[dict[str, Any]] = deque(tasks)
    attempts: dict[str, int] = {}
    pool = _new_pool(workers, max_tasks_per_child)
    inflight: dict[Future, dict[str, Any]] = {}
    fruitless_breaks = 0  # pool breaks in a row with no run finished in between
    try:
        while queue or inflight:
            # Two tasks per worker: one running, one queued, so a worker never waits for
            # this loop between runs.
            while queue and len(inflight) < 2 * workers:
                task = queue.popleft()
                n = attempts[task["run_id"]] = attempts.get(task["run_id"], 0) + 1
                inflight[pool.submit(execute_run, task, str(out), None, n)] = task
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                task = inflight.pop(fut)
                try:
                    on_record(fut.result())
                    fruitless_breaks = 0
                except BrokenProcessPool:
                    broken = True
                    _retry_or_fail(task, attempts, retries, queue, out, on_record)
                except Exception as exc:  # e.g. the task could not be pickled
                    on_record(
                        record_failure(
                            out,
                            task,
                            "error",
                            f"{type(exc).__name__}: {exc}",
                            traceback.format_exc(),
                            attempts[task["run_id"]],
                        )
                    )
            if broken:
                fruitless_breaks += 1
                if fruitless_breaks >= 3:
                    from cps_sim.core.errors import CpsSimError

                    raise CpsSimError(
                        "the process pool broke 3 times in a row without finishing a run: "
                        "worker processes die at start-up or on every run (see the messages "
                        "above; a script read from stdin cannot start forkserver workers)"
                    )
                # Every run still in flight died with the pool: retry them on a new one.
                for fut, task in list(inflight.items()):
                    try:
                        on_record(fut.result())
                    except Exception:
                        _retry_or_fail(task, attempts, retries, queue, out, on_record)
                inflight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = _new_pool(workers, max_tasks_per_child)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _retry_or_fail(
    task: dict[str, Any],
    attempts: dict[str, int],
    retries: int,
    queue: deque,
    out: Path,
    on_record: OnRecord,
) -> None:
    marker = inflight_path(out, task["run_id"])
    if not marker.exists():  # never started (it was queued): not its fault
        attempts[task["run_id"]] -= 1
        queue.appendleft(task)
        return
    marker.unlink(missing_ok=True)
    n = attempts[task["run_id"]]
    if n <= retries:
        queue.appendleft(task)
    else:
        on_record(
            record_failure(
                out,
                task,
                "worker_died",
                f"the worker process died while running this run "
                f"(killed by a signal or out of memory), {n} attempt(s)",
                "",
                n,
            )
        )


# ----------------------------------------------------------------------------- dask


def check_dask(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail early (before the results folder is touched) when Dask cannot be used.

    Checks that ``dask[distributed]`` is installed and, with ``address``, that
    its scheduler answers within ``timeout_s``.
    """
    from cps_sim.core.errors import CpsSimError

    try:
        from distributed import Client
    except ImportError:
        raise CpsSimError(
            "--backend dask needs dask[distributed]: pip install 'cps-sim[dist]'"
        ) from None
    if not address:
        return
    try:
        client = Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise CpsSimError(
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g} "
            f"s ({type(exc).__name__}: {exc}); start it (dask scheduler) or "
            "check --address; nothing was written"
        ) from None
    except ValueError as exc:  # malformed address
        raise CpsSimError(f"--address {address!r}: {exc}") from None
    client.close()


def run_dask(
    tasks: Sequence[dict[str, Any]],
    out: Path,
    workers: int,
    on_record: OnRecord,
    *,
    address: str | None = None,
    retries: int = 1,
) -> None:
    """Run ``tasks`` on Dask: a LocalCluster, or the scheduler at ``address``."""
    try:
        import dask
        from distributed import Client, KilledWorker, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - dask is an extra
        from cps_sim.core.errors import CpsSimError

        raise CpsSimError(
            "--backend dask needs dask[distributed]: pip install 'cps-sim[dist]'"
        ) from exc

    with contextlib.ExitStack() as stack:
        if address:
            client = stack.enter_context(Client(address, set_as_default=False))
        else:
            stack.enter_context(
                dask.config.set(
                    {
                        "distributed.scheduler.allowed-failures": retries,
                        "distributed.worker.daemon": False,
                    }
                )
            )
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=40,
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
        by_key = {}
        futures = []
        for task in tasks:
            fut = client.submit(
                execute_run,
                task,
                str(out),
                None,
                1,
                key=f"cps-sim-run-{task['run_id']}",
                pure=False,
            )
            by_key[fut.key] = task
            futures.append(fut)
        for fut in as_completed(futures, loop=client.loop):
            task = by_key[fut.key]
            try:
                on_record(fut.result())
            except KilledWorker:
                on_record(
                    record_failure(
                        out,
                        task,
                        "worker_died",
                        f"the Dask worker running this run died {retries + 1} time(s)",
                        "",
                        retries + 1,
                    )
                )
            except Exception as exc:
                on_record(
                    record_failure(
                        out, task, "error", f"{type(exc).__name__}: {exc}", traceback.format_exc()
                    )
                )
            fut.release()
