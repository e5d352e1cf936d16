"""cps_sim — event-driven cyber-physical energy-management simulator.

A SimPy discrete-event core schedules what is discrete (EV arrivals and
departures, controller decisions, settlement ticks); device physics runs as
numpy over whole populations.  See ``docs/architecture.md``.
"""

__version__ = "0.1.0"
