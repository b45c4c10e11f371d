"""Every sidecar tool's arguments fuzzed through the real MCP client (hypothesis), on a hostile workspace.

Each generated call must come back as a result or as an `isError` result with a message (never an exception in
the client, never a hang), no output may contain the text of a file outside the workspace, and at the end
nothing outside the workspace changed (fingerprinted before and after, see `workspace.py`).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from tests.reliability.counts import record
from tests.reliability.test_fuzz_core import json_values, scalars
from tests.reliability.workspace import SENTINEL, make_workspace, outside_state

CALL_TIMEOUT_S = 20.0


class Hostile:
    def __init__(self, base: Path, ws: Path, sidecar: Sidecar) -> None:
        self.base, self.ws, self.sidecar = base, ws, sidecar
        self.seen: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"Hostile({self.ws})"


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[Hostile]:
    ws = make_workspace(tmp_path)
    settings_ = SidecarSettings(
        workspace=ws,
        test_command=f"{sys.executable} -c pass",
        test_timeout_s=10,
        # Commands whose arguments cannot read or write through a symlink (see the adversarial table for those).
        # `git log *` (the README's example) with the sidecar's hardened git: its arguments must not write into
        # .git or outside, nor run a program (checked below: .git/config and everything outside unchanged).
        allow_commands=["echo *", "git status", "python3 -c pass", "git log *"],
        command_timeout_s=10,
        output_max_chars=2000,
        read_max_chars=2000,
    )
    before = outside_state(tmp_path, ws)
    git_config = (ws / ".git" / "config").read_bytes()
    hooks = sorted(p.name for p in (ws / ".git" / "hooks").iterdir())
    async with Sidecar(settings_, env={}) as sidecar:
        value = Hostile(tmp_path, ws, sidecar)
        yield value
    assert outside_state(tmp_path, ws) == before, "something outside the workspace changed"
    assert (ws / ".git" / "config").read_bytes() == git_config, "run_command wrote into .git"
    assert sorted(p.name for p in (ws / ".git" / "hooks").iterdir()) == hooks, "a hook appeared"
    record("fuzz MCP tool arguments", value.seen)


def path_values(base: str) -> st.SearchStrategy[str]:
    ws = f"{base}/ws"
    fixed = [
        "README.md", "pkg/calc.py", ".", "", " ", "..", "../secret.txt", "/etc/passwd", f"{ws}/pkg/calc.py", ws,
        f"{base}/secret.txt", f"{base}/ws-evil/secret.txt", f"{ws}-evil/secret.txt", "link_out", "dir_out",
        "dir_out/secret.txt", "link_in", "pkg/../../secret.txt", "pkg/./calc.py", "a\x00b", "~/x", "~root",
        "file:///etc/passwd", "-rf", "--help", ".git/config", ".git", "blob.bin", "x" * 5000, "ñame.txt",
        "new/dir/file.txt", "pkg//calc.py", "pkg/calc.py/", "\\..\\secret.txt", "%2e%2e/secret.txt",
        "tests/test_calc.py::test_ok", "tests", "pkg/calc.py::x", "link_out/x", ".GIT/config", ".g\u200cit/x",
        "GIT~1/config", ".git./config", "@args.txt", "@tests/test_calc.py",
    ]  # fmt: skip
    good = st.sampled_from(["README.md", "pkg/calc.py", "link_in", "new/dir/file.txt", f"{ws}/pkg/calc.py", "tests",
                            "pkg", ".", "tests/test_calc.py"])  # fmt: skip
    hostile = st.sampled_from(fixed) | st.text(max_size=12) | st.lists(st.sampled_from(fixed), max_size=3).map("/".join)
    return st.one_of(good, good, hostile, hostile)


def arguments(base: str) -> dict[str, st.SearchStrategy[Any]]:
    wrong = scalars | json_values
    paths = st.one_of(path_values(base), path_values(base), path_values(base), wrong)
    lines = st.one_of(st.integers(1, 10), st.integers(1, 10), st.integers(-3, 10) | st.integers(), wrong)
    text = st.one_of(st.text(max_size=30), st.sampled_from(["def add", "a + b", "\x00", "", "\n"]), wrong)
    patterns = st.sampled_from(["def", "add|sub", "(", "[", "a{1,2}", ".*", "(?<=a)b", "(?P<x>a)(?P=x)", "\\",
                                "^$", "x" * 200, "é", "\x00"]) | st.text(max_size=10) | wrong  # fmt: skip
    commands = st.sampled_from(
        [
            "echo hi",
            "echo ../secret.txt",
            "echo $(cat /etc/passwd)",
            "git status",
            "git status --porcelain",
            "python3 -c pass",
            "python3 -c 'import os'",
            "rm -rf /",
            "echo hi; cat link_out",
            "echo 'unterminated",
            "git log -1 --output=.git/config",
            "git log -1 --output=.GIT/config",
            "git log -1 --output=../secret.txt",
            "git log -1 --output=link_out/x",
            "git log -1 --output=dir_out/x",
            "git log -1 -o.git/hooks/pre-commit",
            "git log --ext-diff -p -1",
            "git log -1 -- .git",
            "git log @args.txt",
            "echo @link_out",
            "echo a=/etc/passwd",
            "echo -o/etc/passwd",
            "",
            "ls",
            "echo \x00",
        ]
    )
    commands = st.one_of(commands, commands, st.text(max_size=20), wrong)  # fmt: skip
    return {
        "read_file": st.fixed_dictionaries({"path": paths}, optional={"start_line": lines, "end_line": lines}),
        "list_dir": st.fixed_dictionaries({}, optional={"path": paths, "depth": lines}),
        "search": st.fixed_dictionaries(
            {"pattern": patterns},
            optional={
                "path": paths,
                "glob": st.sampled_from(["*.py", "!tests/**", "**", "!", "[", "\x00"]) | wrong,
                "max_results": lines,
            },
        ),
        "write_file": st.fixed_dictionaries({"path": paths, "content": text}),
        "edit_file": st.fixed_dictionaries({"path": paths, "before": text, "after": text}),
        "run_tests": st.fixed_dictionaries({}, optional={"target": paths}),
        "run_command": st.fixed_dictionaries({"command": commands}),
        "git_status": st.fixed_dictionaries({}, optional={"extra": wrong}),
        "git_diff": st.fixed_dictionaries({}, optional={"path": paths, "staged": st.booleans() | wrong}),
    }


TOOLS = list(arguments("/x"))


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=st.data(),
    tool=st.sampled_from(TOOLS),
    drop=st.sampled_from([False] * 7 + [True]),
    extra=st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
async def test_every_tool_answers_any_arguments_and_stays_inside(
    hostile: Hostile, data: st.DataObject, tool: str, drop: bool, extra: dict[str, Any]
) -> None:
    args = dict(data.draw(arguments(str(hostile.base))[tool]))
    if drop and args:
        args.pop(next(iter(args)))  # a required argument missing
    args.update({k: v for k, v in extra.items() if k not in args})
    async with Client(hostile.sidecar.mcp) as client:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                result = await client.call_tool(tool, args, meta={"agent-session-id": "fuzz"})
        except TimeoutError:
            raise AssertionError(f"{tool}({args!r}) did not answer within {CALL_TIMEOUT_S} s") from None
    texts = [getattr(c, "text", "") for c in result.content]
    hostile.seen[f"{tool} {'error' if result.is_error else 'ok'}"] += 1
    assert texts and all(isinstance(t, str) for t in texts), result
    if result.is_error:
        assert texts[0].strip(), f"{tool}({args!r}) failed without a message"
    assert not any(SENTINEL in t for t in texts), f"{tool}({args!r}) showed a file outside the workspace: {texts}"
