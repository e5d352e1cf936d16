"""Energy-management systems: HEMS, BEMS, FEMS and CEMS controllers.

Each EMS observes its group(s) (an :class:`~cps_sim.control.observation.Observation`)
and acts only through setpoint messages on the transport (``ev_setpoint_w``,
``battery_setpoint_w``, ``import_limit_w``, ``export_limit_w``), applied by
``control.base.device_process`` — the same path as the EV strategies, so an EMS
can drive MQTT devices unchanged.

The controllers are built from plain configuration objects (``HemsConfig`` ...);
``cps_sim.world.wiring`` builds those from a scenario and starts the processes.
"""

from __future__ import annotations

import numpy as np

from cps_sim.control.base import battery_auto
from cps_sim.control.ems.bems import BemsConfig, BemsController
from cps_sim.control.ems.cems import CemsConfig, CemsController, cems_process
from cps_sim.control.ems.common import Calendar, EvDelegate
from cps_sim.control.ems.fems import FemsConfig, FemsController
from cps_sim.control.ems.hems import HemsConfig, HemsController, MpcConfig

__all__ = [
    "BemsConfig",
    "BemsController",
    "Calendar",
    "CemsConfig",
    "CemsController",
    "EvDelegate",
    "FemsConfig",
    "FemsController",
    "HemsConfig",
    "HemsController",
    "MpcConfig",
    "cems_fallback",
    "cems_process",
]


def cems_fallback(ctl: CemsController):
    """Safe behaviour of a member group that lost its CEMS: EVs stop, batteries on
    their own rule, no import at all while islanded or under a PCC limit, and no
    export while islanded."""
    limited = ctl.islanded

    def fallback(obs) -> dict[str, np.ndarray]:
        island = limited(obs.now_s)
        closed = island or np.isfinite(ctl.cfg.pcc_import_limit_w)
        return {
            "ev_setpoint_w": np.zeros(obs.n_evs),
            **battery_auto(obs.n_sites),
            "import_limit_w": np.zeros(obs.n_sites) if closed else np.full(obs.n_sites, np.inf),
            "export_limit_w": np.zeros(obs.n_sites) if island else np.full(obs.n_sites, np.inf),
        }

    return fallback
