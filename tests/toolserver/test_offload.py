"""Tool bodies do their file I/O off the event loop: a call stuck in the filesystem never holds up another.

The filesystem is made slow for chosen files at the system-call boundary, with no stand-in for any part of the
sidecar: an audit hook (`sys.addaudithook`, which the interpreter calls on every `open`, `os.open` included)
holds the thread that opens a file whose name carries `GATED` until the test lets it go. A body that opened it
on the event loop would freeze the loop there, and the quick call could only finish after the held one; the
hold gives up after `HOLD_LIMIT_S`, so such a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sidecar.toolserver.sidecar import Sidecar
from sidecar.toolserver.tools import ToolOutput

from .conftest import settled

MARK = "GATED"
HOLD_LIMIT_S = 60.0  # only a loop frozen by the held call ever waits this long
FILE_EVENTS = {"open", "os.scandir", "os.listdir", "os.rename", "os.remove", "os.mkdir", "os.chmod", "os.symlink"}


class Gate:
    """Holds every thread that opens a path whose name contains `MARK`, until `release`."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.released = threading.Event()

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | bytes) and MARK in os.fsdecode(args[0]).rsplit("/", 1)[-1]:
            self.held.set()
            self.released.wait(HOLD_LIMIT_S)


class Recorder:
    """Records the file events raised on one thread (the event loop's), with their first argument."""

    def __init__(self, thread: int) -> None:
        self.thread = thread
        self.seen: list[tuple[str, object]] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event in FILE_EVENTS and threading.get_ident() == self.thread and not _is_pipe(args[0] if args else None):
            self.seen.append((event, args[0] if args else None))


_HOOKS: list[Callable[[str, tuple[Any, ...]], None]] = []


def _dispatch(event: str, args: tuple[Any, ...]) -> None:
    for hook in list(_HOOKS):
        hook(event, args)


sys.addaudithook(_dispatch)  # audit hooks cannot be removed: this one does nothing while `_HOOKS` is empty


@contextmanager
def hooked(hook: Callable[[str, tuple[Any, ...]], None]) -> Iterator[None]:
    _HOOKS.append(hook)
    try:
        yield
    finally:
        _HOOKS.remove(hook)


SLOW_CALLS: dict[str, Callable[[Sidecar], Awaitable[ToolOutput]]] = {
    "read_file": lambda sc: sc.tools.read_file(f"{MARK}.txt"),
    "write_file": lambda sc: sc.tools.write_file(f"{MARK}.txt", "new\n"),  # its temporary file carries the name
    "edit_file": lambda sc: sc.tools.edit_file(f"{MARK}.txt", "slow", "edited"),
    "list_dir": lambda sc: sc.tools.list_dir(f"{MARK}-dir"),
    "search": lambda sc: sc.tools.search("inside", f"{MARK}-dir"),
}


@pytest.mark.parametrize("tool", sorted(SLOW_CALLS))
async def test_a_call_stuck_in_the_filesystem_does_not_hold_up_a_quick_one(
    sidecar: Sidecar, workspace: Path, tool: str
) -> None:
    (workspace / f"{MARK}.txt").write_text("slow\n")
    (workspace / f"{MARK}-dir").mkdir()
    (workspace / f"{MARK}-dir" / "f.txt").write_text("inside\n")
    await settled(sidecar)
    gate = Gate()
    with hooked(gate):
        slow = asyncio.create_task(SLOW_CALLS[tool](sidecar))
        try:
            assert await asyncio.to_thread(gate.held.wait, HOLD_LIMIT_S), "the slow call never opened its file"
            quick = await sidecar.tools.read_file("pkg/calc.py")
            assert not slow.done(), "the quick call finished only after the held one: the loop was blocked"
        finally:
            gate.released.set()
        out = await slow
    assert "return a + b" in quick.text
    assert out.paths and out.paths[0].startswith(MARK)


async def test_no_tool_touches_a_file_on_the_event_loop_thread(sidecar: Sidecar, workspace: Path) -> None:
    """Every tool, cached and not, failing and not: the loop thread opens, lists, renames or removes nothing in
    the workspace, not even the watcher's barrier cookie."""
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: sidecar.tools.read_file("pkg/calc.py"),
        lambda: sidecar.tools.read_file("pkg/calc.py", 1, 1),
        lambda: sidecar.tools.list_dir(".", 3),
        lambda: sidecar.tools.search("def", "pkg", "*.py"),
        lambda: sidecar.tools.write_file("new/file.txt", "one\n"),
        lambda: sidecar.tools.edit_file("new/file.txt", "one", "two"),
        lambda: sidecar.tools.run_tests("tests/test_calc.py"),
        lambda: sidecar.tools.git_status(),
        lambda: sidecar.tools.git_diff("pkg"),
        lambda: sidecar.tools.peek("read_file", {"path": "pkg/calc.py"}),
        lambda: sidecar.tools.peek("list_dir", {"path": "."}),
        lambda: sidecar.tools.peek("run_tests", {"target": "tests/test_calc.py"}),
    ]
    await settled(sidecar)
    recorder = Recorder(threading.get_ident())
    with hooked(recorder):
        for call in calls + calls:  # the second round finds what the first cached
            with contextlib.suppress(Exception):  # a failure (no git repository) is still a call to check
                await call()
    workspace_events = [(e, p) for e, p in recorder.seen if not _outside(p, workspace)]
    assert not workspace_events


def _is_pipe(path: object) -> bool:
    """A descriptor of a pipe: a child process's stdin, stdout or stderr being wrapped, not a file."""
    try:
        return isinstance(path, int) and stat.S_ISFIFO(os.fstat(path).st_mode)
    except OSError:
        return False


def _outside(path: object, workspace: Path) -> bool:
    """A path named absolutely outside the workspace (the interpreter, /dev/null for a child's stdin)."""
    if not isinstance(path, str | bytes):
        return False  # a descriptor: whatever it is, the loop thread is using the filesystem
    name = os.fsdecode(path)
    return name.startswith("/") and not name.startswith(str(workspace.resolve()))
