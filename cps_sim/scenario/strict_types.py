"""Kinds of values checked strictly before pydantic sees them (issue 10 item 8).

Pydantic's lax mode turns ``true`` into ``1`` for a count and ``"yes"`` into
``True`` for a flag; YAML 1.1 turns ``off``/``on``/``yes``/``no`` into
booleans.  The loader reads YAML with YAML 1.2 booleans (only ``true`` and
``false``; see :mod:`cps_sim.scenario.loader`), and :func:`kind_issues` walks
the raw data along the schema's annotations first:

* a ``bool`` field takes only ``true`` or ``false``;
* a number field (``int``, ``float``, a distribution) never takes a boolean;
* a text or choice field never takes a boolean (``ev_strategy: off`` is the
  text ``"off"``; ``ev_strategy: false`` is refused with a hint to quote it);
* a number field never takes text (``tick_s: "900"`` is refused: pydantic would
  read the text as a number);
* a date-time field never takes a number, nor text that is a number (pydantic
  would read it as seconds since 1970).

It follows every model, list, dict, ``Optional`` and union of the schema, so
a field added anywhere in the schema is covered without extra code.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

from cps_sim.core.errors import short_repr

Loc = tuple[str | int, ...]


def _per_annotation(fn: Any) -> Any:
    """Memoise a pure function of one annotation (by identity: annotations need not be
    hashable; the cache keeps each one alive, so an id is never reused).  The walk asks
    the same questions of the same few hundred annotations for every value of every
    run of a sweep."""
    cache: dict[int, tuple[Any, Any]] = {}

    @functools.wraps(fn)
    def wrapper(annotation: Any) -> Any:
        hit = cache.get(id(annotation))
        if hit is not None and hit[0] is annotation:
            return hit[1]
        result = fn(annotation)
        cache[id(annotation)] = (annotation, result)
        return result

    return wrapper


@_per_annotation
def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


@_per_annotation
def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    """The members of a union (nested unions flattened), or None for another type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for a in typing.get_args(annotation):
            a = _strip(a)
            inner = _union_args(a)
            out.extend(inner if inner is not None else [a])
        return tuple(out)
    return None


@_per_annotation
def accepts_bool(annotation: Any) -> bool:
    """Whether a field of this type may hold a boolean."""
    annotation = _strip(annotation)
    if annotation is bool or annotation is Any or annotation is object:
        return True
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    args = _union_args(annotation)
    if args is not None:
        return any(accepts_bool(a) for a in args)
    return False


@_per_annotation
def _bool_only(annotation: Any) -> bool:
    """``bool`` or ``bool | None``."""
    annotation = _strip(annotation)
    if annotation is bool:
        return True
    args = _union_args(annotation)
    return args is not None and set(args) <= {bool, type(None)} and bool in args


_NUMBERS = (int, float)
_TIMES = (_dt.datetime, _dt.date, _dt.time)


