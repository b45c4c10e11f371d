"""The workspace watcher: watchdog (inotify) events become generation bumps on the event loop.

Contract (the safe pattern of `reference/mcp.md`):
- Started before anything is cached; `healthy` is False until then and whenever the observer has died.
- Events are handed from watchdog's thread to the loop with `loop.call_soon_threadsafe`, in order, and bump
  `Generations` there; `.git` internals and the configured ignored directories do not count. Directory
  "modified" events are dropped: the event on the child itself carries the change.
- Watchdog reports a kernel queue overflow (lost events) only in a log record; a logging handler on its
  loggers turns that, and any error it logs, into `flush` (a new epoch: every cache entry is invalid).
  A dead observer is flushed and restarted on the next check.
- `barrier()` is a consistency barrier (watchman's "cookie"): it creates a sentinel file and waits for its
  event; every event queued before it has then been applied. Tree-wide cache hits pass one first. The cookie
  is created and removed off the event loop (`offload.py`), like every other file the sidecar touches.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable
from itertools import count
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from sidecar.core.paths import has_component, is_within, relative_to
from sidecar.core.toolcache import Generations
from sidecar.obs import get_logger
from sidecar.toolserver.offload import Offload
from sidecar.toolserver.walk import COOKIE_PREFIX

log = get_logger(__name__)

_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileAttribEvent,
    DirAttribEvent,
]
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify", "watchdog.observers.api")


class Watcher:
    """Feeds `gens` from filesystem events under `root`; `on_flush(reason)` runs on every flush."""

    def __init__(
        self,
        root: str,
        gens: Generations,
        *,
        ignore_dirs: list[str] | None = None,
        on_flush: Callable[[str], None] | None = None,
        offload: Offload | None = None,
    ) -> None:
        self.root = root
        self.offload = offload or Offload()
        self.gens = gens
        self.ignore_dirs = frozenset(d for d in (ignore_dirs or []) if d)
        self.on_flush = on_flush
        self.events = 0
        self.flushes = 0
        self.last_event_ns = 0
        self._observer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alarm: _Alarm | None = None
        self._cookies: dict[str, asyncio.Future[None]] = {}
        self._serial = count()
        self._listeners: list[Callable[[str], None]] = []

    @property
    def cookie_dir(self) -> str:
        git = os.path.join(self.root, ".git")
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(git).st_mode):
                return git  # invisible to list_dir, search and git status
        return self.root

    @property
    def healthy(self) -> bool:
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        # The inotify reader thread (watchdog's InotifyFD) can die on its own; then no event ever arrives.
        reader = getattr(observer, "_inotify_fd", None)
        if reader is not None and not reader.is_alive():
            return False
        return all(emitter.is_alive() for emitter in observer.emitters)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._alarm is None:
            self._alarm = _Alarm(self)
            for name in _WATCHDOG_LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(self._alarm)
                if logger.getEffectiveLevel() > logging.WARNING:
                    logger.setLevel(logging.WARNING)
        try:
            self._start_observer()
        except InotifyLimitError as exc:
            if exc.errno == errno.EMFILE:
                # No inotify instance at all: too many sidecars for this uid on the host, the operator's to fix,
                # so it is a start-up error that names the sysctl, not a sidecar quietly serving uncached.
                raise
            log.warning("watcher could not start; tool results will not be cached", error=exc.strerror)
            self._observer = None
        except (OSError, RecursionError) as exc:
            # A tree deeper than watchdog's recursive walk (a repository can ship one 1,000 directories deep) or,
            # above, a watch limit (a repository with that many directories): serve the tools uncached (healthy
            # stays False) rather than not at all.
            log.warning("watcher could not start; tool results will not be cached", error=repr(exc)[:300])
            self._observer = None

    def _start_observer(self) -> None:
        try:  # watchdog opens its inotify instance in Observer() (newer) or in start() (older)
            observer = Observer()
            observer.schedule(_Handler(self), self.root, recursive=True, event_filter=_EVENTS)
            observer.daemon = True
            observer.start()
        except OSError as exc:
            raise explain_inotify_error(exc) from exc
        self._observer = observer

    async def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            await asyncio.to_thread(_stop_and_join, observer)
        if self._alarm is not None:
            for name in _WATCHDOG_LOGGERS:
                logging.getLogger(name).removeHandler(self._alarm)
            self._alarm = None
        for fut in self._cookies.values():
            if not fut.done():
                fut.cancel()

    def ensure_running(self) -> bool:
        """Restart a dead observer (flushing first, since its events were lost); True when healthy."""
        if self.healthy:
            return True
        if self._loop is None:
            return False
        self.restart("watcher stopped")
        return self.healthy

    def restart(self, reason: str) -> None:
        """Flush, then replace the observer with a fresh one (its watches and queue rebuilt from scratch)."""
        self.flush(reason)
        old, self._observer = self._observer, None
        if old is not None:
            # Stopped on a thread of its own: stopping joins watchdog's reader, which may be the stuck part.
            threading.Thread(target=old.stop, name="sidecar-watcher-stop", daemon=True).start()
        try:
            self._start_observer()
        except (OSError, RecursionError) as exc:
            log.warning("watcher restart failed", error=repr(exc)[:300])
            self._observer = None

    def flush(self, reason: str) -> None:
        """Invalidate everything (on the loop thread): a new epoch in `gens`, then `on_flush`."""
        self.flushes += 1
        self.gens.flush()
        log.info("cache flushed", reason=reason)
        if self.on_flush is not None:
            self.on_flush(reason)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(path)` on the loop for every counted event (benchmarks, speculation)."""
        self._listeners.append(listener)

    async def barrier(self, limit_s: float = 2.0) -> bool:
        """Wait until every event queued before this call has been applied; False (after a flush) on timeout."""
        if not self.healthy or self._loop is None:
            return False
        # Matched by name (its directory is found off the loop); unguessable, so no file the agent makes can pass
        # for it.
        name = f"{COOKIE_PREFIX}{os.getpid()}-{next(self._serial)}-{secrets.token_hex(8)}"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._cookies[name] = fut  # before the cookie exists, so its event cannot come first
        try:
            try:
                path = await self.offload(self._make_cookie, name, discard=_remove_cookie)
            except OSError as exc:
                log.warning("consistency barrier failed", error=str(exc))
                return False
            try:
                await asyncio.wait_for(fut, limit_s)
            except TimeoutError:
                # The cookie's event never came: events are lost or stuck. Start over with a fresh observer.
                self.restart("consistency barrier timed out")
                return False
            finally:
                await self.offload(_remove_cookie, path)
            return True
        finally:
            self._cookies.pop(name, None)

    def _make_cookie(self, name: str) -> str:
        """Blocking (off the loop only): create the cookie `name`; its path."""
        path = os.path.join(self.cookie_dir, name)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        return path

    def _apply(self, event: FileSystemEvent) -> None:
        """Runs on the loop thread, in event order."""
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = os.fsdecode(raw)
            name = path.rpartition("/")[2]
            if name.startswith(COOKIE_PREFIX):
                fut = self._cookies.get(name)
                if fut is not None and not fut.done():
                    fut.set_result(None)
                continue
            if not is_within(self.root, path):
                continue
            rel = relative_to(self.root, path)
            if rel != "." and has_component(rel, self.ignore_dirs | {".git"}):
                continue
            self.gens.bump(path)
            self.events += 1
            self.last_event_ns = time.perf_counter_ns()
            for listener in self._listeners:
                listener(path)

    def _post(self, event: FileSystemEvent) -> None:
        """Runs on watchdog's thread."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(self._apply, event)

    def _alarm_raised(self, message: str) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.flush, f"watchdog: {message}")


def _stop_and_join(observer: Any) -> None:
    observer.stop()
    observer.join(5.0)


class InotifyLimitError(OSError):
    """The kernel refused an inotify instance or watch; the message names the sysctl that raises the limit."""


def explain_inotify_error(exc: OSError) -> OSError:
    """`exc` as an InotifyLimitError naming the limit it hit (EMFILE: instances, ENOSPC: watches), else unchanged.

    Each sidecar holds one inotify instance and one watch per directory of its workspace. The limits count per
    user: containers without a user namespace of their own that run their sidecars as one uid (compose runs all
    as 1000) share the host's count, and only the host can raise it."""
    if exc.errno == errno.EMFILE:
        return InotifyLimitError(
            errno.EMFILE,
            "cannot watch the workspace: the kernel's inotify instance limit is reached "
            "(fs.inotify.max_user_instances, 128 per user by default; each sidecar uses one, and all sidecars of one "
            "uid on a host share the count; "
            "or this process's open-file limit). Raise it on the host: "
            "sudo sysctl -w fs.inotify.max_user_instances=1024 (persist it in /etc/sysctl.d/).",
        )
    if exc.errno == errno.ENOSPC:
        return InotifyLimitError(
            errno.ENOSPC,
            "cannot watch the workspace: the kernel's inotify watch limit is reached (fs.inotify.max_user_watches; "
            "one watch per directory, shared by all sidecars of one uid on a host). Raise it on the host: "
            "sudo sysctl -w fs.inotify.max_user_watches=1048576 (persist it in /etc/sysctl.d/).",
        )
    return exc


def probe_inotify() -> None:
    """Open and close one inotify instance (Linux), so a sidecar at the kernel's limit fails at start-up with the
    limit named (InotifyLimitError) instead of deep inside a server's start-up."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise explain_inotify_error(OSError(err, os.strerror(err)))
    os.close(fd)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type == "modified" and event.is_directory:
            return  # the child's own event carries the change
        self._watcher._post(event)


class _Alarm(logging.Handler):
    """Turns watchdog's overflow warnings and errors (its only signal of lost events) into flushes."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__(level=logging.WARNING)
        self._watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if "overflow" in message.lower() or record.levelno >= logging.ERROR:
            self._watcher._alarm_raised(message)


def _remove_cookie(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
