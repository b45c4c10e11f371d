"""Joining the sidecar's events to the agent's calls (pure), and the sidecar command line the fleet uses."""

from __future__ import annotations

from pathlib import Path

from sidecar.fleet.agent import CallLog
from sidecar.fleet.records import AgentRun, Turn
from sidecar.fleet.runner import FleetOptions, join_events, sidecar_args


def test_cache_hits_and_prefetch_hits_land_on_their_turns() -> None:
    run = AgentRun("a", "s", "/w", turns=[Turn(0, 0.0, "m"), Turn(1, 1.0, "m"), Turn(2, 2.0, "m")])
    calls = [
        CallLog(0, False, "run_tests", None),
        CallLog(1, True, "read_file", "pkg/x.py"),  # prefetched while turn 1's LLM call ran
        CallLog(1, False, "read_file", "./pkg/x.py"),
        CallLog(2, False, "read_file", "pkg/y.py"),
    ]
    events = [
        {"session_id": "s", "seq": 1, "tool": "run_tests", "cached": False},
        {"session_id": "s", "seq": 2, "tool": "read_file", "cached": False},
        {"session_id": "s", "seq": 3, "tool": "read_file", "cached": True},
        {"session_id": "s", "seq": 4, "tool": "read_file", "cached": True},
        {"session_id": "other", "seq": 5, "tool": "read_file", "cached": True},
    ]
    join_events(run, calls, events)
    assert [t.cache_hits for t in run.turns] == [0, 1, 1]
    assert [t.prefetch_hits for t in run.turns] == [0, 1, 0]


def test_missing_events_count_as_no_hit() -> None:
    run = AgentRun("a", "s", "/w", turns=[Turn(0, 0.0, "m")])
    join_events(run, [CallLog(0, False, "read_file", "a.py")], [])
    assert run.turns[0].cache_hits == 0


def test_sidecar_command_line() -> None:
    args = sidecar_args(FleetOptions(tool_cache=False), Path("/w"), "http://tap", "agent-1")
    assert args[:3] == ["mcp", "--workspace", "/w"]
    assert args[args.index("--coordinator") + 1] == "http://tap"
    assert args[args.index("--agent-id") + 1] == "agent-1"
    assert args[args.index("--allow-command") + 1] == "git commit *"
    assert args[-2:] == ["--cache-max-bytes", "0"]
    assert "--cache-max-bytes" not in sidecar_args(FleetOptions(), Path("/w"), "http://tap", "agent-1")
