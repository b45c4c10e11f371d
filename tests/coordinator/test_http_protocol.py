"""The coordinator's server protocol (httptools with a bounded request head) on a real server: a head over the
limit is refused with 431 however it arrives, while bodies and pipelined requests past the limit pass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sidecar.coordinator.app import build_app
from sidecar.coordinator.command import uvicorn_options
from sidecar.coordinator.http_protocol import BoundedHttpToolsProtocol
from sidecar.serving import serve_app
from tests.coordinator.conftest import make_config
from tests.coordinator.scripted_upstream import Upstream

LIMIT = 16 * 1024


@asynccontextmanager
async def coordinator() -> AsyncIterator[tuple[str, int]]:
    """The coordinator served with its own options and a 16 KiB head limit: (host, port)."""
    async with serve_app(Upstream().app()) as upstream_url:
        config = make_config(upstream_url, max_header_bytes=LIMIT)
        options: dict[str, Any] = uvicorn_options(config.coordinator)
        options.pop("log_config")
        assert issubclass(options["http"], BoundedHttpToolsProtocol)
        async with serve_app(build_app(config), **options) as url:
            host, port = url.removeprefix("http://").split(":")
            yield host, int(port)


async def exchange(address: tuple[str, int], pieces: list[bytes]) -> bytes:
    """Write `pieces` one by one (stopping if the server closes), then read everything it answers."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        for piece in pieces:
            writer.write(piece)
            try:
                await writer.drain()
            except ConnectionError:
                break
        return await asyncio.wait_for(reader.read(), 30)
    except ConnectionError:
        return b""
    finally:
        writer.close()


def head(path: str = "/healthz", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


async def test_a_head_over_the_limit_is_answered_431() -> None:
    """A head that has not ended within the limit (the client then waits for the answer)."""
    unfinished = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * LIMIT
    async with coordinator() as address:
        answer = await exchange(address, [unfinished])
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 431


@pytest.mark.parametrize("piece", [1024 * 1024, 1000])  # in one write, and in many small ones
async def test_a_huge_head_is_cut_off_and_the_server_serves_on(piece: int) -> None:
    """The client still writing when the server closes may see a reset instead of the 431 (TCP discards an
    answer when unread bytes remain): either way nothing of it reaches the app."""
    big = head(extra=b"X-Big: " + b"a" * (64 * LIMIT) + b"\r\n")
    async with coordinator() as address:
        answer = await exchange(address, [big[i : i + piece] for i in range(0, len(big), piece)])
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        ok = await exchange(address, [head(extra=b"Connection: close\r\n")])
        assert ok.startswith(b"HTTP/1.1 200 ")


async def test_many_headers_just_under_the_limit_pass() -> None:
    extra = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(LIMIT // 120))
    async with coordinator() as address:
        assert (await exchange(address, [head(extra=extra + b"Connection: close\r\n")])).startswith(b"HTTP/1.1 200")


async def test_a_body_larger_than_the_head_limit_arriving_with_its_head_passes() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (8 * LIMIT)}]}).encode()
    extra = b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n" % len(body)
    async with coordinator() as address:
        answer = await exchange(address, [head("/v1/chat/completions", extra, b"POST") + body])
        assert answer.startswith(b"HTTP/1.1 200 ")


async def test_pipelined_requests_each_get_their_own_limit() -> None:
    """Four requests in one write, together far over the limit, each under it: four answers."""
    one = head(extra=b"X-Pad: " + b"p" * (LIMIT // 2) + b"\r\n")
    async with coordinator() as address:
        answer = await exchange(address, [one * 3 + head(extra=b"Connection: close\r\n")])
        assert answer.count(b"HTTP/1.1 200 ") == 4
