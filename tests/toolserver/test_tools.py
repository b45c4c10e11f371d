"""Each tool's success and failure paths, called in-process on a started sidecar over a real workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar.toolserver.sidecar import Sidecar
from sidecar.toolserver.tools import ToolFailure

from .conftest import settle


async def test_read_file_format(sidecar: Sidecar) -> None:
    out = await sidecar.tools.read_file("pkg/calc.py")
    lines = out.text.split("\n")
    assert lines[0] == "pkg/calc.py (lines 1-6 of 6)"
    assert lines[1] == "     1\tdef add(a, b):"
    assert lines[6] == "     6\t    return a - b"
    assert out.paths == ["pkg/calc.py"] and not out.cached


async def test_read_file_range_and_absolute_path(sidecar: Sidecar, workspace: Path) -> None:
    out = await sidecar.tools.read_file(str(workspace / "pkg/calc.py"), 5, 6)
    assert out.text.split("\n")[:2] == ["pkg/calc.py (lines 5-6 of 6)", "     5\tdef sub(a, b):"]


@pytest.mark.parametrize(
    ("path", "kwargs", "says"),
    [
        ("missing.py", {}, "does not exist"),
        ("pkg", {}, "is a directory"),
        ("../etc/passwd", {}, "'..'"),
        ("/etc/passwd", {}, "outside the workspace"),
        ("pkg/calc.py", {"start_line": 99}, "past the end"),
        ("pkg/calc.py", {"start_line": 3, "end_line": 2}, "before start_line"),
    ],
)
async def test_read_file_failures(sidecar: Sidecar, path: str, kwargs: dict[str, int], says: str) -> None:
    with pytest.raises(ToolFailure, match=says):
        await sidecar.tools.read_file(path, **kwargs)


async def test_read_file_refuses_binary(sidecar: Sidecar, workspace: Path) -> None:
    (workspace / "blob.bin").write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(ToolFailure, match="binary"):
        await sidecar.tools.read_file("blob.bin")


async def test_list_dir_is_gitignore_aware(sidecar: Sidecar) -> None:
    out = await sidecar.tools.list_dir(".", 2)
    lines = out.text.split("\n")
    assert lines[0].startswith("./ (")
    assert lines[1:] == [
        ".gitignore",
        "README.md",
        "pkg/",
        "pkg/__init__.py",
        "pkg/calc.py",
        "tests/",
        "tests/test_calc.py",
    ]
    shallow = await sidecar.tools.list_dir("pkg", 1)
    assert shallow.text.split("\n")[1:] == ["pkg/__init__.py", "pkg/calc.py"]


@pytest.mark.parametrize(
    ("path", "depth", "says"),
    [("README.md", 2, "is a file"), ("nope", 2, "does not exist"), (".", 0, "depth"), (".", 11, "depth")],
)
async def test_list_dir_failures(sidecar: Sidecar, path: str, depth: int, says: str) -> None:
    with pytest.raises(ToolFailure, match=says):
        await sidecar.tools.list_dir(path, depth)


async def test_list_dir_truncates(make_settings, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    async with Sidecar(make_settings(list_max_entries=3), env={}) as sc:
        out = await sc.tools.list_dir(".", 3)
    assert out.text.split("\n")[-1].startswith("[truncated: the first 3 entries")


@pytest.mark.parametrize("backend", ["python", "auto"])
async def test_search(make_settings, workspace: Path, backend: str) -> None:  # type: ignore[no-untyped-def]
    async with Sidecar(make_settings(search_backend=backend), env={}) as sc:
        out = await sc.tools.search(r"def \w+")
        assert out.text.split("\n") == [
            "pkg/calc.py:1:def add(a, b):",
            "pkg/calc.py:5:def sub(a, b):",
            "tests/test_calc.py:6:def test_add():",
        ]
        only_tests = await sc.tools.search("def", "tests")
        assert only_tests.text == "tests/test_calc.py:6:def test_add():"
        globbed = await sc.tools.search("a", glob="*.md")
        assert globbed.text == "README.md:1:# sample"
        capped = await sc.tools.search("a", max_results=1)
        assert capped.text.split("\n")[-1].startswith("[truncated: the first 1 matching lines")
        none = await sc.tools.search("zzz_not_there")
        assert none.text.startswith("No matches for 'zzz_not_there'")
        one_file = await sc.tools.search("return", "pkg/calc.py")
        assert one_file.text.split("\n") == ["pkg/calc.py:2:    return a + b", "pkg/calc.py:6:    return a - b"]
        lookahead = await sc.tools.search(r"add(?=\(2)")  # not valid for ripgrep's engine: falls back
        assert lookahead.text == "tests/test_calc.py:7:    assert add(2, 3) == 5"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"pattern": "("}, "invalid regular expression"),
        ({"pattern": ""}, "empty"),
        ({"pattern": "x", "path": "../.."}, "'..'"),
        ({"pattern": "x", "path": "nowhere"}, "does not exist"),
        ({"pattern": "x", "max_results": 0}, "max_results"),
        ({"pattern": "x", "glob": "!"}, "invalid glob"),
    ],
)
async def test_search_failures(sidecar: Sidecar, kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ToolFailure, match=says):
        await sidecar.tools.search(**kwargs)  # type: ignore[arg-type]


async def test_write_file(sidecar: Sidecar, workspace: Path) -> None:
    out = await sidecar.tools.write_file("new/mod.py", "a = 1\nb = 2\n")
    assert out.text == "Created new/mod.py (2 lines)"
    assert (workspace / "new/mod.py").read_text() == "a = 1\nb = 2\n"
    again = await sidecar.tools.write_file("new/mod.py", "a = 3\n")
    assert again.text == "Wrote new/mod.py (1 lines)"
    with pytest.raises(ToolFailure, match="directory"):
        await sidecar.tools.write_file("pkg", "x")
    with pytest.raises(ToolFailure, match="outside"):
        await sidecar.tools.write_file("/tmp/evil.txt", "x")


async def test_edit_file(sidecar: Sidecar, workspace: Path) -> None:
    out = await sidecar.tools.edit_file("pkg/calc.py", "return a - b", "return b - a\n    # swapped")
    assert out.text == "Edited pkg/calc.py (1 lines -> 2 lines)"
    assert "return b - a\n    # swapped" in (workspace / "pkg/calc.py").read_text()


@pytest.mark.parametrize(
    ("path", "before", "says"),
    [
        ("pkg/calc.py", "return a * b", "No match found for the specified text."),
        ("pkg/calc.py", "return", "Found 2 matches. Please provide more context"),
        ("pkg/missing.py", "x", "does not exist"),
        ("pkg", "x", "directory"),
    ],
)
async def test_edit_file_failures(sidecar: Sidecar, workspace: Path, path: str, before: str, says: str) -> None:
    original = (workspace / "pkg/calc.py").read_text()
    with pytest.raises(ToolFailure, match=says):
        await sidecar.tools.edit_file(path, before, "y")
    assert (workspace / "pkg/calc.py").read_text() == original


async def test_edit_refuses_non_utf8(sidecar: Sidecar, workspace: Path) -> None:
    (workspace / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ToolFailure, match="not UTF-8"):
        await sidecar.tools.edit_file("latin1.txt", "caf", "tea")


async def test_run_tests_pass_fail_and_target(sidecar: Sidecar, workspace: Path) -> None:
    ok = await sidecar.tools.run_tests()
    assert ok.exit_code == 0 and "1 passed" in ok.text and not ok.cached
    assert ok.text.startswith("$ ") and "[exit code 0 after" in ok.text
    await sidecar.tools.edit_file("pkg/calc.py", "return a + b", "return a - b")
    failing = await sidecar.tools.run_tests("tests/test_calc.py::test_add")
    assert failing.exit_code == 1 and "1 failed" in failing.text
    assert failing.paths == ["tests/test_calc.py"]


@pytest.mark.parametrize(
    ("target", "says"),
    [("-k", "starts with '-'"), ("--co", "starts with '-'"), ("tests/nope.py", "does not exist"), ("../x.py", "'..'")],
)
async def test_run_tests_refuses_bad_targets(sidecar: Sidecar, target: str, says: str) -> None:
    with pytest.raises(ToolFailure, match=says):
        await sidecar.tools.run_tests(target)


async def test_run_tests_timeout_is_reported_and_not_cached(make_settings, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    (workspace / "tests/test_slow.py").write_text("import time\n\ndef test_slow():\n    time.sleep(30)\n")
    settle()
    async with Sidecar(make_settings(test_timeout_s=1.0), env={}) as sc:
        out = await sc.tools.run_tests("tests/test_slow.py")
        assert out.exit_code is None and "timed out after 1 s" in out.text
        again = await sc.tools.run_tests("tests/test_slow.py")
        assert not again.cached


async def test_run_command_allowlist(make_settings, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    async with Sidecar(make_settings(allow_commands=["ls *", "cat *"]), env={}) as sc:
        out = await sc.tools.run_command("ls pkg")
        assert out.exit_code == 0 and "calc.py" in out.text and out.command == "ls pkg"
        with pytest.raises(ToolFailure, match="not an allowed command"):
            await sc.tools.run_command("rm -rf pkg")
        with pytest.raises(ToolFailure, match="outside the workspace"):
            await sc.tools.run_command("cat /etc/passwd")
        with pytest.raises(ToolFailure, match=r"'\.\.'"):
            await sc.tools.run_command("cat ../../etc/passwd")
        semi = await sc.tools.run_command("ls pkg; rm -rf pkg")  # no shell: ';' is just an argument
        assert semi.exit_code != 0
        missing = await sc.tools.run_command("cat nothing-here")
        assert missing.exit_code == 1
    assert (workspace / "pkg").is_dir()


async def test_run_command_arguments_leading_out(make_settings, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET\n")
    (workspace / "file_out").symlink_to(outside / "secret.txt")
    (workspace / "dir_out").symlink_to(outside, target_is_directory=True)
    (workspace / "link_in").symlink_to("pkg/calc.py")
    async with Sidecar(make_settings(allow_commands=["ls *", "cat *", "touch *"]), env={}) as sc:
        for command in ["cat file_out", "ls dir_out", "cat dir_out/secret.txt", "touch --x=dir_out/new"]:
            with pytest.raises(ToolFailure, match="resolves outside the workspace"):
                await sc.tools.run_command(command)
        inside = await sc.tools.run_command("cat link_in")
        assert inside.exit_code == 0 and "return a + b" in inside.text
        word = await sc.tools.run_command("ls nothing-here")  # a value that names nothing still runs
        assert word.exit_code != 0
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_run_command_disabled_by_default(sidecar: Sidecar) -> None:
    with pytest.raises(ToolFailure, match="disabled"):
        await sidecar.tools.run_command("ls")


def _git(workspace: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=workspace, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_status_and_diff(sidecar: Sidecar, workspace: Path) -> None:
    with pytest.raises(ToolFailure, match="not a git repository"):
        await sidecar.tools.git_status()
    _git(workspace, "init", "-q")
    _git(workspace, "-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
    _git(workspace, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init")
    clean = await sidecar.tools.git_status()
    assert clean.text.startswith("## ")
    await sidecar.tools.edit_file("pkg/calc.py", "return a + b", "return a + b + 0")
    status = await sidecar.tools.git_status()
    assert " M pkg/calc.py" in status.text
    diff = await sidecar.tools.git_diff()
    assert "+    return a + b + 0" in diff.text and "1 file changed" in diff.text
    only = await sidecar.tools.git_diff("README.md")
    assert only.text == "(no changes)"
    staged = await sidecar.tools.git_diff(staged=True)
    assert staged.text == "(no changes)"
    with pytest.raises(ToolFailure, match="starts with '-'"):
        await sidecar.tools.git_diff("--output=/tmp/x")


async def test_generation_only_grows(sidecar: Sidecar, workspace: Path) -> None:
    g0 = sidecar.generation
    await sidecar.tools.write_file("g.txt", "1")
    g1 = sidecar.generation
    assert g1 > g0 and sidecar.changed_since(g0)
    (workspace / "other.txt").write_text("external")
    await sidecar.watcher.barrier()
    assert sidecar.generation > g1
    g2 = sidecar.generation
    await sidecar.tools.read_file("README.md")
    assert not sidecar.changed_since(g2)
    os.utime(workspace / "README.md")
    await sidecar.watcher.barrier()
    assert sidecar.changed_since(g2)


@pytest.mark.parametrize("swap", ["symlink out", "removed", "file"])
async def test_a_directory_changed_after_its_check_is_explained(sidecar: Sidecar, tmp_path: Path, swap: str) -> None:
    """list_dir checks the path, then opens it without following links: a change in between is a message."""
    ws = Path(sidecar.jail.root)
    target = sidecar.jail.resolve("pkg")
    os.rename(ws / "pkg", ws / "pkg-old")
    if swap == "symlink out":
        (ws / "pkg").symlink_to(tmp_path, target_is_directory=True)
    elif swap == "file":
        (ws / "pkg").write_text("now a file\n")
    with pytest.raises(ToolFailure, match=r"changed .*retry"):
        sidecar.tools._list(target, 2)


async def test_an_unmapped_filesystem_error_still_tells_the_model_what_to_do(sidecar: Sidecar) -> None:
    def body() -> None:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(ToolFailure, match=r"changed while it was being read.*retry"):
        await sidecar.invoke("list_dir", None, body)  # type: ignore[arg-type]
