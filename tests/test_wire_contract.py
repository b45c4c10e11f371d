"""The wire contract between the sidecar and the coordinator, end to end: the real sidecar's tool events, as
bytes on the wire, are what the real coordinator parses (`core.wire`), and they have the effects they should;
the sidecar's tools are the ones the contract names. A field renamed on one side fails here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from starlette.types import Message, Receive, Scope, Send

from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.core.toolactions import stage_from_tool_event
from sidecar.core.wire import SESSION_HEADER, ToolName, parse_tool_event
from sidecar.serving import free_port, serve_app
from sidecar.testing import wait_until
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from tests.toolserver.conftest import SAMPLE, TEST_COMMAND, settle, write_tree


class Tap:
    """ASGI wrapper around the real coordinator that keeps the raw body of every event POST."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[bytes] = []
        self.answers: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/events"):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def recording_receive() -> Message:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] == "http.request" and not message.get("more_body", False):
                self.bodies.append(b"".join(chunks))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers.append(message["status"])
            await send(message)

        await self.app(scope, recording_receive, recording_send)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    write_tree(root, SAMPLE)
    return root


async def test_what_the_sidecar_sends_is_what_the_coordinator_parses(workspace: Path) -> None:
    overrides: dict[str, Any] = {"models": {"default": {"replicas": [f"http://127.0.0.1:{free_port()}"]}}}
    coordinator = build_app(load_config(env={}, overrides=overrides))
    tap = Tap(coordinator)
    settle()
    async with serve_app(tap) as url:
        settings = SidecarSettings(
            workspace=workspace, test_command=TEST_COMMAND, test_timeout_s=60, coordinator=url, agent_id="agent-c"
        )
        sidecar = Sidecar(settings, env={})
        async with sidecar, Client(sidecar.mcp) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            meta: Any = {SESSION_HEADER: "sess-c"}
            await client.call_tool("read_file", {"path": "pkg/calc.py"}, meta=meta)
            await client.call_tool("read_file", {"path": "pkg/calc.py"}, meta=meta)  # a cache hit
            await client.call_tool("edit_file", {"path": "pkg/calc.py", "before": "a - b", "after": "b - a"}, meta=meta)
            await client.call_tool("run_command", {"command": "git status"}, meta=meta)
            await wait_until(lambda: sidecar.reporter.stats.sent == 4, "the four events sent")
    assert tools == set(ToolName)
    assert tap.answers == [200] * 4
    events = [parse_tool_event(raw) for raw in tap.bodies]
    assert [e.to_wire() for e in events] == [json.loads(raw) for raw in tap.bodies]  # nothing the contract lacks
    assert [e.tool for e in events] == ["read_file", "read_file", "edit_file", "run_command"]
    assert [e.seq for e in events] == [1, 2, 3, 4] and {e.session_id for e in events} == {"sess-c"}
    assert [e.cached for e in events][:2] == [False, True]
    assert all(e.speculation is not None for e in events)
    state = coordinator.state.coordinator
    agent = state.book.get("agent-c")
    assert agent is not None and agent.events == 4 and agent.sessions == ["sess-c"]
    assert agent.cache.cache_hits == 1 and agent.cache.tool_calls == 4
    last = events[-1]  # the stage the coordinator holds is the one the last event, as parsed, reports
    expected = stage_from_tool_event(last.tool, last.ok, last.exit_code, last.paths, last.command)
    assert expected is not None and agent.stage == str(expected) and agent.sidecar_counters is not None
    assert state.book.owner("sess-c") == "agent-c"
