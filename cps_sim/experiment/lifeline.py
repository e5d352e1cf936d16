"""Sweep worker processes die with the sweep that started them.

Local sweeps run on a ``forkserver`` pool: the sweep process starts a fork
server, and the fork server forks the workers.  Each worker holds the fork
server's "alive" pipe open, so the fork server never notices on its own that
the sweep is gone; and ``os.kill(pid, 0)`` cannot tell either, because it
succeeds on a killed parent that is not reaped yet (a zombie).

So the chain is tied by the kernel instead: the fork server asks Linux to
SIGKILL it when its parent (the sweep) exits (``PR_SET_PDEATHSIG``, set when
this module is imported, which happens only in the fork server through its
preload list), and each worker asks the same about its parent (the fork
server).  Where ``prctl`` is missing, a thread that watches ``os.getppid()``
for re-parenting does the job within half a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent exits; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(ppid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(3)


def bind_to_parent(expected_parent: int | None = None) -> None:
    """Exit when the parent process exits: PR_SET_PDEATHSIG plus a re-parenting watcher.

    ``expected_parent``: the pid the parent must have; a different parent
    means it already died before this call (the process was re-parented).
    """
    ppid = os.getppid()
    die_with_parent()
    if os.getppid() != ppid or (expected_parent is not None and ppid != expected_parent):
        os._exit(3)
    threading.Thread(target=_watch, args=(ppid,), daemon=True, name="cps-sim-parent-watch").start()
