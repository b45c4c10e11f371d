"""The coordinator's own routes. Liveness: `/livez` (= `/healthz`) answers while the process serves; readiness:
`/readyz` is 503 until an upstream answers (`/health`, or `/v1/models` for servers without it). Unknown routes
answer JSON errors; the model list offers `auto` and the aliases."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.coordinator.app import build_app
from sidecar.serving import free_port, serve_app
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


async def test_unknown_routes_and_methods_answer_json_errors() -> None:
    app = build_app(make_config(f"http://127.0.0.1:{free_port()}"))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        missing = await client.get("/v2/chat/completions")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
        assert missing.json()["error"]["code"] == 404 and "/v2/chat/completions" in missing.json()["error"]["message"]
        wrong = await client.get("/v1/chat/completions")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == 405 and "POST" in wrong.headers["allow"]


async def test_the_model_list_offers_routing_names() -> None:
    async with serve_app(openai_server_without_health()) as upstream:
        app = build_app(make_config(upstream))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
            listed = (await client.get("/v1/models")).json()["data"]
            assert [m["id"] for m in listed] == ["m", "auto", "default"]
            assert listed[0] == MODELS["data"][0]  # the upstream's own entry, unchanged
            assert listed[2]["root"] == "m"
