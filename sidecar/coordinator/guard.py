"""The coordinator's front door (pure ASGI middleware, before routing): requests a browser page on another site
could send, or that could exhaust memory before anything else looks at them, are answered here.

- `421` when `Host` is not one the coordinator is reached by: loopback, the address it is bound to, and
  `[coordinator] allowed_hosts` (compose adds `coordinator`; `*` turns the check off). A DNS-rebinding page
  otherwise reads `/status` and posts chat calls billed to any agent.
- `403` when `Origin` names another site (browsers send it on every cross-origin POST).
- `415` for a POST whose `Content-Type` is one a cross-site form or `fetch(no-cors)` may send without a
  preflight (`text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data`): every client of this API
  sends JSON. A POST without a Content-Type passes (curl `--data-binary`, some SDKs), since only a browser could
  forge it cross-site, and a browser's cross-site request carries an `Origin`.
- `413` for a declared `Content-Length` over the route's limit, before a byte of the body is read.

`read_body(request, limit)` reads a body in chunks and stops at `limit + 1` bytes, so an oversized chunked body
costs at most the limit (a `request.body()` first buffers everything).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.coordinator.errors import error_body
from sidecar.core.hosts import host_allowed, origin_allowed

SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
EVENTS_MAX_BYTES = 64 * 1024
HOSTS_KEPT = 256


class BodyTooLarge(Exception):
    pass


class CoordinatorGuard:
    """See the module docstring. `max_body_bytes` bounds every declared body; `/events` paths get 64 KiB."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str], max_body_bytes: int) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.max_body_bytes = max_body_bytes
        self._hosts: dict[bytes, bool] = {}  # Host value -> allowed: every call asks, clients send few values

    def _host_allowed(self, host: bytes) -> bool:
        """`host_allowed` for this Host value, remembered for up to HOSTS_KEPT values (then forgotten at once)."""
        allowed = self._hosts.get(host)
        if allowed is None:
            if len(self._hosts) >= HOSTS_KEPT:
                self._hosts.clear()
            allowed = self._hosts[host] = host_allowed(host.decode("latin-1"), self.allowed_hosts)
        return allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = ctype = declared = None
        for name, value in scope.get("headers", ()):
            key = bytes(name).lower()
            # Two Host or Origin headers: refuse rather than guess which one a later reader takes.
            if key == b"host":
                host = b"\x00" if host is not None else bytes(value)
            elif key == b"origin":
                origin = b"\x00" if origin is not None else bytes(value)
            elif key == b"content-type":
                ctype = bytes(value)
            elif key == b"content-length":
                declared = bytes(value)
        if not self._host_allowed(host or b""):
            await _answer(
                send,
                421,
                "this Host header is not one the coordinator is reached by ([coordinator] "
                "allowed_hosts, --allowed-hosts)",
            )
            return
        if origin is not None and not origin_allowed(origin.decode("latin-1"), self.allowed_hosts):
            await _answer(send, 403, "requests from another site's pages are refused (Origin)")
            return
        if scope.get("method") == "POST":
            media = (ctype or b"").decode("latin-1").split(";", 1)[0].strip().lower()
            if media in SIMPLE_TYPES:
                await _answer(send, 415, f"Content-Type {media} is not accepted; send JSON (application/json)")
                return
            limit = EVENTS_MAX_BYTES if scope.get("path", "").endswith("/events") else self.max_body_bytes
            length = (declared or b"").strip()
            if length and (not length.isdigit() or int(length) > limit):
                await _answer(send, 413, f"the request body is over {limit} bytes")
                return
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or BodyTooLarge as soon as more than `limit` bytes arrived (never buffers more)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(send: Send, status: int, message: str) -> None:
    body = error_body(status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
