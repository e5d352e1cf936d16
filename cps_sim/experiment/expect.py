"""Check a scenario's ``expect:`` assertions against a run — at its end, or live.

Offline (what ``cps-sim run`` does after a run)::

    report = check_run(scenario, timeseries, events, kpis, groups)
    report.passed, report.failures(), report.to_json()

Live (HIL, the MQTT bridge): feed rows and events as they happen; pointwise
rules (per-tick conditions without aggregates) and temporal rules report a
violation as soon as it is certain, everything else at :meth:`finish`::

    checker = ExpectationChecker(scenario)            # or (items, vocabulary=..., ...)
    for each settlement tick:   new = checker.feed_tick(t_s, row)      # row: column -> value
    for each event:             new = checker.feed_event({"time_s": t, "kind": "fallback",
                                                          "source": "ev-3"})
    report = checker.finish(kpis)                     # same evaluation as offline

``row`` uses the column names of ``timeseries.parquet`` (W units; ``_kw``
aliases are derived), optionally ``group.<name>.<column>`` keys for site
groups.  Events carry ``time_s`` (simulation seconds), ``kind`` and, for EV
events, ``soc``, ``unmet_wh`` and ``trip_energy_wh``; ``source`` (a device
or group id) pairs temporal events.  Offline and live use the same code:
the batch path loads whole columns into the checker and calls
:meth:`ExpectationChecker.finish`.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cps_sim.core.calendar import is_day_off
from cps_sim.scenario.expect_lang import (
    SCALAR,
    TICK,
    Arith,
    Bool,
    Call,
    Checked,
    Compare,
    ExpectError,
    Logic,
    Neg,
    Node,
    Not,
    Null,
    Num,
    Ref,
    Resolved,
    Str,
    Vocabulary,
    _Block,
    compile_expectation,
)
from cps_sim.scenario.expect_schema import (
    ExpectItem,
    expect_name,
    expect_text,
    scenario_vocabulary,
)

PASSED, FAILED, VACUOUS, ERROR, PENDING = "passed", "failed", "vacuous", "error", "pending"
EXIT_EXPECTATION_FAILED = 3
_MAX_LISTED = 5


@dataclass
class Violation:
    """A failure found while data was still arriving (live) or at the end."""

    index: int
    name: str
    text: str
    time_s: float | None
    message: str


@dataclass
class Result:
    index: int
    name: str
    text: str
    status: str  # passed | failed | vacuous | error | pending
    message: str = ""
    first_failure_s: float | None = None
    first_failure_time: str | None = None
    failures: int = 0
    checked: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (PASSED, VACUOUS, PENDING)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "expect": self.text,
            "status": self.status,
            "message": self.message,
            "first_failure_s": self.first_failure_s,
            "first_failure_time": self.first_failure_time,
            "failures": self.failures,
            "checked": self.checked,
            "values": _jsonable(self.values),
            "why": self.why,
        }


@dataclass
class ExpectationReport:
    results: list[Result]

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def to_json(self) -> dict[str, Any]:
        counts = {
            s: sum(r.status == s for r in self.results)
            for s in (PASSED, FAILED, VACUOUS, ERROR, PENDING)
        }
        return {
            "ok": self.passed,
            "total": len(self.results),
            **counts,
            "results": [r.to_json() for r in self.results],
        }

    def format(self) -> str:
        """Human-readable report (what ``cps-sim run`` prints)."""
        bad = self.failures()
        lines = [
            f"expectations: {len(self.results) - len(bad)} of {len(self.results)} passed"
            + (f", {len(bad)} FAILED" if bad else "")
        ]
        for r in self.results:
            tag = {
                PASSED: "ok    ",
                VACUOUS: "n/a   ",
                PENDING: "open  ",
                FAILED: "FAILED",
                ERROR: "ERROR ",
            }[r.status]
            lines.append(f"  {tag} {r.name}: {r.text}")
            if r.status != PASSED and r.message:
                lines += [f"         {m}" for m in r.message.splitlines()]
        return "\n".join(lines)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


# ----------------------------------------------------------------------------- data


@dataclass
class _Events:
    """Event records as columns."""

    time_s: np.ndarray
    kind: np.ndarray
    columns: dict[str, np.ndarray]

    @classmethod
    def empty(cls) -> _Events:
        return cls(np.empty(0), np.empty(0, dtype=object), {})

    def domain(self, name: str) -> np.ndarray:
        want = {"departures": "departure", "arrivals": "arrival"}[name]
        return self.kind == want


@dataclass
class _Data:
    t_s: np.ndarray  # tick start [s since start]
    columns: dict[str, np.ndarray]
    groups: dict[str, dict[str, np.ndarray]]
    events: _Events
    kpis: Mapping[str, float]
    tick_s: float

    @property
    def n(self) -> int:
        return int(self.t_s.size)


class _Context:
    """Scenario facts that derived columns need (clock, holidays, outage windows)."""

    def __init__(
        self,
        start: _dt.datetime | None,
        timezone: str,
        holidays: str | None,
        outages_s: Sequence[tuple[float, float]] = (),
    ):
        self.start = start
        self.timezone = timezone
        self.holidays = holidays
        self.outages_s = list(outages_s)

    @classmethod
    def from_scenario(cls, scenario: Any) -> _Context:
        outages: list[tuple[float, float]] = []
        for spec in (getattr(scenario, "ems", None) or {}).values():
            for a, b in getattr(spec, "outages", []) or []:
                outages.append(
                    ((a - scenario.start).total_seconds(), (b - scenario.start).total_seconds())
                )
        return cls(scenario.start, scenario.timezone, scenario.holidays, outages)

    def local(self, t_s: np.ndarray) -> pd.DatetimeIndex:
        if self.start is None:
            raise ExpectError("hour/weekday/day_off need the run's start time")
        base = pd.Timestamp(self.start).tz_convert(self.timezone)
        return base + pd.to_timedelta(np.asarray(t_s, dtype=float), unit="s")

    def when(self, t_s: float | None) -> str | None:
        if t_s is None:
            return None
        if self.start is None:
            return f"t = {t_s:g} s"
        return self.local(np.array([t_s]))[0].isoformat()


# ----------------------------------------------------------------------------- evaluation


class _Eval:
    """Evaluate one checked expectation over data (numpy, vectorised)."""

    def __init__(self, chk: Checked, data: _Data, ctx: _Context):
        self.chk = chk
        self.data = data
        self.ctx = ctx
        self.masks: dict[str, np.ndarray | None] = {}
        self.witness: dict[int, tuple[float, int | None, str]] = {}  # aggregates

    def run(self, node: Node) -> Any:
        return self._ev(node)

    def _column(self, r: Resolved) -> np.ndarray:
        d = self.data
        if r.source == "derived":
            return self._derived(r.key)
        src = d.columns if r.source == "column" else d.groups.get(r.group or "", {})
        if r.key not in src:
            where = f"site group {r.group!r}" if r.group else "the time series"
            raise ExpectError(f"column {r.key!r} is not in {where} of this run")
        return np.asarray(src[r.key], dtype=float) * r.scale

    def _derived(self, key: str) -> np.ndarray:
        t = self.data.t_s
        if key == "day":
            return np.floor(t / 86400.0)
        if key == "islanded":
            end = t + self.data.tick_s
            out = np.zeros(t.size, dtype=bool)
            for a, b in self.ctx.outages_s:
                out |= (t >= a - 1e-9) & (end <= b + 1e-9)
            return out
        idx = self.ctx.local(t)
        if key == "hour":
            return (idx.hour + idx.minute / 60.0 + idx.second / 3600.0).to_numpy(float)
        if key == "weekday":
            return idx.day_of_week.to_numpy(float)
        if key == "day_off":
            return is_day_off(idx, self.ctx.holidays)
        raise ExpectError(f"unknown derived column {key!r}")  # pragma: no cover

    def _event_field(self, r: Resolved) -> np.ndarray:
        ev = self.data.events
        sel = ev.domain(r.domain or "departures")
        col = ev.columns.get(r.key)
        if col is None:
            return np.full(int(sel.sum()), np.nan)
        return np.asarray(col, dtype=float)[sel] * r.scale

    def _ev(self, n: Node) -> Any:
        if isinstance(n, (Num, Str, Bool, Null)):
            return n.value
        if isinstance(n, Ref):
            r = self.chk.names[id(n)]
            if r.source == "kpi":
                if r.key not in self.data.kpis:
                    raise ExpectError(f"this run has no KPI {r.key!r}")
                return float(self.data.kpis[r.key])
            if r.source == "scenario":
                return r.value
            if r.source == "event":
                return self._event_field(r)
            return self._column(r)
        if isinstance(n, Neg):
            return -self._ev(n.x)
        if isinstance(n, Arith):
            a, b = self._ev(n.a), self._ev(n.b)
            with np.errstate(divide="ignore", invalid="ignore"):
                if n.op == "+":
                    return a + b
                if n.op == "-":
                    return a - b
                if n.op == "*":
                    return a * b
                return (
                    np.divide(a, b)
                    if not (np.isscalar(a) and np.isscalar(b))
                    else (a / b if b != 0 else math.copysign(math.inf, a) if a else math.nan)
                )
        if isinstance(n, Compare):
            vals = [self._ev(x) for x in n.items]
            out: Any = True
            for op, a, b in zip(n.ops, vals, vals[1:], strict=False):
                out = np.logical_and(out, _cmp(op, a, b))
            return out if not isinstance(out, np.bool_) else bool(out)
        if isinstance(n, Logic):
            vals = [self._ev(x) for x in n.items]
            fn = np.logical_and if n.op == "and" else np.logical_or
            out = vals[0]
            for v in vals[1:]:
                out = fn(out, v)
            return out if not isinstance(out, np.bool_) else bool(out)
        if isinstance(n, Not):
            v = np.logical_not(self._ev(n.x))
            return v if not isinstance(v, np.bool_) else bool(v)
        if isinstance(n, Call):
            x = self._ev(n.args[0])
            if n.fn == "abs":
                return np.abs(x)
            return self._aggregate(n, np.asarray(x))
        raise TypeError(type(n).__name__)  # pragma: no cover

    def _aggregate(self, n: Call, x: np.ndarray) -> float | bool:
        kind = self.chk.types[id(n.args[0])].kind
        mask = self.masks.get(kind)
        if n.where is not None:
            w = self._ev(n.where)
            w = np.broadcast_to(np.asarray(w, dtype=bool), x.shape)
            mask = w if mask is None else (mask & w)
        idx = np.arange(x.size)
        if mask is not None:
            x, idx = x[mask], idx[mask]
        fn = n.fn
        where: int | None = None
        if fn in ("count", "share", "any", "all"):
            xb = x.astype(bool)
            val: float | bool = {
                "count": float(xb.sum()),
                "share": float(xb.mean()) if xb.size else math.nan,
                "any": bool(xb.any()),
                "all": bool(xb.all()),
            }[fn]
        else:
            xf = x.astype(float)
            ok = ~np.isnan(xf)
            xf, idx = xf[ok], idx[ok]
            if xf.size == 0:
                val = 0.0 if fn in ("sum", "integral_h") else math.nan
            elif fn in ("max", "min"):
                j = int(np.argmax(xf) if fn == "max" else np.argmin(xf))
                val, where = float(xf[j]), int(idx[j])
            elif fn == "mean":
                val = float(xf.mean())
            elif fn == "sum":
                val = float(xf.sum())
            elif fn == "std":
                val = float(xf.std())
            elif fn == "median":
                val = float(np.median(xf))
            elif fn == "quantile":
                val = float(np.quantile(xf, float(n.args[1].value)))  # type: ignore[attr-defined]
            else:  # integral_h: x times hours (kW -> kWh)
                val = float(xf.sum()) * self.data.tick_s / 3600.0
        self.witness[id(n)] = (val, where, kind)
        return val


def _cmp(op: str, a: Any, b: Any) -> Any:
    if op == "<":
        return np.less(a, b)
    if op == "<=":
        return np.less_equal(a, b)
    if op == ">":
        return np.greater(a, b)
    if op == ">=":
        return np.greater_equal(a, b)
    if op == "==":
        if isinstance(a, (str, _Block)) or isinstance(b, (str, _Block)) or a is None or b is None:
            return a == b
        return np.isclose(a, b, rtol=1e-9, atol=1e-9)
    if isinstance(a, (str, _Block)) or isinstance(b, (str, _Block)) or a is None or b is None:
        return a != b
    return ~np.isclose(a, b, rtol=1e-9, atol=1e-9)


def _leaves(node: Node, chk: Checked) -> list[Node]:
    """Names and aggregate calls inside ``node`` (the values a report shows)."""
    out: list[Node] = []

    def walk(n: Node) -> None:
        if isinstance(n, Ref):
            if chk.names[id(n)].source != "scenario":
                out.append(n)
        elif isinstance(n, Call) and n.fn != "abs":
            out.append(n)
        else:
            for child in ("x", "a", "b"):
                if hasattr(n, child):
                    walk(getattr(n, child))
            for seq in ("items", "args"):
                for c in getattr(n, seq, ()):
                    walk(c)

    walk(node)
    seen: set[str] = set()
    uniq = []
    for n in out:
        s = chk.parsed.source(n)
        if s not in seen:
            seen.add(s)
            uniq.append(n)
    return uniq


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating, int, np.integer)):
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        return f"{f:.6g}"
    return repr(v)


def evaluate_rule(index: int, item: ExpectItem, chk: Checked, data: _Data, ctx: _Context) -> Result:
    """Evaluate one (non-temporal) rule over all data; see the module doc for semantics."""
    p = chk.parsed
    res = Result(
        index,
        expect_name(item, index),
        p.text,
        PASSED,
        why=item.why if not isinstance(item, str) else "",
    )
    ev = _Eval(chk, data, ctx)
    assert p.body is not None
    # 1. the condition (whenever / =>): a scalar switch or a mask per tick / per event
    if p.when is not None:
        cond = ev.run(p.when)
        ckind = chk.types[id(p.when)].kind
        if ckind == SCALAR:
            if not bool(cond):
                res.status = VACUOUS
                res.message = f"condition {p.source(p.when)!r} is false for this run"
                return res
        else:
            ev.masks[ckind] = np.asarray(cond, dtype=bool)
    kind = chk.kind
    value = ev.run(p.body)
    leaves = _leaves(p.body, chk)
    shown = leaves + (
        [n for n in _leaves(p.when, chk) if chk.types[id(n)].kind == kind]
        if p.when is not None and kind != SCALAR
        else []
    )
    if kind == SCALAR:
        res.checked = 1
        vals = {
            p.source(n): (ev.witness[id(n)][0] if id(n) in ev.witness else ev.run(n))
            for n in leaves
        }
        res.values = dict(vals)
        if bool(value):
            return res
        undefined = [k for k, v in vals.items() if _is_nan(v)]
        if undefined:  # no data (an aggregate over nothing, a KPI that is undefined)
            res.status = VACUOUS
            res.message = "undefined for this run: " + ", ".join(f"{k} = nan" for k in undefined)
            return res
        res.status, res.failures = FAILED, 1
        parts = []
        for n in leaves:
            s = p.source(n)
            text = f"{s} = {_fmt(vals[s])}"
            w = ev.witness.get(id(n))
            if w is not None and w[1] is not None:
                t = _index_time(w[2], w[1], data)
                if t is not None:
                    text += f" at {ctx.when(t)}"
                    res.first_failure_s = (
                        res.first_failure_s if res.first_failure_s is not None else t
                    )
            parts.append(text)
        res.first_failure_time = ctx.when(res.first_failure_s)
        res.message = "false: " + ", ".join(parts) if parts else "false"
        body = p.body
        if isinstance(body, Compare) and not all(
            isinstance(x, (Num, Ref)) or (isinstance(x, Call) and x.fn != "abs") for x in body.items
        ):  # compound sides: show what each side came to
            sides = " ".join(
                f"{_fmt(ev.run(x))} {op}" for x, op in zip(body.items, body.ops, strict=False)
            )
            res.message += f"\n(evaluates to {sides} {_fmt(ev.run(body.items[-1]))})"
        return res
    # 2. per tick or per event
    arr = np.asarray(value, dtype=bool)
    if arr.ndim == 0:
        arr = np.full(data.n if kind == TICK else int(data.events.domain(kind).sum()), bool(arr))
    mask = ev.masks.get(kind)
    considered = np.ones(arr.size, dtype=bool) if mask is None else mask.copy()
    for n in leaves:  # a tick (event) where a value is undefined (NaN) is not checked
        v = ev.witness[id(n)][0] if id(n) in ev.witness else ev.run(n)
        if isinstance(v, np.ndarray) and v.shape == arr.shape and v.dtype.kind == "f":
            considered &= ~np.isnan(v)
    res.checked = int(considered.sum())
    bad = considered & ~arr
    res.failures = int(bad.sum())
    what = "ticks" if kind == TICK else kind
    if res.checked == 0:
        res.status = VACUOUS
        res.message = f"no {what} to check" + (
            f" where {p.source(p.when)}" if p.when is not None else ""
        )
        return res
    if p.share is not None:
        share = 1.0 - res.failures / res.checked
        res.values["share"] = share
        if share + 1e-12 >= p.share:
            return res
        res.status = FAILED
        head = (
            f"holds for {share:.1%} of {res.checked} {what} (needs {p.share:.1%}); "
            f"{res.failures} fail"
        )
    else:
        if res.failures == 0:
            return res
        res.status = FAILED
        scope = f" where {p.source(p.when)}" if p.when is not None else ""
        head = f"false at {res.failures} of {res.checked} {what}{scope}"
    rows = np.flatnonzero(bad)
    times = [_index_time(kind, int(i), data) for i in rows[:_MAX_LISTED]]
    res.first_failure_s = times[0]
    res.first_failure_time = ctx.when(times[0])
    lines = [head]
    sample = []
    for i, t in zip(rows[:_MAX_LISTED], times, strict=False):
        vals = {}
        for n in shown:
            v = ev.witness[id(n)][0] if id(n) in ev.witness else ev.run(n)
            vals[p.source(n)] = v[i] if isinstance(v, np.ndarray) and v.ndim else v
        extra = ""
        if kind != TICK:
            ids = data.events.columns.get("ev_id")
            if ids is not None:
                extra = f" ev {int(np.asarray(ids)[data.events.domain(kind)][i])}"
        lines.append(
            f"at {ctx.when(t)}{extra}: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in vals.items())
        )
        sample.append({"time_s": t, **vals})
    if res.failures > _MAX_LISTED:
        lines.append(f"... and {res.failures - _MAX_LISTED} more")
    res.values["failing"] = sample
    res.message = "\n".join(lines)
    return res


def _is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(float(v))


def _index_time(kind: str, i: int, data: _Data) -> float | None:
    if kind == TICK:
        return float(data.t_s[i]) if 0 <= i < data.n else None
    sel = data.events.domain(kind)
    t = data.events.time_s[sel]
    return float(t[i]) if 0 <= i < t.size else None


def evaluate_temporal(
    index: int, item: ExpectItem, chk: Checked, events: _Events, end_s: float | None, ctx: _Context
) -> Result:
    """``B within T of A``: each A is followed by a B (same source, when both carry one)
    no later than T after it.  An A whose window has not closed by ``end_s`` is pending."""
    tmp = chk.parsed.temporal
    assert tmp is not None
    res = Result(
        index,
        expect_name(item, index),
        chk.text,
        PASSED,
        why=item.why if not isinstance(item, str) else "",
    )
    src = events.columns.get("source")
    src = (
        np.asarray(src, dtype=object)
        if src is not None
        else np.full(events.time_s.size, None, dtype=object)
    )
    cause = np.flatnonzero(events.kind == tmp.cause)
    effect = np.flatnonzero(events.kind == tmp.effect)
    res.checked = int(cause.size)
    if cause.size == 0:
        res.status, res.message = VACUOUS, f"no {tmp.cause!r} events"
        return res
    late: list[tuple[float, Any, float | None]] = []
    pending = 0
    for i in cause:
        t0 = float(events.time_s[i])
        s0 = src[i]
        cand = effect[(events.time_s[effect] >= t0 - 1e-9)]
        if s0 is not None:
            cand = cand[[(src[j] is None or src[j] == s0) for j in cand]] if cand.size else cand
        first = float(events.time_s[cand].min()) if cand.size else None
        if first is not None and first - t0 <= tmp.window_s + 1e-9:
            continue
        if first is None and end_s is not None and t0 + tmp.window_s > end_s + 1e-9:
            pending += 1
            continue
        late.append((t0, s0, None if first is None else first - t0))
    res.failures = len(late)
    res.values = {"pending": pending}
    if late:
        res.status = FAILED
        res.first_failure_s = late[0][0]
        res.first_failure_time = ctx.when(late[0][0])
        lines = [
            f"{len(late)} of {cause.size} {tmp.cause!r} events not followed by "
            f"{tmp.effect!r} within {tmp.window_s:g} s"
        ]
        for t0, s0, dt in late[:_MAX_LISTED]:
            who = f" ({s0})" if s0 is not None else ""
            after = f"came {dt:g} s after" if dt is not None else "never came"
            lines.append(f"{tmp.cause} at {ctx.when(t0) or t0}{who}: {tmp.effect} {after}")
        res.values["late"] = [
            {"time_s": t0, "source": s0, "delay_s": dt} for t0, s0, dt in late[:_MAX_LISTED]
        ]
        res.message = "\n".join(lines)
    elif pending:
        res.status = PENDING
        res.message = f"{pending} {tmp.cause!r} event(s) too close to the end to decide"
    return res


# ----------------------------------------------------------------------------- checker


class ExpectationChecker:
    """Compiled expectations of one run, fed tick rows and events (live or in bulk).

    Parameters
    ----------
    scenario : Scenario, optional
        Supplies the expectations (``scenario.expect``), the vocabulary, the clock,
        the holiday calendar and the CEMS outage windows.
    items : sequence of str or ExpectSpec, optional
        Expectations to check instead of the scenario's.
    vocabulary : Vocabulary, optional
        Names allowed (default: what the scenario can produce).
    tick_s : float
        Settlement tick (default: the scenario's).
    """

    def __init__(
        self,
        scenario: Any = None,
        items: Sequence[ExpectItem] | None = None,
        *,
        vocabulary: Vocabulary | None = None,
        tick_s: float | None = None,
        context: _Context | None = None,
    ):
        if items is None:
            items = list(getattr(scenario, "expect", []) or [])
        self.items = list(items)
        if vocabulary is None:
            if scenario is None:
                raise ValueError("give a scenario or a vocabulary")
            vocabulary = scenario_vocabulary(scenario)
        self.vocab = vocabulary
        self.tick_s = float(tick_s if tick_s is not None else scenario.tick_s)
        self.ctx = context or (
            _Context.from_scenario(scenario)
            if scenario is not None
            else _Context(None, "UTC", None)
        )
        self.compiled: list[Checked | ExpectError] = []
        for item in self.items:
            try:
                self.compiled.append(compile_expectation(expect_text(item), vocabulary))
            except ExpectError as exc:
                self.compiled.append(exc)
        self._t: list[float] = []
        self._rows: dict[str, list[float]] = {}
        self._groups: dict[str, dict[str, list[float]]] = {}
        self._bulk: _Data | None = None
        self._events: list[Mapping[str, Any]] = []
        self._live: list[Violation] = []
        self._reported_temporal: set[tuple[int, int]] = set()
        self._now_s = -math.inf

    # ------------------------------------------------------------------ live feed
    def feed_tick(self, t_s: float, row: Mapping[str, float]) -> list[Violation]:
        """Add the row of the tick that starts at ``t_s``; return new violations."""
        t_s = float(t_s)
        n = len(self._t)
        self._t.append(t_s)
        for key, v in row.items():
            if key.startswith("group."):
                _, g, col = key.split(".", 2)
                dest = self._groups.setdefault(g, {}).setdefault(col, [math.nan] * n)
            else:
                dest = self._rows.setdefault(key, [math.nan] * n)
            dest.append(float(v))
        for d in [self._rows, *self._groups.values()]:
            for col in d.values():
                if len(col) < n + 1:
                    col.append(math.nan)
        new: list[Violation] = []
        one = _Data(
            np.array([t_s]),
            {k: np.array(v[-1:]) for k, v in self._rows.items()},
            {g: {k: np.array(v[-1:]) for k, v in d.items()} for g, d in self._groups.items()},
            _Events.empty(),
            {},
            self.tick_s,
        )
        for i, chk in enumerate(self.compiled):
            if isinstance(chk, ExpectError) or not chk.pointwise:
                continue
            try:
                r = evaluate_rule(i, self.items[i], chk, one, self.ctx)
            except ExpectError:
                continue  # reported at finish
            if r.status == FAILED:
                new.append(Violation(i, r.name, r.text, t_s, r.message))
        new += self._advance(t_s + self.tick_s)
        self._live += new
        return new

    def feed_event(self, event: Mapping[str, Any]) -> list[Violation]:
        """Add one event (``time_s``, ``kind``, optional ``source`` and fields)."""
        if "time_s" not in event or "kind" not in event:
            raise ValueError("an event needs 'time_s' and 'kind'")
        self._events.append(dict(event))
        new = self._advance(float(event["time_s"]))
        self._live += new
        return new

    def _advance(self, now_s: float) -> list[Violation]:
        """Temporal rules: report causes whose window closed without their effect."""
        self._now_s = max(self._now_s, now_s)
        new: list[Violation] = []
        temporal = [
            (i, c)
            for i, c in enumerate(self.compiled)
            if isinstance(c, Checked) and c.parsed.temporal is not None
        ]
        if not temporal or not self._events:
            return new
        ev = self._event_table()
        for i, chk in temporal:
            r = evaluate_temporal(i, self.items[i], chk, ev, self._now_s, self.ctx)
            for late in r.values.get("late", []):
                key = (i, hash((late["time_s"], str(late["source"]))))
                if key not in self._reported_temporal:
                    self._reported_temporal.add(key)
                    new.append(Violation(i, r.name, r.text, late["time_s"], r.message))
        return new

    @property
    def live_violations(self) -> list[Violation]:
        return list(self._live)

    # ------------------------------------------------------------------ bulk feed
    def load(
        self,
        t_s: np.ndarray,
        columns: Mapping[str, np.ndarray],
        groups: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        events: pd.DataFrame | None = None,
    ) -> None:
        """Load a whole run at once (the offline path)."""
        self._bulk = _Data(
            np.asarray(t_s, dtype=float),
            {k: np.asarray(v) for k, v in columns.items()},
            {g: {k: np.asarray(v) for k, v in d.items()} for g, d in (groups or {}).items()},
            _Events.empty(),
            {},
            self.tick_s,
        )
        if events is not None and len(events):
            self._events = events.to_dict("records")

    def _event_table(self) -> _Events:
        if not self._events:
            return _Events.empty()
        df = pd.DataFrame.from_records(self._events)
        t = df["time_s"].to_numpy(float)
        order = np.argsort(t, kind="stable")
        df = df.iloc[order].reset_index(drop=True)
        cols = {c: df[c].to_numpy() for c in df.columns if c not in ("time_s", "kind")}
        if "source" in cols:
            cols["source"] = np.array(
                [None if (isinstance(x, float) and math.isnan(x)) else x for x in cols["source"]],
                dtype=object,
            )
        return _Events(df["time_s"].to_numpy(float), df["kind"].astype(str).to_numpy(object), cols)

    def _data(self, kpis: Mapping[str, float]) -> _Data:
        ev = self._event_table()
        if self._bulk is not None:
            d = self._bulk
            return _Data(d.t_s, d.columns, d.groups, ev, kpis, self.tick_s)
        return _Data(
            np.asarray(self._t, dtype=float),
            {k: np.asarray(v, dtype=float) for k, v in self._rows.items()},
            {
                g: {k: np.asarray(v, dtype=float) for k, v in d.items()}
                for g, d in self._groups.items()
            },
            ev,
            kpis,
            self.tick_s,
        )

    # ------------------------------------------------------------------ results
    def finish(
        self, kpis: Mapping[str, float] | None = None, end_s: float | None = None
    ) -> ExpectationReport:
        """Evaluate every expectation on the data fed so far."""
        kpis = dict(kpis or {})
        data = self._data(kpis)
        if end_s is None:
            end_s = (
                float(data.t_s[-1] + self.tick_s)
                if data.n
                else (self._now_s if math.isfinite(self._now_s) else None)
            )
        results: list[Result] = []
        for i, chk in enumerate(self.compiled):
            item = self.items[i]
            if isinstance(chk, ExpectError):
                results.append(
                    Result(
                        i,
                        expect_name(item, i),
                        expect_text(item),
                        ERROR,
                        chk.describe(expect_text(item)),
                    )
                )
                continue
            try:
                if chk.parsed.temporal is not None:
                    results.append(evaluate_temporal(i, item, chk, data.events, end_s, self.ctx))
                else:
                    results.append(evaluate_rule(i, item, chk, data, self.ctx))
            except ExpectError as exc:
                results.append(Result(i, expect_name(item, i), chk.text, ERROR, str(exc)))
        return ExpectationReport(results)


# ----------------------------------------------------------------------------- runs


def run_vocabulary(
    scenario: Any,
    columns: Sequence[str],
    kpis: Mapping[str, float],
    group_columns: Mapping[str, Sequence[str]],
) -> Vocabulary:
    """The exact names of a finished run."""
    return Vocabulary(
        kpis=frozenset(kpis),
        columns=frozenset(columns),
        group_columns={g: frozenset(c) for g, c in group_columns.items()},
        scenario=scenario.model_dump(mode="json"),
        exact=True,
    )


def _events_frame(events: Any) -> pd.DataFrame | None:
    if events is None:
        return None
    df = events.to_pandas() if hasattr(events, "to_pandas") else pd.DataFrame(events)
    return df.drop(columns=[c for c in ("time",) if c in df.columns])


def control_events_frame(table: Any) -> pd.DataFrame:
    """Events of a HIL run (``bridge_events.parquet``: ``sim_time_s, kind, subject,
    detail``) in the checker's layout (``time_s, kind, source``)."""
    df = table.to_pandas() if hasattr(table, "to_pandas") else pd.DataFrame(table)
    return pd.DataFrame(
        {
            "time_s": df["sim_time_s"].to_numpy(float),
            "kind": df["kind"].astype(str).to_numpy(),
            "source": df["subject"].astype(object).where(df["subject"].astype(bool), None),
        }
    )


def check_run(
    scenario: Any,
    timeseries: Any,
    events: Any,
    kpis: Mapping[str, float],
    groups: Any = None,
    control_events: Any = None,
) -> ExpectationReport:
    """Check ``scenario.expect`` against a finished run's tables (pyarrow or pandas).

    Names are resolved exactly against this run's KPIs and columns.  ``control_events``
    (``bridge_events.parquet`` of a HIL run) join the EV events for temporal rules.
    """
    ts = timeseries.to_pandas() if hasattr(timeseries, "to_pandas") else timeseries
    t = pd.DatetimeIndex(ts["time"])
    start = pd.Timestamp(scenario.start)
    t_s = ((t - start) / pd.Timedelta(seconds=1)).to_numpy(float)
    cols = {c: ts[c].to_numpy() for c in ts.columns if c != "time"}
    gcols: dict[str, dict[str, np.ndarray]] = {}
    if groups is not None:
        gd = groups.to_pandas() if hasattr(groups, "to_pandas") else groups
        if len(gd):
            for name, part in gd.groupby("group", sort=False):
                gcols[str(name)] = {
                    c: part[c].to_numpy() for c in part.columns if c not in ("time", "group")
                }
    for g in scenario.sites:  # groups with no rows still exist (all zero columns)
        gcols.setdefault(g.name, {})
    vocab = run_vocabulary(scenario, list(cols), kpis, {g: list(c) for g, c in gcols.items()})
    checker = ExpectationChecker(scenario, vocabulary=vocab)
    ev = _events_frame(events)
    if control_events is not None:
        ctl = control_events_frame(control_events)
        ev = ctl if ev is None else pd.concat([ev, ctl], ignore_index=True)
    checker.load(t_s, cols, gcols, ev)
    return checker.finish(kpis, end_s=scenario.duration_s)


def check_results_dir(path: Any) -> ExpectationReport:
    """Re-check a run directory's expectations from its files (manifest + Parquet)."""
    import json
    from pathlib import Path

    from cps_sim.scenario.schema import Scenario

    d = Path(path)
    manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    scenario = Scenario.model_validate(manifest["scenario"])
    ts = pd.read_parquet(d / "timeseries.parquet")
    ev = pd.read_parquet(d / "events.parquet") if (d / "events.parquet").exists() else None
    groups = (
        pd.read_parquet(d / "timeseries_groups.parquet")
        if (d / "timeseries_groups.parquet").exists()
        else None
    )
    kpis = json.loads((d / "kpis.json").read_text(encoding="utf-8"))
    ctl = (
        pd.read_parquet(d / "bridge_events.parquet")
        if (d / "bridge_events.parquet").exists()
        else None
    )
    return check_run(scenario, ts, ev, kpis, groups, ctl)
