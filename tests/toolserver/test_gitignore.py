"""Gitignore matching (sidecar/toolserver/gitignore.py): a table of cases from gitignore(5), each also checked
against `git check-ignore` in a real repository, so the table cannot drift from git's behaviour."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sidecar.toolserver.gitignore import compile_glob, is_ignored, matches_glob, parse
from tests.conftest import require_tool

ROOT_RULES = [
    ("*.pyc", "a.pyc", False, True),
    ("*.pyc", "src/deep/a.pyc", False, True),
    ("*.pyc", "a.py", False, False),
    ("build/", "build", True, True),
    ("build/", "build", False, False),  # dir-only pattern, a file named build
    ("build/", "src/build", True, True),
    ("/build", "build", True, True),
    ("/build", "src/build", True, False),  # leading slash anchors
    ("doc/frotz", "doc/frotz", True, True),
    ("doc/frotz", "a/doc/frotz", True, False),  # a middle slash anchors too
    ("**/foo", "foo", False, True),
    ("**/foo", "a/b/foo", False, True),
    ("**/foo/bar", "x/foo/bar", False, True),
    ("abc/**", "abc/x/y", False, True),
    ("abc/**", "abc", True, False),
    ("a/**/b", "a/b", False, True),
    ("a/**/b", "a/x/y/b", False, True),
    ("a/**/b", "ab", False, False),
    ("*.log\n!keep.log", "keep.log", False, False),
    ("*.log\n!keep.log", "other.log", False, True),
    ("!keep.log\n*.log", "keep.log", False, True),  # last match wins
    ("# comment\n\n   \n*.tmp", "x.tmp", False, True),
    ("\\#hash", "#hash", False, True),
    ("\\!bang", "!bang", False, True),
    ("f?o", "foo", False, True),
    ("f?o", "f/o", False, False),
    ("*", "a/b", False, True),
    ("a*", "a/b", False, True),  # a matched directory takes its contents
    ("[abc].txt", "b.txt", False, True),
    ("[!abc].txt", "b.txt", False, False),
    ("[!abc].txt", "d.txt", False, True),
    ("trailing   ", "trailing", False, True),
    ("node_modules", "web/node_modules/x/y.js", False, True),
    (".venv", ".venv", True, True),
    ("*.py[co]", "x.pyc", False, True),
    ("a.b", "axb", False, False),  # dots are literal
    # `]` first in a class is a literal (these crashed the old hand-written translation with re.error).
    ("[]]x", "]x", False, True),
    ("[]]x", "ax", False, False),
    ("[]a]", "a", False, True),
    ("[]a]", "]", False, True),
    ("[]a]", "b", False, False),
    ("[!]a]b", "cb", False, True),
    ("[!]a]b", "]b", False, False),
    ("[a-c]x", "bx", False, True),
    ("\\[x", "[x", False, True),  # an escaped bracket is a literal
    ("*.txt\\ ", "a.txt ", False, True),  # an escaped trailing space is kept
    ("a/*/c", "a/b/c", False, True),
    ("a/*/c", "a/b/x/c", False, False),
    ("abc/**\n!abc/keep", "abc/keep", False, False),  # abc itself is not ignored, so keep is re-included
    ("abc/**/", "abc/x", True, True),
    ("abc/**/", "abc/x", False, False),
]


@pytest.mark.parametrize(("text", "rel", "is_dir", "ignored"), ROOT_RULES)
def test_root_rules(text: str, rel: str, is_dir: bool, ignored: bool) -> None:
    assert is_ignored(rel, is_dir, parse(text)) is ignored


def git_check_ignore(repo: Path, text: str, rel: str, is_dir: bool) -> bool:
    """git's own verdict for `rel` under a root `.gitignore` holding `text`."""
    git = require_tool("git")
    (repo / ".gitignore").write_text(text + "\n")
    target = repo / rel
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")
    done = subprocess.run(
        [git, "-C", str(repo), "check-ignore", "-q", "--no-index", "--", rel],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gitignore")


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROOT_RULES)))
def test_the_table_agrees_with_git_check_ignore(repos: Path, index: int, row: tuple[str, str, bool, bool]) -> None:
    text, rel, is_dir, ignored = row
    repo = repos / f"r{index}"
    subprocess.run([require_tool("git"), "init", "-q", str(repo)], check=True, timeout=30)
    assert git_check_ignore(repo, text, rel, is_dir) is ignored
    assert is_ignored(rel, is_dir, parse(text)) is ignored


def test_a_line_pathspec_cannot_compile_skips_only_that_line() -> None:
    rules = parse("!\n*.log\n")
    assert is_ignored("x.log", False, rules)
    assert not is_ignored("x.py", False, rules)


def test_an_invalid_glob_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="invalid glob"):
        compile_glob("!!")


def test_nested_gitignore_applies_below_its_directory() -> None:
    rules = parse("*.log\n") + parse("/generated\n!important.log\n", base="pkg")
    assert is_ignored("pkg/generated", True, rules)
    assert not is_ignored("generated", True, rules)
    assert not is_ignored("pkg/important.log", False, rules)
    assert is_ignored("important.log", False, rules)
    assert is_ignored("pkg/sub/x.log", False, rules)


@pytest.mark.parametrize(
    ("rel", "glob", "hit"),
    [
        ("src/a.py", "*.py", True),
        ("src/a.py", "*.md", False),
        ("src/a.py", "src/*.py", True),
        ("lib/src/a.py", "src/*.py", False),
        ("src/a.py", "!*.py", False),
        ("src/a.md", "!*.py", True),
        ("a/b/c.rs", "**/*.rs", True),
    ],
)
def test_matches_glob(rel: str, glob: str, hit: bool) -> None:
    assert matches_glob(rel, glob) is hit
