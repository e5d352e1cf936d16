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

from cps_sim.core.errors import Issue, ScenarioError

MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 1_000_000


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


def _expanded_size(root: yaml.Node | None) -> int:
    """Number of values the document has once every alias is expanded (memoised per node)."""
    if root is None:
        return 0
    memo: dict[int, int] = {}
    # iterative post-order walk: aliases are shared node objects in the composed graph
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in memo:
            continue
        if isinstance(node, yaml.ScalarNode):
            memo[key] = 1
            continue
        children = (
            [c for kv in node.value for c in kv]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            memo[key] = 1 + sum(memo.get(id(c), 1) for c in children)
            if memo[key] > MAX_EXPANDED_NODES:
                return memo[key]
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)]


def parse_yaml(text: str, file: str | None = None) -> tuple[Any, yaml.Node | None]:
    """Parse YAML text into plain data plus its node tree (for line numbers).

    Aliases are counted on the event stream first, so an alias bomb is
    rejected before anything is expanded.
    """
    try:
        aliases = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    m = event.start_mark
                    raise ScenarioError.single(
                        file,
                        "",
                        f"more than {MAX_ALIASES} YAML aliases (*name); refusing to "
                        "expand what may be an alias bomb",
                        m.line + 1,
                        m.column + 1,
                    )
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        size = _expanded_size(node)
        if size > MAX_EXPANDED_NODES:
            raise ScenarioError.single(
                file,
                "",
                f"aliases would expand this document to {size:,} values (limit "
                f"{MAX_EXPANDED_NODES:,}); refusing what looks like an alias bomb",
            )
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise _mark_issue(file, exc) from None
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


def _message(err: Mapping[str, Any], model: type[BaseModel], loc: Sequence[Any]) -> str:
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
            msg += f"; allowed keys: {', '.join(names)}"
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
        return f"must be {op} {bound}, got {got!r}"
    if kind == "finite_number" or (isinstance(got, float) and not math.isfinite(got)):
        return f"must be a finite number, got {got!r}"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "")))
    if kind == "union_tag_invalid":
        return (
            f"unknown distribution {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        )
    msg = str(err.get("msg", "invalid value"))
    if got is not None and not isinstance(got, (dict, list)):
        msg += f", got {got!r}"
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
) -> list[Issue]:
    """Turn a pydantic ValidationError into one Issue per distinct problem."""
    issues: list[Issue] = []
    seen: set[tuple[str, str]] = set()
    errors = exc.errors(include_url=False)
    # A Quantity is 'float | distribution': pydantic reports the failure of every
    # branch.  When one branch failed on its own validator, that is the message.
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for err in errors:
        loc = _clean_loc(err["loc"])
        by_path.setdefault(format_loc(loc), []).append(err)
    for path, errs in by_path.items():
        structural = ("model_attributes_type", "dict_type", "model_type")
        preferred = [e for e in errs if e.get("type") not in structural]
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
            msg = _message(err, model, loc)
            if (path, msg) in seen:
                continue
            seen.add((path, msg))
            node = _key_node(root, loc) if err.get("type") == "extra_forbidden" else None
            node = node or _node_at(root, loc)
            line = node.start_mark.line + 1 if node is not None else None
            col = node.start_mark.column + 1 if node is not None else None
            issues.append(Issue(path, msg, line, col))
    issues.sort(key=lambda i: (i.line or 0, i.column or 0))
    return issues


# ----------------------------------------------------------------------------- overrides


def _parse_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for raw in path.replace("]", "").replace("[", ".").split("."):
        if raw == "":
            continue
        parts.append(int(raw) if raw.lstrip("-").isdigit() else raw)
    if not parts:
        raise ValueError("empty path")
    return parts


def apply_overrides(data: Any, overrides: Iterable[str], file: str | None = None) -> Any:
    """Apply ``path=value`` overrides (``sites[0].pv.share=0.8``, ``seed=3``) to raw data.

    Values are parsed as YAML scalars/flow collections, so ``0.8``, ``true``,
    ``[1, 2]`` and ``{distribution: uniform, low: 3, high: 6}`` all work.
    """
    for item in overrides:
        if "=" not in item:
            raise ScenarioError.single(file, "", f"--set {item!r}: expected path=value")
        path_s, value_s = item.split("=", 1)
        try:
            path = _parse_path(path_s.strip())
            value, _ = parse_yaml(value_s, None)
        except ValueError as exc:
            raise ScenarioError.single(file, path_s, f"--set: {exc}") from None
        except ScenarioError as exc:
            raise ScenarioError.single(
                file, path_s, "--set: " + "; ".join(i.message for i in exc.issues)
            ) from None
        set_path(data, path, value, file, path_s.strip())
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
            if not isinstance(part, int) or not -len(cur) <= part < len(cur):
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
    for loc, msg in check(data, model):
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
    try:
        result = model.model_validate(data)
        issues: list[Issue] = []
    except ValidationError as exc:
        issues = validation_issues(exc, model, root)
    if kinds:
        flagged = {i.path for i in kinds}
        issues = kinds + [i for i in issues if i.path not in flagged]
        issues.sort(key=lambda i: (i.line or 0, i.column or 0))
    if issues:
        raise ScenarioError(file, issues)
    return result


def load_scenario(
    path: str | Path, overrides: Iterable[str] = (), model: type[BaseModel] | None = None
):
    """Read, check and validate a scenario file into a frozen :class:`Scenario`.

    Raises
    ------
    ScenarioError
        Naming the file, the path inside it and each problem.
    """
    p = Path(path)
    shown = str(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError.single(shown, "", "file not found") from None
    except IsADirectoryError:
        raise ScenarioError.single(shown, "", "is a directory, not a scenario file") from None
    except OSError as exc:
        raise ScenarioError.single(shown, "", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        size = p.stat().st_size
        raise ScenarioError.single(
            shown,
            "",
            f"file is {size:,} bytes, larger than the {MAX_FILE_BYTES:,}-byte limit "
            "for scenario files; keep large time series in an external CSV or Parquet file "
            "and reference it by path",
        )
    return load_scenario_text(_decode(data, shown), shown, overrides, model)


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
    if not resolved.is_file():
        raise ScenarioError.single(file, field, f"{ref!r}: file not found ({resolved})")
    return resolved
