"""The sidecar's tool-output cache, as pure decisions and data structures (no I/O, no clock reads).

The safe pattern (`reference/mcp.md`), split between this module and the shell (`toolserver/cache.py`):

- Keys are the tool name and its normalized arguments (`cache_key`).
- `Generations` counts filesystem events per path (and per directory, for every path below it); the shell
  bumps it from the watcher's events (on the event loop) and for its own writes (synchronously). A flush
  (watcher overflow, error, restart) starts a new epoch, which invalidates everything.
- An entry records its inputs: the files read with their `FileStamp`s, or a tree-wide scope, plus the
  generation and epoch seen when the computation started. It is stored only if nothing changed meanwhile
  (`admit`) and it is served only if re-validation passes (`validate`): stamps equal to a fresh stat, the
  same generation and epoch. Files changed within the racy window are never stored (`is_racily_clean`).
- `ByteLRU` bounds the entries by bytes and counts hits, misses, invalidations and evictions.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")

# Files whose mtime or ctime is this close to `now` are "racily clean" (git's term): a later write in the
# same filesystem timestamp tick would leave the stamp unchanged, so their content is not cached.
RACY_WINDOW_NS = 100_000_000
# Whole-second timestamps hint at a filesystem with 1 s (or 2 s) resolution: widen the window to match.
COARSE_RACY_WINDOW_NS = 2_100_000_000


class FileStamp(NamedTuple):
    """What a stat says about a file; any write, rename, `cp -p` or `touch` changes at least one field."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


def cache_key(tool: str, args: Mapping[str, object]) -> str:
    """A stable key: the tool and its arguments with `None` values dropped, keys sorted, compact JSON."""
    kept = {k: v for k, v in args.items() if v is not None}
    return tool + " " + json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def is_racily_clean(stamp: FileStamp, now_ns: int, window_ns: int = RACY_WINDOW_NS) -> bool:
    """True when the file changed too recently (or has a future timestamp) for its stamp to be trusted."""
    newest = max(stamp.mtime_ns, stamp.ctime_ns)
    if stamp.mtime_ns % 1_000_000_000 == 0 and stamp.ctime_ns % 1_000_000_000 == 0:
        window_ns = max(window_ns, COARSE_RACY_WINDOW_NS)
    return now_ns - newest < window_ns


def ancestors(path: str) -> Iterator[str]:
    """Every proper ancestor of a normalized absolute path, nearest first, ending with '/'."""
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        yield path


@dataclass
class Generations:
    """Per-path and per-directory event counters, and the epoch that a flush starts.

    `current` only grows (a flush bumps it too), so "did anything change since generation G?" is
    `generations.current != G`. `of_path(p)` is the generation of the last event on `p` itself or on any
    of its ancestors (a directory renamed or deleted takes its files with it); `of_scope(d)` adds every
    event anywhere below `d`. Unknown paths are generation 0.
    """

    current: int = 0
    epoch: int = 0
    _path: dict[str, int] = field(default_factory=dict)
    _below: dict[str, int] = field(default_factory=dict)

    def bump(self, path: str) -> int:
        """Record an event on normalized absolute `path`; returns the new generation."""
        self.current += 1
        g = self.current
        self._path[path] = g
        self._below[path] = g
        for parent in ancestors(path):
            self._below[parent] = g
        return g

    def flush(self) -> int:
        """Forget everything: a new epoch (every recorded input is invalid) and a new generation."""
        self.current += 1
        self.epoch += 1
        self._path.clear()
        self._below.clear()
        return self.current

    def of_path(self, path: str) -> int:
        g = self._path.get(path, 0)
        for parent in ancestors(path):
            g = max(g, self._path.get(parent, 0))
        return g

    def of_scope(self, scope: str) -> int:
        return max(self._below.get(scope, 0), self.of_path(scope))

    def paths_tracked(self) -> int:
        return len(self._path)


@dataclass(frozen=True)
class Inputs:
    """What a cached result depended on.

    `files`: the paths stat'ed on every hit, with the stamps recorded when they were read. `paths`: the
    paths whose events invalidate the entry (a file's real path and, if different, the path it was asked
    by, which may run through a symlink). `scope`: a directory for tree-wide tools (any event below it).
    """

    files: tuple[tuple[str, FileStamp], ...] = ()
    paths: tuple[str, ...] = ()
    scope: str | None = None

    def stamps(self) -> tuple[FileStamp, ...]:
        return tuple(stamp for _, stamp in self.files)


@dataclass(frozen=True)
class Snapshot:
    """The generation of an entry's inputs and the epoch, read when its computation started."""

    generation: int
    epoch: int


@dataclass(frozen=True)
class Mark:
    """`Generations.current` and the epoch at one moment: what a computation records when it starts before its
    inputs are known (a path still to be resolved off the event loop), instead of their `Snapshot`."""

    current: int
    epoch: int


def mark_of(gens: Generations) -> Mark:
    return Mark(gens.current, gens.epoch)


