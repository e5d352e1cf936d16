"""Scenario schema of the optional AC power flow of a distribution feeder (``powerflow:``).

One site group is placed on the load buses of a low-voltage network that ships with
pandapower (``pandapower.networks``; no download).  Every ``every_ticks`` settlement ticks
:func:`cps_sim.grid.powerflow.build_powerflow` turns the sites' net import into bus
loads and runs ``pandapower.runpp`` (Newton-Raphson), giving bus voltages, line and
transformer loading and feeder losses.  Needs the extra ``cps_sim[grid]``.

Frozen pydantic model, ``extra="forbid"``; see ``docs/powerflow.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Bundled networks and the pandapower.networks function that builds each one.
NETWORKS: dict[str, str] = {
    "cigre_lv": "create_cigre_network_lv",
    "kerber_landnetz": "create_kerber_landnetz_kabel_1",
    "kerber_landnetz_overhead": "create_kerber_landnetz_freileitung_1",
    "kerber_dorfnetz": "create_kerber_dorfnetz",
    "kerber_vorstadtnetz": "create_kerber_vorstadtnetz_kabel_1",
}

NetworkName = Literal[
    "cigre_lv",
    "kerber_landnetz",
    "kerber_landnetz_overhead",
    "kerber_dorfnetz",
    "kerber_vorstadtnetz",
]


class PowerFlowSpec(BaseModel):
    """AC power flow of one bundled LV feeder fed by one site group.

    Sites are mapped onto the network's existing loads (``net.load`` rows; their nominal
    powers are replaced, never added to):

    * ``round_robin``: site *i* of the group goes to load ``i mod n_loads``;
    * ``proportional``: sites are shared out in proportion to the loads' nominal
      ``p_mw`` (largest remainder), in contiguous blocks of site indices.

    A site's tick-average net import ``P`` [W] (import positive, export negative) times
    ``scale`` becomes load power; a bus whose sites export has a *negative* load (no
    ``sgen`` is created).  Reactive power is ``Q = |P|·tan(acos(power_factor))`` ≥ 0:
    importing sites are inductive loads and exporting sites absorb reactive power, as
    grid codes ask of PV inverters (ASSUMPTION, e.g. VDE-AR-N 4105 cos φ underexcited).
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )

    network: NetworkName = Field(
        "cigre_lv",
        description="Bundled network: cigre_lv (CIGRE TF C6.04.02 European LV "
        "benchmark, 20/0.4 kV, residential + industrial + commercial feeders, 15 loads); "
        "kerber_landnetz (rural cable, 8 loads), kerber_landnetz_overhead (rural overhead "
        "line, 13 loads), kerber_dorfnetz (village, 57 loads), kerber_vorstadtnetz "
        "(suburban cable, 146 loads).",
    )
    group: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of the site group (sites[].name) placed on the network's load buses.",
    )
    mapping: Literal["round_robin", "proportional"] = Field(
        "round_robin",
        description="How sites are assigned to the network's loads (see the class docstring).",
    )
    every_ticks: int = Field(
        1,
        ge=1,
        le=100_000,
        description="Run the power flow every N "
        "settlement ticks (on ticks 0, N, 2N, ...); the tick's own net "
        "power is used (no averaging over the N ticks).",
    )
    voltage_min_pu: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="Lower voltage limit "
        "[pu]. 0.95 is typical for LV planning (EN 50160 allows "
        "0.90 for 10-min means; ASSUMPTION).",
    )
    voltage_max_pu: float = Field(
        1.05,
        gt=1.0,
        lt=1.5,
        description="Upper voltage limit "
        "[pu]. 1.05 is typical (ASSUMPTION; Japan's 101±6 V is "
        "about ±0.06 pu).",
    )
    power_factor: float = Field(
        0.97,
        gt=0.0,
        le=1.0,
        description="cos φ of every site (ASSUMPTION: a typical household mix).",
    )
    scale: float = Field(
        1.0,
        gt=0.0,
        le=1e6,
        description="Multiplier on each site's power "
        "before it enters the network: each simulated site stands for "
        "`scale` real sites (e.g. 20 simulated homes on a 57-load village "
        "network with scale 3).",
    )
    max_iterations: int = Field(
        30,
        ge=3,
        le=1000,
        description="Newton-Raphson iteration "
        "limit; a run that does not converge within it is counted as "
        "a failure, not raised.",
    )