@_per_annotation
def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union without ``None`` (the annotation alone when not a union)."""
    annotation = _strip(annotation)
    args = _union_args(annotation)
    return tuple(a for a in (args if args is not None else (annotation,)) if a is not type(None))


@_per_annotation
def _numbers_only(annotation: Any) -> bool:
    """A field that takes numbers (or a distribution mapping) and no text."""
    members = _members(annotation)
    if not members or not any(a in _NUMBERS for a in members):
        return False
    for a in members:
        if a in _NUMBERS or (isinstance(a, type) and issubclass(a, BaseModel)):
            continue
        if typing.get_origin(a) is Literal and not any(
            isinstance(x, str) for x in typing.get_args(a)
        ):
            continue
        return False
    return True


@_per_annotation
def _times_only(annotation: Any) -> bool:
    members = _members(annotation)
    return bool(members) and all(a in _TIMES for a in members)


def _number_text(value: str) -> bool:
    try:
        float(value.strip().replace("_", ""))
    except ValueError:
        return False
    return True


@_per_annotation
def _describe(annotation: Any) -> str:
    annotation = _strip(annotation)
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    args = _union_args(annotation)
    if args is not None:
        lits = [a for a in args if typing.get_origin(a) is Literal]
        if lits:
            return _describe(lits[0])
        if any(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            return "a number or a distribution"
        named = [a for a in args if a is not type(None)]
        return _describe(named[0]) if named else "a value"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "text"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping (key: value, ...)"
    if typing.get_origin(annotation) in (list, tuple, set):
        return "a list"
    if typing.get_origin(annotation) is dict:
        return "a mapping (key: value, ...)"
    return "a value of another kind"


def _models(annotation: Any) -> list[type[BaseModel]]:
    args = _union_args(annotation) or (annotation,)
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def _pick_model(value: dict, models: list[type[BaseModel]]) -> type[BaseModel] | None:
    """The model a mapping is meant for: the only one, or the one its tag names."""
    if len(models) == 1:
        return models[0]
    for m in models:  # tagged unions (distributions): a Literal field naming the kind
        for name, (_, ann) in field_annotations(m).items():
            ann = _strip(ann)
            if (
                typing.get_origin(ann) is Literal
                and name in value
                and value[name] in typing.get_args(ann)
            ):
                return m
    return None


class _Fix(str):
    """Not a problem: the text a number typed unquoted stands for (applied by :func:`fix`)."""


def _as_choice(value: int | float, annotation: Any) -> str | None:
    """The text choice a number stands for, when the field takes only text choices."""
    args = _union_args(annotation) or (annotation,)
    lits = [a for a in args if typing.get_origin(a) is Literal]
    if not lits or any(
        a not in (type(None),) and typing.get_origin(a) is not Literal for a in args
    ):
        return None
    choices = {c for lit in lits for c in typing.get_args(lit) if isinstance(c, str)}
    text = str(value)
    return text if text in choices else None


def check(data: Any, model: type[BaseModel]) -> list[tuple[Loc, str]]:
    """Kind problems of ``data`` for ``model``; numbers typed for text choices are fixed in
    place (``protocol: 5`` becomes ``"5"``)."""
    out = []
    for loc, msg in model_issues(data, model):
        if isinstance(msg, _Fix):
            parent = data
            for part in loc[:-1]:
                parent = parent[part]
            parent[loc[-1]] = str(msg)
        else:
            out.append((loc, msg))
    return out


def kind_issues(value: Any, annotation: Any, loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Problems of kind (boolean where none belongs, non-boolean for a flag) in ``value``."""
    annotation = _strip(annotation)
    if (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and not isinstance(value, bool)
    ):
        return model_issues(value, annotation, loc)
    if isinstance(value, bool):
        if accepts_bool(annotation):
            return []
        word = "true" if value else "false"
        hint = (
            " (quote it to mean the text)"
            if _describe(annotation).startswith(("one of", "text"))
            else ""
        )
        return [(loc, f"expected {_describe(annotation)}, got the boolean {word}{hint}")]
    if _bool_only(annotation):
        if value is None and type(None) in (_union_args(annotation) or ()):
            return []
        return [(loc, f"expected true or false, got {value!r}")]
    if value is None:
        return []
    if isinstance(value, str) and _numbers_only(annotation):
        hint = " (write the number without quotes)" if _number_text(value) else ""
        return [(loc, f"expected {_describe(annotation)}, got the text {short_repr(value)}{hint}")]
    if _times_only(annotation) and (
        isinstance(value, (int, float)) or (isinstance(value, str) and _number_text(value))
    ):
        return [
            (
                loc,
                f"expected a date-time with UTC offset such as 2026-04-01T00:00:00+09:00, "
                f"got {'the text' if isinstance(value, str) else 'the number'} {short_repr(value)}",
            )
        ]
    if isinstance(value, float) and not math.isfinite(value) and _numbers_only(annotation):
        return [(loc, f"must be a finite number, got {value!r}")]
    if isinstance(value, int) and abs(value) > 10**300 and _numbers_only(annotation):
        return [(loc, f"number too large ({len(str(abs(value)))} digits)")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        fixed = _as_choice(value, annotation)
        if fixed is not None:  # `protocol: 5` for Literal["5", ...]: the text the user meant
            return [(loc, _Fix(fixed))]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        item = args[0] if args else Any
        out = []
        for i, v in enumerate(value):
            out += kind_issues(v, item, (*loc, i))
        return out
    if origin is dict and isinstance(value, dict):
        item = args[1] if len(args) == 2 else Any
        out = []
        for k, v in value.items():
            out += kind_issues(v, item, (*loc, k))
        return out
    union = _union_args(annotation)
    if union is not None:
        if isinstance(value, dict):
            model = _pick_model(value, _models(annotation))
            if model is not None:
                return model_issues(value, model, loc)
            for a in union:
                if typing.get_origin(_strip(a)) is dict:
                    return kind_issues(value, a, loc)
        if isinstance(value, list):
            for a in union:
                if typing.get_origin(_strip(a)) in (list, tuple):
                    return kind_issues(value, a, loc)
    return []


@functools.cache
def field_annotations(model: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """``{field: (key in the data, resolved annotation)}`` of a model.

    ``FieldInfo.annotation`` can stay a forward reference (a model defined
    further down its module); the module's type hints resolve it.
    """
    try:
        hints = typing.get_type_hints(model, include_extras=True)
    except (NameError, TypeError):
        hints = {}
    return {
        name: (field.alias or name, hints.get(name, field.annotation))
        for name, field in model.model_fields.items()
    }


def model_issues(value: Any, model: type[BaseModel], loc: Loc = ()) -> list[tuple[Loc, str]]:
    """:func:`kind_issues` for every field of ``model`` present in the mapping ``value``."""
    if not isinstance(value, dict):
        return []
    out = []
    for key, annotation in field_annotations(model).values():
        if key in value:
            out += kind_issues(value[key], annotation, (*loc, key))
    return out
