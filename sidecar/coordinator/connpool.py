"""The upstream client's connection pool: constant cost per request, however many connections it holds.

httpcore's `AsyncConnectionPool` re-examines every pooled connection on each request and on each release, and
for every idle one it counts the idle ones again (`_assign_requests_to_connections`: quadratic in the pool's
size). With a few hundred streams in flight that bookkeeping took half of the coordinator's core (profiled with
py-spy at 200 agents: `is_idle`, `has_expired`, `is_socket_readable` and the list comprehensions), and every call
queued behind it: seconds of added time to first byte with the core far from its limit.

`LeanPool` keeps what the coordinator needs of that pool, in O(1) per request: HTTP/1.1 connections (httpcore's
own `AsyncHTTPConnection`, so framing, timeouts and errors are httpcore's), a stack of idle ones per origin
(the most recently used is reused first: the least likely to have been closed by the server), a bound on
connections in use that waits in FIFO order (`pool` timeout -> `httpcore.PoolTimeout`, as httpcore raises), at
most `max_keepalive` idle connections and at most `max_connections` in all. An idle connection is checked when it
is taken (expired, or closed by the server: discarded) and the oldest of its origin's stack when another is put
back, so stale connections are closed without a scan. Plain-TCP upstreams are read through `netstream`'s
asyncio streams (cheaper per frame than httpcore's anyio backend); TLS ones through httpcore's backend.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType

import anyio
import httpcore
import httpx

from sidecar.coordinator.netstream import AsyncioBackend

Connection = httpcore.AsyncHTTPConnection
Key = tuple[bytes, bytes, int]  # an origin's scheme, host and port (httpcore's Origin is not hashable)


def origin_key(origin: httpcore.Origin) -> Key:
    return origin.scheme, origin.host, origin.port


class LeanPool:
    """An httpcore-compatible pool (`handle_async_request`, `aclose`); see the module docstring."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext, max_connections: int, max_keepalive: int, keepalive_expiry: float | None
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._slots = anyio.Semaphore(max_connections)
        self._idle: dict[Key, deque[Connection]] = {}
        self._idle_count = 0
        self._in_use = 0
        self._busy: set[Connection] = set()  # connections a response is using
        self._plain_tcp = AsyncioBackend()

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    @property
    def connections_in_use(self) -> int:
        return self._in_use

    @property
    def connections(self) -> list[Connection]:
        """Every open connection, busy then idle (as httpcore's pool lists them)."""
        return [*self._busy, *(c for stack in self._idle.values() for c in stack)]

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send `request` on an idle connection to its origin or a new one; the connection is returned to the
        pool when the response stream is closed."""
        await self._acquire(request.extensions.get("timeout", {}).get("pool"))
        connection: Connection | None = None
        try:
            while True:
                origin = request.url.origin
                connection = await self._take(origin_key(origin)) or await self._open(origin)
                self._busy.add(connection)
                try:
                    response = await connection.handle_async_request(request)
                except httpcore.ConnectionNotAvailable:  # closed between the check and the send: next one
                    self._busy.discard(connection)
                    continue
                break
        except BaseException:
            if connection is not None:
                self._busy.discard(connection)
                await _close(connection)
            self._release()
            raise
        assert isinstance(response.stream, AsyncIterable)
        stream = ReleasingStream(response.stream, connection, origin_key(origin), self)
        return httpcore.Response(
            status=response.status, headers=response.headers, content=stream, extensions=response.extensions
        )

    async def _acquire(self, pool_timeout: float | None) -> None:
        with anyio.move_on_after(pool_timeout) as scope:
            await self._slots.acquire()
        if scope.cancelled_caught:
            raise httpcore.PoolTimeout(f"no upstream connection free within {pool_timeout} s")
        self._in_use += 1

    def _release(self) -> None:
        self._in_use -= 1
        self._slots.release()

    async def _take(self, key: Key) -> Connection | None:
        """The most recently used idle connection to `key`'s origin that is still usable (others met are closed)."""
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            self._idle_count -= 1
            if connection.is_idle() and not connection.has_expired():
                return connection
            await _close(connection)
        return None

    async def _open(self, origin: httpcore.Origin) -> Connection:
        """A new connection (it connects on its first request), closing the oldest idle one of any origin first
        when the pool holds `max_connections` already."""
        if self._in_use + self._idle_count > self._max_connections:
            for stack in self._idle.values():
                if stack:
                    self._idle_count -= 1
                    await _close(stack.popleft())
                    break
        backend = self._plain_tcp if origin.scheme == b"http" else None  # TLS: httpcore's own backend
        expiry = self._keepalive_expiry
        ssl = self._ssl_context
        return Connection(origin=origin, ssl_context=ssl, keepalive_expiry=expiry, network_backend=backend)

    async def _put_back(self, connection: Connection, key: Key) -> None:
        """After its response was closed: keep the connection if it can serve another request and there is room,
        else close it; the oldest idle connection of the same origin is closed if it has expired."""
        self._busy.discard(connection)
        if not connection.is_idle() or self._idle_count >= self._max_keepalive:
            await _close(connection)
            return
        stack = self._idle.setdefault(key, deque())
        if stack and stack[0].has_expired():
            self._idle_count -= 1
            await _close(stack.popleft())
        stack.append(connection)
        self._idle_count += 1

    async def aclose(self) -> None:
        stacks, self._idle, self._idle_count = list(self._idle.values()), {}, 0
        for stack in stacks:
            for connection in stack:
                await _close(connection)

    async def __aenter__(self) -> LeanPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class ReleasingStream:
    """A response body that gives its connection back to the pool once, when closed (or when reading fails)."""

    def __init__(self, stream: AsyncIterable[bytes], connection: Connection, key: Key, pool: LeanPool) -> None:
        self._stream = stream
        self._connection = connection
        self._key = key
        self._pool = pool
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                close = getattr(self._stream, "aclose", None)
                if close is not None:
                    await close()  # httpcore marks the connection idle, or closes it if the body was cut short
                await self._pool._put_back(self._connection, self._key)
        finally:
            self._pool._release()


async def _close(connection: Connection) -> None:
    with anyio.CancelScope(shield=True):
        await connection.aclose()


class LeanTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (its request/response mapping and exception translation) over a `LeanPool`."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self.pool = LeanPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections or 2**31,  # None: httpx's "no limit"
            max_keepalive=2**31 if limits.max_keepalive_connections is None else limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )
        self._pool = self.pool  # type: ignore[assignment]  # the one attribute httpx's transport sends through
