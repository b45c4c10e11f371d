"""Real MCP clients against the sidecar: the SDK client over stdio and HTTP, Goose's wire format, the Inspector CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from sidecar.serving import serve_app
from sidecar.testing import wait_until
from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar

from ..conftest import NPM_TOOLS, ROOT, require_tool
from .conftest import settle
from .test_events import Recorder

TOOLS = {
    "read_file",
    "list_dir",
    "search",
    "write_file",
    "edit_file",
    "run_tests",
    "run_command",
    "git_status",
    "git_diff",
}
CLI = [sys.executable, "-m", "sidecar.cli", "mcp"]
INSPECTOR = NPM_TOOLS / "node_modules/@modelcontextprotocol/inspector/clients/cli/build/index.js"
NODE = NPM_TOOLS / "node_modules/.bin/node"


async def check_tools(client: Client) -> None:
    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == TOOLS
    for tool in listed.values():
        assert tool.description and tool.annotations is not None and tool.input_schema["type"] == "object"
        assert tool.output_schema is None  # text content only, no structured duplicate
    assert listed["read_file"].annotations.read_only_hint is True
    assert listed["write_file"].annotations.destructive_hint is True
    assert listed["read_file"].input_schema["required"] == ["path"]
    assert listed["edit_file"].input_schema["required"] == ["path", "before", "after"]


async def exercise(client: Client) -> None:
    meta: Any = {"agent-session-id": "goose-sess", "progressToken": 7}
    ok = await client.call_tool("read_file", {"path": "pkg/calc.py", "start_line": 1, "end_line": 2}, meta=meta)
    assert not ok.is_error and ok.structured_content is None
    assert ok.content[0].text == "pkg/calc.py (lines 1-2 of 6)\n     1\tdef add(a, b):\n     2\t    return a + b"  # type: ignore[union-attr]
    bad = await client.call_tool("read_file", {"path": "../../etc/passwd"}, meta=meta)
    assert bad.is_error and "'..'" in bad.content[0].text  # type: ignore[union-attr]
    invalid = await client.call_tool("read_file", {"path": "pkg/calc.py", "start_line": 0})
    assert invalid.is_error
    edited = await client.call_tool("edit_file", {"path": "pkg/calc.py", "before": "a - b", "after": "b - a"})
    assert edited.content[0].text == "Edited pkg/calc.py (1 lines -> 1 lines)"  # type: ignore[union-attr]
    found = await client.call_tool("search", {"pattern": "b - a"})
    assert found.content[0].text == "pkg/calc.py:6:    return b - a"  # type: ignore[union-attr]


async def test_sdk_client_in_process(sidecar: Sidecar) -> None:
    async with Client(sidecar.mcp) as client:
        await check_tools(client)
        await exercise(client)


async def test_sdk_client_over_stdio(workspace: Path) -> None:
    settle()
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "--workspace", str(workspace), "--log-format", "json"],
        env={**os.environ, "AGENT_SESSION_ID": "stdio-sess"},
        cwd=str(ROOT),
    )
    async with Client(params) as client:
        await check_tools(client)
        await exercise(client)


@pytest.fixture
async def http_url(make_settings: Callable[..., SidecarSettings]) -> AsyncIterator[tuple[str, Sidecar]]:
    settle()
    sc = Sidecar(make_settings(allowed_hosts=["sidecar"]), env={})
    async with serve_http(build_http_app(sc)) as url:
        yield url, sc


async def test_sdk_client_over_http(http_url: tuple[str, Sidecar]) -> None:
    url, _ = http_url
    async with Client(f"{url}/mcp") as client:
        await check_tools(client)
        await exercise(client)


async def test_http_extras_and_host_check(http_url: tuple[str, Sidecar]) -> None:
    url, sc = http_url
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/healthz")).json()["ok"] is True
        assert (await http.get("/stats")).json()["workspace"] == sc.jail.root
        init = initialize_body()
        evil = await http.post("/mcp", json=init, headers={**MCP_HEADERS, "Host": "evil.example:8080"})
        assert evil.status_code == 421
        named = await http.post("/mcp", json=init, headers={**MCP_HEADERS, "Host": "sidecar:8765"})
        assert named.status_code == 200


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def initialize_body() -> dict[str, Any]:
    """What Goose sends first (protocol 2025-03-26, client goose-cli)."""
    return {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-03-26",
            "capabilities": {"roots": {}, "sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "goose-cli", "version": "1.40.0"},
        },
    }


def rpc_result(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])  # type: ignore[no-any-return]
    return response.json()  # type: ignore[no-any-return]


async def test_goose_wire_format_over_http(make_settings: Callable[..., SidecarSettings]) -> None:
    """Goose's exact requests: 2025-03-26 handshake, then tools/call with its `_meta` keys; events join by session."""
    rec = Recorder()
    settle()
    async with serve_app(rec.app()) as coordinator:
        sc = Sidecar(make_settings(coordinator=coordinator, agent_id="agent-3"), env={})
        async with serve_http(build_http_app(sc)) as url, httpx.AsyncClient(base_url=url, headers=MCP_HEADERS) as http:
            init = await http.post("/mcp", json=initialize_body())
            assert rpc_result(init)["result"]["protocolVersion"] == "2025-03-26"
            session = {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-03-26"}
            await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {
                    "name": "list_dir",
                    "arguments": {"path": "pkg", "depth": 1},
                    "_meta": {
                        "agent-session-id": "20250101_7",
                        "agent-working-dir": str(sc.jail.root),
                        "agent-tool-call-request-id": "call_abc",
                        "progressToken": 1,
                    },
                },
            }
            result = rpc_result(await http.post("/mcp", json=call, headers=session))["result"]
            assert result["isError"] is False
            assert result["content"][0]["text"].split("\n")[1:] == ["pkg/__init__.py", "pkg/calc.py"]
            await wait_until(lambda: len(rec.events) == 1)
    assert rec.events[0][0] == "agent-3"
    assert rec.events[0][1]["session_id"] == "20250101_7" and rec.events[0][1]["tool"] == "list_dir"


