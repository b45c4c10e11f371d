"""The token usage an OpenAI-compatible answer reports, read from its final bytes (SSE or JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass

_DECODER = json.JSONDecoder()  # stateless: one for every call (building one makes a new scanner each time)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int


def parse_usage(tail: bytes) -> Usage | None:
    """The last `usage` object in the final bytes of an answer; None when there is none (or it is cut off).
    `cached_prompt_tokens` is vLLM's `prompt_tokens_details.cached_tokens` (prefix-cache hits), 0 when absent."""
    text = tail.decode(errors="ignore")
    key = text.rfind('"usage"')
    if key < 0:
        return None
    brace = text.find("{", key)
    if brace < 0:
        return None
    try:
        usage, _ = _DECODER.raw_decode(text, brace)
        details = usage.get("prompt_tokens_details") or {}
        return Usage(
            int(usage.get("prompt_tokens") or 0),
            int(details.get("cached_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )
    except (ValueError, AttributeError, TypeError):
        return None
