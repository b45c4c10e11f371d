"""Cache stress: concurrent readers and writers change files in every way a stale cache could miss.

Writers (threads, truly concurrent with the event loop) apply, at random: in-place rewrites of the same
size with the old mtime put back, atomic renames over the file, `cp -p` (content and timestamps copied),
`touch`, delete and recreate, directory swaps (rename away, rename a new one in), plus bursts of thousands
of files created and deleted at once to overflow the watcher's queue. Readers call `read_file` and
`search` through the sidecar's tools meanwhile.

Ground truth: every change to a file is a new version recorded with the times just before and just after
it. A read that started at t0 and returned version v is stale if version v+1 had already completed before
t0. This can only under-count (a completion recorded late), never flag a correct read.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.toolserver.sidecar import Sidecar
from sidecar.toolserver.tools import ToolFailure

LINE = re.compile(r"file (\d+) version (\d+)")
SEARCH_LINE = re.compile(r"^(?:d\d+|q)/f(\d+)\.txt:1:file (\d+) version (\d+)")
QUIET = 8  # files in q/, changed only while the watcher's queue is overflowing
WIDTH = 64


def content(index: int, version: int) -> str:
    """Every version of a file has the same size, so in-place rewrites keep the size."""
    return f"file {index} version {version:010d}".ljust(WIDTH - 1) + "\n"


@dataclass
class History:
    """Per file: (version, started_ns, finished_ns or None while in progress)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    versions: dict[int, list[list[Any]]] = field(default_factory=dict)

    def begin(self, index: int) -> list[Any]:
        with self.lock:
            entries = self.versions[index]
            entry = [entries[-1][0] + 1, time.monotonic_ns(), None]
            entries.append(entry)
            return entry

    def writing_during(self, index: int, t0: int, t1: int) -> bool:
        """True when some change of the file overlapped [t0, t1] (its content may be half-written)."""
        with self.lock:
            return any(start <= t1 and (end is None or end >= t0) for _, start, end in self.versions[index])

    def is_stale(self, index: int, version: int, t0: int) -> bool:
        with self.lock:
            entries = self.versions[index]
            for i, (v, _, _) in enumerate(entries):
                if v == version:
                    later = entries[i + 1 :]
                    return any(end is not None and end < t0 for _, _, end in later)
        return False


@dataclass
class StressResult:
    seconds: float
    files: int
    writer_ops: dict[str, int]
    reads: int
    searches: int
    search_lines: int
    stale_reads: int
    stale_search_lines: int
    absent_reads: int
    transient_reads: int
    cache_hits: int
    cache_misses: int
    flushes: int
    watcher_events: int

    @property
    def operations(self) -> int:
        return sum(self.writer_ops.values()) + self.reads + self.searches

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "operations": self.operations}


def _path(root: Path, index: int, dirs: int, files: int | None = None) -> Path:
    if files is not None and index >= files:
        return root / "q" / f"f{index}.txt"
    return root / f"d{index % dirs}" / f"f{index}.txt"


def setup(root: Path, files: int, dirs: int) -> History:
    history = History()
    for d in range(dirs):
        (root / f"d{d}").mkdir(parents=True, exist_ok=True)
    (root / "q").mkdir(exist_ok=True)
    for i in range(files + QUIET):
        _path(root, i, dirs, files).write_text(content(i, 0))
        history.versions[i] = [[0, 0, 0]]
    return history


