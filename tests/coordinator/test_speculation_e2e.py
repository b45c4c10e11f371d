"""LLM-level speculation end to end: a real sidecar over HTTP, the coordinator, the simulator, an agent loop.

The loop is the fleet's (Goose's stand-in): streamed calls with Goose's body and headers, tool calls through
MCP with Goose's `_meta`, results appended as tool messages. Every file is read once before the loop, so the
reads the model asks for are already known to the sidecar: the coordinator predicts the next request from the
answer and the sidecar's `/peek`, sends it, and serves it when the real request is identical. The loop waits
for the coordinator's follow-up before running the tools (so which calls are served is deterministic here;
the benchmark measures the real race). Then every answer is checked against the same requests replayed with
speculation disabled over a fresh simulator with the same seed: zero may differ.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

from sidecar.config import load_config
from sidecar.coordinator.speculation import Speculator
from sidecar.coordinator.state import CoordinatorState
from sidecar.core.nextcall import assistant_from_sse
from sidecar.fleet.agent import SYSTEM_PROMPT
from sidecar.fleet.chat import ChatClient, goose_body, goose_headers
from sidecar.fleet.project import generate_project, write_project
from sidecar.serving import serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings
from sidecar.stack import serve_coordinator
from sidecar.testing import wait_until
from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from tests.toolserver.conftest import TEST_COMMAND, settle

SEED = 3
AGENT, SESSION = "agent-e2e", "sess-e2e"
PROFILE = "qwen2.5-coder-7b-a100"
SPECULATIVE = "x-goose-sidecar-speculative"


@dataclass
class Turn:
    body: dict[str, Any]
    message: dict[str, Any]
    speculative: bool


@contextlib.asynccontextmanager
async def coordinator_over_sim(
    speculation: bool, mode: str = "prefetch"
) -> AsyncIterator[tuple[str, CoordinatorState]]:
    """A fresh simulator (seed SEED, 20x real time) and the coordinator in front of it as model `large`."""
    sim = build_sim_app(SimSettings(seed=SEED, time_scale=20.0), PROFILE)
    async with serve_app(sim) as sim_url:
        config = load_config(
            env={},
            overrides={
                "models": {"large": {"served_name": sim.state.sim.served.names[0], "replicas": [sim_url]}},
                "speculation.enabled": speculation,
                "speculation.mode": mode,
                "scheduling.metrics_interval_s": 0.1,
            },
        )
        async with serve_coordinator(config) as (url, app):
            yield url, app.state.coordinator


def tool_list(listed: Any) -> list[dict[str, Any]]:
    """The sidecar's tools as Goose offers them to the model (`sidecar/fleet/mcp_client.py`)."""
    return [
        {
            "type": "function",
            "function": {
                "name": f"sidecar__{t.name}",
                "description": t.description or "",
                "parameters": t.input_schema,
                "strict": False,
            },
        }
        for t in listed.tools
    ]


async def run_agent(
    url: str, mcp: Client, workspace: Path, spec: Speculator, turns: int, change_after_hits: int
) -> tuple[list[Turn], int | None]:
    """The agent loop; once `change_after_hits` answers were served speculatively, the next read of a file
    whose result was predicted meets a changed file (edited by someone else meanwhile). Returns the turns and
    the index of the turn whose request carries the changed file's content."""
    tools = tool_list(await mcp.list_tools())
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
    messages.append({"role": "user", "content": generate_project(SEED).task})
    meta: Any = {"agent-session-id": SESSION, "agent-working-dir": str(workspace)}
    out: list[Turn] = []
    changed: int | None = None
    async with httpx.AsyncClient(timeout=60) as http:
        chat = ChatClient(http, url)
        for _ in range(turns):
            body = goose_body("large", messages, tools)
            reply = await chat.complete(body, goose_headers(SESSION, "key", AGENT))
            out.append(Turn(json.loads(json.dumps(body)), reply.message(), reply.headers.get(SPECULATIVE) == "1"))
            messages.append(reply.message())
            if not reply.tool_calls:
                break
            await wait_until(lambda: spec.followups_in_flight == 0)
            for call in reply.tool_calls:
                name = call["function"]["name"].removeprefix("sidecar__")
                args = json.loads(call["function"]["arguments"] or "{}")
                hits = sum(t.speculative for t in out)
                if changed is None and hits >= change_after_hits and name == "read_file" and AGENT in spec.pending:
                    changed = len(out)
                    with (workspace / args["path"]).open("a") as f:
                        f.write("# changed by someone else\n")
                result = await mcp.call_tool(name, args, meta=meta)
                text = "\n".join(block.text for block in result.content)  # type: ignore[union-attr]
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
    return out, changed


