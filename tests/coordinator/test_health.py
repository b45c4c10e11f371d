"""Liveness and readiness: `/livez` (= `/healthz`) answers while the process serves, whatever the upstreams do;
`/readyz` is 503 until an upstream answers, through `/health` or, for servers without it, `/v1/models`."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.coordinator.app import build_app
from sidecar.testing import free_port, serve_app
from tests.coordinator.conftest import make_config

MODELS = {"object": "list", "data": [{"id": "m", "object": "model"}]}


def openai_server_without_health(models_status: int = 200) -> Starlette:
    """An OpenAI-compatible server that has no `/health` route (a hosted API, another proxy)."""

    async def models(request: Request) -> Response:
        return JSONResponse(MODELS, status_code=models_status)

    return Starlette(routes=[Route("/v1/models", models)])


async def test_liveness_does_not_depend_on_an_upstream() -> None:
    app = build_app(make_config(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        for path in ("/livez", "/healthz"):
            response = await client.get(path)
            assert response.status_code == 200 and response.json() == {"ok": True}
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"ok": False, "upstreams": {"default": False}}


async def test_an_upstream_without_health_is_ready_through_its_model_list() -> None:
    async with serve_app(openai_server_without_health()) as upstream:
        app = build_app(make_config(upstream))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"ok": True, "upstreams": {"default": True}}
            assert app.state.coordinator.pool.upstreams[0].served_names == ["m"]


async def test_an_upstream_whose_model_list_fails_is_not_ready() -> None:
    async with serve_app(openai_server_without_health(models_status=500)) as upstream:
        app = build_app(make_config(upstream))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/readyz")).status_code == 503
            replica = app.state.coordinator.pool.upstreams[0].replicas[0]
            assert replica.last_error == "/health answered 404, /v1/models answered 500"
