"""Which calls start early and how an early run and the agent's real call are matched: strict, never coerced."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.core.earlyrun import EARLY_TOOLS, EarlyStart, NotStarted, call_key, decide_start, normalize
from sidecar.core.paths import Refused


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("read_file", {"path": "a.py"}, {"path": "a.py", "start_line": None, "end_line": None}),
        ("read_file", {"path": "a.py", "start_line": 3}, {"path": "a.py", "start_line": 3, "end_line": None}),
        ("list_dir", {}, {"path": ".", "depth": 2}),
        ("list_dir", {"path": "pkg", "depth": 10}, {"path": "pkg", "depth": 10}),
        ("search", {"pattern": "def "}, {"pattern": "def ", "path": ".", "glob": None, "max_results": None}),
        ("run_tests", {}, {"target": None}),
        ("run_tests", {"target": "tests/test_a.py"}, {"target": "tests/test_a.py"}),
    ],
)
def test_defaults_are_filled_as_the_mcp_server_fills_them(
    name: str, arguments: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert normalize(name, arguments) == expected


@pytest.mark.parametrize(
    ("name", "arguments", "why"),
    [
        ("edit_file", {"path": "a", "before": "x", "after": "y"}, "not safe to start early"),
        ("write_file", {"path": "a", "content": ""}, "not safe to start early"),
        ("run_command", {"command": "git commit -m x"}, "not safe to start early"),
        ("git_status", {}, "not safe to start early"),
        ("git_diff", {}, "not safe to start early"),
        ("read_file", {}, "needs path"),
        ("read_file", {"path": 3}, "must be a string"),
        ("read_file", {"path": None}, "may not be null"),
        ("read_file", {"path": "a", "start_line": 0}, "at least 1"),
        ("read_file", {"path": "a", "start_line": 2.0}, "must be an integer"),
        ("read_file", {"path": "a", "start_line": "2"}, "must be an integer"),
        ("list_dir", {"depth": True}, "must be an integer"),
        ("list_dir", {"depth": 11}, "at most 10"),
        ("search", {"pattern": "x", "max_results": 1001}, "at most 1000"),
        ("read_file", {"path": "a", "extra": 1}, "unknown argument extra"),
    ],
)
def test_anything_else_is_refused_with_a_reason(name: str, arguments: dict[str, Any], why: str) -> None:
    refused = normalize(name, arguments)
    assert isinstance(refused, Refused) and why in refused.reason


def test_mutating_tools_are_never_early_safe() -> None:
    assert set(EARLY_TOOLS) == {"read_file", "list_dir", "search", "run_tests"}


def test_the_key_is_the_same_for_the_same_call_whatever_the_order_of_its_arguments() -> None:
    a = normalize("search", {"pattern": "x", "path": "pkg"})
    b = normalize("search", {"path": "pkg", "pattern": "x", "glob": None})
    assert isinstance(a, dict) and isinstance(b, dict)
    assert call_key("search", a) == call_key("search", b)
    assert call_key("search", a) != call_key("list_dir", a)
    assert call_key("read_file", {"path": "é"}) == '["read_file",{"path":"é"}]'


CALC = {"name": "read_file", "arguments": {"path": "a.py"}}
CALC_KEY = call_key("read_file", {"path": "a.py", "start_line": None, "end_line": None})


@pytest.mark.parametrize(
    ("call", "started", "running", "cap", "expected"),
    [
        (CALC, set(), 0, 4, EarlyStart(CALC_KEY, "read_file", {"path": "a.py", "start_line": None, "end_line": None})),
        (
            {"name": "list_dir"},
            set(),
            0,
            4,
            EarlyStart(call_key("list_dir", {"path": ".", "depth": 2}), "list_dir", {"path": ".", "depth": 2}),
        ),
        (CALC, {CALC_KEY}, 0, 4, NotStarted("already started")),
        (CALC, set(), 4, 4, NotStarted("4 early runs are in progress", busy=True)),
        (CALC, set(), 0, 0, NotStarted("0 early runs are in progress", busy=True)),  # cap 0: nothing starts
        ("read_file", set(), 0, 4, NotStarted("not a {name, arguments} object")),
        ({"name": 3}, set(), 0, 4, NotStarted("not a {name, arguments} object")),
        ({"name": "read_file", "arguments": [1]}, set(), 0, 4, NotStarted("arguments must be an object")),
        (
            {"name": "edit_file", "arguments": {}},
            set(),
            0,
            4,
            NotStarted("edit_file is not safe to start early (only read_file, list_dir, search, run_tests)"),
        ),
    ],
)
def test_decide_start(call: Any, started: set[str], running: int, cap: int, expected: object) -> None:
    assert decide_start(call, started=started, running=running, max_concurrent=cap) == expected


def test_an_unsafe_call_is_refused_before_the_cap_is_even_looked_at() -> None:
    verdict = decide_start({"name": "write_file", "arguments": {}}, started=set(), running=9, max_concurrent=1)
    assert isinstance(verdict, NotStarted) and not verdict.busy
