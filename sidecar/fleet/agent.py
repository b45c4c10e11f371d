"""One Goose-like agent: LLM turns through the coordinator, tool calls through its own sidecar over MCP.

The loop (as Goose's agent loop, `shared/reference/goose.md`): the system prompt and the task, then turns:
one streaming chat completion with the whole conversation and the sidecar's tools; the assistant message is
appended; each tool call runs through MCP with Goose's `_meta` (several calls of one turn run concurrently, as
Goose runs them) and its text result is appended as a `tool` message; the loop ends when the model answers
without a tool call, at `max_turns`, or on an LLM error that survived Goose's retries.

Experiment switches (off by default, so an agent is plain Goose): `compress` sends a compressed view of the
conversation (`context.compress_messages`); `prefetch` reads the files the last tool result names through the
sidecar while the LLM call is in flight (`context.predict_reads`), warming the sidecar's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.core.conversation import classify_messages
from sidecar.core.stages import DEFAULT_STAGE_TIERS
from sidecar.core.wire import QUEUE_MS_HEADER, STAGE_HEADER, TIER_HEADER  # what the coordinator says of a call
from sidecar.fleet.chat import ChatClient, ChatError, ChatReply, goose_body, goose_headers
from sidecar.fleet.context import compress_messages, predict_reads
from sidecar.fleet.mcp_client import ToolResult, ToolSession
from sidecar.fleet.records import AgentRun, Turn

# A Goose-like system prompt (paraphrasing the shape of Goose's own: role, tool use, how to work, how to end).
SYSTEM_PROMPT = """\
You are a general-purpose AI agent called goose, created by Block. You work autonomously in a software \
project on the user's machine and complete tasks without asking for confirmation.

# Extensions
The sidecar extension gives you workspace tools: read_file, list_dir and search to explore the code, \
edit_file and write_file to change it, run_tests to run the project's test suite, run_command for a few \
allowed commands (such as git commit), and git_status / git_diff to review your changes. Prefer these tools \
to shell commands. Their results always match the files as they are now.

# How to work
- Start by understanding the project: list its files, read the relevant modules and run the tests.
- When a test fails, read the failing test and the code it exercises before changing anything.
- Make the smallest change that fixes the problem; keep the style of the surrounding code.
- After every change, run the tests again. Do not stop while tests fail.
- When the work is done and the tests pass, commit it with a short, descriptive message.

