"""The tool-output cache's shell: asks the watcher for barriers, applies `core.toolcache` decisions.

It runs on the event loop and never stats or reads the workspace itself: the tool bodies do that off the
loop (`offload.py`) and hand it the stamps they saw. Two kinds of entries:
- file entries (`read_file`): inputs are files with their stamps; a hit needs a fresh stat of every input,
  taken by the caller after the call began (no barrier needed: a stat is the ground truth), and checks that
  no event or flush touched them since they were read;
- tree entries (`list_dir`, `search`, `run_tests`): inputs are a directory scope; a hit first passes the
  watcher's consistency barrier, then checks that no event below the scope (and no flush) happened since
  the computation started.

Results are stored only when `core.toolcache.admit` says so (nothing changed while computing, stable stat,
not racily clean, healthy watcher); "while computing" is measured from a `Mark` taken when the computation
started, before its inputs were even resolved (`core.toolcache.snapshot_at`). Concurrent identical tree
computations share one run (single flight).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sidecar.core.toolcache import (
    RACY_WINDOW_NS,
    Admission,
    ByteLRU,
    FileStamp,
    Generations,
    Inputs,
    Mark,
    Snapshot,
    Validity,
    admit,
    inputs_generation,
    mark_of,
    snapshot_at,
    validate,
)
from sidecar.toolserver.watcher import Watcher

V = TypeVar("V")


def stamp_of(st: os.stat_result) -> FileStamp:
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_stamp(path: str) -> FileStamp | None:
    """The stamp of whatever `path` names now (following symlinks), None if it is gone. A stat: call it off the
    event loop."""
    try:
        return stamp_of(os.stat(path))
    except OSError:
        return None


@dataclass(frozen=True)
class Entry(Generic[V]):
    value: V
    inputs: Inputs
    snapshot: Snapshot


class ToolCache:
    """Byte-bounded, validated cache of tool outputs; see the module docstring."""

    def __init__(
        self,
        gens: Generations,
        watcher: Watcher,
        *,
        max_bytes: int,
        racy_window_ns: int = RACY_WINDOW_NS,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.gens = gens
        self.watcher = watcher
        self.max_bytes = max_bytes
        self.racy_window_ns = racy_window_ns
        self.clock_ns = clock_ns
        self.lru: ByteLRU[Entry[Any]] = ByteLRU(max_bytes)
        self.admissions: dict[str, int] = {a.value: 0 for a in Admission}
        self._inflight: dict[str, asyncio.Future[None]] = {}

    @property
    def stats(self) -> dict[str, Any]:
        return {**self.lru.stats.as_dict(), "admissions": dict(self.admissions), "generation": self.gens.current}

    def flush(self, reason: str = "") -> None:
        self.lru.clear()

    def snapshot(self, inputs: Inputs) -> Snapshot:
        return Snapshot(inputs_generation(self.gens, inputs), self.gens.epoch)

    def mark(self) -> Mark:
        """Taken when a computation starts; `store` admits its result only if no event touched its inputs since."""
        return mark_of(self.gens)

    def peek(self, key: str) -> Any | None:
        """The value stored under `key`, unvalidated and uncounted: only a hint of what a lookup may find."""
        entry = self.lru.peek(key)
        return None if entry is None else entry.value

    def lookup_files(self, key: str, fresh: Mapping[str, FileStamp | None]) -> Any | None:
        """A validated file entry's value, or None (a stale entry is dropped and counted).

        `fresh` maps each input path to a stat of it taken after the caller's call began (a path left out
        counts as gone)."""
        entry = self.lru.get(key)
        if entry is None:
            return None
        stamps = tuple(fresh.get(path) for path, _ in entry.inputs.files)
        verdict = validate(entry.snapshot, self.snapshot(entry.inputs), entry.inputs.stamps(), stamps)
        if verdict is not Validity.VALID:
            self.lru.invalidate(key)
            return None
        return entry.value

    async def lookup_tree(self, key: str) -> Any | None:
        """A validated tree entry's value (after a consistency barrier), or None."""
        entry = self.lru.get(key)
        if entry is None:
            return None
        if not self.watcher.ensure_running() or not await self.watcher.barrier():
            self.lru.invalidate(key)
            return None
        verdict = validate(entry.snapshot, self.snapshot(entry.inputs), (), ())
        if verdict is not Validity.VALID or key not in self.lru:
            self.lru.invalidate(key)
            return None
        return entry.value

    def store(
        self,
        key: str,
        value: Any,
        size: int,
        inputs: Inputs,
        since: Mark,
        stamps_before: tuple[FileStamp | None, ...] = (),
        stamps_after: tuple[FileStamp | None, ...] = (),
    ) -> Admission:
        """Store a computed value if `admit` allows. `since` was taken when computing started; `stamps_before`
        and `stamps_after` are stats of `inputs.files`, in order, taken before and after they were read."""
        after = self.snapshot(inputs)
        before = snapshot_at(since, after)
        verdict = (
            Admission.CHANGED_DURING_COMPUTE
            if before is None
            else admit(
                before=before,
                after=after,
                stamps_before=stamps_before,
                stamps_after=stamps_after,
                now_ns=self.clock_ns(),
                size=size,
                max_entry_bytes=self.max_bytes,
                watcher_healthy=self.watcher.ensure_running(),
                racy_window_ns=self.racy_window_ns,
            )
        )
        self.admissions[verdict.value] += 1
        if before is not None and verdict is Admission.STORED:
            self.lru.put(key, Entry(value, inputs, before), size)
        return verdict

    async def tree(
        self,
        key: str,
        scope: str,
        compute: Callable[[], Awaitable[tuple[V, int | None]]],
    ) -> tuple[V, bool]:
        """A tree-wide result: a validated hit, else one shared computation; returns (value, was_cached).

        `compute` returns the value and its size in bytes, or None for a size to keep it out of the cache.
        """
        hit = await self.lookup_tree(key)
        if hit is not None:
            return hit, True
        running = self._inflight.get(key)
        if running is not None:
            await asyncio.shield(running)
            hit = await self.lookup_tree(key)
            if hit is not None:
                return hit, True
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            since = self.mark()
            value, size = await compute()
            if size is not None:
                self.store(key, value, size, Inputs(scope=scope), since)
            return value, False
        finally:
            if self._inflight.get(key) is done:
                del self._inflight[key]
            done.set_result(None)