def snapshot_at(mark: Mark, now: Snapshot) -> Snapshot | None:
    """The inputs' `Snapshot` as it was at `mark`, given the one they have `now`; None when an event touched
    them, or a flush happened, since the mark.

    Exact, not a guess: within an epoch an input's generation only grows, and every event takes a number above
    the `current` it found, so the inputs were untouched since the mark iff their generation now is at most the
    mark's `current` (then it is also what it was at the mark)."""
    if now.epoch != mark.epoch or now.generation > mark.current:
        return None
    return now


def inputs_generation(gens: Generations, inputs: Inputs) -> int:
    """The newest event generation touching any of `inputs`."""
    g = gens.of_scope(inputs.scope) if inputs.scope is not None else 0
    for path in inputs.paths:
        g = max(g, gens.of_path(path))
    return g


class Admission(StrEnum):
    """Why a computed result was (not) stored; used as a metric label."""

    STORED = "stored"
    CHANGED_DURING_COMPUTE = "changed_during_compute"
    UNSTABLE_READ = "unstable_read"
    RACILY_CLEAN = "racily_clean"
    TOO_LARGE = "too_large"
    WATCHER_DOWN = "watcher_down"


def admit(
    *,
    before: Snapshot,
    after: Snapshot,
    stamps_before: tuple[FileStamp | None, ...],
    stamps_after: tuple[FileStamp | None, ...],
    now_ns: int,
    size: int,
    max_entry_bytes: int,
    watcher_healthy: bool,
    racy_window_ns: int = RACY_WINDOW_NS,
) -> Admission:
    """Decide whether a freshly computed result may be cached.

    Stored only when the watcher is healthy, no event touched the inputs and no flush happened while it
    was computed (same `Snapshot`), every input file stat'ed identically before and after reading it, no
    input file is racily clean, and the value fits.
    """
    if not watcher_healthy:
        return Admission.WATCHER_DOWN
    if before != after:
        return Admission.CHANGED_DURING_COMPUTE
    if stamps_before != stamps_after or any(s is None for s in stamps_after):
        return Admission.UNSTABLE_READ
    if any(s is not None and is_racily_clean(s, now_ns, racy_window_ns) for s in stamps_after):
        return Admission.RACILY_CLEAN
    if size > max_entry_bytes:
        return Admission.TOO_LARGE
    return Admission.STORED


class Validity(StrEnum):
    """Outcome of re-validating a cached entry before serving it; used as a metric label."""

    VALID = "valid"
    EPOCH_CHANGED = "epoch_changed"
    GENERATION_CHANGED = "generation_changed"
    STAMP_CHANGED = "stamp_changed"


def validate(
    recorded: Snapshot, current: Snapshot, recorded_stamps: tuple[FileStamp, ...], fresh: tuple[FileStamp | None, ...]
) -> Validity:
    """An entry is served only if no flush and no event happened since it was computed and a fresh stat of
    every input file equals the recorded stamp (`None` = the file is gone)."""
    if recorded.epoch != current.epoch:
        return Validity.EPOCH_CHANGED
    if recorded.generation != current.generation:
        return Validity.GENERATION_CHANGED
    if recorded_stamps != fresh:
        return Validity.STAMP_CHANGED
    return Validity.VALID


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    evictions: int = 0
    stores: int = 0
    rejected: int = 0
    flushes: int = 0
    bytes: int = 0
    entries: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ByteLRU(Generic[V]):
    """Least-recently-used map bounded by the total `size` given for its values.

    `get` counts a hit or a miss and refreshes recency; `invalidate` drops an entry found stale (counted);
    `put` evicts the least recently used entries until the new one fits (an entry larger than the bound
    is not stored). `clear` is a flush.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            self.stats.misses += 1
            return None
        self._items.move_to_end(key)
        self.stats.hits += 1
        return item[0]

    def peek(self, key: str) -> V | None:
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: str, value: V, size: int) -> bool:
        self._drop(key)
        if size > self.max_bytes:
            self.stats.rejected += 1
            return False
        while self._items and self.stats.bytes + size > self.max_bytes:
            _, (_, old_size) = self._items.popitem(last=False)
            self.stats.bytes -= old_size
            self.stats.evictions += 1
        self._items[key] = (value, size)
        self.stats.bytes += size
        self.stats.stores += 1
        self.stats.entries = len(self._items)
        return True

    def invalidate(self, key: str) -> None:
        """Drop an entry found stale: the hit counted by `get` becomes a miss and an invalidation."""
        if self._drop(key):
            self.stats.invalidations += 1
            self.stats.hits -= 1
            self.stats.misses += 1

    def clear(self) -> None:
        self._items.clear()
        self.stats.bytes = 0
        self.stats.entries = 0
        self.stats.flushes += 1

    def _drop(self, key: str) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self.stats.bytes -= item[1]
        self.stats.entries = len(self._items)
        return True
