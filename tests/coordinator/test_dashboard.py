"""The dashboard: its pure estimates (tables), the page as served (token, CSP), and the page in headless Chromium
against a running coordinator and simulator with a small fleet of agents, checked number by number against
/status."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sidecar.config import load_config
from sidecar.coordinator.dashboard import (
    LARGE_COST,
    SMALL_COST,
    History,
    ModelUsage,
    TokenCost,
    ToolStats,
    agent_order_key,
    estimate_savings,
    gpu_seconds,
)
from sidecar.coordinator.state import CoordinatorState
from sidecar.core.usage import Usage, parse_usage
from sidecar.sim.settings import SimSettings
from sidecar.stack import embedded_stack
from sidecar.testing import wait_until
from tests.conftest import require_tool

# --- pure parts --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (
            b'data: {"choices":[],"usage":{"prompt_tokens":34,"completion_tokens":20,'
            b'"prompt_tokens_details":{"cached_tokens":32}}}\n\ndata: [DONE]\n\n',
            Usage(34, 32, 20),
        ),
        (b'{"id":"x","choices":[{}],"usage":{"prompt_tokens":7,"completion_tokens":3}}', Usage(7, 0, 3)),
        (b'{"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":null}}', Usage(7, 0, 3)),
        (b"data: [DONE]\n\n", None),  # a stream without include_usage
        (b'"usage": {"prompt_tok', None),  # cut short
        (b'"usage": 5', None),
    ],
)
def test_parse_usage(tail: bytes, expected: Usage | None) -> None:
    assert parse_usage(tail) == expected


@pytest.mark.parametrize(
    ("usage", "expected_saved_s"),
    [
        ({}, 0.0),
        ({"large": ModelUsage(calls=5, prompt_tokens=10_000, completion_tokens=500)}, 0.0),  # nothing routed
        # 1,000 output tokens: 1000 x (1/170 - 1/700) s; 2,000 uncached prompt tokens: 2000 x (0.4 - 0.3) ms
        (
            {"small": ModelUsage(calls=2, prompt_tokens=3_000, cached_prompt_tokens=1_000, completion_tokens=1_000)},
            1000 * (1 / 170 - 1 / 700) + 2000 * 0.0001,
        ),
        # every non-default alias counts as small
        (
            {"a": ModelUsage(calls=1, completion_tokens=100), "b": ModelUsage(calls=1, completion_tokens=100)},
            200 * (1 / 170 - 1 / 700),
        ),
    ],
)
def test_estimate_savings(usage: dict[str, ModelUsage], expected_saved_s: float) -> None:
    result = estimate_savings(usage, "large", gpu_hour_usd=3.5)
    assert result["gpu_s_saved"] == pytest.approx(expected_saved_s, abs=1e-3)
    assert result["usd_saved"] == pytest.approx(expected_saved_s / 3600 * 3.5, abs=1e-4)
    assert result["gpu_s_if_large"] - result["gpu_s_on_small"] == pytest.approx(result["gpu_s_saved"], abs=2e-3)


def test_the_cost_basis_is_the_calibrated_one() -> None:
    # reference/calibration.md: 32B / 7B batch-8 decode ~170 / ~700 tok/s, 32B prefill ~2.5K tok/s
    assert TokenCost(prefill_s=1 / 2500, decode_s=1 / 170) == LARGE_COST
    assert SMALL_COST.decode_s == 1 / 700
    assert gpu_seconds(ModelUsage(prompt_tokens=100, cached_prompt_tokens=100), LARGE_COST) == 0.0


@pytest.mark.parametrize(
    ("stats", "saved_ms"),
    [
        (ToolStats(calls=3, hits=3, hit_ms=3.0), 0.0),  # no miss to compare with
        (ToolStats(calls=3, hits=2, hit_ms=2.0, misses=1, miss_ms=101.0), 2 * (101.0 - 1.0)),
        (ToolStats(calls=2, hits=1, hit_ms=50.0, misses=1, miss_ms=10.0), 0.0),  # a slow hit saves nothing
    ],
)
def test_tool_time_saved(stats: ToolStats, saved_ms: float) -> None:
    assert stats.saved_ms() == pytest.approx(saved_ms)


def test_agent_order_queued_longest_wait_first_then_running_then_idle_hot_first() -> None:
    agents = [
        {"agent_id": "idle-cold", "state": "idle", "tier": "cold"},
        {"agent_id": "idle-hot", "state": "idle", "tier": "hot"},
        {"agent_id": "run", "state": "running", "tier": "cold"},
        {"agent_id": "q-short", "state": "queued", "tier": "hot", "waiting_s": 1.0},
        {"agent_id": "q-long", "state": "queued", "tier": "cold", "waiting_s": 9.0},
        {"agent_id": "new", "state": "idle", "tier": None},
    ]
    ordered = [a["agent_id"] for a in sorted(agents, key=agent_order_key)]
    assert ordered == ["q-long", "q-short", "run", "idle-hot", "idle-cold", "new"]


def test_history_keeps_the_span_and_pads_models_that_appear_later() -> None:
    row = {
        "queued": {"hot": 1, "warm": 0, "cold": 2},
        "in_flight": {"hot": 1, "warm": 0, "cold": 0},
        "kv_usage": 0.5,
        "waiting": 0,
    }
    history = History(interval_s=1.0, span_s=10.0)
    history.add(0.0, {"large": row})
    history.add(5.0, {"large": row, "small": row})
    history.add(12.0, {"large": row})
    view = history.view(12.0)
    assert view["ago_s"] == [7.0, 0.0]  # the sample at t=0 fell out of the 10 s span
    assert view["models"]["small"]["queued"]["cold"] == [2, None]
    assert view["models"]["large"]["kv_usage"] == [0.5, 0.5]


# --- the page as served ---------------------------------------------------------------------------------------------

FAST = {"time_scale": 200.0}


@asynccontextmanager
async def coordinator(
    scheduling: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None, **coordinator_settings: Any
) -> AsyncIterator[tuple[str, httpx.AsyncClient, CoordinatorState]]:
    """The coordinator in front of the embedded simulator (32B `large` + 7B `small`) on loopback."""
    settings: dict[str, Any] = {f"scheduling.{k}": v for k, v in (scheduling or {}).items()}
    settings.update({f"coordinator.{k}": v for k, v in coordinator_settings.items()})
    settings.update(overrides or {})
    token = coordinator_settings.get("admin_token")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        embedded_stack(load_config(env={}, overrides=settings), SimSettings(**FAST)) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=30, headers=headers) as client,
    ):
        yield stack.url, client, stack.app.state.coordinator


def chat(text: str, model: str = "auto", max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


async def test_dashboard_page_needs_the_admin_token_and_pins_its_script() -> None:
    async with coordinator(admin_token="s3cret") as (url, client, _):
        async with httpx.AsyncClient(base_url=url) as anonymous:
            assert (await anonymous.get("/dashboard")).status_code == 401
            assert (await anonymous.get("/dashboard?token=wrong")).status_code == 401
            assert (await anonymous.get("/status?token=s3cret")).status_code == 401  # the query only opens the page
            page = await anonymous.get("/dashboard?token=s3cret")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert (await client.get("/dashboard")).status_code == 200  # the bearer header works too
        scripts = re.findall(r"<script>(.*?)</script>", page.text, re.S)
        assert len(scripts) == 1
        digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
        csp = page.headers["content-security-policy"]
        assert f"script-src 'sha256-{digest}'" in csp
        assert "connect-src 'self'" in csp and "default-src 'none'" in csp
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing loads from elsewhere
        assert page.headers["referrer-policy"] == "no-referrer"


async def test_status_counts_cache_hits_and_routed_tokens() -> None:
    async with coordinator() as (_, client, _state):
        events = [("read_file", True, 1.0), ("read_file", False, 41.0), ("edit_file", False, 5.0)]
        for seq, (tool, cached, ms) in enumerate(events, 1):
            body = {"seq": seq, "tool": tool, "ok": True, "paths": ["a.py"], "duration_ms": ms, "cached": cached}
            assert (await client.post("/v1/agents/cache-agent/events", json=body)).status_code == 200
        body = {"seq": 4, "tool": "search", "ok": True, "cache_hit": True, "duration_ms": 2.0}  # the new name works too
        assert (await client.post("/v1/agents/cache-agent/events", json=body)).status_code == 200
        response = await client.post("/v1/chat/completions", json=chat("Write a commit message for the staged changes"))
        assert response.headers["x-goose-sidecar-model"] == "small"
        usage = json.loads(response.text.split("data: ")[-2])["usage"]
        status = (await client.get("/status")).json()
        agent = next(a for a in status["agents"] if a["agent_id"] == "cache-agent")
        assert (agent["tool_calls"], agent["cacheable_calls"], agent["cache_hits"]) == (4, 3, 2)
        assert status["tool_cache"]["hits"] == 2 and status["tool_cache"]["calls"] == 3
        assert status["tool_cache"]["tool_time_saved_s"] == pytest.approx((41.0 - 1.0) / 1000)
        routed = status["savings"]["routed"]
        assert routed["calls"] == 1
        assert routed["completion_tokens"] == usage["completion_tokens"] > 0
        assert routed["prompt_tokens"] == usage["prompt_tokens"]
        assert status["savings"]["gpu_s_saved"] > 0
        assert status["savings"]["gpu_hour_usd"] == 3.5
        assert status["history"]["ago_s"]  # the sampler took its first sample at start-up
        assert set(status["history"]["models"]) == {"large", "small"}


# --- the page in headless Chromium ------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class DevTools:
    """A minimal Chrome DevTools Protocol client over one WebSocket (RFC 6455: masked text frames out, possibly
    fragmented frames in). Replies are matched by id; events are kept in `events`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, ws_url: str) -> DevTools:
        parts = urlsplit(ws_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].split()[1] == b"101", head
        return cls(reader, writer)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = future
        data = json.dumps({"id": self.ids, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(data)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        assert n < 65536
        self.writer.write(b"\x81" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        reply = await asyncio.wait_for(future, 20)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def _read_loop(self) -> None:
        message = b""
        while True:
            head = await self.reader.readexactly(2)
            n = head[1] & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            payload = await self.reader.readexactly(n)
            opcode = head[0] & 0x0F
            if opcode == 8:  # close
                return
            if opcode in (0, 1):
                message += payload
                if head[0] & 0x80:  # final fragment
                    decoded = json.loads(message)
                    message = b""
                    future = self.pending.pop(decoded.get("id", -1), None)
                    if future is not None and not future.done():
                        future.set_result(decoded)
                    elif "method" in decoded:
                        self.events.append(decoded)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            await self.task
        self.writer.close()


# Only bounds a failure: a headless Chromium took over 30 s to open its DevTools port with a CPU hog on each core.
CHROMIUM_START_S = 90


@asynccontextmanager
async def chromium(width: int = 1440, height: int = 1500) -> AsyncIterator[DevTools]:
    """Headless Chromium with a fresh profile; yields a DevTools session on its first tab."""
    binary = require_tool("chromium")
    with tempfile.TemporaryDirectory(prefix="dashboard-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--window-size={width},{height}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            port = None
            async with asyncio.timeout(CHROMIUM_START_S):
                while port is None:
                    line = (await process.stderr.readline()).decode(errors="replace")
                    assert line, "chromium exited before opening its DevTools port"
                    if match := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                        port = int(match.group(1))
            drain = asyncio.create_task(process.stderr.read())  # keep its pipe from filling up
            async with httpx.AsyncClient(trust_env=False) as http:
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
            page = next(t for t in targets if t["type"] == "page")
            tools = await DevTools.connect(page["webSocketDebuggerUrl"])
            try:
                await tools.call("Runtime.enable")
                await tools.call("Page.enable")
                await tools.call("Log.enable")
                await tools.call(
                    "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
                )
                yield tools
            finally:
                await tools.close()
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            with contextlib.suppress(Exception):
                drain.cancel()


async def wait_in_page(tools: DevTools, expression: str, within: float = 20.0) -> Any:
    """Poll `expression` in the page until it is truthy (errors while the page loads count as not yet); its value."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            value = await tools.evaluate(expression)
        except RuntimeError as exc:
            value, error = None, exc
        else:
            error = None
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"page never satisfied: {expression} (last error: {error})")
        await asyncio.sleep(0.1)


PAGE_AGENTS = """[...document.querySelectorAll('#agents tbody tr')].map(tr => Object.fromEntries(
  [...tr.querySelectorAll('[data-f]')].map(td => [td.dataset.f, td.dataset.v])))"""
PAGE_NUMBERS = "[...document.querySelectorAll('[data-k]')].map(e => [e.dataset.k, e.dataset.v, e.textContent])"
SECRET = "PROMPT-SECRET-7f3a"


@dataclass
class Fleet:
    """Agents as plain HTTP clients: finished calls on both models, one call held upstream, calls queued behind it."""

    client: httpx.AsyncClient
    state: CoordinatorState
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self) -> None:
        c = self.client
        # Each agent read a file twice (a miss, then a cache hit), then did its stage's work.
        work = [
            ("coder-1", {"tool": "run_tests", "ok": False, "exit_code": 1}, "Why does the test fail?"),
            ("coder-2", {"tool": "run_command", "ok": True, "command": "git commit"}, "Write the commit message"),
            ("coder-3", {"tool": "write_file", "ok": True, "paths": ["README.md"]}, "Document the module"),
            ("coder-4", {"tool": "edit_file", "ok": True, "paths": ["pkg/core.py"]}, "Refactor the parser"),
        ]
        for i, (agent, last, text) in enumerate(work):
            reads = [{"tool": "read_file", "ok": True, "cached": hit} for hit in (False, True)]
            for seq, event in enumerate([*reads, last], 1):
                body = {"paths": [f"secret_dir/{SECRET}.py"], "duration_ms": 1.0 if event.get("cached") else 30.0}
                body.update(seq=seq, **event)
                assert (await c.post(f"/v1/agents/{agent}/events", json=body)).status_code == 200
            headers = {"x-agent-id": agent, "agent-session-id": f"session-{i}"}
            response = await c.post(
                "/v1/chat/completions", json=chat(f"{text} {SECRET}", max_tokens=12), headers=headers
            )
            assert response.status_code == 200, response.text
        large = self.state.dispatchers["large"]
        # One call held upstream on `large` (window 1), three agents queued behind it in different tiers.
        self.tasks.append(asyncio.create_task(self._call("holder", "hot", {"x-sim-fault": "stall"})))
        await wait_until(lambda: large.in_flight == 1)
        for agent, tier in (("waiter-hot", "hot"), ("waiter-warm", "warm"), ("waiter-cold", "cold")):
            self.tasks.append(asyncio.create_task(self._call(agent, tier)))
        await wait_until(lambda: len(large.queue) == 3)

    async def _call(self, agent: str, priority: str, headers: dict[str, str] | None = None) -> None:
        await self.client.post(
            "/v1/chat/completions",
            json=chat(f"Explore the code base {SECRET}", model="large", priority=priority),
            headers={"x-agent-id": agent, **(headers or {})},
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def compare_numbers(page: list[list[str]], status: dict[str, Any]) -> int:
    """Every number the page shows with a key equals /status's value at that key; the count compared."""

    def lookup(key: str) -> Any:
        if key.startswith("sched."):
            _, alias, tier, *rest = key.split(".")
            value: Any = status["scheduling"][alias]["tiers"][tier]
        elif key.startswith("up."):
            _, alias, name = key.split(".")
            value = (status["scheduling"][alias]["upstream_metrics"] or {}).get(name)
            if name == "window":
                value = status["scheduling"][alias]["window"]
            return value
        elif key.startswith("replica."):
            _, alias, index, name = key.split(".")
            upstream = next(u for u in status["upstreams"] if u["alias"] == alias)
            return upstream["replicas"][int(index)][name]
        elif key in ("queued_total", "running_total"):
            field = "queued" if key == "queued_total" else "in_flight"
            return sum(d[field] for d in status["scheduling"].values())
        elif key.startswith("agents."):
            return sum(1 for a in status["agents"] if a["state"] == key.split(".")[1])
        elif key.startswith("latency."):
            _, kind, point = key.split(".")
            return status["latency_ms"][kind][point]
        elif key == "prefix_cache.hit_rate":
            usage = status["usage"].values()
            prompt = sum(u["prompt_tokens"] for u in usage)
            return sum(u["cached_prompt_tokens"] for u in usage) / prompt if prompt else None
        elif key == "speculation":
            return None  # the "not enabled" label
        elif key == "speculation.hit_rate":
            started = status["speculation"]["started"]
            return status["speculation"]["served"] / started if started else None
        else:
            rest = key.split(".")
            value = status
        for part in rest:
            value = value[part]
        return value

    volatile = {"up.large.kv_usage", "up.small.kv_usage"}  # the simulator's engine moves between polls
    compared = 0
    for key, raw, text in page:
        if key in volatile:
            continue
        expected = lookup(key)
        if expected is None:
            assert raw == "", (key, raw, text)
        elif isinstance(expected, bool):
            assert raw == str(expected).lower(), (key, raw, expected)
        else:
            assert float(raw) == pytest.approx(float(expected), rel=1e-9), (key, raw, expected)
        compared += 1
    return compared


@pytest.mark.timeout(300)  # Chromium's start-up alone can take most of the default 120 s on a loaded machine
async def test_dashboard_in_chromium_matches_status(tmp_path: Path) -> None:
    token = "dash-token"
    async with coordinator({"window": 1}, admin_token=token) as (url, client, state), chromium() as browser:
        fleet = Fleet(client, state)
        await fleet.start()
        try:
            expected_agents = {"coder-1", "coder-2", "coder-3", "coder-4", "holder"} | {
                f"waiter-{t}" for t in ("hot", "warm", "cold")
            }
            await browser.call("Page.navigate", url=f"{url}/dashboard?token={token}&interval=0.25")
            shown = f"document.querySelectorAll('#agents tbody tr').length >= {len(expected_agents)}"
            await wait_in_page(browser, shown)
            # Two renders after the fleet settled, so the page shows a /status taken after everything above.
            renders = int(await browser.evaluate("document.body.dataset.renders"))
            await wait_in_page(browser, f"Number(document.body.dataset.renders) >= {renders + 2}")
            rows = await browser.evaluate(PAGE_AGENTS)
            numbers = await browser.evaluate(PAGE_NUMBERS)
            html = await browser.evaluate("document.documentElement.outerHTML")
            status = (await client.get("/status")).json()
            shot = await browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        finally:
            await fleet.stop()

    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    for target in (tmp_path / "dashboard.png", os.environ.get("DASHBOARD_SCREENSHOT")):
        if target:
            await asyncio.to_thread(Path(target).write_bytes, png)

    # Agents: every one, with the stage, tier, model and state /status gives, queued ones first.
    by_id = {a["agent_id"]: a for a in status["agents"]}
    assert {r["agent_id"] for r in rows} == set(by_id) == expected_agents
    for row in rows:
        agent = by_id[row["agent_id"]]
        for name in ("state", "stage", "tier", "model", "requests", "errors", "tool_calls"):
            assert row[name] == ("" if agent[name] is None else str(agent[name])), (row, name)
        assert row["cache_hit_rate"] == ("" if agent["cache_hit_rate"] is None else str(agent["cache_hit_rate"]))
    assert [r["state"] for r in rows[:3]] == ["queued"] * 3
    assert {r["waiting_on"] for r in rows[:3]} == {"window"} and "waiting_on" not in rows[3]  # the gate holding them
    assert {r["agent_id"] for r in rows[:3]} == {"waiter-hot", "waiter-warm", "waiter-cold"}
    assert float(next(r for r in rows if r["agent_id"] == "waiter-cold")["wait_s"]) > 0
    assert by_id["coder-2"]["model"] == "small" and by_id["coder-1"]["model"] == "large"

    # Every keyed number on the page equals /status (queues, in-flight, latency, upstreams, savings, caches).
    keys = {k for k, _, _ in numbers}
    for needed in (
        "sched.large.hot.queued",
        "sched.large.cold.latency_ms.p95",
        "up.large.waiting",
        "savings.gpu_s_saved",
        "tool_cache.hit_rate",
        "replica.small.0.healthy",
        "kv.large.waiting_on.calls",
    ):
        assert needed in keys, needed
    assert compare_numbers(numbers, status) >= 60
    shown_numbers = {k: (v, text) for k, v, text in numbers}
    assert shown_numbers["sched.large.hot.queued"][0] == "1"
    assert shown_numbers["savings.routed.calls"][0] == "2"
    assert float(shown_numbers["savings.gpu_s_saved"][0]) > 0
    assert shown_numbers["speculation"][1] == "not enabled"
    assert shown_numbers["tool_cache.hit_rate"][1] == "44 %"  # 4 hits of 9 cacheable calls (reads, a test run)

    # Charts: one block per model, a line per tier.
    assert html.count('data-series="hot"') >= 4 and 'data-model="small"' in html

    # Nothing from prompts or tool arguments reaches the page.
    assert SECRET not in html and "secret_dir" not in html
    errors = [
        e
        for e in browser.events
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    assert errors == []  # no script error, no CSP violation


@pytest.mark.timeout(300)  # Chromium's start-up alone can take most of the default 120 s on a loaded machine
async def test_dashboard_in_chromium_shows_the_kv_working_set_and_a_call_waiting_for_room() -> None:
    scheduling = {"policy": "kv", "kv_capacity_tokens": 1000, "kv_correction": False, "kv_small_context_tokens": 0}
    scheduling |= {"kv_engage_ratio": 0.0, "kv_release_ratio": 0.0}  # the gates always engaged
    async with coordinator(scheduling) as (url, client, state), chromium() as browser:
        large = state.dispatchers["large"]
        fleet = Fleet(client, state)
        holder = client.post(
            "/v1/chat/completions",
            json=chat("hold", model="large"),
            headers={"x-agent-id": "a", "x-sim-fault": "stall"},
        )
        fleet.tasks.append(asyncio.create_task(holder))
        await wait_until(lambda: large.in_flight == 1)
        big = client.post("/v1/chat/completions", json=chat("x " * 2000, model="large"), headers={"x-agent-id": "b"})
        fleet.tasks.append(asyncio.create_task(big))
        await wait_until(lambda: len(large.queue) == 1)
        try:
            await browser.call("Page.navigate", url=f"{url}/dashboard?interval=0.25")
            text = await wait_in_page(
                browser,
                "(t => t.includes('for room in the working set') && t)(document.getElementById('kvset').textContent)",
            )
            rows = await browser.evaluate(PAGE_AGENTS)
            table_text = await browser.evaluate("document.querySelector('#agents tbody').textContent")
            numbers = [n for n in await browser.evaluate(PAGE_NUMBERS) if n[0].startswith("kv.")]
            status = (await client.get("/status")).json()
        finally:
            await fleet.stop()
    assert "b needs" in text and "the places (a) plan" in text and "(configured)" in text
    assert {r["agent_id"]: r.get("waiting_on") for r in rows} == {"a": None, "b": "working_set"}
    assert "KV room" in table_text
    assert next(r for r in rows if r["agent_id"] == "a")["kv_resident_tokens"] != "0"
    keys = {k for k, _, _ in numbers}
    assert {"kv.large.working_set.capacity_tokens", "kv.large.working_set.working_set_tokens"} <= keys
    assert compare_numbers(numbers, status) == len(numbers) >= 5


@pytest.mark.timeout(300)  # Chromium's start-up alone can take most of the default 120 s on a loaded machine
async def test_dashboard_in_chromium_stays_usable_with_200_agents() -> None:
    speculation_on = {"speculation.enabled": True}
    async with coordinator(overrides=speculation_on) as (url, client, _), chromium(height=1100) as browser:

        async def report(i: int) -> None:
            tool = ("read_file", "edit_file", "search", "run_tests")[i % 4]
            body = {"seq": 1, "tool": tool, "ok": i % 7 != 0, "paths": [f"m{i}.py"], "cached": i % 3 == 0}
            body["speculation"] = {"prerun_started": 1, "prerun_used": i % 2, "predictions": 4, "top1": 2, "top3": 3}
            body["speculation"].update(early_started=2, early_used=i % 2, early_wasted=1 - i % 2)
            assert (await client.post(f"/v1/agents/agent-{i:03d}/events", json=body)).status_code == 200

        await gather_limited([report(i) for i in range(200)], 20)
        await browser.call("Page.navigate", url=f"{url}/dashboard?interval=0.25")
        await wait_in_page(browser, "document.querySelectorAll('#agents tbody tr').length === 200")
        layout = await browser.evaluate(
            """(() => { const box = document.querySelector('#agents').parentElement;
                 return {height: box.getBoundingClientRect().height, overflow: box.scrollWidth - box.clientWidth,
                         page: document.documentElement.scrollHeight,
                         pageOverflow: document.documentElement.scrollWidth - window.innerWidth}; })()"""
        )
        assert layout["height"] <= 560  # the table scrolls inside its card instead of growing the page
        assert layout["page"] < 2500
        assert layout["overflow"] <= 0 and layout["pageOverflow"] <= 0  # every column fits at 1440 px
        # Sorting by a header and filtering work on the live table.
        await browser.evaluate("document.querySelector('#agents th[data-sort=agent_id]').click()")
        first = await browser.evaluate("document.querySelector('#agents tbody tr').dataset.agent")
        assert first == "agent-000"
        await browser.evaluate(
            """(() => { const f = document.getElementById('agent-filter'); f.value = 'agent-19';
                 f.dispatchEvent(new Event('input')); })()"""
        )
        assert await browser.evaluate("document.querySelectorAll('#agents tbody tr').length") == 10
        assert await browser.evaluate("document.querySelector('[data-k=\"speculation.started\"]').dataset.v") == "0"
        shown = await browser.evaluate(
            """['speculation.test_runs.started', 'speculation.test_runs.used', 'speculation.prediction.top1_rate']
                 .map(k => document.querySelector(`[data-k="${k}"]`).dataset.v)"""
        )
        assert [float(v) for v in shown] == [200, 100, 0.5]  # the sidecars' counters, summed
        early = await browser.evaluate(
            """['speculation.early_runs.started', 'speculation.early_runs.used', 'speculation.early_runs.wasted']
                 .map(k => document.querySelector(`[data-k="${k}"]`).dataset.v)"""
        )
        assert [float(v) for v in early] == [400, 100, 100]
        assert not [e for e in browser.events if e["method"] == "Runtime.exceptionThrown"]


async def gather_limited(coroutines: list[Awaitable[None]], limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Awaitable[None]) -> None:
        async with semaphore:
            await coroutine

    await asyncio.gather(*(one(c) for c in coroutines))
