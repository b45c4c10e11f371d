"""LLM calls as Goose makes them: the request a server receives, and a stream folded into a reply."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.fleet.chat import ChatClient, ChatError, ChatReply, absorb, goose_body, goose_headers
from sidecar.serving import serve_app

FRAMES = [
    {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"model": "m", "choices": [{"index": 0, "delta": {"content": "Let me read it."}}]},
    {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "sidecar__read_file"}}
                    ]
                },
            }
        ],
    },
    {
        "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]}}],
    },
    {
        "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a.py"}'}}]}}],
    },
    {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"model": "m", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
]


def sse(frames: list[dict[str, Any]]) -> bytes:
    return b"".join(f"data: {json.dumps(f)}\n\n".encode() for f in frames) + b"data: [DONE]\n\n"


def recording_app(seen: list[tuple[dict[str, Any], dict[str, str]]], statuses: list[int]) -> Starlette:
    async def chat(request: Request) -> Response:
        seen.append((await request.json(), dict(request.headers)))
        status = statuses.pop(0) if statuses else 200
        if status != 200:
            return JSONResponse({"error": {"message": "busy"}}, status, headers={"Retry-After": "0"})
        headers = {"x-goose-sidecar-tier": "hot"}
        return Response(sse(FRAMES), media_type="text/event-stream", headers=headers)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


async def test_request_is_goose_shaped_and_the_stream_is_folded() -> None:
    seen: list[tuple[dict[str, Any], dict[str, str]]] = []
    tools = [{"type": "function", "function": {"name": "sidecar__read_file", "parameters": {}, "strict": False}}]
    messages = [{"role": "user", "content": "hi"}]
    async with serve_app(recording_app(seen, [])) as url, httpx.AsyncClient() as client:
        reply = await ChatClient(client, url).complete(
            goose_body("large", messages, tools), goose_headers("sess-1", "key", "agent-7")
        )
    body, headers = seen[0]
    assert list(body) == ["model", "messages", "tools", "stream", "stream_options"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"][0]["function"]["strict"] is False
    assert headers["agent-session-id"] == "sess-1"
    assert headers["authorization"] == "Bearer key"
    assert headers["x-agent-id"] == "agent-7"
    assert reply.content == "Let me read it."
    assert reply.tool_calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "sidecar__read_file", "arguments": '{"path": "a.py"}'},
        }
    ]
    assert reply.finish_reason == "tool_calls" and reply.usage == {"prompt_tokens": 10, "completion_tokens": 5}
    assert reply.headers["x-goose-sidecar-tier"] == "hot"
    assert reply.first_token is not None and reply.sent <= reply.first_token <= reply.done
    assert reply.message()["tool_calls"] == reply.tool_calls


async def test_busy_answers_are_retried_like_goose_and_then_given_up() -> None:
    seen: list[tuple[dict[str, Any], dict[str, str]]] = []
    async with serve_app(recording_app(seen, [429, 503])) as url, httpx.AsyncClient() as client:
        reply = await ChatClient(client, url).complete(goose_body("m", [], []), {})
        assert reply.retries == 2 and len(seen) == 3
        with pytest.raises(ChatError) as caught:
            await ChatClient(client, url + "/missing").complete(goose_body("m", [], []), {})
    assert caught.value.status == 404  # not retried: only 429 and 5xx are


def test_an_in_band_error_frame_is_reported() -> None:
    reply = ChatReply()
    assert absorb(reply, {}, {"error": {"message": "engine died", "code": 500}}, 1.0) == "engine died"


def test_role_only_frames_are_not_the_first_token() -> None:
    reply = ChatReply()
    absorb(reply, {}, FRAMES[0], 1.0)
    assert reply.first_token is None
    absorb(reply, {}, FRAMES[1], 2.0)
    assert reply.first_token == 2.0
