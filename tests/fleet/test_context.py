"""Context compression and read prediction (pure)."""

from __future__ import annotations

import pytest

from sidecar.fleet.context import compress_messages, predict_reads, summarize


def conversation(results: list[str]) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]
    for n, text in enumerate(results):
        call = {"id": f"c{n}", "type": "function", "function": {"name": "sidecar__read_file", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{n}", "content": text})
    return messages


LONG = "pkg/a.py (lines 1-4 of 4)\n     1\timport os\n     2\t\n     3\tdef f():\n     4\t    return 1"


def test_compress_keeps_the_last_results_and_cuts_older_ones() -> None:
    messages = conversation([LONG, LONG, LONG])
    sent = compress_messages(messages, keep_recent=2)
    tool_texts = [m["content"] for m in sent if m["role"] == "tool"]
    assert tool_texts[1:] == [LONG, LONG]
    assert tool_texts[0].startswith("pkg/a.py (lines 1-4 of 4)\n     1\timport os\n[compressed: 3 more lines")
    assert messages[3]["content"] == LONG  # the agent's own history is untouched
    assert [m["role"] for m in sent] == [m["role"] for m in messages]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one line", "one line"),
        ("a\nb\nc", "a\nb\nc"),  # nothing worth cutting
        ("a\nb\nc\nd", "a\nb\n[compressed: 2 more lines omitted to save context]"),
    ],
)
def test_summarize(text: str, expected: str) -> None:
    assert summarize(text) == expected


def test_keep_everything_when_there_are_few_results() -> None:
    messages = conversation([LONG])
    assert compress_messages(messages, keep_recent=2) == messages


@pytest.mark.parametrize(
    ("result", "already", "expected"),
    [
        ("FAILED tests/test_stats.py::test_mean - assert 2 == 2.5", set(), ["tests/test_stats.py"]),
        (
            "pkg/stats.py:12: in mean\ntests/test_stats.py:9: AssertionError\npkg/stats.py:14: x",
            set(),
            ["pkg/stats.py", "tests/test_stats.py"],
        ),
        ("./pkg/a.py\n./pkg/b.py", {"pkg/a.py"}, ["pkg/b.py"]),
        ("a.py b.py c.py d.py", set(), ["a.py", "b.py", "c.py"]),  # at most three
        ("README.md and setup.cfg", set(), []),
        ("nothing here", set(), []),
    ],
)
def test_predict_reads(result: str, already: set[str], expected: list[str]) -> None:
    assert predict_reads(result, already) == expected
