"""A cheap deterministic tokenizer and Qwen's chat template, standing in for the real BPE.

Approximation (documented, not exact): GPT-2 style pre-tokenization (a word with its leading space, digit runs
of up to 3, punctuation runs of up to 3, whitespace runs), then words longer than 8 characters (leading space
included) are split into 8-character pieces. On English and Python this gives ~3.7-4 characters per token,
within ~20% of Qwen2.5's BPE, which is what matters for timing. A piece's id is a stable hash of its text, so
equal texts give equal ids in every process (prefix caching depends on it).

Contract: the chat template is encoded segment by segment (role headers, each message's text, special tokens),
so the rendering of a conversation is a prefix of the rendering of any continuation of it: multi-turn prefix
caching works as it does in vLLM for byte-identical prefixes. The assistant's generated text
(`assistant_text`) followed by the end-of-sequence token is rendered in the next prompt exactly as generated.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_PIECE = re.compile(r" ?[A-Za-z_]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9_]{1,3}|\s+(?!\S)|\s+")
_MAX_WORD = 8

# Special tokens get ids below 1000; text pieces hash into [1000, 2**31).
IM_START = 1
IM_END = 2  # also the end-of-sequence token of the instruct models
ENDOFTEXT = 3


def pieces(text: str) -> list[str]:
    """The text split into token strings; `"".join(pieces(t)) == t`."""
    out: list[str] = []
    for match in _PIECE.finditer(text):
        piece = match.group()
        if len(piece) <= _MAX_WORD or piece.isspace():
            out.append(piece)
            continue
        out.extend(piece[i : i + _MAX_WORD] for i in range(0, len(piece), _MAX_WORD))
    return out


def piece_id(piece: str) -> int:
    return 1000 + zlib.crc32(piece.encode("utf-8")) % (2**31 - 1000)


@functools.lru_cache(maxsize=1024)
def _encode_cached(text: str) -> tuple[int, ...]:
    return tuple(piece_id(p) for p in pieces(text))


def encode(text: str) -> tuple[int, ...]:
    return _encode_cached(text)


def count(text: str) -> int:
    return len(encode(text))


# --- Qwen2.5 chat template (hermes tool calls), rendered into token ids -------------------------------------

_TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_EPILOGUE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def content_text(content: Any) -> str:
    """OpenAI message content (a string, a list of parts, or None) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                parts.append(text if isinstance(text, str) else json.dumps(part, sort_keys=True))
            else:
                parts.append(str(part))
        return "".join(parts)
    return json.dumps(content, sort_keys=True)


def tool_call_header(name: str) -> str:
    """A hermes tool call's text up to its arguments: the name is complete once this much is generated."""
    return f'<tool_call>\n{{"name": {json.dumps(name)}, "arguments": '


def tool_call_text(name: str, arguments: str) -> str:
    """One hermes tool call as the model writes it (arguments verbatim, as the client sends them back)."""
    return f"{tool_call_header(name)}{arguments}}}\n</tool_call>"


def assistant_text(content: str, calls: Iterable[tuple[str, str]]) -> str:
    """The assistant turn's text: content, then each tool call on its own lines."""
    text = content
    for name, arguments in calls:
        text += ("\n" if text else "") + tool_call_text(name, arguments)
    return text


def _assistant_message_text(message: Mapping[str, Any]) -> str:
    calls = []
    for call in message.get("tool_calls") or []:
        function = (call.get("function") if isinstance(call, Mapping) else None) or {}
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        calls.append((str(function.get("name", "")), arguments))
    return assistant_text(content_text(message.get("content")), calls)


def render_chat(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> tuple[int, ...]:
    """Token ids of the prompt vLLM would build for these messages and tools, generation prompt included."""
    ids: list[int] = []
    rest = list(messages)
    system = DEFAULT_SYSTEM
    if rest and rest[0].get("role") in ("system", "developer"):
        system = content_text(rest[0].get("content"))
        rest = rest[1:]
    if tools:
        system += _TOOLS_PREAMBLE
        for tool in tools:
            system += "\n" + json.dumps(tool, sort_keys=False)
        system += _TOOLS_EPILOGUE
    ids += (IM_START, *encode("system\n"), *encode(system), IM_END, *encode("\n"))
    i = 0
    while i < len(rest):
        message = rest[i]
        role = message.get("role")
        if role == "tool":
            # Consecutive tool results share one user turn, each wrapped in <tool_response>.
            ids += (IM_START, *encode("user"))
            while i < len(rest) and rest[i].get("role") == "tool":
                body = content_text(rest[i].get("content"))
                ids += encode("\n<tool_response>\n") + encode(body) + encode("\n</tool_response>")
                i += 1
            ids += (IM_END, *encode("\n"))
            continue
        text = _assistant_message_text(message) if role == "assistant" else content_text(message.get("content"))
        ids += (IM_START, *encode(f"{role}\n"), *encode(text), IM_END, *encode("\n"))
        i += 1
    ids += (IM_START, *encode("assistant\n"))
    return tuple(ids)


def render_completion(prompt: Any) -> tuple[int, ...]:
    """Token ids of a /v1/completions prompt: text, or a list of token ids as vLLM accepts."""
    if isinstance(prompt, str):
        return encode(prompt)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return tuple(prompt)
    raise ValueError("prompt must be a string or a list of token ids")
