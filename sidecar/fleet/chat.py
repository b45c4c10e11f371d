"""LLM calls exactly as Goose's OpenAI provider makes them, with timings taken off the stream.

Body (`shared/reference/goose.md`): `{model, messages, tools: [{type: function, function: {name, description,
parameters, strict: false}}], stream: true, stream_options: {include_usage: true}}`; headers
`agent-session-id`, `Authorization: Bearer <key>`, and `X-Agent-Id` (what `OPENAI_CUSTOM_HEADERS` adds).
Like Goose, a 429 or 5xx answer is retried up to 3 times, waiting `Retry-After` when given.

Timings (monotonic seconds): `sent` when the request goes out, `first_token` at the first frame that carries
content or a tool-call delta (headers or an empty role frame do not count), `done` at `[DONE]` or end of body.
Response headers named `x-*` are kept (the coordinator may report stage, tier, queue wait there).

With `clocks` (served model name -> that simulator's clock, in-process only) the same three moments are also
read on every simulator's clock; `sim_times(model)` then gives the call's durations in simulated seconds,
free of the event-loop lag a busy 2-core machine adds to real-time measurements.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRIES = 3
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_WAIT_S = 30.0


class ChatError(Exception):
    """A call that failed after retries: HTTP status (None for a transport failure) and the message."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status or 'transport'}: {message}")
        self.status = status
        self.message = message


@dataclass
class ChatReply:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sent: float = 0.0
    first_token: float | None = None
    done: float = 0.0
    retries: int = 0
    clock_sent: dict[str, float] = field(default_factory=dict)
    clock_first: dict[str, float] = field(default_factory=dict)
    clock_done: dict[str, float] = field(default_factory=dict)

    def sim_times(self) -> tuple[float, float, float] | None:
        """(ttft, generation, total) on the answering model's simulator clock, or None without one."""
        model = self.model or ""
        if model not in self.clock_sent or model not in self.clock_done:
            return None
        sent, done = self.clock_sent[model], self.clock_done[model]
        first = self.clock_first.get(model, done)
        return first - sent, done - first, done - sent

    def message(self) -> dict[str, Any]:
        """The assistant message as Goose appends it to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message

    @property
    def ttft_s(self) -> float:
        return (self.first_token if self.first_token is not None else self.done) - self.sent

    @property
    def generation_s(self) -> float:
        return self.done - (self.first_token if self.first_token is not None else self.done)


def goose_body(model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": list(messages)}
    if tools:
        body["tools"] = list(tools)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def goose_headers(session_id: str, api_key: str, agent_id: str) -> dict[str, str]:
    return {"agent-session-id": session_id, "Authorization": f"Bearer {api_key}", "X-Agent-Id": agent_id}


class ChatClient:
    """Streams chat completions from `base_url` (the coordinator, no `/v1`)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        clocks: Mapping[str, Callable[[], float]] | None = None,
    ) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.clocks = dict(clocks or {})

    def _read_clocks(self) -> dict[str, float]:
        return {name: clock() for name, clock in self.clocks.items()}

    async def complete(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> ChatReply:
        retries = 0
        while True:
            reply = ChatReply(sent=time.monotonic(), retries=retries, clock_sent=self._read_clocks())
            try:
                status, text, wait = await self._stream(body, headers, reply)
            except httpx.HTTPError as exc:
                status, text, wait = None, f"{type(exc).__name__}: {exc}", None
            if status == 200:
                return reply
            if retries >= RETRIES or (status is not None and status not in RETRY_STATUSES):
                raise ChatError(status, text)
            retries += 1
            await asyncio.sleep(min(wait if wait is not None else 2.0**retries * 0.25, MAX_RETRY_WAIT_S))

    async def _stream(
        self, body: Mapping[str, Any], headers: Mapping[str, str], reply: ChatReply
    ) -> tuple[int, str, float | None]:
        async with self.client.stream("POST", self.url, json=body, headers=dict(headers)) as response:
            reply.headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-")}
            if response.status_code != 200:
                raw = await response.aread()
                return response.status_code, _error_text(raw), _retry_after(response.headers.get("retry-after"))
            calls: dict[int, dict[str, Any]] = {}
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                had_first = reply.first_token is not None
                error = absorb(reply, calls, json.loads(data), time.monotonic())
                if error is not None:
                    return 502, error, None
                if not had_first and reply.first_token is not None:
                    reply.clock_first = self._read_clocks()
            reply.done = time.monotonic()
            reply.clock_done = self._read_clocks()
            reply.tool_calls = [calls[i] for i in sorted(calls)]
            return 200, "", None


def absorb(reply: ChatReply, calls: dict[int, dict[str, Any]], frame: Mapping[str, Any], now: float) -> str | None:
    """Fold one SSE frame into `reply` (content, tool-call deltas, usage); returns an in-band error's message."""
    if "error" in frame:
        error = frame["error"]
        return str(error.get("message", error)) if isinstance(error, Mapping) else str(error)
    reply.model = frame.get("model") or reply.model
    if frame.get("usage"):
        reply.usage = frame["usage"]
    for choice in frame.get("choices") or ():
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            reply.content += text
        for call in delta.get("tool_calls") or ():
            slot = calls.setdefault(
                int(call.get("index", 0)), {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            slot["id"] = call.get("id") or slot["id"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
        if (text or delta.get("tool_calls")) and reply.first_token is None:
            reply.first_token = now
        if choice.get("finish_reason"):
            reply.finish_reason = choice["finish_reason"]
    return None


def _error_text(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, Mapping):
        return str(error.get("message", error))
    return str(error or body)[:500]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
