"""Balancing group (計画値同時同量) as a World tick hook: day-ahead plan vs actual, settled.

The member site groups' net import (grid import - export) is summed per
settlement slot (default 30 min) and settled against a plan with
:mod:`cps_sim.market.balancing`'s rules at an imbalance price:
``imbalance = actual - plan`` (> 0 shortage, paid; < 0 surplus, credited).

Plans (``BalancingGroupSpec.plan``):

* ``baseline_run`` — the same scenario run once more at build time without the
  VPP and the balancing group: a perfect forecast of what the groups would have
  done uncontrolled, so the imbalance measures what the VPP's requests moved
  (or, with ``forecast_noise_std > 0``, plus a seeded forecast error);
* ``previous_day`` — each slot's plan is the actual of the same slot a day
  earlier (a naive persistence forecast); the first day is not settled;
* ``file`` — CSV ``timestamp,net_import_kwh`` per slot (timestamps at slot
  starts; naive ones in the scenario's timezone).

Imbalance price per slot: ``flat``; ``file`` (``timestamp,price_jpy_per_kwh``,
held from each timestamp); or ``synthetic``: ``market.prices``'s generator
(base + slope x normalised net load + AR(1) noise) with a proxy net load of
``-(GHI)`` per slot — dear when the sun is low, cheap at the solar peak (an
assumption standing in for the area's residual demand).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cps_sim.core.errors import ScenarioError
from cps_sim.core.units import SECONDS_PER_HOUR, WH_PER_KWH
from cps_sim.scenario.vpp_schema import BalancingGroupSpec
from cps_sim.world.group import IX


def _slot_layout(tick_s: float, slot_s: float, n_ticks: int) -> tuple[np.ndarray, int, int]:
    """Slot of each tick's first part, ticks per slot (>= 1) and slots per tick (>= 1)."""
    if tick_s <= slot_s:
        if abs(slot_s / tick_s - round(slot_s / tick_s)) > 1e-9:
            raise ScenarioError.single(
                None,
                "balancing_group.slot_s",
                f"the tick ({tick_s:g} s) must divide the slot ({slot_s:g} s)",
            )
        per = round(slot_s / tick_s)
        return np.arange(n_ticks) // per, per, 1
    if abs(tick_s / slot_s - round(tick_s / slot_s)) > 1e-9:
        raise ScenarioError.single(
            None,
            "balancing_group.slot_s",
            f"the slot ({slot_s:g} s) must divide the tick ({tick_s:g} s)",
        )
    split = round(tick_s / slot_s)
    return np.arange(n_ticks) * split, 1, split


def members_net_wh(by_group: dict[str, np.ndarray], members: list[str]) -> float:
    """Net import [Wh] of the member groups in one tick (from ``TickResult.by_group``)."""
    return float(
        sum(by_group[m][IX["grid_import_wh"]] - by_group[m][IX["grid_export_wh"]] for m in members)
    )


def baseline_plan_wh(
    scenario: Any, members: list[str], slot_s: float, base_dir: Path | None = None
) -> np.ndarray:
    """Net import [Wh] per slot of ``members`` with the scenario run without VPP and
    balancing group (a perfect forecast of the uncontrolled groups)."""
    from cps_sim.core.environment import make_env
    from cps_sim.world.run import start_run

    drop = {k: None for k in ("vpp", "balancing_group") if k in type(scenario).model_fields}
    sc = scenario.model_copy(update=drop) if drop else scenario

    def on_tick(r) -> None:
        per_tick[r.k] = members_net_wh(r.by_group, members)

    run = start_run(sc, on_tick, base_dir=base_dir, env=make_env("fast"))
    per_tick = np.zeros(run.world.n_ticks)
    run.run_to_end()
    return _to_slots(per_tick, run.world.tick_s, slot_s)


