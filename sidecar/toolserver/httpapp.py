"""The sidecar over HTTP: the streamable-HTTP MCP app and the stdio sidecar's peek-only app.

`build_http_app(sidecar)` serves `/mcp` (streamable HTTP), `/healthz`, `/stats`, `/peek` (`peek.py`) and
`/early` (`early.py`), every route behind `httpauth.SidecarGuard` (Host check, bearer token); its lifespan
starts the sidecar and the MCP session manager. `build_peek_app(sidecar)` serves `/peek` and `/early` alone,
beside a stdio sidecar (`--peek-port`). They are served by `sidecar.serving` with `HTTP_OPTIONS`
(`serve_http` in this loop; `goose-sidecar mcp --http` as the process's server).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sidecar.serving import bounded_head, serve_app
from sidecar.toolserver.early import early_route
from sidecar.toolserver.httpauth import SidecarGuard
from sidecar.toolserver.peek import peek_route
from sidecar.toolserver.sidecar import Sidecar

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
MAX_HEADER_BYTES = 64 * 1024
# uvicorn options for every sidecar app: a request head is bounded while it is parsed, before the token is checked.
HTTP_OPTIONS: dict[str, Any] = bounded_head(MAX_HEADER_BYTES)


def transport_security(allowed_hosts: list[str]) -> TransportSecuritySettings:
    """Host-header check for HTTP: loopback plus `allowed_hosts` (a bare host allows any port); '*' = off."""
    if "*" in allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = list(LOOPBACK_HOSTS)
    for host in allowed_hosts:
        hosts += [host] if ":" in host.lstrip("[").split("]")[-1] else [host, f"{host}:*"]
    origins = [f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def build_peek_app(sidecar: Sidecar) -> Starlette:
    """Only `/peek` and `/early`, for a stdio sidecar (`--peek-port`); the sidecar itself is started by its stdio
    server."""
    return Starlette(routes=[peek_route(sidecar.peek, sidecar.peek_key), early_route(sidecar.early, sidecar.peek_key)])


def build_http_app(sidecar: Sidecar, *, token: str | None = None) -> Starlette:
    """Streamable HTTP at `/mcp`, plus `/healthz`, `/stats`, `/peek` and `/early`; the lifespan starts the sidecar.

    Every route is behind `httpauth.SidecarGuard`: the Host check, and the bearer `token` (default: the
    `auth_token` setting; None on both: no token, which only `goose-sidecar mcp --insecure-no-auth` allows).
    """
    security = transport_security(sidecar.settings.allowed_hosts)
    inner = sidecar.mcp.streamable_http_app(transport_security=security)
    hosts = ["*"] if not security.enable_dns_rebinding_protection else list(security.allowed_hosts)
    guard = Middleware(SidecarGuard, allowed_hosts=hosts, token=token or sidecar.settings.auth_token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with sidecar, sidecar.mcp.session_manager.run():
            yield

    async def healthz(request: Request) -> JSONResponse:
        healthy = sidecar.watcher.healthy
        return JSONResponse({"ok": healthy, "generation": sidecar.generation}, status_code=200 if healthy else 503)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(sidecar.stats())

    routes = [*inner.routes, Route("/healthz", healthz), Route("/stats", stats)]
    routes += [peek_route(sidecar.peek, sidecar.peek_key), early_route(sidecar.early, sidecar.peek_key)]
    return Starlette(routes=routes, middleware=[guard, *inner.user_middleware], lifespan=lifespan)


def serve_http(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> contextlib.AbstractAsyncContextManager[str]:
    """Serve a sidecar app in this event loop (`sidecar.serving.serve_app`, request heads bounded by
    `HTTP_OPTIONS`); yields the base URL."""
    return serve_app(app, host, port, **HTTP_OPTIONS)
