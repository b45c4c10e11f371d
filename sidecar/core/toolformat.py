"""What the sidecar's tools say: the text formats the model (and the simulator) reads. Pure functions.

- `format_read`: `read_file` output. FIXED format, parsed by the simulator: a header line
  `"{path} (lines {a}-{b} of {n})"`, then one line per source line `f"{lineno:>6}\\t{text}"`, then, only when
  capped, a note starting with `[truncated:` that says how to read on.
- `apply_edit`: `edit_file` with the semantics and messages of Goose's developer `edit` tool
  (crates/goose/src/agents/platform_extensions/developer/edit.rs): the `before` text must occur exactly once;
  "No match found ..." with a "Did you mean" hint and a file preview, or "Found N matches ..." with the first
  two locations; success is "Edited P (a lines -> b lines)" counting lines like Rust's `str::lines`.
- `write_message`: "Created P (N lines)" / "Wrote P (N lines)", as Goose's `write`.
- `cap_head_tail`: command output capped to its head and tail with a note in between.
- `format_search_line`: `path:line:text`, ripgrep's `--no-heading` layout, long lines cut.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_MATCH_PREVIEW_LINES = 20  # Goose's NO_MATCH_PREVIEW_LINES
MAX_LINE_CHARS = 2000
MAX_SEARCH_LINE_CHARS = 300


def rust_lines(text: str) -> list[str]:
    """Lines as Rust's `str::lines` yields them: split on '\\n', a final '\\n' ends the last line, '\\r' dropped."""
    if not text:
        return []
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def count_lines(text: str) -> int:
    return len(rust_lines(text))


@dataclass(frozen=True)
class LineRange:
    """1-based inclusive line range actually shown, and whether output was cut short."""

    start: int
    end: int
    total: int
    truncated: bool


class RangeError(ValueError):
    """The requested lines do not exist; the message says what does."""


def format_read(
    path: str,
    text: str,
    start_line: int | None = None,
    end_line: int | None = None,
    *,
    max_lines: int = 2000,
    max_chars: int = 100_000,
) -> str:
    """Render `text` as `read_file` output (see the module docstring); raises `RangeError` for bad ranges."""
    lines = rust_lines(text)
    total = len(lines)
    start = 1 if start_line is None else start_line
    end = total if end_line is None else min(end_line, total)
    if start < 1:
        raise RangeError(f"start_line must be 1 or more (got {start})")
    if end_line is not None and end_line < start:
        raise RangeError(f"end_line {end_line} is before start_line {start}")
    if total == 0:
        if start_line not in (None, 1):
            raise RangeError(f"start_line {start} is past the end of {path} (the file is empty)")
        return f"{path} (lines 0-0 of 0)"
    if start > total:
        raise RangeError(f"start_line {start} is past the end of {path} ({total} lines)")
    out: list[str] = []
    used = 0
    last = start - 1
    for lineno in range(start, end + 1):
        line = lines[lineno - 1]
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + f" [line cut at {MAX_LINE_CHARS} of {len(line)} characters]"
        rendered = f"{lineno:>6}\t{line}"
        if out and (len(out) >= max_lines or used + len(rendered) + 1 > max_chars):
            break
        out.append(rendered)
        used += len(rendered) + 1
        last = lineno
    header = f"{path} (lines {start}-{last} of {total})"
    if last < end:
        out.append(
            f"[truncated: showed lines {start}-{last} of {total}; call read_file with start_line={last + 1} to read on]"
        )
    return "\n".join([header, *out])


class EditError(ValueError):
    """`before` did not match exactly once; the message is Goose's, for the model to act on."""


def apply_edit(content: str, before: str, after: str) -> str:
    """Replace the single occurrence of `before` in `content` with `after` (Goose's `string_replace`)."""
    if before == "":
        raise EditError("The 'before' text is empty. Pass the exact text to replace (or use write_file).")
    count = content.count(before)
    if count == 1:
        return content.replace(before, after, 1)
    if count == 0:
        msg = "No match found for the specified text."
        hint = _similar_context(content, before)
        if hint is not None:
            msg += f"\n\nDid you mean:\n```\n{hint}\n```"
        msg += f"\n\nFile preview:\n```\n{_preview(content, NO_MATCH_PREVIEW_LINES)}\n```"
        raise EditError(msg)
    msg = f"Found {count} matches. Please provide more context to identify a unique match:\n"
    pos = -1
    for i in range(2):
        pos = content.find(before, pos + 1)
        line_num = content.count("\n", 0, pos) + 1
        msg += f"\nMatch {i + 1} (line {line_num}):\n```\n{_line_context(content, line_num, 1)}\n```"
    if count > 2:
        msg += f"\n\n...and {count - 2} more"
    raise EditError(msg)


def edit_message(path: str, before: str, after: str) -> str:
    return f"Edited {path} ({count_lines(before)} lines -> {count_lines(after)} lines)"


def write_message(path: str, content: str, created: bool) -> str:
    return f"{'Created' if created else 'Wrote'} {path} ({count_lines(content)} lines)"


def _line_context(content: str, target_line: int, context: int) -> str:
    lines = rust_lines(content)
    start = max(target_line - context - 1, 0)
    end = min(target_line + context, len(lines))
    return "\n".join(lines[start:end])


def _similar_context(content: str, search: str) -> str | None:
    first = rust_lines(search)
    if not first or not first[0].strip():
        return None
    needle = first[0].strip()
    for i, line in enumerate(rust_lines(content)):
        if needle in line or line.strip() in needle:
            return _line_context(content, i + 1, 2)
    return None


def _preview(content: str, max_lines: int) -> str:
    if not content:
        return "(file is empty)"
    lines = rust_lines(content)
    shown = "\n".join(f"{i + 1:>4}: {line}" for i, line in enumerate(lines[:max_lines]))
    if len(lines) > max_lines:
        shown += f"\n... ({len(lines) - max_lines} more lines)"
    return shown


def cap_head_tail(text: str, max_chars: int) -> str:
    """Keep the first and last `max_chars // 2` characters (cut at line ends) with a note between them."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    head = text[:half]
    tail = text[-half:]
    if "\n" in head:
        head = head[: head.rfind("\n") + 1]
    if "\n" in tail:
        tail = tail[tail.find("\n") + 1 :]
    omitted = len(text) - len(head) - len(tail)
    omitted_lines = text.count("\n", len(head), len(text) - len(tail))
    note = f"[... {omitted} characters ({omitted_lines} lines) omitted from the middle of the output ...]\n"
    return head + note + tail


def format_search_line(path: str, lineno: int, text: str) -> str:
    """One search hit, `path:line:text`, the line's trailing '\\r' dropped and long lines cut."""
    if text.endswith("\r"):
        text = text[:-1]
    if len(text) > MAX_SEARCH_LINE_CHARS:
        text = text[:MAX_SEARCH_LINE_CHARS] + " [...]"
    return f"{path}:{lineno}:{text}"
