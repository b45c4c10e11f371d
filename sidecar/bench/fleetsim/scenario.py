"""Fleet-simulation scenarios: `<name>.toml` shipped in `sidecar/bench/fleetsim/scenarios/` (or a `.toml` path),
validated as a whole.

Every field is documented in `scenarios/fleet-sim/README.md` with the source of its default. A scenario fixes the
fleet (agents, recipes, turns, context growth, output lengths, tool times), the GPUs (profile, replicas) and the
conditions and seeds; the simulation adds nothing else, so one scenario and one seed give one result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sidecar import scenario_files
from sidecar.coordinator.settings import SchedulingSettings

# Shipped as package data (a built wheel and the Docker image have them); a checkout's `scenarios/fleet-sim/`
# and the current directory's come first, for extra or edited scenarios.
PACKAGED_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
REPO_SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios" / "fleet-sim"


def _folders() -> tuple[Path, ...]:
    return (Path.cwd() / "scenarios" / "fleet-sim", REPO_SCENARIOS, PACKAGED_SCENARIOS)


class FleetSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: int = Field(64, ge=1)
    recipes: int = Field(2, ge=1)  # agents of one recipe share its system prompt and tool list (a cached prefix)
    system_prompt_tokens: int = Field(3000, ge=16)
    tool_list_tokens: int = Field(2000, ge=0)
    task_prompt_tokens: int = Field(500, ge=16)  # the issue text: unique per agent
    turns_mean: float = Field(26.0, gt=1)  # SWE-agent ~26 turns per task (calibration.md)
    turns_min: int = Field(8, ge=2)
    turns_max: int = Field(64, ge=2)  # OpenHands ~64 (calibration.md)
    context_min_tokens: int = Field(16000, ge=64)  # the context every task grows to, drawn uniformly in [min, max]
    context_max_tokens: int = Field(32000, ge=64)
    output_scale: float = Field(1.0, gt=0)  # x the profile's per-stage output means (the seed's call lengths)
    output_mean_tokens: int = Field(0, ge=0)  # > 0: every stage's mean instead (TraceLab: ~523 per step)
    output_sigma: float = Field(0.5, ge=0)
    tool_median_s: float = Field(0.3, gt=0)  # TraceLab: tool latency median 0.3 s, p90 13.6 s (calibration.md)
    tool_p90_s: float = Field(13.6, gt=0)
    test_median_s: float = Field(10.0, gt=0)  # test runs take longer (scenario assumption, README)
    test_p90_s: float = Field(60.0, gt=0)
    tool_max_s: float = Field(300.0, gt=0)
    start_span_s: float = Field(0.0, ge=0)  # agents start uniformly in [0, span]; 0 = all at once
    # Tool calls per answer, lognormal through this median and mean (TraceLab: median 2, mean 10.8, calibration.md);
    # 1 and 1 = one call per answer. The turn's tool time is shared equally by its calls.
    tool_calls_median: float = Field(1.0, ge=1)
    tool_calls_mean: float = Field(1.0, ge=1)
    tool_calls_max: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> FleetSection:
        if self.turns_min > self.turns_max:
            raise ValueError("turns_min must be <= turns_max")
        if self.context_min_tokens > self.context_max_tokens:
            raise ValueError("context_min_tokens must be <= context_max_tokens")
        if self.tool_calls_mean < self.tool_calls_median:
            raise ValueError("tool_calls_mean must be >= tool_calls_median")
        if self.tool_p90_s < self.tool_median_s or self.test_p90_s < self.test_median_s:
            raise ValueError("a p90 must be >= its median")
        return self


class GpuSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str = "qwen2.5-coder-32b-a100"
    replicas: int = Field(1, ge=1)
    profile_overrides: dict[str, Any] = Field(default_factory=dict)
    small_profile: str = "qwen2.5-coder-7b-a100"  # the small model's replica, in conditions that route to one


_SCHEDULING = SchedulingSettings()  # the defaults below are the coordinator's own


class CoordinatorSection(BaseModel):
    """The coordinator settings the conditions use (defaults: `sidecar/coordinator/settings.py`)."""

    model_config = ConfigDict(extra="forbid")
    aging_s: float = Field(_SCHEDULING.aging_s, gt=0)
    kv_keep_s: float = Field(_SCHEDULING.kv_keep_s, ge=0)
    metrics_interval_s: float = Field(_SCHEDULING.metrics_interval_s, gt=0)
    max_window: int = Field(_SCHEDULING.max_window, ge=1)
    hot_pool: int = Field(_SCHEDULING.hot_pool, ge=1)
    cold_pool: int = Field(_SCHEDULING.cold_pool, ge=1)
    warm_lead_s: float = Field(2.0, ge=0)  # prefix warming starts this long before a tool run's end
    warm_min_tool_s: float = Field(8.0, ge=0)  # ... of tool runs at least this long (shorter ones keep their place)
    warm_share: float = Field(0.1, gt=0)  # warming tokens <= this share of the real calls' computed prompt tokens


class BenchSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    conditions: list[str] = Field(default_factory=list)  # empty = all
    solo: bool = True  # run every agent alone too (slowdowns)


class FleetSimScenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    fleet: FleetSection = Field(default_factory=FleetSection)
    gpu: GpuSection = Field(default_factory=GpuSection)
    coordinator: CoordinatorSection = Field(default_factory=CoordinatorSection)
    bench: BenchSection = Field(default_factory=BenchSection)
    source: str = ""


def scenario_path(name: str) -> Path:
    return scenario_files.scenario_path(name, _folders())


def load_scenario(name: str) -> FleetSimScenario:
    """The scenario `name` (or a `.toml` path); raises ConfigError listing every problem found."""
    return scenario_files.load_scenario_file(name, _folders(), FleetSimScenario, "fleet-sim scenario")


def available_scenarios() -> list[str]:
    return scenario_files.available_scenarios(_folders())
