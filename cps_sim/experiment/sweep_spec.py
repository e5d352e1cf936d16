"""Sweep files: schema, validation with located errors, and expansion into runs.

A sweep file names a base scenario, fixed overrides, swept parameters (by
dotted path into the scenario), a design and replications::

    version: 1
    name: pv_battery
    scenario: ../../scenarios/city_1day.yaml   # relative to this file
    set: ["sites[0].count=50"]                  # fixed overrides (optional)
    design: {method: lhs, samples: 20, seed: 7} # grid | random | lhs
    parameters:
      - {name: pv_share, path: "sites[0].pv.share", low: 0.1, high: 0.9}
      - {name: battery_kwh, path: "sites[0].battery.capacity_kwh", values: [5, 10, 15]}
    replications: 3                             # or seeds: [1, 2, 3]
    timeout_s: 600

Every point × seed becomes a :class:`RunSpec` whose ``run_id`` is a hash of
the validated scenario content, the parameters, the seed and the package
version: the same run always has the same id, which is what makes resuming
safe (finished ids are skipped, nothing runs twice).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import cps_sim
from cps_sim.core.errors import Issue, ScenarioError
from cps_sim.experiment.designs import Param, design_points, replicate_seeds
from cps_sim.scenario.loader import (
    _parse_path,  # the loader's own dotted-path grammar, so sweeps and --set agree
    format_loc,
    load_scenario,
    parse_yaml,
    set_path,
    validate_data,
)

RESERVED_COLUMNS = (
    "run_id",
    "point",
    "replicate",
    "seed",
    "status",
    "error_type",
    "error",
    "wall_time_s",
    "attempts",
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DesignSpec(_Model):
    """How parameter values are chosen."""

    method: Literal["grid", "random", "lhs"] = Field(
        "grid", description="grid: full factorial; random: uniform draws; lhs: Latin hypercube."
    )
    samples: int | None = Field(
        None, ge=1, le=100_000, description="Number of points (random and lhs)."
    )
    seed: int = Field(0, ge=0, lt=2**63, description="Seed of the design's own draws.")


class ParameterSpec(_Model):
    """One swept parameter: categorical ``values`` or a continuous ``low``..``high`` range."""

    path: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.\[\]-]+$",
        description="Dotted path into the scenario, e.g. sites[0].pv.share.",
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="Catalog column name; default derived from path.",
    )
    values: list[Any] | None = Field(
        None, min_length=1, max_length=10_000, description="Categorical values."
    )
    low: float | None = Field(
        None, ge=-1e15, le=1e15, description="Lowest value of a continuous range."
    )
    high: float | None = Field(
        None, ge=-1e15, le=1e15, description="Highest value of a continuous range."
    )
    num: int | None = Field(
        None, ge=1, le=100_000, description="Grid design: evenly spaced points in [low, high]."
    )
    log: bool = Field(False, description="Space the range logarithmically (low > 0).")
    integer: bool = Field(False, description="Round to whole numbers.")

    @field_validator("path")
    @classmethod
    def _grammar(cls, v: str) -> str:
        _parse_path(v)  # the --set grammar: keys joined by dots, list items as [n]
        return v

    @model_validator(mode="after")
    def _shape(self) -> ParameterSpec:
        has_range = self.low is not None or self.high is not None
        if self.values is not None and has_range:
            raise ValueError("give either 'values' or 'low'/'high', not both")
        if self.values is None:
            if self.low is None or self.high is None:
                raise ValueError("needs 'values' or both 'low' and 'high'")
            if not self.low <= self.high:
                raise ValueError(f"low must be <= high, got low={self.low}, high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"log spacing needs low > 0, got {self.low}")
        return self

    @property
    def column(self) -> str:
        if self.name:
            return self.name
        out = "".join(c if c.isalnum() else "_" for c in self.path).strip("_")
        while "__" in out:
            out = out.replace("__", "_")
        return out or "param"

    def to_param(self) -> Param:
        return Param(
            self.column,
            tuple(self.values) if self.values is not None else None,
            self.low,
            self.high,
            self.num,
            self.log,
            self.integer,
        )


Seed = Annotated[int, Field(ge=0, lt=2**63, description="A root seed, as the scenario's.")]
# planned runs per sweep file (points x seeds), checked before expanding: planning validates
# every run (~1.5 ms each), so this bounds a plan to a few minutes
MAX_RUNS = 100_000


class SweepFile(_Model):
    """A batch of scenario variants."""

    version: Literal[1] = Field(1, description="Sweep file format version (1).")
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Name of the sweep (default results folder results/<name>).",
    )
    description: str = Field("", description="Free text.")
    scenario: str = Field(min_length=1, description="Base scenario, relative to the sweep file.")
    set: list[str] = Field(default_factory=list, description="Fixed path=value overrides.")
    design: DesignSpec = Field(
        default_factory=DesignSpec,
        description="How parameter values are chosen (grid, random, lhs).",
    )
    parameters: list[ParameterSpec] = Field(
        default_factory=list,
        max_length=100,
        description="The swept parameters (paths into the scenario).",
    )
    replications: int = Field(
        1,
        ge=1,
        le=100_000,
        description="Seeds per point: the scenario's seed, then seeds spawned from it.",
    )
    seeds: list[Seed] | None = Field(
        None,
        min_length=1,
        max_length=100_000,
        description="Explicit seeds per point (replaces replications).",
    )
    timeout_s: float | None = Field(
        None, le=30 * 86400, gt=0, description="Wall-time limit of one run [s]."
    )
    retries: int = Field(
        1,
        ge=0,
        le=10,
        description="Re-runs of a run whose worker process died (killed, out of memory).",
    )

    @model_validator(mode="after")
    def _cross(self) -> SweepFile:
        problems = []
        if self.design.method == "grid":
            for i, p in enumerate(self.parameters):
                if p.values is None and p.num is None:
                    problems.append(
                        f"parameters[{i}] ({p.column}): a grid design needs "
                        "'values' or 'num' points between low and high"
                    )
        elif self.design.samples is None:
            problems.append(f"design.samples is required for method {self.design.method!r}")
        cols = [p.column for p in self.parameters]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            problems.append(f"parameter names must be unique, repeated: {', '.join(dup)}")
        bad = sorted(set(cols) & (set(RESERVED_COLUMNS) - {"seed"}))
        if bad:
            problems.append(f"parameter names {bad} are reserved catalog columns; set 'name'")
        seed_swept = any(_parse_path(p.path) == ["seed"] for p in self.parameters)
        if seed_swept and (self.replications > 1 or self.seeds):
            problems.append("'seed' is swept as a parameter; drop replications/seeds")
        if self.seeds and self.replications != 1:
            problems.append("give either 'replications' or 'seeds', not both")
        if self.seeds and len(set(self.seeds)) != len(self.seeds):
            dup = sorted({s for s in self.seeds if self.seeds.count(s) > 1})[:5]
            problems.append(f"seeds must be different, repeated: {dup}")
        runs, how = self.planned_runs()
        if runs > MAX_RUNS:
            problems.append(
                f"the sweep would plan {runs:,} runs ({how}), more than "
                f"{MAX_RUNS:,}; use fewer values, a random or lhs design with "
                "fewer samples, or split it into several sweeps"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def planned_runs(self) -> tuple[int, str]:
        """How many runs the file plans (before repeated points are merged), and how."""
        if self.design.method == "grid":
            sizes = [
                len(p.values) if p.values is not None else (p.num or 1) for p in self.parameters
            ]
            points = math.prod(sizes)
            how = " x ".join(str(n) for n in sizes) or "1 point"
        else:
            points = self.design.samples or 0
            how = f"{points} samples"
        seeds = len(self.seeds) if self.seeds else self.replications
        return points * seeds, f"{how} x {seeds} seed(s)"


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: what a worker needs, and nothing else."""

    run_id: str
    point: int
    replicate: int
    seed: int
    params: dict[str, Any]
    scenario: dict[str, Any]  # validated scenario, JSON-ready (model_dump(mode="json"))
    source_file: str
    timeout_s: float | None = None
    error: str | None = None  # set when the point's scenario does not validate

    def task(self) -> dict[str, Any]:
        """Plain, picklable description for a worker."""
        return {
            "run_id": self.run_id,
            "point": self.point,
            "replicate": self.replicate,
            "seed": self.seed,
            "params": self.params,
            "scenario": self.scenario,
            "source_file": self.source_file,
            "timeout_s": self.timeout_s,
        }


