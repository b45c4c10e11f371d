"""Stage events reach a coordinator on loopback, and a slow or absent coordinator never holds a tool call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sidecar.core.speculation import SIDECAR_COUNTERS
from sidecar.serving import free_port, serve_app
from sidecar.testing import wait_until
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar

from .conftest import settle


class Recorder:
    """A stand-in coordinator endpoint that records events; `gate` lets a test hold every answer."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def app(self) -> Starlette:
        async def events(request: Request) -> JSONResponse:
            await self.gate.wait()
            self.events.append((request.path_params["agent_id"], await request.json()))
            return JSONResponse({"stage": "explore", "tier": "cold"})

        return Starlette(routes=[Route("/v1/agents/{agent_id}/events", events, methods=["POST"])])


async def test_each_call_is_reported_with_goose_meta(make_settings: Callable[..., SidecarSettings]) -> None:
    rec = Recorder()
    settle()
    async with serve_app(rec.app()) as url:
        sc = Sidecar(make_settings(coordinator=url, agent_id="agent-7"), env={})
        async with sc, Client(sc.mcp) as client:
            meta = {"agent-session-id": "sess-1", "agent-working-dir": "/w", "agent-tool-call-request-id": "call_1"}
            await client.call_tool("read_file", {"path": "pkg/calc.py"}, meta=meta)  # type: ignore[arg-type]
            await client.call_tool("read_file", {"path": "pkg/calc.py"}, meta=meta)  # type: ignore[arg-type]
            await client.call_tool("read_file", {"path": "nope.py"}, meta=meta)  # type: ignore[arg-type]
            await client.call_tool("run_tests", {}, meta={"agent-session-id": "sess-2"})  # type: ignore[arg-type]
            await wait_until(lambda: len(rec.events) == 4)
            assert sc.reporter.last_answer == {"stage": "explore", "tier": "cold"}
    agents = {agent for agent, _ in rec.events}
    assert agents == {"agent-7"}
    first, second, failed, tests = (event for _, event in rec.events)
    assert first["session_id"] == "sess-1" and first["seq"] == 1 and first["tool"] == "read_file"
    assert first["ok"] is True and first["paths"] == ["pkg/calc.py"] and not first["cached"]
    assert first["duration_ms"] >= 0 and isinstance(first["ts"], float)
    assert second["seq"] == 2 and second["cached"] is True
    assert failed["ok"] is False and failed["seq"] == 3 and failed["paths"] == ["nope.py"]
    assert tests["session_id"] == "sess-2" and tests["seq"] == 1 and tests["exit_code"] == 0
    for _, event in rec.events:
        assert set(event) <= {
            "session_id",
            "seq",
            "tool",
            "ok",
            "exit_code",
            "paths",
            "duration_ms",
            "ts",
            "cached",
            "command",
            "speculation",
        }
        assert set(event["speculation"]) == set(SIDECAR_COUNTERS)  # counters only, all numbers
        assert all(isinstance(v, int | float) for v in event["speculation"].values())
        assert "def add" not in str(event)  # no file contents


async def test_session_id_from_the_environment_on_stdio(make_settings: Callable[..., SidecarSettings]) -> None:
    rec = Recorder()
    async with serve_app(rec.app()) as url:
        sc = Sidecar(make_settings(coordinator=url), env={"AGENT_SESSION_ID": "from-env", "AGENT_ID": "env-agent"})
        async with sc, Client(sc.mcp) as client:
            await client.call_tool("list_dir", {})
            await wait_until(lambda: len(rec.events) == 1)
    assert rec.events[0][0] == "env-agent" and rec.events[0][1]["session_id"] == "from-env"


async def test_a_stalled_coordinator_never_holds_a_call(make_settings: Callable[..., SidecarSettings]) -> None:
    rec = Recorder()
    rec.gate.clear()  # the coordinator accepts connections but never answers
    async with serve_app(rec.app()) as url:
        sc = Sidecar(make_settings(coordinator=url, event_queue_size=4, event_timeout_s=30), env={})
        async with sc, Client(sc.mcp) as client:
            for _ in range(20):
                result = await client.call_tool("read_file", {"path": "README.md"})
                assert not result.is_error
            # every call above returned while the first POST was still waiting for its answer
            assert rec.events == []
            assert sc.reporter.stats.dropped >= 15
            rec.gate.set()
            await wait_until(lambda: len(rec.events) >= 1)


async def test_an_absent_coordinator_only_counts_failures(make_settings: Callable[..., SidecarSettings]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sc = Sidecar(make_settings(coordinator=dead), env={})
    async with sc, Client(sc.mcp) as client:
        for _ in range(3):
            result = await client.call_tool("list_dir", {})
            assert not result.is_error
        await wait_until(lambda: sc.reporter.stats.failed == 3)
    assert sc.reporter.stats.sent == 0


async def test_no_coordinator_means_no_reporting(sidecar: Sidecar) -> None:
    event = sidecar.reporter.report(tool="read_file", ok=True, paths=["a"], duration_ms=1.0)
    assert event["seq"] == 1 and sidecar.reporter.stats.queued == 0


async def test_the_real_coordinator_turns_events_into_stages(
    make_settings: Callable[..., SidecarSettings], tmp_path: Path, workspace: Path
) -> None:
    """Against the coordinator's own events endpoint, with an API key: an edit makes the agent code_edit."""
    from sidecar.config import load_config
    from sidecar.coordinator.app import build_app

    keys = tmp_path / "keys.txt"
    keys.write_text("k-0123456789abcdef-agent9 agent-9\n")
    overrides: dict[str, Any] = {
        "models": {"default": {"replicas": [f"http://127.0.0.1:{free_port()}"]}},
        "coordinator.keys_file": str(keys),
    }
    coordinator = build_app(load_config(env={}, overrides=overrides))
    settle()
    async with serve_app(coordinator) as url:
        settings = make_settings(coordinator=url, agent_id="agent-9", coordinator_api_key="k-0123456789abcdef-agent9")
        sc = Sidecar(settings, env={})
        async with sc, Client(sc.mcp) as client:
            meta: Any = {"agent-session-id": "s-9"}
            await client.call_tool("edit_file", {"path": "pkg/calc.py", "before": "a - b", "after": "b - a"}, meta=meta)
            await wait_until(lambda: sc.reporter.stats.sent == 1)
            assert sc.reporter.last_answer is not None and sc.reporter.last_answer["stage"] == "code_edit"
            assert sc.reporter.stats.failed == 0
        unkeyed = Sidecar(make_settings(coordinator=url, agent_id="agent-9"), env={})
        async with unkeyed, Client(unkeyed.mcp) as client:
            await client.call_tool("list_dir", {})
            await wait_until(lambda: unkeyed.reporter.stats.failed == 1)
        assert unkeyed.reporter.stats.last_error == "HTTP 401"
