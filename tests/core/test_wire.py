"""The tool-event contract as a table: what `parse_tool_event` accepts, what it refuses (every problem named),
and that what `ToolEvent.to_wire` writes it reads back unchanged."""

from __future__ import annotations

import json

import pytest

from sidecar.core.wire import CACHEABLE_TOOLS, EventError, ToolEvent, ToolName, parse_tool_event

MINIMAL = {"seq": 1, "tool": "read_file", "ok": True}


@pytest.mark.parametrize(
    "event",
    [
        ToolEvent(seq=1, tool="read_file", ok=True),
        ToolEvent(3, "run_command", False, "s-1", 2, ("a.py",), "git commit -m x", 12.5, 1.7e9, False, "http://h/peek"),
        ToolEvent(seq=0, tool="run_tests", ok=True, exit_code=0, cached=True, speculation={"test_runs_started": 2}),
    ],
)
def test_what_the_sidecar_writes_the_coordinator_reads(event: ToolEvent) -> None:
    wire = event.to_wire()
    assert parse_tool_event(json.dumps(wire)) == event
    assert parse_tool_event(json.dumps(wire)).to_wire() == wire


def test_optional_fields_are_left_out_when_none() -> None:
    wire = ToolEvent(seq=1, tool="list_dir", ok=True).to_wire()
    assert set(wire) == {"session_id", "seq", "tool", "ok", "paths", "duration_ms", "ts", "cached"}


def test_defaults_unknown_fields_and_the_old_cache_hit_name() -> None:
    parsed = parse_tool_event(json.dumps({**MINIMAL, "cache_hit": True, "future_field": [1]}))
    assert parsed == ToolEvent(seq=1, tool="read_file", ok=True, cached=True)
    assert parsed.paths == () and parsed.duration_ms == 0.0 and parsed.session_id is None


def test_paths_are_capped_on_the_way_out() -> None:
    assert len(ToolEvent(1, "search", True, paths=tuple(f"f{i}" for i in range(50))).to_wire()["paths"]) == 20


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        (b"not json", ["body: not valid JSON"]),
        (b"[1]", ["body: must be a JSON object"]),
        (b"{}", ["seq: field required", "tool: field required", "ok: field required"]),
        (b'{"seq": -1, "tool": "", "ok": "yes"}', ["seq: must be >= 0", "tool: must have 1 to 128", "ok: must be"]),
        (b'{"seq": true, "tool": "t", "ok": true}', ["seq: must be an integer"]),
        (b'{"seq": 1, "tool": "t", "ok": true, "paths": "a"}', ["paths: must be a list of strings"]),
        (b'{"seq": 1, "tool": "t", "ok": true, "duration_ms": -1}', ["duration_ms: must be >= 0"]),
        (b'{"seq": 1, "tool": "t", "ok": true, "speculation": "x"}', ["speculation: must be an object"]),
        (b'{"seq": 1, "tool": "t", "ok": true, "peek_url": 5}', ["peek_url: must be a string"]),
        (b'{"seq": 1, "tool": "t", "ok": true, "command": 5}', ["command: must be a string"]),
        (b'{"seq": 1, "tool": "t", "ok": true, "ts": "now"}', ["ts: must be a finite number"]),
        (b'{"seq": 1, "tool": "t", "ok": true, "exit_code": 1.5}', ["exit_code: must be an integer"]),
        (b"[" * 100_000, ["body: not valid JSON"]),  # too deep to parse
        (b'{"seq": 1' + b"0" * 5000 + b', "tool": "t", "ok": true}', ["body: not valid JSON"]),  # a 5000-digit int
    ],
)
def test_a_bad_event_names_every_problem(body: bytes, problems: list[str]) -> None:
    with pytest.raises(EventError) as caught:
        parse_tool_event(body)
    assert len(caught.value.problems) == len(problems)
    for found, expected in zip(caught.value.problems, problems, strict=True):
        assert found.startswith(expected)


@pytest.mark.parametrize(
    ("field", "value"),
    [("session_id", "s" * 257), ("tool", "t" * 129), ("paths", ["p"] * 257), ("command", "c" * 4097)],
)
def test_limits(field: str, value: object) -> None:
    with pytest.raises(EventError, match=field):
        parse_tool_event(json.dumps({**MINIMAL, field: value}))
    parse_tool_event(json.dumps({**MINIMAL, field: value[:-1]}))  # type: ignore[index]  # one less is fine


def test_the_cacheable_tools_are_sidecar_tools() -> None:
    assert set(CACHEABLE_TOOLS) <= set(ToolName)
