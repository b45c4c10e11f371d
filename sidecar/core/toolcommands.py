"""Which commands the sidecar may run for the model (pure: parsing and allowlist matching, no execution).

`run_command` never goes through a shell: the command is split like a POSIX shell would (`shlex`), so `;`,
`|`, `&&`, `$()` and redirections are plain arguments, never operators. It runs only when its argument list
matches an allowlist entry:

- an entry is itself a command line; its words must equal the command's first words;
- a final `*` word allows any further arguments (`"git log *"`), otherwise the match is exact (`"git status"`);
- a word may be an `fnmatch` pattern (`"python -m pytest *"`, `"ls *"`, `"make test-*"`).

Every argument the model chose that a program could open as a path (`argument_values`) goes through the
workspace jail before the command runs: absolute, `~` and '..' ones lexically (`path_like_arguments`), and all
of them after the shell resolved symlinks, so `cat link_out` is refused when `link_out` leads outside.

Values are judged by what a program may do with them, not only by their spelling: a short option's attached
value (`-ofile`) and each part of a value after '=', ',' or ':' (`-o cache_dir=/out`) are paths too
(`path_candidates`), and `@file` (an argument file, read by pytest and compilers) is refused.

The test target for `run_tests` is checked here too: it must not start with `-` or `@` and its path part
(before a pytest `::` node id) goes through the workspace jail like any other path.
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
    """Split a pytest-style target `path::node` into (path, '::node'); refuse flag-like and `@file` targets."""
    refused = check_argument(target, "test target") or refuse_argument_file(target, "test target")
    if refused is not None:
        return refused
    path, sep, node = target.partition("::")
    if not path:
        return Refused(f"the test target '{target}' has no path; pass e.g. tests/test_x.py::test_name")
    return path, sep + node


def path_like_arguments(argv: Sequence[str]) -> list[str]:
    """Arguments of an allowed command that name paths the jail must check lexically: absolute, `~` or with a
    '..' part (refused unless they lead inside the workspace)."""
    return [value for value in _values(argv[1:]) if is_path_like(value)]


def is_path_like(value: str) -> bool:
    """True for a value that can only be meant as a path outside the lexical workspace tree: absolute, starting
    with '~', or with a '..' component (a revision range like `main..feature` has no '..' component)."""
    return value.startswith("/") or value.startswith("~") or ".." in value.split("/")


def argument_values(allowed: Allowed) -> list[str]:
    """Every value of an allowed command the model chose and a program could open as a path.

    That is each argument past the allowlist entry's literal words (a word matched by a pattern such as
    `test-*` counts as chosen), and the value of each `--opt=value`; a bare flag (`-la`, `--oneline`) is not a
    path. The shell resolves each one through the jail, since a relative name can be a symlink leading out
    (`cat link_out`, `git log --output=dir_out/x`). An attached short-option value (`-ofile`) is not split off.
    """
    fixed = split_command(allowed.entry)
    literal = 0
    if not isinstance(fixed, Refused):
        words = fixed[:-1] if fixed[-1] == "*" else fixed
        for word, arg in zip(words, allowed.argv, strict=False):
            if word != arg or any(c in word for c in "*?["):
                break
            literal += 1
    return _values(allowed.argv[max(literal, 1) :])


def _values(args: Sequence[str]) -> list[str]:
    found = []
    for arg in args:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value and not value.startswith("-"):
            found.append(value)
        elif len(arg) > 2 and arg[0] == "-" and arg[1] not in "-=" and "=" not in arg:
            # `-ofile`, `-C/dir`: a short option's attached value is as much a path as a separate one.
            found.append(arg[2:])
    return found


def path_candidates(value: str) -> list[str]:
    """Every string a program could open as a path from one argument value: the value, and each part of it after
    splitting on '=', ',' and ':' (`-o cache_dir=/out` to pytest, `--opt=a:b` search paths, `k=v,k2=v2` lists).
    A URL part is not split: a `file://` URL names its path (`git clone file:///elsewhere`), any other scheme
    names no local path (`https://host/x`)."""
    found = [value]
    for piece in value.replace(",", "=").split("="):
        for part in _piece_paths(piece):
            if part and part not in found:
                found.append(part)
    return found


def _piece_paths(piece: str) -> list[str]:
    scheme, sep, rest = piece.partition("://")
    if not (sep and scheme.isalpha()):
        return piece.split(":")
    return [rest or "/"] if scheme.lower() == "file" else []


def refuse_argument_file(value: str, what: str = "argument") -> Refused | None:
    """Refuse `@file`: pytest, compilers and many others read further arguments from it, which no check sees
    (an `@args.txt` of `--basetemp=/outside` made pytest empty a directory outside the workspace)."""
    if value.startswith("@"):
        return Refused(
            f"the {what} '{value}' starts with '@', which the program would read as a file of more arguments; "
            "pass the arguments themselves"
        )
    return None
