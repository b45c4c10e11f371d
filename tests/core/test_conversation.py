"""An OpenAI chat conversation -> stage: its tool calls and results, then keywords."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.conversation import (
    _KEYWORD_RULES,
    Classification,
    _word_with_prefix,
    classify_keywords,
    classify_messages,
    last_user_text,
    message_text,
)
from sidecar.core.stages import (
    Source,
    Stage,
)
from tests.core.messages import PYTEST_FAIL, PYTEST_PASS, TASK, assistant, call, result, turn, user

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


def _keywords_by_words(text: str) -> Classification:
    """The keyword rules without the substring shortcut: every text split into its words (as before it)."""
    words = sorted(set(re.findall(r"[a-z]+", text.lower())))
    for stage, prefixes, also in _KEYWORD_RULES:
        found = _word_with_prefix(words, prefixes)
        if found and (not also or _word_with_prefix(words, also)):
            return Classification(stage, Source.KEYWORDS, f"keyword {found!r} in the last user text")
    return Classification(Stage.EXPLORE, Source.KEYWORDS, "no keyword in the last user text")


_PIECES = ("test", "pytest", "unittest", "fail", "error", "fix", "bug", "edit", "debug", "commit", "doc",
           "explain", "plan", "approach", "prefix", "latest", "bench", "x", "é", "K", "2", "_", " ", "-", "TEST",
           "Fix")  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join) | st.text(max_size=40))
def test_classify_keywords_matches_the_word_split(text: str) -> None:
    """The shortcut for texts without any rule's prefix changes no answer, reason included."""
    assert classify_keywords(text) == _keywords_by_words(text)
