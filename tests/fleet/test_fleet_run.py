"""A two-agent fleet end to end: simulator, coordinator and event tap in-process on loopback, each agent's
sidecar a real `goose-sidecar mcp` subprocess over stdio, pytest runs for real in each agent's project."""

from __future__ import annotations

from pathlib import Path

import httpx

from sidecar.config import load_config
from sidecar.fleet.metrics import summarize
from sidecar.fleet.runner import FleetOptions, run_fleet
from sidecar.fleet.stack import start_stack
from sidecar.sim.settings import SimSettings


async def test_two_agents_run_through_real_processes_and_record_turns(tmp_path: Path) -> None:
    base = load_config(env={})
    sim = SimSettings(time_scale=60.0, seed=3, max_agent_steps=8)
    options = FleetOptions(agents=2, writers=1, writer_turns=2, max_turns=8, project_seed=3, label="test")
    async with start_stack(base, sim=sim, overrides={"routing.enabled": False}) as stack:
        run = await run_fleet(options, stack, tmp_path)
        async with httpx.AsyncClient() as client:
            status = (await client.get(f"{stack.coordinator_url}/status")).json()

    assert [a.agent_id for a in run.agents] == ["agent-1", "agent-2", "writer-1"]
    coders = [a for a in run.agents if a.kind == "coder"]
    for agent in coders:
        assert agent.error is None
        assert 1 <= len(agent.turns) <= 8
        assert agent.workspace.startswith(str(tmp_path))
        first = agent.turns[0]
        assert first.model == stack.models["large"]
        assert first.tier in ("hot", "warm", "cold") and first.stage is not None
        assert first.prompt_tokens and first.completion_tokens
        assert 0 < first.ttft_s <= first.llm_s
        assert first.sim_llm_s is not None and first.sim_llm_s > first.llm_s  # 60x faster than the sim's clock
        called = [t for turn in agent.turns for t in turn.tools]
        assert called and all(name.startswith("sidecar__") for name in called)
    writer = run.agents[-1]
    assert writer.kind == "writer" and writer.finished and len(writer.turns) == 2
    assert {t.stage for t in writer.turns} == {"docs", "commit_msg"}

    # Every tool call reached the coordinator as a stage event through the tap, joined back by seq.
    calls = sum(len(t.tools) for a in coders for t in a.turns)
    assert run.events == calls
    seen = {a["agent_id"] for a in status["agents"]}
    assert {"agent-1", "agent-2", "writer-1"} <= seen

    summary = summarize(run)
    assert summary["calls"] == sum(len(a.turns) for a in run.agents)
    assert summary["wall_s"] > 0 and summary["latency_s"] > 0
    assert summary["calls_by_model"] == {"32B": summary["calls"]}
    assert run.timeline and "large" in run.timeline[-1]
