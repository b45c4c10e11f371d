"""What a fleet run records: one `Turn` per LLM call, one `AgentRun` per agent, one `FleetRun` per run.

Times are real seconds measured by the fleet (monotonic, relative to the run's start where named `at`);
`sim_*` fields are the same LLM durations read on the simulator's own clock when it runs in-process.
`FleetRun.time_scale` converts real seconds to simulated ones (`sim_s`): the report shows LLM and tool times
on that one clock (`scenarios/README.md` explains why tool time is scaled too).

Where a field comes from:
- `stage`, `tier`: the coordinator's response headers `x-goose-sidecar-stage` / `-tier` when it sends them
  (`stage_source="coordinator"`), else
  the fleet classifies the request it sent with the coordinator's own pure classifier
  (`sidecar.core.conversation.classify_messages`, `stage_source="fleet"`);
- `model`: the `model` field of the streamed chunks (the model that actually answered);
- `queue_wait_s`: the coordinator's `x-goose-sidecar-queue-ms` header when present, else None;
- `cache_hits`: the sidecar's own `cached` flag on its tool events (`events.EventTap`), joined by `seq`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Turn:
    index: int
    at: float  # when the LLM call was sent, seconds since the run started
    requested_model: str
    model: str | None = None
    stage: str | None = None
    tier: str | None = None
    stage_source: str | None = None
    queue_wait_s: float | None = None
    ttft_s: float = 0.0
    generation_s: float = 0.0
    llm_s: float = 0.0
    # The same three durations on the answering simulator's clock (None against a real upstream).
    sim_ttft_s: float | None = None
    sim_generation_s: float | None = None
    sim_llm_s: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    retries: int = 0
    tools: list[str] = field(default_factory=list)
    tool_s: float = 0.0
    tool_errors: int = 0
    cache_hits: int = 0
    prefetched: int = 0
    prefetch_hits: int = 0  # the turn's reads served by the cache after a prefetch had read the file
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class AgentRun:
    agent_id: str
    session_id: str
    workspace: str
    kind: str = "coder"  # "coder" (fixes its project through the sidecar) or "writer" (docs, no tools)
    turns: list[Turn] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    finished: bool = False  # the model ended with a text answer (no tool call) before the turn cap
    solved: bool = False  # no planted bug left in the workspace
    error: str | None = None
    final_text: str = ""

    @property
    def duration_s(self) -> float:
        return self.ended_at - self.started_at


@dataclass
class FleetRun:
    label: str
    agents: list[AgentRun] = field(default_factory=list)
    time_scale: float = 1.0
    wall_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0

    def sim_s(self, real_s: float) -> float:
        return real_s * self.time_scale

    @property
    def turns(self) -> list[Turn]:
        return [turn for agent in self.agents for turn in agent.turns]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for agent, raw in zip(self.agents, data["agents"], strict=True):
            raw["duration_s"] = agent.duration_s
        return data
