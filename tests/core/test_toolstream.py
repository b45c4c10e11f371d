"""Tool calls detected as they complete in a streamed answer: split anywhere, merged frames, broken streams."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.core.nextcall import ToolRequest, assistant_from_sse
from sidecar.core.toolstream import StreamedCall, ToolCallStream, early_request, early_url
from tests.core.test_nextcall import TWO_CALLS, call_delta, delta, sse


def frame(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def feed_all(data: bytes, size: int) -> list[tuple[int, list[StreamedCall]]]:
    """Feed `data` in chunks of `size` bytes; per chunk that completed calls: (bytes fed so far, calls)."""
    stream = ToolCallStream()
    out = []
    for at in range(0, len(data), size):
        calls = stream.feed(data[at : at + size])
        if calls:
            out.append((at + size, calls))
    return out


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
def test_each_call_is_returned_once_when_the_next_starts_or_the_answer_finishes(size: int) -> None:
    found = feed_all(TWO_CALLS, size)
    calls = [c for _, chunk in found for c in chunk]
    assert calls == [
        StreamedCall(0, "call-a", "sidecar__read_file", '{"path": "a.py"}'),
        StreamedCall(1, "call-b", "sidecar__run_tests", "{}"),
    ]
    # The same calls the agent rebuilds from the whole answer (`core.nextcall`, the fleet's `absorb`).
    whole = assistant_from_sse(TWO_CALLS)
    assert whole is not None
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        (t["id"], t["function"]["name"], t["function"]["arguments"]) for t in whole.message["tool_calls"]
    ]
    if size < 100:  # the first call is known before the answer's end: that is the head start
        first_at = found[0][0]
        assert calls[0].index == 0 and first_at < TWO_CALLS.index(b'"finish_reason": "tool_calls"')


def test_a_merged_frame_completes_a_call_and_starts_the_next() -> None:
    merged = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "function": {"arguments": '"x"}'}},
                        {"index": 1, "id": "c2", "type": "function", "function": {"name": "sidecar__list_dir"}},
                    ]
                },
                "finish_reason": None,
            }
        ]
    }
    stream = ToolCallStream()
    assert stream.feed(frame(call_delta(0, "c1", "sidecar__read_file", '{"path": '))) == []
    assert stream.feed(frame(merged)) == [StreamedCall(0, "c1", "sidecar__read_file", '{"path": "x"}')]
    assert stream.feed(frame(delta({}, "tool_calls"))) == [StreamedCall(1, "c2", "sidecar__list_dir", "")]
    assert stream.finished and stream.feed(frame(call_delta(2, "c3", "sidecar__x", "{}"))) == []


def test_crlf_lines_and_comments_are_read_as_sse() -> None:
    data = TWO_CALLS.replace(b"\n", b"\r\n")
    assert len([c for _, cs in feed_all(b": keep-alive\r\n\r\n" + data, 5) for c in cs]) == 2


@pytest.mark.parametrize(
    "bad",
    [
        b"data: {not json\n\n",
        frame({"error": {"message": "boom", "code": 500}}),
        frame({"choices": [{"index": 1, "delta": {"content": "x"}}]}),  # n > 1
        frame({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "0"}]}}]}),
        frame({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": True}]}}]}),
        frame(call_delta(0, args="more")),  # a fragment for a call already returned
    ],
)
def test_a_stream_it_cannot_follow_yields_nothing_more(bad: bytes) -> None:
    stream = ToolCallStream()
    first = stream.feed(frame(call_delta(0, "c1", "sidecar__read_file", "{}")))
    assert first == []
    assert len(stream.feed(frame(call_delta(1, "c2", "sidecar__search", "{}")))) == 1
    assert stream.feed(bad) == [] and stream.broken
    assert stream.feed(frame(delta({}, "tool_calls"))) == []  # call 1 is never returned


def test_other_finish_reasons_complete_nothing_and_calls_without_id_or_name_are_skipped() -> None:
    stream = ToolCallStream()
    stream.feed(frame(call_delta(0, "c1", "sidecar__read_file", "{}")))
    assert stream.feed(frame(delta({}, "length"))) == [] and stream.finished
    nameless = ToolCallStream()
    nameless.feed(frame(call_delta(0, None, None, "{}")))
    assert nameless.feed(frame(call_delta(1, "c2", "sidecar__list_dir", "{}"))) == []
    assert nameless.feed(frame(delta({}, "tool_calls"))) == [StreamedCall(1, "c2", "sidecar__list_dir", "{}")]


def test_a_line_longer_than_the_limit_breaks_the_stream() -> None:
    stream = ToolCallStream(max_line_bytes=64)
    assert stream.feed(b"data: " + b"x" * 100) == [] and stream.broken


def test_content_only_answers_have_no_calls() -> None:
    data = sse(delta({"content": "hello"}), delta({}, "stop"))
    assert feed_all(data, 3) == []


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (StreamedCall(0, "c", "sidecar__read_file", '{"path": "a"}'), ToolRequest("c", "read_file", {"path": "a"})),
        (StreamedCall(0, "c", "sidecar__git_status", ""), ToolRequest("c", "git_status", {})),
        (StreamedCall(0, "c", "developer__shell", "{}"), None),
        (StreamedCall(0, "c", "sidecar__", "{}"), None),
        (StreamedCall(0, "c", "sidecar__read_file", '{"path": '), None),
        (StreamedCall(0, "c", "sidecar__read_file", "[1]"), None),
    ],
)
def test_early_request_keeps_only_the_sidecars_calls_with_object_arguments(
    call: StreamedCall, expected: ToolRequest | None
) -> None:
    assert early_request(call, "sidecar") == expected


@pytest.mark.parametrize(
    ("peek", "expected"),
    [
        ("http://127.0.0.1:5/peek?key=abc", "http://127.0.0.1:5/early?key=abc"),
        ("https://h/sc/peek?key=k", "https://h/sc/early?key=k"),
        ("http://h/other?key=k", None),
    ],
)
def test_early_url_sits_beside_the_peek_url(peek: str, expected: str | None) -> None:
    assert early_url(peek) == expected


CALLS = st.lists(
    st.tuples(
        st.sampled_from(["sidecar__read_file", "sidecar__search", "developer__shell"]),
        st.dictionaries(st.sampled_from(["path", "pattern", "n"]), st.text(max_size=12) | st.integers(), max_size=3),
    ),
    min_size=1,
    max_size=5,
)


def streamed(calls: list[tuple[str, dict[str, Any]]], piece: int) -> bytes:
    """An answer whose calls' arguments stream in `piece`-character fragments (vLLM's order)."""
    frames = [delta({"content": "Working."})]
    for i, (name, args) in enumerate(calls):
        text = json.dumps(args)
        frames.append(call_delta(i, f"call-{i}", name, ""))
        frames += [call_delta(i, args=text[at : at + piece]) for at in range(0, len(text), piece)]
    frames.append(delta({}, "tool_calls"))
    return sse(*frames)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CALLS, st.integers(1, 9), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_of_any_answer_yields_exactly_the_calls_the_agent_rebuilds(
    calls: list[tuple[str, dict[str, Any]]], piece: int, cuts: list[int]
) -> None:
    data = streamed(calls, piece)
    stream = ToolCallStream()
    found: list[StreamedCall] = []
    at = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        found += stream.feed(data[at:cut])
        at = cut
    whole = assistant_from_sse(data)
    assert whole is not None
    assert [(c.call_id, c.name, c.arguments) for c in found] == [
        (t["id"], t["function"]["name"], t["function"]["arguments"]) for t in whole.message["tool_calls"]
    ]
    assert [c.index for c in found] == list(range(len(calls)))
