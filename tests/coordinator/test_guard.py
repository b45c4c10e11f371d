"""The coordinator's front door on a real server: cross-site requests, foreign Host names, oversized bodies and
headers are answered before routing (and before buffering), with the coordinator's own serving options."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.coordinator.app import build_app
from sidecar.coordinator.command import uvicorn_options
from sidecar.serving import serve_app
from tests.coordinator.conftest import make_config, stack
from tests.coordinator.scripted_upstream import Upstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
EVENT = {"session_id": "s", "seq": 0, "tool": "read_file", "ok": True, "paths": ["a.py"]}


@pytest.mark.parametrize(
    "ctype",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "TEXT/PLAIN",
        "text/plain ; x=y",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/agents/agent-2/v1/chat/completions", "/v1/agents/a/events"])
async def test_cross_site_simple_posts_are_refused(ctype: str, path: str) -> None:
    """What a page on another site can POST without a preflight (the issue: chat billed to any agent, events
    that move an agent's stage), from a browser that sent no Origin (old ones, or privacy settings)."""
    async with stack() as st:
        body = json.dumps(CHAT if "chat" in path else EVENT)
        answer = await st.client.post(path, content=body, headers={"content-type": ctype})
        assert answer.status_code == 415 and answer.json()["error"]["code"] == 415
        assert st.upstream.received == [] and st.state.telemetry.status(0.0)["agents"] == []


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://evil.example:8080", "null", "http://127.0.0.1.evil.example", "file://"]
)
@pytest.mark.parametrize("method,path", [("POST", "/v1/chat/completions"), ("GET", "/status"), ("GET", "/v1/models")])
async def test_requests_from_another_sites_pages_are_refused(origin: str, method: str, path: str) -> None:
    async with stack() as st:
        answer = await st.client.request(
            method, path, json=CHAT if method == "POST" else None, headers={"Origin": origin}
        )
        assert answer.status_code == 403
        assert st.upstream.received == []


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", "coordinator.evil", ""])
@pytest.mark.parametrize("path", ["/status", "/metrics", "/healthz", "/dashboard", "/v1/models"])
async def test_a_foreign_host_reads_nothing(host: str, path: str) -> None:
    """DNS rebinding: a page whose name now resolves to the coordinator reads /status under its own name."""
    async with stack(allowed_hosts=["coordinator"]) as st:
        assert (await st.client.get(path, headers={"Host": host})).status_code == 421
        for good in ("coordinator", "coordinator:8080", "localhost:1", st.url.removeprefix("http://")):
            assert (await st.client.get("/healthz", headers={"Host": good})).status_code == 200


async def test_same_origin_and_json_pass() -> None:
    async with stack() as st:
        origin = {"Origin": st.url}
        assert (await st.client.post("/v1/chat/completions", json=CHAT, headers=origin)).status_code == 200
        bare = await st.client.post("/v1/chat/completions", content=json.dumps(CHAT))  # no Content-Type: curl, SDKs
        assert bare.status_code == 200
        event = await st.client.post("/v1/agents/agent-1/events", json=EVENT)
        assert event.status_code == 200


async def test_star_turns_the_host_check_off() -> None:
    async with stack(allowed_hosts=["*"]) as st:
        assert (await st.client.get("/healthz", headers={"Host": "anything"})).status_code == 200


async def raw_exchange(url: str, head: bytes, body: AsyncIterator[bytes] | None = None) -> tuple[bytes, int]:
    """Send a request by hand; return the response's first bytes and how many body bytes were written."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sent = 0
    try:
        writer.write(head)
        await writer.drain()
        if body is not None:
            with_answer = asyncio.create_task(reader.read(4096))
            async for chunk in body:
                if with_answer.done():
                    break
                writer.write(chunk)
                try:
                    await writer.drain()
                except ConnectionError:
                    break
                sent += len(chunk)
            return await asyncio.wait_for(with_answer, 30), sent
        return await asyncio.wait_for(reader.read(4096), 30), sent
    finally:
        writer.close()


async def test_a_declared_oversized_event_is_refused_before_its_body() -> None:
    async with stack() as st:
        head = (
            b"POST /v1/agents/a/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 419430400\r\n\r\n"
        )
        answer, _ = await raw_exchange(st.url, head)
        assert answer.startswith(b"HTTP/1.1 413")


async def test_a_chunked_oversized_event_is_cut_off_at_its_limit() -> None:
    """The issue's 400 MiB events body: buffered in full before the 64 KiB check. Now the answer comes while
    the client is still sending, long before the body ends."""
    total = 256 * 1024 * 1024
    chunk = b"x" * 65536

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // len(chunk)):
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)

    async with stack() as st:
        head = (
            b"POST /v1/agents/a/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        answer, sent = await raw_exchange(st.url, head, body())
        assert answer.startswith(b"HTTP/1.1 413")
        assert sent < total // 2


@pytest.mark.parametrize("size", [128 * 1024, 4 * 1024 * 1024])
async def test_oversized_headers_are_refused_while_parsed(size: int) -> None:
    """With the coordinator's own serving options (h11, bounded head), a huge header never reaches the app."""
    upstream = Upstream()
    async with serve_app(upstream.app()) as upstream_url:
        config = make_config(upstream_url)
        options: dict[str, Any] = uvicorn_options(config.coordinator)
        options.pop("log_config")
        async with serve_app(build_app(config), **options) as url:
            head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
            try:
                answer, _ = await raw_exchange(url, head)
            except ConnectionError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 200")
            async with httpx.AsyncClient(base_url=url) as client:  # and the server still serves
                assert (await client.get("/healthz")).status_code == 200


async def test_the_admin_token_file(tmp_path: Path) -> None:
    token = tmp_path / "admin"
    token.write_text("file-token-0123456789\n")
    async with stack(admin_token_file=str(token)) as st:
        assert (await st.client.get("/status")).status_code == 401
        ok = await st.client.get("/status", headers={"Authorization": "Bearer file-token-0123456789"})
        assert ok.status_code == 200
    token.write_text("")  # an empty file locks rather than opens
    async with stack(admin_token_file=str(token)) as st:
        assert (await st.client.get("/status", headers={"Authorization": "Bearer x"})).status_code == 401
        assert (await st.client.get("/dashboard?token=")).status_code == 401


async def test_client_chosen_names_never_become_metric_labels_or_status_keys() -> None:
    """Model names and tool names come from clients: /metrics and /status stay small whatever they send."""
    async with stack() as st:
        for n in range(12):
            name = f"model-{n}-" + "x" * 4096
            await st.client.post("/v1/chat/completions", json={**CHAT, "model": name})
            tool = f"tool-{n}-" + "y" * 100
            event = {**EVENT, "tool": tool, "cached": True}
            assert (await st.client.post("/v1/agents/agent-1/events", json=event)).status_code == 200
        metrics = (await st.client.get("/metrics")).text
        status = (await st.client.get("/status")).text
        assert "xxxx" not in metrics and 'model="other"' in metrics
        assert "yyyy" not in status and len(status) < 200_000
        await st.client.post("/v1/chat/completions", json={**CHAT, "model": "default"})  # the configured alias
        assert 'model="default"' in (await st.client.get("/metrics")).text
