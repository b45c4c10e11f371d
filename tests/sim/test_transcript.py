"""What the agent learns from tool results: paths from listings, hits, failures and tracebacks; lines from reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.sim.transcript import parse_transcript, tool_kind


def one_step(name: str, args: dict[str, Any], result: str) -> list[dict[str, Any]]:
    call = {"id": "c", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    return [
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": result},
    ]


TOOLS = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in ("sidecar__list_dir", "search")]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("sidecar__read_file", "read_file"), ("read_file", "read_file"), ("developer__shell", "shell"),
     ("a__b__tree", "tree"), ("sidecar__bogus", ""), ("shellx", "")],
)  # fmt: skip
def test_tool_names_match_by_suffix(name: str, kind: str) -> None:
    assert tool_kind(name) == kind


@pytest.mark.parametrize(
    ("name", "args", "result", "files"),
    [
        # The sidecar's list_dir: workspace-relative paths, directories end in '/'.
        ("list_dir", {"path": "."}, "./ (3 entries, depth 2; ...)\npkg/\npkg/calc.py\nREADME.md",
         ["pkg/calc.py", "README.md"]),
        # Tree style: names under indented directories.
        ("tree", {"path": "."}, "pkg/\n  calc.py\n  sub/\n    deep.py\ntests/\n  test_calc.py",
         ["pkg/calc.py", "pkg/sub/deep.py", "tests/test_calc.py"]),
        ("tree", {"path": "."}, "├── pkg/\n│   └── calc.py\n└── setup.cfg", ["pkg/calc.py", "setup.cfg"]),
        ("list_dir", {"path": "pkg"}, "calc.py\nutil.py", ["pkg/calc.py", "pkg/util.py"]),
        # Search hits, ripgrep's layout.
        ("search", {"pattern": "def"}, "pkg/calc.py:4:def add(a, b):\ntests/test_calc.py:3:def test_add():",
         ["pkg/calc.py", "tests/test_calc.py"]),
        ("shell", {"command": "ls -R"}, ".:\nREADME.md\npkg\n\n./pkg:\ncalc.py", ["README.md", "pkg/calc.py"]),
        ("git_diff", {}, "diff --git a/pkg/calc.py b/pkg/calc.py\n--- a/pkg/calc.py\n+++ b/pkg/calc.py",
         ["pkg/calc.py"]),
    ],
)  # fmt: skip
def test_paths_seen_in_results(name: str, args: dict[str, Any], result: str, files: list[str]) -> None:
    assert parse_transcript(one_step(name, args, result), TOOLS).files == files


@pytest.mark.parametrize(
    ("output", "failed", "tests", "sources"),
    [
        ("[exit code 1 after 1 s]\nFAILED tests/test_calc.py::test_add - assert -1 == 5\n1 failed",
         True, ["tests/test_calc.py"], []),
        ("tests/test_calc.py:5: in test_add\n    assert add(2, 3) == 5\npkg/calc.py:2: in add\n"
         "FAILED tests/test_calc.py::test_add\n1 failed, 3 passed", True, ["tests/test_calc.py"], ["pkg/calc.py"]),
        ('Traceback (most recent call last):\n  File "pkg/mod.py", line 3, in f\n  File "/usr/lib/python3.11/x.py", '
         "line 1\nValueError", True, [], ["pkg/mod.py"]),
        ("[exit code 0 after 1 s]\n5 passed in 0.1s", False, [], []),
        ("[exit code 5 after 1 s]\nno tests ran in 0.01s", False, [], []),
        ("4 passed in 0.1s", False, [], []),
    ],
)  # fmt: skip
def test_test_results(output: str, failed: bool, tests: list[str], sources: list[str]) -> None:
    t = parse_transcript(one_step("run_tests", {}, output), TOOLS)
    assert (t.last_test_failed, t.failing_tests, t.failing_sources) == (failed, tests, sources)


def test_reads_keep_lines_and_imports() -> None:
    read = "tests/test_calc.py (lines 1-3 of 3)\n     1\tfrom pkg.calc import add\n     2\timport os\n     3\t"
    t = parse_transcript(one_step("read_file", {"path": "tests/test_calc.py"}, read), TOOLS)
    assert t.lines["tests/test_calc.py"] == {1: "from pkg.calc import add", 2: "import os", 3: ""}
    assert t.imports["tests/test_calc.py"] == ["pkg/calc.py"]  # stdlib `os` is not a local module


@pytest.mark.parametrize(
    ("name", "result", "failed"),
    [
        ("edit_file", "No match found for the specified text.\n\nFile preview:", True),
        ("edit_file", "Found 2 matches. Please provide more context", True),
        ("edit_file", "Edited pkg/calc.py (1 lines -> 1 lines)", False),
        ("read_file", "errors.py (lines 1-2 of 2)\n     1\tx = 1", False),
        ("read_file", "Error: pkg/nope.py does not exist", True),
        ("run_command", "'git push' is not an allowed command. Allowed: 'git commit'", True),
        ("run_command", "$ git commit -am x\n[exit code 1 after 0.01 s]\nnothing to commit", True),
        ("run_tests", "$ pytest\n[exit code 1 after 0.2 s]\n1 failed", False),  # a failing run is a result
    ],
)
def test_tool_failures_are_recognised(name: str, result: str, failed: bool) -> None:
    t = parse_transcript(one_step(name, {"path": "x"}, result), TOOLS)
    assert t.steps[0].failed is failed
