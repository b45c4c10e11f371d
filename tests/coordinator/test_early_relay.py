"""Streaming tool execution through the relay: a real coordinator, a scripted upstream on loopback and a real
sidecar over HTTP. The first tool call starts in the sidecar while the answer is still streaming (the upstream
holds the rest), the client receives the upstream's bytes unchanged, the agent's own calls take the results,
and the agent's next call ends the answer at the sidecar."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.coordinator.state import CoordinatorState
from sidecar.serving import serve_app
from sidecar.testing import wait_until
from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from tests.coordinator.scripted_upstream import MODEL, SSE_FRAMES, Upstream, chunk, frame
from tests.toolserver.conftest import SAMPLE, TEST_COMMAND, settle, write_tree

AGENT = "agent-early"


def call_start(index: int, call_id: str, name: str) -> bytes:
    function = {"name": name, "arguments": ""}
    return frame(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]}))


def call_args(index: int, text: str) -> bytes:
    return frame(chunk({"tool_calls": [{"index": index, "function": {"arguments": text}}]}))


# An answer with three calls: a read, a search (both to the sidecar), and another extension's tool.
HEAD = [
    frame(chunk({"role": "assistant", "content": ""})),
    frame(chunk({"content": "Reading and searching."})),
    call_start(0, "call_a", "sidecar__read_file"),
    call_args(0, '{"path": '),
    call_args(0, '"pkg/calc.py"}'),
    call_start(1, "call_b", "sidecar__search"),  # call 0 is complete here
]
TAIL = [
    call_args(1, '{"pattern": "def ", "path": "."}'),
    call_start(2, "call_c", "developer__shell"),
    call_args(2, '{"command": "ls"}'),
    frame(chunk({}, finish="tool_calls")),
    SSE_FRAMES[-2],  # usage
    frame("[DONE]"),
]


@dataclass
class HoldingUpstream(Upstream):
    """Sends HEAD, waits for `release`, then TAIL (script "early"); other scripts as usual."""

    async def _stream(self, script: str) -> AsyncIterator[bytes]:
        if script != "early":
            async for data in super()._stream(script):
                yield data
            return
        for data in HEAD:
            yield data
        await self.release.wait()
        for data in TAIL:
            yield data


@contextlib.asynccontextmanager
async def early_stack(
    tmp_path: Path, stream_tools: bool
) -> AsyncIterator[tuple[HoldingUpstream, httpx.AsyncClient, CoordinatorState, Sidecar, Client]]:
    workspace = tmp_path / "ws"
    write_tree(workspace, SAMPLE)
    settle()
    upstream = HoldingUpstream()
    async with serve_app(upstream.app()) as upstream_url:
        config = load_config(
            env={},
            overrides={
                "models": {"default": {"replicas": [upstream_url]}},
                "scheduling.native_priority": "off",
                "speculation.stream_tools": stream_tools,
            },
        )
        app = build_app(config)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            state: CoordinatorState = app.state.coordinator
            settings = SidecarSettings(
                workspace=workspace, coordinator=url, agent_id=AGENT, test_command=TEST_COMMAND, test_timeout_s=60
            )
            sidecar = Sidecar(settings, env={})
            async with serve_http(build_http_app(sidecar)) as mcp_url, Client(f"{mcp_url}/mcp") as mcp:
                sidecar.advertise_peek(mcp_url)
                await mcp.call_tool("list_dir", {})  # its event tells the coordinator where the sidecar is
                assert state.speculator is not None
                await wait_until(lambda: state.book.peek_url(AGENT, None) is not None)
                yield upstream, client, state, sidecar, mcp


BODY: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "fix it"}], "stream": True}


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


async def test_a_complete_call_starts_in_the_sidecar_before_the_answer_ends(tmp_path: Path) -> None:
    async with early_stack(tmp_path, stream_tools=True) as (upstream, client, state, sidecar, mcp):
        received = b""
        headers = {"x-script": "early", "x-agent-id": AGENT}
        async with client.stream("POST", "/v1/chat/completions", json=BODY, headers=headers) as response:
            chunks = response.aiter_raw()
            while b"sidecar__search" not in received:
                received += await chunks.__anext__()
            # The upstream holds the rest of the answer: the read (call 0) is already running in the sidecar.
            await wait_until(lambda: sidecar.early.stats.started == 1, limit_s=10)
            assert state.speculator is not None and state.speculator.early.stats.calls_seen == 1
            upstream.release.set()
            async for data in chunks:
                received += data
        assert received == b"".join(HEAD + TAIL)  # every byte, unchanged
        await wait_until(lambda: sidecar.early.stats.started == 2 and sidecar.early.running == 0, limit_s=10)
        assert state.speculator.early.stats.calls_seen == 2  # another extension's call is not the sidecar's

        read = text_of(await mcp.call_tool("read_file", {"path": "pkg/calc.py"}))
        found = text_of(await mcp.call_tool("search", {"pattern": "def ", "path": "."}))
        early = sidecar.early.stats
        assert early.used == 2 and early.wasted == 0
        sidecar.cache.flush()  # the same calls, fresh: the very same texts
        assert read == text_of(await mcp.call_tool("read_file", {"path": "pkg/calc.py"}))
        assert found == text_of(await mcp.call_tool("search", {"pattern": "def ", "path": "."}))

        # The agent's next call: the sidecar hears that the answer is over (nothing left pending there).
        (await client.post("/v1/chat/completions", json=BODY, headers={"x-agent-id": AGENT})).raise_for_status()
        await wait_until(lambda: state.speculator is not None and state.speculator.early.in_flight == 0)
        assert sidecar.early.answer is not None and not sidecar.early.pending
        status = (await client.get("/status")).json()["speculation"]
        metrics = (await client.get("/metrics")).text
    assert status["stream_tools"]["calls_seen"] == 2 and status["stream_tools"]["starts_sent"] >= 2
    assert status["early_runs"]["started"] == 2 and status["early_runs"]["used"] == 2, status
    assert "goose_sidecar_speculation_early_runs_used_total 2.0" in metrics
    assert "goose_sidecar_speculation_early_calls_seen_total 2.0" in metrics


async def test_off_by_default_nothing_is_started_and_the_bytes_are_the_same(tmp_path: Path) -> None:
    async with early_stack(tmp_path, stream_tools=False) as (upstream, client, state, sidecar, _):
        upstream.release.set()
        headers = {"x-script": "early", "x-agent-id": AGENT}
        response = await client.post("/v1/chat/completions", json=BODY, headers=headers)
        assert response.content == b"".join(HEAD + TAIL)
        assert state.speculator is not None and state.speculator.early.stats.calls_seen == 0
        assert sidecar.early.stats.started == 0 and not sidecar.early.pending
