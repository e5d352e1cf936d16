"""docs/kpis.md is generated from the KPI registry and the column descriptions, and current."""

from __future__ import annotations

from cps_sim.experiment import kpi_docs
from cps_sim.experiment.columns import describe, flow_columns
from cps_sim.experiment.kpi_registry import FAMILIES, definition
from cps_sim.world.populations import FLOW_DEFS, FLOWS


def test_docs_kpis_md_is_current():
    assert kpi_docs.DOC.read_text(encoding="utf-8") == kpi_docs.render(), (
        "docs/kpis.md is stale: run python -m cps_sim.experiment.kpi_docs"
    )
    assert kpi_docs.main(["--check"]) == 0


def test_every_declared_flow_has_a_documented_column_and_kpi():
    cols = {c.name for c in flow_columns()}
    for f in FLOW_DEFS:
        name = f.name.removesuffix("_wh")
        assert f"{name}_w" in cols
        assert describe(f"{name}_w").description
        assert definition(f"{name}_kwh", FLOWS) is not None


def test_registry_names_are_unique_and_every_entry_is_complete():
    seen = set()
    for fam in FAMILIES:
        for k in fam.kpis:
            assert k.name not in seen, k.name
            seen.add(k.name)
            assert k.unit and k.formula and k.meaning, k.name
    # a name that nothing defines is not silently accepted
    assert definition("no_such_kpi", FLOWS) is None
    assert definition("homes.heat_pump_kwh", FLOWS)[1].name == "<group.>heat_pump_kwh"
    assert definition("heat_pump_kwh", FLOWS)[1].name == "<group.>heat_pump_kwh"
    assert definition("system_coal_mwh", FLOWS)[0].key == "system"
