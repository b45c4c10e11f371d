"""A small real OpenAI-compatible upstream whose behaviour each test scripts (header `X-Script`).

It runs on a real loopback socket like vLLM would and records what it received and whether the coordinator
closed a stream early. Scripts:
    sse (default)   vLLM-framed chat stream: role delta, text, tool-call deltas, usage chunk, [DONE]
    sse-error       200 then an in-band error frame and [DONE] (vLLM's mid-stream failure)
    json            a non-streaming chat.completion
    status-N        HTTP N with vLLM's error body
    hang            headers, then nothing until the client goes away
    hold            like sse, but waits for `release` between the first frame and the rest
    drop            one frame, then the connection is cut
    slow            nothing for 2 s (for read timeouts)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "scripted-model"


class ListeningStreamingResponse(StreamingResponse):
    """Notices a client that leaves even while idle (Starlette only listens under ASGI < 2.4), as vLLM does."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await super().__call__({**scope, "asgi": {"spec_version": "2.3"}}, receive, send)


def frame(obj: dict[str, Any] | str) -> bytes:
    return b"data: " + (obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


SSE_FRAMES = [
    frame(chunk({"role": "assistant", "content": ""})),
    frame(chunk({"content": "Reading the "})),
    frame(chunk({"content": "failing test — ünïcode ok."})),
    frame(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": ""}}
                ]
            }
        )
    ),
    frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": '}}]})),
    frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"tests/test_a.py"}'}}]})),
    frame(chunk({}, finish="tool_calls")),
    frame(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
        }
    ),
    frame("[DONE]"),
]

ERROR_FRAMES = [
    SSE_FRAMES[0],
    frame({"error": {"message": "engine died", "type": "InternalServerError", "param": None, "code": 500}}),
    frame("[DONE]"),
]

COMPLETION = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "done"}, "logprobs": None, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


@dataclass
class Upstream:
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # each request's body bytes, as they arrived
    closed_early: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_progress: int = 0

    def app(self) -> Starlette:
        async def completions(request: Request) -> Response:
            raw = await request.body()
            self.bodies.append(raw)
            self.received.append(json.loads(raw) if raw else {})
            self.headers.append(dict(request.headers))
            script = request.headers.get("x-script", "sse")
            if script.startswith("status-"):
                code = int(script.removeprefix("status-"))
                body = {
                    "error": {"message": f"scripted {code}", "type": "BadRequestError", "param": None, "code": code}
                }
                return JSONResponse(body, status_code=code)
            if script == "json":
                return JSONResponse(COMPLETION)
            if script == "slow":
                await asyncio.sleep(2)
                return JSONResponse(COMPLETION)
            return ListeningStreamingResponse(self._stream(script), media_type="text/event-stream")

        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]})

        async def health(request: Request) -> Response:
            return Response(status_code=200)

        return Starlette(
            routes=[
                Route("/v1/chat/completions", completions, methods=["POST"]),
                Route("/v1/completions", completions, methods=["POST"]),
                Route("/v1/models", models),
                Route("/health", health),
            ]
        )

    async def _stream(self, script: str) -> AsyncIterator[bytes]:
        self.in_progress += 1
        finished = False
        try:
            if script == "hang":
                await asyncio.sleep(3600)
            frames = ERROR_FRAMES if script == "sse-error" else SSE_FRAMES
            for i, data in enumerate(frames):
                yield data
                if script == "drop" and i == 1:
                    raise ConnectionResetError("scripted drop")
                if script == "hold" and i == 0:
                    await self.release.wait()
                await asyncio.sleep(0.001)
            finished = True
        finally:
            self.in_progress -= 1
            if not finished:
                self.closed_early.set()
