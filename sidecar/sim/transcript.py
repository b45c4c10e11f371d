"""What a coding agent knows from its conversation: the tools offered, the calls made, the files and lines seen.

Pure parsing of OpenAI chat messages and tool schemas; the synthetic policy (`agent.py`) decides from this.
Tool names are recognised by their suffix after an optional `<extension>__` prefix (Goose prefixes extension
tools, e.g. `sidecar__read_file`). Paths come from tool results: listings (plain paths or indented trees),
search hits `path:line:text`, pytest's `FAILED tests/test_x.py::test_y`, its `pkg/mod.py:12: in f` frames and
Python tracebacks `File "pkg/mod.py", line 12`. File lines come from reads in `cat -n` form
(`f"{lineno:>6}\\t{text}"`), from the sidecar's `read_file` or a shell `cat -n`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.sim.tokens import content_text

KNOWN_TOOLS = (
    "read_file",
    "list_dir",
    "search",
    "write_file",
    "edit_file",
    "run_tests",
    "run_command",
    "git_status",
    "git_diff",
    "shell",
    "write",
    "edit",
    "tree",
)

_EXT = r"(?:py|pyi|md|rst|txt|toml|cfg|ini|json|ya?ml|js|ts|sh)"
_PATH = re.compile(rf"(?<![\w/.\-])((?:[\w.\-]+/)*[\w\-][\w.\-]*\.{_EXT})(?![\w/])")
_NUMBERED = re.compile(r"^ *(\d+)\t(.*)$")
_FAILED = re.compile(r"^(?:FAILED|ERROR) ((?:[\w.\-]+/)*[\w.\-]+\.py)(?:::[\w\[\]\-.:]+)?", re.M)
_FRAME = re.compile(rf"^((?:[\w.\-]+/)*[\w.\-]+\.{_EXT}):(\d+):", re.M)
_TRACEBACK = re.compile(r'File "([^"]+\.py)", line (\d+)')
_SEARCH_HIT = re.compile(r"^((?:[\w.\-]+/)*[\w.\-]+\.\w+):(\d+):", re.M)
_TREE_GLYPHS = re.compile(r"^[\s│├└─|`\-]*")
_PYTEST_FAIL = re.compile(r"\b\d+ (?:failed|errors?)\b|^(?:FAILED|ERROR) |Traceback \(most recent", re.M)
_PYTEST_PASS = re.compile(r"\b\d+ passed\b|\bno tests ran\b")
_DIFF_FILE = re.compile(r"^diff --git a/(\S+) b/", re.M)
_STATUS_FILE = re.compile(r"^\s*[MADRCU?!]{1,2}\s+(\S+)$", re.M)
_EXIT_STATUS = re.compile(r"^\[exit code (-?\d+)", re.M)
_FAILURE_HEAD = re.compile(r"(?i)(?:(?:tool )?error|failed|refused)[:\s]|no match found|found \d+ matches|\[timed out")
_FAILURE_ANYWHERE = re.compile(r"(?i)is not an allowed command|does not exist|no such file|permission denied")


@dataclass(frozen=True, slots=True)
class Tool:
    """An offered tool: `name` as offered, `kind` its recognised base name (or "" when unknown)."""

    name: str
    kind: str
    params: frozenset[str]


@dataclass(slots=True)
class Step:
    """One tool call the assistant made, with the result the client sent back (None if not yet)."""

    kind: str
    name: str
    args: dict[str, Any]
    result: str | None = None

    @property
    def failed(self) -> bool:
        """A result that reads as an error: the sidecar's ToolError texts, Goose's edit messages, a command's
        non-zero `[exit code N ...]` status line (but a failing test run is a result, not a tool failure)."""
        if self.result is None:
            return False
        head = self.result.lstrip()[:300]
        if _FAILURE_HEAD.match(head) or _FAILURE_ANYWHERE.search(head.split("\n", 1)[0]):
            return True
        status = _EXIT_STATUS.search(head)
        is_tests = self.kind == "run_tests" or "pytest" in str(self.args.get("command", ""))
        return bool(status and status.group(1) != "0" and not is_tests)


@dataclass
class Transcript:
    tools: dict[str, Tool]  # kind -> the first offered tool of that kind
    steps: list[Step]
    task: str  # the first user message
    files: list[str] = field(default_factory=list)  # every path seen, in first-seen order
    lines: dict[str, dict[int, str]] = field(default_factory=dict)  # path -> lineno -> text, latest read
    last_test_failed: bool | None = None
    failing_tests: list[str] = field(default_factory=list)  # test files named by the last failing run
    failing_sources: list[str] = field(default_factory=list)  # non-test files in its tracebacks
    edits: list[tuple[str, str]] = field(default_factory=list)  # (path, before) of every edit made
    imports: dict[str, list[str]] = field(default_factory=dict)  # path read -> local module files it imports
    committed: bool = False

    def has(self, *kinds: str) -> bool:
        return any(k in self.tools for k in kinds)

    def tool(self, *kinds: str) -> Tool | None:
        for kind in kinds:
            if kind in self.tools:
                return self.tools[kind]
        return None


def tool_kind(name: str) -> str:
    """`sidecar__read_file` -> `read_file`; unknown names give ""."""
    base = name.rsplit("__", 1)[-1]
    return base if base in KNOWN_TOOLS else ""


def parse_tools(tools: Sequence[Any] | None) -> dict[str, Tool]:
    found: dict[str, Tool] = {}
    for tool in tools or ():
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        params = function.get("parameters")
        props = params.get("properties") if isinstance(params, Mapping) else None
        kind = tool_kind(function["name"])
        if kind and kind not in found:
            names = frozenset(props) if isinstance(props, Mapping) else frozenset()
            found[kind] = Tool(function["name"], kind, names)
    return found


def parse_transcript(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> Transcript:
    """Replay the conversation, collecting steps and everything learned from their results."""
    offered = parse_tools(tools)
    steps: list[Step] = []
    by_call_id: dict[str, Step] = {}
    task = ""
    for message in messages:
        role = message.get("role")
        if role == "user" and not task:
            task = content_text(message.get("content"))
        elif role == "assistant":
            for call in message.get("tool_calls") or []:
                if not isinstance(call, Mapping):
                    continue
                function = call.get("function") or {}
                name = str(function.get("name", ""))
                step = Step(tool_kind(name), name, _arguments(function.get("arguments")))
                steps.append(step)
                by_call_id[str(call.get("id", ""))] = step
        elif role == "tool":
            answered = by_call_id.get(str(message.get("tool_call_id", "")))
            if answered is None and steps and steps[-1].result is None:
                answered = steps[-1]
            if answered is not None:
                answered.result = content_text(message.get("content"))
    transcript = Transcript(offered, steps, task)
    for step in steps:
        _learn(transcript, step)
    return transcript


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def is_test_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith("test_") or name.endswith("_test.py") or "/tests/" in f"/{path}"


def _see(transcript: Transcript, path: str) -> None:
    path = path.removeprefix("./")
    if path and path not in transcript.files:
        transcript.files.append(path)


def _command(step: Step) -> str:
    return str(step.args.get("command", ""))


def _learn(t: Transcript, step: Step) -> None:
    result = step.result or ""
    kind = step.kind
    command = _command(step)
    if kind == "shell" and re.match(r"\s*cat -n \S+", command):
        kind = "read_file"
        step.args.setdefault("path", command.split()[2])
    elif kind in ("shell", "run_command") and "pytest" in command:
        kind = "run_tests"
    if kind in ("edit_file", "edit", "write_file", "write") and not step.failed:
        path = str(step.args.get("path", ""))
        _see(t, path)
        before, after = str(step.args.get("before", "")), str(step.args.get("after", ""))
        t.edits.append((path, before))
        _apply_edit(t, path.removeprefix("./"), before, after, whole=kind in ("write_file", "write"))
        return
    if kind in ("shell", "run_command") and "git commit" in command and not step.failed:
        t.committed = True
        return
    if step.result is None or step.failed:
        return
    if kind == "read_file":
        path = str(step.args.get("path", "")).removeprefix("./")
        _see(t, path)
        numbered = {}
        for line in result.splitlines():
            match = _NUMBERED.match(line)
            if match:
                numbered[int(match.group(1))] = match.group(2)
        if numbered:
            t.lines[path] = {**t.lines.get(path, {}), **numbered}
            if path.endswith(".py"):
                t.imports[path] = _local_imports(t, numbered.values())
        return
    if kind == "run_tests":
        _learn_tests(t, result)
        return
    if kind in ("list_dir", "tree"):
        for path in _listing_paths(result, str(step.args.get("path", "") or "")):
            _see(t, path)
        return
    if kind == "git_diff" or (kind in ("shell", "run_command") and command.strip().startswith("git diff")):
        for match in _DIFF_FILE.finditer(result):
            _see(t, match.group(1))
        return
    if kind == "git_status":
        for match in _STATUS_FILE.finditer(result):
            _see(t, match.group(1))
        return
    if kind == "shell" and command.strip().startswith("ls -R"):
        for path in _ls_recursive_paths(result):
            _see(t, path)
        return
    for match in _SEARCH_HIT.finditer(result):
        _see(t, match.group(1))
    for match in _PATH.finditer(result):
        _see(t, match.group(1))


def _apply_edit(t: Transcript, path: str, before: str, after: str, whole: bool) -> None:
    """Keep what was read in step with an edit that keeps the line count; otherwise forget the file's lines."""
    lines = t.lines.get(path)
    if lines is None:
        return
    old, new = before.split("\n"), after.split("\n")
    numbers = sorted(lines)
    if not whole and len(old) == len(new):
        for lineno in numbers:
            run = [lines.get(lineno + k) for k in range(len(old))]
            if run == old:
                for k, text in enumerate(new):
                    lines[lineno + k] = text
                return
    del t.lines[path]