class Writer(threading.Thread):
    """Applies random changes until `stop`; `lock` (shared by all writers) keeps each file's versions in order."""

    def __init__(
        self,
        root: Path,
        files: int,
        dirs: int,
        history: History,
        stop: threading.Event,
        lock: threading.Lock,
        seed: int,
    ) -> None:
        super().__init__(daemon=True)
        self.root, self.files, self.dirs, self.history, self.stop = root, files, dirs, history, stop
        self.rng = random.Random(seed)
        self.ops: dict[str, int] = {}
        self.lock = lock

    def run(self) -> None:
        kinds = ["same_size_old_mtime", "atomic_rename", "cp_p", "touch", "delete_recreate", "dir_swap"]
        weights = [30, 25, 15, 10, 15, 5]
        while not self.stop.is_set():
            kind = self.rng.choices(kinds, weights)[0]
            index = self.rng.randrange(self.files)
            with self.lock:
                try:
                    getattr(self, kind)(index)
                except FileNotFoundError:
                    continue
            self.ops[kind] = self.ops.get(kind, 0) + 1
            time.sleep(self.rng.uniform(0, 0.004))

    def _finish(self, entry: list[Any]) -> None:
        entry[2] = time.monotonic_ns()

    def same_size_old_mtime(self, index: int) -> None:
        path = _path(self.root, index, self.dirs)
        st = path.stat()
        entry = self.history.begin(index)
        with open(path, "r+") as f:
            f.write(content(index, entry[0]))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        self._finish(entry)

    def atomic_rename(self, index: int) -> None:
        path = _path(self.root, index, self.dirs)
        tmp = path.with_name(f".{path.name}.swp")
        entry = self.history.begin(index)
        tmp.write_text(content(index, entry[0]))
        os.replace(tmp, path)
        self._finish(entry)

    def cp_p(self, index: int) -> None:
        path = _path(self.root, index, self.dirs)
        st = path.stat()
        source = self.root / f".src{index}"
        entry = self.history.begin(index)
        source.write_text(content(index, entry[0]))
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # cp -p keeps the (old) timestamps
        shutil.copy2(source, path)
        self._finish(entry)
        source.unlink()

    def touch(self, index: int) -> None:
        os.utime(_path(self.root, index, self.dirs))

    def delete_recreate(self, index: int) -> None:
        path = _path(self.root, index, self.dirs)
        entry = self.history.begin(index)
        path.unlink()
        path.write_text(content(index, entry[0]))
        self._finish(entry)

    def dir_swap(self, index: int) -> None:
        d = index % self.dirs
        live = self.root / f"d{d}"
        fresh = self.root / f".d{d}.new"
        old = self.root / f".d{d}.old"
        members = [i for i in range(self.files) if i % self.dirs == d]
        fresh.mkdir()
        entries = [self.history.begin(i) for i in members]
        for i, entry in zip(members, entries, strict=True):
            (fresh / f"f{i}.txt").write_text(content(i, entry[0]))
        live.rename(old)
        fresh.rename(live)
        for entry in entries:
            self._finish(entry)
        shutil.rmtree(old)


def burst(root: Path, count: int, stop: threading.Event, rounds: int) -> int:
    """Create then delete `count` files at once, `rounds` times: more events than inotify's queue holds."""
    made = 0
    for r in range(rounds):
        if stop.is_set():
            break
        d = root / f".burst{r}"
        d.mkdir()
        for i in range(count):
            (d / f"b{i}").write_bytes(b"x")
        made += count
        shutil.rmtree(d)
    return made


def overflow(
    sidecar: Sidecar, history: History, files: int, stop: threading.Event, rounds: int, events: int = 20_000
) -> int:
    """Overflow the kernel's inotify queue for real: stall watchdog's reader (by holding its lock, a test-only
    reach into watchdog's internals) while more events than the queue holds (16384 by default) are made, then
    change a file of the otherwise quiet q/ directory: its event is lost, and only the overflow flush can
    keep a cached search of q/ from going stale. Returns the rounds done."""
    root = Path(sidecar.jail.root)
    inotify = getattr(sidecar.watcher._observer, "_inotify_fd", None)
    lock = getattr(inotify, "_lock", None)
    if lock is None:
        return 0
    scratch = root / ".overflow"
    scratch.mkdir(exist_ok=True)
    pair = [scratch / "a", scratch / "b"]
    for p in pair:
        p.write_bytes(b"")
    done = 0
    for _ in range(rounds):
        if stop.wait(0.5):
            break
        with lock:
            for i in range(events):
                os.utime(pair[i % 2])  # alternating, so the kernel cannot merge them
            index = files + done % QUIET
            entry = history.begin(index)
            _path(root, index, 0, files).write_text(content(index, entry[0]))
            entry[2] = time.monotonic_ns()
        done += 1
    return done


