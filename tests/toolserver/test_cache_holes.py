"""Writes inotify (and stat) cannot see: a cached read_file is checked against the file's bytes before it is
served, so neither a second write through an mmap nor a rewrite through a hard link outside the workspace
returns the old text. (Tree-wide results, search and run_tests, are not re-read: docs/security.md.)"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from sidecar.toolserver.tools import ToolFailure

from .conftest import settle


async def test_a_second_write_through_the_same_mmap_is_seen(sidecar: Sidecar, workspace: Path) -> None:
    path = workspace / "pkg" / "calc.py"
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        mapped[0:3] = b"DEF"  # the first write faults the page in writable: mtime moves once
        settle()
        first = await sidecar.tools.read_file("pkg/calc.py")
        again = await sidecar.tools.read_file("pkg/calc.py")
        assert "DEF add" in first.text and again.cached  # cached, stat-stable
        stamp = os.stat(path)
        mapped[0:3] = b"XYZ"  # the page is still dirty: no fault, no event, (typically) no mtime change
        seen = await sidecar.tools.read_file("pkg/calc.py")
        assert "XYZ add" in seen.text, (stamp.st_mtime_ns, os.stat(path).st_mtime_ns)
        assert not seen.cached


async def test_a_write_through_a_hard_link_outside_is_seen(sidecar: Sidecar, workspace: Path, tmp_path: Path) -> None:
    """No event arrives here for a write through a link in an unwatched directory; the read is still current."""
    path = workspace / "pkg" / "calc.py"
    outside = tmp_path / "outside-link"
    os.link(path, outside)
    settle()
    assert not (await sidecar.tools.read_file("pkg/calc.py")).cached
    assert (await sidecar.tools.read_file("pkg/calc.py")).cached
    st = os.stat(path)
    with outside.open("r+b") as f:  # same size, in place, mtime put back
        f.write(outside.read_bytes().replace(b"a + b", b"a * b"))
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    seen = await sidecar.tools.read_file("pkg/calc.py")
    assert "a * b" in seen.text and not seen.cached


async def test_a_tree_deeper_than_the_watchers_walk_still_serves_every_tool(
    make_settings: Callable[..., SidecarSettings], workspace: Path
) -> None:
    """A repository can ship a tree 1,000 directories deep: watchdog's recursive walk fails on it. The sidecar
    starts anyway and answers every call, uncached (the watcher is not healthy, so nothing is cached)."""
    here = workspace
    for _ in range(1000):
        here = here / "d"
        here.mkdir()
    (here / "deep.txt").write_text("needle\n")
    settle()
    try:
        async with Sidecar(make_settings(search_backend="python"), env={}) as sc:
            assert "return a + b" in (await sc.tools.read_file("pkg/calc.py")).text
            assert not (await sc.tools.read_file("pkg/calc.py")).cached
            listed = await sc.tools.list_dir(".", depth=3)
            assert "d/d/" in listed.text
            with contextlib.suppress(ToolFailure):  # an answer (a result or a message), never an exception or hang
                await sc.tools.search("needle")
    finally:
        # rm, not shutil: pytest's own clean-up of old temporary directories recurses and fails on this tree.
        await asyncio.to_thread(subprocess.run, ["rm", "-rf", str(workspace / "d")], check=True, timeout=60)
