"""YAML for Goose's config files, without a YAML library: emit block-style YAML, merge entries into text.

The project has no YAML dependency (PyYAML is not installed), and Goose writes its `config.yaml` in plain
block style (serde_yaml). So:

- `dump(value)` emits a block-style document from dicts, lists, strings, numbers, booleans and None.
  Strings are plain when unambiguous, a literal block (`|`/`|-`) when multi-line, else double-quoted with
  JSON escapes (valid YAML). Empty collections are `{}` / `[]`.
- `set_top_level(text, key, value)` replaces (or appends) one top-level entry, leaving every other byte of
  the user's file alone: comments, order, other keys.
- `set_map_entry(text, section, key, value)` does the same one level down (`extensions: {sidecar: ...}`),
  creating the section when missing, converting an empty flow `{}` section to block style.

Text is split into top-level entries by their column-0 keys; a sequence written at column 0 under a key
(`key:\\n- a`) belongs to that key. A section written as a non-empty flow mapping (`extensions: {a: ...}`)
cannot be merged textually: `MergeError` says so rather than risk clobbering it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

_PLAIN = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_./@+-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}
_KEY_LINE = re.compile(
    r"""^(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\-?:][^:#]*?|-[^\s:#][^:#]*?)\s*:(?:\s|$)"""
)


class MergeError(ValueError):
    """The existing file cannot be merged without rewriting what it holds; the message says what to do."""


def scalar(value: object) -> str:
    """One scalar (not multi-line strings: `dump` renders those as literal blocks)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED and not _looks_numeric(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.startswith(".") and text[1:].lower() in ("inf", "nan")
    return True


def _literal_block(text: str, indent: int) -> str | None:
    """`|` / `|-` block for a multi-line string, when it round-trips exactly; else None."""
    if "\n" not in text or "\t" in text or "\r" in text:
        return None
    body = text[:-1] if text.endswith("\n") else text
    if body.endswith("\n") or not body or body[0] == " ":
        return None  # keep-chomping or leading spaces need indicators: quote instead
    lines = body.split("\n")
    if any(line != line.rstrip(" ") for line in lines) or any(not line.isprintable() for line in lines):
        return None
    pad = " " * indent
    head = "|" if text.endswith("\n") else "|-"
    return head + "\n" + "\n".join(pad + line if line else "" for line in lines)


def dump(value: object, indent: int = 0) -> str:
    """A block-style YAML document for `value`, ending with a newline."""
    return "\n".join(_lines(value, indent)) + "\n"


def _lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            return [pad + "{}"]
        out: list[str] = []
        for key, item in value.items():
            out.extend(_entry(pad + scalar(key) + ":", item, indent))
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            if isinstance(item, Mapping) and item:
                nested = _lines(item, indent + 2)
                out.append(pad + "- " + nested[0][indent + 2 :])
                out.extend(nested[1:])
            else:
                out.extend(_entry(pad + "-", item, indent))
        return out
    return [pad + _inline(value, indent)]


def _entry(head: str, item: object, indent: int) -> list[str]:
    if isinstance(item, Mapping) and item:
        return [head, *_lines(item, indent + 2)]
    if isinstance(item, Sequence) and not isinstance(item, str) and item:
        return [head, *_lines(item, indent + 2)]
    return [head + " " + _inline(item, indent + 2)]


def _inline(value: object, indent: int) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[]"
    if isinstance(value, str):
        block = _literal_block(value, indent)
        if block is not None:
            return block
    return scalar(value)


def _key_of(line: str) -> str | None:
    """The key a mapping line starts with (unquoted), or None."""
    found = _KEY_LINE.match(line)
    if found is None:
        return None
    key = found.group("key").strip()
    if key.startswith('"'):
        try:
            return str(json.loads(key))
        except json.JSONDecodeError:
            return key[1:-1]
    if key.startswith("'"):
        return key[1:-1].replace("''", "'")
    return key


def _entries(lines: list[str], indent: int) -> list[tuple[str | None, int, int]]:
    """Split `lines` into (key, start, end) runs at `indent`; comment/blank lines stick to the entry above.

    Lines before the first key are a run with key None. A line at exactly `indent` that is not a key (such as
    a `- item` of a sequence written at the key's own indentation) belongs to the entry above.
    """
    runs: list[tuple[str | None, int, int]] = []
    current: str | None = None
    start = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        width = len(line) - len(line.lstrip(" "))
        if width != indent:
            continue
        key = _key_of(line[indent:])
        if key is None:
            continue
        if i > start or current is not None:
            runs.append((current, start, i))
        current, start = key, i
    runs.append((current, start, len(lines)))
    return [run for run in runs if run[1] < run[2] or run[0] is not None]


def _split(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def _trailing_blank(lines: list[str], start: int, end: int) -> int:
    """Keep comment and blank lines that end a run with the next run (they usually introduce it)."""
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return end


def set_top_level(text: str, key: str, value: object) -> str:
    """Set top-level `key` to `value` in YAML `text` (replace its entry or append one)."""
    lines = _split(text)
    block = _split(dump({key: value}))
    for run_key, start, end in _entries(lines, 0):
        if run_key == key:
            end = _trailing_blank(lines, start, end)
            return _join(lines[:start] + block + lines[end:])
    return _join(lines + block)


def set_map_entry(text: str, section: str, key: str, value: object) -> str:
    """Set `section.key` to `value`, keeping the section's other entries byte for byte."""
    lines = _split(text)
    for run_key, start, end in _entries(lines, 0):
        if run_key != section:
            continue
        end = _trailing_blank(lines, start, end)
        head = lines[start]
        rest = head.split(":", 1)[1].split(" #", 1)[0].strip() if ":" in head else ""
        if rest and rest != "{}":
            if rest in ("null", "~"):
                return _join(lines[:start] + _split(dump({section: {key: value}})) + lines[end:])
            raise MergeError(
                f"'{section}:' is written in flow style ({rest[:40]}...); rewrite it in block style "
                f"(one entry per line) and run again"
            )
        body = lines[start + 1 : end]
        child = _child_indent(body)
        entry = _split(dump({key: value}, indent=child))
        for child_key, c_start, c_end in _entries(body, child):
            if child_key == key:
                c_end = _trailing_blank(body, c_start, c_end)
                body = body[:c_start] + entry + body[c_end:]
                break
        else:
            body = body + entry
        new_head = head if not rest else head.split(":", 1)[0] + ":"
        return _join([*lines[:start], new_head, *body, *lines[end:]])
    return _join(lines + _split(dump({section: {key: value}})))


def _child_indent(body: list[str]) -> int:
    for line in body:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return max(len(line) - len(line.lstrip(" ")), 1)
    return 2
