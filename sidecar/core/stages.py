"""Workflow stages, priority tiers, and where a call's priority comes from.

A call's tier decides how it is ordered; its stage and task kind decide which model serves it. Sources, in the
precedence of DESIGN.md "Contracts" (`resolve_priority`):

    body `priority`  >  header `X-Priority`  >  stage reported by the agent's sidecar (fresh within a TTL)
                     >  the conversation: last tool calls and their results, then keywords in the last user text
                     >  default `warm`

Stage -> tier is the seed's mapping (hot = code_edit, test_analyze; warm = plan, commit_msg; cold = explore, docs;
`seed/000_bc7af0ed774b52c4.txt`, "Priority Scheduling"), replaceable with `stage_tiers_from`.
The seed classified by keywords on the last user message only; here keywords are the fallback, and the evidence
is what the agent just did (`classify_messages`) or what its sidecar reported (`stage_from_tool_event`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Stage(StrEnum):
    """What an agent is doing, as the seed named it."""

    EXPLORE = "explore"
    PLAN = "plan"
    CODE_EDIT = "code_edit"
    TEST_ANALYZE = "test_analyze"
    DOCS = "docs"
    COMMIT_MSG = "commit_msg"


class Tier(StrEnum):
    """Priority tier. `rank` 0 (hot) is served first, as vLLM serves lower `priority` values first."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"

    @property
    def rank(self) -> int:
        """0 for hot, 1 for warm, 2 for cold."""
        return TIERS.index(self)


TIERS: tuple[Tier, ...] = (Tier.HOT, Tier.WARM, Tier.COLD)
"""All tiers, best first: `TIERS[rank]` is the tier of that rank."""
_TIER_NAMES = frozenset(tier.value for tier in Tier)
_STAGE_NAMES = frozenset(stage.value for stage in Stage)


class TaskKind(StrEnum):
    """Work a small model does well (simple) or that needs the large one (complex); used by routing."""

    SIMPLE = "simple"
    COMPLEX = "complex"


class Source(StrEnum):
    """Where a tier or stage came from (a label for logs, /status and metrics)."""

    BODY = "body"
    HEADER = "header"
    REPORTED = "reported"
    TOOLS = "tools"
    KEYWORDS = "keywords"
    DEFAULT = "default"


DEFAULT_STAGE_TIERS: Mapping[Stage, Tier] = MappingProxyType(
    {
        Stage.CODE_EDIT: Tier.HOT,
        Stage.TEST_ANALYZE: Tier.HOT,
        Stage.PLAN: Tier.WARM,
        Stage.COMMIT_MSG: Tier.WARM,
        Stage.EXPLORE: Tier.COLD,
        Stage.DOCS: Tier.COLD,
    }
)
"""The seed's mapping (`seed/000_bc7af0ed774b52c4.txt`, `WorkflowStage::priority`)."""

DEFAULT_TIER = Tier.WARM
"""The tier of a call no source says anything about (DESIGN.md)."""


def stage_tiers_from(raw: Mapping[str, str], base: Mapping[Stage, Tier] = DEFAULT_STAGE_TIERS) -> Mapping[Stage, Tier]:
    """`base` with the overrides in `raw` (stage name -> tier name), e.g. `{"docs": "warm"}`.

    Raises ValueError naming every unknown stage or tier at once. Stages absent from `raw` keep `base`'s tier.
    """
    errors = [f"unknown stage {key!r}" for key in raw if key not in _STAGE_NAMES]
    errors += [f"unknown tier {value!r} for {key!r}" for key, value in raw.items() if value not in _TIER_NAMES]
    if errors:
        raise ValueError("; ".join(errors) + f" (stages: {', '.join(Stage)}; tiers: {', '.join(Tier)})")
    merged = dict(base)
    merged.update({Stage(key): Tier(value) for key, value in raw.items()})
    return MappingProxyType(merged)


def native_priority(tier: Tier) -> int:
    """vLLM's `priority` body field for a tier: its rank (hot 0, warm 1, cold 2; lower is served earlier)."""
    return tier.rank


# ---------------------------------------------------------------------------------------------------------------
# Explicit priority values (body `priority`, header `X-Priority`)


@dataclass(frozen=True)
class ParsedPriority:
    """An explicit priority value: its tier, the stage it named (if it was a stage name), the int to pass to vLLM."""

    tier: Tier
    stage: Stage | None = None
    native: int | None = None


