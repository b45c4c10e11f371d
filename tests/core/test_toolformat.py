"""Tool output formats (sidecar/core/toolformat.py): read_file's fixed layout, Goose's edit semantics."""

from __future__ import annotations

import pytest

from sidecar.core.toolformat import (
    EditError,
    RangeError,
    apply_edit,
    cap_head_tail,
    count_lines,
    edit_message,
    format_read,
    format_search_line,
    rust_lines,
    write_message,
)


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("", []),
        ("a", ["a"]),
        ("a\n", ["a"]),
        ("a\nb", ["a", "b"]),
        ("a\n\n", ["a", ""]),
        ("a\r\nb\r\n", ["a", "b"]),
        ("\n", [""]),
    ],
)
def test_rust_lines(text: str, lines: list[str]) -> None:
    assert rust_lines(text) == lines
    assert count_lines(text) == len(lines)


def test_read_whole_file() -> None:
    out = format_read("src/a.py", "one\ntwo\n")
    assert out == "src/a.py (lines 1-2 of 2)\n     1\tone\n     2\ttwo"


def test_read_range_and_clamp() -> None:
    text = "".join(f"l{i}\n" for i in range(1, 11))
    assert format_read("a", text, 3, 4).splitlines() == ["a (lines 3-4 of 10)", "     3\tl3", "     4\tl4"]
    assert format_read("a", text, 9, 99).splitlines()[0] == "a (lines 9-10 of 10)"
    assert format_read("a", text, 10).splitlines()[-1] == "    10\tl10"


def test_read_empty_file() -> None:
    assert format_read("e", "") == "e (lines 0-0 of 0)"


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [(0, None, "1 or more"), (5, None, "past the end"), (2, 1, "before start_line")],
)
def test_read_bad_ranges(start: int, end: int | None, says: str) -> None:
    with pytest.raises(RangeError, match=says):
        format_read("a", "x\ny\n", start, end)


def test_read_truncates_with_a_note_that_says_how_to_continue() -> None:
    text = "".join(f"line {i}\n" for i in range(1, 101))
    out = format_read("big.txt", text, max_lines=10).splitlines()
    assert out[0] == "big.txt (lines 1-10 of 100)"
    assert len(out) == 12
    assert out[-1].startswith("[truncated:") and "start_line=11" in out[-1]
    by_chars = format_read("big.txt", text, max_chars=50).splitlines()
    assert by_chars[0] == "big.txt (lines 1-3 of 100)"


def test_read_keeps_tabs_and_cuts_huge_lines() -> None:
    out = format_read("t", "\tindented\n" + "x" * 5000 + "\n").splitlines()
    assert out[1] == "     1\t\tindented"
    assert out[2].startswith("     2\txxx") and "line cut at 2000 of 5000" in out[2]


def test_read_line_numbers_are_right_aligned_to_six() -> None:
    text = "\n".join(["x"] * 123456) + "\n"
    out = format_read("n", text, 123456, 123456).splitlines()
    assert out[1] == "123456\tx"


def test_edit_unique_match() -> None:
    assert apply_edit("fn foo() {\n    hello;\n}", "hello;", "world;") == "fn foo() {\n    world;\n}"
    assert apply_edit("keep\ndelete me\nkeep", "\ndelete me", "") == "keep\nkeep"


def test_edit_no_match_has_hint_and_preview() -> None:
    with pytest.raises(EditError) as err:
        apply_edit("def f():\n    return 1\n", "    return 1 + 1", "x")
    msg = str(err.value)
    assert msg.startswith("No match found for the specified text.")
    assert "Did you mean:" in msg and "File preview:" in msg and "   1: def f():" in msg


def test_edit_no_match_in_empty_file() -> None:
    with pytest.raises(EditError, match=r"\(file is empty\)"):
        apply_edit("", "x", "y")


def test_edit_multiple_matches_lists_two() -> None:
    with pytest.raises(EditError) as err:
        apply_edit("foo\nbar\nfoo\nbaz\nfoo\n", "foo", "qux")
    msg = str(err.value)
    assert msg.startswith("Found 3 matches. Please provide more context")
    assert "Match 1 (line 1):" in msg and "Match 2 (line 3):" in msg and "...and 1 more" in msg


def test_edit_empty_before_is_refused() -> None:
    with pytest.raises(EditError, match="empty"):
        apply_edit("abc", "", "x")


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("a", "b", "Edited p (1 lines -> 1 lines)"),
        ("a\nb\n", "c", "Edited p (2 lines -> 1 lines)"),
        ("x", "", "Edited p (1 lines -> 0 lines)"),
    ],
)
def test_edit_message(before: str, after: str, message: str) -> None:
    assert edit_message("p", before, after) == message


def test_write_message() -> None:
    assert write_message("a.py", "x\ny\n", created=True) == "Created a.py (2 lines)"
    assert write_message("a.py", "", created=False) == "Wrote a.py (0 lines)"


def test_cap_head_tail() -> None:
    text = "".join(f"{i:04d}\n" for i in range(1000))
    capped = cap_head_tail(text, 100)
    assert capped.startswith("0000\n") and capped.endswith("0999\n")
    assert "omitted from the middle" in capped and len(capped) < 250
    assert cap_head_tail("short", 100) == "short"


def test_search_line() -> None:
    assert format_search_line("a.py", 3, "x = 1\r") == "a.py:3:x = 1"
    assert format_search_line("a.py", 1, "y" * 400).endswith(" [...]")
