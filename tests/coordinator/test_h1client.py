"""The relay's HTTP/1.1 client on real loopback servers: uvicorn for the pool's behaviour (reuse, bounds, FIFO
waiting, pool timeout, a body left early, a server that closed an idle connection, a cancelled request) and raw
asyncio servers for framing (Content-Length, chunked, close-delimited, 1xx, `connection: close`) and for servers
that misbehave (a body cut short, a head or a chunk-size line that never ends: a bound, not memory)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.coordinator.h1client import MAX_HEAD_BYTES, H1Pool, Response, Timeouts
from sidecar.serving import event_loop_factory, free_port, serve_app
from sidecar.testing import wait_until

PARTS = (b"one ", b"two ", b"three")


class Server:
    """Counts the connections it accepted and the requests in progress; `/slow` waits for `release`."""

    def __init__(self) -> None:
        self.peers: set[tuple[str, int]] = set()
        self.active = 0
        self.most_active = 0
        self.release = asyncio.Event()
        self.changed = asyncio.Event()
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    async def until_active(self, n: int) -> None:
        while self.active < n:
            self.changed.clear()
            await self.changed.wait()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.peers.add(scope["client"])
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.changed.set()
        try:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            self.bodies.append(body)
            if scope["path"] == "/slow":
                await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            parts = [bytes([i % 251]) * 65536 for i in range(32)] if scope["path"] == "/big" else PARTS
            for part in parts:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.active -= 1


def make_pool(**options: Any) -> H1Pool:
    timeouts = options.pop("timeouts", Timeouts(connect=5, read=10, write=10, pool=1))
    return H1Pool(**{"max_connections": 4, "max_keepalive": 4, "keepalive_expiry": 30.0, **options}, timeouts=timeouts)


async def body_of(response: Response) -> bytes:
    try:
        return b"".join([chunk async for chunk in response])
    finally:
        response.close()


async def get(pool: H1Pool, url: str, body: bytes = b"") -> bytes:
    return await body_of(await pool.request("POST", url, [(b"content-type", b"text/plain")], body))


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[tuple[H1Pool, Server, str]]:
    server = Server()
    pool = make_pool(**options)
    try:
        async with serve_app(server) as url:
            yield pool, server, url
    finally:
        pool.close()


async def test_sequential_requests_reuse_one_connection_and_send_head_and_body() -> None:
    async with served() as (pool, server, url):
        for n in range(20):
            assert await get(pool, f"{url}/?n={n}", b'{"n": %d}' % n) == b"one two three"
        assert len(server.peers) == 1 and pool.idle_count == 1 and pool.in_use == 0
        assert server.bodies[-1] == b'{"n": 19}'
        assert server.headers[-1]["host"] == url.removeprefix("http://")
        assert server.headers[-1]["content-length"] == "9"


async def test_requests_in_use_are_bounded_and_waiters_go_first_come_first_served() -> None:
    async with served(max_connections=2) as (pool, server, url):
        slow = [asyncio.create_task(get(pool, f"{url}/slow")) for _ in range(2)]
        await server.until_active(2)
        with pytest.raises(httpx.PoolTimeout):
            await get(pool, url)  # both places busy for longer than the 1 s pool timeout
        order: list[int] = []

        async def waiting(n: int) -> None:
            await get(pool, url)
            order.append(n)

        waiters = [asyncio.create_task(waiting(n)) for n in range(4)]
        await wait_until(lambda: len(pool.waiters) == 4)
        server.release.set()
        await asyncio.gather(*slow, *waiters)
        assert server.most_active == 2 and pool.in_use == 0 and not pool.waiters
        assert order == sorted(order)


async def test_idle_connections_beyond_the_keepalive_limit_are_closed() -> None:
    async with served(max_connections=8, max_keepalive=2) as (pool, server, url):
        server.release.set()
        await asyncio.gather(*(get(pool, f"{url}/slow") for _ in range(6)))
        assert pool.idle_count == 2 and pool.in_use == 0


async def test_a_body_not_read_to_its_end_closes_its_connection() -> None:
    async with served() as (pool, server, url):
        response = await pool.request("GET", f"{url}/big", [])
        async for _ in response:
            break  # left after the first piece of 2 MiB: the connection is mid-response
        response.close()
        assert pool.idle_count == 0 and pool.in_use == 0
        assert await get(pool, url) == b"one two three"
        assert len(server.peers) == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    server = Server()
    pool = make_pool()
    async with serve_app(server) as url:
        assert await get(pool, url) == b"one two three"
    async with serve_app(server, port=int(url.rsplit(":", 1)[1])) as again:  # the same port, a new server
        assert await get(pool, again) == b"one two three"
    assert len(server.peers) == 2
    pool.close()


async def test_a_cancelled_request_closes_its_connection_and_gives_its_place_back() -> None:
    async with served(max_connections=1) as (pool, server, url):
        pending = asyncio.create_task(get(pool, f"{url}/slow"))
        await server.until_active(1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert pool.in_use == 0 and pool.idle_count == 0
        server.release.set()
        assert await get(pool, url) == b"one two three"  # the one place is free again


async def test_a_large_body_read_slowly_arrives_byte_for_byte() -> None:
    """2 MiB, more than the connection buffers before it pauses reading the socket, read with pauses."""
    async with served() as (pool, _, url):
        response = await pool.request("GET", f"{url}/big", [])
        received = bytearray()
        async for chunk in response:
            received += chunk
            assert len(chunk) <= 4 * 1024 * 1024
            await asyncio.sleep(0.001)
        response.close()
        assert bytes(received) == b"".join(bytes([i % 251]) * 65536 for i in range(32))
        assert pool.idle_count == 1


async def test_timeouts_and_refusals_are_httpx_errors() -> None:
    async with served(timeouts=Timeouts(connect=5, read=0.2, write=10, pool=1)) as (pool, server, url):
        with pytest.raises(httpx.ReadTimeout):
            await get(pool, f"{url}/slow")
        assert pool.in_use == 0 and pool.idle_count == 0
        server.release.set()
    with pytest.raises(httpx.ConnectError):
        await get(make_pool(), f"http://127.0.0.1:{free_port()}/")


def test_on_the_coordinators_own_event_loop() -> None:
    """`goose-sidecar up` runs on uvloop where it is installed: its transports are not asyncio's classes."""

    async def calls() -> list[bytes]:
        async with served() as (pool, _, url):
            return [await get(pool, url) for _ in range(3)]

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        assert runner.run(calls()) == [b"one two three"] * 3


