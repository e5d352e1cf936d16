"""The scenario file reference (``docs/scenarios.md``), generated from the schema.

Every field of every block: type, unit, default, bounds and description, as
the pydantic models define them; nothing is written by hand, so the reference
cannot drift from what the loader accepts.  Regenerate after changing the
schema::

    python -m cps_sim.scenario.reference_doc            # writes docs/scenarios.md
    cps-sim schema --markdown                            # prints it

``tests/unit/test_docs.py`` fails when ``docs/scenarios.md`` is not current.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cps_sim.scenario.strict_types import field_annotations

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"

# Units from the end of a field name (conventions: units are in names).
UNITS = [
    ("_jpy_per_kwh", "JPY/kWh"),
    ("_jpy_per_t_per_fy", "JPY/t per FY"),
    ("_jpy_per_t", "JPY/t"),
    ("_g_per_kwh", "g/kWh"),
    ("_kwh_per_100km", "kWh/100 km"),
    ("_kwh_per_kg", "kWh/kg"),
    ("_kwh_th", "kWh (heat)"),
    ("_w_per_s", "W/s"),
    ("_w_m2", "W/m²"),
    ("_m_s", "m/s"),
    ("_kwh", "kWh"),
    ("_mwh", "MWh"),
    ("_gwh", "GWh"),
    ("_kw", "kW"),
    ("_mw", "MW"),
    ("_w", "W"),
    ("_kg", "kg"),
    ("_km", "km"),
    ("_m2", "m²"),
    ("_m", "m"),
    ("_l", "L"),
    ("_deg", "deg"),
    ("_c", "°C"),
    ("_k", "K"),
    ("_a", "A"),
    ("_v", "V"),
    ("_s", "s"),
    ("_h", "h (local hour or hours)"),
    ("_days", "days"),
    ("_percent", "%"),
]
FRACTIONS = ("share", "soc", "efficiency", "fraction", "probability", "loss")


def unit_of(name: str) -> str:
    for suffix, unit in UNITS:
        if name.endswith(suffix):
            return unit
    if name == "duration_days":
        return "days"
    if any(name == f or name.endswith("_" + f) or name.startswith(f + "_") for f in FRACTIONS):
        return "0..1"
    if name in ("latitude", "longitude"):
        return "deg"
    return ""


def _strip(ann: Any) -> Any:
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _union(ann: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for a in typing.get_args(ann):
            a = _strip(a)
            inner = _union(a)
            out.extend(inner if inner is not None else [a])
        return tuple(out)
    return None


def _is_model(a: Any) -> bool:
    return isinstance(a, type) and issubclass(a, BaseModel)


DIST_NAMES = {"Uniform", "Normal", "LogNormal", "Choice"}


def type_text(ann: Any) -> str:
    """A reader's name for a type (models are linked to their section)."""
    ann = _strip(ann)
    members = _union(ann)
    if members is not None:
        named = [m for m in members if m is not type(None)]
        if {getattr(m, "__name__", "") for m in named} >= DIST_NAMES:
            rest = [m for m in named if getattr(m, "__name__", "") not in DIST_NAMES]
            head = " or ".join(type_text(m) for m in rest)
            text = (
                f"{head} or a [distribution](#distributions)"
                if head
                else "a [distribution](#distributions)"
            )
        else:
            text = " or ".join(type_text(m) for m in named)
        return text + (" or null" if type(None) in members else "")
    if typing.get_origin(ann) is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(ann))
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (list, set, frozenset):
        return f"list of {type_text(args[0]) if args else 'values'}"
    if origin is tuple:
        return "list of (" + ", ".join(type_text(a) for a in args if a is not Ellipsis) + ")"
    if origin is dict:
        return f"mapping of name to {type_text(args[1]) if len(args) == 2 else 'value'}"
    if _is_model(ann):
        return f"[{ann.__name__}](#{ann.__name__.lower()})"
    return {
        float: "number",
        int: "integer",
        str: "text",
        bool: "true/false",
        _dt.datetime: "date-time (ISO 8601 with offset)",
        _dt.date: "date",
        Any: "any",
        object: "any",
    }.get(ann, getattr(ann, "__name__", str(ann)))


