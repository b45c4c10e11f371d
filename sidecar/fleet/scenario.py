"""Scenarios: the named, documented workload files `goose-sidecar bench` runs (`scenarios/<name>.toml`).

A scenario fixes everything a run depends on except the experiment's own switch: the fleet (coding agents,
documentation agents, turns, project size), the simulator (time scale, profile overrides), the seeds, the
experiments, and extra coordinator settings applied to every condition. `scenarios/README.md` documents
each field and why the shipped values are what they are.

`load_scenario("small")` reads `small.toml` from the first of: the current directory's `scenarios/`, the
`scenarios/` folder of the checkout this package runs from (if any), the scenarios shipped as package data
(`sidecar/fleet/scenarios/`, so a built wheel and the Docker image have them); a `.toml` path works too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sidecar import scenario_files

# A checkout's own folder (extra or edited scenarios beside the repository); absent in an installed wheel.
REPO_SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
PACKAGED_SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def _folders() -> tuple[Path, ...]:
    return (Path.cwd() / "scenarios", REPO_SCENARIOS, PACKAGED_SCENARIOS)


class FleetSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: int = Field(4, ge=1)
    writers: int = Field(0, ge=0)
    writer_turns: int = Field(6, ge=1)
    max_turns: int = Field(30, ge=1)
    modules: int = Field(4, ge=1, le=6)
    bugs: int = Field(2, ge=0)
    # Simulated seconds a full test run takes beyond pytest's own time (a sleep spread over the tests, so an
    # I/O-bound suite: no CPU); real seconds = test_s / the simulator's time_scale.
    test_s: float = Field(0.0, ge=0)
    stagger_s: float = Field(0.0, ge=0)
    keep_recent: int = Field(2, ge=0)


class BenchSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    experiments: list[str] = Field(default_factory=list)  # empty = all


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    fleet: FleetSection = Field(default_factory=FleetSection)
    # `[sim]` settings for the embedded simulator (`SimSettings` fields: time_scale, profile_overrides, ...).
    sim: dict[str, Any] = Field(default_factory=dict)
    bench: BenchSection = Field(default_factory=BenchSection)
    # Extra coordinator settings for every condition, as dotted keys (e.g. "scheduling.aging_s" = 10).
    coordinator: dict[str, Any] = Field(default_factory=dict)
    # Extra `[sidecar]` settings for every agent's sidecar (e.g. speculate_max_load_per_core = 4.0).
    sidecar: dict[str, Any] = Field(default_factory=dict)
    source: str = ""


def scenario_path(name: str) -> Path:
    return scenario_files.scenario_path(name, _folders())


def load_scenario(name: str) -> Scenario:
    """The scenario `name` (or a `.toml` path); raises ConfigError with every problem found."""
    return scenario_files.load_scenario_file(name, _folders(), Scenario)


def available_scenarios() -> list[str]:
    return scenario_files.available_scenarios(_folders())