def _to_slots(per_tick_wh: np.ndarray, tick_s: float, slot_s: float) -> np.ndarray:
    slot, _, split = _slot_layout(tick_s, slot_s, per_tick_wh.size)
    n_slots = int(slot[-1]) + split if per_tick_wh.size else 0
    out = np.zeros(n_slots)
    for j in range(split):  # a handful of sub-slots per tick at most
        np.add.at(out, slot + j, per_tick_wh / split)
    return out


class BalancingGroupHook:
    """Tick hook: accumulates actual net import per slot and settles each closed slot."""

    def __init__(
        self,
        spec: BalancingGroupSpec,
        world: Any,
        base_dir: Path | None = None,
        plan_wh: np.ndarray | None = None,
    ):
        self.spec = spec
        self.name = spec.name
        self.world = world
        names = [g.name for g in world.groups]
        self.members = list(spec.groups) if spec.groups is not None else names
        unknown = [m for m in self.members if m not in names]
        if unknown:
            raise ScenarioError.single(
                None,
                "balancing_group.groups",
                f"no site group named {unknown[0]!r} (groups: {', '.join(names)})",
            )
        self.tick_s = float(world.tick_s)
        self.slot_s = float(spec.slot_s)
        self.tick_slot, self.ticks_per_slot, self.slots_per_tick = _slot_layout(
            self.tick_s, self.slot_s, world.n_ticks
        )
        self.n_slots = int(self.tick_slot[-1]) + self.slots_per_tick
        self.slot_start_s = np.arange(self.n_slots) * self.slot_s
        self.actual_wh = np.zeros(self.n_slots)
        self.closed = np.zeros(self.n_slots, dtype=bool)
        self.per_day = round(86400.0 / self.slot_s)
        self.plan_wh = self._plan(base_dir) if plan_wh is None else np.asarray(plan_wh, float)
        if self.plan_wh.shape != (self.n_slots,):
            raise ValueError(f"plan_wh must have {self.n_slots} slots, got {self.plan_wh.shape}")
        self.price_jpy_per_kwh = self._price(base_dir)

    # ------------------------------------------------------------------ inputs
    def _path(self, ref: str, base_dir: Path | None, field: str) -> Path:
        from cps_sim.scenario.loader import resolve_data_path

        return resolve_data_path(ref, base_dir or Path.cwd(), field=f"balancing_group.{field}")

    def _slot_index(self) -> pd.DatetimeIndex:
        return self.world.clock.index(self.slot_start_s)

    def _plan(self, base_dir: Path | None) -> np.ndarray:
        s = self.spec
        if s.plan == "previous_day":
            return np.full(self.n_slots, np.nan)  # filled as days close
        if s.plan == "file":
            from cps_sim.market.prices import read_price_csv

            path = self._path(s.plan_file, base_dir, "plan_file")
            df = read_price_csv(path, self.world.scenario.timezone, value="net_import_kwh")
            ser = df["net_import_kwh"] * WH_PER_KWH
            idx = self._slot_index()
            missing = ~idx.isin(ser.index)
            if missing.any():
                raise ScenarioError.single(
                    None,
                    "balancing_group.plan_file",
                    f"{path}: no plan for slot {idx[np.argmax(missing)]}",
                )
            plan = ser.reindex(idx).to_numpy(float)
        else:
            plan = baseline_plan_wh(self.world.scenario, self.members, self.slot_s, base_dir)
        if s.forecast_noise_std > 0:
            z = self.world.rng.generator(f"balancing/{self.name}/forecast_noise").standard_normal(
                plan.size
            )
            plan = plan * (1.0 + s.forecast_noise_std * z)
        return plan

    def _price(self, base_dir: Path | None) -> np.ndarray:
        s = self.spec
        if s.price == "flat":
            return np.full(self.n_slots, s.price_jpy_per_kwh)
        if s.price == "file":
            from cps_sim.market.prices import read_price_csv

            path = self._path(s.price_file, base_dir, "price_file")
            df = read_price_csv(path, self.world.scenario.timezone)
            ser = df["price_jpy_per_kwh"]
            idx = self._slot_index()
            if idx[0] < ser.index[0]:
                raise ScenarioError.single(
                    None, "balancing_group.price_file", f"{path}: no price at or before {idx[0]}"
                )
            return ser.reindex(idx, method="ffill").to_numpy(float)
        from cps_sim.market.prices import SyntheticPriceParams, synthetic_day_ahead_prices

        ghi = np.asarray(self.world.irradiance_w_m2, float)[: self.tick_slot.size]
        proxy = np.zeros(self.n_slots)
        cnt = np.zeros(self.n_slots)
        for j in range(self.slots_per_tick):
            np.add.at(proxy, self.tick_slot + j, -ghi)
            np.add.at(cnt, self.tick_slot + j, 1.0)
        proxy = proxy / np.maximum(cnt, 1.0)
        proxy = proxy - proxy.mean() if proxy.size else proxy
        params = SyntheticPriceParams(
            base_jpy_per_kwh=s.price_jpy_per_kwh, slope_jpy_per_kwh=s.price_slope_jpy_per_kwh / 2.0
        )
        return synthetic_day_ahead_prices(
            proxy, self.world.rng.generator(f"balancing/{self.name}/price"), params
        )

    # ------------------------------------------------------------------ tick hook
    def on_tick(self, world: Any, result: Any) -> dict[str, float]:
        k = int(result.k)
        wh = members_net_wh(result.by_group, self.members)
        s0 = int(self.tick_slot[k])
        for j in range(self.slots_per_tick):
            self.actual_wh[s0 + j] += wh / self.slots_per_tick
        last = s0 + self.slots_per_tick - 1
        if (k + 1) % self.ticks_per_slot == 0 or k == world.n_ticks - 1:
            self.closed[s0 : last + 1] = True
            if self.spec.plan == "previous_day":
                nxt = np.arange(s0, last + 1) + self.per_day
                nxt = nxt[nxt < self.n_slots]
                self.plan_wh[nxt] = self.actual_wh[nxt - self.per_day]
        to_w = SECONDS_PER_HOUR / self.tick_s
        plan_w = self.plan_wh[s0] * SECONDS_PER_HOUR / self.slot_s
        p = self.name
        return {
            f"{p}_actual_w": wh * to_w,
            f"{p}_plan_w": float(plan_w),
            f"{p}_imbalance_price_jpy_per_kwh": float(self.price_jpy_per_kwh[s0]),
        }

    # ------------------------------------------------------------------ results
    def _settled(self) -> np.ndarray:
        return self.closed & np.isfinite(self.plan_wh)

    def report(self) -> dict[str, np.ndarray]:
        """One row per settled slot (Parquet-ready)."""
        m = self._settled()
        imb = self.actual_wh[m] - self.plan_wh[m]
        price = self.price_jpy_per_kwh[m]
        return {
            "slot_start_s": self.slot_start_s[m],
            "plan_kwh": self.plan_wh[m] / WH_PER_KWH,
            "actual_kwh": self.actual_wh[m] / WH_PER_KWH,
            "imbalance_kwh": imb / WH_PER_KWH,
            "imbalance_price_jpy_per_kwh": price,
            "imbalance_cost_jpy": imb / WH_PER_KWH * price,
        }

    def kpis(self) -> dict[str, float]:
        """KPIs of the settled slots (the function that computes them from
        ``<name>_report.parquet``: experiment/kpis.py)."""
        from cps_sim.experiment.kpis import balancing_kpis

        return balancing_kpis(self.name, self.report())


def build_balancing_group(
    scenario: Any, world: Any, spec: BalancingGroupSpec | None = None, base_dir: Path | None = None
) -> BalancingGroupHook:
    """The balancing-group hook of ``scenario.balancing_group`` (or of an explicit spec)."""
    spec = spec if spec is not None else getattr(scenario, "balancing_group", None)
    if spec is None:
        raise ValueError("the scenario has no 'balancing_group:' block")
    return BalancingGroupHook(spec, world, base_dir)
