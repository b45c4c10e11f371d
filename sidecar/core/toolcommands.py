"""Which commands the sidecar may run for the model (pure: parsing and allowlist matching, no execution).

`run_command` never goes through a shell: the command is split like a POSIX shell would (`shlex`), so `;`,
`|`, `&&`, `$()` and redirections are plain arguments, never operators. It runs only when its argument list
matches an allowlist entry:

- an entry is itself a command line; its words must equal the command's first words;
- a final `*` word allows any further arguments (`"git log *"`), otherwise the match is exact (`"git status"`);
- a word may be an `fnmatch` pattern (`"python -m pytest *"`, `"ls *"`, `"make test-*"`).

The test target for `run_tests` is checked here too: it must not start with `-` and its path part (before a
pytest `::` node id) goes through the workspace jail like any other path.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from sidecar.core.paths import Refused, check_argument


@dataclass(frozen=True)
class Allowed:
    argv: tuple[str, ...]
    entry: str


def split_command(command: str) -> tuple[str, ...] | Refused:
    """Split a command line into words like a POSIX shell (no expansion); refuse what cannot be split."""
    if "\x00" in command:
        return Refused("the command contains a NUL byte")
    try:
        argv = tuple(shlex.split(command, posix=True))
    except ValueError as exc:
        return Refused(f"the command could not be parsed ({exc}); check its quoting")
    if not argv:
        return Refused("the command is empty")
    return argv


def match_allowlist(argv: Sequence[str], allowlist: Sequence[str]) -> str | None:
    """The first allowlist entry that permits `argv`, or None."""
    for entry in allowlist:
        words = split_command(entry)
        if isinstance(words, Refused):
            continue
        open_ended = words[-1] == "*"
        fixed = words[:-1] if open_ended else words
        if len(argv) < len(fixed) or (not open_ended and len(argv) != len(fixed)):
            continue
        if all(fnmatchcase(arg, pattern) for arg, pattern in zip(argv, fixed, strict=False)):
            return entry
    return None


def check_command(command: str, allowlist: Sequence[str]) -> Allowed | Refused:
    """Parse `command` and require an allowlist entry for it; the refusal lists what is allowed."""
    argv = split_command(command)
    if isinstance(argv, Refused):
        return argv
    entry = match_allowlist(argv, allowlist)
    if entry is None:
        if not allowlist:
            return Refused(
                "run_command is disabled: no commands are allowed (the sidecar's allowlist is empty); "
                "use run_tests for the test suite"
            )
        shown = ", ".join(f"'{e}'" for e in allowlist)
        return Refused(f"'{shlex.join(argv)}' is not an allowed command. Allowed: {shown}")
    return Allowed(argv, entry)


def split_test_target(target: str) -> tuple[str, str] | Refused:
    """Split a pytest-style target `path::node` into (path, '::node'); refuse flag-like targets."""
    refused = check_argument(target, "test target")
    if refused is not None:
        return refused
    path, sep, node = target.partition("::")
    if not path:
        return Refused(f"the test target '{target}' has no path; pass e.g. tests/test_x.py::test_name")
    return path, sep + node


def path_like_arguments(argv: Sequence[str]) -> list[str]:
    """Arguments of an allowed command that name paths the jail must check: absolute or with a '..' part."""
    found = []
    for arg in argv[1:]:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value.startswith("/") or ".." in value.split("/") or value.startswith("~"):
            found.append(value)
    return found
