"""The ``expect:`` expression language: tokenizer, parser and static checker.

A small, safe language (no Python ``eval``; a hand-written recursive-descent
parser over a fixed grammar) in which a scenario states what its run must
show.  Evaluation lives in :mod:`cps_sim.experiment.expect`; this module only
knows syntax, names and types, so a scenario can be validated before it runs.

Grammar (keywords are lower case; ``#`` comments are not allowed)::

    expectation := temporal | rule
    rule        := expr [ "=>" expr ] [ "whenever" expr ] [ "for" NUMBER "%" "of" DOMAIN ]
    temporal    := EVENT "within" NUMBER UNIT "of" EVENT
    expr        := and ( "or" and )*
    and         := not ( "and" not )*
    not         := "not" not | compare
    compare     := sum ( ("<"|"<="|">"|">="|"=="|"!=") sum )*      (chains: 0 <= x <= 1)
    sum         := term ( ("+"|"-") term )*
    term        := unary ( ("*"|"/") unary )*
    unary       := "-" unary | atom
    atom        := NUMBER | STRING | "true" | "false" | call | name | "(" expr ")"
    call        := FUNCTION "(" expr [ "where" expr ] [ "," NUMBER ] ")"
    name        := IDENT ( "." IDENT | "[" INTEGER "]" )*

Names (what a value can be):

* ``kpi.<name>`` — a KPI of the run (``kpis.json``), one number;
* ``<column>`` — a column of ``timeseries.parquet``, one value per settlement
  tick; a column ending in ``_w`` can be written in kW (``grid_import_kw``) or
  MW (``system_demand_mw``);
* ``group.<group>.<column>`` — a column of one site group
  (``timeseries_groups.parquet``), same unit rules;
* derived per-tick values: ``hour`` (local hour of day, 0..24), ``weekday``
  (0 = Monday), ``day_off`` (weekend or public holiday), ``day`` (days since
  the start), ``islanded`` (the whole tick lies in a CEMS outage window);
* ``ev.soc_at_departure``, ``ev.unmet_at_departure_kwh``,
  ``ev.trip_energy_kwh`` (one value per EV departure), ``ev.soc_at_arrival``
  (one per arrival);
* ``scenario.<path>`` — a value of the scenario itself
  (``scenario.control.ev_strategy``, ``scenario.sites[0].count``).

Functions: aggregates ``max min mean sum std median count share any all``,
``quantile(x, q)`` and ``integral_h(x)`` (a series integrated over time in hours: kW
give kWh) turn a series into one number, optionally over a subset:
``mean(system_wind_mw where day >= 2 and day < 5)``; ``abs(x)`` works
element-wise.

Meaning of a rule: a rule whose value is one number must be true; a rule over
ticks must hold at every tick (``whenever``/``=>`` restrict it to the ticks —
or departures — where the condition holds, and aggregates inside it see only
those); ``for P% of ticks|departures|arrivals`` asks for a share instead of
all.  ``B within T of A``: every event A is followed by an event B within T
(matched per ``source`` when both events carry one).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KEYWORDS = frozenset(
    {"and", "or", "not", "whenever", "where", "for", "of", "within", "true", "false", "null"}
)
AGGREGATES = frozenset(
    {
        "max",
        "min",
        "mean",
        "sum",
        "std",
        "median",
        "count",
        "share",
        "any",
        "all",
        "quantile",
        "integral_h",
    }
)
ELEMENTWISE = frozenset({"abs"})
FUNCTIONS = AGGREGATES | ELEMENTWISE
COMPARE_OPS = ("<=", ">=", "==", "!=", "<", ">")

TICK = "tick"
SCALAR = "scalar"
DOMAINS = {"ticks": TICK, "departures": "departures", "arrivals": "arrivals"}

# per-event fields: name -> (domain, events column, scale)
EVENT_FIELDS: dict[str, tuple[str, str, float]] = {
    "soc_at_departure": ("departures", "soc", 1.0),
    "unmet_at_departure_kwh": ("departures", "unmet_wh", 1e-3),
    "trip_energy_kwh": ("departures", "trip_energy_wh", 1e-3),
    "soc_at_arrival": ("arrivals", "soc", 1.0),
}
DERIVED_COLUMNS = {
    "hour": "num",
    "weekday": "num",
    "day_off": "bool",
    "day": "num",
    "islanded": "bool",
}
UNIT_SUFFIXES = {"_kw": 1e-3, "_mw": 1e-6}

# Event kinds of temporal expectations, and the phrases that name them.  HIL/bridge
# events use these kinds (``kind`` field of an event record).
EVENT_KINDS = (
    "commands_lost",
    "commands_restored",
    "fallback",
    "fallback_end",
    "arrival",
    "departure",
    "setpoint_rejected",
    "device_offline",
    "device_online",
    # bridge_events.parquet of cps-sim hil (cps_sim/bridge/runtime.py, transport.py)
    "available",
    "unavailable",
    "stale",
    "rejected",
    "setpoint_clamped",
    "setpoint_not_sent",
    "disconnected",
    "reconnected",
    "connect_failed",
    "clock_skew",
)
EVENT_PHRASES = {
    "losing commands": "commands_lost",
    "losing command": "commands_lost",
    "lost commands": "commands_lost",
    "command loss": "commands_lost",
    "restoring commands": "commands_restored",
    "commands restored": "commands_restored",
    "fallback": "fallback",
    "entering fallback": "fallback",
    "fallback end": "fallback_end",
    "leaving fallback": "fallback_end",
    "arrival": "arrival",
    "departure": "departure",
    "going offline": "device_offline",
    "coming online": "device_online",
    **{k: k for k in EVENT_KINDS},
}
TIME_UNITS = {
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


class ExpectError(ValueError):
    """A problem in one expectation, at character ``pos`` (0-based) of its text."""

    def __init__(self, message: str, pos: int | None = None):
        self.pos = pos
        super().__init__(message)

    def describe(self, text: str) -> str:
        if self.pos is None or self.pos == 0:
            return str(self)
        return f"{self} (at character {self.pos + 1}: {text[: self.pos]!r} ^ {text[self.pos :]!r})"


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # num | str | name | op | end
    text: str
    pos: int
    value: Any = None


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>"[^"\\]*"|'[^'\\]*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|=>|[<>+\-*/(),.\[\]%])
""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = " (use == to compare)" if ch == "=" else ""
            raise ExpectError(f"unexpected character {ch!r}{hint}", pos)
        kind = m.lastgroup
        tok = m.group()
        if kind == "num":
            out.append(Token("num", tok, pos, float(tok)))
        elif kind == "str":
            out.append(Token("str", tok, pos, tok[1:-1]))
        elif kind in ("name", "op"):
            out.append(Token(kind, tok, pos))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


# ----------------------------------------------------------------------------- AST


@dataclass(eq=False)
class Node:
    start: int
    end: int


@dataclass(eq=False)
class Num(Node):
    value: float


@dataclass(eq=False)
class Str(Node):
    value: str


@dataclass(eq=False)
class Bool(Node):
    value: bool


@dataclass(eq=False)
class Null(Node):
    value: None = None


class _Block:
    """A scenario path that names a block (mapping or list): comparable with null only."""

    def __repr__(self) -> str:
        return "<block>"


BLOCK = _Block()


@dataclass(eq=False)
class Ref(Node):
    parts: tuple[str | int, ...]


@dataclass(eq=False)
class Call(Node):
    fn: str
    args: tuple[Node, ...]
    where: Node | None = None  # aggregate only the ticks / events where this holds


@dataclass(eq=False)
class Neg(Node):
    x: Node


@dataclass(eq=False)
class Arith(Node):
    op: str
    a: Node
    b: Node


@dataclass(eq=False)
class Compare(Node):
    ops: tuple[str, ...]
    items: tuple[Node, ...]


@dataclass(eq=False)
class Logic(Node):
    op: str  # and | or
    items: tuple[Node, ...]


@dataclass(eq=False)
class Not(Node):
    x: Node


@dataclass(frozen=True)
class Temporal:
    effect: str  # event kind that must follow
    window_s: float
    cause: str  # event kind that starts the clock


@dataclass(eq=False)
class Parsed:
    """One parsed expectation."""

    text: str
    body: Node | None = None
    when: Node | None = None
    share: float | None = None  # 0..1 with ``for P% of DOMAIN``
    domain: str | None = None  # ticks | departures | arrivals
    temporal: Temporal | None = None

    def source(self, node: Node) -> str:
        return self.text[node.start : node.end].strip()


def _ref_text(parts: Iterable[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + p
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def at_kw(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text == word

    def expect_op(self, text: str) -> Token:
        if not self.at("op", text):
            raise ExpectError(f"expected {text!r}, found {self._shown()}", self.tok.pos)
        return self.take()

    def _shown(self) -> str:
        return "the end" if self.tok.kind == "end" else repr(self.tok.text)

    # grammar
    def parse(self) -> Parsed:
        if not self.text.strip():
            raise ExpectError("empty expectation", 0)
        names = [t.text for t in self.toks if t.kind == "name"]
        if "within" in names:
            return self._temporal()
        p = Parsed(self.text)
        first = self.expr()
        if self.at("op", "=>"):
            self.take()
            p.when, p.body = first, self.expr()
        else:
            p.body = first
        if self.at_kw("whenever"):
            self.take()
            cond = self.expr()
            p.when = (
                cond if p.when is None else Logic(p.when.start, cond.end, "and", (p.when, cond))
            )
        if self.at_kw("for"):
            self.take()
            if not self.at("num"):
                raise ExpectError(
                    f"expected a percentage after 'for', found {self._shown()}", self.tok.pos
                )
            pct_tok = self.take()
            self.expect_op("%")
            if not 0 < pct_tok.value <= 100:
                raise ExpectError(
                    f"percentage must be in (0, 100], got {pct_tok.text}", pct_tok.pos
                )
            if not self.at_kw("of"):
                raise ExpectError(
                    f"expected 'of' after '{pct_tok.text}%', found {self._shown()}", self.tok.pos
                )
            self.take()
            dom = self.tok
            if dom.kind != "name" or dom.text not in DOMAINS:
                raise ExpectError(
                    f"expected one of {', '.join(DOMAINS)} after 'of', found {self._shown()}",
                    dom.pos,
                )
            self.take()
            p.share, p.domain = pct_tok.value / 100.0, dom.text
        if not self.at("end"):
            raise ExpectError(f"unexpected {self._shown()}", self.tok.pos)
        return p

    def _temporal(self) -> Parsed:
        words: list[Token] = []
        while not self.at_kw("within"):
            t = self.take()
            if t.kind != "name":
                raise ExpectError(
                    f"a temporal expectation reads '<event> within <time> of "
                    f"<event>'; unexpected {t.text!r}",
                    t.pos,
                )
            words.append(t)
        effect = self._event_kind(words, self.tok.pos)
        self.take()  # within
        if not self.at("num"):
            raise ExpectError(
                f"expected a duration after 'within', found {self._shown()}", self.tok.pos
            )
        amount = self.take()
        unit = self.tok
        if unit.kind != "name" or unit.text not in TIME_UNITS:
            raise ExpectError(
                f"expected a time unit ({', '.join(sorted(TIME_UNITS))}) after "
                f"{amount.text}, found {self._shown()}",
                unit.pos,
            )
        self.take()
        if not self.at_kw("of"):
            raise ExpectError(
                f"expected 'of' after the duration, found {self._shown()}", self.tok.pos
            )
        self.take()
        words = []
        start = self.tok.pos
        while not self.at("end"):
            t = self.take()
            if t.kind != "name":
                raise ExpectError(f"unexpected {t.text!r} in an event name", t.pos)
            words.append(t)
        cause = self._event_kind(words, start)
        window = amount.value * TIME_UNITS[unit.text]
        return Parsed(self.text, temporal=Temporal(effect, window, cause))

    @staticmethod
    def _event_kind(words: list[Token], pos: int) -> str:
        if not words:
            raise ExpectError("missing event name", pos)
        phrase = " ".join(w.text for w in words)
        kind = EVENT_PHRASES.get(phrase) or EVENT_PHRASES.get(phrase.replace(" ", "_"))
        if kind is None:
            hint = difflib.get_close_matches(phrase, list(EVENT_PHRASES), n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ExpectError(
                f"unknown event {phrase!r}{more} (known events: {', '.join(EVENT_KINDS)})",
                words[0].pos,
            )
        return kind

    def expr(self) -> Node:
        items = [self.and_()]
        while self.at_kw("or"):
            self.take()
            items.append(self.and_())
        return (
            items[0]
            if len(items) == 1
            else Logic(items[0].start, items[-1].end, "or", tuple(items))
        )

    def and_(self) -> Node:
        items = [self.not_()]
        while self.at_kw("and"):
            self.take()
            items.append(self.not_())
        return (
            items[0]
            if len(items) == 1
            else Logic(items[0].start, items[-1].end, "and", tuple(items))
        )

    def not_(self) -> Node:
        if self.at_kw("not"):
            t = self.take()
            x = self.not_()
            return Not(t.pos, x.end, x)
        return self.compare()

    def compare(self) -> Node:
        items = [self.sum_()]
        ops: list[str] = []
        while self.tok.kind == "op" and self.tok.text in COMPARE_OPS:
            ops.append(self.take().text)
            items.append(self.sum_())
        if not ops:
            return items[0]
        return Compare(items[0].start, items[-1].end, tuple(ops), tuple(items))

    def sum_(self) -> Node:
        a = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.take().text
            b = self.term()
            a = Arith(a.start, b.end, op, a, b)
        return a

    def term(self) -> Node:
        a = self.unary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self.take().text
            b = self.unary()
            a = Arith(a.start, b.end, op, a, b)
        return a

    def unary(self) -> Node:
        if self.at("op", "-"):
            t = self.take()
            x = self.unary()
            return Neg(t.pos, x.end, x)
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if t.kind == "num":
            self.take()
            if self.at("op", "%"):
                raise ExpectError(
                    "a percentage is only allowed in 'for P% of ...'; write "
                    f"{t.value / 100:g} for {t.text}%",
                    self.tok.pos,
                )
            return Num(t.pos, t.pos + len(t.text), t.value)
        if t.kind == "str":
            self.take()
            return Str(t.pos, t.pos + len(t.text), t.value)
        if t.kind == "op" and t.text == "(":
            self.take()
            x = self.expr()
            close = self.expect_op(")")
            x.start, x.end = t.pos, close.pos + 1
            return x
        if t.kind == "name":
            if t.text in ("true", "false"):
                self.take()
                return Bool(t.pos, t.pos + len(t.text), t.text == "true")
            if t.text == "null":
                self.take()
                return Null(t.pos, t.pos + 4)
            if t.text in KEYWORDS:
                raise ExpectError(f"unexpected keyword {t.text!r}", t.pos)
            self.take()
            if self.at("op", "("):
                return self.call(t)
            parts: list[str | int] = [t.text]
            end = t.pos + len(t.text)
            while self.tok.kind == "op" and self.tok.text in ".[":
                if self.take().text == ".":
                    n = self.tok
                    if n.kind != "name":
                        raise ExpectError(
                            f"expected a name after '.', found {self._shown()}", n.pos
                        )
                    self.take()
                    parts.append(n.text)
                    end = n.pos + len(n.text)
                else:
                    n = self.tok
                    if n.kind != "num" or n.value != int(n.value):
                        raise ExpectError("expected a list index", n.pos)
                    self.take()
                    parts.append(int(n.value))
                    end = self.expect_op("]").pos + 1
            return Ref(t.pos, end, tuple(parts))
        raise ExpectError(f"expected a value, found {self._shown()}", t.pos)

    def call(self, name: Token) -> Node:
        if name.text not in FUNCTIONS:
            hint = difflib.get_close_matches(name.text, sorted(FUNCTIONS), n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ExpectError(
                f"unknown function {name.text!r}{more} (functions: {', '.join(sorted(FUNCTIONS))})",
                name.pos,
            )
        self.expect_op("(")
        args = [self.expr()]
        where = None
        if self.at_kw("where"):
            if name.text in ELEMENTWISE:
                raise ExpectError(
                    f"{name.text}() is element-wise; 'where' filters aggregates", self.tok.pos
                )
            self.take()
            where = self.expr()
        while self.at("op", ","):
            self.take()
            args.append(self.expr())
        close = self.expect_op(")")
        want = 2 if name.text == "quantile" else 1
        if len(args) != want:
            raise ExpectError(f"{name.text}() takes {want} argument(s), got {len(args)}", name.pos)
        if name.text == "quantile":
            q = args[1]
            if not isinstance(q, Num) or not 0 <= q.value <= 1:
                raise ExpectError("quantile(x, q): q must be a number in [0, 1]", q.start)
        return Call(name.pos, close.pos + 1, name.text, tuple(args), where)


def parse(text: str) -> Parsed:
    """Parse one expectation (syntax only); raises :class:`ExpectError`."""
    return _Parser(text).parse()


# ----------------------------------------------------------------------------- names & types


@dataclass(frozen=True)
class Type:
    kind: str  # scalar | tick | departures | arrivals
    dtype: str  # num | bool | str


@dataclass(frozen=True)
class Resolved:
    """What a name refers to."""

    source: str  # kpi | column | group | derived | event | scenario
    key: str  # KPI / column / derived / event-column name
    scale: float = 1.0
    group: str | None = None
    value: Any = None  # scenario constants
    domain: str | None = None


@dataclass
class Vocabulary:
    """The names an expectation may use.

    ``exact`` vocabularies come from a finished run (every KPI and column is
    known); otherwise names are also accepted when they start with one of the
    ``*_prefixes`` of a feature the scenario has (exact names known after the
    run only).
    """

    kpis: frozenset[str]
    columns: frozenset[str]
    group_columns: Mapping[str, frozenset[str]] = field(default_factory=dict)
    kpi_prefixes: tuple[str, ...] = ()
    column_prefixes: tuple[str, ...] = ()
    scenario: Mapping[str, Any] | None = None
    exact: bool = False

    def has_kpi(self, name: str) -> bool:
        return name in self.kpis or (
            not self.exact and name.startswith(self.kpi_prefixes) and bool(self.kpi_prefixes)
        )

    def has_column(self, name: str, cols: frozenset[str] | None = None) -> bool:
        cols = self.columns if cols is None else cols
        return name in cols or (
            not self.exact and bool(self.column_prefixes) and name.startswith(self.column_prefixes)
        )


def _suggest(name: str, options: Iterable[str]) -> str:
    hint = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _unit_aliases(cols: Iterable[str]) -> list[str]:
    out = []
    for c in cols:
        if c.endswith("_w"):
            out += [c[:-2] + s for s in UNIT_SUFFIXES]
    return out


def resolve_column(
    name: str,
    vocab: Vocabulary,
    node: Node,
    cols: frozenset[str] | None = None,
    group: str | None = None,
) -> Resolved:
    src = "group" if group is not None else "column"
    if group is None and name in DERIVED_COLUMNS:
        return Resolved("derived", name)
    if vocab.has_column(name, cols):
        return Resolved(src, name, 1.0, group)
    for suffix, scale in UNIT_SUFFIXES.items():
        if name.endswith(suffix):
            base = name[: -len(suffix)] + "_w"
            if vocab.has_column(base, cols):
                return Resolved(src, base, scale, group)
    known = set(vocab.columns if cols is None else cols)
    options = known | set(_unit_aliases(known)) | (set(DERIVED_COLUMNS) if group is None else set())
    where = f" of site group {group!r}" if group is not None else ""
    raise ExpectError(f"unknown column {name!r}{where}{_suggest(name, options)}", node.start)


def _scenario_value(node: Ref, scenario: Mapping[str, Any] | None) -> Any:
    if scenario is None:
        raise ExpectError("scenario.* values are not available here", node.start)
    cur: Any = scenario
    for i, part in enumerate(node.parts[1:], start=1):
        if isinstance(part, int):
            if not isinstance(cur, list) or not -len(cur) <= part < len(cur):
                raise ExpectError(
                    f"{_ref_text(node.parts[: i + 1])}: no such list item", node.start
                )
            cur = cur[part]
        else:
            if not isinstance(cur, Mapping) or part not in cur:
                opts = list(cur) if isinstance(cur, Mapping) else []
                raise ExpectError(
                    f"{_ref_text(node.parts[: i + 1])}: no such scenario field"
                    f"{_suggest(part, opts)}",
                    node.start,
                )
            cur = cur[part]
    if isinstance(cur, (Mapping, list)):
        return BLOCK
    return cur


def resolve_ref(node: Ref, vocab: Vocabulary) -> Resolved:
    parts = node.parts
    head = parts[0]
    if head == "kpi":
        if len(parts) != 2 or not isinstance(parts[1], str):
            raise ExpectError("write a KPI as kpi.<name>, e.g. kpi.self_sufficiency", node.start)
        if not vocab.has_kpi(parts[1]):
            raise ExpectError(
                f"unknown KPI {parts[1]!r}{_suggest(parts[1], vocab.kpis)}", node.start
            )
        return Resolved("kpi", parts[1])
    if head == "ev":
        if len(parts) != 2 or parts[1] not in EVENT_FIELDS:
            shown = _ref_text(parts)
            raise ExpectError(
                f"unknown EV event field {shown!r}"
                f"{_suggest(str(parts[-1]), EVENT_FIELDS)} (fields: "
                f"{', '.join('ev.' + f for f in EVENT_FIELDS)})",
                node.start,
            )
        dom, col, scale = EVENT_FIELDS[str(parts[1])]
        return Resolved("event", col, scale, domain=dom)
    if head == "scenario":
        if len(parts) < 2:
            raise ExpectError(
                "write scenario.<path>, e.g. scenario.control.ev_strategy", node.start
            )
        return Resolved(
            "scenario", _ref_text(parts[1:]), value=_scenario_value(node, vocab.scenario)
        )
    if head == "group":
        if len(parts) != 3 or not all(isinstance(p, str) for p in parts):
            raise ExpectError("write a site group's column as group.<group>.<column>", node.start)
        g = str(parts[1])
        if g not in vocab.group_columns:
            raise ExpectError(
                f"unknown site group {g!r}{_suggest(g, vocab.group_columns)}", node.start
            )
        return resolve_column(str(parts[2]), vocab, node, vocab.group_columns[g], g)
    if len(parts) != 1 or not isinstance(head, str):
        raise ExpectError(
            f"unknown name {_ref_text(parts)!r} (names are kpi.<name>, "
            "<column>, group.<group>.<column>, ev.<field> or "
            "scenario.<path>)",
            node.start,
        )
    return resolve_column(head, vocab, node)


def _combine(a: str, b: str, node: Node, text: str) -> str:
    if a == SCALAR:
        return b
    if b == SCALAR or a == b:
        return a
    raise ExpectError(
        f"{text[node.start : node.end].strip()!r} mixes values per {a} with values per {b}",
        node.start,
    )


@dataclass
class Checked:
    """A parsed expectation with every name resolved and every node typed."""

    parsed: Parsed
    names: dict[int, Resolved]  # id(Ref) -> resolution
    types: dict[int, Type]  # id(node) -> type
    kind: str  # result kind of the body: scalar | tick | departures | arrivals | temporal
    pointwise: bool  # body and condition hold no aggregate and no KPI (checkable per tick)

    @property
    def text(self) -> str:
        return self.parsed.text


def check(parsed: Parsed, vocab: Vocabulary) -> Checked:
    """Resolve names and check types of a parsed expectation; raises :class:`ExpectError`."""
    names: dict[int, Resolved] = {}
    types: dict[int, Type] = {}
    text = parsed.text
    aggregates: list[Node] = []

    def src(n: Node) -> str:
        return text[n.start : n.end].strip()

    def visit(n: Node) -> Type:
        t = _visit(n)
        types[id(n)] = t
        return t

    def need(t: Type, dtype: str, n: Node, what: str) -> None:
        if t.dtype != dtype:
            want = {"num": "a number", "bool": "a condition (true/false)", "str": "a text"}[dtype]
            raise ExpectError(f"{what}: {text[n.start : n.end].strip()!r} must be {want}", n.start)

    def _visit(n: Node) -> Type:
        if isinstance(n, Num):
            return Type(SCALAR, "num")
        if isinstance(n, Str):
            return Type(SCALAR, "str")
        if isinstance(n, Bool):
            return Type(SCALAR, "bool")
        if isinstance(n, Null):
            return Type(SCALAR, "null")
        if isinstance(n, Ref):
            r = resolve_ref(n, vocab)
            names[id(n)] = r
            if r.source == "kpi":
                aggregates.append(n)
                return Type(SCALAR, "num")
            if r.source == "scenario":
                v = r.value
                if v is BLOCK:
                    return Type(SCALAR, "block")
                if v is None:
                    return Type(SCALAR, "null")
                if isinstance(v, bool):
                    return Type(SCALAR, "bool")
                if isinstance(v, (int, float)):
                    return Type(SCALAR, "num")
                return Type(SCALAR, "str")  # str and None
            if r.source == "event":
                return Type(r.domain or "departures", "num")
            if r.source == "derived":
                return Type(TICK, DERIVED_COLUMNS[r.key])
            return Type(TICK, "num")
        if isinstance(n, Neg):
            t = visit(n.x)
            need(t, "num", n.x, "'-'")
            return t
        if isinstance(n, Arith):
            ta, tb = visit(n.a), visit(n.b)
            need(ta, "num", n.a, f"'{n.op}'")
            need(tb, "num", n.b, f"'{n.op}'")
            return Type(_combine(ta.kind, tb.kind, n, text), "num")
        if isinstance(n, Compare):
            ts = [visit(x) for x in n.items]
            kind = SCALAR
            for i, op in enumerate(n.ops):
                a, b = ts[i], ts[i + 1]
                if "null" in (a.dtype, b.dtype):
                    if op not in ("==", "!="):
                        raise ExpectError(f"'{op}' cannot compare with null", n.items[i].start)
                    if a.kind != SCALAR or b.kind != SCALAR:
                        raise ExpectError(
                            "only scenario values compare with null", n.items[i].start
                        )
                    continue
                for side, ty in ((n.items[i], a), (n.items[i + 1], b)):
                    if ty.dtype == "block":
                        raise ExpectError(
                            f"{src(side)} is a block, not a single value (a block compares "
                            "only with null: scenario.vpp != null)",
                            side.start,
                        )
                if a.dtype != b.dtype:
                    left, right = src(n.items[i]), src(n.items[i + 1])
                    raise ExpectError(
                        f"cannot compare {left!r} ({a.dtype}) with {right!r} ({b.dtype})",
                        n.items[i + 1].start,
                    )
                if a.dtype != "num" and op not in ("==", "!="):
                    raise ExpectError(
                        f"'{op}' needs numbers; texts and conditions compare only with == and !=",
                        n.items[i].start,
                    )
                kind = _combine(kind, _combine(a.kind, b.kind, n, text), n, text)
            return Type(kind, "bool")
        if isinstance(n, Logic):
            kind = SCALAR
            for x in n.items:
                t = visit(x)
                need(t, "bool", x, f"'{n.op}'")
                kind = _combine(kind, t.kind, n, text)
            return Type(kind, "bool")
        if isinstance(n, Not):
            t = visit(n.x)
            need(t, "bool", n.x, "'not'")
            return t
        if isinstance(n, Call):
            t = visit(n.args[0])
            if n.fn == "quantile":
                visit(n.args[1])
            if n.fn in ELEMENTWISE:
                need(t, "num", n.args[0], f"{n.fn}()")
                return t
            aggregates.append(n)
            if n.where is not None:
                tw = visit(n.where)
                need(tw, "bool", n.where, "'where'")
                if tw.kind not in (SCALAR, t.kind):
                    raise ExpectError(
                        f"the 'where' condition is per {tw.kind} but "
                        f"{src(n.args[0])!r} is per {t.kind}",
                        n.where.start,
                    )
            if t.kind == SCALAR:
                raise ExpectError(
                    f"{n.fn}() aggregates a series (a column, a site group's "
                    f"column or an ev.* field); "
                    f"{text[n.args[0].start : n.args[0].end].strip()!r} is a "
                    "single value",
                    n.start,
                )
            if n.fn in ("count", "share", "any", "all"):
                need(t, "bool", n.args[0], f"{n.fn}()")
            else:
                need(t, "num", n.args[0], f"{n.fn}()")
            if n.fn == "integral_h" and t.kind != TICK:
                raise ExpectError(
                    "integral_h() integrates a per-tick column over time (kW -> kWh)", n.start
                )
            return Type(SCALAR, "bool" if n.fn in ("any", "all") else "num")
        raise TypeError(type(n).__name__)  # pragma: no cover

    if parsed.temporal is not None:
        return Checked(parsed, names, types, "temporal", pointwise=False)
    assert parsed.body is not None
    if parsed.when is not None:
        visit(parsed.when)
        if _const_value(parsed.when, names) is False:
            # the rule does not apply to this scenario: its body may name KPIs and columns
            # of features the scenario lacks (kpi.vpp_* with vpp: null); syntax and types
            # are still checked
            vocab = Vocabulary(
                kpis=vocab.kpis,
                columns=vocab.columns,
                group_columns=vocab.group_columns,
                kpi_prefixes=("",),
                column_prefixes=("",),
                scenario=vocab.scenario,
                exact=False,
            )
    body = visit(parsed.body)
    need(body, "bool", parsed.body, "an expectation")
    kind = body.kind
    if parsed.when is not None:
        w = visit(parsed.when)
        need(w, "bool", parsed.when, "a condition")
        if w.kind not in (SCALAR, kind) and kind != SCALAR:
            raise ExpectError(
                f"the condition is per {w.kind} but the expectation is per {kind}",
                parsed.when.start,
            )
    if parsed.domain is not None:
        dom = DOMAINS[parsed.domain]
        if body.kind != dom:
            raise ExpectError(
                f"'for ... of {parsed.domain}' needs an expectation per "
                f"{'tick' if dom == TICK else dom[:-1]}; this one is "
                f"{'a single value' if body.kind == SCALAR else 'per ' + body.kind}",
                parsed.body.start,
            )
    pointwise = kind == TICK and parsed.domain is None and not aggregates
    return Checked(parsed, names, types, kind, pointwise)


class _NotConstant(Exception):
    pass


def _const_value(node: Node, names: Mapping[int, Resolved]) -> Any:
    """Value of a condition made of literals and scenario values only, else None."""

    def ev(n: Node) -> Any:
        if isinstance(n, (Num, Str, Bool, Null)):
            return n.value
        if isinstance(n, Ref):
            r = names.get(id(n))
            if r is None or r.source != "scenario":
                raise _NotConstant
            return r.value
        if isinstance(n, Not):
            return not ev(n.x)
        if isinstance(n, Logic):
            vals = [bool(ev(x)) for x in n.items]
            return all(vals) if n.op == "and" else any(vals)
        if isinstance(n, Compare):
            vals = [ev(x) for x in n.items]
            ok = True
            for op, a, b in zip(n.ops, vals, vals[1:], strict=False):
                if op == "==":
                    ok &= a == b
                elif op == "!=":
                    ok &= a != b
                elif op == "<":
                    ok &= a < b
                elif op == "<=":
                    ok &= a <= b
                elif op == ">":
                    ok &= a > b
                else:
                    ok &= a >= b
            return bool(ok)
        raise _NotConstant

    try:
        return ev(node)
    except _NotConstant:
        return None


def compile_expectation(text: str, vocab: Vocabulary) -> Checked:
    return check(parse(text), vocab)


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