async def agent_run(
    workspace: Path, state: CoordinatorState, url: str, turns: int, change_after_hits: int
) -> tuple[list[Turn], int | None]:
    """The agent loop with its own sidecar over HTTP, every file read once first (so reads are known)."""
    spec = state.speculator
    assert spec is not None
    settings = SidecarSettings(
        workspace=workspace, coordinator=url, agent_id=AGENT, test_command=TEST_COMMAND, test_timeout_s=60
    )
    sidecar = Sidecar(settings, env={})
    async with serve_http(build_http_app(sidecar)) as mcp_url, Client(f"{mcp_url}/mcp") as mcp:
        sidecar.advertise_peek(mcp_url)
        for rel in generate_project(SEED).files:
            await mcp.call_tool("read_file", {"path": rel})
        await wait_until(lambda: spec.book.peek_url(AGENT, None) is not None)  # learnt from the sidecar's events
        return await run_agent(url, mcp, workspace, spec, turns, change_after_hits)


async def test_identical_next_requests_are_served_speculatively_and_every_answer_is_the_plain_one(
    tmp_path: Path,
) -> None:
    workspace = write_project(generate_project(SEED), tmp_path / "ws")
    settle()
    async with coordinator_over_sim(speculation=True) as (url, state):
        turns, changed = await agent_run(workspace, state, url, turns=14, change_after_hits=2)
        assert state.speculator is not None
        stats = state.speculator.status()
    served = [i for i, t in enumerate(turns) if t.speculative]
    assert len(served) >= 2, stats
    assert stats["served"] == len(served) and stats["results_known"] >= len(served)
    # The sidecar's own counters came with its events: one sidecar, its predictions scored.
    assert stats["sidecars"] == 1 and stats["prediction"]["predictions"] >= 5, stats
    # The changed file: its read was predicted from the old content, so the next request differed: not served.
    assert changed is not None and changed < len(turns), "no predicted read after the hits; pick another seed"
    assert "# changed by someone else" in json.dumps(turns[changed].body["messages"][-3:])
    assert not turns[changed].speculative and stats["mismatched"] >= 1

    # Same requests, speculation off, fresh simulator with the same seed: the same answers, every one.
    async with coordinator_over_sim(speculation=False) as (plain_url, plain_state), httpx.AsyncClient() as http:
        differ = []
        for i, turn in enumerate(turns):
            response = await http.post(f"{plain_url}/v1/chat/completions", json=turn.body, timeout=60)
            assert SPECULATIVE not in response.headers
            reply = assistant_from_sse(response.content)
            assert reply is not None
            if reply.message != turn.message:
                differ.append(i)
        assert plain_state.speculator is not None and plain_state.speculator.stats.started == 0
    assert differ == [], stats


async def test_warm_mode_only_warms_the_prefix_and_never_serves(tmp_path: Path) -> None:
    workspace = write_project(generate_project(SEED), tmp_path / "ws")
    settle()
    async with coordinator_over_sim(speculation=True, mode="warm") as (url, state):
        turns, _ = await agent_run(workspace, state, url, turns=6, change_after_hits=99)
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = (await http.get("/metrics")).text
            status = (await http.get("/status")).json()["speculation"]
    assert status["warmed"] >= 1 and status["started"] == 0 and status["served"] == 0, status
    assert not any(t.speculative for t in turns)
    known = status["results_known"]
    assert f'goose_sidecar_speculation_followups_total{{outcome="results_known"}} {known}.0' in metrics
