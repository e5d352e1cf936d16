"""Load scenario files safely and turn every problem into one clear message.

What is guarded against (reliability matrix Y1–Y10):

* wrong types, missing fields, unknown keys (with "did you mean"), impossible
  physics — all problems are collected, each with ``file:line:col: path: problem``;
* YAML bombs (aliases are counted before anything is built), object tags
  (``yaml.safe_load`` semantics only), huge files (size cap), duplicate keys,
  non-UTF-8 bytes (byte offset reported), tabs (scanner position reported);
* NaN/inf in physical parameters (``allow_inf_nan=False`` on every model);
* path traversal in referenced files (:func:`resolve_data_path`).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cps_sim.core.errors import InputFileError, Issue, ScenarioError, cut, short_repr
from cps_sim.core.files import read_input, require_regular_file

MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 1_000_000
MAX_ISSUES = 100  # problems listed per file; the rest are counted


# ----------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark
            ) from None
        if key in seen:
            first = seen[key].start_mark
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {first.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# YAML 1.2 scalars instead of PyYAML's YAML 1.1: only true/false are booleans (so
# `ev_strategy: off` is the text "off", not False), and no base-60 numbers (so
# `departure_h: 7:30` is an error, not 450).
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_implicit_resolver(
    _INT,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
_StrictLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _decode(data: bytes, file: str | None) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError.single(
            file,
            "",
            f"file is {len(data):,} bytes, larger than the {MAX_FILE_BYTES:,}-byte "
            "limit for scenario files; keep large time series in an external CSV or Parquet "
            "file and reference it by path",
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ScenarioError.single(
            file, "", "file is UTF-16 (byte-order mark at byte 0); save it as UTF-8"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ScenarioError.single(
            file,
            "",
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset "
            f"{exc.start}; save the file as UTF-8",
            line=line,
        ) from None


def _mark_issue(file: str | None, exc: yaml.YAMLError) -> ScenarioError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(problem):
        problem = (
            f"{problem}; scenario files may hold only plain data (no YAML object "
            "tags such as !!python/object)"
        )
    if "'\\t'" in str(problem) or "\t" in str(problem) or "tab" in str(problem).lower():
        problem = f"{problem} (YAML does not allow tabs for indentation; use spaces)"
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    return ScenarioError.single(file, "", f"invalid YAML: {problem}", line, col)


# Tags a scenario may carry: plain data only.  Timestamps are kept (``start:
# 2026-04-01T00:00:00+09:00``) and merge keys (``<<: *defaults``); ``!!binary``,
# ``!!set``, ``!!omap``, ``!!python/...`` and local ``!tags`` are refused.
PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}"
    for t in ("null", "bool", "int", "float", "str", "seq", "map", "timestamp", "merge")
)
MAX_DEPTH = 64  # nesting of mappings and lists, aliases expanded
MAX_EVENTS = 2_000_000  # parser events (scalars, mapping and list starts/ends) per document


try:
    from yaml.cyaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None

_C_LOADERS: dict[type, Any] = {}


def _loader_for(loader: type[yaml.SafeLoader]) -> Any:
    """The fastest loader class with ``loader``'s resolvers and constructors: ``loader``
    on libyaml's parser when PyYAML has it."""
    if _CParser is None:
        return loader
    if loader not in _C_LOADERS:

        def __init__(self: Any, stream: str) -> None:
            _CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        _C_LOADERS[loader] = type(
            f"_C{loader.__name__}", (_CParser, loader), {"__init__": __init__}
        )
    return _C_LOADERS[loader]


def _refuse(file: str | None, mark: Any, message: str) -> ScenarioError:
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    return ScenarioError.single(file, "", message, line, col)