def parse_priority(value: object, stage_tiers: Mapping[Stage, Tier] = DEFAULT_STAGE_TIERS) -> ParsedPriority | None:
    """Read a body `priority` or header `X-Priority` value; None when it is absent or not understood.

    Accepted: a tier word (`hot|warm|cold`), a stage name (its tier under `stage_tiers`), or an integer (a JSON int
    or a string of one), which is vLLM's native priority and is kept in `native` to be passed on as is; its tier is
    the inverse of `native_priority`: <= 0 hot, 1 warm, >= 2 cold. Case and surrounding spaces are ignored.
    Booleans, floats and other words are not understood (None), so the next source decides.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ParsedPriority(tier=TIERS[min(max(value, 0), len(TIERS) - 1)], native=value)
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    if word in _TIER_NAMES:
        return ParsedPriority(tier=Tier(word))
    if word in _STAGE_NAMES:
        stage = Stage(word)
        return ParsedPriority(tier=stage_tiers.get(stage, DEFAULT_TIER), stage=stage)
    if re.fullmatch(r"[+-]?\d{1,9}", word):
        return parse_priority(int(word), stage_tiers)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Tool actions -> stage (shared by the sidecar's events and the conversation's tool calls)


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
_TEST_COMMAND = re.compile(
    r"\b(?:py\.?test|unittest|tox|nox|jest|vitest|mocha|rspec|phpunit|ctest)\b"
    r"|\b(?:npm|yarn|pnpm|bun)\s+(?:run\s+)?test\b|\b(?:cargo|go|deno|mvn|gradlew?|dotnet|mix)\s+test\b"
    r"|\bmake\s+(?:test|check)\b|\bmanage\.py\s+test\b"
)
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
    read; then a test runner anywhere; then any write (redirect to a file, `sed -i`, `tee`, `patch`); else a run.
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
    if _TEST_COMMAND.search(command):
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


# ---------------------------------------------------------------------------------------------------------------
# The conversation -> stage

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
_SIMPLE_WORDS = re.compile(r"\b(?:summar|tl;?dr|changelog|release notes?\b|docstring|commit message)")
_SIMPLE_STAGES = frozenset({Stage.COMMIT_MSG, Stage.DOCS})
_COMPLEX_STAGES = frozenset({Stage.CODE_EDIT, Stage.TEST_ANALYZE})
_PATH_KEYS = ("path", "file_path", "filepath", "file", "filename", "target_file", "target", "notebook_path")


@dataclass(frozen=True)
class Classification:
    """A stage read from the conversation: `source` is TOOLS or KEYWORDS; `reason` says what decided it."""

    stage: Stage
    source: Source
    reason: str


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
    words = sorted(set(_WORD.findall(text.lower())))
    for stage, prefixes, also in _KEYWORD_RULES:
        found = _word_with_prefix(words, prefixes)
        if found and (not also or _word_with_prefix(words, also)):
            return Classification(stage, Source.KEYWORDS, f"keyword {found!r} in the last user text")
    return Classification(Stage.EXPLORE, Source.KEYWORDS, "no keyword in the last user text")


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
    found = _SIMPLE_WORDS.search(last_user_text(messages).lower())
    if found:
        return TaskClassification(TaskKind.SIMPLE, f"asks for {found.group(0)!r}")
    return TaskClassification(TaskKind.COMPLEX, f"stage {stage}" if stage else "no evidence of simple work")


# ---------------------------------------------------------------------------------------------------------------
# All sources together


@dataclass(frozen=True)
class ReportedStage:
    """The stage an agent's sidecar last reported, and when the coordinator received it (coordinator clock, s)."""

    stage: Stage
    at: float

    def is_fresh(self, now: float, ttl: float) -> bool:
        """True while `now - at <= ttl` (a report stamped in the future counts as fresh)."""
        return now - self.at <= ttl


@dataclass(frozen=True)
class Priority:
    """A call's tier and stage, each with its source.

    `tier`/`source`: the first source present in DESIGN.md's order. `stage`/`stage_source`: the best stage evidence
    (an explicit stage name, else a fresh report, else the conversation), even when the tier was explicit, so routing
    can use it; None/DEFAULT when there is none. `native`: an explicit integer priority, to pass to vLLM as is.
    """

    tier: Tier
    source: Source
    stage: Stage | None
    stage_source: Source
    reason: str
    native: int | None = None


def resolve_priority(
    explicit_priority: object,
    header_priority: str | None,
    reported: ReportedStage | None,
    now: float,
    ttl: float,
    messages: Sequence[Mapping[str, object]],
    stage_tiers: Mapping[Stage, Tier] = DEFAULT_STAGE_TIERS,
) -> Priority:
    """Tier and stage of one call, first source present: body `priority`, header `X-Priority`, the reported stage
    (fresh within `ttl` seconds), the classifier over `messages`, else warm.

    Values neither source understands (`parse_priority` -> None) count as absent. The classifier runs only when no
    explicit stage name and no fresh report gives the stage. A stage missing from `stage_tiers` maps to warm.
    """
    for value, source in ((explicit_priority, Source.BODY), (header_priority, Source.HEADER)):
        parsed = parse_priority(value, stage_tiers)
        if parsed is None:
            continue
        if parsed.stage is not None:
            return Priority(parsed.tier, source, parsed.stage, source, f"{source} names stage {parsed.stage}")
        stage, stage_source, _ = _stage_evidence(reported, now, ttl, messages)
        return Priority(parsed.tier, source, stage, stage_source, f"{source} priority {value!r}", parsed.native)
    stage, stage_source, reason = _stage_evidence(reported, now, ttl, messages)
    if stage is None:
        return Priority(DEFAULT_TIER, Source.DEFAULT, None, Source.DEFAULT, "no priority, report or conversation")
    return Priority(stage_tiers.get(stage, DEFAULT_TIER), stage_source, stage, stage_source, reason)


def _stage_evidence(
    reported: ReportedStage | None, now: float, ttl: float, messages: Sequence[Mapping[str, object]]
) -> tuple[Stage | None, Source, str]:
    if reported is not None and reported.is_fresh(now, ttl):
        age = max(now - reported.at, 0.0)
        return reported.stage, Source.REPORTED, f"sidecar reported {reported.stage} {age:.1f}s ago"
    found = classify_messages(messages)
    if found is None:
        return None, Source.DEFAULT, "no evidence"
    return found.stage, found.source, found.reason
