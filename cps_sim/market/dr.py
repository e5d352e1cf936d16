"""Demand-response events: requests to reduce (下げDR) or absorb (上げDR) grid import.

An event asks participants to change their grid import during ``[start, end)``:
``kind="reduce"`` lowers import by ``requested_w`` (shortage, peak), and
``kind="absorb"`` raises it by ``requested_w`` (renewable surplus, avoiding
curtailment).  In the load convention the requested *change of import* is
``-requested_w`` for reduce and ``+requested_w`` for absorb.

File formats (kW at the edge, W inside)::

    # YAML: a list, or a mapping with key ``events``
    events:
      - {id: dr1, start: "2026-08-03T13:00+09:00", end: "2026-08-03T16:00+09:00",
         kind: reduce, requested_kw: 500, sites: [home1, home2]}   # sites optional

    # CSV (UTF-8): event_id,start,end,kind,requested_kw[,sites]   sites separated by ';'

Timestamps without an offset are read in ``tz`` (default Asia/Tokyo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml

from cps_sim.core.errors import CpsSimError
from cps_sim.core.units import SECONDS_PER_HOUR, W_PER_KW

DrKind = Literal["reduce", "absorb"]
DR_KINDS = ("reduce", "absorb")


class DrEventError(CpsSimError):
    """A DR event list cannot be used; the message names the file, the event and the field."""

    exit_code = 2  # bad input, as every data-file error


@dataclass(frozen=True)
class DrEvent:
    """One DR request over ``[start, end)`` (tz-aware timestamps)."""

    event_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    kind: DrKind
    requested_w: float
    sites: tuple[str, ...] | None = None
    """Participating site ids; ``None`` means every participant."""

    def __post_init__(self) -> None:
        if self.kind not in DR_KINDS:
            raise ValueError(
                f"DR event {self.event_id}: kind must be one of {DR_KINDS}, got {self.kind!r}"
            )
        if self.start.tz is None or self.end.tz is None:
            raise ValueError(f"DR event {self.event_id}: start and end must be tz-aware")
        if not self.end > self.start:
            raise ValueError(
                f"DR event {self.event_id}: end {self.end} must be after start {self.start}"
            )
        if not self.requested_w >= 0:
            raise ValueError(
                f"DR event {self.event_id}: requested power must be >= 0, got {self.requested_w}"
            )

    @property
    def sign(self) -> float:
        """-1 for reduce, +1 for absorb (direction of the requested change of import)."""
        return -1.0 if self.kind == "reduce" else 1.0

    def applies_to(self, site: str) -> bool:
        return self.sites is None or site in self.sites


@dataclass(frozen=True)
class DrSchedule:
    """A list of DR events with vectorised queries over timestamps."""

    events: tuple[DrEvent, ...] = ()

    def __len__(self) -> int:
        return len(self.events)

    def _bounds_ns(self) -> tuple[np.ndarray, np.ndarray]:
        s = np.array(
            [e.start.tz_convert("UTC").as_unit("ns").value for e in self.events], dtype=np.int64
        )
        e = np.array(
            [e.end.tz_convert("UTC").as_unit("ns").value for e in self.events], dtype=np.int64
        )
        return s, e

    def active_matrix(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Boolean (T, E): event ``j`` active at timestamp ``i`` (start <= t < end)."""
        idx = pd.DatetimeIndex(times)
        if idx.tz is None:
            raise ValueError("DrSchedule: timestamps must be tz-aware")
        t = idx.tz_convert("UTC").as_unit("ns").asi8[:, None]
        s, e = self._bounds_ns()
        return (t >= s[None, :]) & (t < e[None, :])

    def active(
        self, times: pd.DatetimeIndex, kind: DrKind | None = None, site: str | None = None
    ) -> np.ndarray:
        """Boolean (T,): some event (of ``kind``, for ``site``, if given) is active."""
        m = self.active_matrix(times)
        keep = np.array(
            [
                (kind is None or e.kind == kind) and (site is None or e.applies_to(site))
                for e in self.events
            ],
            dtype=bool,
        )
        return (m & keep[None, :]).any(axis=1) if len(self.events) else np.zeros(len(m), bool)

    def requested_change_w(self, times: pd.DatetimeIndex, site: str | None = None) -> np.ndarray:
        """Requested change of import [W] (T,), summed over active events: reduce < 0 < absorb."""
        m = self.active_matrix(times)
        w = np.array(
            [
                e.sign * e.requested_w if (site is None or e.applies_to(site)) else 0.0
                for e in self.events
            ],
            dtype=float,
        )
        return m.astype(float) @ w if len(self.events) else np.zeros(len(m))

    def delivery(
        self,
        times: pd.DatetimeIndex,
        baseline_w: npt.ArrayLike,
        actual_w: npt.ArrayLike,
        dt_s: float,
    ) -> pd.DataFrame:
        """Requested vs delivered energy per event from baseline and actual import.

        ``baseline_w`` and ``actual_w`` are the mean import of each step
        (T,) starting at ``times``; delivered energy is ``baseline - actual``
        for reduce and ``actual - baseline`` for absorb, over the steps whose
        start lies in the event.
        """
        base = np.asarray(baseline_w, dtype=float)
        act = np.asarray(actual_w, dtype=float)
        m = self.active_matrix(times).astype(float)
        dt_h = dt_s / SECONDS_PER_HOUR
        sign = np.array([e.sign for e in self.events])
        delivered = (m.T @ (act - base)) * dt_h * sign
        requested = m.sum(axis=0) * dt_h * np.array([e.requested_w for e in self.events])
        return pd.DataFrame(
            {
                "kind": [e.kind for e in self.events],
                "requested_wh": requested,
                "delivered_wh": delivered,
                "delivered_ratio": np.divide(
                    delivered, requested, out=np.zeros_like(delivered), where=requested > 0
                ),
            },
            index=pd.Index([e.event_id for e in self.events], name="event_id"),
        )


