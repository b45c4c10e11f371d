"""The agent's next chat request, predicted exactly: for LLM-level speculation (issue 7, DESIGN.md "Policies").

When a streamed answer ends in tool calls and every called tool's result is already known, the request the
agent sends next is fully determined: its previous request's messages, plus the assistant message as the
agent rebuilt it from the stream, plus one `tool` message per call, in order; every other field unchanged.

How the agent rebuilds the assistant message is the one thing that must be copied, byte for byte, from the
client. This module copies Goose's stand-in, the fleet (`sidecar/fleet/chat.py: absorb` and
`ChatReply.message`): content is the concatenation of the non-empty `delta.content` pieces (`""` when there
are none, never null); a tool call per `delta.tool_calls[].index`, in index order, shaped
`{"id", "type": "function", "function": {"name", "arguments"}}`, whose id is the last non-empty id seen and
whose name and arguments are the concatenation of their pieces (argument text exactly as streamed, never
re-encoded); `tool_calls` is present only when there is at least one call. Tool messages are
`{"role": "tool", "tool_call_id": id, "content": text}` with the text the agent's MCP client got.

If a real client builds its messages differently, the predicted request simply never equals the real one and
the speculation is discarded (counted as a mismatch): the prediction can cost tokens, never an answer.

Pure: bytes and dicts in, values out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamedReply:
    """An assistant message rebuilt from an SSE answer, and the answer's finish reason."""

    message: dict[str, Any]
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """One tool call of an answer: the server-side tool name (extension prefix removed) and parsed arguments."""

    call_id: str
    name: str
    arguments: dict[str, Any]


def _frames(data: bytes) -> list[Any] | None:
    """The JSON objects of the `data:` lines of an SSE body, `[DONE]` excluded; None if one is not JSON."""
    frames: list[Any] = []
    for line in data.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        try:
            frames.append(json.loads(payload))
        except ValueError:
            return None
    return frames


def assistant_from_sse(data: bytes) -> StreamedReply | None:
    """The assistant message of a whole streamed chat answer, as the agent appends it (module docstring).

    None when the answer cannot be rebuilt with certainty: a frame that is not JSON or not an object, an
    in-band error frame, more than one choice (`n > 1`), or no frame with a choice at all.
    """
    frames = _frames(data)
    if frames is None:
        return None
    content = ""
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    seen_choice = False
    for frame in frames:
        if not isinstance(frame, dict) or "error" in frame:
            return None
        for choice in frame.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                return None
            seen_choice = True
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                content += str(text)
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(
                    int(call.get("index", 0)),
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                finish = str(choice["finish_reason"])
    if not seen_choice:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return StreamedReply(message, finish)


def tool_requests(message: Mapping[str, Any], extension: str) -> list[ToolRequest] | None:
    """The calls of an assistant message, all to tools of `extension` (Goose names them `<extension>__<tool>`).

    None when there is no call, or any call is to another extension, has no id, or has arguments that are not
    a JSON object: the agent's next request then depends on something this prediction cannot know.
    """
    prefix = f"{extension}__"
    out: list[ToolRequest] = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        if not name.startswith(prefix) or len(name) == len(prefix) or not call.get("id"):
            return None
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            return None
        if not isinstance(arguments, dict):
            return None
        out.append(ToolRequest(str(call["id"]), name[len(prefix) :], arguments))
    return out or None


def next_request(
    body: Mapping[str, Any], message: Mapping[str, Any], calls: Sequence[ToolRequest], results: Sequence[str]
) -> dict[str, Any]:
    """`body` with the assistant `message` and one tool message per call (same order) appended; all else kept."""
    if len(calls) != len(results):
        raise ValueError("one result per tool call")
    tool_messages = [
        {"role": "tool", "tool_call_id": call.call_id, "content": text}
        for call, text in zip(calls, results, strict=True)
    ]
    return {**body, "messages": [*body["messages"], dict(message), *tool_messages]}