# --- raw servers: framing and misbehaviour ------------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw(script: Script) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that reads one request head per connection and runs `script`; yields its URL and a list that
    gets one entry per connection accepted."""
    accepted: list[int] = []
    handlers: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        task = asyncio.current_task()
        assert task is not None
        handlers.append((task, writer))
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the test ended
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions", accepted
    finally:
        server.close()
        for task, writer in handlers:
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*(task for task, _ in handlers), return_exceptions=True)


def answer(head: bytes, *body: bytes, close: bool = False) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        for piece in body:
            writer.write(piece)
            await writer.drain()
        if close:
            writer.close()
            await writer.wait_closed()
            raise ConnectionError

    return script


CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
FRAMES = (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n")


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("script", "reused"),
    [
        (answer(CHUNKED, chunked(*FRAMES)), True),
        (answer(b"HTTP/1.1 200 OK\r\ncontent-length: 32\r\n\r\n", b"".join(FRAMES)), True),
        (answer(b"HTTP/1.1 100 Continue\r\n\r\n" + CHUNKED, chunked(*FRAMES)), True),
        (answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 32\r\n\r\n", b"".join(FRAMES)), False),
        (answer(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n", *FRAMES, close=True), False),
        (answer(b"HTTP/1.0 200 OK\r\ncontent-length: 32\r\n\r\n", b"".join(FRAMES)), False),
    ],
    ids=["chunked", "content-length", "100-continue", "connection-close", "close-delimited", "http/1.0"],
)
async def test_bodies_arrive_unchanged_in_every_framing(script: Script, reused: bool) -> None:
    pool = make_pool()
    async with raw(script) as (url, accepted):
        for _ in range(2):
            response = await pool.request("POST", url, [], b"{}")
            assert response.status == 200
            assert await body_of(response) == b"".join(FRAMES)
        assert len(accepted) == (1 if reused else 2)
    pool.close()


async def test_a_chunked_body_cut_short_is_a_protocol_error_and_the_connection_is_dropped() -> None:
    pool = make_pool()
    async with raw(answer(CHUNKED, b"9\r\ndata: 1\n\n\r\n", close=True)) as (url, _):
        response = await pool.request("POST", url, [], b"{}")
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in response:
                received.append(chunk)
        response.close()
        assert b"".join(received) == b"data: 1\n\n" and pool.idle_count == 0 and pool.in_use == 0
    pool.close()


async def test_a_second_response_to_one_request_is_not_relayed_and_drops_the_connection() -> None:
    extra = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra"
    pool = make_pool()
    async with raw(answer(b"HTTP/1.1 200 OK\r\ncontent-length: 32\r\n\r\n" + b"".join(FRAMES) + extra)) as (url, _):
        assert await body_of(await pool.request("POST", url, [], b"{}")) == b"".join(FRAMES)
        assert pool.idle_count == 0 and pool.in_use == 0
    pool.close()


async def test_a_server_that_closes_before_answering_is_a_protocol_error() -> None:
    pool = make_pool()
    async with raw(answer(b"", close=True)) as (url, _):
        with pytest.raises(httpx.RemoteProtocolError):
            await pool.request("POST", url, [], b"{}")
        assert pool.in_use == 0
    pool.close()


def endless(prefix: bytes, piece: bytes) -> Script:
    """Sends `prefix`, then `piece` over and over until the client goes away."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(prefix)
        for _ in range(10 * MAX_HEAD_BYTES // len(piece)):
            writer.write(piece)
            await writer.drain()
        await reader.read()  # the client must have dropped the connection long before

    return script


@pytest.mark.parametrize(
    "script",
    [
        endless(b"HTTP/1.1 200 OK\r\nx-long: ", b"a" * 1000),  # a header that never ends
        endless(b"HTTP/1.1 200 OK\r\n", b"x-h: v\r\n"),  # headers that never end
        endless(CHUNKED + b"1;ext=", b"e" * 1000),  # a chunk-size line (an extension) that never ends
        endless(CHUNKED, b"0" * 1000),  # a chunk size of endless leading zeros
    ],
    ids=["header", "headers", "chunk-extension", "chunk-size"],
)
async def test_a_head_or_chunk_line_that_never_ends_hits_the_bound(script: Script) -> None:
    pool = make_pool()
    async with raw(script) as (url, _):

        async def call() -> None:
            response = await pool.request("POST", url, [], b"{}")
            await body_of(response)

        with pytest.raises(httpx.RemoteProtocolError, match=f"over {MAX_HEAD_BYTES} bytes"):
            await call()
        assert pool.in_use == 0 and pool.idle_count == 0
    pool.close()


async def test_a_header_value_with_a_line_break_is_refused_before_sending() -> None:
    async with served() as (pool, server, url):
        with pytest.raises(httpx.LocalProtocolError):
            await pool.request("POST", url, [(b"x-a", b"v\r\nx-injected: 1")], b"{}")
        assert pool.in_use == 0 and server.headers == []


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl's command line), and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_upstreams_are_reached_over_tls_and_connections_reused(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server = Server()
    pool = make_pool(ssl_context=ssl.create_default_context(cafile=str(cert)))
    async with serve_app(server, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        https = url.replace("http://", "https://")
        assert [await get(pool, f"{https}/", b"{}") for _ in range(3)] == [b"one two three"] * 3
        assert len(server.peers) == 1 and server.headers[0]["host"] == https.removeprefix("https://")
        with pytest.raises(httpx.ConnectError):  # a certificate the pool does not trust
            await get(make_pool(ssl_context=ssl.create_default_context()), f"{https}/")
    pool.close()
