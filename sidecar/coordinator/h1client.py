"""The completions relay's HTTP/1.1 client: asyncio Protocols, httptools' parser (llhttp, C), one pool.

httpx -> httpcore -> h11 cost ~40% of the coordinator's core at 64 streams (py-spy): request building, cookies,
pure-Python parsing of every chunk, stream wrappers. Here one connection is one `Connection` (an
`asyncio.Protocol`) whose `data_received` feeds httptools' `HttpResponseParser`; the body's pieces go to a deque
and wake the one reader (all pieces buffered are read at once: several SSE frames from one socket read reach the
client as one send). Reading pauses past `HIGH_WATER` buffered bytes.

`H1Pool`: keep-alive connections per origin (a stack: the most recently used is reused first), O(1) take and
put, at most `max_connections` requests in flight (further ones wait in FIFO order up to the pool timeout), at
most `max_keepalive` idle connections, idle ones older than `keepalive_expiry` closed when met. Plain TCP and TLS
(`https://`: `loop.create_connection(ssl=...)`), so the relay has one client.

Framing: Content-Length, chunked, and a body the server ends by closing; `connection: close` (and HTTP/1.0)
answers are not reused; 1xx answers before the final one are skipped. A response's head and any stretch of
bytes that yields no body (a chunk-size line or extension that never ends) are bounded: more than
`MAX_HEAD_BYTES` fed over several reads without the parser yielding a head or body bytes drops the connection
with a protocol error, so a server cannot make it hold more than that and one read. A response after the
response (unasked) drops the connection too; the reader keeps what belonged to its own.

Errors are httpx's exception classes (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`,
`PoolTimeout`, `ReadError`, `RemoteProtocolError`), so `errors.translate_upstream_exception` gives the same
answers as for httpx. Closing a response before its end (the client left, a cancellation) closes its connection,
which is how vLLM learns to abort the request; only a response read to its end returns its connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

HIGH_WATER = 256 * 1024  # body bytes buffered before reading from the socket pauses
MAX_HEAD_BYTES = 64 * 1024  # a response head, or bytes in a row that carry no body, at most
Key = tuple[str, str, int]  # an origin: scheme, host, port


@dataclass(frozen=True)
class Timeouts:
    """Seconds: to connect (TLS handshake included), for each wait for data, for a write to drain, for a pool
    place. None waits forever (as httpx's)."""

    connect: float | None = 5.0
    read: float | None = 600.0
    write: float | None = 60.0
    pool: float | None = 30.0


def origin(url: str) -> tuple[Key, str]:
    """The origin of `url` and its Host header value."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported scheme in {url!r}")
    default = 443 if scheme == "https" else 80
    host = parts.hostname or ""
    port = parts.port or default
    shown = f"[{host}]" if ":" in host else host
    return (scheme, host, port), shown if port == default else f"{shown}:{port}"


class Connection(asyncio.Protocol):
    """One upstream connection: feeds its parser, buffers the current response's body, wakes its one reader."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None  # or uvloop's (which does not subclass asyncio's)
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False  # the current response's final head has been parsed
        self.complete = False  # ...and its whole body
        self.keep_alive = False
        self.close_delimited = False  # no Content-Length, not chunked: the body ends when the server closes
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.barren = 0  # bytes fed since the parser last yielded something (head or body)
        self.progressed = False
        self.eof = False
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.paused = False
        self.busy = False  # a request is using it
        self.idle_since = 0.0

    # --- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:  # bytes nobody asked for: this connection cannot be trusted again
            self._fail(httpx.RemoteProtocolError("the upstream sent bytes outside a response"))
            return
        self.progressed = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the upstream switched protocols"))
            return
        except httptools.HttpParserError as exc:
            if self.error is None:
                self.error = httpx.RemoteProtocolError(f"malformed response from the upstream: {exc}")
            self._fail(self.error)
            return
        self.barren = 0 if self.progressed else self.barren + len(data)
        if self.barren > MAX_HEAD_BYTES:
            what = "head" if not self.head_done else "chunk framing"
            self._fail(httpx.RemoteProtocolError(f"response {what} over {MAX_HEAD_BYTES} bytes"))
            return
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    # --- httptools callbacks ---------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request: stop here (the parser raises), drop the connection
            raise ValueError("a response nobody asked for")
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): its message completes with no body
        self.status = status
        self.head_done = True
        self.progressed = True
        lengths = [v for k, v in self.headers if k.lower() in (b"content-length", b"transfer-encoding")]
        self.close_delimited = not lengths and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)
        self.buffered += len(body)
        self.progressed = True

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim answer
        self.complete = True
        self.progressed = True
        self.keep_alive = self.parser.should_keep_alive()

    # --- what a request does -----------------------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        transport = self.transport
        return self.error is None and not self.eof and transport is not None and not transport.is_closing()

    def start(self) -> None:
        """Ready for a new request on this connection (what the last response left unread is dropped)."""
        self.busy, self.complete, self.head_done, self.keep_alive = True, False, False, False
        self.status, self.headers, self.barren = 0, [], 0
        self.pieces.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    async def send(self, head: bytes, body: bytes, timeouts: Timeouts) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise httpx.WriteError("the upstream connection is closed")
        transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            transport.write(body)
        if self.drained is not None:
            await self._wait(self.drained, timeouts.write, httpx.WriteTimeout, "sending the request")

    async def head(self, timeouts: Timeouts) -> None:
        """Wait for the final response head."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            if self.eof:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            await self._wait_data(timeouts.read)

    async def read(self, read_timeout: float | None) -> bytes:
        """The body bytes that arrived since the last read (waiting for some), b"" at the body's end."""
        while not self.pieces:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            if self.eof:
                if self.close_delimited:
                    self.complete = True
                    return b""
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            await self._wait_data(read_timeout)
        pieces = self.pieces
        data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- internals ---------------------------------------------------------------------------------------------

    def _ended(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None and not self.complete:
            self.error = httpx.ReadError(str(exc) or type(exc).__name__)
        self._wake()

    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_data(self, seconds: float | None) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self._wait(self.waiter, seconds, httpx.ReadTimeout, "waiting for data")
        finally:
            self.waiter = None

    @staticmethod
    async def _wait(
        future: asyncio.Future[None], seconds: float | None, error: type[httpx.TimeoutException], what: str
    ) -> None:
        """Wait on `future` at most `seconds`: one future and one timer."""
        if seconds is None:
            await future
            return
        timer = asyncio.get_running_loop().call_later(seconds, _expire, future, error, what)
        try:
            await future
        finally:
            timer.cancel()


def _expire(future: asyncio.Future[None], error: type[httpx.TimeoutException], what: str) -> None:
    if not future.done():
        future.set_exception(error(f"timed out {what}"))


class Response:
    """A response being read: status, raw headers, `__aiter__` over the body; `close` once (returns or drops
    the connection and gives the pool place back)."""

    def __init__(self, pool: H1Pool, connection: Connection) -> None:
        self.pool = pool
        self.connection = connection
        self.status = connection.status
        self.headers = connection.headers
        self.closed = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header `name` (lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection, read_timeout = self.connection, self.pool.timeouts.read
        while True:
            data = await connection.read(read_timeout)
            if not data:
                return
            yield data

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.finished(self.connection)

    async def aclose(self) -> None:
        self.close()


class H1Pool:
    """Connections to any number of origins; see the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_keepalive: int,
        keepalive_expiry: float | None,
        timeouts: Timeouts,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self.timeouts = timeouts
        self.ssl_context = ssl_context
        self.idle: dict[Key, deque[Connection]] = {}
        self.idle_count = 0
        self.in_use = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def request(
        self, method: str, url: str, headers: Iterable[tuple[bytes, bytes]], body: bytes = b""
    ) -> Response:
        """Send a request and return its response once the head arrived (close it when done with it)."""
        key, host = origin(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = _encode_head(method, target, host, headers, len(body))
        await self._acquire()
        connection: Connection | None = None
        try:
            connection = self._take(key) or await self._open(key)
            connection.start()
            await connection.send(head, body, self.timeouts)
            await connection.head(self.timeouts)
        except BaseException:
            if connection is not None:
                connection.close()
            self._release()
            raise
        return Response(self, connection)

    def finished(self, connection: Connection) -> None:
        """A response is done with `connection`: keep it if it was read to its end and may serve another."""
        connection.busy = False
        self._release()
        if not (connection.complete and connection.keep_alive and connection.reusable):
            connection.close()
            return
        if self.idle_count >= self.max_keepalive:
            connection.close()
            return
        now = time.monotonic()
        connection.idle_since = now
        stack = self.idle.setdefault(connection.key, deque())
        if stack and self._expired(stack[0], now):
            self.idle_count -= 1
            stack.popleft().close()
        stack.append(connection)
        self.idle_count += 1

    def close(self) -> None:
        """Close every idle connection (those in use close with their responses)."""
        stacks, self.idle, self.idle_count = list(self.idle.values()), {}, 0
        for stack in stacks:
            for connection in stack:
                connection.close()

    # --- places ------------------------------------------------------------------------------------------------

    async def _acquire(self) -> None:
        if self.in_use < self.max_connections and not self.waiters:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await Connection._wait(waiter, self.timeouts.pool, httpx.PoolTimeout, "waiting for a free connection")
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # it was handed a place just as it gave up: pass it on
            else:
                self.waiters.remove(waiter)
            raise

    def _release(self) -> None:
        """Give a place back: to the longest waiting request, else to the pool."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place passes on; in_use stays
                return
        self.in_use -= 1

    # --- connections -------------------------------------------------------------------------------------------

    def _take(self, key: Key) -> Connection | None:
        """The most recently used idle connection to `key` still usable (others met are closed)."""
        stack = self.idle.get(key)
        now = time.monotonic()
        while stack:
            connection = stack.pop()
            self.idle_count -= 1
            if connection.reusable and not self._expired(connection, now):
                return connection
            connection.close()
        return None

    def _expired(self, connection: Connection, now: float) -> bool:
        expiry = self.keepalive_expiry
        return expiry is not None and now - connection.idle_since > expiry

    async def _open(self, key: Key) -> Connection:
        """A new connection, closing the oldest idle one of any origin first when the pool is full."""
        if self.in_use + self.idle_count > self.max_connections:
            for stack in self.idle.values():
                if stack:
                    self.idle_count -= 1
                    stack.popleft().close()
                    break
        scheme, host, port = key
        tls = self.ssl_context if scheme == "https" else None
        if scheme == "https" and tls is None:
            tls = httpx.create_ssl_context(trust_env=False)
            self.ssl_context = tls
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeouts.connect):
                _, connection = await loop.create_connection(
                    lambda: Connection(key), host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        if sock is not None and tls is None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection


def _encode_head(method: str, target: str, host: str, headers: Iterable[tuple[bytes, bytes]], length: int) -> bytes:
    """The request head. A name or value holding CR or LF would end a header early (header injection): the head
    must hold exactly one line break per line it was built from."""
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1")]
    lines += [b"%s: %s\r\n" % pair for pair in headers]
    lines.append(b"content-length: %d\r\n\r\n" % length)
    head = b"".join(lines)
    breaks = len(lines) + 2  # the request line's, the host's, each header's, content-length's and the blank line
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        raise httpx.LocalProtocolError("a request header holds a line break")
    return head