def _ts(value: Any, tz: str) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize(tz) if t.tz is None else t.tz_convert(tz)


def events_from_records(
    records: Sequence[Mapping[str, Any]], source: str = "<events>", tz: str = "Asia/Tokyo"
) -> DrSchedule:
    """Build a schedule from mappings with ``id``/``event_id``, ``start``, ``end``,
    ``kind``, ``requested_kw`` and optional ``sites``."""
    allowed = {"id", "event_id", "start", "end", "kind", "requested_kw", "sites"}
    events = []
    for i, rec in enumerate(records):
        where = f"{source}: events[{i}]"
        if not isinstance(rec, Mapping):
            raise DrEventError(f"{where}: expected a mapping, got {type(rec).__name__}")
        extra = set(rec) - allowed
        if extra:
            raise DrEventError(
                f"{where}: unknown field(s) {sorted(extra)}; allowed {sorted(allowed)}"
            )
        for key in ("start", "end", "kind", "requested_kw"):
            if (
                key not in rec
                or rec[key] is None
                or (isinstance(rec[key], float) and np.isnan(rec[key]))
            ):
                raise DrEventError(f"{where}: missing field {key!r}")
        eid = str(rec.get("id", rec.get("event_id", f"dr{i}")))
        sites = rec.get("sites")
        if isinstance(sites, str):
            sites = tuple(s.strip() for s in sites.split(";") if s.strip())
        elif sites is not None and not (isinstance(sites, float) and np.isnan(sites)):
            sites = tuple(str(s) for s in sites)
        else:
            sites = None
        times = {}
        for key in ("start", "end"):  # a bad time names its field
            try:
                times[key] = _ts(rec[key], tz)
            except (ValueError, TypeError) as exc:
                raise DrEventError(f"{where}.{key} ({eid}): {exc}") from None
        try:
            requested_w = float(rec["requested_kw"]) * W_PER_KW
        except (ValueError, TypeError) as exc:
            raise DrEventError(f"{where}.requested_kw ({eid}): {exc}") from None
        try:
            events.append(
                DrEvent(
                    event_id=eid,
                    start=times["start"],
                    end=times["end"],
                    kind=str(rec["kind"]).strip(),  # type: ignore[arg-type]
                    requested_w=requested_w,
                    sites=sites,
                )
            )
        except (ValueError, TypeError) as exc:
            raise DrEventError(f"{where} ({eid}): {exc}") from None
    return DrSchedule(tuple(sorted(events, key=lambda e: e.start)))


def load_dr_events(path: str | Path, tz: str = "Asia/Tokyo") -> DrSchedule:
    """Load DR events from a YAML (``.yaml``/``.yml``) or CSV file (see module docstring)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            from cps_sim.core.errors import ScenarioError
            from cps_sim.scenario.loader import parse_yaml, read_yaml_text

            try:  # the scenario loader's reader and limits (size, depth, aliases, tags)
                doc, _ = parse_yaml(read_yaml_text(path, "DR events file"), str(path))
            except ScenarioError as exc:
                raise DrEventError(str(exc)) from None
            if isinstance(doc, Mapping):
                doc = doc.get("events", [])
            if doc is None:
                doc = []
            if not isinstance(doc, list):
                raise DrEventError(f"{path}: expected a list of events or a mapping with 'events'")
            return events_from_records(doc, str(path), tz)
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            df = df.replace("", np.nan)
            return events_from_records(df.to_dict("records"), str(path), tz)
    except (OSError, yaml.YAMLError, pd.errors.ParserError) as exc:
        raise DrEventError(f"{path}: cannot read: {exc}") from None
    raise DrEventError(f"{path}: unsupported extension (use .yaml, .yml or .csv)")
