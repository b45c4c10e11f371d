"""The coordinator's Starlette app: `build_app(config)` wires state, routes and the lifespan. No globals.

Routes (each chat/completions/models route also answers under `/agents/{agent_id}/...` and without `/v1`,
because Goose's provider code drops `/v1` for non-OpenAI hosts):
    POST /v1/chat/completions   POST /v1/completions   GET /v1/models
    GET  /healthz   GET /status   GET /metrics
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar import __version__
from sidecar.config import Config
from sidecar.coordinator.errors import ErrorKind, ProxyError, error_body, translate_upstream_exception
from sidecar.coordinator.keys import bearer_token, load_keys
from sidecar.coordinator.proxy import CompletionsEndpoint
from sidecar.coordinator.telemetry import Telemetry
from sidecar.coordinator.upstream import UpstreamPool
from sidecar.core.openai_request import Endpoint

HEALTH_INTERVAL_S = 5.0


@dataclass
class CoordinatorState:
    config: Config
    client: httpx.AsyncClient
    pool: UpstreamPool
    telemetry: Telemetry
    keys: dict[str, str] = field(default_factory=dict)


def make_client(config: Config) -> httpx.AsyncClient:
    """The one shared upstream client: explicit timeouts, bounded pool, keep-alive."""
    c = config.coordinator
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=c.connect_timeout_s, read=c.read_timeout_s, write=c.write_timeout_s, pool=c.pool_timeout_s
        ),
        limits=httpx.Limits(
            max_connections=c.max_connections,
            max_keepalive_connections=c.max_keepalive_connections,
            keepalive_expiry=c.keepalive_expiry_s,
        ),
        follow_redirects=True,  # Modal answers long calls with 303 to a result URL
        trust_env=False,
    )


def build_app(config: Config, *, client: httpx.AsyncClient | None = None) -> Starlette:
    """The coordinator for `config.models` (at least one upstream). Pass `client` to control transport in tests."""
    if not config.models:
        raise ValueError("the coordinator needs at least one upstream in config.models")
    owns_client = client is None
    http = client or make_client(config)
    keys = load_keys(config.coordinator.keys_file) if config.coordinator.keys_file else {}
    state = CoordinatorState(config, http, UpstreamPool(config.models, http), Telemetry(), keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.pool.check()
        watcher = asyncio.create_task(state.pool.watch(HEALTH_INTERVAL_S))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if owns_client:
                await http.aclose()

    app = Starlette(routes=_routes(state), lifespan=lifespan)
    app.state.coordinator = state
    return app


def _routes(state: CoordinatorState) -> list[BaseRoute]:
    chat = CompletionsEndpoint(state, Endpoint.CHAT)
    completions = CompletionsEndpoint(state, Endpoint.COMPLETIONS)

    async def models(request: Request) -> Response:
        return await _models(state, request)

    async def healthz(request: Request) -> Response:
        healthy = any(r.healthy for u in state.pool.upstreams for r in u.replicas)
        return JSONResponse({"ok": healthy}, status_code=200 if healthy else 503)

    async def status(request: Request) -> Response:
        if denied := _admin_denied(state, request):
            return denied
        return JSONResponse(_status(state))

    async def metrics(request: Request) -> Response:
        if denied := _admin_denied(state, request):
            return denied
        return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = []
    for prefix in ("", "/agents/{agent_id}"):
        for version in ("/v1", ""):
            base = prefix + version
            routes.append(Route(f"{base}/chat/completions", chat, methods=["POST"]))
            routes.append(Route(f"{base}/completions", completions, methods=["POST"]))
            routes.append(Route(f"{base}/models", models, methods=["GET"]))
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return routes


def _admin_denied(state: CoordinatorState, request: Request) -> Response | None:
    token = state.config.coordinator.admin_token
    if token is None or bearer_token(request.headers.get("authorization")) == token:
        return None
    body = error_body(401, "this endpoint requires the admin token (Authorization: Bearer TOKEN)")
    return Response(body, status_code=401, media_type="application/json")


async def _models(state: CoordinatorState, request: Request) -> Response:
    """One upstream: its answer unchanged. Several: the union of their model lists."""
    data: list[dict[str, Any]] = []
    seen: set[str] = set()
    for upstream in state.pool.upstreams:
        replica = state.pool.pick_replica(upstream)
        try:
            response = await state.client.get(f"{replica.url}/v1/models", headers=upstream.headers)
        except httpx.HTTPError as exc:
            error = translate_upstream_exception(exc, replica.url)
            state.telemetry.error(error.kind)
            if len(state.pool.upstreams) == 1:
                return Response(error.body(), status_code=error.status, media_type="application/json")
            continue
        if len(state.pool.upstreams) == 1:
            return Response(
                response.content,
                status_code=response.status_code,
                media_type=response.headers.get("content-type", "application/json"),
            )
        if response.status_code == 200:
            for model in response.json().get("data", []):
                if isinstance(model, dict) and model.get("id") not in seen:
                    seen.add(str(model.get("id")))
                    data.append(model)
    if not data:
        error = ProxyError(502, ErrorKind.UNREACHABLE, "no upstream answered /v1/models")
        return Response(error.body(), status_code=502, media_type="application/json")
    return JSONResponse({"object": "list", "data": data})


def _status(state: CoordinatorState) -> dict[str, Any]:
    now = time.monotonic()
    status = state.telemetry.status(now)
    status["version"] = __version__
    status["upstreams"] = [
        {
            "alias": u.alias,
            "served_names": u.served_names,
            "in_flight": u.in_flight,
            "replicas": [
                {
                    "url": r.url,
                    "healthy": r.healthy,
                    "in_flight": r.in_flight,
                    "served": r.served,
                    "last_error": r.last_error,
                    "checked_s_ago": None if r.last_check is None else round(now - r.last_check, 3),
                }
                for r in u.replicas
            ],
        }
        for u in state.pool.upstreams
    ]
    return status
