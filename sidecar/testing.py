"""Helpers shared by tests, benchmarks and embedding: run an ASGI app on a real loopback socket, a fake clock.

`serve_app` is also how `goose-sidecar up` runs the embedded simulator beside the coordinator, so the
coordinator always talks to its upstream over real HTTP, exactly as it would to vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (prefer `serve_app`, which binds port 0 itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop; yields its base URL (`http://host:port`).

    Binds the socket first so port 0 works and the URL is known before any request. On exit the server
    shuts down gracefully (lifespan shutdown runs) and the serving task is awaited, so nothing leaks.
    """
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says TCP;
    # without it every small response waits ~40 ms for Nagle + delayed ACK on loopback.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    bound_port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "on"}
    options.update(uvicorn_options)
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # host owns signals
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error
                raise RuntimeError("uvicorn exited during start-up")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@dataclass
class FakeClock:
    """A clock tests advance by hand; pass `clock.now` wherever a policy or shell takes `now`."""

    t: float = 0.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t