@dataclass
class Plan:
    sweep: SweepFile
    sweep_file: Path
    scenario_file: Path
    runs: list[RunSpec] = field(default_factory=list)
    duplicates: int = 0  # points whose run_id repeats an earlier one (run once)

    @property
    def param_columns(self) -> list[str]:
        return [p.column for p in self.sweep.parameters]


def _json_default(o: Any) -> Any:
    if isinstance(o, (_dt.datetime, _dt.date, _dt.time)):
        return o.isoformat()
    if hasattr(o, "item"):  # numpy scalar
        return o.item()
    raise TypeError(f"cannot hash {type(o).__name__}")


def canonical_json(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=False
    )


def make_run_id(
    scenario: dict[str, Any], params: dict[str, Any], seed: int, version: str | None = None
) -> str:
    """Deterministic id: hash of scenario content, parameters, seed and package version."""
    payload = canonical_json(
        {
            "scenario": scenario,
            "params": params,
            "seed": int(seed),
            "version": version or cps_sim.__version__,
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_sweep_text(text: str, file: str | None = None) -> SweepFile:
    data, root = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise ScenarioError.single(
            file, "", f"top level of a sweep file must be a mapping, got {type(data).__name__}"
        )
    return validate_data(data, SweepFile, file, root)


def load_sweep(path: str | Path) -> SweepFile:
    """Read and validate a sweep file; errors name file:line:col and the path."""
    from cps_sim.scenario.loader import read_yaml_text

    return load_sweep_text(read_yaml_text(path, "sweep file"), str(path))


def _issue_at(sweep_file: Path, path: str, message: str) -> ScenarioError:
    """A ScenarioError located at ``path`` inside the sweep file (with line numbers)."""
    from cps_sim.scenario.loader import _node_at, read_yaml_text  # as scenario errors

    root = None
    with contextlib.suppress(OSError, ScenarioError):
        _, root = parse_yaml(read_yaml_text(sweep_file, "sweep file"), str(sweep_file))
    node = _node_at(root, _parse_path(path)) if root is not None else None
    line = node.start_mark.line + 1 if node is not None else None
    col = node.start_mark.column + 1 if node is not None else None
    return ScenarioError(str(sweep_file), [Issue(path, message, line, col)])


def expand(sweep: SweepFile, sweep_file: str | Path) -> Plan:
    """All runs of a sweep, in design order (point, then replicate).

    The base scenario is loaded with the loader (so its errors name the
    scenario file); each point is validated against the scenario schema.
    A path that does not exist in the schema is an error of the sweep file;
    a point whose values are out of range becomes a run with ``error`` set
    (recorded as ``invalid`` in the catalog, the others still run).
    """
    sweep_file = Path(sweep_file)
    scen_path = sweep_file.parent / sweep.scenario
    from cps_sim.core.errors import InputFileError
    from cps_sim.core.files import require_regular_file

    try:
        require_regular_file(scen_path, what="scenario file")
    except InputFileError as exc:
        raise _issue_at(
            sweep_file, "scenario", f"{sweep.scenario!r}: {exc.reason} ({scen_path})"
        ) from None
    base_model = load_scenario(scen_path, sweep.set)
    from cps_sim.scenario.schema import Scenario

    base = base_model.model_dump(mode="json")
    params = [p.to_param() for p in sweep.parameters]
    paths = [_parse_path(p.path) for p in sweep.parameters]
    points = design_points(sweep.design.method, params, sweep.design.samples, sweep.design.seed)
    seed_swept = any(pp == ["seed"] for pp in paths)
    seeds = (
        list(sweep.seeds) if sweep.seeds else replicate_seeds(base_model.seed, sweep.replications)
    )

    plan = Plan(sweep, sweep_file, scen_path)
    seen: set[str] = set()
    for i, values in enumerate(points):
        data = copy.deepcopy(base)
        for j, (spec, path) in enumerate(zip(sweep.parameters, paths, strict=True)):
            value = values[spec.column]
            if isinstance(value, float) and not math.isfinite(value):
                raise _issue_at(sweep_file, f"parameters[{j}]", f"non-finite value {value!r}")
            try:
                set_path(data, path, value, str(sweep_file), spec.path)
            except ScenarioError as exc:
                msg = "; ".join(iss.message for iss in exc.issues)
                raise _issue_at(
                    sweep_file,
                    f"parameters[{j}].path",
                    f"{spec.path!r} does not fit the scenario: {msg}",
                ) from None
        for r, seed in enumerate([values["seed"]] if seed_swept else seeds):
            d = copy.deepcopy(data)
            d["seed"] = seed
            error = None
            try:
                scen = validate_data(d, Scenario).model_dump(mode="json")
            except ScenarioError as exc:
                issues = exc.issues
                unknown = [iss for iss in issues if iss.message.startswith("unknown key")]
                if unknown:
                    j = next(
                        (
                            k
                            for k, pp in enumerate(paths)
                            if format_loc(pp).startswith(unknown[0].path)
                        ),
                        None,
                    )
                    where = f"parameters[{j}].path" if j is not None else "parameters"
                    raise _issue_at(
                        sweep_file,
                        where,
                        f"scenario has no field {unknown[0].path!r}: {unknown[0].message}",
                    ) from None
                error = "; ".join(f"{iss.path}: {iss.message}" for iss in issues)
                scen = d
            run_id = make_run_id(scen, values, seed)
            if run_id in seen:
                plan.duplicates += 1
                continue
            seen.add(run_id)
            plan.runs.append(
                RunSpec(
                    run_id,
                    i,
                    r,
                    int(seed),
                    dict(values),
                    scen,
                    str(scen_path.resolve()),
                    sweep.timeout_s,
                    error,
                )
            )
    return plan
