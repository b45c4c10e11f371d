"""An OpenAI chat conversation -> the workflow stage it is in: its last tool calls, else the last user text's keywords.

Also the small readers of messages the other classifiers share (`message_text`, `last_user_text`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sidecar.core.stages import Source, Stage
from sidecar.core.toolactions import ToolAction, stage_of_action

# The order in which one turn's several tool calls decide its stage: the most urgent evidence wins.
_TURN_PRECEDENCE: tuple[Stage, ...] = (
    Stage.TEST_ANALYZE,
    Stage.CODE_EDIT,
    Stage.COMMIT_MSG,
    Stage.DOCS,
    Stage.PLAN,
    Stage.EXPLORE,
)

# The seed's keyword rules, in its order, matched at word starts (so "prefix" is not "fix", "latest" not "test").
_KEYWORD_RULES: tuple[tuple[Stage, tuple[str, ...], tuple[str, ...]], ...] = (
    (Stage.TEST_ANALYZE, ("test", "pytest", "unittest"), ("fail", "error")),
    (Stage.CODE_EDIT, ("fix", "bug", "edit", "debug"), ()),
    (Stage.COMMIT_MSG, ("commit",), ()),
    (Stage.DOCS, ("doc", "explain"), ()),
    (Stage.PLAN, ("plan", "approach"), ()),
)
_WORD = re.compile(r"[a-z]+")
# A word with a rule's prefix contains one of these: a text with none of them is explore without splitting it
# into words (substring search is C speed; the split is the classifier's main cost on a long text).
_KEYWORD_HINTS = ("test", "fix", "bug", "edit", "commit", "doc", "explain", "plan", "approach")
_PATH_KEYS = ("path", "file_path", "filepath", "file", "filename", "target_file", "target", "notebook_path")


@dataclass(frozen=True)
class Classification:
    """A stage read from the conversation: `source` is TOOLS or KEYWORDS; `reason` says what decided it."""

    stage: Stage
    source: Source
    reason: str


_NO_KEYWORD = Classification(Stage.EXPLORE, Source.KEYWORDS, "no keyword in the last user text")


def message_text(content: object) -> str:
    """The text of a message's `content`: a string, or the `text` of its text parts (joined by newlines)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = [part.get("text") for part in content if isinstance(part, Mapping)]
        return "\n".join(text for text in texts if isinstance(text, str))
    return ""


def last_user_text(messages: Sequence[Mapping[str, object]]) -> str:
    """The text of the last user message that has any; "" when there is none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = message_text(message.get("content"))
            if text.strip():
                return text
    return ""


def _word_with_prefix(sorted_words: Sequence[str], prefixes: Iterable[str]) -> str | None:
    """The first word (of the first prefix that has one) starting with one of `prefixes`; O(log n) per prefix."""
    for prefix in prefixes:
        index = bisect.bisect_left(sorted_words, prefix)
        if index < len(sorted_words) and sorted_words[index].startswith(prefix):
            return sorted_words[index]
    return None


def classify_keywords(text: str) -> Classification:
    """The seed's keyword rules on one user text, in the seed's order; explore when nothing matches.

    "test" with "fail"/"error" -> test_analyze; "fix"/"bug"/"edit"/"debug" -> code_edit; "commit" -> commit_msg;
    "doc"/"explain" -> docs; "plan"/"approach" -> plan. Case-insensitive, matched at word starts.
    """
    lowered = text.lower()
    if not any(hint in lowered for hint in _KEYWORD_HINTS):
        return _NO_KEYWORD
    words = sorted(set(_WORD.findall(lowered)))
    for stage, prefixes, also in _KEYWORD_RULES:
        found = _word_with_prefix(words, prefixes)
        if found and (not also or _word_with_prefix(words, also)):
            return Classification(stage, Source.KEYWORDS, f"keyword {found!r} in the last user text")
    return _NO_KEYWORD


def _tool_calls(message: Mapping[str, object]) -> list[Mapping[str, object]]:
    calls = message.get("tool_calls")
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        return []
    return [call for call in calls if isinstance(call, Mapping)]


def _call_action(call: Mapping[str, object], output: str | None) -> ToolAction | None:
    function = call.get("function")
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        return None
    raw = function.get("arguments")
    args: object = raw
    if isinstance(raw, str):
        try:
            args = json.loads(raw)
        except ValueError:
            args = {}
    if not isinstance(args, Mapping):
        args = {}
    paths: list[str] = [str(args[key]) for key in _PATH_KEYS if isinstance(args.get(key), str)]
    listed = args.get("paths")
    if isinstance(listed, Sequence) and not isinstance(listed, str):
        paths += [p for p in listed if isinstance(p, str)]
    command = args.get("command", args.get("cmd"))
    return ToolAction(
        tool=str(function["name"]),
        paths=tuple(paths),
        command=command if isinstance(command, str) else None,
        output=output,
    )


def _classify_turn(actions: Iterable[ToolAction]) -> Classification | None:
    found: dict[Stage, str] = {}
    for action in actions:
        result = stage_of_action(action)
        if result is not None:
            found.setdefault(result[0], result[1])
    for stage in _TURN_PRECEDENCE:
        if stage in found:
            return Classification(stage, Source.TOOLS, found[stage])
    return None


def classify_messages(messages: Sequence[Mapping[str, object]]) -> Classification | None:
    """The stage an OpenAI chat conversation is in; None when it has neither tool activity nor user text.

    Walks back from the end. The last assistant turn with tool calls (with their results, matched by
    `tool_call_id`, else by position) decides, through `stage_of_action`; of several calls in one turn the most
    urgent wins (test_analyze > code_edit > commit_msg > docs > explore). A turn whose calls say nothing gives way
    to the turn before it. Tool activity counts only after the last user text: reaching a user message with text
    first, the seed's keyword rules on that text decide (`classify_keywords`). Content may be a string or parts.
    """
    results: dict[str, str] = {}
    positional: list[str] = []  # results after the assistant turn being approached, in order
    for message in reversed(messages):
        role = message.get("role")
        if role == "tool":
            text = message_text(message.get("content"))
            call_id = message.get("tool_call_id")
            if isinstance(call_id, str):
                results[call_id] = text
            positional.insert(0, text)
        elif role == "assistant":
            calls = _tool_calls(message)
            if calls:
                actions = []
                for index, call in enumerate(calls):
                    call_id = call.get("id")
                    output = results.get(call_id) if isinstance(call_id, str) else None
                    if output is None and index < len(positional):
                        output = positional[index]
                    action = _call_action(call, output)
                    if action is not None:
                        actions.append(action)
                decided = _classify_turn(actions)
                if decided is not None:
                    return decided
            positional = []
        elif role == "user":
            text = message_text(message.get("content"))
            if text.strip():
                return classify_keywords(text)
    return None
