"""Gitignore matching table (sidecar/core/gitignore.py), cases from gitignore(5)."""

from __future__ import annotations

import pytest

from sidecar.core.gitignore import is_ignored, matches_glob, parse


@pytest.mark.parametrize(
    ("text", "rel", "is_dir", "ignored"),
    [
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
    ],
)
def test_root_rules(text: str, rel: str, is_dir: bool, ignored: bool) -> None:
    assert is_ignored(rel, is_dir, parse(text)) is ignored


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
