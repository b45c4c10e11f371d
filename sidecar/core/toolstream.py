"""Tool calls as they complete inside a streamed chat answer: for streaming tool execution (issue 19).

`ToolCallStream` is fed the SSE bytes of one streamed chat-completions answer, chunk by chunk, exactly as
relayed (chunks may split lines, frames may merge several tokens), and returns each tool call the moment it is
complete. A call is complete when a later call's index starts (OpenAI and vLLM stream one call's deltas after
the other: `index, id, type, function.name` first, then `function.arguments` fragments), or when the choice
finishes with `finish_reason: "tool_calls"` (every call still open is then complete). A call is returned at
most once, in index order, with its id (the last non-empty one seen), its name and its argument text
(concatenated fragments, exactly as streamed).

The stream stops yielding calls (`broken`) at anything it cannot follow with certainty: a `data:` line that is
not a JSON object, an in-band error frame, a second choice (`n > 1`), an index that is not an integer, a
fragment for a call already returned (its text would no longer be what was returned), or a line longer than
`max_line_bytes`. What it already returned stays returned: a consumer must treat calls as predictions that the
agent's real call confirms (the sidecar matches the real call's exact arguments), never as facts.

`early_request(call, extension)` turns a returned call into the sidecar request to start early: only calls to
`<extension>__<tool>` whose arguments are a JSON object. `early_url(peek_url)` is the sidecar's `/early` URL
beside the `/peek` URL it advertises (same key).

Pure: bytes in, values out; no I/O, no clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sidecar.core.nextcall import ToolRequest

MAX_LINE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamedCall:
    """One complete tool call of a streamed answer: its index, id, name (as offered) and argument text."""

    index: int
    call_id: str
    name: str
    arguments: str


@dataclass(slots=True)
class _Slot:
    call_id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ToolCallStream:
    """Incremental parser of one streamed answer's tool calls (see the module docstring)."""

    max_line_bytes: int = MAX_LINE_BYTES
    broken: bool = False
    finished: bool = False  # `finish_reason` seen: nothing more can complete
    _buffer: bytes = b""
    _open: dict[int, _Slot] = field(default_factory=dict)
    _returned: set[int] = field(default_factory=set)

    def feed(self, chunk: bytes) -> list[StreamedCall]:
        """The calls completed by this chunk (possibly none), in index order."""
        if self.broken or self.finished:
            return []
        self._buffer += chunk
        out: list[StreamedCall] = []
        while not self.broken and not self.finished:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            out += self._line(line.rstrip(b"\r"))
        if len(self._buffer) > self.max_line_bytes:
            self._break()
        return out

    def _break(self) -> None:
        self.broken = True
        self._open.clear()
        self._buffer = b""

    def _line(self, line: bytes) -> list[StreamedCall]:
        if not line.startswith(b"data:"):
            return []  # SSE comments, event names, blank separators
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.finished = True
            return []
        try:
            frame = json.loads(payload)
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or "error" in frame:
            self._break()
            return []
        out: list[StreamedCall] = []
        for choice in frame.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                self._break()
                return []
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                self._break()
                return []
            for call in delta.get("tool_calls") or ():
                out += self._delta(call)
                if self.broken:
                    return []
            if choice.get("finish_reason") is not None:
                if choice["finish_reason"] == "tool_calls":
                    out += self._complete_below(None)
                self.finished = True
                self._open.clear()
        return out

    def _delta(self, call: Any) -> list[StreamedCall]:
        index = call.get("index") if isinstance(call, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0 or index in self._returned:
            self._break()
            return []
        out = self._complete_below(index)  # a later call started: every earlier one is complete
        slot = self._open.setdefault(index, _Slot())
        function = call.get("function") or {}
        if not isinstance(function, dict):
            self._break()
            return []
        slot.call_id = str(call.get("id") or "") or slot.call_id
        slot.name += str(function.get("name") or "")
        slot.arguments += str(function.get("arguments") or "")
        return out

    def _complete_below(self, index: int | None) -> list[StreamedCall]:
        """Return (once) every open call with an index below `index` (all of them when None)."""
        done = sorted(i for i in self._open if index is None or i < index)
        out: list[StreamedCall] = []
        for i in done:
            slot = self._open.pop(i)
            self._returned.add(i)
            if slot.call_id and slot.name:  # a call without id or name is not one an agent could run
                out.append(StreamedCall(i, slot.call_id, slot.name, slot.arguments))
        return out


def early_request(call: StreamedCall, extension: str) -> ToolRequest | None:
    """The sidecar tool call to start early for `call`, or None: another extension's tool, or arguments that are
    not a JSON object (the agent would fail the call itself)."""
    prefix = f"{extension}__"
    if not call.name.startswith(prefix) or len(call.name) == len(prefix):
        return None
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return None
    if not isinstance(arguments, dict):
        return None
    return ToolRequest(call.call_id, call.name[len(prefix) :], arguments)


def early_url(peek_url: str) -> str | None:
    """The sidecar's `/early` URL (same query, so the same key) for its advertised `/peek` URL; None if the
    URL does not end in `/peek`."""
    parts = urlsplit(peek_url)
    if not parts.path.endswith("/peek"):
        return None
    return urlunsplit(parts._replace(path=parts.path[: -len("/peek")] + "/early"))
