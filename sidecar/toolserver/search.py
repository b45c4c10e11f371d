"""`search`: a regex over the workspace's text files, ripgrep when present, Python otherwise, same output.

Output lines are `path:line:text` (paths relative to the workspace root, ripgrep's `--no-heading` layout),
files in path order, at most `max_results` lines, then a note when more matched. Both backends select the
same files (see `walk.py`), skip binary files (a NUL byte in the first 8 KiB for Python; ripgrep's own
detection) and files over 10 MiB, cut long lines, and honour a `glob` (gitignore syntax, `!` excludes).
A pattern ripgrep's regex engine rejects but Python's accepts (look-around, back-references) runs on the
Python backend, so both backends accept the same patterns. Python's `re` backtracks and a search can run for
ever, so the Python backend runs in a child process (`search_worker.py`, `python_search_process`) and, like
ripgrep, is killed when the caller's time limit (`search_timeout_s`) cancels it.

Both search what the jail opened (`Scope`: a descriptor of the directory or file, reached without following
symlinks), never a name that could be swapped for a symlink after the check. Python walks from the descriptor
with `O_NOFOLLOW` (`walk.py`). ripgrep follows a symlink given on its command line, so it is given one that
leads to the descriptor itself: `/proc/<pid>/fd/<n>` is a "magic link" the kernel resolves to the open file,
not by name. For the root, ripgrep runs in that directory (`cwd`) on `./`; for a path below it, from a private
temporary directory holding `<path>` as a link to the descriptor, so its output names and `--glob` matching
(relative to ripgrep's working directory) stay relative to the workspace root, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.core.toolformat import format_search_line
from sidecar.toolserver import gitignore
from sidecar.toolserver.offload import Offload
from sidecar.toolserver.walk import COOKIE_PREFIX, walk

MAX_FILE_BYTES = 10 * 1024 * 1024
READY = "ready\n"  # the search worker's first line: started up, about to read its request
# Where `sidecar` is imported from, for the worker process (search_worker.py) even without an installed package.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY_SNIFF_BYTES = 8192


class SearchError(Exception):
    """An invalid pattern or glob; the message is for the model."""


@dataclass(frozen=True)
class SearchResult:
    lines: list[str]
    truncated: bool
    backend: str


@dataclass(frozen=True)
class Scope:
    """What to search: `fd` is an open descriptor of a directory (`is_dir`) or a regular file, `shown` its path
    relative to the workspace root as output lines name it ('.' for the root)."""

    fd: int
    is_dir: bool
    shown: str


def compile_pattern(pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise SearchError("the pattern is empty; pass a regular expression, e.g. 'def \\w+_test'")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SearchError(f"invalid regular expression {pattern!r}: {exc}; escape special characters") from exc


def python_search(scope: Scope, pattern: str, glob: str | None, max_results: int) -> SearchResult:
    """Grep the text files of `scope`: a directory is walked (ignore rules and `glob` apply), a file is searched
    itself (an explicit path: ignore rules and `glob` do not apply, as with ripgrep)."""
    regex = compile_pattern(pattern)
    lines: list[str] = []
    if not scope.is_dir:
        complete = _grep_data(_pread_all(scope.fd, MAX_FILE_BYTES + 1), scope.shown, regex, lines, max_results)
        return SearchResult(lines, not complete, "python")
    try:
        selected = gitignore.compile_glob(glob) if glob else None
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    prefix = "" if scope.shown == "." else scope.shown
    for node in walk(scope.fd, prefix=prefix):
        if node.kind != "file" or node.size > MAX_FILE_BYTES or (selected and not selected(node.rel)):
            continue
        if not _grep_file(node.dir_fd, node.name, node.rel, regex, lines, max_results):
            return SearchResult(lines, True, "python")
    return SearchResult(lines, False, "python")


def _pread_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.pread(fd, min(1 << 20, limit - total), total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


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
    return _grep_data(data, rel, regex, lines, limit)


def _grep_data(data: bytes, rel: str, regex: re.Pattern[str], lines: list[str], limit: int) -> bool:
    """Append the matching lines of a file's bytes; False when `limit` was reached with more to show."""
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


async def python_search_process(
    scope: Scope, pattern: str, glob: str | None, max_results: int, started: Callable[[], None] = lambda: None
) -> SearchResult:
    """`python_search` in a child process (`search_worker.py`) that is killed if the caller is cancelled (a
    time limit): Python's `re` can backtrack for ever, and a thread running it could never be stopped.
    `started` is called once the worker has started up and is about to search, so a time limit can count the
    search alone: on a loaded machine the interpreter's start-up can take longer than a whole search."""
    request: dict[str, object] = {"fd": scope.fd, "is_dir": scope.is_dir, "shown": scope.shown}
    request |= {"pattern": pattern, "glob": glob, "max_results": max_results}
    pythonpath = os.pathsep.join(p for p in (_PACKAGE_PARENT, os.environ.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar.toolserver.search_worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=(scope.fd,),
        env={**os.environ, "PYTHONPATH": pythonpath},
    )
    try:
        assert proc.stdout is not None
        if await proc.stdout.readline() == READY.encode():
            started()
        out, err = await proc.communicate(json.dumps(request).encode())
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if proc.returncode != 0 or not isinstance(answer, dict):
        detail = err.decode("utf-8", errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise SearchError(f"the search failed ({detail[0][:300]}); retry, or narrow the pattern, path or glob")
    if "error" in answer:
        raise SearchError(str(answer["error"]))
    return SearchResult([str(line) for line in answer["lines"]], bool(answer["truncated"]), "python")


def fd_links_work() -> bool:
    """Whether this process's descriptors can be reached as `/proc/<pid>/fd/<n>` (Linux with /proc mounted)."""
    return os.path.isdir(f"/proc/{os.getpid()}/fd")


def _rg_view(scope: Scope) -> tuple[str, str, str | None]:
    """Blocking (off the loop only): (cwd, path, made) for ripgrep such that `path` from `cwd` is the opened
    `scope` itself, named `scope.shown`; `made` is a directory to remove afterwards (`_remove_view`), or None."""
    magic = f"/proc/{os.getpid()}/fd/{scope.fd}"
    if scope.shown == "." and scope.is_dir:
        return magic, "./", None
    view = tempfile.mkdtemp(prefix="sidecar-rg-")  # mode 0700: nobody else can swap the link inside
    try:
        link = os.path.join(view, scope.shown)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(magic, link)
    except BaseException:
        _remove_view((magic, scope.shown, view))
        raise
    return view, scope.shown, view


def _remove_view(view: tuple[str, str, str | None]) -> None:
    if view[2] is not None:
        shutil.rmtree(view[2], ignore_errors=True)


async def rg_search(
    rg: str, scope: Scope, pattern: str, glob: str | None, max_results: int, offload: Offload
) -> SearchResult | None:
    """Run ripgrep on the opened `scope`; None when it rejected the pattern (the caller falls back). The view
    it runs in is made and removed off the loop, by `offload`."""
    view = await offload(_rg_view, scope, discard=_remove_view)
    try:
        cwd, path, _ = view
        return await _rg_run(rg_argv(rg, pattern, path, glob), cwd, max_results)
    finally:
        await offload(_remove_view, view)


async def _rg_run(argv: list[str], cwd: str, max_results: int) -> SearchResult | None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=MAX_FILE_BYTES + (1 << 16),  # one output line can be a whole file's line (asyncio's default: 64 KiB)
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