_NOT_LOCAL = frozenset({"pytest", "hypothesis", "numpy", "pandas", "requests", "httpx", "pydantic", "attr", "attrs"})
_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))")


def _local_imports(t: Transcript, lines: Iterable[str]) -> list[str]:
    """Files of the modules a file imports, when the conversation has shown them (or their package)."""
    found = []
    for line in lines:
        match = _IMPORT.match(line)
        if not match:
            continue
        module = (match.group(1) or match.group(2)).lstrip(".")
        top = module.split(".", 1)[0]
        if not module or top in sys.stdlib_module_names or top in _NOT_LOCAL:
            continue
        file, package = module.replace(".", "/") + ".py", module.replace(".", "/") + "/__init__.py"
        known = [c for c in (file, package) if c in t.files]
        # Unknown yet: guess the module file (a wrong guess is a failed read the agent recovers from).
        candidate = known[0] if known else file
        found.append(candidate)
        _see(t, candidate)
    return found


def _ls_recursive_paths(text: str) -> list[str]:
    found, directory = [], ""
    for line in text.splitlines():
        line = line.strip()
        if line.endswith(":"):
            directory = line[:-1].removeprefix("./").removeprefix(".")
        elif line and _PATH.fullmatch(line):
            found.append(f"{directory}/{line}" if directory else line)
    return found


