"""The sidecar's workspace jail, as pure checks over path strings (POSIX paths, no I/O).

The I/O shell (`sidecar/toolserver/jail.py`) resolves symlinks with the filesystem and opens files without
following links; every decision about what is allowed is made here, on strings:

1. `check_request(raw, roots)`: the path as the model wrote it. Refused: empty, NUL bytes, URIs, `~`, any `..`
   component, over-long paths, absolute paths outside every root (compared by whole components, so
   `/w-evil` is not inside `/w`). Relative paths are taken from the workspace root. Returns the normalized
   absolute path under the real root (an absolute path given under an alias of the root is mapped onto it).
2. `check_resolved(root, resolved)`: the same path after the shell resolved every symlink. It must still be
   inside the root; a symlink pointing out is refused here. New files are checked through their real parent
   (the shell resolves the parent and passes `parent/name`).
3. `check_argument(arg)`: a value placed into a command line must not start with `-` (flag injection).

Every refusal is a `Refused` whose `reason` tells the model what to do instead.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_PATH_CHARS = 4096
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass(frozen=True)
class Refused:
    """A path or argument the jail does not allow; `reason` is written for the model to act on."""

    reason: str


def is_within(root: str, path: str) -> bool:
    """True when normalized absolute `path` is `root` or below it, compared by whole components."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def relative_to(root: str, path: str) -> str:
    """`path` relative to `root` ('.' for the root itself); both normalized absolute, `path` within `root`."""
    if path == root:
        return "."
    return path[len(root.rstrip("/")) + 1 :]


def check_request(raw: str, roots: Sequence[str]) -> str | Refused:
    """Lexical checks on a requested path; returns its normalized absolute form under `roots[0]`.

    `roots[0]` is the workspace's real path; further entries are aliases the agent may use for the same
    directory (the path it was configured with before symlinks were resolved). All must be normalized
    absolute paths. Nothing is resolved here: the shell must still call `check_resolved` on the result.
    """
    root = roots[0]
    if "\x00" in raw:
        return Refused("the path contains a NUL byte; pass a plain path relative to the workspace root")
    path = raw.strip()
    if not path:
        return Refused(f"the path is empty; pass a path relative to the workspace root {root}")
    if len(path) > MAX_PATH_CHARS:
        return Refused(f"the path is longer than {MAX_PATH_CHARS} characters; pass a shorter path")
    if _URI.match(path):
        return Refused(f"'{path}' is a URI, not a file path; pass a path relative to the workspace root {root}")
    if path.startswith("~"):
        return Refused(f"'~' is not expanded; pass a path relative to the workspace root {root}")
    if ".." in path.split("/"):
        return Refused(f"'{path}' contains '..'; pass a path relative to the workspace root {root} without '..'")
    if path.startswith("/"):
        candidate = posixpath.normpath(path)
        if candidate.startswith("//"):
            candidate = "/" + candidate.lstrip("/")
        for alias in roots:
            if is_within(alias, candidate):
                rest = relative_to(alias, candidate)
                return root if rest == "." else posixpath.join(root, rest)
        return Refused(f"'{path}' is outside the workspace; pass a path inside {root} (or relative to it)")
    return posixpath.normpath(posixpath.join(root, path))


def check_resolved(root: str, resolved: str, requested: str | None = None) -> str | Refused:
    """The resolved (symlink-free) absolute path must lie within the real `root`; returns it relative to root."""
    shown = requested if requested is not None else resolved
    if "\x00" in resolved or not resolved.startswith("/"):
        return Refused(f"'{shown}' could not be resolved to a path inside the workspace")
    normalized = posixpath.normpath(resolved)
    if not is_within(root, normalized):
        return Refused(
            f"'{shown}' resolves outside the workspace (a symlink to {normalized}); "
            f"only files inside {root} can be used"
        )
    return relative_to(root, normalized)


def check_argument(arg: str, what: str = "argument") -> Refused | None:
    """Refuse a value that a command would read as a flag (or that carries a NUL byte)."""
    if "\x00" in arg:
        return Refused(f"the {what} contains a NUL byte")
    if arg.startswith("-"):
        return Refused(f"the {what} '{arg}' starts with '-', which the command would read as an option; remove it")
    return None


# Code points HFS+ ignores in names (git's `is_hfs_dotgit` list): `.g\u200cit` is `.git` there.
_HFS_IGNORED = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, *range(0x206A, 0x2070), 0xFEFF]
)


def is_dotgit(name: str) -> bool:
    """True for a path component that some filesystem takes as `.git`: any case (case-insensitive filesystems),
    with code points HFS+ ignores, with trailing dots or spaces or an NTFS stream (`.git::$INDEX_ALLOCATION`),
    or the NTFS short name `GIT~1`."""
    folded = name.translate(_HFS_IGNORED).casefold()
    folded = folded.split(":", 1)[0].rstrip(". ")
    return folded == ".git" or folded == "git~1"


def is_git_internal(rel: str) -> bool:
    """True for paths inside a `.git` directory (or the `.git` entry itself, in any spelling `is_dotgit` knows),
    relative to the root."""
    return any(is_dotgit(part) for part in rel.split("/"))


def has_component(rel: str, names: frozenset[str] | set[str]) -> bool:
    """True when any component of relative path `rel` is one of `names` (for ignored directories)."""
    return any(part in names for part in rel.split("/"))
