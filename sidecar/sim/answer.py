"""From a request to the exact tokens the simulated model generates, and how they stream.

Contract:
- `chat_answer` is deterministic in (request, seed): the synthetic agent's action (`agent.py`) when tools are
  offered, prose otherwise, with the length of its stage from the profile (+- `output_jitter`); with the
  profile's `parallel_tool_calls` a share of answers carries several calls (`agent.parallel_calls`), streamed
  one after the other as vLLM streams them.
- `generate` applies vLLM's `max_tokens` and `ignore_eos`: a full answer ends with the end-of-sequence token
  (finish `stop`, or `tool_calls` when it calls tools); one cut by `max_tokens` is plain content (finish
  `length`), as vLLM's hermes parser returns an unterminated tool call as text; `ignore_eos` generates exactly
  `max_tokens` tokens of text.
- `deltas` maps each generated token to what streams for it: content text, or vLLM's tool-call deltas (the first
  for a call carries `index, id, type, function.name` once the name is complete, later ones `function.arguments`
  fragments). Tokens that complete nothing stream nothing, as with vLLM's parser.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.sim.agent import Action, decide, parallel_calls, text_stage
from sidecar.sim.profiles import Profile
from sidecar.sim.text import Dice, prose
from sidecar.sim.tokens import (
    IM_END,
    assistant_text,
    content_text,
    encode,
    pieces,
    tool_call_header,
    tool_call_text,
)
from sidecar.sim.transcript import parse_transcript


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI carries it


@dataclass(frozen=True, slots=True)
class Answer:
    stage: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def text(self) -> str:
        return assistant_text(self.content, ((c.name, c.arguments) for c in self.tool_calls))


@dataclass(frozen=True, slots=True)
class Generation:
    """The generated tokens: `pieces[i]` is token i's text ("" for the end-of-sequence token)."""

    answer: Answer
    pieces: tuple[str, ...]
    ids: tuple[int, ...]
    finish_reason: str  # what the engine reports: "stop" | "length"
    parsed: bool  # False when cut short: everything is content

    @property
    def api_finish_reason(self) -> str:
        return "tool_calls" if self.parsed and self.answer.tool_calls else self.finish_reason

    @property
    def content(self) -> str:
        return self.answer.content if self.parsed else "".join(self.pieces)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.answer.tool_calls if self.parsed else ()


