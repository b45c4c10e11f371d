"""Blocking filesystem work, run off the event loop: the one way tool bodies open, read, stat and write files.

`await offload(fn, *args)` runs `fn(*args)` on one of the sidecar's own worker threads, so the loop keeps
serving other calls, peeks, events and the watcher while a file is read, a directory walked or a path resolved
(a slow disk, a network filesystem, a 20 MiB file). The contract for what runs there:

- only filesystem calls and pure work: the cache, the generations and every other piece of the sidecar's state
  are read and written on the loop thread alone, before and after the hop (so their reasoning needs no locks);
- a caller that is cancelled does not abandon the work: it waits for `fn` to finish before the cancellation
  goes on, so a write has landed before the caller's cleanup invalidates it, and nothing keeps touching the
  workspace after its call ended. What `fn` returned is then handed to `discard` (close what it opened).

The threads are the sidecar's own (not the loop's default executor, which also resolves host names): a stuck
filesystem can hold at most `workers` of them and never stalls the event reporter. Measured per hop, beside
`asyncio.to_thread` and anyio's worker threads: `goose-sidecar bench toolserver` (the cached `read_file` row).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

WORKERS = 8


class Offload:
    """Worker threads for blocking filesystem calls; see the module docstring. `close` stops idle threads;
    a later call starts new ones."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, fn: Callable[..., T], *args: object, discard: Callable[[T], object] | None = None) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sidecar-io")
        future = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await _finish(future, discard)
            raise

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


async def _finish(future: asyncio.Future[T], discard: Callable[[T], object] | None) -> None:
    """Wait for `future` through any further cancellation, then hand its result to `discard`."""
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            continue
    if discard is not None and not future.cancelled() and future.exception() is None:
        discard(future.result())
