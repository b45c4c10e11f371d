"""Serving an ASGI app with uvicorn on a real socket: the one way every part of goose-sidecar listens.

- `listen_socket`: bound and listening before anyone learns the URL (a client that connects early waits in
  the backlog instead of being refused), port 0 resolved at once, TCP_NODELAY on every accepted connection;
- `serve_app`: an app served inside the caller's event loop until the block exits (the host owns signals):
  embedded simulators, in-process stacks, tests;
- `serve_until_signalled`: a process's main server, stopped gracefully by SIGINT/SIGTERM (`goose-sidecar up`);
- `bounded_head`: the uvicorn options that bound a request head while it is parsed (h11's; the coordinator
  serves with httptools and its own bound, `sidecar.coordinator.http_protocol`);
- `event_loop_factory`: uvloop where installed, for a process's main loop;
- `free_port`: a port for a server another process will bind (prefer port 0 where the binder is here).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

# Connections waiting to be accepted (the kernel caps it at net.core.somaxconn, 4096 by default since Linux 5.4):
# a fleet that starts at once connects at once, and a SYN dropped from a full queue is retried only after 1 s.
BACKLOG = 4096
QUIET: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "on"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, for a server in another process (racy by nature)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening socket for uvicorn (`serve(sockets=[...])`), so port 0 works and is known at once.

    Created with `IPPROTO_TCP` explicitly: asyncio sets TCP_NODELAY only on accepted sockets whose `proto` is
    IPPROTO_TCP, and a socket made with proto 0 passes its 0 on. Without NODELAY every HTTP response waits for
    the client's delayed ACK: measured 44 ms per request on loopback instead of about 1 ms.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency off Windows), else asyncio's (None): a relayed
    frame is a socket read and a write, which uvloop's transports do in C; `asyncio.run` alone ignores uvloop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def base_url(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 address in brackets."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def bounded_head(max_header_bytes: int) -> dict[str, Any]:
    """uvicorn options under which a request head over `max_header_bytes` never reaches memory in full.

    h11 bounds the head while it is parsed (httptools buffers any size), so the bound holds before any
    authentication runs; such a request is answered 431/400 by the parser.
    """
    return {"http": "h11", "h11_max_incomplete_event_size": max_header_bytes}


@contextlib.asynccontextmanager
async def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop; yields its base URL once the server has started.

    `uvicorn_options` override `QUIET` (e.g. `bounded_head(...)`, `lifespan="off"`). The host owns signals.
    On exit the server shuts down gracefully (lifespan shutdown runs) and its task is awaited, so nothing
    leaks; a start-up failure is raised here.
    """
    import uvicorn

    sock = listen_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, **{**QUIET, **uvicorn_options}))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # host owns signals
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error
                raise RuntimeError("uvicorn exited during start-up")
            await asyncio.sleep(0.005)
        yield base_url(host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


async def serve_until_signalled(app: Any, sock: socket.socket, **uvicorn_options: Any) -> None:
    """Serve `app` on `sock` (from `listen_socket`) until SIGINT/SIGTERM, then shut down gracefully."""
    import uvicorn

    try:
        await uvicorn.Server(uvicorn.Config(app, **{**QUIET, **uvicorn_options})).serve(sockets=[sock])
    finally:
        sock.close()
