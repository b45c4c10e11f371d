"""Simple or complex work, for routing."""

from __future__ import annotations

import pytest

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
