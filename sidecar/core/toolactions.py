"""One tool call -> the workflow stage it shows (shared by the sidecar's events and the conversation's tool calls).

Tool names are read without their extension prefix; shell commands by what they run (a commit, a read-only
pipeline, a test runner, a write); a run's outcome from its exit code, its `ok` flag or its output's verdict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sidecar.core.stages import Stage
from sidecar.core.testcommands import command_runs_tests


@dataclass(frozen=True)
class ToolAction:
    """One tool call as the classifier sees it. Unknown fields are None (not "failed", not "passed").

    `tool` is the name as the model or sidecar saw it (`sidecar__read_file`, `developer__shell`, `edit`);
    `command` is a shell command (shell, run_command) or text_editor's sub-command (view, write, str_replace);
    `output` is the tool result's text, when the conversation has it.
    """

    tool: str
    ok: bool | None = None
    exit_code: int | None = None
    paths: tuple[str, ...] = ()
    command: str | None = None
    output: str | None = None


class _Kind(StrEnum):
    READ = "read"
    WRITE = "write"
    TEST = "test"
    COMMIT = "commit"
    RUN = "run"
    UNKNOWN = "unknown"


# Tool names without their extension prefix: the sidecar's (DESIGN.md), Goose's developer tools (shell, write,
# edit, tree; text_editor up to ~1.25, reference/goose.md), and common names of other agents' tools.
_READ_TOOLS = frozenset(
    {"read_file", "read", "view", "cat", "list_dir", "list", "ls", "tree", "search", "grep", "glob", "find", "rg"}
    | {"find_files", "list_files", "read_many_files", "open_file"}
)
_WRITE_TOOLS = frozenset(
    {"write_file", "edit_file", "write", "edit", "create_file", "str_replace", "insert", "apply_patch", "patch"}
    | {"multi_edit", "multiedit", "replace"}
)
_TEST_TOOLS = frozenset({"run_tests", "run_test", "test", "tests"})
_COMMAND_TOOLS = frozenset({"shell", "run_command", "bash", "sh", "exec", "execute", "terminal", "run"})
_GIT_COMMIT_TOOLS = frozenset({"git_commit", "git_add"})
_TEXT_EDITOR_READ = frozenset({"view"})
_TEXT_EDITOR_WRITE = frozenset({"write", "str_replace", "insert", "undo_edit", "create"})

_GIT = r"\bgit(?:\s+-[Cc]\s+\S+|\s+--?[\w-]+(?:=\S+)?)*\s+"
_COMMIT_COMMAND = re.compile(_GIT + r"(?:commit|add)\b|" + _GIT + r"diff\b[^;&|\n]*--(?:staged|cached)\b")
# Write through the shell: in-place sed/perl, patch, tee, `> file` (not to /dev/null, not `2>&1`).
_WRITE_COMMAND = re.compile(r"\bsed\s+(?:-\w*\s+)*-i|\bperl\s+-\w*i|\bpatch\b|\bgit\s+apply\b|\btee\b")
_REDIRECT = re.compile(r"(?<![0-9&>])>>?\s*(?!&)([^\s&|;<>]+)")
_READ_COMMANDS = frozenset(
    {"cat", "head", "tail", "less", "more", "ls", "tree", "find", "fd", "grep", "egrep", "rg", "ag", "ack", "wc"}
    | {"nl", "sed", "awk", "sort", "uniq", "cut", "pwd", "file", "stat", "du", "diff", "which", "type", "xargs"}
)
_NEUTRAL_COMMANDS = frozenset({"cd", "pushd", "popd", "true", "set", "export", "source", ".", "echo", "printf"})
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=\S*")
_GIT_READ = frozenset({"status", "log", "diff", "show", "blame", "grep", "ls-files", "branch", "rev-parse"})
_SEGMENT_SPLIT = re.compile(r"&&|\|\||[;|\n]")
# A failing run in a tool's output: pytest/unittest/jest/go/cargo verdicts, tracebacks, exit codes. Plain substrings
# and literal-first patterns, searched only near the ends of the output (`_verdict_text`): a leading `\b` would make
# Python's regex engine try every position, ~40 ms on a 240 KB test log.
_FAILURE_MARKERS = (
    "FAILED",
    "FAILURES",
    "ERRORS",
    "FAIL:",
    "FAIL ",
    "FAIL\t",
    "Traceback (most recent call last)",
    "AssertionError",
    "panicked at",
    "npm ERR!",
    "collected 0 items",
    "no tests ran",
)
_FAILURE_PATTERNS = (
    re.compile(r"[1-9]\d*\s+(?:failed|errors?|failures?)\b"),
    re.compile(r"exit(?:ed)?(?: with)?\s+(?:code|status)\W{0,3}[1-9]"),
    re.compile(r"exit_code\W{0,3}[1-9]"),
)
_VERDICT_HEAD = 8 * 1024
_VERDICT_TAIL = 32 * 1024
_DOCS_SUFFIXES = (".md", ".mdx", ".rst", ".adoc", ".asciidoc")
_DOCS_DIRS = frozenset({"docs", "doc", "documentation"})


def normalize_tool_name(tool: str) -> str:
    """The tool's own name: lower case, without an extension prefix (`sidecar__read_file` -> `read_file`)."""
    return tool.rsplit("__", 1)[-1].strip().lower()


def is_docs_path(path: str) -> bool:
    """True for documentation files: `.md`, `.mdx`, `.rst`, `.adoc`, or anything under a `docs/` or `doc/` folder."""
    lowered = path.replace("\\", "/").lower()
    parts = [part for part in lowered.split("/") if part]
    return lowered.endswith(_DOCS_SUFFIXES) or any(part in _DOCS_DIRS for part in parts[:-1])