def _fmt_num(v: Any) -> str:
    if v == 2**63:
        return "2^63"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    if isinstance(v, (int, float)) and abs(v) >= 1e6:
        return f"{v:g}"
    return str(v)


def bounds_text(model: type[BaseModel], name: str) -> str:
    """Bounds from the field's constraints and from the validators that record them."""
    f = model.model_fields[name]
    parts = []
    ops = {Ge: ">=", Gt: ">", Le: "<=", Lt: "<"}
    for meta in f.metadata:
        for cls, op in ops.items():
            if isinstance(meta, cls):
                parts.append(f"{op} {_fmt_num(getattr(meta, cls.__name__.lower()))}")
        if isinstance(meta, MinLen):
            parts.append(f"at least {meta.min_length} items")
        if isinstance(meta, MaxLen):
            parts.append(f"at most {meta.max_length} items")
        if getattr(meta, "pattern", None):
            parts.append(f"pattern `{meta.pattern}`")
    for dec in model.__pydantic_decorators__.field_validators.values():
        if name in dec.info.fields:
            func = getattr(dec.func, "__func__", dec.func)
            for k, v in (getattr(func, "bounds", None) or {}).items():
                parts.append(f"{dict(gt='>', ge='>=', le='<=', lt='<')[k]} {_fmt_num(v)}")
    # bounds carried by an annotated type: of the value (a union member), or of each item
    ann = _strip(field_annotations(model)[name][1])
    each = "each " if typing.get_origin(ann) in (list, tuple, set, dict) else ""
    for a in typing.get_args(ann):
        if typing.get_origin(a) is typing.Annotated:
            for meta in typing.get_args(a)[1:]:
                for sub in [meta, *getattr(meta, "metadata", [])]:
                    for cls, op in ops.items():
                        if isinstance(sub, cls):
                            parts.append(
                                f"{each}{op} {_fmt_num(getattr(sub, cls.__name__.lower()))}"
                            )
    return ", ".join(dict.fromkeys(parts))


def default_text(model: type[BaseModel], name: str) -> str:
    f = model.model_fields[name]
    if f.default_factory is not None:
        try:
            v = f.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(v, BaseModel):
            return "(the block's defaults)"
    elif f.default is PydanticUndefined:
        return "**required**"
    else:
        v = f.default
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _fmt_num(v)
    if isinstance(v, str):
        return f"`{v}`" if v else '""'
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json", exclude_defaults=True)
    text = json.dumps(v, ensure_ascii=False, default=str)
    return f"`{text}`" if len(text) <= 80 else f"`{text[:77]}...`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _walk_models(root: type[BaseModel]) -> list[tuple[type[BaseModel], list[str]]]:
    """Models in reading order (depth first from ``root``), each with the paths using it."""
    order: list[type[BaseModel]] = []
    paths: dict[type[BaseModel], list[str]] = {}

    def visit(model: type[BaseModel], path: str) -> None:
        paths.setdefault(model, [])
        if path not in paths[model]:
            paths[model].append(path)
        if model in order:
            return
        order.append(model)
        for _name, (key, ann) in field_annotations(model).items():
            sub = f"{path}.{key}" if path else key
            for m, suffix in _nested_models(ann):
                visit(m, sub + suffix)

    visit(root, "")
    return [(m, paths[m]) for m in order]


def _nested_models(ann: Any, suffix: str = "") -> list[tuple[type[BaseModel], str]]:
    ann = _strip(ann)
    out: list[tuple[type[BaseModel], str]] = []
    members = _union(ann)
    if members is not None:
        for m in members:
            out += _nested_models(m, suffix)
        return out
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (list, tuple, set):
        for a in args:
            if a is not Ellipsis:
                out += _nested_models(a, suffix + "[]")
    elif origin is dict and len(args) == 2:
        out += _nested_models(args[1], suffix + ".<name>")
    elif _is_model(ann):
        out.append((ann, suffix))
    return out


