"""The synthetic coding agent: tool choice from the conversation, edits that apply, sim-fix markers, termination."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar.sim.agent import Action, decide, pending_fixes
from sidecar.sim.answer import chat_answer, generate, request_key
from sidecar.sim.profiles import QWEN_32B_A100
from sidecar.sim.protocol import ServedModel, parse_chat
from sidecar.sim.text import Dice
from sidecar.sim.transcript import parse_transcript
from tests.sim.workspace import GOOSE_TOOLS, SIDECAR_TOOLS, Executor, make_project, tool_schemas

SIDECAR = tool_schemas(SIDECAR_TOOLS, "sidecar__")
GOOSE = tool_schemas(GOOSE_TOOLS, "developer__")
TASK = [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": "Fix the failing tests."}]

CALC_READ = (
    "pkg/calc.py (lines 1-6 of 6)\n"
    "     1\tdef add(a, b):\n"
    "     2\t    return a - b  # sim-fix: return a + b\n"
    "     3\t\n"
    "     4\t\n"
    "     5\tdef mul(a, b):\n"
    "     6\t    return a * b"
)
PYTEST_FAIL = (
    "$ python -m pytest -q\n[exit code 1 after 0.31 s, ran at 2025-01-01T00:00:00Z]\n"
    "F.\n=================================== FAILURES ===================================\n"
    "___________________________________ test_add ___________________________________\n\n"
    "    def test_add():\n>       assert add(2, 3) == 5\nE       assert -1 == 5\n\n"
    "tests/test_calc.py:5: AssertionError\n"
    "pkg/calc.py:2: in add\n"
    "=========================== short test summary info ============================\n"
    "FAILED tests/test_calc.py::test_add - assert -1 == 5\n1 failed, 1 passed in 0.02s\n"
)
PYTEST_PASS = "$ python -m pytest -q\n[exit code 0 after 0.30 s, ran at 2025-01-01T00:00:00Z]\n..\n2 passed in 0.01s\n"


def conversation(*steps: tuple[str, dict[str, Any], str]) -> list[dict[str, Any]]:
    """TASK followed by assistant tool calls (name, args) each with its tool result."""
    messages = list(TASK)
    for i, (name, args, result) in enumerate(steps):
        call = {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": result})
    return messages


def decide_for(messages: list[dict[str, Any]], tools: list[dict[str, Any]], key: str = "k") -> Action:
    return decide(parse_transcript(messages, tools), Dice(key.encode()), max_steps=40)


def test_first_step_explores_with_an_offered_tool() -> None:
    kinds = {decide_for(TASK, SIDECAR, key=str(i)).tool for i in range(40)}
    assert kinds == {"sidecar__list_dir", "sidecar__run_tests"}


def test_a_file_seen_in_a_listing_is_read_next() -> None:
    listing = "./ (4 entries, depth 3)\npkg/\npkg/__init__.py\npkg/calc.py\ntests/\ntests/test_calc.py"
    messages = conversation(("sidecar__list_dir", {"path": "."}, listing))
    reads = [decide_for(messages, SIDECAR, str(i)) for i in range(40)]
    paths = {a.arguments["path"] for a in reads if a.tool == "sidecar__read_file"}
    assert paths and paths <= {"pkg/calc.py", "tests/test_calc.py"}


def test_a_read_marker_becomes_an_edit_with_an_exact_before() -> None:
    messages = conversation(("sidecar__read_file", {"path": "pkg/calc.py"}, CALC_READ))
    edits = [a for i in range(20) for a in [decide_for(messages, SIDECAR, str(i))] if a.tool == "sidecar__edit_file"]
    assert edits, "a planted bug that was read should be fixed most of the time"
    assert edits[0].arguments == {
        "path": "pkg/calc.py",
        "before": "    return a - b  # sim-fix: return a + b",
        "after": "    return a + b",
    }


def test_goose_prefixed_developer_tools_are_recognised() -> None:
    messages = conversation(("developer__shell", {"command": "cat -n pkg/calc.py"}, CALC_READ.split("\n", 1)[1]))
    actions = [decide_for(messages, GOOSE, str(i)) for i in range(20)]
    edit = next(a for a in actions if a.tool == "developer__edit")
    assert edit.arguments["before"] == "    return a - b  # sim-fix: return a + b"
    assert {a.tool for a in actions} <= {"developer__edit", "developer__shell"}


def test_a_duplicated_line_gets_context_until_unique() -> None:
    lines = ["x = 1  # sim-fix: x = 2", "y = 1", "x = 1  # sim-fix: x = 2", "z = 3"]
    read = "m.py (lines 1-4 of 4)\n" + "\n".join(f"{n:>6}\t{text}" for n, text in enumerate(lines, 1))
    fixes = pending_fixes(parse_transcript(conversation(("read_file", {"path": "m.py"}, read)), SIDECAR))
    assert [(f.before, f.after) for f in fixes] == [
        ("x = 1  # sim-fix: x = 2\ny = 1", "x = 2\ny = 1"),
        ("x = 1  # sim-fix: x = 2\nz = 3", "x = 2\nz = 3"),
    ]


def test_a_fixed_marker_is_not_fixed_twice() -> None:
    edit = {"path": "pkg/calc.py", "before": "    return a - b  # sim-fix: return a + b", "after": "    return a + b"}
    messages = conversation(
        ("sidecar__read_file", {"path": "pkg/calc.py"}, CALC_READ),
        ("sidecar__edit_file", edit, "Edited pkg/calc.py (1 lines -> 1 lines)"),
    )
    assert pending_fixes(parse_transcript(messages, SIDECAR)) == []


def test_after_an_edit_the_seed_table_holds() -> None:
    edit = {"path": "pkg/calc.py", "before": "    return a - b  # sim-fix: return a + b", "after": "    return a + b"}
    messages = conversation(
        ("sidecar__read_file", {"path": "pkg/calc.py"}, CALC_READ),
        ("sidecar__edit_file", edit, "Edited pkg/calc.py (1 lines -> 1 lines)"),
    )
    actions = [decide_for(messages, SIDECAR, str(i)) for i in range(2000)]
    tests = sum(a.tool == "sidecar__run_tests" for a in actions) / len(actions)
    rereads = sum(a.tool == "sidecar__read_file" and a.arguments["path"] == "pkg/calc.py" for a in actions)
    # Seed: edit -> run tests 50%, read same file 20%, edit again 15% (nothing left to fix: tests instead).
    assert 0.60 <= tests <= 0.70 and 0.17 <= rereads / len(actions) <= 0.23


def test_after_a_failing_run_the_agent_reads_what_the_failure_names() -> None:
    messages = conversation(("sidecar__run_tests", {}, PYTEST_FAIL))
    actions = [decide_for(messages, SIDECAR, str(i)) for i in range(300)]
    read = [a.arguments["path"] for a in actions if a.tool == "sidecar__read_file"]
    assert set(read) == {"pkg/calc.py", "tests/test_calc.py"}
    source = read.count("pkg/calc.py") / len(actions)
    assert 0.45 <= source <= 0.75  # read source 35% + the edit-fix 25% that has nothing read to fix yet
    searches = [a.arguments["pattern"] for a in actions if a.tool == "sidecar__search"]
    assert set(searches) == {"def add"}


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        (SIDECAR, "sidecar__run_command"),
        (GOOSE, "developer__shell"),
    ],
)
def test_passing_tests_after_an_edit_lead_to_a_commit_then_a_final_text(
    tools: list[dict[str, Any]], expected: str
) -> None:
    edit_name = "sidecar__edit_file" if tools is SIDECAR else "developer__edit"
    edit = {"path": "pkg/calc.py", "before": "a", "after": "b"}
    test_name, test_args = (
        ("sidecar__run_tests", {}) if tools is SIDECAR else ("developer__shell", {"command": "pytest"})
    )
    messages = conversation((edit_name, edit, "Edited pkg/calc.py"), (test_name, test_args, PYTEST_PASS))
    commits = [a for i in range(50) for a in [decide_for(messages, tools, str(i))] if "commit" in str(a.arguments)]
    assert commits and all(a.tool == expected for a in commits)
    done = conversation(
        (edit_name, edit, "Edited pkg/calc.py"),
        (test_name, test_args, PYTEST_PASS),
        (commits[0].tool or "", commits[0].arguments, "$ git commit\n[exit code 0 after 0.01 s]\n"),
    )
    final = decide_for(done, tools)
    assert final.tool is None and "committed" in final.intro


def test_a_refused_commit_ends_the_episode() -> None:
    messages = conversation(
        ("sidecar__edit_file", {"path": "x.py", "before": "a", "after": "b"}, "Edited x.py"),
        ("sidecar__run_tests", {}, PYTEST_PASS),
        ("sidecar__run_command", {"command": "git commit -am x"}, "'git commit -am x' is not an allowed command."),
    )
    assert decide_for(messages, SIDECAR).tool is None


def test_the_step_budget_ends_the_episode() -> None:
    steps = [("sidecar__run_tests", {}, PYTEST_FAIL)] * 3
    assert decide(parse_transcript(conversation(*steps), SIDECAR), Dice(b"k"), max_steps=3).tool is None


def test_no_tools_means_text_of_the_stage_length() -> None:
    for text, stage in [("Write a commit message", "commit_msg"), ("Explain this module and its docs", "docs")]:
        messages = [{"role": "user", "content": text}]
        dice = Dice(request_key(0, messages))
        answer = chat_answer(messages, None, None, QWEN_32B_A100, dice)
        generation = generate(answer, 10_000, False, dice)
        mean = QWEN_32B_A100.output_tokens[stage]
        assert answer.stage == stage and not answer.tool_calls
        assert mean * 0.69 <= len(generation.ids) <= mean * 1.31


def test_identical_requests_get_identical_answers() -> None:
    served = ServedModel(("m",), QWEN_32B_A100, 32768, "priority", seed=1)
    body = {"model": "m", "messages": TASK, "tools": SIDECAR}
    first, again = parse_chat(body, served).generation, parse_chat(json.loads(json.dumps(body)), served).generation
    assert first == again
    other_seeds = {
        parse_chat(body, ServedModel(("m",), QWEN_32B_A100, 32768, "priority", seed=s)).generation.ids for s in range(8)
    }
    assert len(other_seeds) > 1


def run_episode(root: Path, tools: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A Goose-like loop against the synthetic agent (pure path), tools executed for real on `root`."""
    served = ServedModel(("m",), QWEN_32B_A100, 32768, "priority", seed)
    messages = list(TASK)
    execute = Executor(root)
    for _ in range(45):
        generation = parse_chat({"model": "m", "messages": messages, "tools": tools}, served).generation
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in generation.tool_calls
        ]
        messages.append(
            {"role": "assistant", "content": generation.content or None, **({"tool_calls": calls} if calls else {})}
        )
        if not calls:
            return messages
        for call in generation.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": execute(call.name, call.arguments)})
    raise AssertionError("the episode did not end")