def request_key(seed: int, *parts: Any) -> bytes:
    """A digest of what determines the answer (like temperature 0: same request, same answer)."""
    canonical = json.dumps([seed, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=32).digest()


def stage_length(profile: Profile, stage: str, dice: Dice) -> int:
    mean = profile.output_tokens.get(stage, 100)
    spread = profile.output_jitter * (2 * dice.uniform("length") - 1)
    return max(1, round(mean * (1 + spread)))


def chat_answer(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None,
    tool_choice: Any,
    profile: Profile,
    dice: Dice,
    max_steps: int = 40,
) -> Answer:
    """What the synthetic model answers to this conversation.

    `tool_choice` as OpenAI defines it: "none" answers in text, "required" always calls a tool, a named
    function is always the one called (with the arguments the agent would use, else none).
    """
    if tools and tool_choice != "none":
        transcript = parse_transcript(messages, tools)
        action = decide(transcript, dice, max_steps) if transcript.tools else None
        action = _obey(action, tool_choice, tools)
        if action is not None:
            if action.tool is not None and profile.parallel_tool_calls > 0 and transcript.tools:
                return _render(
                    action, profile, dice, parallel_calls(transcript, action, dice, profile.parallel_tool_calls)
                )
            return _render(action, profile, dice)
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    stage = text_stage(content_text(last_user.get("content")) if last_user else "")
    return Answer(stage, prose(stage_length(profile, stage, dice) - 1, dice, _TEXT_INTRO[stage]))


def completion_answer(profile: Profile, dice: Dice) -> Answer:
    return Answer("explore", prose(stage_length(profile, "explore", dice) - 1, dice))


_TEXT_INTRO = {
    "explore": "Here is what the code does.",
    "plan": "Here is the plan.",
    "code_edit": "Here is the fix.",
    "test_analyze": "The test fails because",
    "docs": "## Overview\n\n",
    "commit_msg": "Fix the failing case\n\n",
}


def _obey(action: Action | None, tool_choice: Any, tools: Sequence[Any]) -> Action | None:
    named = None
    if isinstance(tool_choice, Mapping) and isinstance(tool_choice.get("function"), Mapping):
        named = tool_choice["function"].get("name")
    if isinstance(named, str) and (action is None or action.tool != named):
        return Action(action.stage if action else "explore", f"Calling {named}.", named, {})
    if tool_choice == "required" and (action is None or action.tool is None):
        names = [
            t["function"]["name"] for t in tools if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
        ]
        preferred = [n for n in names if n.rsplit("__", 1)[-1] == "run_tests"] or names[:1]
        if preferred:
            return Action("test_analyze", "Let me check the current state.", preferred[0], {})
    return action


def _render(action: Action, profile: Profile, dice: Dice, actions: tuple[Action, ...] = ()) -> Answer:
    """The answer for `action` (`actions`, when given, are all its calls, `action` first)."""
    total = stage_length(profile, action.stage, dice)
    if action.tool is None:
        return Answer(action.stage, prose(max(1, total - 1), dice, action.intro))
    calls = tuple(
        ToolCall(
            f"chatcmpl-tool-{dice.hex('tool-call' if i == 0 else f'tool-call-{i}')}", a.tool, json.dumps(a.arguments)
        )
        for i, a in enumerate(actions or (action,))
        if a.tool is not None
    )
    room = total - 1 - sum(len(encode("\n" + tool_call_text(c.name, c.arguments))) for c in calls)
    content = prose(max(room, len(pieces(action.intro))), dice, action.intro)
    return Answer(action.stage, content, calls)


def generate(answer: Answer, max_tokens: int, ignore_eos: bool, dice: Dice) -> Generation:
    """The tokens generated for `answer` under vLLM's `max_tokens` / `ignore_eos` rules."""
    text_pieces = tuple(pieces(answer.text))
    if ignore_eos:
        body = text_pieces[:max_tokens]
        if len(body) < max_tokens:
            body += tuple(pieces(prose(max_tokens - len(body), dice, " ")))[: max_tokens - len(body)]
            while len(body) < max_tokens:
                body += (" the",)
        return Generation(answer, body, _ids(body), "length", parsed=False)
    if len(text_pieces) + 1 > max_tokens:
        body = text_pieces[:max_tokens]
        return Generation(answer, body, _ids(body), "length", parsed=False)
    return Generation(answer, (*text_pieces, ""), (*_ids(text_pieces), IM_END), "stop", parsed=True)


def _ids(body: Sequence[str]) -> tuple[int, ...]:
    return encode("".join(body)) if body else ()


def deltas(generation: Generation) -> list[list[dict[str, Any]]]:
    """Per generated token, the deltas to stream for it (possibly none)."""
    out: list[list[dict[str, Any]]] = [[] for _ in generation.pieces]
    if not generation.parsed:
        for i, piece in enumerate(generation.pieces):
            if piece:
                out[i].append({"content": piece})
        return out
    answer = generation.answer
    regions: list[tuple[int, int, int, ToolCall]] = []  # (name_end, args_start, args_end, call)
    offset = len(answer.content)
    for call in answer.tool_calls:
        offset += 1 if offset else 0  # the line break before each call
        start = offset + len(tool_call_header(call.name))
        regions.append((start, start, start + len(call.arguments), call))
        offset += len(tool_call_text(call.name, call.arguments))
    position = 0
    for i, piece in enumerate(generation.pieces):
        a, b = position, position + len(piece)
        position = b
        if a < len(answer.content):
            out[i].append({"content": answer.content[a : min(b, len(answer.content))]})
        for index, (name_end, args_start, args_end, call) in enumerate(regions):
            function: dict[str, Any] = {}
            first = a < name_end <= b
            if first:
                function["name"] = call.name
            lo, hi = max(a, args_start), min(b, args_end)
            if lo < hi:
                function["arguments"] = call.arguments[lo - args_start : hi - args_start]
            if not function:
                continue
            delta: dict[str, Any] = {"index": index}
            if first:
                delta.update({"id": call.id, "type": "function"})
            delta["function"] = function
            out[i].append({"tool_calls": [delta]})
    return out