async def run_stress(
    sidecar: Sidecar,
    seconds: float = 3.0,
    files: int = 120,
    dirs: int = 4,
    readers: int = 4,
    writers: int = 2,
    burst_files: int = 6000,
    burst_rounds: int = 1,
    overflow_rounds: int = 1,
    seed: int = 1,
    min_reads: int = 0,
    min_searches: int = 0,
    writer_kinds: tuple[str, ...] = (),
    max_seconds: float | None = None,
) -> StressResult:
    """Run the stress on `sidecar` (started, over an empty workspace); returns counts, stale reads included.

    It runs for `seconds`, then on until at least `min_reads` reads and `min_searches` searches were made and the
    writers did every change in `writer_kinds`, but never past `max_seconds` (default: `seconds`). So a test can
    ask for a minimum amount of exercise and still pass on a slow or busy machine, where less work fits in a
    fixed time; a cap still ends a run that makes no progress.
    """
    root = Path(sidecar.jail.root)
    history = setup(root, files, dirs)
    await asyncio.sleep(0.15)  # past the racy window, so that reads can be cached from the start
    await sidecar.watcher.barrier()
    hits0, misses0 = sidecar.cache.lru.stats.hits, sidecar.cache.lru.stats.misses
    stop = threading.Event()
    lock = threading.Lock()
    threads = [Writer(root, files, dirs, history, stop, lock, seed + k) for k in range(writers)]
    for t in threads:
        t.start()
    burster = asyncio.create_task(asyncio.to_thread(burst, root, burst_files, stop, burst_rounds))
    overflower = asyncio.create_task(asyncio.to_thread(overflow, sidecar, history, files, stop, overflow_rounds))
    counts = {"transient": 0, "reads": 0, "stale": 0, "absent": 0, "searches": 0, "lines": 0, "stale_lines": 0}
    started = time.monotonic()
    deadline, cap = started + seconds, started + max(seconds, max_seconds or seconds)

    def exercised() -> bool:
        done = {kind for t in threads for kind, n in dict(t.ops).items() if n > 0}  # dict(): one atomic copy
        return counts["reads"] >= min_reads and counts["searches"] >= min_searches and done >= set(writer_kinds)

    def running() -> bool:
        now = time.monotonic()
        return now < deadline or (now < cap and not exercised())

    async def read_loop(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        while running():
            index = rng.randrange(files)
            t0 = time.monotonic_ns()
            try:
                out = await sidecar.tools.read_file(f"d{index % dirs}/f{index}.txt")
            except ToolFailure:
                counts["absent"] += 1  # between a delete and its recreation: not content, cannot be stale
            else:
                counts["reads"] += 1
                found = LINE.search(out.text)
                if found is None and history.writing_during(index, t0, time.monotonic_ns()):
                    counts["transient"] += 1  # a write caught half-way (an empty new file): not a cached value
                elif found is None or int(found.group(1)) != index or history.is_stale(index, int(found.group(2)), t0):
                    counts["stale"] += 1
            await asyncio.sleep(0)

    async def search_loop() -> None:
        turn = 0
        while running():
            turn += 1
            t0 = time.monotonic_ns()
            try:
                out = await sidecar.tools.search("version", "q" if turn % 2 else ".", max_results=1000)
            except ToolFailure:
                continue
            counts["searches"] += 1
            for line in out.text.split("\n"):
                found = SEARCH_LINE.match(line)  # the live files only, not writers' temporary copies
                if found is None:
                    continue
                counts["lines"] += 1
                if found.group(1) != found.group(2) or history.is_stale(int(found.group(2)), int(found.group(3)), t0):
                    counts["stale_lines"] += 1
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(read_loop(k) for k in range(readers)), search_loop())
    finally:
        stop.set()
        for t in threads:
            await asyncio.to_thread(t.join)
        await burster
        await overflower
    ops: dict[str, int] = {}
    for t in threads:
        for kind, n in t.ops.items():
            ops[kind] = ops.get(kind, 0) + n
    ops["burst_files"] = burster.result()
    ops["forced_overflows"] = overflower.result()
    stats = sidecar.cache.lru.stats
    return StressResult(
        seconds=round(time.monotonic() - started, 1),
        files=files,
        writer_ops=ops,
        reads=counts["reads"],
        searches=counts["searches"],
        search_lines=counts["lines"],
        stale_reads=counts["stale"],
        stale_search_lines=counts["stale_lines"],
        absent_reads=counts["absent"],
        transient_reads=counts["transient"],
        cache_hits=stats.hits - hits0,
        cache_misses=stats.misses - misses0,
        flushes=sidecar.watcher.flushes,
        watcher_events=sidecar.watcher.events,
    )
