"""One BLAS thread while a run computes.

numpy hands large dot and matrix products (``np.dot`` of the sites' load and PV
with the segment lengths, the ``cost`` planner's products, the oracle's costs) to
OpenBLAS, which splits them over threads above about 10,000 elements.  For a
simulation that is a loss twice over: the partial sums of each thread make the
last bits of the results depend on how many cores the machine has (a 100,000-site
group gave different KPIs with 1 and 2 BLAS threads), and the threads, which
spin between the thousands of small calls of a run, compete with the engine's
own thread and with the other runs of a sweep (the 100,000-home city ran 4x
slower with them on a busy 2-core machine).  Runs therefore compute with one
BLAS thread (``threadpoolctl``); the limit is lifted when the run ends.
"""

from __future__ import annotations

from typing import Any


def one_blas_thread() -> Any:
    """Context manager: BLAS libraries loaded in this process use one thread inside."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
