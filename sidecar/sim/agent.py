"""The synthetic coding agent: from a conversation and the offered tools, the next step a coding agent takes.

Contract:
- Deterministic: the same transcript and dice give the same action (the dice are keyed by the request).
- A tool call only ever names an offered tool, with arguments taken from what the conversation has shown:
  paths from listings, search hits, failing tests and tracebacks; an edit's `before` is an exact line read
  from that file (`cat -n` form), so it applies. A line carrying `# sim-fix: <replacement>` is replaced by the
  replacement (indentation kept, marker gone); otherwise an edit only appends a comment to a `def`/`class`
  line, which keeps Python valid and its meaning unchanged.
- Next steps follow a transition table by the last step's outcome. After an edit and after a failing test run
  it is the seed's measured table (edit -> run tests 50%, read same file 20%, edit again 15%; tests fail ->
  read source 35%, read test 25%, edit fix 25%); the rest (after a listing, a read, a search) is ours.
- Episodes end: a final text (no tool call) after tests pass with nothing left to do, after a commit, when a
  commit is refused, or once `max_steps` tool calls have been made.
- Parallel calls (`parallel_calls`, off unless a profile asks for them): a share of answers carries, after the
  decided call, further calls that are independent of it and of each other: reads of other files (not read
  yet, else not read since the last change or test run), never the file the decided call touches. Only with a
  read, listing, search, test run or edit; never with a commit, a diff or a notes file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sidecar.sim.text import Dice
from sidecar.sim.transcript import Step, Transcript, is_test_file, tool_kind

MARKER = "# sim-fix:"
TEST_COMMAND = "python -m pytest -q"
# Calls per answer when an answer has several: 2, then each further one with probability 1/2, at most this many.
# TraceLab's real sessions have a median of 2 calls per request and a mean of 10.8 (calibration.md); that tail
# needs more unread files than a sample project has, so only the median is matched.
MAX_PARALLEL = 6
_PARALLEL_WITH = frozenset({"read_file", "list_dir", "tree", "search", "run_tests", "edit_file", "edit"})
_IDENT = re.compile(r"::(?:test_)?(\w+)")


@dataclass(frozen=True, slots=True)
class Action:
    """One step: a tool call (`tool` is the offered name) or, with `tool` None, a final text."""

    stage: str
    intro: str
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fix:
    path: str
    lineno: int
    before: str
    after: str


def decide(t: Transcript, dice: Dice, max_steps: int = 40) -> Action:
    """The next action for this transcript (see the module contract)."""
    return _novel(t, _decide(t, dice, max_steps), dice)


def _novel(t: Transcript, action: Action, dice: Dice) -> Action:
    """Replace a read, search or listing that repeats one made since the last change or test run.

    Such a call cannot teach the agent anything new; a real agent moves on, and so must ours to make progress.
    """
    if action.tool is None or action.stage == "code_edit":
        return action
    since_change: list[Step] = []
    for step in reversed(t.steps):
        if _effective_kind(step) in ("run_tests", "edit_file", "edit", "write_file", "write"):
            break
        since_change.append(step)
    repeats = any(s.name == action.tool and s.args == action.arguments for s in since_change)
    if not repeats:
        return action
    if t.steps and _effective_kind(t.steps[-1]) != "run_tests" and t.edits:
        return _run_tests(t, "test_analyze", "Let me run the tests again.")
    alternative = _read_unread(t, dice, "explore")
    if alternative is not None and not any(
        s.name == alternative.tool and s.args == alternative.arguments for s in since_change
    ):
        return alternative
    if not any(_effective_kind(s) in ("list_dir", "tree") for s in since_change) and t.has("list_dir", "tree", "shell"):
        return _list(t)
    return _run_tests(t, "test_analyze", "Let me run the tests again.")


def _decide(t: Transcript, dice: Dice, max_steps: int) -> Action:
    if len(t.steps) >= max_steps:
        return Action("plan", "I have used my step budget for this task, so I am stopping here.")
    if t.committed:
        return _final_after_commit(t)
    if not t.steps:
        return _start(t, dice)
    last = t.steps[-1]
    kind = _effective_kind(last)
    if last.failed:
        return _recover(t, last, kind, dice)
    if kind == "run_tests":
        return _after_tests(t, dice)
    if kind in ("edit_file", "edit", "write_file", "write"):
        return _after_edit(t, last, dice)
    if kind == "read_file":
        return _after_read(t, last, dice)
    if kind in ("list_dir", "tree"):
        return _after_listing(t, dice)
    if kind == "search":
        return _after_search(t, dice)
    if kind in ("git_status", "git_diff"):
        return _commit(t) if t.last_test_failed is False else _run_tests(t, "code_edit")
    return _run_tests(t, "test_analyze")


def parallel_calls(t: Transcript, action: Action, dice: Dice, share: float) -> tuple[Action, ...]:
    """`action`, and for a `share` of answers (0..1) up to `MAX_PARALLEL - 1` independent reads that go with it
    (module contract): files not read yet first (sources before tests), then files not read since the last
    change or test run, then a listing if there was none. With `share` 0 it is `(action,)` and draws no dice."""
    if share <= 0 or action.tool is None or dice.uniform("parallel") >= share:
        return (action,)
    if tool_kind(action.tool) not in _PARALLEL_WITH or not t.has("read_file"):
        return (action,)
    wanted = 1
    while wanted < MAX_PARALLEL - 1 and dice.uniform(f"parallel-{wanted}") < 0.5:
        wanted += 1
    touched = str(action.arguments.get("path", "")).removeprefix("./")
    seen = _read_paths(t)
    recent = _read_since_change(t) | {touched}
    files = [p for p in t.files if p.endswith(".py") and not p.endswith("__init__.py") and p not in recent]
    unread = sorted((p for p in files if p not in seen), key=is_test_file)  # as `_read_unread` prefers them
    again = [p for p in files if p in seen]
    extra = [_read(t, path, action.stage, f"Let me read {path}.") for path in [*unread, *again][:wanted]]
    listed = any(_effective_kind(s) in ("list_dir", "tree") for s in t.steps)
    if len(extra) < wanted and not listed and t.has("list_dir") and tool_kind(action.tool) != "list_dir":
        extra.append(_list(t))  # an agent that has not seen the layout yet looks at it meanwhile
    return (action, *extra)


def _read_since_change(t: Transcript) -> set[str]:
    """Files read since the last edit, write or test run (reading one again would teach nothing new)."""
    paths: set[str] = set()
    for step in reversed(t.steps):
        kind = _effective_kind(step)
        if kind in ("run_tests", "edit_file", "edit", "write_file", "write"):
            break
        if kind == "read_file":
            paths.add(str(step.args.get("path", "")).removeprefix("./"))
    return paths


def text_stage(text: str) -> str:
    """Stage of a plain chat request, by keywords of its last user message (the seed's classifier)."""
    low = text.lower()
    if "commit" in low:
        return "commit_msg"
    if "test" in low and ("fail" in low or "error" in low):
        return "test_analyze"
    if any(w in low for w in ("fix", "bug", "edit", "implement", "refactor")):
        return "code_edit"
    if any(w in low for w in ("doc", "readme", "explain")):
        return "docs"
    if "plan" in low:
        return "plan"
    return "explore"


def pending_fixes(t: Transcript) -> list[Fix]:
    """Marker lines seen in reads and not yet fixed, in the order files were seen."""
    fixes = []
    for path in sorted(t.lines, key=lambda p: t.files.index(p) if p in t.files else len(t.files)):
        lines = t.lines[path]
        for lineno in sorted(lines):
            text = lines[lineno]
            if MARKER not in text:
                continue
            code = text[: text.index(MARKER)]
            if code.lstrip().startswith("#"):
                continue  # a marker inside a comment line is not a planted bug
            indent = text[: len(text) - len(text.lstrip())]
            replacement = text[text.index(MARKER) + len(MARKER) :].strip()
            before, after = _unique(lines, lineno, text, indent + replacement)
            fixes.append(Fix(path, lineno, before, after))
    return fixes


def _unique(lines: dict[int, str], lineno: int, before: str, after: str) -> tuple[str, str]:
    """Extend a one-line edit with following lines until `before` occurs once among the lines read."""
    joined = "\n".join(lines[n] for n in sorted(lines))
    nxt = lineno + 1
    while joined.count(before) > 1 and nxt in lines:
        before, after = f"{before}\n{lines[nxt]}", f"{after}\n{lines[nxt]}"
        nxt += 1
    return before, after


# --- steps ----------------------------------------------------------------------------------------------


def _effective_kind(step: Step) -> str:
    command = str(step.args.get("command", ""))
    if step.kind in ("shell", "run_command"):
        if command.lstrip().startswith("cat -n"):
            return "read_file"
        if "pytest" in command:
            return "run_tests"
        if command.lstrip().startswith(("ls", "find")):
            return "list_dir"
        if command.lstrip().startswith(("rg", "grep")):
            return "search"
        if command.lstrip().startswith("git diff"):
            return "git_diff"
    return step.kind


def _start(t: Transcript, dice: Dice) -> Action:
    if dice.uniform("start") < 0.65 and t.has("list_dir", "tree", "shell"):
        return _list(t)
    return _run_tests(t, "explore", "Let me run the test suite first to see what is failing.")


def _after_tests(t: Transcript, dice: Dice) -> Action:
    if not t.last_test_failed:
        return _after_pass(t, dice)
    r = dice.uniform("after_fail")
    fixes = pending_fixes(t)
    if r < 0.35 or (r >= 0.85 and not t.has("search", "shell")):
        return _read_source(t, dice) or _read_test(t) or _fix_or_read(t, fixes, dice)
    if r < 0.60:
        return _read_test(t) or _read_source(t, dice) or _fix_or_read(t, fixes, dice)
    if r < 0.85:
        return _fix_or_read(t, fixes, dice)
    target = _failing_function(t)
    if target:
        return _search(t, f"def {target}", "test_analyze")
    return _fix_or_read(t, fixes, dice)


def _after_pass(t: Transcript, dice: Dice) -> Action:
    if not t.edits:
        return Action("plan", "All tests pass and nothing needs to change, so the task is done.")
    r = dice.uniform("after_pass")
    previous = _effective_kind(t.steps[-2]) if len(t.steps) > 1 else ""
    if r < 0.25 and previous != "git_diff" and t.has("git_diff"):
        return _call(t, "git_diff", {}, "commit_msg", "The tests pass. Let me review the diff before committing.")
    if r < 0.40 and t.has("write_file", "write") and not any(p.endswith(".md") for p, _ in t.edits):
        return _write_notes(t, dice)
    return _commit(t)


def _after_edit(t: Transcript, last: Step, dice: Dice) -> Action:
    path = str(last.args.get("path", ""))
    r = dice.uniform("after_edit")
    fixes = pending_fixes(t)
    if r < 0.50:
        return _run_tests(t, "code_edit", "Now let me run the tests to check the change.")
    if r < 0.70 and path and not path.endswith(".md"):
        return _read(t, path, "code_edit", f"Let me re-read {path} to confirm the edit.")
    if r < 0.85:
        same = [f for f in fixes if f.path == path] or fixes
        if same:
            return _edit(t, same[0], "There is another planted bug to fix.")
        return _run_tests(t, "code_edit", "Now let me run the tests to check the change.")
    if t.has("git_diff"):
        return _call(t, "git_diff", {}, "code_edit", "Let me look at the diff so far.")
    return _run_tests(t, "code_edit", "Now let me run the tests to check the change.")


def _after_read(t: Transcript, last: Step, dice: Dice) -> Action:
    path = str(last.args.get("path", "")).removeprefix("./")
    fixes = pending_fixes(t)
    r = dice.uniform("after_read")
    if fixes:
        here = [f for f in fixes if f.path == path] or fixes
        if r < 0.80:
            return _edit(t, here[0], f"I see the bug in {here[0].path}; fixing it.")
        return _run_tests(t, "test_analyze", "Let me run the tests to see how this code is exercised.")
    if t.last_test_failed is False and t.edits:
        return _commit(t)
    if t.last_test_failed is None and r < 0.45:
        return _run_tests(t, "explore", "Let me run the tests to see what is failing.")
    if r < 0.80:
        action = _read_source(t, dice) if t.last_test_failed else _read_unread(t, dice, "explore")
        if action:
            return action
    if r < 0.90 and t.has("search", "shell"):
        target = _failing_function(t)
        stem = path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
        return _search(t, f"def {target}" if target else stem or "def ", "explore")
    if t.last_test_failed is None and dice.uniform("touch") < 0.5:
        edit = _comment_edit(t, path)
        if edit:
            return edit
    return _run_tests(t, "test_analyze", "Let me run the tests now.")


def _after_listing(t: Transcript, dice: Dice) -> Action:
    r = dice.uniform("after_listing")
    if r < 0.60:
        action = _read_unread(t, dice, "explore")
        if action:
            return action
    if r < 0.90 or not t.has("search", "shell"):
        return _run_tests(t, "explore", "Let me run the test suite to see what is failing.")
    return _search(t, "def ", "explore")


def _after_search(t: Transcript, dice: Dice) -> Action:
    if dice.uniform("after_search") < 0.75:
        action = _read_unread(t, dice, "explore") or _read_source(t, dice)
        if action:
            return action
    return _run_tests(t, "explore", "Let me run the tests.")


def _recover(t: Transcript, last: Step, kind: str, dice: Dice) -> Action:
    """A tool reported an error: re-read before editing again, give up on a refused commit."""
    command = str(last.args.get("command", ""))
    if "git commit" in command:
        return Action("commit_msg", "The tests pass; I could not commit from here, so I leave the change staged.")
    if kind in ("edit_file", "edit"):
        path = str(last.args.get("path", ""))
        t.lines.pop(path, None)
        return _read(t, path, "code_edit", f"The edit did not apply; let me re-read {path}.")
    if kind == "read_file":
        return _read_unread(t, dice, "explore") or _list(t)
    return _run_tests(t, "test_analyze", "Let me run the tests instead.")


def _final_after_commit(t: Transcript) -> Action:
    files = sorted({p for p, _ in t.edits if not p.endswith(".md")})
    return Action("commit_msg", f"Done: the tests pass and the fix to {', '.join(files) or 'the code'} is committed.")


# --- tool calls -----------------------------------------------------------------------------------------


def _call(t: Transcript, kind: str, args: dict[str, Any], stage: str, intro: str) -> Action:
    tool = t.tool(kind)
    assert tool is not None
    if tool.params:
        args = {k: v for k, v in args.items() if k in tool.params}
    return Action(stage, intro, tool.name, args)


def _shell(t: Transcript, command: str, stage: str, intro: str) -> Action | None:
    if t.has("shell"):
        return _call(t, "shell", {"command": command}, stage, intro)
    if t.has("run_command"):
        return _call(t, "run_command", {"command": command}, stage, intro)
    return None


def _list(t: Transcript) -> Action:
    intro = "Let me look at the layout of the project."
    if t.has("list_dir"):
        return _call(t, "list_dir", {"path": ".", "depth": 3}, "explore", intro)
    if t.has("tree"):
        return _call(t, "tree", {"path": ".", "depth": 3}, "explore", intro)
    return _shell(t, "ls -R", "explore", intro) or _run_tests(t, "explore")


def _run_tests(t: Transcript, stage: str, intro: str = "Let me run the tests.") -> Action:
    if t.has("run_tests"):
        return _call(t, "run_tests", {}, stage, intro)
    action = _shell(t, TEST_COMMAND, stage, intro)
    if action:
        return action
    return Action("plan", "I cannot run the tests with the tools I have, so I stop here.")


def _read(t: Transcript, path: str, stage: str, intro: str) -> Action:
    if t.has("read_file"):
        return _call(t, "read_file", {"path": path}, stage, intro)
    return _shell(t, f"cat -n {path}", stage, intro) or _run_tests(t, stage)


def _search(t: Transcript, pattern: str, stage: str) -> Action:
    intro = f"Let me search the code for {pattern.strip()}."
    if t.has("search"):
        return _call(t, "search", {"pattern": pattern, "path": "."}, stage, intro)
    return _shell(t, f"rg -n '{pattern}'", stage, intro) or _run_tests(t, stage)


def _edit(t: Transcript, fix: Fix, intro: str) -> Action:
    args = {"path": fix.path, "before": fix.before, "after": fix.after}
    if t.has("edit_file"):
        return _call(t, "edit_file", args, "code_edit", intro)
    if t.has("edit"):
        return _call(t, "edit", args, "code_edit", intro)
    return _run_tests(t, "code_edit")


def _comment_edit(t: Transcript, path: str) -> Action | None:
    """A meaning-preserving edit: a comment after a one-line `def`/`class` header that has none yet."""
    if not path.endswith(".py") or not t.has("edit_file", "edit"):
        return None
    lines = t.lines.get(path, {})
    for lineno in sorted(lines):
        text = lines[lineno]
        header = text.lstrip().startswith(("def ", "class ", "async def "))
        if header and text.rstrip().endswith(":") and "#" not in text and "'" not in text and '"' not in text:
            before, after = _unique(lines, lineno, text, text.rstrip() + "  # reviewed")
            return _edit(t, Fix(path, lineno, before, after), f"A note in {path} for the next reader.")
    return None


def _commit(t: Transcript) -> Action:
    files = sorted({p for p, _ in t.edits if not p.endswith(".md")})
    message = f"Fix failing tests in {', '.join(files)}" if files else "Fix failing tests"
    intro = "The tests pass. Let me commit the change."
    if t.has("shell"):
        return _call(t, "shell", {"command": f"git add -A && git commit -q -m '{message}'"}, "commit_msg", intro)
    if t.has("run_command"):
        return _call(t, "run_command", {"command": f"git commit -q -am '{message}'"}, "commit_msg", intro)
    return Action("commit_msg", f"The tests pass. Suggested commit message: {message}.")


def _write_notes(t: Transcript, dice: Dice) -> Action:
    files = sorted({p for p, _ in t.edits})
    content = "# Notes\n\n" + "".join(f"- Fixed a bug in `{p}`.\n" for p in files)
    kind = "write_file" if t.has("write_file") else "write"
    return _call(t, kind, {"path": "NOTES.md", "content": content}, "docs", "Let me note what changed.")


# --- choosing files -------------------------------------------------------------------------------------


def _read_paths(t: Transcript) -> set[str]:
    return {str(s.args.get("path", "")).removeprefix("./") for s in t.steps if _effective_kind(s) == "read_file"}


def _read_unread(t: Transcript, dice: Dice, stage: str) -> Action | None:
    seen = _read_paths(t)
    sources = [p for p in t.files if p.endswith(".py") and not is_test_file(p) and p not in seen]
    sources = [p for p in sources if not p.endswith("__init__.py")] or sources
    tests = [p for p in t.files if p.endswith(".py") and is_test_file(p) and p not in seen]
    pool = sources or tests
    if not pool:
        return None
    path = pool[0] if dice.uniform("pick") < 0.6 else dice.choice("pick_any", pool)
    return _read(t, path, stage, f"Let me read {path}.")


def _read_source(t: Transcript, dice: Dice) -> Action | None:
    """The source behind the failure: a traceback's file, else a module the failing tests import."""
    seen = _read_paths(t)
    imported = [m for test in t.failing_tests for m in t.imports.get(test, ()) if not is_test_file(m)]
    for path in [*t.failing_sources, *imported]:
        if path not in seen:
            return _read(t, path, "test_analyze", f"The failure points into {path}; let me read it.")
    action = _read_unread(t, dice, "test_analyze")
    if action is None and t.failing_sources:
        path = t.failing_sources[0]
        return _read(t, path, "test_analyze", f"Let me read {path} again.")
    return action


def _read_test(t: Transcript) -> Action | None:
    if not t.failing_tests:
        return None
    seen = _read_paths(t)
    path = next((p for p in t.failing_tests if p not in seen), t.failing_tests[0])
    return _read(t, path, "test_analyze", f"Let me read the failing test in {path}.")


def _fix_or_read(t: Transcript, fixes: list[Fix], dice: Dice) -> Action:
    if fixes:
        preferred = [f for f in fixes if f.path in t.failing_sources] or fixes
        return _edit(t, preferred[0], f"The failing test points at {preferred[0].path}; fixing the bug.")
    return _read_source(t, dice) or _read_test(t) or _list(t)


def _failing_function(t: Transcript) -> str | None:
    """The function a failing test is named after (`tests/test_x.py::test_add` -> `add`)."""
    return next((m.group(1) for name in _failing_ids(t) for m in [_IDENT.search(name)] if m), None)


def _failing_ids(t: Transcript) -> list[str]:
    for step in reversed(t.steps):
        if _effective_kind(step) == "run_tests" and step.result:
            return re.findall(r"^FAILED (\S+)", step.result, re.M)
    return []
