"""Cross-references of a validated scenario, checked before anything runs (issue 10 item 10).

A scenario whose every block is valid on its own can still point at
something that is not there.  :func:`reference_issues` walks the whole
validated scenario and reports, with the path of each problem:

* site-group names: every field called ``group``, ``groups``,
  ``member_groups`` or ``shared_battery_groups`` (a name, a list of names,
  or a mapping keyed by names), and the keys of ``ems:``, must name a site
  group (site indices of ``bridge:`` are checked by the bridge's own schema);
* blocks that need another block: ``vpp.absorb_system_curtailment`` needs
  ``system:``; a group belongs to at most one EMS and then has no
  ``control.ev_strategy`` of its own; a VPP group with EVs has no
  ``control.ev_strategy`` either (the aggregator drives them; ``vpp.base_strategy``);
* files: every field called ``file``, ``csv`` or ending in ``_file`` /
  ``_csv`` must name an existing regular file inside the scenario's folder (the
  rule of :func:`cps_sim.scenario.loader.resolve_data_path`, which runs apply;
  the ``bridge:`` block's certificates and password file may lie elsewhere);
* catalog names: ``sites[*].ev.models`` must name vehicle classes of
  ``devices/ev``.

Because the walk goes by field names, a block added later is covered by
these rules without extra code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

GROUP_FIELDS = ("group", "groups", "member_groups", "shared_battery_groups")

Loc = tuple[str | int, ...]


def _is_file_field(name: str) -> bool:
    return name in ("file", "csv") or name.endswith(("_file", "_csv"))


def _walk(obj: Any, loc: Loc):
    """Yield (loc, owner model, field name, value) for every field of every nested model."""
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            yield loc, obj, name, value
            yield from _walk(value, (*loc, name))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, (*loc, i))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, (*loc, k))


def reference_issues(scenario: Any, base_dir: Path | None) -> list[tuple[Loc, str]]:
    """Every dangling reference of ``scenario`` as ``(path, message)``."""
    counts = {g.name: g.count for g in scenario.sites}
    names = ", ".join(counts)
    out: list[tuple[Loc, str]] = []

    def unknown(loc: Loc, name: str) -> None:
        out.append((loc, f"no site group named {name!r} (site groups: {names})"))

    owner_of: dict[str, str] = {}
    for key, ems in (getattr(scenario, "ems", {}) or {}).items():
        if key not in counts:
            unknown(("ems", key), key)
        for m in [key, *(getattr(ems, "member_groups", None) or [])]:
            if m in owner_of:
                out.append(
                    (
                        ("ems", key),
                        f"site group {m!r} belongs to two EMS ({owner_of[m]!r} and {key!r})",
                    )
                )
            owner_of[m] = key
            if m in counts and scenario.control.for_group(m).ev_strategy is not None:
                out.append(
                    (
                        ("ems", key),
                        f"site group {m!r} also has control.ev_strategy "
                        "set; the EMS delegates EV decisions itself (give ev_strategy in "
                        "the EMS entry instead)",
                    )
                )
    for loc, _owner, name, value in _walk(scenario, ()):
        here = (*loc, name)
        if name in GROUP_FIELDS and value is not None:
            if isinstance(value, str):
                if value not in counts:
                    unknown(here, value)
            elif isinstance(value, (list, tuple)):
                for i, v in enumerate(value):
                    if isinstance(v, str) and v not in counts:
                        unknown((*here, i), v)
            elif isinstance(value, dict):
                for k in value:
                    if isinstance(k, str) and k not in counts:
                        unknown((*here, k), k)
        elif _is_file_field(name) and isinstance(value, str) and base_dir is not None:
            # the rule the run applies when it opens the file, so that validate says what
            # run will say: data files must be regular files inside the scenario's folder
            # (resolve_data_path); the bridge's certificates and password file may live
            # anywhere (/etc/ssl, a secrets folder) but must be regular files too
            from cps_sim.core.errors import InputFileError, ScenarioError
            from cps_sim.core.files import require_regular_file
            from cps_sim.scenario.loader import resolve_data_path

            try:
                if here[0] == "bridge":
                    p = Path(value)
                    require_regular_file(p if p.is_absolute() else base_dir / p)
                else:
                    resolve_data_path(value, base_dir)
            except ScenarioError as exc:
                out.append((here, "; ".join(i.message for i in exc.issues)))
            except InputFileError as exc:
                out.append((here, f"{value!r}: {exc.reason} ({exc.path})"))
    vpp = getattr(scenario, "vpp", None)
    if (
        vpp is not None
        and getattr(vpp, "absorb_system_curtailment", None) is not None
        and getattr(scenario, "system", None) is None
    ):
        out.append(
            (
                ("vpp", "absorb_system_curtailment"),
                "absorbs the system layer's "
                "curtailment, but the scenario has no system: block (add one, or remove "
                "absorb_system_curtailment)",
            )
        )
    out += _vpp_strategy_issues(scenario)
    out += _catalog_issues(scenario)
    out += _meter_issues(scenario)
    return out


def _vpp_strategy_issues(scenario: Any) -> list[tuple[Loc, str]]:
    """A VPP group's EVs are driven by the aggregator (and its ``base_strategy``): the
    group may not also have a ``control.ev_strategy`` of its own."""
    vpp = getattr(scenario, "vpp", None)
    if vpp is None:
        return []
    with_evs = {g.name for g in scenario.sites if getattr(g, "ev", None) is not None}
    out: list[tuple[Loc, str]] = []
    for i, name in enumerate(vpp.groups):
        if name not in with_evs:
            continue
        strategy = scenario.control.for_group(name).ev_strategy
        if strategy is not None:
            out.append(
                (
                    ("vpp", "groups", i),
                    f"group {name!r} already has the EV strategy "
                    f"{strategy!r} under control:; two controllers cannot drive one group "
                    "— remove it there and set vpp.base_strategy instead",
                )
            )
    return out


def _meter_issues(scenario: Any) -> list[tuple[Loc, str]]:
    """Smart meters read at local 30-minute boundaries, which must be tick ends (no
    interpolation: a tick that does not divide 30 minutes is refused), and a HEMS that
    observes the meter needs one."""
    out: list[tuple[Loc, str]] = []
    metered = set()
    tick = float(scenario.tick_s)
    for i, g in enumerate(scenario.sites):
        m = getattr(g, "smart_meter", None)
        if m is None or not m.enabled:
            continue
        metered.add(g.name)
        if 1800.0 % tick != 0.0:
            out.append(
                (
                    ("sites", i, "smart_meter"),
                    f"the meter's registers are fixed every "
                    f"30 minutes, which must be tick ends: tick_s must divide 1800 s, got "
                    f"{tick:g}",
                )
            )
            continue
        start = scenario.start.astimezone(_zone(scenario.timezone))
        s_of_day = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond * 1e-6
        if s_of_day % tick != 0.0:
            out.append(
                (
                    ("sites", i, "smart_meter"),
                    f"ticks must end on local 30-minute "
                    f"boundaries: the start {start.isoformat()} ({scenario.timezone}) is not "
                    f"a whole number of ticks of {tick:g} s after local midnight",
                )
            )
    for key, ems in (getattr(scenario, "ems", {}) or {}).items():
        if getattr(ems, "observe", "truth") != "meter":
            continue
        if key not in metered:
            out.append(
                (
                    ("ems", key, "observe"),
                    f"observe: meter needs a smart meter on site "
                    f"group {key!r} (sites[].smart_meter)",
                )
            )
        if getattr(ems, "battery_mode", "rule") != "rule":
            out.append(
                (
                    ("ems", key, "observe"),
                    f"observe: meter works with battery_mode: rule only, got {ems.battery_mode!r}",
                )
            )
    return out


def _zone(name: str):
    from cps_sim.core.clock import iana_zone

    return iana_zone(name)


def _catalog_issues(scenario: Any) -> list[tuple[Loc, str]]:
    wanted = [
        (i, g.ev.models) for i, g in enumerate(scenario.sites) if g.ev is not None and g.ev.models
    ]
    if not wanted:
        return []
    from cps_sim.core.errors import CpsSimError
    from cps_sim.models.ev_physics import load_catalog

    try:
        catalog = load_catalog()
    except CpsSimError:
        return []  # the catalog's own error surfaces when the world is built
    out = []
    for i, models in wanted:
        for name in models:
            if name not in catalog:
                out.append(
                    (
                        ("sites", i, "ev", "models", name),
                        f"unknown vehicle class {name!r}; the catalog (devices/ev) has: "
                        f"{', '.join(sorted(catalog))}",
                    )
                )
    return out
