"""Tokenizer approximation, chat template prefix stability, exact-length prose, generations and their deltas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.sim.answer import Answer, ToolCall, deltas, generate
from sidecar.sim.text import Dice, prose
from sidecar.sim.tokens import IM_END, count, encode, pieces, render_chat

CODE = 'def calculate_total(items):\n    """Sum the prices."""\n    return sum(x.price for x in items)  # 12345\n'


@pytest.mark.parametrize("text", ["", "hello world", CODE, "  indented\n\n\ttabs  ", "naïve café ∑ 🙂", "a" * 50])
def test_pieces_rebuild_the_text(text: str) -> None:
    assert "".join(pieces(text)) == text
    assert count(text) == len(pieces(text))


def test_chars_per_token_is_close_to_qwens_bpe() -> None:
    text = CODE * 20 + "The agent reads the failing test, then edits the source file and runs the suite again. " * 20
    assert 3.0 <= len(text) / count(text) <= 4.5


def test_ids_are_stable_across_calls() -> None:
    assert encode("def f(): pass") == encode("def f(): pass")
    assert encode("def f(): pass") != encode("def g(): pass")


def test_a_conversation_renders_as_a_prefix_of_its_continuation() -> None:
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]
    turn1 = [{"role": "user", "content": "Fix it."}]
    call = {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}
    turn2 = [
        *turn1,
        {"role": "assistant", "content": "Reading.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "a.py (lines 1-1 of 1)\n     1\tx = 1"},
    ]
    first, second = render_chat(turn1, tools), render_chat(turn2, tools)
    assert second[: len(first)] == first
    # What the model generated for turn 1 (text then end-of-sequence) is exactly what turn 2 renders.
    generated = encode(Answer("explore", "Reading.", (ToolCall("c1", "read_file", '{"path": "a.py"}'),)).text)
    assert second[len(first) : len(first) + len(generated) + 1] == (*generated, IM_END)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 50, 333])
@pytest.mark.parametrize("intro", ["", "Let me read pkg/calc.py.", "x"])
def test_prose_has_exactly_n_tokens(n: int, intro: str) -> None:
    assert count(prose(n, Dice(b"seed"), intro)) == n


def answer_with_call() -> Answer:
    args = json.dumps({"path": "pkg/calc.py", "before": "    return a - b", "after": "    return a + b"})
    return Answer("code_edit", "Fixing the bug.", (ToolCall("chatcmpl-tool-1", "sidecar__edit_file", args),))


def test_a_full_generation_ends_with_eos_and_calls_tools() -> None:
    g = generate(answer_with_call(), 10_000, False, Dice(b"k"))
    assert g.ids[-1] == IM_END and g.pieces[-1] == "" and g.finish_reason == "stop"
    assert g.api_finish_reason == "tool_calls" and g.content == "Fixing the bug." and len(g.tool_calls) == 1


@pytest.mark.parametrize("max_tokens", [1, 5, 20])
def test_max_tokens_cuts_to_plain_content(max_tokens: int) -> None:
    g = generate(answer_with_call(), max_tokens, False, Dice(b"k"))
    assert len(g.ids) == max_tokens and g.finish_reason == g.api_finish_reason == "length"
    assert g.tool_calls == () and g.content == "".join(g.pieces)


@pytest.mark.parametrize("max_tokens", [3, 40, 500])
def test_ignore_eos_generates_exactly_max_tokens(max_tokens: int) -> None:
    g = generate(answer_with_call(), max_tokens, True, Dice(b"k"))
    assert len(g.ids) == len(g.pieces) == max_tokens and g.finish_reason == "length"
    assert IM_END not in g.ids


def test_deltas_stream_content_then_the_call_like_vllm() -> None:
    g = generate(answer_with_call(), 10_000, False, Dice(b"k"))
    per_token = deltas(g)
    assert len(per_token) == len(g.pieces)
    flat: list[dict[str, Any]] = [d for token in per_token for d in token]
    content = "".join(d["content"] for d in flat if "content" in d)
    calls = [d["tool_calls"][0] for d in flat if "tool_calls" in d]
    assert content == "Fixing the bug."
    first, rest = calls[0], calls[1:]
    assert first["index"] == 0 and first["id"] == "chatcmpl-tool-1" and first["type"] == "function"
    assert first["function"]["name"] == "sidecar__edit_file"
    assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in rest)
    arguments = "".join(d["function"].get("arguments", "") for d in calls)
    assert arguments == g.tool_calls[0].arguments
    assert per_token[-1] == []  # the end-of-sequence token carries only the finish reason
