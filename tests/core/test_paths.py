"""Adversarial table for the workspace jail's pure checks (sidecar/core/paths.py)."""

from __future__ import annotations

import pytest

from sidecar.core.paths import (
    Refused,
    check_argument,
    check_request,
    check_resolved,
    has_component,
    is_git_internal,
    is_within,
    relative_to,
)

ROOT = "/w"
ROOTS = ("/w", "/alias/w")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.py", "/w/a.py"),
        ("src/pkg/mod.py", "/w/src/pkg/mod.py"),
        ("./src//pkg/./mod.py", "/w/src/pkg/mod.py"),
        ("src/", "/w/src"),
        (".", "/w"),
        ("/w", "/w"),
        ("/w/", "/w"),
        ("/w/a.py", "/w/a.py"),
        ("//w//a.py", "/w/a.py"),
        ("/w/./a.py", "/w/a.py"),
        ("/alias/w/a.py", "/w/a.py"),  # the unresolved workspace path maps onto the real one
        ("/alias/w", "/w"),
        ("  a.py  ", "/w/a.py"),
        ("-rf", "/w/-rf"),  # a file may be named like a flag; commands get it after `--` or are refused
        ("a:b.py", "/w/a:b.py"),  # a colon is not a URI
        ("...", "/w/..."),  # three dots is a plain name
        ("..a", "/w/..a"),
        ("a..", "/w/a.."),
        ("ünïcode/文件.py", "/w/ünïcode/文件.py"),
    ],
)
def test_accepted_requests(raw: str, expected: str) -> None:
    assert check_request(raw, ROOTS) == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00.py", "NUL"),
        ("\x00", "NUL"),
        ("/w/a.py\x00.txt", "NUL"),
        ("..", "'..'"),
        ("../etc/passwd", "'..'"),
        ("src/../../etc/passwd", "'..'"),
        ("src/..", "'..'"),  # even when it would stay inside: '..' is refused outright
        ("/w/../etc/passwd", "'..'"),
        ("/w/src/../../w-evil/x", "'..'"),
        ("/w-evil/secret", "outside the workspace"),  # prefix trick
        ("/wx", "outside the workspace"),
        ("/w-evil", "outside the workspace"),
        ("/", "outside the workspace"),
        ("/etc/passwd", "outside the workspace"),
        ("/alias/w-evil/x", "outside the workspace"),
        ("/alias", "outside the workspace"),
        ("~/x", "'~'"),
        ("~root/.ssh/id_rsa", "'~'"),
        ("file:///etc/passwd", "URI"),
        ("https://example.com/a", "URI"),
        ("skill://x/SKILL.md", "URI"),
        ("a" * 5000, "longer than"),
    ],
)
def test_refused_requests(raw: str, says: str) -> None:
    result = check_request(raw, ROOTS)
    assert isinstance(result, Refused), result
    assert says in result.reason


@pytest.mark.parametrize(
    ("resolved", "expected"),
    [
        ("/w", "."),
        ("/w/a.py", "a.py"),
        ("/w/src/x.py", "src/x.py"),
        ("/w/src/../a.py", "a.py"),  # normalized before comparing
    ],
)
def test_resolved_inside(resolved: str, expected: str) -> None:
    assert check_resolved(ROOT, resolved) == expected


@pytest.mark.parametrize(
    "resolved",
    [
        "/etc/passwd",  # a symlink pointing out
        "/w-evil/x",  # a symlink into a look-alike sibling
        "/wx",
        "/",
        "/w/../etc",  # normalizes to /etc
        "relative/path",  # a resolver must return absolute paths
        "/w/a\x00",
    ],
)
def test_resolved_outside(resolved: str) -> None:
    result = check_resolved(ROOT, resolved, "link")
    assert isinstance(result, Refused)


def test_resolved_refusal_names_the_target() -> None:
    result = check_resolved(ROOT, "/etc/shadow", "docs/link")
    assert isinstance(result, Refused)
    assert "'docs/link'" in result.reason and "/etc/shadow" in result.reason


@pytest.mark.parametrize(
    ("root", "path", "inside"),
    [
        ("/w", "/w", True),
        ("/w", "/w/x", True),
        ("/w", "/w-evil", False),
        ("/w", "/wx/y", False),
        ("/w", "/", False),
        ("/", "/anything", True),
        ("/a/b", "/a/b/c/d", True),
        ("/a/b", "/a/bc", False),
        ("/a/b", "/a", False),
    ],
)
def test_is_within(root: str, path: str, inside: bool) -> None:
    assert is_within(root, path) is inside


@pytest.mark.parametrize(
    ("root", "path", "rel"),
    [("/w", "/w", "."), ("/w", "/w/a/b", "a/b"), ("/", "/etc", "etc")],
)
def test_relative_to(root: str, path: str, rel: str) -> None:
    assert relative_to(root, path) == rel


@pytest.mark.parametrize(
    ("arg", "refused"),
    [
        ("tests/test_a.py", False),
        ("a-b", False),
        ("", False),
        ("-x", True),
        ("--output=/etc/passwd", True),
        ("-", True),
        ("a\x00b", True),
    ],
)
def test_check_argument(arg: str, refused: bool) -> None:
    assert (check_argument(arg) is not None) is refused


@pytest.mark.parametrize(
    ("rel", "inside"),
    [(".git", True), (".git/config", True), ("a/.git/HEAD", True), (".gitignore", False), ("git/x", False)],
)
def test_is_git_internal(rel: str, inside: bool) -> None:
    assert is_git_internal(rel) is inside


def test_has_component() -> None:
    names = {"__pycache__", ".pytest_cache"}
    assert has_component("a/__pycache__/x.pyc", names)
    assert not has_component("a/__pycache__x/x.pyc", names)
