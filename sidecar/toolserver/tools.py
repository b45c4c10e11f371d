"""The sidecar's tool bodies, independent of MCP: each is a coroutine that returns a `ToolOutput` or raises
`ToolFailure`.

Every body does its file I/O off the event loop (`offload.py`: resolving a path, stat, open, read, walk,
write), and touches the cache only on the loop, before and after; so one call reading a large file or a slow
disk never holds up the others, a peek or an event. The jail's checks run in the worker thread exactly as
before (every open walks from the root with `O_NOFOLLOW`).

Read-only tools are cached (`read_file` as a file entry; `list_dir`, `search`, `run_tests` as tree entries,
see `cache.py`); `write_file` and `edit_file` invalidate synchronously before they return. The sidecar
(`sidecar.py`) reports every call to the coordinator; `mcpserver.py` turns `ToolFailure` into MCP's `ToolError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.core.gitsafety import refuse_git_args
from sidecar.core.paths import Refused, check_argument, is_git_internal
from sidecar.core.toolcache import FileStamp, Generations, Inputs, Mark
from sidecar.core.toolcommands import (
    argument_values,
    check_command,
    is_path_like,
    path_candidates,
    refuse_argument_file,
    split_test_target,
)
from sidecar.core.toolformat import (
    EditError,
    RangeError,
    apply_edit,
    edit_message,
    format_read,
    write_message,
)
from sidecar.toolserver import runner
from sidecar.toolserver.cache import ToolCache, stamp_of, stat_stamp
from sidecar.toolserver.gitrun import GitRefused, GitRunner
from sidecar.toolserver.jail import Jail, JailError, Target, read_all
from sidecar.toolserver.offload import Offload
from sidecar.toolserver.search import (
    Scope,
    SearchError,
    SearchResult,
    compile_pattern,
    fd_links_work,
    python_search_process,
    rg_search,
    ripgrep,
)
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.walk import walk

MAX_READ_BYTES = 20 * 1024 * 1024
BINARY_SNIFF_BYTES = 8192
MAX_DEPTH = 10
# A search worker (a Python process) that has not started within this is reported as such, not as a slow pattern.
SEARCH_START_LIMIT_S = 60.0


class ToolFailure(Exception):
    """A failure the model should read and act on (bad path, no match, invalid pattern...)."""

    def __init__(self, message: str, *, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


@dataclass
class ToolOutput:
    text: str
    paths: list[str] = field(default_factory=list)
    exit_code: int | None = None
    cached: bool = False
    command: str | None = None  # for run_command events: the command line (capped)
    speculative: bool = False  # a speculative test run served to the agent (metrics only, never in `text`)


@dataclass(frozen=True)
class CachedRead:
    """A cached `read_file` answer and the digest of the bytes it was rendered from."""

    text: str
    digest: bytes


@dataclass(frozen=True)
class FileRead:
    """One read of a file, done off the loop: what it found, the stats around it, and its rendering."""

    target: Target
    digest: bytes
    stamp_before: FileStamp | None  # the asked path, stat'ed before it was opened
    stamp_read: FileStamp  # the descriptor read, fstat'ed
    stamp_after: FileStamp | None  # the asked path, stat'ed after it was read
    rendered: str | None  # None when not asked for: its bytes are those of the entry the caller already has


@dataclass(frozen=True)
class TestRun:
    """A finished `run_tests`, as cached: what ran, when, for how long, and what it said."""

    command: str
    exit_code: int | None
    output: str
    duration_s: float
    started_at: float
    timed_out: bool
    speculative: bool = False  # started by the sidecar's pre-runner (speculation.py), not by the agent
    early: bool = False  # started while the answer that asks for it streamed (early.py), not a pre-run

    def render(self, cached: bool) -> str:
        when = dt.datetime.fromtimestamp(self.started_at, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        status = "timed out" if self.timed_out else f"exit code {self.exit_code}"
        lines = [f"$ {self.command}", f"[{status} after {self.duration_s:.2f} s, ran at {when}]"]
        if cached:
            lines.insert(
                0, f"[cached: the workspace is unchanged since this run at {when}; it took {self.duration_s:.2f} s]"
            )
        return "\n".join(lines) + "\n" + self.output


def _read_key(lexical: str, start_line: int | None, end_line: int | None) -> str:
    return f"read_file {lexical}\x00{start_line}\x00{end_line}"


def _list_key(target: Target, depth: int) -> str:
    return f"list_dir {target.lexical}\x00{target.real}\x00{depth}"


def _search_key(target: Target, pattern: str, glob: str | None, limit: int, backend: str) -> str:
    return f"search {target.lexical}\x00{target.real}\x00{pattern}\x00{glob}\x00{limit}\x00{backend}"


def _tests_key(command: str) -> str:
    return f"run_tests {command}"


def _close_scope(opened: tuple[int, bool]) -> None:
    os.close(opened[0])


class Tools:
    """Tool bodies over one workspace; `generation` only grows and changes whenever the workspace does."""

    def __init__(
        self, settings: SidecarSettings, *, jail: Jail, cache: ToolCache, gens: Generations, offload: Offload
    ) -> None:
        self.settings = settings
        self.jail = jail
        self.cache = cache
        self.gens = gens
        self.offload = offload
        self.git = GitRunner(jail.root, offload)
        self.test_argv = shlex.split(settings.test_command)
        if not self.test_argv:
            raise ValueError("sidecar.test_command is empty")
        # Speculative test runs the agent received (each counted once), and the agent time they saved.
        self.speculative_used = 0
        self.speculative_saved_s = 0.0
        self._served_runs: set[tuple[str, float]] = set()

    @property
    def generation(self) -> int:
        """The workspace generation: compare two readings to know whether anything changed in between."""
        return self.gens.current

    # -- helpers -------------------------------------------------------------------------------------

    def _lexical(self, path: str) -> str:
        try:
            return self.jail.lexical(path)
        except JailError as exc:
            raise ToolFailure(str(exc), paths=[path]) from exc

    def _resolve_now(self, path: str) -> Target:
        """Blocking (off the loop only): `path` checked and resolved through the jail."""
        try:
            return self.jail.resolve(path)
        except JailError as exc:
            raise ToolFailure(str(exc), paths=[path]) from exc

    async def _resolve(self, path: str) -> Target:
        return await self.offload(self._resolve_now, path)

    def _invalidate(self, target: Target) -> None:
        """Our own write: bump its generations now, before the watcher's event arrives."""
        self.gens.bump(target.real)
        if target.lexical != target.real:
            self.gens.bump(target.lexical)

    def _open(self, target: Target) -> int:
        try:
            return self.jail.open_file(target)
        except JailError as exc:
            raise ToolFailure(str(exc), paths=[target.shown]) from exc
        except FileNotFoundError as exc:
            raise ToolFailure(
                f"'{target.shown}' does not exist; use list_dir or search to find the file", paths=[target.shown]
            ) from exc
        except OSError as exc:
            raise ToolFailure(f"Failed to read {target.shown}: {exc.strerror}", paths=[target.shown]) from exc

    @staticmethod
    def _changed(target: Target, exc: Exception) -> ToolFailure:
        """What the model reads when opening a directory failed after its path was checked: it changed."""
        if isinstance(exc, JailError):
            return ToolFailure(str(exc), paths=[target.shown])
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            return ToolFailure(
                f"'{target.shown}' changed while it was being read (a part of it was removed or replaced during "
                "the call); retry, or list_dir its parent to see what is there now",
                paths=[target.shown],
            )
        strerror = exc.strerror if isinstance(exc, OSError) else str(exc)
        return ToolFailure(f"Failed to read {target.shown}: {strerror}", paths=[target.shown])

    def _read(
        self, path: str, start_line: int | None, end_line: int | None, known: bytes | None, render: bool = True
    ) -> FileRead:
        """Blocking (off the loop only): resolve `path`, read it between two stats, and render it, unless its
        bytes hash to `known` (the digest of the entry the caller has) or `render` is False."""
        target = self._resolve_now(path)
        stamp_before = stat_stamp(target.lexical)
        fd = self._open(target)
        try:
            stamp_read = stamp_of(os.fstat(fd))
            if stamp_read.size > MAX_READ_BYTES:
                raise ToolFailure(
                    f"'{target.shown}' is {stamp_read.size} bytes, over the {MAX_READ_BYTES} byte limit; use search "
                    "to find the lines you need",
                    paths=[target.shown],
                )
            data = read_all(fd, MAX_READ_BYTES)
        finally:
            os.close(fd)
        stamp_after = stat_stamp(target.lexical)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        rendered = self._render(target, data, start_line, end_line) if render and digest != known else None
        return FileRead(target, digest, stamp_before, stamp_read, stamp_after, rendered)

    def _render(self, target: Target, data: bytes, start_line: int | None, end_line: int | None) -> str:
        """What `read_file` shows of a file holding `data`: a pure function of its arguments and the settings."""
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise ToolFailure(
                f"'{target.shown}' looks like a binary file ({len(data)} bytes); read_file shows text files only",
                paths=[target.shown],
            )
        try:
            return format_read(
                target.shown,
                data.decode("utf-8", errors="replace"),
                start_line,
                end_line,
                max_lines=self.settings.read_max_lines,
                max_chars=self.settings.read_max_chars,
            )
        except RangeError as exc:
            raise ToolFailure(str(exc), paths=[target.shown]) from exc

    def _dir_target(self, path: str, tool: str) -> Target:
        """Blocking (off the loop only): `path` resolved, and an existing directory (or, but for `list_dir`, a
        file)."""
        target = self._resolve_now(path)
        if not os.path.exists(target.real):
            raise ToolFailure(f"'{target.shown}' does not exist; list_dir '.' shows the workspace", paths=[path])
        if not os.path.isdir(target.real) and tool == "list_dir":
            raise ToolFailure(f"'{target.shown}' is a file; use read_file to read it", paths=[target.shown])
        return target

    # -- read-only, cached -----------------------------------------------------------------------------

    def _read_hit(self, key: str, read: FileRead) -> str | None:
        """The cached text under `key`, if it is still valid (stamps, events, epoch) and was rendered from exactly
        the bytes `read` found. inotify and stat miss some writes: one through a hard link from outside the
        watched tree (no event here), a second write through an `mmap` whose page is still dirty (no event, and
        mtime unchanged). So a hit is served only from a read made during this call whose digest matches:
        reading is cheap, a stale answer is not."""
        hit = self.cache.lookup_files(key, {read.target.lexical: read.stamp_after})
        if not isinstance(hit, CachedRead):
            return None
        if hit.digest != read.digest:
            self.cache.lru.invalidate(key)
            return None
        return hit.text

    def _store_read(self, key: str, read: FileRead, since: Mark) -> None:
        target, rendered = read.target, read.rendered
        assert rendered is not None
        watched = (target.real,) if target.lexical == target.real else (target.real, target.lexical)
        inputs = Inputs(files=((target.lexical, read.stamp_read),), paths=watched)
        stable = read.stamp_before if read.stamp_before == read.stamp_read else None
        value = CachedRead(rendered, read.digest)
        self.cache.store(key, value, len(rendered) + 256, inputs, since, (stable,), (read.stamp_after,))

    async def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> ToolOutput:
        """The file's lines as `format_read` shows them: a cached text when it is valid for the bytes read now.

        One hop off the loop in the usual case (hit or miss: the file is read either way); a second, to render,
        only when the bytes are the cached entry's but the entry no longer validates (touched, flushed)."""
        key = _read_key(self._lexical(path), start_line, end_line)
        since = self.cache.mark()
        known = self.cache.peek(key)
        read = await self.offload(
            self._read, path, start_line, end_line, known.digest if isinstance(known, CachedRead) else None
        )
        hit = self._read_hit(key, read)
        if hit is not None:
            return ToolOutput(hit, [read.target.shown], cached=True)
        if read.rendered is None:
            since = self.cache.mark()
            read = await self.offload(self._read, path, start_line, end_line, None)
        self._store_read(key, read, since)
        assert read.rendered is not None
        return ToolOutput(read.rendered, [read.target.shown])

    async def list_dir(self, path: str = ".", depth: int = 2) -> ToolOutput:
        if not 1 <= depth <= MAX_DEPTH:
            raise ToolFailure(f"depth must be between 1 and {MAX_DEPTH} (got {depth})", paths=[path])
        target = await self.offload(self._dir_target, path, "list_dir")
        key = _list_key(target, depth)

        async def compute() -> tuple[str, int | None]:
            text = await self.offload(self._list, target, depth)
            return text, len(text) + 256

        text, cached = await self.cache.tree(key, target.real, compute)
        return ToolOutput(text, [target.shown], cached=cached)

    def _list(self, target: Target, depth: int) -> str:
        """Blocking (off the loop only): the listing, walked from descriptors opened with `O_NOFOLLOW`."""
        limit = self.settings.list_max_entries
        lines: list[str] = []
        more = False
        prefix = "" if target.shown == "." else target.shown
        try:
            with self.jail.open_dir(self.jail.parts(target)) as fd:
                for node in walk(fd, max_depth=depth, prefix=prefix):
                    if len(lines) >= limit:
                        more = True
                        break
                    suffix = "/" if node.kind == "dir" else "@" if node.kind == "link" else ""
                    lines.append(node.rel + suffix)
        except (JailError, OSError) as exc:
            raise self._changed(target, exc) from exc
        shown = "./" if target.shown == "." else target.shown.rstrip("/") + "/"
        header = f"{shown} ({len(lines)} entries, depth {depth}; directories end in '/', symlinks in '@')"
        if more:
            lines.append(f"[truncated: the first {limit} entries are shown; list a subdirectory or use less depth]")
        if not lines:
            lines.append("(empty)")
        return "\n".join([header, *lines])

    async def search(
        self, pattern: str, path: str = ".", glob: str | None = None, max_results: int | None = None
    ) -> ToolOutput:
        limit = self.settings.search_max_results if max_results is None else max_results
        if not 1 <= limit <= 1000:
            raise ToolFailure(f"max_results must be between 1 and 1000 (got {limit})", paths=[path])
        try:
            compile_pattern(pattern)
        except SearchError as exc:
            raise ToolFailure(str(exc), paths=[path]) from exc
        if glob is not None and ("\x00" in glob or not glob.strip("!")):
            raise ToolFailure(f"invalid glob {glob!r}; pass e.g. '*.py' or '!tests/**'", paths=[path])
        target, backend = await self.offload(self._search_target, path)
        key = _search_key(target, pattern, glob, limit, backend)

        async def compute() -> tuple[str, int | None]:
            result = await self._search(target, pattern, glob, limit, backend)
            text = self._render_search(result, pattern, target, limit)
            return text, len(text) + 256

        text, cached = await self.cache.tree(key, target.real, compute)
        return ToolOutput(text, [target.shown], cached=cached)

    def _search_target(self, path: str, check: bool = True) -> tuple[Target, str]:
        """Blocking (off the loop only): the scope to search (checked as `_dir_target` does, unless not `check`)
        and the backend (finding ripgrep stats the directories on PATH)."""
        target = self._dir_target(path, "search") if check else self._resolve_now(path)
        return target, self._backend()

    def _backend(self) -> str:
        if self.settings.search_backend == "python":
            return "python"
        rg = ripgrep()
        if rg is None:
            if self.settings.search_backend == "rg":
                raise ToolFailure("ripgrep (rg) is not installed on the sidecar's machine")
            return "python"
        return rg

    async def _search(self, target: Target, pattern: str, glob: str | None, limit: int, backend: str) -> SearchResult:
        """The search, stopped `search_timeout_s` after its process started searching (a worker's start-up on a
        loaded machine is not the pattern's fault; it has `SEARCH_START_LIMIT_S` of its own)."""
        timeout = self.settings.search_timeout_s
        loop = asyncio.get_running_loop()
        searching = False

        def started() -> None:
            nonlocal searching
            searching = True
            clock.reschedule(loop.time() + timeout)

        try:
            async with asyncio.timeout(SEARCH_START_LIMIT_S) as clock:
                return await self._search_scope(target, pattern, glob, limit, backend, started)
        except TimeoutError as exc:  # both backends run in child processes, killed on the way out
            if not searching:
                raise ToolFailure(
                    f"the search for {pattern!r} in {target.shown} was stopped: its worker process did not start "
                    f"within {SEARCH_START_LIMIT_S:g} s (is the sidecar's machine overloaded?); retry",
                    paths=[target.shown],
                ) from exc
            raise ToolFailure(
                f"the search for {pattern!r} in {target.shown} did not finish within {timeout:g} s and was stopped "
                "(the sidecar's search_timeout_s). A pattern with nested repetition such as '(a+)+' backtracks "
                "for ever on Python's engine, which runs look-around and back-references; simplify the pattern, "
                "or narrow the path or glob",
                paths=[target.shown],
            ) from exc
        except SearchError as exc:
            raise ToolFailure(str(exc), paths=[target.shown]) from exc

    async def _search_scope(
        self, target: Target, pattern: str, glob: str | None, limit: int, backend: str, started: Callable[[], None]
    ) -> SearchResult:
        try:  # search what was checked, opened without following links; never a name that can be swapped
            fd, is_dir = await self.offload(self.jail.open_scope, target, discard=_close_scope)
        except (JailError, OSError) as exc:
            raise self._changed(target, exc) from exc
        try:
            scope = Scope(fd, is_dir, target.shown)
            if backend != "python" and fd_links_work():
                started()  # ripgrep starts in milliseconds; its limit counts from here
                found = await rg_search(backend, scope, pattern, glob, limit, self.offload)
                if found is not None:
                    return found
            return await python_search_process(scope, pattern, glob, limit, started)
        finally:
            os.close(fd)

    def _render_search(self, result: SearchResult, pattern: str, target: Target, limit: int) -> str:
        if not result.lines:
            return f"No matches for {pattern!r} in {target.shown}"
        text = "\n".join(result.lines)
        if result.truncated:
            text += f"\n[truncated: the first {limit} matching lines are shown; narrow the pattern, path or glob]"
        return text

    async def peek(self, tool: str, args: dict[str, Any]) -> str | None:
        """The exact text `tool(**args)` would return now, if that is cached and still valid; never computes.

        For speculation: a caller can learn whether a read or a test run is already known without running it.
        Returns None for anything not cached (or not cacheable, or invalid arguments).
        """
        try:
            if tool == "read_file":
                return await self._peek_read(args["path"], args.get("start_line"), args.get("end_line"))
            if tool == "list_dir":
                key = _list_key(await self._resolve(args.get("path", ".")), args.get("depth", 2))
            elif tool == "search":
                limit = args.get("max_results") or self.settings.search_max_results
                target, backend = await self.offload(self._search_target, args.get("path", "."), False)
                key = _search_key(target, args["pattern"], args.get("glob"), limit, backend)
            elif tool == "run_tests":
                key = _tests_key(shlex.join((await self.offload(self._test_argv, args.get("target")))[0]))
            else:
                return None
        except (ToolFailure, KeyError, TypeError):
            return None
        value = await self.cache.lookup_tree(key)
        if isinstance(value, TestRun):  # rendered as `run_tests` would: a pre-run is the agent's own run once
            first_use = value.speculative and (value.command, value.started_at) not in self._served_runs
            return value.render(cached=not first_use)
        return value if isinstance(value, str) else None

    async def _peek_read(self, path: str, start_line: int | None, end_line: int | None) -> str | None:
        """A valid cached `read_file` text, checked against the file's bytes now; nothing cached: no file I/O."""
        key = _read_key(self._lexical(path), start_line, end_line)
        known = self.cache.peek(key)
        if not isinstance(known, CachedRead):
            return self.cache.lookup_files(key, {})  # counted as the miss it is
        read = await self.offload(self._read, path, start_line, end_line, known.digest, False)
        return self._read_hit(key, read)

    # -- mutating ---------------------------------------------------------------------------------------

    async def write_file(self, path: str, content: str) -> ToolOutput:
        target = await self._resolve(path)
        data = content.encode("utf-8", errors="surrogatepass")
        try:
            created = await self.offload(self._write, target, data, None)
        finally:
            self._invalidate(target)
        return ToolOutput(write_message(target.shown, content, created), [target.shown])

    async def edit_file(self, path: str, before: str, after: str) -> ToolOutput:
        target, stamp, updated = await self.offload(self._edited, path, before, after)
        try:
            await self.offload(self._write, target, updated.encode("utf-8"), stamp)
        finally:
            self._invalidate(target)
        return ToolOutput(edit_message(target.shown, before, after), [target.shown])

    def _edited(self, path: str, before: str, after: str) -> tuple[Target, FileStamp, str]:
        """Blocking (off the loop only): the file's stamp when read, and its text with `before` replaced."""
        target = self._resolve_now(path)
        fd = self._open(target)
        try:
            stamp = stamp_of(os.fstat(fd))
            data = read_all(fd, MAX_READ_BYTES)
        finally:
            os.close(fd)
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolFailure(
                f"Failed to read {target.shown}: it is not UTF-8 text; edit_file edits text files",
                paths=[target.shown],
            ) from exc
        try:
            return target, stamp, apply_edit(content, before, after)
        except EditError as exc:
            raise ToolFailure(str(exc), paths=[target.shown]) from exc

    def _write(self, target: Target, data: bytes, expected: FileStamp | None) -> bool:
        """Blocking (off the loop only): replace `target` atomically; True when it was created. With `expected`,
        only if the file still has that stamp (an edit of what was read, not of what someone wrote since)."""
        if expected is not None and stat_stamp(target.lexical) != expected:
            raise ToolFailure(
                f"'{target.shown}' changed while it was being edited; read it again and retry", paths=[target.shown]
            )
        try:
            return self.jail.write_atomic(target, data)
        except JailError as exc:
            raise ToolFailure(str(exc), paths=[target.shown]) from exc
        except OSError as exc:
            raise ToolFailure(f"Failed to write {target.shown}: {exc.strerror}", paths=[target.shown]) from exc

    # -- commands ---------------------------------------------------------------------------------------

    def _test_argv(self, target: str | None) -> tuple[list[str], list[str]]:
        """Blocking (off the loop only): the test command for `target` (checked through the jail) and the paths
        it names."""
        argv = list(self.test_argv)
        if target is None or not target.strip():
            return argv, []
        split = split_test_target(target.strip())
        if isinstance(split, Refused):
            raise ToolFailure(split.reason, paths=[target])
        path, node = split
        resolved = self._resolve_now(path)
        if not os.path.exists(resolved.real):
            raise ToolFailure(f"the test target '{resolved.shown}' does not exist", paths=[resolved.shown])
        return [*argv, resolved.shown + node], [resolved.shown]

    async def run_tests(
        self, target: str | None = None, *, speculative: bool = False, early: bool = False
    ) -> ToolOutput:
        """Run (or reuse) the test command on the workspace as it is now.

        `speculative=True` is the pre-runner's call. The first time the agent receives a speculative run it is
        rendered exactly as a run of its own (not "cached": the agent never saw it), counted in
        `speculative_used`, and the part of its duration that elapsed before the agent asked is `saved`.
        `early=True` (with `speculative=True`) is a run started from the streamed answer that asks for it
        (`early.py`): rendered the same way on first use, but counted by the early runner, not here.
        """
        asked_at = time.time()
        argv, shown = await self.offload(self._test_argv, target)
        command = shlex.join(argv)
        key = _tests_key(command)

        async def compute() -> tuple[TestRun, int | None]:
            result = await runner.run(
                argv,
                cwd=self.jail.root,
                timeout_s=self.settings.test_timeout_s,
                max_chars=self.settings.output_max_chars,
            )
            run = TestRun(
                command,
                result.exit_code,
                result.output,
                result.duration_s,
                result.started_at,
                result.timed_out,
                speculative=speculative,
                early=early,
            )
            return run, None if result.timed_out else len(result.output) + 512

        run, cached = await self.cache.tree(key, self.jail.root, compute)
        first_use = (
            cached and run.speculative and not speculative and (command, run.started_at) not in self._served_runs
        )
        if first_use:
            self._served_runs.add((command, run.started_at))
            if not run.early:
                self.speculative_used += 1
                self.speculative_saved_s += min(max(asked_at - run.started_at, 0.0), run.duration_s)
        return ToolOutput(
            run.render(cached and not first_use),
            shown,
            exit_code=run.exit_code,
            cached=cached and not first_use,
            speculative=first_use,
        )

    async def run_command(self, command: str) -> ToolOutput:
        allowed = check_command(command, self.settings.allow_commands)
        if isinstance(allowed, Refused):
            raise ToolFailure(allowed.reason)
        for value in argument_values(allowed):
            refused = refuse_argument_file(value)
            if refused is not None:
                raise ToolFailure(refused.reason, paths=[value])
        await self.offload(self._check_command_paths, [c for v in argument_values(allowed) for c in path_candidates(v)])
        argv, env = list(allowed.argv), None
        if os.path.basename(argv[0]) == "git":  # the same hardened git as git_status and git_diff
            refused = refuse_git_args(argv[1:])
            if refused is not None:
                raise ToolFailure(refused.reason)
            try:
                argv = await self.git.argv(argv[1:])
            except GitRefused as exc:
                raise ToolFailure(str(exc)) from exc
            env = self.git.env()
        result = await runner.run(
            argv,
            cwd=self.jail.root,
            timeout_s=self.settings.command_timeout_s,
            max_chars=self.settings.output_max_chars,
            env=env,
        )
        status = "timed out" if result.timed_out else f"exit code {result.exit_code}"
        text = f"$ {shlex.join(allowed.argv)}\n[{status} after {result.duration_s:.2f} s]\n{result.output}"
        return ToolOutput(text, exit_code=result.exit_code, command=shlex.join(allowed.argv)[:500])

    def _check_command_paths(self, values: list[str]) -> None:
        """Blocking (off the loop only): `_check_command_path` for each value, in order."""
        for value in values:
            self._check_command_path(value)

    def _check_command_path(self, value: str) -> None:
        """One path a command may open: absolute, '~' and '..' values must name a path inside (lexically, then
        resolved); any other value that names an existing path, or passes through one, must not resolve outside
        (`cat link_out`). Neither may lead into `.git` in any spelling (`--output=.git/hooks/x`, `.GIT/config`
        on a case-insensitive filesystem, a symlink to `.git`): writes there become code the sidecar's own git
        runs would execute, and reads there are not the workspace's files."""
        try:
            rel = self._resolve_now(value).rel if is_path_like(value) else self.jail.check_argument(value)
        except JailError as exc:
            raise ToolFailure(str(exc), paths=[value]) from exc
        if is_git_internal(rel) or is_git_internal(value):
            raise ToolFailure(
                f"the argument '{value}' names a path inside .git; run_command may not read or write git's "
                "internals (use git_status, git_diff or an allowed git command)",
                paths=[value],
            )

    async def _git(self, *args: str) -> runner.RunResult:
        try:
            argv = await self.git.argv(list(args))
        except GitRefused as exc:
            raise ToolFailure(str(exc)) from exc
        result = await runner.run(
            argv,
            cwd=self.jail.root,
            timeout_s=self.settings.command_timeout_s,
            max_chars=self.settings.output_max_chars,
            env=self.git.env(),
        )
        if result.exit_code == 127:
            raise ToolFailure("git is not installed on the sidecar's machine")
        if result.exit_code != 0 and "not a git repository" in result.output.lower():
            raise ToolFailure("the workspace is not a git repository (run_command 'git init' if it should be)")
        return result

    async def git_status(self) -> ToolOutput:
        result = await self._git("status", "--short", "--branch", "--untracked-files=all", "--ignore-submodules=all")
        text = result.output if result.output.strip() else "(clean)"
        return ToolOutput(text, exit_code=result.exit_code)

    async def git_diff(self, path: str | None = None, staged: bool = False) -> ToolOutput:
        args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--ignore-submodules=all", "--stat", "--patch"]
        if staged:
            args.append("--cached")
        paths: list[str] = []
        args.append("--")
        if path is not None and path.strip():
            refused = check_argument(path.strip(), "path")
            if refused is not None:
                raise ToolFailure(refused.reason, paths=[path])
            target = await self._resolve(path)
            args.append(target.shown)
            paths.append(target.shown)
        result = await self._git(*args)
        text = result.output if result.output.strip() else "(no changes)"
        return ToolOutput(text, paths, exit_code=result.exit_code)