def _learn_tests(t: Transcript, output: str) -> None:
    status = _EXIT_STATUS.search(output[:500])
    if status is not None:
        failed = status.group(1) not in ("0", "5")  # pytest: 5 = no tests collected
    else:
        failed = bool(_PYTEST_FAIL.search(output)) or not _PYTEST_PASS.search(output)
    t.last_test_failed = failed
    t.failing_tests = []
    t.failing_sources = []
    if not failed:
        return
    for match in _FAILED.finditer(output):
        _add_unique(t.failing_tests, match.group(1))
    frames = [m.group(1) for m in _FRAME.finditer(output)] + [m.group(1) for m in _TRACEBACK.finditer(output)]
    for path in frames:
        if path.startswith("/") or "site-packages" in path:
            continue
        _add_unique(t.failing_tests if is_test_file(path) else t.failing_sources, path)
    for path in t.failing_tests + t.failing_sources:
        _see(t, path)


def _add_unique(items: list[str], item: str) -> None:
    item = item.removeprefix("./")
    if item not in items:
        items.append(item)


def _listing_paths(text: str, root: str) -> list[str]:
    """Paths in a listing: workspace-relative paths as printed, or names under indented (tree-style) directories.

    Only the first word of a line counts (sizes or notes may follow); a name ending in `/` is a directory.
    """
    found: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, full directory path)
    base = root.strip().removeprefix("./").strip("/.")
    for raw in text.splitlines():
        stripped = _TREE_GLYPHS.sub("", raw)
        indent = len(raw) - len(stripped)
        words = stripped.split()
        if not words:
            continue
        name = words[0].removeprefix("./")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else base
        is_dir = name.endswith("/")
        name = name.rstrip("/")
        if not name or (not is_dir and not _PATH.fullmatch(name)):
            continue
        full = (
            name if not parent or name.startswith(parent + "/") or ("/" in name and not stack) else f"{parent}/{name}"
        )
        if is_dir:
            stack.append((indent, full))
        else:
            found.append(full)
    return found