def _doc(model: type[BaseModel]) -> str:
    import inspect
    import re

    doc = inspect.cleandoc(model.__doc__ or "")
    if not doc or doc.startswith(("Usage docs:", "A base class")):
        return ""
    doc = re.sub(r"``([^`]+)``", r"`\1`", doc)  # reST literals -> Markdown
    return re.sub(r":(?:func|class|mod|data|meth):`~?([^`]+)`", r"`\1`", doc)


INTRO = """\
# Scenario file reference

<!-- Generated by `python -m cps_sim.scenario.reference_doc` from the schema
     (cps_sim/scenario/*_schema.py); do not edit by hand. -->

A scenario is a YAML file validated against this schema (`cps-sim validate FILE`
checks one; `cps-sim schema` prints the JSON Schema for editors).  Every block
and field below, with its type, unit, default, bounds and meaning.  Conventions:

* Units are in field names (`capacity_kw`, `duration_days`, `price_jpy_per_kwh`;
  `_h` fields are local hours of the day or durations in hours as described);
  shares, states of charge and efficiencies are fractions 0..1.
* Unknown keys are errors (`capcity_kwh` → "did you mean 'capacity_kwh'?"), and
  every problem is reported with `file:line:column: path: message`.
* Booleans are `true`/`false` only; `off`, `on`, `yes`, `no` are text (YAML 1.2),
  so `ev_strategy: off` means the strategy "off".  A number field never takes a
  boolean.
* Numbers have physical bounds; a file that validates runs.  Cross-references are
  checked too: group names, referenced files, blocks that need another block.
* Any value can be overridden on the command line: `--set sites[0].pv.share=0.8`.
* Files a scenario references (weather, prices, plans, profiles) are relative to
  the scenario's folder.

## Distributions

A field typed "number or a distribution" takes a number (every device gets it)
or a mapping naming a distribution; each device draws its own value from a
named random stream of the run's seed:

<!-- doc-test: fragment: sites[0] -->
```yaml
pv:
  capacity_kw: 4.5                                           # every system 4.5 kW
  tilt_deg: {distribution: uniform, low: 10, high: 35}
  azimuth_deg: {distribution: choice, values: [135, 180, 225], weights: [0.25, 0.5, 0.25]}
load:
  annual_kwh: {distribution: lognormal, mean: 4300, cv: 0.3}
ev:
  capacity_kwh: {distribution: normal, mean: 60, std: 15, min: 20, max: 100}
```

`min`/`max` **truncate**: values are drawn from the distribution conditioned on
the range (no probability piles up at a bound).  A field's own bounds apply to
every value a distribution can draw; an unbounded tail is cut at the field's
upper bound when it is negligible there (below 1e-6), otherwise `max` is needed.
"""


def render() -> str:
    from cps_sim.scenario.schema import Scenario

    out = [INTRO]
    dists = {"Uniform", "Normal", "LogNormal", "Choice"}
    models = _walk_models(Scenario)
    # distributions first (they are referenced from many fields), then the scenario tree
    models.sort(key=lambda mp: 0 if mp[0].__name__ in dists else 1)
    for model, paths in models:
        name = model.__name__
        out.append(f"\n### {name}\n")
        if name not in dists:
            shown = [p or "(top level)" for p in paths]
            out.append("Used at: " + ", ".join(f"`{p}`" for p in shown) + "\n")
        doc = _doc(model)
        if doc:
            out.append(doc + "\n")
        out.append("| field | type | unit | default | bounds | description |")
        out.append("|---|---|---|---|---|---|")
        for fname, (key, ann) in field_annotations(model).items():
            f = model.model_fields[fname]
            out.append(
                "| "
                + " | ".join(
                    _cell(c)
                    for c in (
                        f"`{key}`",
                        type_text(ann),
                        unit_of(fname),
                        default_text(model, fname),
                        bounds_text(model, fname),
                        f.description or "",
                    )
                )
                + " |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m cps_sim.scenario.reference_doc [PATH|-]``: write the reference."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args and args[0] == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args[0]) if args else DOC
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
