"""A gitignore-aware walk of the workspace for `list_dir` and the Python `search` backend.

Same selection as ripgrep run with `--hidden --no-require-git --no-ignore-parent --no-ignore-dot
--no-ignore-global --no-ignore-exclude` (how the sidecar runs it): hidden entries included, `.git` skipped,
`.gitignore` files honoured from the starting directory down, symlinks listed but never followed.
Entries come depth-first in byte order of their names (ripgrep's `--sort path`).

Directories are entered with descriptors opened relative to their parent with `O_NOFOLLOW`, so the walk
cannot be led outside the workspace by a symlink swapped in while it runs.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from sidecar.toolserver import gitignore

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_GITIGNORE_BYTES = 1 << 20
# The watcher's barrier files (watcher.py): never listed or searched. Defined here, not there, so that search
# code need not import watchdog.
COOKIE_PREFIX = ".goose-sidecar-cookie-"


@dataclass(frozen=True)
class Node:
    """One entry; `dir_fd` is its parent's descriptor, valid only until the walk moves on."""

    rel: str  # relative to the walk's start, '/'-separated
    name: str
    kind: str  # "file", "dir", "link" or "other"
    depth: int  # 1 for the start directory's own entries
    dir_fd: int
    size: int


def walk(start_fd: int, *, max_depth: int | None = None, prefix: str = "") -> Iterator[Node]:
    """Yield the entries below the directory `start_fd` (not closed here); `prefix` is prepended to `rel`."""
    yield from _walk(start_fd, prefix, 1, max_depth, [])


def _walk(fd: int, rel_dir: str, depth: int, max_depth: int | None, rules: list[gitignore.Rule]) -> Iterator[Node]:
    local = _read_gitignore(fd, rel_dir)
    if local:
        rules = rules + local
    try:
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name == ".git" or name.startswith(COOKIE_PREFIX):
            continue
        rel = f"{rel_dir}/{name}" if rel_dir else name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        mode = st.st_mode
        kind = (
            "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "link" if stat.S_ISLNK(mode) else "other"
        )
        if rules and gitignore.is_ignored(rel, kind == "dir", rules):
            continue
        yield Node(rel, name, kind, depth, fd, st.st_size)
        if kind == "dir" and (max_depth is None or depth < max_depth):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue
            try:
                yield from _walk(child, rel, depth + 1, max_depth, rules)
            finally:
                os.close(child)


def _read_gitignore(fd: int, rel_dir: str) -> list[gitignore.Rule]:
    try:
        gfd = os.open(".gitignore", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return []
    with contextlib.closing(os.fdopen(gfd, "rb")) as f:
        if not stat.S_ISREG(os.fstat(gfd).st_mode):
            return []
        text = f.read(MAX_GITIGNORE_BYTES).decode("utf-8", errors="replace")
    return gitignore.parse(text, rel_dir)
