"""What leaves the coordinator: its upstream secrets only to its replicas' origins, its own Modal headers ahead of
a client's, over real servers on loopback."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.coordinator.outbound import merge_headers
from sidecar.serving import serve_app

SECRETS = {"Modal-Key": "wk-secret-key", "Modal-Secret": "ws-secret-value"}
ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def recorder(seen: list[dict[str, str]], redirect_to: str | None = None) -> Starlette:
    async def chat(request: Request) -> Response:
        seen.append({k: v for k, v in request.headers.items()})
        await request.body()
        if redirect_to is not None:
            return RedirectResponse(f"{redirect_to}/v1/chat/completions", status_code=307)
        return JSONResponse(ANSWER)

    async def health(request: Request) -> Response:
        return JSONResponse({})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health),
            Route("/v1/models", models),
        ]
    )


async def test_secrets_do_not_follow_a_cross_origin_redirect_and_ours_win() -> None:
    elsewhere: list[dict[str, str]] = []
    direct: list[dict[str, str]] = []
    async with serve_app(recorder(elsewhere)) as other:
        other_url = other.replace("127.0.0.1", "localhost")  # same machine, another origin
        async with serve_app(recorder(direct, redirect_to=other_url)) as upstream:
            config = load_config(
                env={}, overrides={"models": {"default": {"replicas": [upstream], "headers": SECRETS}}}
            )
            async with serve_app(build_app(config)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
                body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                mine = {"modal-key": "client-key", "MODAL-SESSION-ID": "someone-else", "x-agent-id": "agent-1"}
                answer = await client.post("/v1/chat/completions", json=body, headers=mine)
                assert answer.status_code == 200, answer.text
    (sent,) = direct
    assert sent["modal-key"] == SECRETS["Modal-Key"] and sent["modal-secret"] == SECRETS["Modal-Secret"]
    assert sent["modal-session-id"] == "agent-1"  # the coordinator's, never the client's
    assert "client-key" not in str(direct)
    (redirected,) = elsewhere
    assert "modal-key" not in redirected and "modal-secret" not in redirected
    assert SECRETS["Modal-Secret"] not in str(redirected)


def test_merge_headers_replaces_every_spelling() -> None:
    merged = merge_headers(
        {"modal-key": "c", "MODAL-KEY": "c2", "modal-session-id": "c3", "x-other": "keep"},
        {"Modal-Key": "ours"},
    )
    assert merged == {"x-other": "keep", "Modal-Key": "ours"}
