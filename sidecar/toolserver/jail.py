"""The workspace jail's I/O shell: resolve with the filesystem, decide with `sidecar.core.paths`, open safely.

Every path the model gives goes through `Jail.resolve`: lexical checks, `realpath` (symlinks resolved), then
the resolved path must still be inside the real root (a symlink pointing out is refused; a new file is
judged through its real parent because `realpath` resolves the existing part of a path).

Opening never trusts that check alone: files and directories are opened by walking the resolved path one
component at a time from a descriptor of the root with `O_NOFOLLOW`, so a symlink swapped in after the check
(even during the call) fails the open instead of leading out. Writes go to a temporary file in the same
directory, then `rename` over the target (atomic for readers), and never into `.git`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sidecar.core.paths import Refused, check_request, check_resolved, is_git_internal, relative_to

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_MARK = ".sidecar-tmp-"


class JailError(Exception):
    """A path the sidecar will not touch, or one that changed under it; the message is for the model."""


@dataclass(frozen=True)
class Target:
    """A requested path, checked: `lexical` is absolute under the real root (may pass through in-workspace
    symlinks), `real` has every symlink resolved, `rel` is `real` relative to the root, `shown` is how the
    path is displayed (relative to the root, as requested)."""

    requested: str
    lexical: str
    real: str
    rel: str
    shown: str


class Jail:
    """All file access of the sidecar, confined to one workspace root."""

    def __init__(self, workspace: str | os.PathLike[str]) -> None:
        given = os.path.abspath(os.fspath(workspace))
        real = os.path.realpath(given)
        if not os.path.isdir(real):
            raise ValueError(f"workspace {given} is not a directory")
        self.root = real
        self.roots: tuple[str, ...] = (real,) if given == real else (real, given)
        self._new_file_mode = 0o666 & ~_umask()

    def lexical(self, raw: str) -> str:
        """The absolute path `raw` asks for, checked lexically (no filesystem access, so safe on the event
        loop); `Target.lexical` of `resolve(raw)`. Raises JailError with the model's message."""
        lexical = check_request(raw, self.roots)
        if isinstance(lexical, Refused):
            raise JailError(lexical.reason)
        return lexical

    def resolve(self, raw: str) -> Target:
        """`raw` checked lexically, then with every symlink resolved (filesystem access: call it off the loop)."""
        lexical = self.lexical(raw)
        real = self._realpath(lexical, raw.strip())
        rel = check_resolved(self.root, real, raw.strip())
        if isinstance(rel, Refused):
            raise JailError(rel.reason)
        return Target(raw, lexical, real, rel, relative_to(self.root, lexical))

    def check_argument(self, value: str) -> str:
        """A relative command argument the model chose: refuse it when it names a path that resolves outside.

        A value that names nothing (a word, a revision) resolves to itself below the root and passes; one that
        is, or passes through, a symlink out is refused. Absolute, `~` and '..' values go through `resolve`.
        Returns the resolved path relative to the root.
        """
        lexical = posixpath.normpath(posixpath.join(self.root, value))
        rel = check_resolved(self.root, self._realpath(lexical, value), value)
        if isinstance(rel, Refused):
            raise JailError(f"the argument {rel.reason}")
        return rel

    @staticmethod
    def _realpath(path: str, shown: str) -> str:
        """`os.path.realpath`, which raises when a component it saw as a symlink is replaced before it reads it."""
        try:
            return os.path.realpath(path)
        except OSError as exc:
            raise JailError(
                f"'{shown}' changed while it was being resolved (a part of it was replaced during the call: "
                f"{exc.strerror}); retry"
            ) from exc

    def parts(self, target: Target) -> list[str]:
        return [] if target.rel == "." else target.rel.split("/")

    @contextlib.contextmanager
    def open_dir(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory at `parts` below the root, reached without following any symlink."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                child = self._step(fd, part, create)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _step(fd: int, part: str, create: bool) -> int:
        """Open directory `part` below `fd` without following a symlink (creating it if asked)."""
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise JailError(
                    f"'{part}' is not a directory inside the workspace (it is a file, or it changed during the "
                    "call); check the path and retry"
                ) from exc
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o777, dir_fd=fd)
        return os.open(part, _DIR_FLAGS, dir_fd=fd)

    def open_file(self, target: Target) -> int:
        """A read-only descriptor of the regular file `target`, opened without following symlinks."""
        parts = self.parts(target)
        if not parts:
            raise JailError(f"'{target.shown}' is the workspace root, a directory; use list_dir")
        with self.open_dir(parts[:-1]) as dir_fd:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise JailError(f"'{target.shown}' became a symlink during the call; retry") from exc
                raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                raise JailError(f"'{target.shown}' is a directory; use list_dir to see what it contains")
            raise JailError(f"'{target.shown}' is not a regular file (a device, socket or pipe)")
        return fd

    def open_scope(self, target: Target) -> tuple[int, bool]:
        """A descriptor of `target`, a directory or a regular file reached without following any symlink, and
        whether it is a directory (for `search`, which must search what was checked, never a name). The caller
        closes the descriptor."""
        parts = self.parts(target)
        if not parts:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), True
        with self.open_dir(parts[:-1]) as dir_fd:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise JailError(f"'{target.shown}' became a symlink during the call; retry") from exc
                raise
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
                raise JailError(f"'{target.shown}' is not a regular file or a directory (a device, socket or pipe)")
        except BaseException:
            os.close(fd)
            raise
        return fd, stat.S_ISDIR(mode)

    def write_atomic(self, target: Target, data: bytes) -> bool:
        """Replace (or create) `target` with `data` via a temporary file and rename; True when it was created.

        Missing parent directories are created. The file keeps its permission bits when it existed.
        """
        if is_git_internal(target.rel):
            raise JailError(f"'{target.shown}' is inside .git; the sidecar does not modify git internals")
        parts = self.parts(target)
        if not parts:
            raise JailError(f"'{target.shown}' is the workspace root, a directory; pass a file path")
        name = parts[-1]
        with self.open_dir(parts[:-1], create=True) as dir_fd:
            mode = self._new_file_mode
            created = True
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISDIR(st.st_mode):
                    raise JailError(f"'{target.shown}' is a directory; pass a file path")
                if not stat.S_ISREG(st.st_mode):
                    raise JailError(f"'{target.shown}' is not a regular file (it changed during the call); retry")
                mode = stat.S_IMODE(st.st_mode)
                created = False
            tmp = f".{name[:100]}{_TMP_MARK}{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        return created

    def path(self, rel: str) -> Path:
        return Path(self.root) if rel == "." else Path(self.root, rel)


def _umask() -> int:
    # os.umask can only be read by setting it; read once, when the jail is built.
    current = os.umask(0o022)
    os.umask(current)
    return current


def read_all(fd: int, limit: int | None = None) -> bytes:
    """Read a descriptor to its end (or `limit` bytes)."""
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, 1 << 20 if limit is None else min(1 << 20, limit - total + 1))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            break
    return b"".join(chunks)
