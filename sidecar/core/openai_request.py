"""Parse an OpenAI-style request body: validate what the proxy needs, take out the coordinator's own fields.

Contract:
- The body must be a JSON object with a non-empty string `model`; chat calls need a list `messages`,
  completion calls a `prompt`. Anything else is a `RequestError` whose message says what is wrong.
- Coordinator fields are removed before the call goes upstream: `agent_id`, `latency_tolerance`, and
  `priority` when it is a tier word (`"hot"|"warm"|"cold"`). An integer `priority` is vLLM's own field and is
  passed through unchanged.
- When nothing was removed, `forward_body` is the original bytes, untouched (byte fidelity, and no re-encode
  cost on the hot path). Otherwise it is the object re-encoded compactly, every other field unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

TIER_WORDS = ("hot", "warm", "cold")
TOLERANCES = ("strict", "relaxed")


class Endpoint(StrEnum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"


class RequestError(ValueError):
    """A request the proxy refuses before calling upstream (HTTP 400); `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    endpoint: Endpoint
    body: dict[str, Any]  # the object as sent upstream (coordinator fields removed)
    forward_body: bytes
    model: str
    stream: bool
    agent_id: str | None
    tier_word: str | None  # "hot" | "warm" | "cold" from the body, if given
    native_priority: int | None  # vLLM's integer priority from the body, if given
    latency_tolerance: str | None


def parse_request(raw: bytes, endpoint: Endpoint) -> ParsedRequest:
    """Validate `raw` for `endpoint`; raise RequestError with a message a client can act on."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("request body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise RequestError("request body nests JSON too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's int digit limit
        raise RequestError(f"request body is not acceptable JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")

    model = body.get("model")
    if model is None:
        raise RequestError("missing required field 'model'", "model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' must be a non-empty string", "model")
    if endpoint is Endpoint.CHAT:
        messages = body.get("messages")
        if messages is None:
            raise RequestError("missing required field 'messages'", "messages")
        if not isinstance(messages, list):
            raise RequestError("'messages' must be a list of message objects", "messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise RequestError(f"messages[{i}] must be an object with a string 'role'", "messages")
    elif "prompt" not in body:
        raise RequestError("missing required field 'prompt'", "prompt")

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", "stream")

    removed = "agent_id" in body or "latency_tolerance" in body
    agent_id = body.pop("agent_id", None)
    if agent_id is not None:
        if not isinstance(agent_id, str) or not agent_id.strip():
            raise RequestError("'agent_id' must be a non-empty string", "agent_id")
        agent_id = agent_id.strip()

    tier_word: str | None = None
    native_priority: int | None = None
    priority = body.get("priority")
    if isinstance(priority, str):
        if priority not in TIER_WORDS:
            raise RequestError(f"'priority' must be one of {', '.join(TIER_WORDS)} or an integer", "priority")
        tier_word = priority
        del body["priority"]
        removed = True
    elif isinstance(priority, bool) or (priority is not None and not isinstance(priority, int)):
        raise RequestError(f"'priority' must be one of {', '.join(TIER_WORDS)} or an integer", "priority")
    elif isinstance(priority, int):
        native_priority = priority

    tolerance = body.pop("latency_tolerance", None)
    if tolerance is not None and tolerance not in TOLERANCES:
        raise RequestError(f"'latency_tolerance' must be one of {', '.join(TOLERANCES)}", "latency_tolerance")

    forward = encode_body(body) if removed else raw
    return ParsedRequest(
        endpoint=endpoint,
        body=body,
        forward_body=forward,
        model=model,
        stream=stream,
        agent_id=agent_id,
        tier_word=tier_word,
        native_priority=native_priority,
        latency_tolerance=tolerance,
    )


def encode_body(body: dict[str, Any]) -> bytes:
    """Compact JSON, non-ASCII kept as is (what clients and vLLM send and accept). A lone surrogate (valid as a
    JSON `\\ud800` escape, not encodable as UTF-8) makes the whole body escape non-ASCII instead: same JSON value."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()
