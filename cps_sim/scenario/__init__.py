"""Scenario files: schema (pydantic), safe YAML loading with clear errors, overrides."""

from cps_sim.scenario.loader import load_scenario, load_scenario_text
from cps_sim.scenario.schema import Scenario

__all__ = ["Scenario", "load_scenario", "load_scenario_text"]
