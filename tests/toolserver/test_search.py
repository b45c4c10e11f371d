"""search's backends over a real workspace: they search what the jail opened (never a name swapped after the
check), name lines as requested, agree on globs, links inside and long lines, and stop at the time limit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.toolserver import tools
from sidecar.toolserver.jail import Jail
from sidecar.toolserver.offload import Offload
from sidecar.toolserver.search import Scope, SearchResult, python_search, rg_search
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from sidecar.toolserver.tools import ToolFailure
from tests.conftest import require_tool

from .conftest import settle

BACKENDS = ["python", "rg"]


async def run_backend(backend: str, scope: Scope, pattern: str, glob: str | None = None) -> SearchResult:
    if backend == "python":
        return python_search(scope, pattern, glob, 100)
    found = await rg_search(require_tool("rg"), scope, pattern, glob, 100, Offload())
    assert found is not None
    return found


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["dir", "file"])
async def test_the_opened_scope_is_searched_even_after_its_name_leads_out(
    tmp_path: Path, backend: str, kind: str
) -> None:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "f.txt").write_text("INSIDE\n")
    outside.mkdir()
    (outside / "f.txt").write_text("OUTSIDE\n")
    jail = Jail(ws)
    target = jail.resolve("sub" if kind == "dir" else "sub/f.txt")
    fd, is_dir = jail.open_scope(target)
    try:
        assert is_dir == (kind == "dir")
        os.rename(ws / "sub", ws / "sub-old")  # the name now leads outside...
        (ws / "sub").symlink_to(outside, target_is_directory=True)
        result = await run_backend(backend, Scope(fd, is_dir, target.shown), "SIDE")
    finally:
        os.close(fd)
    assert result.lines == ["sub/f.txt:1:INSIDE"]  # ...but what was opened is what is searched


@pytest.mark.parametrize("backend", ["python", "auto"])
async def test_backends_agree_on_names_globs_and_long_lines(
    make_settings: Callable[..., SidecarSettings], workspace: Path, backend: str
) -> None:
    (workspace / "pkg" / "deep").mkdir()
    (workspace / "pkg" / "deep" / "more.py").write_text("def add_more():\n    pass\n")
    (workspace / "long.txt").write_text("y" * 200_000 + "\n")  # over asyncio's 64 KiB line limit
    (workspace / "link_pkg").symlink_to("pkg", target_is_directory=True)
    (workspace / "link_calc").symlink_to("pkg/calc.py")
    settle()
    async with Sidecar(make_settings(search_backend=backend), env={}) as sc:
        long = await sc.tools.search("y{1000}")
        assert long.text.startswith("long.txt:1:yyy")
        via_link = await sc.tools.search("def add", "link_pkg")
        assert via_link.text.split("\n") == [
            "link_pkg/calc.py:1:def add(a, b):",
            "link_pkg/deep/more.py:1:def add_more():",
        ]
        file_link = await sc.tools.search("def add", "link_calc")
        assert file_link.text == "link_calc:1:def add(a, b):"
        anchored = await sc.tools.search("def add", "pkg", glob="pkg/deep/*.py")  # globs stay root-relative
        assert anchored.text == "pkg/deep/more.py:1:def add_more():"
        excluded = await sc.tools.search("def add", "pkg", glob="!pkg/deep/**")
        assert excluded.text == "pkg/calc.py:1:def add(a, b):"


def search_workers() -> list[int]:
    """Live search worker processes started by this test process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if stat[1] == str(os.getpid()) and stat[0] != "Z" and b"search_worker" in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("backend", ["python", "auto"])
async def test_a_search_that_never_finishes_is_stopped_and_explained(
    make_settings: Callable[..., SidecarSettings], workspace: Path, backend: str
) -> None:
    """Look-ahead sends the pattern to Python's backtracking engine (ripgrep refuses it) on either backend;
    over 40 'a' it would not finish in any lifetime."""
    (workspace / "aaa.txt").write_text("a" * 40 + "\n")
    async with Sidecar(make_settings(search_backend=backend, search_timeout_s=2), env={}) as sc:
        with pytest.raises(ToolFailure, match=r"did not finish within 2 s.*simplify the pattern"):
            await sc.tools.search("(?=(a+)+b)")
        assert search_workers() == []  # killed and reaped, not left spinning
        after = await sc.tools.search("a{40}")  # the sidecar still answers
        assert after.text == "aaa.txt:1:" + "a" * 40


async def test_the_time_limit_counts_the_search_not_the_worker_start_up(
    make_settings: Callable[..., SidecarSettings], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python worker cannot start in a millisecond: with that as its start-up allowance the search is stopped
    and says so, instead of blaming the pattern; with the allowance back, the same search answers although
    `search_timeout_s` is shorter than the interpreter's start-up on a loaded machine."""
    (workspace / "aaa.txt").write_text("a" * 40 + "\n")
    async with Sidecar(make_settings(search_backend="python", search_timeout_s=0.2), env={}) as sc:
        monkeypatch.setattr(tools, "SEARCH_START_LIMIT_S", 0.0)
        with pytest.raises(ToolFailure, match=r"worker process did not start"):
            await sc.tools.search("(?=a)a")
        assert search_workers() == []
        monkeypatch.undo()
        found = await sc.tools.search("(?=a)a{40}")  # look-ahead: Python's engine, in the worker
        assert found.text == "aaa.txt:1:" + "a" * 40
