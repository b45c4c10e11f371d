"""Allowlist and argument checks for the sidecar's commands (sidecar/core/toolcommands.py)."""

from __future__ import annotations

import pytest

from sidecar.core.paths import Refused
from sidecar.core.toolcommands import (
    Allowed,
    argument_values,
    check_command,
    match_allowlist,
    path_candidates,
    path_like_arguments,
    split_command,
    split_test_target,
)

ALLOW = ["git log *", "git status", "ls *", "python -m pytest *", "make test-*"]


@pytest.mark.parametrize(
    ("command", "entry"),
    [
        ("git log --oneline -5", "git log *"),
        ("git log", "git log *"),
        ("git status", "git status"),
        ("git status --short", None),  # exact entry: no extra arguments
        ("git push", None),
        ("ls -la src", "ls *"),
        ("python -m pytest -x tests", "python -m pytest *"),
        ("python -c 'import os'", None),
        ("make test-unit", "make test-*"),
        ("make install", None),
        ("gitx log", None),
        ("rm -rf /", None),
        ("ls; rm -rf /", None),  # ';' glued to a word is not an operator, and 'ls;' is not 'ls'
    ],
)
def test_match_allowlist(command: str, entry: str | None) -> None:
    argv = split_command(command)
    assert not isinstance(argv, Refused)
    assert match_allowlist(argv, ALLOW) == entry


def test_shell_operators_are_plain_words() -> None:
    result = check_command("ls . && rm -rf /", ALLOW)
    assert isinstance(result, Allowed)  # allowed by 'ls *', but '&&' reaches ls as an argument
    assert result.argv == ("ls", ".", "&&", "rm", "-rf", "/")


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("", "empty"),
        ("echo 'unterminated", "quoting"),
        ("a\x00b", "NUL"),
        ("curl http://x", "not an allowed command"),
    ],
)
def test_check_command_refusals(command: str, says: str) -> None:
    result = check_command(command, ALLOW)
    assert isinstance(result, Refused) and says in result.reason


def test_empty_allowlist_says_run_command_is_disabled() -> None:
    result = check_command("ls", [])
    assert isinstance(result, Refused) and "disabled" in result.reason


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tests/test_a.py", ("tests/test_a.py", "")),
        ("tests/test_a.py::test_x", ("tests/test_a.py", "::test_x")),
        ("tests/test_a.py::C::test[1-2]", ("tests/test_a.py", "::C::test[1-2]")),
        ("-k", None),
        ("--collect-only", None),
        ("::test_x", None),
    ],
)
def test_split_test_target(target: str, expected: tuple[str, str] | None) -> None:
    result = split_test_target(target)
    if expected is None:
        assert isinstance(result, Refused)
    else:
        assert result == expected


@pytest.mark.parametrize(
    ("argv", "paths"),
    [
        (("ls", "src", "-la"), []),
        (("ls", "/etc"), ["/etc"]),
        (("ls", "../.."), ["../.."]),
        (("git", "log", "main..feature"), []),  # a revision range is not a path
        (("cat", "~/.ssh/id_rsa"), ["~/.ssh/id_rsa"]),
        (("tool", "--output=/tmp/x"), ["/tmp/x"]),
    ],
)
def test_path_like_arguments(argv: tuple[str, ...], paths: list[str]) -> None:
    assert path_like_arguments(argv) == paths


@pytest.mark.parametrize(
    ("command", "allowlist", "values"),
    [
        ("cat link_out", ["cat *"], ["link_out"]),
        # A short option's attached value may be a path (`-ofile`), so `-la` yields "a": checked, it resolves inside.
        ("ls -la dir_out", ["ls *"], ["a", "dir_out"]),
        ("sort -o/etc/x y", ["sort *"], ["/etc/x", "y"]),
        ("git -C/elsewhere log", ["git *"], ["/elsewhere", "log"]),
        ("tool --long", ["tool *"], []),  # a bare long flag is not a path
        ("git log --output=dir_out/pwned -1", ["git log *"], ["dir_out/pwned"]),
        ("git log --output dir_out/pwned", ["git log *"], ["dir_out/pwned"]),
        ("git log main..feature", ["git log *"], ["main..feature"]),  # checked: a word resolves inside
        ("git status", ["git status"], []),  # the entry's literal words are the operator's, not the model's
        ("make test-unit", ["make test-*"], ["test-unit"]),  # a word a pattern matched is the model's
        ("tool --flag= x", ["tool *"], ["x"]),  # an empty value names nothing
        ("tool --x=-y", ["tool *"], []),  # a value that is itself a flag is refused elsewhere, not a path
    ],
)
def test_argument_values(command: str, allowlist: list[str], values: list[str]) -> None:
    allowed = check_command(command, allowlist)
    assert isinstance(allowed, Allowed)
    assert argument_values(allowed) == values


@pytest.mark.parametrize(
    ("value", "candidates"),
    [
        ("pkg/calc.py", ["pkg/calc.py"]),
        ("cache_dir=/out", ["cache_dir=/out", "cache_dir", "/out"]),
        ("a,/b", ["a,/b", "a", "/b"]),
        ("a:/b", ["a:/b", "a", "/b"]),
        ("tests/t.py::test_x", ["tests/t.py::test_x", "tests/t.py", "test_x"]),
        ("https://example.com/repo.git", ["https://example.com/repo.git"]),  # a network URL names no local path
        ("file:///elsewhere/repo", ["file:///elsewhere/repo", "/elsewhere/repo"]),
        ("FILE:///x", ["FILE:///x", "/x"]),
        ("url=file:///x", ["url=file:///x", "url", "/x"]),
        ("HEAD:../x", ["HEAD:../x", "HEAD", "../x"]),
    ],
)
def test_path_candidates(value: str, candidates: list[str]) -> None:
    assert path_candidates(value) == candidates
