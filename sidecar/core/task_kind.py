"""Simple or complex work (routing's question), from the stage and the last user text."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sidecar.core.conversation import last_user_text
from sidecar.core.stages import Stage, TaskKind

_SIMPLE_WORDS = re.compile(r"\b(?:summar|tl;?dr|changelog|release notes?\b|docstring|commit message)")
# Every match of _SIMPLE_WORDS contains one of these: a text with none of them skips the regex (substring search
# is C speed, the regex scan is not).
_SIMPLE_HINTS = ("summar", "tl", "changelog", "release note", "docstring", "commit message")
_SIMPLE_STAGES = frozenset({Stage.COMMIT_MSG, Stage.DOCS})
_COMPLEX_STAGES = frozenset({Stage.CODE_EDIT, Stage.TEST_ANALYZE})


@dataclass(frozen=True)
class TaskClassification:
    """Simple or complex work, and why."""

    kind: TaskKind
    reason: str


def classify_task(stage: Stage | None, messages: Sequence[Mapping[str, object]]) -> TaskClassification:
    """Simple (commit messages, docs and docstrings, summaries) or complex (debugging, edits, everything else).

    code_edit and test_analyze are complex whatever the text says; commit_msg and docs are simple; otherwise the
    last user text asking for a summary, changelog, release notes, docstring or commit message makes it simple.
    """
    if stage in _COMPLEX_STAGES:
        return TaskClassification(TaskKind.COMPLEX, f"stage {stage}")
    if stage in _SIMPLE_STAGES:
        return TaskClassification(TaskKind.SIMPLE, f"stage {stage}")
    text = last_user_text(messages).lower()
    found = _SIMPLE_WORDS.search(text) if any(hint in text for hint in _SIMPLE_HINTS) else None
    if found:
        return TaskClassification(TaskKind.SIMPLE, f"asks for {found.group(0)!r}")
    return TaskClassification(TaskKind.COMPLEX, f"stage {stage}" if stage else "no evidence of simple work")
