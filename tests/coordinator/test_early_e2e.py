"""Streaming tool execution end to end, and its lossless target: zero changed tool results.

The simulator answers with several calls per answer (the `parallel_tool_calls` profile knob), the coordinator
has each complete sidecar call started in the agent's real sidecar (over HTTP) while the answer streams, and an
agent loop with Goose's body, headers and `_meta` runs the calls through MCP. Every call whose result came from
an early run is replayed at once, before anything else changes the workspace, on a second sidecar over the same
workspace with no cache at all (a fresh call): the texts must be equal, the test run's own timing line aside.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

from sidecar.config import load_config
from sidecar.coordinator.state import CoordinatorState
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
from tests.coordinator.test_speculation_e2e import tool_list
from tests.toolserver.conftest import TEST_COMMAND, settle

SEED = 4
AGENT, SESSION = "agent-stream", "sess-stream"
PROFILE = "qwen2.5-coder-7b-a100"
# A test run's text says when it ran and how long it took (and pytest how long it took): not its result.
_TIMING = re.compile(r"after [\d.]+ s, ran at \S+\]|in [\d.]+s\b")


def timeless(text: str) -> str:
    return _TIMING.sub("<timing>", text)


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


async def test_every_tool_result_taken_from_an_early_run_is_what_a_fresh_call_returns(tmp_path: Path) -> None:
    workspace = write_project(generate_project(SEED), tmp_path / "ws")
    settle()
    overrides = {PROFILE: {"parallel_tool_calls": 0.65}}
    sim = build_sim_app(SimSettings(seed=SEED, time_scale=20.0, profile_overrides=overrides), PROFILE)
    async with serve_app(sim) as sim_url:
        config = load_config(
            env={},
            overrides={
                "models": {"large": {"served_name": sim.state.sim.served.names[0], "replicas": [sim_url]}},
                "speculation.stream_tools": True,
            },
        )
        async with serve_coordinator(config) as (url, app):
            state: CoordinatorState = app.state.coordinator
            base = {"workspace": workspace, "test_command": TEST_COMMAND, "test_timeout_s": 60}
            sidecar = Sidecar(SidecarSettings(**base, coordinator=url, agent_id=AGENT), env={})
            plain = Sidecar(SidecarSettings(**base, cache_max_bytes=0), env={})
            async with (
                serve_http(build_http_app(sidecar)) as mcp_url,
                Client(f"{mcp_url}/mcp") as mcp,
                serve_http(build_http_app(plain)) as plain_url,
                Client(f"{plain_url}/mcp") as fresh,
            ):
                sidecar.advertise_peek(mcp_url)
                await mcp.call_tool("list_dir", {"path": ".", "depth": 1})
                await wait_until(lambda: state.book.peek_url(AGENT, None) is not None)
                replayed, differ, several = await run_agent(url, state, sidecar, mcp, fresh, workspace)
                early = dict(sidecar.early.as_dict())
    assert several >= 3, "too few answers with several calls: pick another seed"
    assert replayed >= 4 and early["used"] == replayed, early  # every used early run was replayed
    assert differ == [], differ


async def run_agent(
    url: str, state: CoordinatorState, sidecar: Sidecar, mcp: Client, fresh: Client, workspace: Path
) -> tuple[int, list[tuple[str, dict[str, Any]]], int]:
    """The agent loop; returns how many early-served results were replayed, those that differed, and how many
    answers carried several calls."""
    assert state.speculator is not None
    starter = state.speculator.early
    tools = tool_list(await mcp.list_tools())
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
    messages.append({"role": "user", "content": generate_project(SEED).task})
    meta: Any = {"agent-session-id": SESSION, "agent-working-dir": str(workspace)}
    replayed, several = 0, 0
    differ: list[tuple[str, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=60) as http:
        chat = ChatClient(http, url)
        for _ in range(24):
            reply = await chat.complete(goose_body("large", messages, tools), goose_headers(SESSION, "key", AGENT))
            messages.append(reply.message())
            if not reply.tool_calls:
                break
            several += len(reply.tool_calls) > 1
            # The starts were answered by the sidecar: which call meets an early run is decided, not raced.
            await wait_until(lambda: starter.in_flight == 0)
            for call in reply.tool_calls:
                name = call["function"]["name"].removeprefix("sidecar__")
                args = json.loads(call["function"]["arguments"] or "{}")
                used = sidecar.early.stats.used
                text = text_of(await mcp.call_tool(name, args, meta=meta))
                if sidecar.early.stats.used > used:  # this result came from an early run: replay it fresh
                    replayed += 1
                    again = text_of(await fresh.call_tool(name, args))
                    if timeless(again) != timeless(text):
                        differ.append((name, args))
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
    return replayed, differ, several
