# ruff: noqa: ASYNC109  # `timeout` parameters: httpcore's network backend interface names them so
"""Plain-TCP streams for the upstream client on asyncio's own transports: a cheaper read per relayed frame.

httpcore's default backend (anyio) opens a cancel scope with a deadline (`fail_after`) and looks up the running
async library on every read; at a frame per read that was a tenth of the coordinator's CPU under load (py-spy).
`AsyncioBackend` reads from an `asyncio.Protocol` buffer instead: data already received returns at once, and a
wait is one future with one timer. Errors are httpcore's (`ConnectError`, `ConnectTimeout`, `ReadError`,
`ReadTimeout`, `WriteError`, `WriteTimeout`), so httpx maps them as before; end of stream reads `b""`. Only for
`http://` upstreams: TLS (`start_tls`) stays with httpcore's backend (`connpool.LeanPool` chooses).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httpcore
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]  # httpcore's
HIGH_WATER = 256 * 1024  # bytes buffered before reading from the socket pauses


class StreamProtocol(asyncio.Protocol):
    """Buffers what arrives; wakes the one reader waiting; pauses reading past HIGH_WATER."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None  # or uvloop's (which does not subclass asyncio's)
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class AsyncioStream(AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to `max_bytes` of what arrived, waiting at most `timeout` s for something; b"" at the end."""
        protocol = self._protocol
        if not protocol.chunks and not protocol.eof:
            await _wait(protocol, "waiter", timeout, httpcore.ReadTimeout)
        if not protocol.chunks:
            if protocol.error is not None:
                raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
            return b""
        data = protocol.chunks.popleft()
        if len(data) > max_bytes:
            data, rest = data[:max_bytes], data[max_bytes:]
            protocol.chunks.appendleft(rest)
        protocol.buffered -= len(data)
        if protocol.paused and protocol.buffered <= HIGH_WATER // 2:
            protocol.paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        if self._protocol.drained is not None:
            await _wait(self._protocol, "drained", timeout, httpcore.WriteTimeout)

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("TLS upstreams use httpcore's own network backend")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # idle, yet something arrived or the server closed: not reusable (the loop reads
            return bool(self._protocol.chunks) or self._protocol.eof  # the socket whenever data is there)
        name = {"client_addr": "sockname", "server_addr": "peername", "socket": "socket"}.get(info)
        return None if name is None else self._transport.get_extra_info(name)


async def _wait(protocol: StreamProtocol, name: str, seconds: float | None, timeout_error: type[Exception]) -> None:
    """Wait on the protocol's `waiter` (data) or `drained` (write buffer) future, at most `seconds`."""
    loop = asyncio.get_running_loop()
    future = getattr(protocol, name) if name == "drained" else loop.create_future()
    if name == "waiter":
        protocol.waiter = future
    timer = None if seconds is None else loop.call_later(seconds, _expire, future, timeout_error)
    try:
        await future
    finally:
        if timer is not None:
            timer.cancel()
        if name == "waiter":
            protocol.waiter = None


def _expire(future: asyncio.Future[None], timeout_error: type[Exception]) -> None:
    if not future.done():
        future.set_exception(timeout_error("timed out"))


class AsyncioBackend(AsyncNetworkBackend):
    """httpcore's network backend interface over asyncio transports (plain TCP)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = None if local_address is None else (local_address, 0)
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(StreamProtocol, host, port, local_addr=local)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets use httpcore's own network backend")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
