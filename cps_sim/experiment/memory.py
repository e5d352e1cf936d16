"""Refuse a run that cannot fit in memory, before building anything.

The estimate is an upper-bound-ish model fitted to measured peak RSS (see
``test_memory_estimate_covers_measured_runs``): a fixed base for the
interpreter and libraries, plus per site, per tick, per site and tick of a
day-block (load noise and shapes are generated one day at a time), per EV
event, and per recorded site and tick.  A run that writes a results folder
streams its events into ``events.parquet`` a day at a time, so it holds far
fewer of them (``streamed``; ``test_memory_estimate_covers_streamed_runs``):
the 100k-home year is estimated at 4.0 GB instead of 18 GB (1.26 GB measured).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from cps_sim.core.errors import CpsSimError

BASE_BYTES = 300e6  # interpreter, numpy, pandas, pvlib, pyarrow, scipy (~230 MB measured)
PER_SITE = 2.5e3  # population arrays of every device family (per site, per EV below)
PER_TICK = 5e3  # recorder rows, weather, prices, per-group flows
PER_SITE_BLOCK_TICK = 30.0  # one day of load shape + noise per site (float64 + float32)
PER_EV_DAY = 600.0  # events (arrival, departure, ...) and their table, held in memory
# streamed into events.parquet (run_scenario): a day of events and one row group are held
# while simulating (the fixed part below); afterwards the KPIs read the departures back
# (~35 B per departure measured at 100k homes for a year; ~0.7 departures per EV-day)
PER_EV_DAY_STREAMED = 80.0
STREAM_BYTES = 150e6  # one pending row group (ROW_GROUP_ROWS rows) and its Arrow table
PER_RECORDED_SITE_TICK = 16.0
SAFETY = 1.5


class TooLargeError(CpsSimError):
    """The run would need more memory than the machine has (an input error: exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class MemoryEstimate:
    total_bytes: float
    sites: int
    ticks: int
    ticks_per_day: int
    evs_max: int

    def describe(self) -> str:
        return f"{self.sites:,} sites x {self.ticks:,} ticks ({self.ticks_per_day:,} per day)"


def estimate(scenario, streamed: bool = False) -> MemoryEstimate:
    """Peak memory [bytes] a run of ``scenario`` needs (estimate, with a safety factor).

    ``streamed``: the run writes its events into a results folder as it goes
    (:func:`cps_sim.experiment.run.run_scenario`), so only about a day of them is held;
    its ``expect:`` rules, if any, still read every event back at the end.  False: the
    events are held in memory (:func:`cps_sim.experiment.run.simulate` on its own).
    """
    sites = sum(g.count for g in scenario.sites)
    evs = sum(
        g.count * g.ev.per_site if g.ev.per_site else round(g.count * g.ev.share)
        for g in scenario.sites
        if getattr(g, "ev", None) is not None
    )
    ticks = scenario.n_ticks
    tpd = round(86400.0 / scenario.tick_s)
    days = scenario.duration_days
    recorded = len(scenario.record.sites)
    events = PER_EV_DAY * evs * days  # every event of the run at once
    if streamed and not getattr(scenario, "expect", None):
        # a pending row group and the departures read back (never more than holding all)
        events = min(STREAM_BYTES + PER_EV_DAY_STREAMED * evs * days, events)
    scaled = (
        PER_SITE * (sites + evs)
        + PER_TICK * ticks
        + PER_SITE_BLOCK_TICK * sites * min(tpd, ticks)
        + events
        + PER_RECORDED_SITE_TICK * recorded * ticks
    )
    return MemoryEstimate(BASE_BYTES + SAFETY * scaled, sites, ticks, tpd, evs)


def available_bytes() -> float:
    """Memory this process may still use: free RAM, capped by an address-space limit."""
    avail = float("inf")
    try:
        import psutil

        avail = float(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a core dependency
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else -1
        if pages > 0:
            avail = float(pages * os.sysconf("SC_PAGE_SIZE"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        avail = min(avail, float(soft))
    return avail


def _gb(b: float) -> str:
    return f"{b / 1e9:,.1f} GB" if b >= 1e8 else f"{b / 1e6:,.0f} MB"


def check_fits(scenario, file: str | None = None, *, streamed: bool = False) -> MemoryEstimate:
    """Raise :class:`TooLargeError` (with the numbers, after ``file: `` when given) when the
    run cannot fit in memory (``streamed``: see :func:`estimate`)."""
    est = estimate(scenario, streamed)
    avail = available_bytes()
    if est.total_bytes > avail:
        raise TooLargeError(
            (f"{file}: " if file else "")
            + f"scenario {scenario.name!r} is too large for this machine: it needs about "
            f"{_gb(est.total_bytes)} of memory ({est.describe()}), but only {_gb(avail)} "
            "are available; use fewer sites, a shorter duration_days or a longer tick_s "
            "(or split it into a sweep)"
        )
    return est
