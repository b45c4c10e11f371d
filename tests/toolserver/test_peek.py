"""`POST /peek`: which tool results the sidecar already has, byte for byte what the tool call would return now;
its URL (with its key) travels in the sidecar's events, over HTTP and beside stdio (`--peek-port`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from sidecar.serving import serve_app
from sidecar.testing import wait_until
from sidecar.toolserver.command import advertised_host
from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar

from ..conftest import ROOT
from .conftest import settle
from .test_events import Recorder

CALC = "pkg/calc.py"
META = {"agent-session-id": "sess-p"}


def text_of(result: object) -> str:
    """The text an MCP client puts in the tool message (the fleet joins the text blocks)."""
    return "\n".join(block.text for block in result.content)  # type: ignore[attr-defined]


async def test_peek_over_http_is_exactly_the_tool_text_and_never_computes(
    make_settings: Callable[..., SidecarSettings],
) -> None:
    settle()
    rec = Recorder()
    async with serve_app(rec.app()) as coordinator:
        sc = Sidecar(make_settings(coordinator=coordinator, agent_id="a1"), env={})
        async with serve_http(build_http_app(sc)) as url, Client(f"{url}/mcp") as client:
            peek_url = sc.advertise_peek(url)
            assert peek_url.startswith(f"{url}/peek?key=")
            asks = [
                {"name": "read_file", "arguments": {"path": CALC}},
                {"name": "list_dir", "arguments": {"path": "pkg", "depth": 1}},
                {"name": "write_file", "arguments": {"path": "x", "content": "y"}},  # never known
                {"name": "read_file", "arguments": {"path": 7}},  # malformed: not known, not an error
                "not an object",
            ]
            async with httpx.AsyncClient() as http:
                before = (await http.post(peek_url, json=asks)).json()
                assert before == [None] * 5  # nothing read yet, and a peek computes nothing
                read = await client.call_tool("read_file", {"path": CALC}, meta=META)  # type: ignore[arg-type]
                listed = await client.call_tool("list_dir", {"path": "pkg", "depth": 1}, meta=META)  # type: ignore[arg-type]
                after = (await http.post(peek_url, json=asks)).json()
                assert after == [text_of(read), text_of(listed), None, None, None]
                assert (await http.post(f"{url}/peek", json=asks)).status_code == 404  # no key
                assert (await http.post(f"{url}/peek?key=guess", json=asks)).status_code == 404
                assert (await http.post(peek_url, content=b"{")).status_code == 400
                assert (await http.post(peek_url, json={"name": "read_file"})).status_code == 400
                (Path(sc.jail.root) / CALC).write_text("changed\n")
                assert (await http.post(peek_url, json=asks[:1])).json() == [None]  # stale: never served
            await wait_until(lambda: len(rec.events) == 2)
    assert all(event["peek_url"] == peek_url for _, event in rec.events)


async def test_peek_renders_a_speculative_test_run_as_the_agent_will_receive_it(sidecar: Sidecar) -> None:
    await sidecar.tools.run_tests(speculative=True)  # the pre-runner's run: the agent has not seen it
    peeked = await sidecar.peek([{"name": "run_tests", "arguments": {}}])
    first = await sidecar.tools.run_tests()
    assert first.speculative and peeked == [first.text] and not first.text.startswith("[cached")
    again = await sidecar.peek([{"name": "run_tests", "arguments": {}}])
    assert again == [(await sidecar.tools.run_tests()).text] and again[0].startswith("[cached")  # type: ignore[union-attr]


async def test_stdio_sidecar_with_peek_port_reports_its_peek_url(workspace: Path) -> None:
    settle()
    rec = Recorder()
    async with serve_app(rec.app()) as coordinator:
        params = StdioServerParameters(
            command=sys.executable,
            args=[
                *("-m", "sidecar.cli", "mcp", "--workspace", str(workspace), "--coordinator", coordinator),
                *("--agent-id", "stdio-1", "--peek-port", "0", "--log-format", "json"),
            ],
            env={**os.environ, "AGENT_SESSION_ID": "s1"},
            cwd=str(ROOT),
        )
        async with Client(params) as client:
            read = await client.call_tool("read_file", {"path": CALC})
            await wait_until(lambda: len(rec.events) == 1, limit_s=10)
            peek_url = rec.events[0][1]["peek_url"]
            assert peek_url.startswith("http://127.0.0.1:") and "/peek?key=" in peek_url
            async with httpx.AsyncClient() as http:
                answer = await http.post(peek_url, json=[{"name": "read_file", "arguments": {"path": CALC}}])
                assert answer.json() == [text_of(read)]
                assert (await http.get(peek_url.split("/peek")[0] + "/stats")).status_code == 404  # /peek only


def test_advertised_host_of_a_wildcard_bind() -> None:
    assert advertised_host("0.0.0.0", []) == "127.0.0.1"
    assert advertised_host("0.0.0.0", ["*", "sidecar-3"]) == "sidecar-3"
    assert advertised_host("10.0.0.5", ["sidecar-3"]) == "10.0.0.5"
