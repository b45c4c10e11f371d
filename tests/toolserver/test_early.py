"""Streaming tool execution in the sidecar, over real HTTP and MCP, a real workspace and real pytest runs: an
early run is used only when a fresh call would have returned the same text, joined when still running, bounded,
cancelled when the workspace moves or the answer is over, and never started for a mutating tool."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

from sidecar.serving import serve_app
from sidecar.testing import wait_until
from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from tests.toolserver.conftest import settle
from tests.toolserver.test_events import Recorder

CALC = "pkg/calc.py"
SLOW_COMMAND = f'{sys.executable} -c "import time; time.sleep(30)"'


@dataclass
class Live:
    sidecar: Sidecar
    mcp: Client
    http: httpx.AsyncClient
    early_url: str

    async def start(self, answer: str, *calls: tuple[str, dict[str, Any]]) -> Any:
        body = {"answer": answer, "calls": [{"name": n, "arguments": a} for n, a in calls]}
        response = await self.http.post(self.early_url, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        result = await self.mcp.call_tool(name, arguments)
        return "\n".join(block.text for block in result.content)  # type: ignore[union-attr]

    async def settled(self) -> None:
        """Every early run has finished (or been cancelled)."""
        await wait_until(lambda: self.sidecar.early.running == 0, limit_s=30)


@contextlib.asynccontextmanager
async def live_sidecar(settings: SidecarSettings) -> AsyncIterator[Live]:
    settle()
    sidecar = Sidecar(settings, env={})
    async with (
        serve_http(build_http_app(sidecar)) as url,
        Client(f"{url}/mcp") as mcp,
        httpx.AsyncClient(timeout=30) as http,
    ):
        peek = sidecar.advertise_peek(url)
        yield Live(sidecar, mcp, http, peek.replace("/peek?", "/early?"))


@contextlib.asynccontextmanager
async def fresh(make_settings: Callable[..., SidecarSettings]) -> AsyncIterator[Sidecar]:
    """A second sidecar on the same workspace with no cache: what a fresh call returns now."""
    async with Sidecar(make_settings(cache_max_bytes=0), env={}) as sc:
        yield sc


async def test_read_only_calls_started_early_give_the_fresh_text_and_count_as_used(
    make_settings: Callable[..., SidecarSettings],
) -> None:
    async with live_sidecar(make_settings()) as live:
        outcomes = await live.start(
            "answer-1",
            ("read_file", {"path": CALC}),
            ("search", {"pattern": "def ", "path": "."}),
            ("list_dir", {"path": "pkg", "depth": 1}),
        )
        assert outcomes == ["started"] * 3
        await live.settled()
        early = live.sidecar.early.stats
        assert early.started == 3 and early.used == 0
        read = await live.call("read_file", {"path": CALC})
        found = await live.call("search", {"pattern": "def ", "path": "."})
        listed = await live.call("list_dir", {"path": "pkg", "depth": 1})
        async with fresh(make_settings) as plain:
            assert read == (await plain.tools.read_file(CALC)).text
            assert found == (await plain.tools.search("def ", ".")).text
            assert listed == (await plain.tools.list_dir("pkg", 1)).text
        assert early.used == 3 and early.wasted == 0 and early.saved_s > 0
        stats = (await live.http.get(live.early_url.split("/early")[0] + "/stats")).json()["early"]
        assert stats["used"] == 3 and stats["pending"] == 0


async def test_mutating_and_unknown_calls_are_refused_and_change_nothing(
    make_settings: Callable[..., SidecarSettings], workspace: Path
) -> None:
    async with live_sidecar(make_settings()) as live:
        before = (workspace / CALC).read_text()
        outcomes = await live.start(
            "answer-1",
            ("edit_file", {"path": CALC, "before": "a + b", "after": "a * b"}),
            ("write_file", {"path": "new.py", "content": "x = 1\n"}),
            ("run_command", {"command": "git commit -m x"}),
            ("read_file", {"path": CALC, "start_line": "1"}),
            ("read_file", {"path": CALC}),
            ("read_file", {"path": CALC}),  # the same call twice in one answer: started once
        )
        assert [o.split(":")[0] for o in outcomes] == ["refused"] * 4 + ["started", "refused"]
        assert "not safe to start early" in outcomes[0] and "must be an integer" in outcomes[3]
        assert outcomes[5] == "refused: already started"
        await live.settled()
        assert (workspace / CALC).read_text() == before and not (workspace / "new.py").exists()
        assert live.sidecar.early.stats.refused == 5 and live.sidecar.early.stats.started == 1


async def test_a_file_changed_after_its_early_read_gets_the_fresh_content(
    make_settings: Callable[..., SidecarSettings], workspace: Path
) -> None:
    async with live_sidecar(make_settings()) as live:
        await live.start("answer-1", ("read_file", {"path": CALC}))
        await live.settled()
        (workspace / CALC).write_text("def add(a, b):\n    return 42\n")
        text = await live.call("read_file", {"path": CALC})
        assert "return 42" in text
        assert live.sidecar.early.stats.used == 0 and live.sidecar.early.stats.wasted == 1


async def test_an_early_test_run_is_joined_by_the_real_call_and_read_as_its_own_run(
    make_settings: Callable[..., SidecarSettings],
) -> None:
    async with live_sidecar(make_settings()) as live:
        assert await live.start("answer-1", ("run_tests", {})) == ["started"]
        await wait_until(lambda: live.sidecar.early.stats.started == 1)  # computing: the real call joins it
        text = await live.call("run_tests", {})
        assert text.startswith("$ ") and "cached" not in text and "1 passed" in text
        early = live.sidecar.early.stats
        assert early.used == 1 and early.wasted == 0
        assert live.sidecar.tools.speculative_used == 0  # an early run is not a pre-run
        again = await live.call("run_tests", {})
        assert again.startswith("[cached:") and early.used == 1


async def test_an_early_test_run_is_cancelled_when_the_workspace_changes(
    make_settings: Callable[..., SidecarSettings], workspace: Path
) -> None:
    async with live_sidecar(make_settings(test_command=SLOW_COMMAND)) as live:
        await live.start("answer-1", ("run_tests", {}))
        await wait_until(lambda: live.sidecar.early.stats.started == 1)
        (workspace / "pkg/extra.py").write_text("x = 1\n")
        await live.settled()
        run = next(iter(live.sidecar.early.pending.values()))
        assert run.cancelled and not run.ok
        await live.start("answer-2")  # the agent's next answer: answer-1 is over
        early = live.sidecar.early.stats
        assert early.wasted == 1 and early.cancelled == 1 and early.used == 0


async def test_concurrent_early_runs_are_capped(make_settings: Callable[..., SidecarSettings]) -> None:
    async with live_sidecar(make_settings(test_command=SLOW_COMMAND, early_max_concurrent=1)) as live:
        outcomes = await live.start("answer-1", ("run_tests", {}), ("list_dir", {}))
        assert outcomes == ["started", "refused: 1 early runs are in progress"]
        assert live.sidecar.early.stats.busy == 1 and live.sidecar.early.running == 1


async def test_a_later_answer_ends_the_earlier_ones_runs_and_refuses_late_starts(
    make_settings: Callable[..., SidecarSettings],
) -> None:
    async with live_sidecar(make_settings(test_command=SLOW_COMMAND)) as live:
        await live.start("answer-1", ("run_tests", {}), ("read_file", {"path": CALC}))
        await wait_until(lambda: live.sidecar.early.stats.started == 2)
        assert await live.start("answer-2") == []
        await live.settled()
        early = live.sidecar.early.stats
        assert early.wasted == 2 and early.cancelled == 1 and not live.sidecar.early.pending
        assert await live.start("answer-1", ("list_dir", {})) == ["refused: that answer is over"]


async def test_a_result_already_cached_is_not_started_again(make_settings: Callable[..., SidecarSettings]) -> None:
    async with live_sidecar(make_settings()) as live:
        await live.call("read_file", {"path": CALC})
        await live.start("answer-1", ("read_file", {"path": CALC}))
        await wait_until(lambda: live.sidecar.early.stats.known == 1)
        await live.call("read_file", {"path": CALC})
        assert live.sidecar.early.stats.started == 0 and live.sidecar.early.stats.used == 0


async def test_the_route_wants_the_key_and_a_well_formed_start(make_settings: Callable[..., SidecarSettings]) -> None:
    async with live_sidecar(make_settings()) as live:
        base = live.early_url.split("?")[0]
        assert (await live.http.post(base, json={"answer": "a", "calls": []})).status_code == 404
        assert (await live.http.post(f"{base}?key=guess", json={"answer": "a", "calls": []})).status_code == 404
        for bad in (b"{", b"[]", b'{"calls": []}', b'{"answer": "a", "calls": {}}', b'{"answer": ""}'):
            assert (await live.http.post(live.early_url, content=bad)).status_code == 400, bad
        too_many = {"answer": "a", "calls": [{"name": "list_dir", "arguments": {}}] * 65}
        assert (await live.http.post(live.early_url, json=too_many)).status_code == 400
        odd = await live.http.post(live.early_url, json={"answer": "a", "calls": ["not a call", {"name": 3}]})
        assert odd.json() == ["refused: not a {name, arguments} object"] * 2


async def test_sidecar_events_carry_the_early_counters(make_settings: Callable[..., SidecarSettings]) -> None:
    rec = Recorder()
    async with serve_app(rec.app()) as coordinator, live_sidecar(make_settings(coordinator=coordinator)) as live:
        await live.start("answer-1", ("read_file", {"path": CALC}))
        await live.settled()
        await live.call("read_file", {"path": CALC})
        await wait_until(lambda: len(rec.events) == 1)
    counters = rec.events[0][1]["speculation"]
    assert counters["early_started"] == 1 and counters["early_used"] == 1 and counters["early_wasted"] == 0
    assert counters["early_saved_s"] >= 0


async def test_an_early_start_after_the_real_call_began_shares_its_run_and_runs_nothing_twice(
    make_settings: Callable[..., SidecarSettings], tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"  # outside the workspace: counting runs must not change it
    command = f"{sys.executable} -c \"import time; open({str(runs)!r}, 'a').write('x'); time.sleep(1)\""
    async with live_sidecar(make_settings(test_command=command)) as live:
        real = asyncio.create_task(live.call("run_tests", {}))
        await wait_until(lambda: runs.exists())  # the agent's own run is under way
        assert await live.start("answer-1", ("run_tests", {})) == ["started"]  # the start came late
        text = await real
        await live.settled()
        assert runs.read_text() == "x"  # one process: the early run joined the agent's (single flight)
        assert text.startswith("$ ") and "cached" not in text
        await live.start("answer-2")
        early = live.sidecar.early.stats
        assert early.used == 0 and early.wasted <= 1  # it gave the agent nothing: never counted as used
