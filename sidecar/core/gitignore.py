"""Gitignore matching for the sidecar's `list_dir` and `search` fallback (pure; the caller reads the files).

Implements the rules of gitignore(5) that matter for a workspace walk, the same ones ripgrep applies:
blank lines and `#` comments skipped, `\\#`/`\\!` escapes, trailing spaces trimmed, `!` re-includes, a trailing
`/` matches directories only, a pattern with a `/` before its end is anchored to the directory of its
`.gitignore` (a leading `/` only anchors), otherwise it matches a name at any depth; `*` and `?` do not cross
`/`, `**` does (`**/x`, `x/**`, `a/**/b`), `[...]` classes with `!` or `^` negation. The last matching rule
wins. A walk must not descend into an ignored directory (git cannot re-include below one either).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One gitignore line, compiled; `base` is the directory of its file, relative to the root ('' = root)."""

    pattern: str
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    base: str


def parse(text: str, base: str = "") -> list[Rule]:
    """Compile the rules of one `.gitignore` whose directory is `base` (relative, '' for the root)."""
    rules = []
    for line in text.splitlines():
        rule = _parse_line(line, base)
        if rule is not None:
            rules.append(rule)
    return rules


def is_ignored(rel: str, is_dir: bool, rules: Sequence[Rule]) -> bool:
    """True when the last rule matching `rel` (relative to the root) ignores it."""
    ignored = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.base:
            if not rel.startswith(rule.base + "/"):
                continue
            target = rel[len(rule.base) + 1 :]
        else:
            target = rel
        if rule.regex.match(target):
            ignored = not rule.negate
    return ignored


def matches_glob(rel: str, glob: str) -> bool:
    """True when `rel` matches a ripgrep-style `--glob` (gitignore syntax; a leading `!` negates)."""
    negate = glob.startswith("!")
    rule = _parse_line(glob[1:] if negate else glob, "")
    if rule is None:
        return not negate
    hit = bool(rule.regex.match(rel))
    return not hit if negate else hit


def _parse_line(line: str, base: str) -> Rule | None:
    if line.endswith("\n"):
        line = line[:-1]
    line = line.rstrip("\r")
    # Trailing spaces are ignored unless escaped with a backslash.
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        stripped += " "
    line = stripped
    if not line or line.startswith("#"):
        return None
    negate = False
    if line.startswith("!"):
        negate = True
        line = line[1:]
    elif line.startswith("\\!") or line.startswith("\\#"):
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line
    line = line.lstrip("/")
    body = _translate(line)
    regex = "^" + body if anchored else "^(?:.*/)?" + body
    return Rule(line, re.compile(regex + "(?:/.*)?$", re.DOTALL), negate, dir_only, base)


def _translate(pattern: str) -> str:
    """Glob to regex (without anchors); `**` only has its special meaning as a whole component."""
    parts = pattern.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            if last:
                out.append(".*")
            else:
                out.append("(?:.*/)?")
            continue
        out.append(_translate_component(part) + ("" if last else "/"))
    return "".join(out)


def _translate_component(part: str) -> str:
    out = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "\\" and i + 1 < len(part):
            out.append(re.escape(part[i + 1]))
            i += 2
            continue
        if c == "*":
            while i + 1 < len(part) and part[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = part.find("]", i + 2 if i + 1 < len(part) and part[i + 1] in "!^" else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                inner = part[i + 1 : end]
                if inner[:1] in ("!", "^"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
