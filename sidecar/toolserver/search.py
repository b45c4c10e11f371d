"""`search`: a regex over the workspace's text files, ripgrep when present, Python otherwise, same output.

Output lines are `path:line:text` (paths relative to the workspace root, ripgrep's `--no-heading` layout),
files in path order, at most `max_results` lines, then a note when more matched. Both backends select the
same files (see `walk.py`), skip binary files (a NUL byte in the first 8 KiB for Python; ripgrep's own
detection) and files over 10 MiB, cut long lines, and honour a `glob` (gitignore syntax, `!` excludes).
A pattern ripgrep's regex engine rejects but Python's accepts (look-around, back-references) runs on the
Python backend, so both backends accept the same patterns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from sidecar.core import gitignore
from sidecar.core.toolformat import format_search_line
from sidecar.toolserver.walk import walk
from sidecar.toolserver.watcher import COOKIE_PREFIX

MAX_FILE_BYTES = 10 * 1024 * 1024
BINARY_SNIFF_BYTES = 8192


class SearchError(Exception):
    """An invalid pattern or glob; the message is for the model."""


@dataclass(frozen=True)
class SearchResult:
    lines: list[str]
    truncated: bool
    backend: str


def compile_pattern(pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise SearchError("the pattern is empty; pass a regular expression, e.g. 'def \\w+_test'")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SearchError(f"invalid regular expression {pattern!r}: {exc}; escape special characters") from exc


def python_search(
    start_fd: int, prefix: str, pattern: str, glob: str | None, max_results: int, only: str | None = None
) -> SearchResult:
    """Walk from `start_fd` (a directory; `prefix` is its path relative to the root) and grep text files.

    With `only`, search just that file of the directory (an explicit path: ignore rules do not apply).
    """
    regex = compile_pattern(pattern)
    lines: list[str] = []
    files: Iterable[tuple[int, str, str]]
    if only is not None:
        files = [(start_fd, only, f"{prefix}/{only}" if prefix else only)]
    else:
        files = (
            (node.dir_fd, node.name, node.rel)
            for node in walk(start_fd, prefix=prefix)
            if node.kind == "file"
            and node.size <= MAX_FILE_BYTES
            and (not glob or gitignore.matches_glob(node.rel, glob))
        )
    for dir_fd, name, rel in files:
        if not _grep_file(dir_fd, name, rel, regex, lines, max_results):
            return SearchResult(lines, True, "python")
    return SearchResult(lines, False, "python")


def _grep_file(dir_fd: int, name: str, rel: str, regex: re.Pattern[str], lines: list[str], limit: int) -> bool:
    """Append the file's matching lines; False when `limit` was reached with more to show."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return True
    with contextlib.closing(os.fdopen(fd, "rb")) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES or b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return True
    split = data.decode("utf-8", errors="replace").split("\n")
    if split[-1] == "":
        split.pop()  # a final newline ends the last line, it does not start another
    for lineno, line in enumerate(split, start=1):
        if regex.search(line[:-1] if line.endswith("\r") else line):
            if len(lines) >= limit:
                return False
            lines.append(format_search_line(rel, lineno, line))
    return True


def ripgrep() -> str | None:
    return shutil.which("rg")


def rg_argv(rg: str, pattern: str, path: str, glob: str | None) -> list[str]:
    argv = [
        rg,
        "--no-config",
        "--hidden",
        "--no-require-git",
        "--no-ignore-parent",
        "--no-ignore-dot",
        "--no-ignore-global",
        "--no-ignore-exclude",
        "--no-messages",
        "--color=never",
        "--line-number",
        "--with-filename",
        "--no-heading",
        "--null",
        "--sort=path",
        "--max-filesize=10M",
        "--crlf",
    ]
    if glob:
        argv += ["--glob", glob]
    argv += ["--glob", "!.git", "--glob", f"!{COOKIE_PREFIX}*", "--regexp", pattern, "--", path]
    return argv


async def rg_search(
    rg: str, root: str, path: str, pattern: str, glob: str | None, max_results: int
) -> SearchResult | None:
    """Run ripgrep from the workspace root; None when it rejected the pattern (the caller falls back)."""
    proc = await asyncio.create_subprocess_exec(
        *rg_argv(rg, pattern, path, glob),
        cwd=root,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    truncated = False
    finished = False
    try:
        async for raw in proc.stdout:
            name, _, rest = raw.rstrip(b"\n").partition(b"\x00")
            lineno, _, text = rest.partition(b":")
            shown = os.fsdecode(name)
            if shown.startswith("./"):
                shown = shown[2:]
            if len(lines) >= max_results:
                truncated = True
                break
            lines.append(format_search_line(shown, int(lineno), text.decode("utf-8", errors="replace")))
        finished = True
    finally:
        if truncated or not finished:
            # Stopped reading early: rg may block on a full pipe. (Not after EOF: killing then would make
            # subprocess reap the child behind asyncio's child watcher.)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        stderr = await proc.stderr.read()
        code = await proc.wait()
    if not truncated and code == 2 and not lines:
        message = stderr.decode("utf-8", errors="replace")
        if "regex" in message.lower() or "error parsing" in message.lower():
            return None
    return SearchResult(lines, truncated, "rg")
