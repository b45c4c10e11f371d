"""A small real workspace and tool executor for driving the synthetic agent in tests.

Tools run for real on files in a temporary directory (pytest in a subprocess, git for commits); `read_file` and
`edit_file` use the sidecar's own formats (`sidecar.core.toolformat`) so the agent parses what it will see.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from sidecar.core.toolformat import EditError, apply_edit, edit_message, format_read

CALC = '''"""Arithmetic helpers."""


def add(a, b):
    return a - b  # sim-fix: return a + b


def mul(a, b):
    return a * b


def halve(x):
    return x // 2  # sim-fix: return x / 2
'''

TEST_CALC = """from pkg.calc import add, halve, mul


def test_add():
    assert add(2, 3) == 5


def test_mul():
    assert mul(2, 3) == 6


def test_halve():
    assert halve(3) == 1.5
"""

# pytest's summary ends "in 0.52s": the one part of a tool's text that depends on the machine's load, and the
# synthetic agent's draws depend on the text it reads.
PYTEST_DURATION = re.compile(r" in \d+(?:\.\d+)?s\b")

SIDECAR_TOOLS = {
    "read_file": ["path", "start_line", "end_line"],
    "list_dir": ["path", "depth"],
    "search": ["pattern", "path", "glob", "max_results"],
    "write_file": ["path", "content"],
    "edit_file": ["path", "before", "after"],
    "run_tests": ["target"],
    "run_command": ["command"],
    "git_status": [],
    "git_diff": [],
}
GOOSE_TOOLS = {"shell": ["command"], "write": ["path", "content"], "edit": ["path", "before", "after"]}
GOOSE_TOOLS["tree"] = ["path", "depth"]


def tool_schemas(tools: dict[str, list[str]], prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": f"{prefix}{name}",
                "description": f"The {name} tool.",
                "parameters": {"type": "object", "properties": {p: {"type": "string"} for p in params}},
            },
        }
        for name, params in tools.items()
    ]


def make_project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "calc.py").write_text(CALC)
    (root / "tests" / "test_calc.py").write_text(TEST_CALC)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


class Executor:
    """Runs one tool call against `root` and returns the text the model sees."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str, arguments: str) -> str:
        kind = name.rsplit("__", 1)[-1]
        args = json.loads(arguments)
        try:
            return getattr(self, f"_{kind}")(**args)
        except (OSError, EditError, ValueError) as exc:
            return f"Error: {exc}"

    def _read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        return format_read(path, (self.root / path).read_text(), start_line, end_line)

    def _list_dir(self, path: str = ".", depth: int = 2) -> str:
        base = self.root / path
        lines = []
        for item in sorted(base.rglob("*")):
            rel = item.relative_to(self.root)
            if ".git" in rel.parts or "__pycache__" in rel.parts or ".pytest_cache" in rel.parts:
                continue
            if len(item.relative_to(base).parts) <= int(depth):
                lines.append(f"{rel}/" if item.is_dir() else str(rel))
        return "\n".join([f"./ ({len(lines)} entries, depth {depth})", *lines])

    _tree = _list_dir

    def _search(self, pattern: str, path: str = ".", glob: str | None = None, max_results: int | None = None) -> str:
        hits = []
        for file in sorted((self.root / path).rglob("*.py")):
            for n, line in enumerate(file.read_text().splitlines(), 1):
                if re.search(pattern, line):
                    hits.append(f"{file.relative_to(self.root)}:{n}:{line}")
        return "\n".join(hits) or f"No matches for {pattern!r}"

    def _edit_file(self, path: str, before: str, after: str) -> str:
        file = self.root / path
        file.write_text(apply_edit(file.read_text(), before, after))
        return edit_message(path, before, after)

    _edit = _edit_file

    def _write_file(self, path: str, content: str) -> str:
        (self.root / path).write_text(content)
        return f"Wrote {path}"

    _write = _write_file

    def _run_tests(self, target: str | None = None) -> str:
        return self._run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])

    def _run_command(self, command: str) -> str:
        if command.startswith("git commit"):
            return self._run(["git", "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-qam", "sim"])
        return f"Error: '{command}' is not an allowed command. Allowed: 'git commit'"

    def _shell(self, command: str) -> str:
        if "pytest" in command:
            return self._run_tests()
        if command.startswith("cat -n "):
            text = (self.root / command.split()[2]).read_text()
            return "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(text.splitlines(), 1))
        if "git commit" in command:
            subprocess.run(["git", "add", "-A"], cwd=self.root, check=True)
            return self._run_command("git commit")
        return self._run(["sh", "-c", command])

    def _git_status(self) -> str:
        return self._run(["git", "status", "--short"])

    def _git_diff(self) -> str:
        return self._run(["git", "diff"])

    def _run(self, argv: list[str]) -> str:
        env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # a plain pytest starts faster
        done = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=60, env=env)
        output = PYTEST_DURATION.sub(" in 0.10s", f"{done.stdout}{done.stderr}")  # the text must not depend on load
        return f"$ {' '.join(argv)}\n[exit code {done.returncode} after 0.10 s]\n{output}"
