"""The upstream client's connection pool on real loopback servers: connections are reused, bounded, waited for
in order (pool timeout as httpx raises it), and never handed out broken: a body cut short, a server that closed
an idle connection, a cancelled request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from sidecar.coordinator.connpool import LeanTransport
from sidecar.serving import event_loop_factory, free_port, serve_app

PARTS = (b"one ", b"two ", b"three")


class Server:
    """Counts the connections it accepted and how many requests are in progress; `/slow` waits for `release`."""

    def __init__(self) -> None:
        self.peers: set[tuple[str, int]] = set()
        self.active = 0
        self.most_active = 0
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    async def until_active(self, n: int) -> None:
        while self.active < n:
            self.changed.clear()
            await self.changed.wait()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.peers.add(scope["client"])
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.changed.set()
        try:
            if scope["path"] == "/slow":
                await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            parts = [bytes([i % 251]) * 65536 for i in range(32)] if scope["path"] == "/big" else PARTS
            for part in parts:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.active -= 1


@asynccontextmanager
async def client(**limits: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Server, LeanTransport]]:
    server = Server()
    transport = LeanTransport(httpx.Limits(**{"max_connections": 4, "max_keepalive_connections": 4, **limits}))
    timeout = httpx.Timeout(10, pool=1)
    async with serve_app(server) as url, httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout) as c:
        yield c, server, transport


async def test_sequential_requests_reuse_one_connection() -> None:
    async with client() as (c, server, transport):
        for _ in range(20):
            assert (await c.get("/")).text == "one two three"
        assert len(server.peers) == 1 and transport.pool.idle_connections == 1
        assert transport.pool.connections_in_use == 0 and [c.is_idle() for c in transport.pool.connections] == [True]


async def test_connections_in_use_are_bounded_and_waiters_time_out_as_httpx_does() -> None:
    async with client(max_connections=2) as (c, server, transport):
        async with anyio.create_task_group() as group:
            for _ in range(2):
                group.start_soon(c.get, "/slow")
            await server.until_active(2)
            assert [c.is_idle() for c in transport.pool.connections] == [False, False]
            with pytest.raises(httpx.PoolTimeout):
                await c.get("/")  # both connections busy for longer than the 1 s pool timeout
            waiting = asyncio.create_task(c.get("/"))  # this one gets a connection once one is free
            await asyncio.sleep(0.1)
            server.release.set()
        assert (await waiting).status_code == 200
        assert server.most_active == 2 and transport.pool.connections_in_use == 0


async def test_idle_connections_beyond_the_keepalive_limit_are_closed() -> None:
    async with client(max_connections=8, max_keepalive_connections=2) as (c, server, transport):
        server.release.set()
        await asyncio.gather(*(c.get("/slow") for _ in range(6)))
        assert transport.pool.idle_connections == 2 and transport.pool.connections_in_use == 0


async def test_a_body_not_read_to_its_end_closes_its_connection() -> None:
    async with client() as (c, server, transport):
        async with c.stream("GET", "/") as response:
            async for _ in response.aiter_raw():
                break  # left after the first chunk: the connection is mid-response
        assert transport.pool.idle_connections == 0 and transport.pool.connections_in_use == 0
        assert (await c.get("/")).text == "one two three"
        assert len(server.peers) == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    server = Server()
    transport = LeanTransport(httpx.Limits(max_connections=4, max_keepalive_connections=4))
    async with httpx.AsyncClient(transport=transport) as c:
        async with serve_app(server) as url:
            assert (await c.get(url)).status_code == 200
        async with serve_app(server, port=int(url.rsplit(":", 1)[1])) as again:  # the same port, a new server
            assert (await c.get(again)).status_code == 200
    assert len(server.peers) == 2


async def test_a_cancelled_request_gives_its_connection_back() -> None:
    async with client(max_connections=1) as (c, server, transport):
        pending = asyncio.create_task(c.get("/slow"))
        await server.until_active(1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert transport.pool.connections_in_use == 0
        server.release.set()
        assert (await c.get("/")).status_code == 200  # the one slot is free again


async def test_a_large_body_read_slowly_arrives_byte_for_byte() -> None:
    """2 MiB, more than the stream buffers before it pauses reading the socket, read with pauses."""
    async with client() as (c, _, transport):
        async with c.stream("GET", "/big") as response:
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                await asyncio.sleep(0.001)
        assert bytes(received) == b"".join(bytes([i % 251]) * 65536 for i in range(32))
        assert transport.pool.idle_connections == 1


async def test_failures_are_httpx_errors() -> None:
    async with client() as (c, server, transport):
        with pytest.raises(httpx.ReadTimeout):
            await c.get("/slow", timeout=httpx.Timeout(10, read=0.2))
        assert transport.pool.connections_in_use == 0
        server.release.set()
    async with httpx.AsyncClient(transport=LeanTransport(httpx.Limits())) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{free_port()}/")


def test_on_the_coordinators_own_event_loop() -> None:
    """`goose-sidecar up` runs on uvloop where it is installed: its transports are not asyncio's classes."""

    async def calls() -> list[str]:
        async with client() as (c, _, _):
            return [(await c.get("/")).text for _ in range(3)]

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        assert runner.run(calls()) == ["one two three"] * 3
