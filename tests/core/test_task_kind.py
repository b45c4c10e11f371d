"""Simple or complex work, for routing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.stages import (
    Stage,
    TaskKind,
)
from sidecar.core.task_kind import classify_task
from tests.core.messages import TASK, user

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


_SIMPLE = re.compile(r"\b(?:summar|tl;?dr|changelog|release notes?\b|docstring|commit message)")
_PIECES = ("summar", "tl", ";", "dr", "changelog", "release", " ", "note", "s", "docstring", "commit", "message", "x",
           "TL", "Summar", "_", "é")  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=10).map("".join) | st.text(max_size=40))
def test_the_substring_shortcut_changes_no_answer(text: str) -> None:
    """A text is simple exactly when the regex alone finds a simple word in it (the shortcut skips only texts
    it cannot match)."""
    found = classify_task(None, [user(text)])
    assert (found.kind is TaskKind.SIMPLE) == (_SIMPLE.search(text.lower()) is not None)