def _command_kind(command: str) -> tuple[_Kind, tuple[str, ...]]:
    """Kind of a shell command line, and the files it writes through a redirect.

    A commit anywhere wins; then a pipeline of read-only commands (`cat`, `rg`, `git log`; `grep pytest` too) is a
    read; then a command that runs a test runner (`testcommands.command_runs_tests`); then any write (redirect to
    a file, `sed -i`, `tee`, `patch`); else a run.
    """
    if _COMMIT_COMMAND.search(command):
        return _Kind.COMMIT, ()
    targets = tuple(t for t in _REDIRECT.findall(command) if t != "/dev/null")
    writes = bool(targets) or _WRITE_COMMAND.search(command) is not None
    heads: list[list[str]] = []
    for segment in _SEGMENT_SPLIT.split(command):
        words = [w for w in segment.split() if not _ENV_ASSIGNMENT.fullmatch(w)]
        if words and words[0] not in _NEUTRAL_COMMANDS:
            heads.append([words[0].rsplit("/", 1)[-1], *words[1:]])
    if not writes and heads and all(_is_read(words) for words in heads):
        return _Kind.READ, ()
    if command_runs_tests(command):
        return _Kind.TEST, ()
    if writes:
        return _Kind.WRITE, targets
    return (_Kind.RUN, ()) if heads else (_Kind.UNKNOWN, ())


def _is_read(words: Sequence[str]) -> bool:
    if words[0] != "git":
        return words[0] in _READ_COMMANDS
    rest = iter(words[1:])
    for word in rest:
        if word in ("-C", "-c"):
            next(rest, None)  # the option's argument
        elif not word.startswith("-"):
            return word in _GIT_READ
    return False


def _action_kind(action: ToolAction) -> tuple[_Kind, tuple[str, ...]]:
    name = normalize_tool_name(action.tool)
    if name in _GIT_COMMIT_TOOLS:
        return _Kind.COMMIT, ()
    if name.startswith("git_"):
        return _Kind.READ, ()
    if name == "text_editor":
        sub = (action.command or "").strip().lower()
        if sub in _TEXT_EDITOR_READ:
            return _Kind.READ, ()
        return (_Kind.WRITE, ()) if sub in _TEXT_EDITOR_WRITE else (_Kind.UNKNOWN, ())
    if name in _TEST_TOOLS:
        return _Kind.TEST, ()
    if name in _COMMAND_TOOLS:
        return _command_kind(action.command) if action.command else (_Kind.RUN, ())
    if name in _WRITE_TOOLS:
        return _Kind.WRITE, ()
    if name in _READ_TOOLS:
        return _Kind.READ, ()
    return _Kind.UNKNOWN, ()


def _shows_failure(output: str) -> bool:
    """True if a run's output shows a failure; only its first 8 KB and last 32 KB are read, where runners print
    their verdicts (pytest's summary line is last)."""
    text = (
        output
        if len(output) <= _VERDICT_HEAD + _VERDICT_TAIL
        else output[:_VERDICT_HEAD] + "\n" + output[-_VERDICT_TAIL:]
    )
    return any(marker in text for marker in _FAILURE_MARKERS) or any(p.search(text) for p in _FAILURE_PATTERNS)


def _failed(action: ToolAction) -> bool | None:
    """True if the run failed, False if it passed, None if nothing says."""
    if action.exit_code is not None and action.exit_code != 0:
        return True
    if action.ok is False:
        return True
    if action.output is not None and _shows_failure(action.output):
        return True
    if action.exit_code == 0 or action.ok is True or action.output is not None:
        return False
    return None


def stage_of_action(action: ToolAction) -> tuple[Stage, str] | None:
    """The stage an agent is in after this tool call, with a short reason; None when the call says nothing.

    git commit / git add / `git diff --staged` -> commit_msg; a test run (run_tests, or a test runner through a
    shell) -> test_analyze when it failed or its outcome is unknown, code_edit when it passed (the agent is still in
    its edit-test loop); edit/write -> docs when every written path is a docs file, else code_edit; read, search,
    list, tree and read-only shell pipelines (cat, rg, ls, git log ...) -> explore; any other command -> test_analyze
    when it failed, else None.
    """
    kind, written = _action_kind(action)
    name = normalize_tool_name(action.tool)
    if kind is _Kind.COMMIT:
        return Stage.COMMIT_MSG, f"{name}: git commit"
    if kind is _Kind.TEST:
        failed = _failed(action)
        if failed is False:
            return Stage.CODE_EDIT, f"{name}: tests passed"
        return Stage.TEST_ANALYZE, f"{name}: tests {'failed' if failed else 'ran'}"
    if kind is _Kind.WRITE:
        paths = action.paths + written
        if paths and all(is_docs_path(p) for p in paths):
            return Stage.DOCS, f"{name}: wrote docs {paths[0]}"
        return Stage.CODE_EDIT, f"{name}: edit" + (f" {paths[0]}" if paths else "")
    if kind is _Kind.READ:
        return Stage.EXPLORE, f"{name}: read"
    if kind is _Kind.RUN and _failed(action):
        return Stage.TEST_ANALYZE, f"{name}: command failed"
    return None


def stage_from_tool_event(
    tool: str, ok: bool, exit_code: int | None, paths: Sequence[str], command: str | None = None
) -> Stage | None:
    """The stage a sidecar event (`POST /v1/agents/{id}/events`) reports; None when the event says nothing new.

    Same rules as `stage_of_action`. A passing test run reports code_edit; an unrecognised tool, or a command that
    succeeded and is neither a read, a write, a test run nor a git commit, reports None (keep the last stage).
    """
    found = stage_of_action(ToolAction(tool=tool, ok=ok, exit_code=exit_code, paths=tuple(paths), command=command))
    return found[0] if found else None
