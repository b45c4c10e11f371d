"""The predicted next request: the assistant message rebuilt from SSE as the agent does, tool calls, the body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.core.nextcall import ToolRequest, assistant_from_sse, next_request, tool_requests
from sidecar.fleet.chat import ChatReply, absorb


def sse(*frames: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames) + b"data: [DONE]\n\n"


def delta(d: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "choices": [{"index": index, "delta": d, "finish_reason": finish}]}


def call_delta(i: int, id_: str | None = None, name: str | None = None, args: str | None = None) -> dict[str, Any]:
    function = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
    call: dict[str, Any] = {"index": i, "function": function}
    if id_ is not None:
        call.update(id=id_, type="function")
    return delta({"tool_calls": [call]})


TWO_CALLS = sse(
    delta({"role": "assistant", "content": ""}),
    delta({"content": "Reading "}),
    delta({"content": "both."}),
    call_delta(0, "call-a", "sidecar__read_file", '{"pa'),
    call_delta(0, args='th": "a.py"}'),
    call_delta(1, "call-b", "sidecar__", None),
    call_delta(1, name="run_tests", args="{}"),
    delta({}, "tool_calls"),
    {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}},
)
TEXT_ONLY = sse(delta({"role": "assistant", "content": ""}), delta({"content": "Done."}, "stop"))
NO_CONTENT_CALL = sse(call_delta(0, "c1", "sidecar__list_dir", '{"path": "."}'), delta({}, "tool_calls"))


@pytest.mark.parametrize(
    ("data", "message", "finish"),
    [
        (
            TWO_CALLS,
            {
                "role": "assistant",
                "content": "Reading both.",
                "tool_calls": [
                    {
                        "id": "call-a",
                        "type": "function",
                        "function": {"name": "sidecar__read_file", "arguments": '{"path": "a.py"}'},
                    },
                    {"id": "call-b", "type": "function", "function": {"name": "sidecar__run_tests", "arguments": "{}"}},
                ],
            },
            "tool_calls",
        ),
        (TEXT_ONLY, {"role": "assistant", "content": "Done."}, "stop"),
        (
            NO_CONTENT_CALL,
            {
                "role": "assistant",
                "content": "",  # the fleet (Goose's stand-in) keeps an empty string, never null
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "sidecar__list_dir", "arguments": '{"path": "."}'},
                    }
                ],
            },
            "tool_calls",
        ),
    ],
)
def test_assistant_message_rebuilt_from_the_stream(data: bytes, message: dict[str, Any], finish: str) -> None:
    reply = assistant_from_sse(data)
    assert reply is not None
    assert reply.message == message and reply.finish_reason == finish


@pytest.mark.parametrize("data", [TWO_CALLS, TEXT_ONLY, NO_CONTENT_CALL])
def test_rebuilt_exactly_as_the_fleet_client_rebuilds_it(data: bytes) -> None:
    reply, calls = ChatReply(), {}
    for line in data.decode().split("\n"):
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            absorb(reply, calls, json.loads(line[5:]), 0.0)
    reply.tool_calls = [calls[i] for i in sorted(calls)]
    ours = assistant_from_sse(data)
    assert ours is not None
    assert json.dumps(ours.message, sort_keys=True) == json.dumps(reply.message(), sort_keys=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        sse({"error": {"message": "boom", "code": 500}}),  # in-band error frame
        b"data: {not json\n\n",
        sse(delta({"content": "a"}), delta({"content": "b"}, index=1)),  # n > 1
        sse(["not", "an", "object"]),
        sse({"id": "x", "choices": []}),  # usage-only: no choice at all
    ],
)
def test_answers_that_cannot_be_rebuilt_with_certainty(data: bytes) -> None:
    assert assistant_from_sse(data) is None


def message_with(*calls: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls],
    }


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            message_with(("c1", "sidecar__read_file", '{"path": "a.py"}'), ("c2", "sidecar__run_tests", "")),
            [ToolRequest("c1", "read_file", {"path": "a.py"}), ToolRequest("c2", "run_tests", {})],
        ),
        (message_with(("c1", "developer__shell", '{"command": "ls"}')), None),  # another extension
        (message_with(("c1", "sidecar__read_file", '{"path": "a.py"}'), ("c2", "shell", "{}")), None),  # mixed
        (message_with(("c1", "sidecar__", "{}")), None),  # no tool name
        (message_with(("", "sidecar__read_file", "{}")), None),  # no id
        (message_with(("c1", "sidecar__read_file", '{"path": ')), None),  # arguments cut short
        (message_with(("c1", "sidecar__read_file", '["a.py"]')), None),  # not an object
        ({"role": "assistant", "content": "done"}, None),  # no call at all
    ],
)
def test_tool_requests(message: dict[str, Any], expected: list[ToolRequest] | None) -> None:
    assert tool_requests(message, "sidecar") == expected


def test_next_request_appends_the_answer_and_results_in_order_and_keeps_every_other_field() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "fix it"}],
        "tools": [{"type": "function", "function": {"name": "sidecar__read_file"}}],
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    message = message_with(("c1", "sidecar__read_file", '{"path": "a.py"}'), ("c2", "sidecar__run_tests", "{}"))
    calls = [ToolRequest("c1", "read_file", {"path": "a.py"}), ToolRequest("c2", "run_tests", {})]
    predicted = next_request(body, message, calls, ["A", "B"])
    assert predicted == {
        **body,
        "messages": [
            {"role": "user", "content": "fix it"},
            message,
            {"role": "tool", "tool_call_id": "c1", "content": "A"},
            {"role": "tool", "tool_call_id": "c2", "content": "B"},
        ],
    }
    assert body["messages"] == [{"role": "user", "content": "fix it"}]  # the original is not modified
    with pytest.raises(ValueError):
        next_request(body, message, calls, ["A"])