def _check_events(text: str, file: str | None, loader: Any) -> None:
    """One pass over the parser's events (iterative, no recursion): nesting depth, number of
    aliases and of events, and explicit tags, each refused before a node is built."""
    depth = 0
    aliases = 0
    docs = 0
    for events, event in enumerate(yaml.parse(text, Loader=loader), 1):
        if events > MAX_EVENTS:
            raise _refuse(
                file,
                event.start_mark,
                f"more than {MAX_EVENTS:,} values; scenario files are small (keep large "
                "data in an external CSV or Parquet file)",
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _refuse(
                    file,
                    event.start_mark,
                    f"nested more than {MAX_DEPTH} levels deep; scenario files are not",
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _refuse(
                    file,
                    event.start_mark,
                    f"more than {MAX_ALIASES} YAML aliases (*name); refusing to "
                    "expand what may be an alias bomb",
                )
        elif isinstance(event, yaml.DocumentStartEvent):
            docs += 1
            if docs > 1:
                raise _refuse(
                    file,
                    event.start_mark,
                    "a second YAML document (after ---); a file holds one document",
                )
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in PLAIN_TAGS and tag != "!":
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            raise _refuse(
                file,
                event.start_mark,
                f"the tag {shown} is not allowed; input files may hold only plain data "
                "(text, numbers, true/false, null, lists, mappings, dates) and no YAML "
                "object tags such as !!python/object, !!binary or !!set",
            )


_SELF_ANCHOR = "an anchor (&name) is used inside itself (*name): the value would be infinitely deep"


def _check_graph(root: yaml.Node | None, file: str | None) -> None:
    """Aliases can make the composed node graph larger, deeper or cyclic than the text:
    one iterative walk refuses a cycle (an anchor used inside itself), a document that
    expands to more than :data:`MAX_EXPANDED_NODES` values or :data:`MAX_DEPTH` levels."""
    if root is None:
        return
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode):
            size[key], height[key] = 1, 0
            continue
        children = (
            [c for kv in node.value for c in kv]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            height[key] = 1 + max((height[id(c)] for c in children), default=0)
            if size[key] > MAX_EXPANDED_NODES:
                raise _refuse(
                    file,
                    node.start_mark,
                    f"aliases would expand this document to more than "
                    f"{MAX_EXPANDED_NODES:,} values; refusing what looks like an alias bomb",
                )
            if height[key] > MAX_DEPTH:
                raise _refuse(
                    file,
                    node.start_mark,
                    f"aliases nest this document more than {MAX_DEPTH} levels deep",
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise _refuse(file, node.start_mark, _SELF_ANCHOR)
        on_path.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in on_path:
                raise _refuse(file, c.start_mark, _SELF_ANCHOR)
            if id(c) not in size:
                stack.append((c, False))


def parse_yaml(
    text: str, file: str | None = None, loader: type[yaml.SafeLoader] = _StrictLoader
) -> tuple[Any, yaml.Node | None]:
    """Parse YAML text into plain data plus its node tree (for line numbers).

    The text is parsed once into events (checked: depth, aliases, tags, size), composed
    once into a node graph (checked: cycles, expanded size and depth) and only then
    constructed, so an alias bomb, a recursive anchor or a 100,000-deep list is refused
    before anything is built.  ``loader`` supplies resolvers and constructors (default:
    YAML 1.2 scalars, duplicate keys refused); libyaml parses when it is installed.
    """
    cls = _loader_for(loader)
    node = None
    try:
        _check_events(text, file, cls)
        inst = cls(text)
        try:
            node = inst.get_single_node()
            _check_graph(node, file)
            data = inst.construct_document(node) if node is not None else None
        finally:
            inst.dispose()
    except yaml.YAMLError as exc:
        raise _mark_issue(file, exc) from None
    except RecursionError:  # pragma: no cover - depth is checked before composing
        raise ScenarioError.single(file, "", f"nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, OverflowError) as exc:  # a date the calendar does not have
        raise _bad_scalar(file, node, exc) from None
    return data, node


def _bad_scalar(file: str | None, root: yaml.Node | None, exc: Exception) -> ScenarioError:
    """Locate the scalar (a timestamp such as 2026-02-30) that could not be constructed."""
    loader = _StrictLoader("")
    stack: list[tuple[yaml.Node, list[Any]]] = [(root, [])] if root is not None else []
    while stack:
        node, loc = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:timestamp":
                try:
                    loader.construct_yaml_timestamp(node)
                except (ValueError, OverflowError) as e:
                    m = node.start_mark
                    return ScenarioError.single(
                        file,
                        format_loc(loc),
                        f"{node.value!r} is not a valid date/time ({e})",
                        m.line + 1,
                        m.column + 1,
                    )
        elif isinstance(node, yaml.MappingNode):
            stack.extend(
                (v, [*loc, k.value if isinstance(k, yaml.ScalarNode) else "?"])
                for k, v in reversed(node.value)
            )
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, [*loc, i]) for i, v in reversed(list(enumerate(node.value))))
    return ScenarioError.single(file, "", f"a value cannot be read: {exc}")


# ----------------------------------------------------------------------------- paths


def format_loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _node_at(root: yaml.Node | None, loc: Sequence[Any]) -> yaml.Node | None:
    """The deepest YAML node along ``loc`` (for line:column of an error)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _key_node(root: yaml.Node | None, loc: Sequence[Any]) -> yaml.Node | None:
    """The key node of the last element of ``loc`` (for unknown keys)."""
    parent = _node_at(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(loc[-1]):
                return k
    return None


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of ``loc``."""
    import typing

    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *typing.get_args(ann)]
        nxt = None
        for c in candidates:
            for cc in [c, *typing.get_args(c)]:
                if isinstance(cc, type) and issubclass(cc, BaseModel):
                    nxt = cc
                    break
            if nxt:
                break
        current = nxt
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _message(
    err: Mapping[str, Any],
    model: type[BaseModel],
    loc: Sequence[Any],
    listed: set[str] | None = None,
) -> str:
    """One problem in words.  ``listed``: the owners whose allowed keys were already
    shown (a file with 100 unknown keys lists them once, not 100 times)."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        owner = _model_at(model, loc)
        names = list(owner.model_fields) if owner else []
        hint = difflib.get_close_matches(str(loc[-1]), names, n=1)
        msg = "unknown key"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        elif names:
            where = format_loc(loc[:-1]) or "<top level>"
            if listed is not None and where in listed:
                msg += f"; allowed keys of {where}: see above"
            else:
                msg += f"; allowed keys: {', '.join(names)}"
                if listed is not None:
                    listed.add(where)
        return msg
    if kind == "missing":
        return "required field is missing"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        bound = next(iter(ctx.values())) if ctx else "?"
        if isinstance(bound, float):
            bound = f"{bound:g}"
        return f"must be {op} {bound}, got {short_repr(got)}"
    if kind == "finite_number" or (isinstance(got, float) and not math.isfinite(got)):
        return f"must be a finite number, got {got!r}"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "")))
    if kind == "union_tag_invalid":
        return (
            f"unknown distribution {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        )
    msg = str(err.get("msg", "invalid value"))
    if len(msg) > 200:
        msg = msg[:197] + "..."
    if got is not None and not isinstance(got, (dict, list)):
        msg += f", got {short_repr(got)}"
    return msg


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    """Drop pydantic's union-branch labels (``float``, ``uniform``) from a location."""
    out: list[Any] = []
    for part in loc:
        if isinstance(part, str) and (
            part in ("float", "int", "bool", "str")
            or part.startswith(("function-", "constrained-", "tagged-union["))
            or part in ("uniform", "normal", "lognormal", "choice")
        ):
            continue
        out.append(part)
    return out


def validation_issues(
    exc: ValidationError, model: type[BaseModel], root: yaml.Node | None
) -> tuple[list[Issue], int]:
    """Turn a pydantic ValidationError into one Issue per distinct problem: at most
    :data:`MAX_ISSUES` of them (sorted by position when cut short), and the number of
    problem paths left out."""
    issues: list[Issue] = []
    seen: set[tuple[str, str]] = set()
    listed: set[str] = set()
    errors = exc.errors(include_url=False)
    # A Quantity is 'float | distribution': pydantic reports the failure of every
    # branch.  When one branch failed on its own validator, that is the message.
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for err in errors:
        loc = _clean_loc(err["loc"])
        by_path.setdefault(format_loc(loc), []).append(err)
    for n_done, (path, errs) in enumerate(by_path.items()):
        if len(issues) >= MAX_ISSUES:
            issues.sort(key=lambda i: (i.line or 0, i.column or 0))
            return issues, len(by_path) - n_done
        structural = ("model_attributes_type", "dict_type", "model_type")
        preferred = [e for e in errs if e.get("type") not in structural]
        if any(e.get("type") == "value_error" for e in preferred):
            # 'float | distribution': a distribution that failed its own check is the
            # message, not that the mapping is not a number
            preferred = [
                e for e in preferred if e.get("type") not in ("float_type", "float_parsing")
            ]
        if (
            len(errs) > 1
            and len(preferred) == 1
            and preferred[0].get("type") in ("float_parsing", "float_type")
        ):
            # 'float | distribution' both failed: say what the field accepts.
            chosen = [
                {
                    "type": "custom",
                    "loc": errs[0]["loc"],
                    "input": errs[0].get("input"),
                    "msg": "expected a number or a distribution mapping such as "
                    "{distribution: uniform, low: 3, high: 6}",
                }
            ]
        else:
            chosen = preferred or errs[:1]
        for err in chosen:
            loc = _clean_loc(err["loc"])
            msg = _message(err, model, loc, listed)
            if (path, msg) in seen:
                continue
            seen.add((path, msg))
            node = _key_node(root, loc) if err.get("type") == "extra_forbidden" else None
            node = node or _node_at(root, loc)
            line = node.start_mark.line + 1 if node is not None else None
            col = node.start_mark.column + 1 if node is not None else None
            issues.append(Issue(path, msg, line, col))
    issues.sort(key=lambda i: (i.line or 0, i.column or 0))
    return issues, 0


# ----------------------------------------------------------------------------- overrides


_PATH_PART = re.compile(r"\.?([A-Za-z0-9_-]{1,128})|\[([0-9]{1,9})\]")


def _parse_path(path: str) -> list[str | int]:
    """``sites[0].pv.share`` -> ``["sites", 0, "pv", "share"]``.

    The grammar: keys (letters, digits, ``_``, ``-``) joined by dots, list items as
    ``[n]`` with a whole number ``n >= 0`` (``sites.0.pv`` also reads item 0).
    Anything else (``sites[[0]]``, ``a..b``, ``sites[-1]``, spaces) is a
    :class:`ValueError` that shows the expected form.
    """
    text = path.strip()
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _PATH_PART.match(text, pos)
        if (
            m is None
            or (pos == 0 and text.startswith("."))
            or (pos > 0 and m.group(0)[0] not in ".[")
        ):
            raise ValueError(
                f"bad path {cut(text)!r} at character {pos + 1}: expected keys joined by dots "
                "and list items as [n], e.g. sites[0].pv.share"
            )
        key, index = m.group(1), m.group(2)
        if index is not None:
            parts.append(int(index))
        else:
            assert key is not None
            parts.append(int(key) if key.isdigit() else key)
        pos = m.end()
    if not parts:
        raise ValueError("empty path; expected e.g. sites[0].pv.share")
    if text.endswith("."):
        raise ValueError(f"bad path {text!r}: ends with a dot")
    return parts


def apply_overrides(data: Any, overrides: Iterable[str], file: str | None = None) -> Any:
    """Apply ``path=value`` overrides (``sites[0].pv.share=0.8``, ``seed=3``) to raw data.

    Values are parsed as YAML scalars/flow collections, so ``0.8``, ``true``,
    ``[1, 2]`` and ``{distribution: uniform, low: 3, high: 6}`` all work.
    """
    for item in overrides:
        if "=" not in item:
            raise ScenarioError.single(file, "", f"--set {short_repr(item)}: expected path=value")
        path_s, value_s = item.split("=", 1)
        shown = cut(path_s.strip())
        try:
            path = _parse_path(path_s)
            value, _ = parse_yaml(value_s, None)
        except ValueError as exc:
            raise ScenarioError.single(file, shown, f"--set: {exc}") from None
        except ScenarioError as exc:
            raise ScenarioError.single(
                file, shown, "--set: " + "; ".join(i.message for i in exc.issues)
            ) from None
        set_path(data, path, value, file, shown)
    return data


def set_path(
    data: Any,
    path: Sequence[str | int],
    value: Any,
    file: str | None = None,
    shown: str | None = None,
) -> None:
    shown = shown or format_loc(path)
    cur = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(cur, list):
            if not isinstance(part, int) or not 0 <= part < len(cur):
                raise ScenarioError.single(
                    file,
                    shown,
                    f"no list item {part!r} at "
                    f"{format_loc(path[:i]) or '<root>'} "
                    f"(it has {len(cur)} items)",
                )
        elif isinstance(cur, dict):
            if not last and part not in cur:
                cur[part] = {}
        else:
            raise ScenarioError.single(
                file, shown, f"{format_loc(path[:i])} is not a mapping or list"
            )
        if last:
            cur[part] = value
        else:
            cur = cur[part]


# ----------------------------------------------------------------------------- scenarios


def load_scenario_text(
    text: str,
    file: str | None = None,
    overrides: Iterable[str] = (),
    model: type[BaseModel] | None = None,
    base_dir: Path | None = None,
):
    """Validate scenario YAML text (see :func:`load_scenario`)."""
    from cps_sim.scenario.schema import Scenario

    model = model or Scenario
    data, root = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise ScenarioError.single(
            file, "", f"top level must be a mapping of scenario fields, got {type(data).__name__}"
        )
    data = apply_overrides(data, overrides, file)
    result = validate_data(data, model, file, root)
    if hasattr(result, "sites"):  # a scenario: its cross-references (scenario/references.py)
        from cps_sim.scenario.references import reference_issues

        if base_dir is None and file is not None and Path(file).is_file():
            base_dir = Path(file).parent
        refs = reference_issues(result, base_dir)
        if refs:
            issues = []
            for loc, msg in refs:
                node = _node_at(root, list(loc))
                issues.append(
                    Issue(
                        format_loc(loc),
                        msg,
                        node.start_mark.line + 1 if node else None,
                        node.start_mark.column + 1 if node else None,
                    )
                )
            raise ScenarioError(file, issues)
    return result


def kind_issue_list(data: Any, model: type[BaseModel], root: yaml.Node | None) -> list[Issue]:
    """Strict kinds (booleans only for flags, never for numbers or text) as located issues."""
    from cps_sim.scenario.strict_types import check

    out = []
    for loc, msg in check(data, model)[: MAX_ISSUES + 1]:
        node = _node_at(root, list(loc))
        out.append(
            Issue(
                format_loc(loc),
                msg,
                node.start_mark.line + 1 if node else None,
                node.start_mark.column + 1 if node else None,
            )
        )
    return out


def validate_data(
    data: Any, model: type[BaseModel], file: str | None = None, root: yaml.Node | None = None
):
    """Validate raw data into ``model``; every problem (kinds first) as one ScenarioError."""
    kinds = kind_issue_list(data, model, root)
    dropped = 0  # problems found but not listed
    try:
        result = model.model_validate(data)
        issues: list[Issue] = []
    except ValidationError as exc:
        issues, dropped = validation_issues(exc, model, root)
    if kinds:
        flagged = {i.path for i in kinds}
        issues = kinds + [i for i in issues if i.path not in flagged]
        issues.sort(key=lambda i: (i.line or 0, i.column or 0))
    if len(issues) > MAX_ISSUES:
        dropped += len(issues) - MAX_ISSUES
        issues = issues[:MAX_ISSUES]
    if dropped:
        issues.append(Issue("", f"... and {dropped:,} more problems (fix these first)"))
    if issues:
        raise ScenarioError(file, issues)
    return result


def read_source(path: str | Path, what: str) -> bytes:
    """The bytes of a YAML input file (scenario, sweep, device profile) through the one
    input-file reader (:func:`cps_sim.core.files.read_input`): a regular file of at most
    :data:`MAX_FILE_BYTES`, else a :class:`ScenarioError` naming the file and the problem."""
    try:
        return read_input(path, max_bytes=MAX_FILE_BYTES, what=what)
    except InputFileError as exc:
        reason = exc.reason
        if "larger than" in reason:
            reason += (
                "; keep large time series in an external CSV or Parquet file and reference "
                "it by path"
            )
        raise ScenarioError.single(exc.path, "", reason) from None


def read_yaml_text(path: str | Path, what: str) -> str:
    """The text of a YAML input file (scenario, sweep, DR events): :func:`read_source`,
    then decoded as the loader decodes (UTF-8, a BOM dropped, UTF-16 refused)."""
    return _decode(read_source(path, what), str(path))


def load_scenario(
    path: str | Path, overrides: Iterable[str] = (), model: type[BaseModel] | None = None
):
    """Read, check and validate a scenario file into a frozen :class:`Scenario`.

    Raises
    ------
    ScenarioError
        Naming the file, the path inside it and each problem.
    """
    return load_scenario_text(read_yaml_text(path, "scenario file"), str(path), overrides, model)


def resolve_data_path(
    ref: str,
    base_dir: Path,
    allowed_roots: Sequence[Path] = (),
    file: str | None = None,
    field: str = "",
) -> Path:
    """Resolve a file referenced from a scenario; it must stay inside an allowed root.

    Relative references are taken from ``base_dir`` (the scenario's folder),
    which is always allowed; symlinks are resolved before the check.
    """
    if "\x00" in ref:
        raise ScenarioError.single(file, field, "path contains a NUL byte")
    if len(ref) > 4096:
        raise ScenarioError.single(file, field, f"path is {len(ref):,} characters long")
    candidate = Path(ref)
    if not candidate.is_absolute():
        candidate = base_dir / candidate
    resolved = candidate.resolve()
    roots = [base_dir.resolve(), *(r.resolve() for r in allowed_roots)]
    if not any(resolved == r or r in resolved.parents for r in roots):
        raise ScenarioError.single(
            file,
            field,
            f"{ref!r} resolves to {resolved}, outside the scenario folder and the "
            "allowed data folders; copy the file next to the scenario",
        )
    try:
        require_regular_file(resolved, what="data file")
    except InputFileError as exc:
        raise ScenarioError.single(file, field, f"{ref!r}: {exc.reason} ({resolved})") from None
    return resolved
