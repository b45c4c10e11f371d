"""The tool-output cache's shell: stats files, asks the watcher for barriers, applies `core.toolcache` decisions.

Two kinds of entries:
- file entries (`read_file`): inputs are files with their stamps; a hit re-stats every input (no barrier
  needed: a stat is the ground truth) and checks that no event or flush touched them since they were read;
- tree entries (`list_dir`, `search`, `run_tests`): inputs are a directory scope; a hit first passes the
  watcher's consistency barrier, then checks that no event below the scope (and no flush) happened since
  the computation started.

Results are stored only when `core.toolcache.admit` says so (nothing changed while computing, stable stat,
not racily clean, healthy watcher). Concurrent identical tree computations share one run (single flight).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sidecar.core.toolcache import (
    RACY_WINDOW_NS,
    Admission,
    ByteLRU,
    FileStamp,
    Generations,
    Inputs,
    Snapshot,
    Validity,
    admit,
    inputs_generation,
    validate,
)
from sidecar.toolserver.watcher import Watcher

V = TypeVar("V")


def stamp_of(st: os.stat_result) -> FileStamp:
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_stamp(path: str) -> FileStamp | None:
    """The stamp of whatever `path` names now (following symlinks), None if it is gone."""
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

    def lookup_files(self, key: str) -> Any | None:
        """A validated file entry's value, or None (a stale entry is dropped and counted)."""
        entry = self.lru.get(key)
        if entry is None:
            return None
        fresh = tuple(stat_stamp(path) for path, _ in entry.inputs.files)
        verdict = validate(entry.snapshot, self.snapshot(entry.inputs), entry.inputs.stamps(), fresh)
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
        before: Snapshot,
        stamps_before: tuple[FileStamp | None, ...] = (),
    ) -> Admission:
        """Store a computed value if `admit` allows; `before` was taken when computing started."""
        stamps_after = tuple(stat_stamp(path) for path, _ in inputs.files)
        verdict = admit(
            before=before,
            after=self.snapshot(inputs),
            stamps_before=stamps_before,
            stamps_after=stamps_after,
            now_ns=self.clock_ns(),
            size=size,
            max_entry_bytes=self.max_bytes,
            watcher_healthy=self.watcher.ensure_running(),
            racy_window_ns=self.racy_window_ns,
        )
        self.admissions[verdict.value] += 1
        if verdict is Admission.STORED:
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
            inputs = Inputs(scope=scope)
            before = self.snapshot(inputs)
            value, size = await compute()
            if size is not None:
                self.store(key, value, size, inputs, before)
            return value, False
        finally:
            if self._inflight.get(key) is done:
                del self._inflight[key]
            done.set_result(None)
