"""Does an answer run a long tool? For the `kv` policy's `kv_long_tool_keep_s` (`KVLedger.finished(long_tool=...)`).

Long means a test run: in the fleet simulation's workload a test run takes a median 10 s (p90 60 s), longer than
the `kv_keep_s` hold, so holding the agent's KV place through it only idles the GPU. An answer runs a long tool
when any of its tool calls (OpenAI shape: a name and a JSON arguments string) is:

- a test tool (`TEST_TOOLS`): the sidecar's `run_tests`, under any extension prefix (Goose names extension tools
  `<extension>__<tool>`; the name is read without its prefix, `toolactions.normalize_tool_name`); or
- a command tool (`COMMAND_TOOLS`: Goose's `developer__shell`, the sidecar's `run_command`, a plain `bash`) whose
  command line (the argument the table names) runs a test runner (`TEST_RUNNERS`) as one of its commands.

A command line runs a test runner as `testcommands.command_runs_tests` judges it (its table, and what it does
not detect).

Never raises: unparseable arguments (not JSON, not an object, no command string), unbalanced quotes or anything
else unexpected make the call not long (False: the agent keeps its place for `kv_keep_s`, as before).

`AnswerToolCalls` reads one relayed answer as it goes by (streamed SSE: the tool calls assembled by
`toolstream.ToolCallStream`, counted only when the answer finished without an error frame; a JSON body:
`choices[0].message.tool_calls`, the body kept up to `MAX_BODY_BYTES`) and says at the end whether it runs a long
tool. Pure: bytes and strings in, booleans out; no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sidecar.core.testcommands import command_runs_tests
from sidecar.core.toolactions import normalize_tool_name
from sidecar.core.toolstream import ToolCallStream

# Tools that are a test run whatever their arguments (names without the extension prefix).
TEST_TOOLS: frozenset[str] = frozenset({"run_tests"})
# Tools that run a command line -> the argument that holds it: Goose's developer shell, the sidecar's run_command.
COMMAND_TOOLS: Mapping[str, str] = {"shell": "command", "run_command": "command", "bash": "command"}


def call_runs_long_tool(name: str, arguments: str | None) -> bool:
    """True when the tool call `name(arguments)` (arguments: the call's JSON text) is a test run."""
    tool = normalize_tool_name(name)
    if tool in TEST_TOOLS:
        return True
    key = COMMAND_TOOLS.get(tool)
    if key is None:
        return False
    try:
        parsed = json.loads(arguments or "")
    except (ValueError, TypeError, RecursionError):
        return False
    command = parsed.get(key) if isinstance(parsed, dict) else None
    return isinstance(command, str) and command_runs_tests(command)


def answer_runs_long_tool(calls: Iterable[tuple[str, str | None]]) -> bool:
    """True when any of an answer's tool calls, (name, JSON arguments), is a test run."""
    return any(call_runs_long_tool(name, arguments) for name, arguments in calls)


def message_tool_calls(message: Any) -> list[tuple[str, str | None]]:
    """(name, arguments) of an OpenAI assistant message's `tool_calls`; entries not in that shape are skipped."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    out: list[tuple[str, str | None]] = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            out.append((function["name"], arguments if isinstance(arguments, str) else None))
    return out


def body_runs_long_tool(body: bytes) -> bool:
    """True when a non-streamed chat-completions body's `choices[0].message` calls a test run."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return False
    choices = document.get("choices") if isinstance(document, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    return answer_runs_long_tool(message_tool_calls(choices[0].get("message")))


MAX_BODY_BYTES = 1024 * 1024


class AnswerToolCalls:
    """One relayed answer, fed chunk by chunk as relayed: does it run a long tool? A streamed answer's calls are
    assembled as they complete (`ToolCallStream`); a JSON body is kept (up to `MAX_BODY_BYTES`, beyond that: not
    long) and read at the end. `feed` and `runs_long_tool` never raise."""

    def __init__(self, streamed: bool) -> None:
        self.stream: ToolCallStream | None = ToolCallStream() if streamed else None
        self.body: bytearray | None = None if streamed else bytearray()
        self.long = False  # a streamed call seen so far is a test run

    def feed(self, chunk: bytes) -> None:
        if self.stream is not None:
            if self.stream.broken or self.stream.finished:
                return
            try:
                calls = self.stream.feed(chunk)
            except Exception:  # a frame shaped in a way the parser did not expect: stop reading
                self.stream.broken = True
                return
            if not self.long:
                self.long = any(call_runs_long_tool(c.name, c.arguments) for c in calls)
        elif self.body is not None:
            self.body += chunk
            if len(self.body) > MAX_BODY_BYTES:
                self.body = None

    def runs_long_tool(self) -> bool:
        """The answer runs a long tool. Streamed: one of its calls is a test run and the answer finished (its
        `finish_reason` seen, no in-band error or unreadable frame before it). A cut or unreadable answer: False."""
        if self.stream is not None:
            return self.long and self.stream.finished and not self.stream.broken
        return self.body is not None and body_runs_long_tool(bytes(self.body))