CLI_TOKEN = "cli-token-0123456789abcdef"


async def test_cli_serves_http(workspace: Path) -> None:
    settle()
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "--workspace",
        str(workspace),
        "--http",
        "127.0.0.1:0",
        "--log-format",
        "json",
        cwd=str(ROOT),
        env={**os.environ, "GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN": CLI_TOKEN},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "the server exited"
            found = re.search(r'http://[^"\s]+/mcp', line.decode())
            url = found.group(0) if found else None
        async with (
            create_mcp_http_client(headers={"Authorization": f"Bearer {CLI_TOKEN}"}) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            await exercise(client)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def inspector(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    node = require_tool("node (22, from scripts/_npm_tools.sh)", NODE)
    require_tool("MCP Inspector CLI (scripts/_npm_tools.sh)", INSPECTOR)
    return subprocess.run(
        [node, str(INSPECTOR), *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd or ROOT,
        env={**os.environ, "MCP_CATALOG_PATH": str((cwd or ROOT) / ".inspector-catalog.json")},
    )


def test_inspector_cli_over_stdio(workspace: Path, tmp_path: Path) -> None:
    settle()
    server = [*CLI, "--workspace", str(workspace)]
    listed = inspector(*server, "--method", "tools/list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {tool["name"] for tool in json.loads(listed.stdout)["tools"]} == TOOLS
    called = inspector(
        *server,
        "--method",
        "tools/call",
        "--tool-name",
        "read_file",
        "--tool-arg",
        "path=pkg/calc.py",
        "--tool-arg",
        "start_line=5",
        "--tool-metadata",
        "agent-session-id=inspector-sess",
        cwd=tmp_path,
    )
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert result["isError"] is False
    assert result["content"][0]["text"].split("\n")[:2] == ["pkg/calc.py (lines 5-6 of 6)", "     5\tdef sub(a, b):"]
    failed = inspector(
        *server,
        "--method",
        "tools/call",
        "--tool-name",
        "write_file",
        "--tool-arg",
        "path=/etc/x",
        "--tool-arg",
        "content=x",
        cwd=tmp_path,
    )
    assert failed.returncode == 5  # the Inspector's exit code for isError results
    assert "outside the workspace" in json.loads(failed.stdout)["content"][0]["text"]


async def test_inspector_cli_over_http(http_url: tuple[str, Sidecar], tmp_path: Path) -> None:
    url, _ = http_url
    listed = await asyncio.to_thread(inspector, f"{url}/mcp", "--method", "tools/list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {tool["name"] for tool in json.loads(listed.stdout)["tools"]} == TOOLS
    called = await asyncio.to_thread(
        inspector,
        f"{url}/mcp",
        "--method",
        "tools/call",
        "--tool-name",
        "search",
        "--tool-arg",
        "pattern=def add",
        "--tool-metadata",
        "agent-session-id=x",
        cwd=tmp_path,
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["content"][0]["text"] == "pkg/calc.py:1:def add(a, b):"