@pytest.mark.parametrize(("tools", "seed"), [(SIDECAR, 3), (GOOSE, 4)], ids=["sidecar-tools", "goose-tools"])
def test_an_episode_fixes_the_planted_bugs_and_ends(tmp_path: Path, tools: list[dict[str, Any]], seed: int) -> None:
    root = make_project(tmp_path / "project")
    messages = run_episode(root, tools, seed)
    assert "tool_calls" not in messages[-1] and messages[-1]["content"]
    source = (root / "pkg" / "calc.py").read_text()
    ast.parse(source)
    assert "sim-fix" not in source
    rerun = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, capture_output=True
    )
    assert rerun.returncode == 0
    errors = [m["content"] for m in messages if m["role"] == "tool" and m["content"].startswith("Error")]
    assert errors == []


@pytest.mark.parametrize(
    ("tool_choice", "tools", "expected"),
    [
        ("none", SIDECAR, None),
        ("required", SIDECAR, "sidecar__run_tests"),  # the agent would stop; required forces a call
        ({"type": "function", "function": {"name": "sidecar__git_status"}}, SIDECAR, "sidecar__git_status"),
        ("required", tool_schemas({"custom_tool": []}, ""), "custom_tool"),
        ("auto", tool_schemas({"custom_tool": []}, ""), None),  # no tool it knows how to use: text
    ],
)
def test_tool_choice_is_obeyed(tool_choice: Any, tools: list[dict[str, Any]], expected: str | None) -> None:
    messages = conversation(("sidecar__run_tests", {}, PYTEST_PASS))  # tests pass, nothing edited: done
    answer = chat_answer(messages, tools, tool_choice, QWEN_32B_A100, Dice(b"k"))
    assert (answer.tool_calls[0].name if answer.tool_calls else None) == expected
