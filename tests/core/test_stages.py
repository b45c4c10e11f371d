"""Stages, tiers and priority resolution: tables over tool events, conversations and explicit values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.stages import (
    DEFAULT_STAGE_TIERS,
    TIERS,
    ParsedPriority,
    ReportedStage,
    Source,
    Stage,
    TaskKind,
    Tier,
    ToolAction,
    classify_keywords,
    classify_messages,
    classify_task,
    is_docs_path,
    last_user_text,
    message_text,
    native_priority,
    normalize_tool_name,
    parse_priority,
    resolve_priority,
    stage_from_tool_event,
    stage_of_action,
    stage_tiers_from,
)

# ---------------------------------------------------------------------------------------------------------------
# Builders for OpenAI chat messages


def user(text: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(name: str, call_id: str = "", **arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id or f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def assistant(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return message


def result(call_id: str, text: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def turn(name: str, output: str, **arguments: Any) -> list[dict[str, Any]]:
    """One assistant tool call and its result."""
    return [assistant(call(name, **arguments)), result(f"call_{name}", output)]


PYTEST_FAIL = "tests/test_x.py::test_a FAILED\n===== 1 failed, 4 passed in 0.2s ====="
PYTEST_PASS = "===== 5 passed in 0.2s ====="
TASK = "Implement the feature described in ISSUE.md"


# ---------------------------------------------------------------------------------------------------------------
# Tiers and the stage -> tier mapping


def test_the_seed_mapping() -> None:
    hot = {stage for stage, tier in DEFAULT_STAGE_TIERS.items() if tier is Tier.HOT}
    warm = {stage for stage, tier in DEFAULT_STAGE_TIERS.items() if tier is Tier.WARM}
    cold = {stage for stage, tier in DEFAULT_STAGE_TIERS.items() if tier is Tier.COLD}
    assert (hot, warm, cold) == (
        {Stage.CODE_EDIT, Stage.TEST_ANALYZE},
        {Stage.PLAN, Stage.COMMIT_MSG},
        {Stage.EXPLORE, Stage.DOCS},
    )


@pytest.mark.parametrize(("tier", "rank"), [(Tier.HOT, 0), (Tier.WARM, 1), (Tier.COLD, 2)])
def test_rank_and_native_priority(tier: Tier, rank: int) -> None:
    assert tier.rank == rank == native_priority(tier)
    assert TIERS[rank] is tier


def test_stage_tiers_from_overrides_only_what_it_names() -> None:
    tiers = stage_tiers_from({"docs": "warm", "plan": "hot"})
    assert tiers[Stage.DOCS] is Tier.WARM
    assert tiers[Stage.PLAN] is Tier.HOT
    assert tiers[Stage.EXPLORE] is Tier.COLD


def test_stage_tiers_from_reports_every_error() -> None:
    with pytest.raises(ValueError, match="unknown stage 'deploy'") as caught:
        stage_tiers_from({"deploy": "hot", "docs": "lukewarm"})
    assert "unknown tier 'lukewarm'" in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# Explicit priority values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hot", ParsedPriority(Tier.HOT)),
        (" COLD ", ParsedPriority(Tier.COLD)),
        ("Warm", ParsedPriority(Tier.WARM)),
        ("code_edit", ParsedPriority(Tier.HOT, stage=Stage.CODE_EDIT)),
        ("docs", ParsedPriority(Tier.COLD, stage=Stage.DOCS)),
        (0, ParsedPriority(Tier.HOT, native=0)),
        (-5, ParsedPriority(Tier.HOT, native=-5)),
        (1, ParsedPriority(Tier.WARM, native=1)),
        (2, ParsedPriority(Tier.COLD, native=2)),
        (100, ParsedPriority(Tier.COLD, native=100)),
        ("-1", ParsedPriority(Tier.HOT, native=-1)),
        ("1", ParsedPriority(Tier.WARM, native=1)),
        (None, None),
        ("", None),
        ("urgent", None),
        (True, None),
        (1.0, None),
        ({"tier": "hot"}, None),
        ("1.5", None),
    ],
)
def test_parse_priority(value: object, expected: ParsedPriority | None) -> None:
    assert parse_priority(value) == expected


def test_parse_priority_stage_names_follow_the_mapping() -> None:
    assert parse_priority("docs", stage_tiers_from({"docs": "hot"})) == ParsedPriority(Tier.HOT, stage=Stage.DOCS)


@given(st.sampled_from(TIERS))
def test_native_priority_round_trips(tier: Tier) -> None:
    assert parse_priority(native_priority(tier)) == ParsedPriority(tier, native=native_priority(tier))


# ---------------------------------------------------------------------------------------------------------------
# Tool events from the sidecar (and Goose hooks)


@pytest.mark.parametrize(
    ("tool", "ok", "exit_code", "paths", "command", "expected"),
    [
        # the sidecar's tools
        ("read_file", True, None, ["src/app.py"], None, Stage.EXPLORE),
        ("list_dir", True, None, ["."], None, Stage.EXPLORE),
        ("search", True, None, [], None, Stage.EXPLORE),
        ("write_file", True, None, ["src/app.py"], None, Stage.CODE_EDIT),
        ("edit_file", True, None, ["src/app.py"], None, Stage.CODE_EDIT),
        ("edit_file", False, None, ["src/app.py"], None, Stage.CODE_EDIT),  # a failed edit is retried: still editing
        ("write_file", True, None, ["README.md"], None, Stage.DOCS),
        ("write_file", True, None, ["docs/guide.txt"], None, Stage.DOCS),
        ("edit_file", True, None, ["docs/api.rst", "docs/index.md"], None, Stage.DOCS),
        ("edit_file", True, None, ["README.md", "src/app.py"], None, Stage.CODE_EDIT),
        ("write_file", True, None, [], None, Stage.CODE_EDIT),
        ("run_tests", True, 1, [], None, Stage.TEST_ANALYZE),
        ("run_tests", False, None, [], None, Stage.TEST_ANALYZE),
        ("run_tests", True, 0, [], None, Stage.CODE_EDIT),  # passed: back in the edit-test loop
        ("run_tests", True, 5, [], None, Stage.TEST_ANALYZE),  # pytest: no tests collected
        ("git_commit", True, 0, [], None, Stage.COMMIT_MSG),
        ("git_add", True, 0, ["src/app.py"], None, Stage.COMMIT_MSG),
        ("git_diff", True, 0, [], None, Stage.EXPLORE),
        ("git_log", True, 0, [], None, Stage.EXPLORE),
        ("run_command", True, 0, [], "git commit -m 'fix parser'", Stage.COMMIT_MSG),
        ("run_command", True, 1, [], "python -m pytest -x", Stage.TEST_ANALYZE),
        ("run_command", True, 0, [], "python -m pytest -x", Stage.CODE_EDIT),
        ("run_command", True, 0, [], "ruff check .", None),  # a command that succeeded says nothing
        ("run_command", True, 2, [], "ruff check .", Stage.TEST_ANALYZE),  # a failing command: analysis
        ("run_command", True, 1, [], "grep -rn needle src", Stage.EXPLORE),  # grep's 1 means "no match"
        ("run_command", True, 0, [], None, None),
        # the sidecar's events carry a run_command's first two words only
        ("run_command", True, 0, [], "git commit", Stage.COMMIT_MSG),
        ("run_command", True, 0, [], "pytest -q", Stage.CODE_EDIT),
        ("run_command", True, 1, [], "python -m", Stage.TEST_ANALYZE),
        ("run_command", True, 0, [], "python -m", None),
        # extension prefixes, Goose's developer tools
        ("sidecar__read_file", True, None, ["a.py"], None, Stage.EXPLORE),
        ("ext__edit_file", True, None, ["a.py"], None, Stage.CODE_EDIT),
        ("developer__shell", True, 0, [], "rg -n 'def parse' src", Stage.EXPLORE),
        ("shell", True, 1, [], "cd pkg && pytest -q tests/test_parse.py", Stage.TEST_ANALYZE),
        ("shell", True, 0, [], "cat > CHANGELOG.md <<'EOF'\n- fix\nEOF", Stage.DOCS),
        ("shell", True, 0, [], "sed -i 's/a/b/' src/app.py", Stage.CODE_EDIT),
        ("write", True, None, ["src/app.py"], None, Stage.CODE_EDIT),
        ("edit", True, None, ["docs/usage.md"], None, Stage.DOCS),
        ("tree", True, None, ["."], None, Stage.EXPLORE),
        ("developer__text_editor", True, None, ["a.py"], "view", Stage.EXPLORE),
        ("developer__text_editor", True, None, ["a.py"], "str_replace", Stage.CODE_EDIT),
        ("developer__text_editor", True, None, ["a.py"], "undo_edit", Stage.CODE_EDIT),
        ("developer__text_editor", True, None, ["a.py"], None, None),
        ("SIDECAR__READ_FILE", True, None, [], None, Stage.EXPLORE),
        ("computercontroller__web_search", True, None, [], None, None),
        ("read_image", True, None, ["x.png"], None, None),
    ],
)
def test_stage_from_tool_event(
    tool: str, ok: bool, exit_code: int | None, paths: list[str], command: str | None, expected: Stage | None
) -> None:
    assert stage_from_tool_event(tool, ok, exit_code, paths, command) is expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("cat src/app.py", Stage.EXPLORE),
        ("sed -n '1,40p' src/app.py", Stage.EXPLORE),
        ("rg -n parse src | head -20", Stage.EXPLORE),
        ("ls -la && find . -name '*.py' | wc -l", Stage.EXPLORE),
        ("grep -r pytest .", Stage.EXPLORE),  # mentions pytest, runs nothing
        ("git status && git log --oneline -5", Stage.EXPLORE),
        ("git diff src/", Stage.EXPLORE),
        ("ls 2>/dev/null", Stage.EXPLORE),
        ("git diff --staged", Stage.COMMIT_MSG),
        ("git add -A && git commit -m 'wip'", Stage.COMMIT_MSG),
        ("git -C repo commit --amend --no-edit", Stage.COMMIT_MSG),
        ("git --no-pager log", Stage.EXPLORE),
        ("pytest -q 2>&1 | tail -30", Stage.TEST_ANALYZE),
        ("FOO=1 python -m pytest", Stage.TEST_ANALYZE),
        ("npm test", Stage.TEST_ANALYZE),
        ("npm run test -- --watch=false", Stage.TEST_ANALYZE),
        ("cargo test", Stage.TEST_ANALYZE),
        ("go test ./...", Stage.TEST_ANALYZE),
        ("make test", Stage.TEST_ANALYZE),
        ("python -m unittest discover", Stage.TEST_ANALYZE),
        ("echo 'x = 1' >> src/config.py", Stage.CODE_EDIT),
        ("patch -p1 < fix.diff", Stage.CODE_EDIT),
        ("git apply fix.diff", Stage.CODE_EDIT),
        ("echo hello", None),
        ("cd src", None),
        ("python scripts/gen.py", None),
        ("latest_version --check", None),
    ],
)
def test_shell_commands_whose_outcome_is_unknown(command: str, expected: Stage | None) -> None:
    found = stage_of_action(ToolAction("developer__shell", command=command))
    assert (found[0] if found else None) is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (PYTEST_FAIL, Stage.TEST_ANALYZE),
        (PYTEST_PASS, Stage.CODE_EDIT),
        ("===== 1 error in 0.1s =====", Stage.TEST_ANALYZE),
        ("===== 0 failed, 3 passed =====", Stage.CODE_EDIT),
        ("Traceback (most recent call last):\n  File ...\nImportError: x", Stage.TEST_ANALYZE),
        ("FAIL src/parse.test.js\n  ● parses", Stage.TEST_ANALYZE),
        ("--- FAIL: TestParse (0.00s)", Stage.TEST_ANALYZE),
        ("ok  \tpkg/parse\t0.01s", Stage.CODE_EDIT),
        ("thread 'main' panicked at src/lib.rs:3:5", Stage.TEST_ANALYZE),
        ("Ran 3 tests in 0.001s\n\nFAILED (failures=1)", Stage.TEST_ANALYZE),
        ("command exited with code 1", Stage.TEST_ANALYZE),
        ("exit code: 0\n3 passed", Stage.CODE_EDIT),
        ('{"exit_code": 2, "output": "..."}', Stage.TEST_ANALYZE),
        ("collected 0 items\n\nno tests ran in 0.01s", Stage.TEST_ANALYZE),
        ("", Stage.CODE_EDIT),
    ],
)
def test_test_outcome_from_output(output: str, expected: Stage) -> None:
    found = stage_of_action(ToolAction("sidecar__run_tests", output=output))
    assert found is not None
    assert found[0] is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("PASSED\n" * 50_000 + "===== 1 failed, 9 passed =====", Stage.TEST_ANALYZE),  # the verdict is last
        ("FAILED test_a\n" + "PASSED\n" * 50_000, Stage.TEST_ANALYZE),  # ... or first
        ("PASSED\n" * 20_000 + "FAILED test_a\n" + "PASSED\n" * 20_000 + "=== 9 passed ===", Stage.CODE_EDIT),
    ],
)
def test_long_outputs_are_read_at_their_ends(output: str, expected: Stage) -> None:
    found = stage_of_action(ToolAction("run_tests", output=output))
    assert found is not None and found[0] is expected


def test_a_test_run_with_no_outcome_yet_is_analysis() -> None:
    assert stage_of_action(ToolAction("run_tests")) == (Stage.TEST_ANALYZE, "run_tests: tests ran")


@pytest.mark.parametrize(
    ("tool", "name"),
    [("sidecar__read_file", "read_file"), ("a__b__edit", "edit"), ("Shell", "shell"), ("write", "write")],
)
def test_normalize_tool_name(tool: str, name: str) -> None:
    assert normalize_tool_name(tool) == name


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("README.md", True),
        ("docs/index.html", True),
        ("doc/api.txt", True),
        ("pkg/Documentation/x.py", True),
        ("guide.rst", True),
        ("notes.MDX", True),
        ("book.adoc", True),
        ("src/docs.py", False),  # a module named docs, not a docs folder
        ("docs", False),
        ("src/app.py", False),
        ("requirements.txt", False),
        ("C:\\repo\\docs\\a.txt", True),
    ],
)
def test_is_docs_path(path: str, expected: bool) -> None:
    assert is_docs_path(path) is expected


# ---------------------------------------------------------------------------------------------------------------
# The conversation


@pytest.mark.parametrize(
    ("messages", "stage", "source"),
    [
        # tool activity after the task prompt decides, whatever the prompt says
        ([user(TASK), *turn("sidecar__run_tests", PYTEST_FAIL)], Stage.TEST_ANALYZE, Source.TOOLS),
        ([user(TASK), *turn("sidecar__run_tests", PYTEST_PASS)], Stage.CODE_EDIT, Source.TOOLS),
        ([user(TASK), *turn("sidecar__edit_file", "Edited src/a.py", path="src/a.py")], Stage.CODE_EDIT, Source.TOOLS),
        ([user(TASK), *turn("sidecar__read_file", "1: import os", path="src/a.py")], Stage.EXPLORE, Source.TOOLS),
        ([user("fix the bug"), *turn("sidecar__read_file", "x", path="a.py")], Stage.EXPLORE, Source.TOOLS),
        (
            [user(TASK), *turn("developer__shell", "[main 1a2b] fix", command="git commit -m fix")],
            Stage.COMMIT_MSG,
            Source.TOOLS,
        ),
        ([user(TASK), *turn("developer__shell", PYTEST_FAIL, command="pytest -q")], Stage.TEST_ANALYZE, Source.TOOLS),
        ([user(TASK), *turn("developer__shell", "a.py\nb.py", command="ls")], Stage.EXPLORE, Source.TOOLS),
        ([user(TASK), *turn("write", "Wrote docs/x.md (3 lines)", path="docs/x.md")], Stage.DOCS, Source.TOOLS),
        ([user(TASK), *turn("developer__text_editor", "ok", command="view", path="a.py")], Stage.EXPLORE, Source.TOOLS),
        # no tool activity yet: the seed's keywords on the last user text
        (
            [{"role": "system", "content": "You are a coding agent"}, user("Why do the tests fail?")],
            Stage.TEST_ANALYZE,
            Source.KEYWORDS,
        ),
        ([user("please fix the parser")], Stage.CODE_EDIT, Source.KEYWORDS),
        ([user("write a commit message")], Stage.COMMIT_MSG, Source.KEYWORDS),
        ([user("explain this module")], Stage.DOCS, Source.KEYWORDS),
        ([user("plan the approach")], Stage.PLAN, Source.KEYWORDS),
        ([user("look around the repository")], Stage.EXPLORE, Source.KEYWORDS),
        # a new user text after tool activity starts over from its keywords
        (
            [
                user(TASK),
                *turn("sidecar__run_tests", PYTEST_FAIL),
                assistant(content="Done."),
                user("now write a commit message"),
            ],
            Stage.COMMIT_MSG,
            Source.KEYWORDS,
        ),
        # an empty user message is no text: the tool activity before it decides
        ([user(TASK), *turn("sidecar__run_tests", PYTEST_FAIL), user("  ")], Stage.TEST_ANALYZE, Source.TOOLS),
        # a final assistant message without tool calls is skipped
        (
            [user(TASK), *turn("sidecar__edit_file", "ok", path="a.py"), assistant(content="Let me think.")],
            Stage.CODE_EDIT,
            Source.TOOLS,
        ),
        # a turn whose calls say nothing gives way to the turn before it
        (
            [user(TASK), *turn("sidecar__run_tests", PYTEST_FAIL), *turn("developer__shell", "", command="echo hi")],
            Stage.TEST_ANALYZE,
            Source.TOOLS,
        ),
        (
            [user(TASK), *turn("sidecar__read_file", "x", path="a.py"), *turn("memory__remember", "ok")],
            Stage.EXPLORE,
            Source.TOOLS,
        ),
        # content as a list of parts
        (
            [user([{"type": "text", "text": "fix"}, {"type": "text", "text": "the bug"}])],
            Stage.CODE_EDIT,
            Source.KEYWORDS,
        ),
        (
            [
                user(TASK),
                assistant(call("sidecar__run_tests", "c9")),
                result("c9", [{"type": "text", "text": PYTEST_FAIL}]),
            ],
            Stage.TEST_ANALYZE,
            Source.TOOLS,
        ),
    ],
)
def test_classify_messages(messages: list[dict[str, Any]], stage: Stage, source: Source) -> None:
    found = classify_messages(messages)
    assert found is not None
    assert (found.stage, found.source) == (stage, source)
    assert found.reason


def test_the_most_urgent_call_of_a_turn_wins() -> None:
    messages = [
        user(TASK),
        assistant(
            call("sidecar__read_file", "r1", path="a.py"),
            call("sidecar__run_tests", "t1"),
            call("sidecar__edit_file", "e1", path="a.py"),
        ),
        result("r1", "1: x"),
        result("t1", PYTEST_FAIL),
        result("e1", "Edited a.py"),
    ]
    found = classify_messages(messages)
    assert found is not None and found.stage is Stage.TEST_ANALYZE


def test_results_match_calls_by_id_not_by_order() -> None:
    messages = [
        user(TASK),
        assistant(call("sidecar__run_tests", "t1"), call("sidecar__read_file", "r1", path="a.py")),
        result("r1", "1 failed"),  # the read's result mentions failure; it is not a test run
        result("t1", PYTEST_PASS),
    ]
    found = classify_messages(messages)
    assert found is not None and (found.stage, found.reason) == (Stage.CODE_EDIT, "run_tests: tests passed")


def test_results_without_ids_match_by_position() -> None:
    messages = [
        user(TASK),
        {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": "run_tests", "arguments": "{}"}}],
        },
        {"role": "tool", "content": PYTEST_FAIL},
    ]
    found = classify_messages(messages)
    assert found is not None and found.stage is Stage.TEST_ANALYZE


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "You are a coding agent"}],
        [user("")],
        [user([{"type": "image_url", "image_url": {"url": "data:,"}}])],
        [assistant(content="hello")],
    ],
)
def test_no_evidence_is_none(messages: list[dict[str, Any]]) -> None:
    assert classify_messages(messages) is None


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "tool_calls": "not a list"},
        {"role": "assistant", "tool_calls": [42, {"function": "x"}, {"function": {"name": 7}}]},
        {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "edit_file", "arguments": "{not json"}}]},
        {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "edit_file", "arguments": "[1, 2]"}}]},
        {"role": "tool", "tool_call_id": 5, "content": None},
        {"role": 3, "content": {"x": 1}},
        {},
    ],
)
def test_malformed_messages_never_raise(message: dict[str, Any]) -> None:
    found = classify_messages([user("fix it"), message])
    assert found is not None


def test_edit_with_unparseable_arguments_is_still_an_edit() -> None:
    messages = [
        user(TASK),
        {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "edit_file", "arguments": "{"}}]},
    ]
    found = classify_messages(messages)
    assert found is not None and found.stage is Stage.CODE_EDIT


def test_arguments_may_arrive_as_an_object() -> None:
    message = {
        "role": "assistant",
        "tool_calls": [{"id": "a", "function": {"name": "write_file", "arguments": {"path": "README.md"}}}],
    }
    found = classify_messages([user(TASK), message])
    assert found is not None and found.stage is Stage.DOCS


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("The tests fail with an error", Stage.TEST_ANALYZE),
        ("pytest fails on CI", Stage.TEST_ANALYZE),
        ("test errors everywhere", Stage.TEST_ANALYZE),
        ("add a test", Stage.EXPLORE),  # test without fail/error is not analysis
        ("the latest build failed", Stage.EXPLORE),  # "latest" is not "test"
        ("Fix the login", Stage.CODE_EDIT),
        ("there is a bug", Stage.CODE_EDIT),
        ("edit the config", Stage.CODE_EDIT),
        ("debug the crash", Stage.CODE_EDIT),
        ("use the prefix option", Stage.EXPLORE),  # "prefix" is not "fix"
        ("commit the change", Stage.COMMIT_MSG),
        ("update the docs", Stage.DOCS),
        ("explain the design", Stage.DOCS),
        ("make a plan", Stage.PLAN),
        ("what approach is best", Stage.PLAN),
        ("fix the test failure and commit", Stage.TEST_ANALYZE),  # the seed's order: test+fail first
        ("fix the docs", Stage.CODE_EDIT),  # fix before doc
        ("", Stage.EXPLORE),
    ],
)
def test_classify_keywords(text: str, stage: Stage) -> None:
    assert classify_keywords(text).stage is stage


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("plain", "plain"),
        ([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}], "a\nb"),
        ([{"text": 5}], ""),
        (None, ""),
        (42, ""),
    ],
)
def test_message_text(content: object, text: str) -> None:
    assert message_text(content) == text


def test_last_user_text_skips_empty_and_other_roles() -> None:
    messages = [user("first"), assistant(content="reply"), user(""), {"role": "tool", "content": "out"}]
    assert last_user_text(messages) == "first"
    assert last_user_text([]) == ""


# ---------------------------------------------------------------------------------------------------------------
# Task kind (for routing)


@pytest.mark.parametrize(
    ("stage", "text", "kind"),
    [
        (Stage.COMMIT_MSG, TASK, TaskKind.SIMPLE),
        (Stage.DOCS, TASK, TaskKind.SIMPLE),
        (Stage.CODE_EDIT, "summarize and fix", TaskKind.COMPLEX),
        (Stage.TEST_ANALYZE, "write a docstring", TaskKind.COMPLEX),
        (Stage.EXPLORE, "Summarize this repository", TaskKind.SIMPLE),
        (Stage.PLAN, "Write release notes for v2", TaskKind.SIMPLE),
        (None, "Add a docstring to parse()", TaskKind.SIMPLE),
        (None, "Write a commit message for the staged diff", TaskKind.SIMPLE),
        (None, "TL;DR of the thread", TaskKind.SIMPLE),
        (None, "update the changelog", TaskKind.SIMPLE),
        (Stage.EXPLORE, TASK, TaskKind.COMPLEX),
        (Stage.PLAN, "plan the refactor", TaskKind.COMPLEX),
        (None, "", TaskKind.COMPLEX),
    ],
)
def test_classify_task(stage: Stage | None, text: str, kind: TaskKind) -> None:
    found = classify_task(stage, [user(text)] if text else [])
    assert found.kind is kind
    assert found.reason


# ---------------------------------------------------------------------------------------------------------------
# All sources together, in DESIGN.md's precedence

FAILING = [user(TASK), *turn("sidecar__run_tests", PYTEST_FAIL)]  # classifier: test_analyze (hot)
READING = [user(TASK), *turn("sidecar__read_file", "x", path="a.py")]  # classifier: explore (cold)
FRESH_DOCS = ReportedStage(Stage.DOCS, at=95.0)  # fresh at now=100 with ttl 30
STALE_DOCS = ReportedStage(Stage.DOCS, at=10.0)


@pytest.mark.parametrize(
    ("body", "header", "reported", "messages", "expected"),
    [
        # body first
        ("cold", "hot", FRESH_DOCS, FAILING, (Tier.COLD, Source.BODY, Stage.DOCS, Source.REPORTED, None)),
        (2, None, None, FAILING, (Tier.COLD, Source.BODY, Stage.TEST_ANALYZE, Source.TOOLS, 2)),
        (-3, None, None, [], (Tier.HOT, Source.BODY, None, Source.DEFAULT, -3)),
        ("commit_msg", "hot", None, FAILING, (Tier.WARM, Source.BODY, Stage.COMMIT_MSG, Source.BODY, None)),
        # header next; an unknown body value counts as absent
        (None, "hot", FRESH_DOCS, READING, (Tier.HOT, Source.HEADER, Stage.DOCS, Source.REPORTED, None)),
        ("urgent", "cold", None, FAILING, (Tier.COLD, Source.HEADER, Stage.TEST_ANALYZE, Source.TOOLS, None)),
        (None, "1", None, [], (Tier.WARM, Source.HEADER, None, Source.DEFAULT, 1)),
        (None, "explore", None, FAILING, (Tier.COLD, Source.HEADER, Stage.EXPLORE, Source.HEADER, None)),
        # a fresh report next, over the conversation
        (None, None, FRESH_DOCS, FAILING, (Tier.COLD, Source.REPORTED, Stage.DOCS, Source.REPORTED, None)),
        (None, "", FRESH_DOCS, FAILING, (Tier.COLD, Source.REPORTED, Stage.DOCS, Source.REPORTED, None)),
        # a stale report is ignored
        (None, None, STALE_DOCS, FAILING, (Tier.HOT, Source.TOOLS, Stage.TEST_ANALYZE, Source.TOOLS, None)),
        (None, None, None, READING, (Tier.COLD, Source.TOOLS, Stage.EXPLORE, Source.TOOLS, None)),
        (
            None,
            None,
            None,
            [user("please fix it")],
            (Tier.HOT, Source.KEYWORDS, Stage.CODE_EDIT, Source.KEYWORDS, None),
        ),
        # nothing at all: warm
        (None, None, STALE_DOCS, [], (Tier.WARM, Source.DEFAULT, None, Source.DEFAULT, None)),
    ],
)
def test_resolve_priority(
    body: object,
    header: str | None,
    reported: ReportedStage | None,
    messages: list[dict[str, Any]],
    expected: tuple[Tier, Source, Stage | None, Source, int | None],
) -> None:
    got = resolve_priority(body, header, reported, now=100.0, ttl=30.0, messages=messages)
    assert (got.tier, got.source, got.stage, got.stage_source, got.native) == expected
    assert got.reason


def test_resolve_priority_uses_the_configured_mapping() -> None:
    tiers = stage_tiers_from({"explore": "warm"})
    got = resolve_priority(None, None, None, 0.0, 30.0, READING, stage_tiers=tiers)
    assert got.tier is Tier.WARM


@pytest.mark.parametrize(("age", "fresh"), [(0.0, True), (30.0, True), (30.01, False), (-5.0, True)])
def test_report_freshness(age: float, fresh: bool) -> None:
    assert ReportedStage(Stage.PLAN, at=100.0).is_fresh(100.0 + age, ttl=30.0) is fresh


_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
_content = _scalar | st.lists(st.dictionaries(st.sampled_from(["type", "text"]), _scalar, max_size=2), max_size=3)
_function = st.fixed_dictionaries({}, optional={"name": _scalar, "arguments": _scalar | st.just('{"path": "a.md"}')})
_call = st.fixed_dictionaries({}, optional={"id": _scalar, "function": _function | _scalar})
_message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "tool", "system"]) | _scalar,
        "content": _content,
        "tool_calls": st.lists(_call, max_size=3) | _scalar,
        "tool_call_id": _scalar,
    },
)


@given(st.lists(_message, max_size=6))
def test_arbitrary_json_never_raises(messages: Sequence[Mapping[str, object]]) -> None:
    found = resolve_priority(None, None, None, 0.0, 30.0, messages)
    assert found.tier in TIERS
