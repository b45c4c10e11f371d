"""Pure helpers for what an agent sends and reads ahead: context compression and file-read prediction.

- `compress_messages`: the seed's "context compression" experiment (`seed/000_bc7af0ed774b52c4.txt`, "Context
  Compression"): every tool result except the last `keep_recent` is cut to its first two lines plus a note.
  The agent keeps the full history; only what is sent shrinks. The cut moves forward every turn, so the prompt
  prefix changes where it starts, which is what costs prefix-cache hits on vLLM.
- `predict_reads`: the seed's "file prefetch" experiment ("While the agent waits for pytest, prefetch files
  it will likely read next"): the `.py` paths a tool result names (failing tests, traceback frames, listings,
  search hits), in order of appearance, that the agent has not read yet.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

KEEP_LINES = 2
_PY_PATH = re.compile(r"(?<![\w/.\-])(?:\./)?((?:[\w\-]+/)*[\w\-]+\.py)(?![\w/])")


def compress_messages(messages: Sequence[Mapping[str, Any]], keep_recent: int) -> list[dict[str, Any]]:
    """A copy of `messages` with all but the last `keep_recent` tool results shortened (see module docstring)."""
    tool_positions = [i for i, m in enumerate(messages) if m.get("role") == "tool"]
    old = set(tool_positions[: max(0, len(tool_positions) - keep_recent)])
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if index in old and isinstance(content, str):
            out.append({**message, "content": summarize(content)})
        else:
            out.append(dict(message))
    return out


def summarize(text: str) -> str:
    lines = text.split("\n")
    if len(lines) <= KEEP_LINES + 1:
        return text
    kept = "\n".join(lines[:KEEP_LINES])
    return f"{kept}\n[compressed: {len(lines) - KEEP_LINES} more lines omitted to save context]"


def predict_reads(result: str, already_read: Collection[str], limit: int = 3) -> list[str]:
    """Up to `limit` `.py` paths named in `result`, first-seen order, skipping `already_read` ones."""
    found: list[str] = []
    for match in _PY_PATH.finditer(result):
        path = match.group(1).removeprefix("./")
        if path not in already_read and path not in found:
            found.append(path)
            if len(found) == limit:
                break
    return found


def prompt_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
