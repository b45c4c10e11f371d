"""Gitignore matching for the sidecar's `list_dir` and `search` fallback (no I/O; the caller reads the files).

The rules of gitignore(5) come from `pathspec`'s `GitIgnoreSpec`, a maintained implementation tested against
git's own (bracket classes such as `[]a]`, `**` components, escapes, trailing spaces, `!` re-includes, the last
matching rule wins, a trailing `/` matches directories only, a `/` before the end anchors the pattern to its
`.gitignore`'s directory). What this module adds is git's layering of nested files: the rules of a
`.gitignore` in directory `base` apply to paths below `base`, and a deeper file's match overrides a shallower
one's. A walk must not descend into an ignored directory (git cannot re-include below one either).

A line pathspec cannot compile is skipped with the rest of its file kept, as git keeps going past a line it
cannot use: a workspace's `.gitignore` never makes `list_dir` or `search` fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pathspec import GitIgnoreSpec


@dataclass(frozen=True)
class Rule:
    """The rules of one `.gitignore`; `base` is its directory, relative to the root ('' = root)."""

    spec: GitIgnoreSpec
    base: str


# pathspec compiles `abc/**` to `^abc/`, which also matches the directory `abc` itself (queried as `abc/`); in git
# it matches only what is inside, so `abc/**` with `!abc/keep` re-includes `abc/keep`. `abc/**/*` is git's meaning.
_TRAILING_DOUBLE_STAR = re.compile(r"^(.*/\*\*)(/?)( *)$")


def parse(text: str, base: str = "") -> list[Rule]:
    """Compile one `.gitignore` whose directory is `base` (relative, '' for the root); [] when it has no rules."""
    spec = _compile([_TRAILING_DOUBLE_STAR.sub(r"\1/*\2\3", line) for line in text.splitlines()])
    return [Rule(spec, base)] if spec.patterns else []


def is_ignored(rel: str, is_dir: bool, rules: Sequence[Rule]) -> bool:
    """True when `rel` (relative to the root) is ignored; `rules` are ordered from the root's file downwards."""
    ignored = False
    for rule in rules:
        if rule.base:
            if not rel.startswith(rule.base + "/"):
                continue
            target = rel[len(rule.base) + 1 :]
        else:
            target = rel
        result = rule.spec.check_file(target + "/" if is_dir else target)
        if result.include is not None:
            ignored = result.include
    return ignored


def matches_glob(rel: str, glob: str) -> bool:
    """True when `rel` matches a ripgrep-style `--glob` (gitignore syntax; a leading `!` negates)."""
    return compile_glob(glob)(rel)


def compile_glob(glob: str) -> Callable[[str], bool]:
    """A predicate for a ripgrep-style `--glob` (gitignore syntax; a leading `!` negates), compiled once.

    Raises ValueError, naming the glob, for one that is not a valid pattern."""
    negate = glob.startswith("!")
    try:
        spec = GitIgnoreSpec.from_lines([glob[1:] if negate else glob])
    except ValueError as exc:  # pathspec's pattern errors are ValueErrors in every version
        raise ValueError(f"invalid glob {glob!r}: {exc}") from None
    if not spec.patterns:
        return lambda rel: not negate
    return lambda rel: spec.match_file(rel) is not negate


def _compile(lines: list[str]) -> GitIgnoreSpec:
    try:
        return GitIgnoreSpec.from_lines(lines)
    except ValueError:
        kept = []
        for line in lines:
            try:
                GitIgnoreSpec.from_lines([line])
            except ValueError:
                continue
            kept.append(line)
        return GitIgnoreSpec.from_lines(kept)