# Response guidelines
- Use the tools to act; do not describe what you would do.
- Call one tool at a time unless the calls are independent.
- When you are finished, answer with a short summary of what you changed and why, without calling a tool.
"""

MARKER = "# sim-fix:"


@dataclass(frozen=True)
class AgentSpec:
    agent_id: str
    session_id: str
    workspace: Path
    task: str
    model: str
    api_key: str = "fleet-agent-key"
    max_turns: int = 30
    compress: bool = False
    keep_recent: int = 2
    prefetch: bool = False


@dataclass(frozen=True)
class CallLog:
    """One MCP call the agent made, in order: which turn, whether it was a prefetch, the tool and its path."""

    turn: int
    prefetch: bool
    tool: str
    path: str | None


class Agent:
    def __init__(
        self,
        spec: AgentSpec,
        chat: ChatClient,
        tools: ToolSession,
        *,
        epoch: float,
        on_turn: Callable[[AgentRun, Turn], None] | None = None,
    ) -> None:
        self.spec = spec
        self.chat = chat
        self.tools = tools
        self.epoch = epoch
        self.on_turn = on_turn
        self.calls: list[CallLog] = []
        self.run_record = AgentRun(spec.agent_id, spec.session_id, str(spec.workspace))
        self._read: set[str] = set()
        self._prefetched: set[str] = set()

    async def run(self) -> AgentRun:
        spec, run = self.spec, self.run_record
        run.started_at = time.monotonic() - self.epoch
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": spec.task},
        ]
        headers = goose_headers(spec.session_id, spec.api_key, spec.agent_id)
        last_results = ""
        try:
            for index in range(spec.max_turns):
                sent = compress_messages(messages, spec.keep_recent) if spec.compress else messages
                turn = Turn(index=index, at=time.monotonic() - self.epoch, requested_model=spec.model)
                prefetch = self._start_prefetch(index, last_results) if spec.prefetch else None
                try:
                    reply = await self.chat.complete(goose_body(spec.model, sent, self.tools.tools), headers)
                except ChatError as exc:
                    turn.error = str(exc)
                    run.error = f"turn {index}: LLM call failed: {exc}"
                    self._record(turn)
                    break
                finally:
                    if prefetch is not None:
                        turn.prefetched = await prefetch
                describe(turn, reply, sent)
                messages.append(reply.message())
                if not reply.tool_calls:
                    run.finished = True
                    run.final_text = reply.content
                    self._record(turn)
                    break
                started = time.monotonic()
                results = await asyncio.gather(*(self._call(index, call) for call in reply.tool_calls))
                turn.tool_s = time.monotonic() - started
                for call, result in zip(reply.tool_calls, results, strict=True):
                    turn.tools.append(call["function"]["name"])
                    turn.tool_errors += int(result.is_error)
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": result.text})
                last_results = "\n".join(result.text for result in results)
                self._record(turn)
        except Exception as exc:  # one broken agent must not take the fleet down
            run.error = f"{type(exc).__name__}: {exc}"
        run.ended_at = time.monotonic() - self.epoch
        run.solved = workspace_solved(spec.workspace)
        return run

    def _record(self, turn: Turn) -> None:
        self.run_record.turns.append(turn)
        if self.on_turn is not None:
            self.on_turn(self.run_record, turn)

    async def _call(self, turn: int, call: Mapping[str, Any]) -> ToolResult:
        function = call.get("function") or {}
        offered = str(function.get("name", ""))
        name = self.tools.tool_name(offered)
        if name is None:
            return ToolResult(f"Error: Tool {offered} not found", True)
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError as exc:
            return ToolResult(f"Error: the tool call's arguments are not valid JSON: {exc}", True)
        if not isinstance(arguments, dict):
            return ToolResult("Error: the tool call's arguments must be a JSON object", True)
        path = arguments.get("path") if isinstance(arguments.get("path"), str) else None
        if name == "read_file" and path:
            self._read.add(path.removeprefix("./"))
        self.calls.append(CallLog(turn, False, name, path))
        return await self.tools.call(
            name,
            arguments,
            session_id=self.spec.session_id,
            working_dir=str(self.spec.workspace),
            call_id=str(call.get("id", "")),
        )

    def _start_prefetch(self, turn: int, last_results: str) -> asyncio.Task[int] | None:
        paths = [
            p for p in predict_reads(last_results, self._read | self._prefetched) if (self.spec.workspace / p).is_file()
        ]
        if not paths:
            return None
        self._prefetched.update(paths)

        async def fetch() -> int:
            for n, path in enumerate(paths):
                self.calls.append(CallLog(turn, True, "read_file", path))
                await self.tools.call(
                    "read_file",
                    {"path": path},
                    session_id=self.spec.session_id,
                    working_dir=str(self.spec.workspace),
                    call_id=f"prefetch-{turn}-{n}",
                )
            return len(paths)

        return asyncio.create_task(fetch())


@dataclass(frozen=True)
class WriterSpec:
    """A documentation agent: a Goose session with no extensions asking for docstrings and commit messages."""

    agent_id: str
    session_id: str
    model: str
    prompts: tuple[str, ...]
    api_key: str = "fleet-agent-key"


class Writer:
    """Sends each prompt as the next user message of one conversation (the seed's "simple tasks")."""

    def __init__(
        self,
        spec: WriterSpec,
        chat: ChatClient,
        *,
        epoch: float,
        on_turn: Callable[[AgentRun, Turn], None] | None = None,
    ) -> None:
        self.spec = spec
        self.chat = chat
        self.epoch = epoch
        self.on_turn = on_turn
        self.run_record = AgentRun(spec.agent_id, spec.session_id, "", kind="writer")

    async def run(self) -> AgentRun:
        spec, run = self.spec, self.run_record
        run.started_at = time.monotonic() - self.epoch
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
        headers = goose_headers(spec.session_id, spec.api_key, spec.agent_id)
        for index, prompt in enumerate(spec.prompts):
            messages.append({"role": "user", "content": prompt})
            turn = Turn(index=index, at=time.monotonic() - self.epoch, requested_model=spec.model)
            try:
                reply = await self.chat.complete(goose_body(spec.model, messages, ()), headers)
            except ChatError as exc:
                turn.error = str(exc)
                run.error = f"turn {index}: LLM call failed: {exc}"
                self._record(turn)
                break
            describe(turn, reply, messages)
            messages.append(reply.message())
            run.final_text = reply.content
            self._record(turn)
        else:
            run.finished = True
        run.ended_at = time.monotonic() - self.epoch
        return run

    def _record(self, turn: Turn) -> None:
        self.run_record.turns.append(turn)
        if self.on_turn is not None:
            self.on_turn(self.run_record, turn)


def describe(turn: Turn, reply: ChatReply, sent: list[dict[str, Any]]) -> None:
    """Fill a turn's LLM fields from the reply, its headers, and (as a fallback) the classifier."""
    turn.model = reply.model
    turn.ttft_s = reply.ttft_s
    turn.generation_s = reply.generation_s
    turn.llm_s = reply.done - reply.sent
    turn.retries = reply.retries
    sim = reply.sim_times()
    if sim is not None:
        turn.sim_ttft_s, turn.sim_generation_s, turn.sim_llm_s = sim
    turn.headers = reply.headers
    usage = reply.usage or {}
    turn.prompt_tokens = usage.get("prompt_tokens")
    turn.completion_tokens = usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details") or {}
    turn.cached_tokens = details.get("cached_tokens") if isinstance(details, dict) else None
    headers = reply.headers
    wait_ms = headers.get(QUEUE_MS_HEADER)
    if wait_ms:
        with contextlib.suppress(ValueError):
            turn.queue_wait_s = float(wait_ms) / 1000
    if headers.get(TIER_HEADER):
        turn.stage = headers.get(STAGE_HEADER) or None
        turn.tier = headers[TIER_HEADER]
        turn.stage_source = "coordinator"
        if turn.stage is None:
            found = classify_messages(sent)
            turn.stage = found.stage.value if found is not None else None
        return
    found = classify_messages(sent)
    if found is not None:
        turn.stage, turn.tier = found.stage.value, DEFAULT_STAGE_TIERS[found.stage].value
        turn.stage_source = "fleet"


def workspace_solved(workspace: Path) -> bool:
    """No planted bug left: no line of the package's Python files still carries the fix marker."""
    for path in workspace.rglob("*.py"):
        if ".git" in path.parts or "tests" in path.parts:
            continue
        try:
            if MARKER in path.read_text(encoding="utf-8"):
                return False
        except OSError:
            return False
    return True
