"""The cache never serves stale output: every way a file can change, the watcher's failure modes, run_tests."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.testing import wait_until
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar

from .conftest import settle, settled

CALC = "pkg/calc.py"


def body(text: str) -> str:
    """read_file output without its header."""
    return text.split("\n", 1)[1]


async def read(sc: Sidecar, path: str = CALC) -> tuple[str, bool]:
    out = await sc.tools.read_file(path)
    return out.text, out.cached


async def test_repeat_read_is_a_validated_hit(sidecar: Sidecar) -> None:
    first, cached = await read(sidecar)
    assert not cached
    again, cached = await read(sidecar)
    assert cached and again == first
    assert sidecar.cache.stats["hits"] == 1


def _same_size_same_mtime(path: Path) -> None:
    st = path.stat()
    text = path.read_text()
    path.write_text(text.replace("a + b", "b + a"))  # same length
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime back


def _atomic_rename(path: Path) -> None:
    tmp = path.with_name("tmp.swp")
    tmp.write_text(path.read_text().replace("a + b", "a + b + 0"))
    os.replace(tmp, path)


def _cp_p(path: Path) -> None:
    other = path.with_name("other.py")
    other.write_text(path.read_text().replace("add", "plus"))
    shutil.copy2(other, path)  # content and timestamps copied: only ctime tells


def _touch_only(path: Path) -> None:
    os.utime(path)  # content unchanged: a re-read is still correct, but must not be required to be cached


def _delete_recreate(path: Path) -> None:
    text = path.read_text()
    path.unlink()
    path.write_text(text.replace("sub", "min"))


def _dir_rename(path: Path) -> None:
    pkg = path.parent
    pkg.rename(pkg.with_name("pkg_old"))
    pkg.mkdir()
    (pkg / "calc.py").write_text("def add(a, b):\n    return 0\n")


def _truncate_append(path: Path) -> None:
    with open(path, "r+") as f:
        f.truncate(0)
        f.write("x = 1\n")


@pytest.mark.parametrize(
    "change",
    [_same_size_same_mtime, _atomic_rename, _cp_p, _touch_only, _delete_recreate, _dir_rename, _truncate_append],
)
async def test_external_changes_are_never_served_stale(
    sidecar: Sidecar, workspace: Path, change: Callable[[Path], None]
) -> None:
    await read(sidecar)
    await read(sidecar)  # cached now
    change(workspace / CALC)
    text, _ = await read(sidecar)  # immediately: no waiting for the watcher
    expected = (workspace / CALC).read_text()
    shown = "\n".join(line.split("\t", 1)[1] for line in body(text).split("\n"))
    assert shown == expected.rstrip("\n")


async def test_own_writes_invalidate_synchronously(sidecar: Sidecar) -> None:
    await read(sidecar)
    listing = await sidecar.tools.list_dir("pkg", 1)
    await sidecar.tools.write_file("pkg/new.py", "x = 1\n")
    relisted = await sidecar.tools.list_dir("pkg", 1)
    assert not relisted.cached and "pkg/new.py" in relisted.text and relisted.text != listing.text
    await sidecar.tools.edit_file(CALC, "return a + b", "return a + b + 1")
    text, cached = await read(sidecar)
    assert not cached and "a + b + 1" in text


async def test_tree_results_follow_external_changes(sidecar: Sidecar, workspace: Path) -> None:
    first = await sidecar.tools.search("def ")
    assert (await sidecar.tools.search("def ")).cached
    (workspace / "pkg" / "more.py").write_text("def more():\n    pass\n")  # no wait: the barrier catches it
    after = await sidecar.tools.search("def ")
    assert not after.cached and "pkg/more.py:1:def more():" in after.text and after.text != first.text
    listing = await sidecar.tools.list_dir(".", 1)
    (workspace / "pkg").rename(workspace / "lib")
    relisted = await sidecar.tools.list_dir(".", 1)
    assert "lib/" in relisted.text and "pkg/" not in relisted.text and relisted.text != listing.text


async def test_events_in_ignored_directories_do_not_invalidate(sidecar: Sidecar, workspace: Path) -> None:
    await sidecar.tools.search("def ")
    (workspace / "pkg" / "__pycache__").mkdir()
    (workspace / "pkg" / "__pycache__" / "calc.cpython-311.pyc").write_bytes(b"\x00")
    assert (await sidecar.tools.search("def ")).cached


async def test_racily_clean_files_are_not_cached(sidecar: Sidecar, workspace: Path) -> None:
    (workspace / "fresh.txt").write_text("just written\n")
    assert await sidecar.watcher.barrier()  # the write's own events are in: they cannot arrive during the reads
    await read(sidecar, "fresh.txt")
    _, cached = await read(sidecar, "fresh.txt")
    assert not cached
    assert sidecar.cache.admissions["racily_clean"] >= 2
    settle()
    await read(sidecar, "fresh.txt")
    _, cached = await read(sidecar, "fresh.txt")
    assert cached


async def test_symlink_repointed_inside_the_workspace(sidecar: Sidecar, workspace: Path) -> None:
    (workspace / "v1").mkdir()
    (workspace / "v1" / "f.txt").write_text("one\n")
    (workspace / "v2").mkdir()
    (workspace / "v2" / "f.txt").write_text("two\n")
    os.symlink("v1", workspace / "cur")
    await settled(sidecar)
    assert "one" in (await read(sidecar, "cur/f.txt"))[0]
    assert (await read(sidecar, "cur/f.txt"))[1]
    os.unlink(workspace / "cur")
    os.symlink("v2", workspace / "cur")
    text, cached = await read(sidecar, "cur/f.txt")
    assert "two" in text and not cached


async def test_watchdog_overflow_flushes_everything(sidecar: Sidecar) -> None:
    await read(sidecar)
    await sidecar.tools.search("def ")
    epoch = sidecar.gens.epoch
    # watchdog's only signal of lost events is this log record (observers/inotify_c.py)
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    await wait_until(lambda: sidecar.gens.epoch > epoch)
    assert sidecar.cache.stats["entries"] == 0
    _, cached = await read(sidecar)
    assert not cached
    assert not (await sidecar.tools.search("def ")).cached


async def test_a_dead_watcher_is_flushed_and_restarted(sidecar: Sidecar, workspace: Path) -> None:
    await sidecar.tools.search("def ")
    sidecar.watcher._observer.stop()
    sidecar.watcher._observer.join()
    assert not sidecar.watcher.healthy
    (workspace / "pkg" / "calc.py").write_text("def changed():\n    pass\n")  # an event nobody sees
    out = await sidecar.tools.search("def ")
    assert not out.cached and "def changed" in out.text
    assert sidecar.watcher.healthy and sidecar.watcher.flushes >= 1


async def test_lru_bound_evicts(make_settings: Callable[..., SidecarSettings]) -> None:
    settle()
    async with Sidecar(make_settings(cache_max_bytes=900), env={}) as sc:
        await sc.tools.read_file(CALC)
        await sc.tools.read_file("tests/test_calc.py")
        await sc.tools.read_file("README.md")
        stats = sc.cache.stats
        assert stats["bytes"] <= 900 and stats["evictions"] >= 1


async def test_run_tests_repeat_is_cached_until_anything_changes(sidecar: Sidecar, workspace: Path) -> None:
    first = await sidecar.tools.run_tests()
    assert not first.cached and first.exit_code == 0
    second = await sidecar.tools.run_tests()
    assert second.cached and second.exit_code == 0
    assert second.text.startswith("[cached: the workspace is unchanged since this run at ")
    assert second.text.split("\n", 1)[1] == first.text  # the original timestamp and duration
    (workspace / "notes.txt").write_text("unrelated, but the workspace changed\n")
    third = await sidecar.tools.run_tests()
    assert not third.cached
    await sidecar.tools.edit_file(CALC, "return a + b", "return a * b")
    fourth = await sidecar.tools.run_tests()
    assert not fourth.cached and fourth.exit_code == 1


async def test_concurrent_identical_runs_share_one_execution(sidecar: Sidecar, workspace: Path) -> None:
    import asyncio

    marker = workspace.parent / "runs.txt"  # outside the workspace: writing it is not a workspace change
    (workspace / "tests" / "conftest.py").write_text(
        f"def pytest_sessionstart(session):\n    open({str(marker)!r}, 'a').write('run\\n')\n"
    )
    await sidecar.watcher.barrier()
    a, b = await asyncio.gather(sidecar.tools.run_tests(), sidecar.tools.run_tests())
    assert marker.read_text() == "run\n"  # one execution
    assert {a.cached, b.cached} == {False, True}
    assert a.exit_code == b.exit_code == 0


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_checkout_invalidates(sidecar: Sidecar, workspace: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "a",
        "GIT_AUTHOR_EMAIL": "a@b",
        "GIT_COMMITTER_NAME": "a",
        "GIT_COMMITTER_EMAIL": "a@b",
    }
    run = lambda *a: subprocess.run(["git", *a], cwd=workspace, check=True, capture_output=True, env=env)  # noqa: E731
    run("init", "-q")
    run("add", ".")
    run("commit", "-qm", "one")
    (workspace / CALC).write_text("def add(a, b):\n    return 42\n")
    run("commit", "-qam", "two")
    await settled(sidecar)
    assert "42" in (await read(sidecar))[0]
    assert (await read(sidecar))[1]
    run("checkout", "-q", "HEAD~1")
    text, cached = await read(sidecar)
    assert "a + b" in text and not cached


async def test_peek_returns_only_valid_cached_output(sidecar: Sidecar, workspace: Path) -> None:
    assert await sidecar.tools.peek("read_file", {"path": CALC}) is None  # never computes
    first = await sidecar.tools.read_file(CALC)
    assert await sidecar.tools.peek("read_file", {"path": CALC}) == first.text
    assert await sidecar.tools.peek("run_tests", {}) is None
    run = await sidecar.tools.run_tests()
    peeked = await sidecar.tools.peek("run_tests", {})
    assert peeked is not None and peeked == (await sidecar.tools.run_tests()).text
    assert peeked.split("\n", 1)[1] == run.text
    listed = await sidecar.tools.list_dir("pkg", 1)
    assert await sidecar.tools.peek("list_dir", {"path": "pkg", "depth": 1}) == listed.text
    found = await sidecar.tools.search("def ")
    assert await sidecar.tools.peek("search", {"pattern": "def "}) == found.text
    (workspace / "pkg" / "x.py").write_text("def x():\n    pass\n")
    assert await sidecar.tools.peek("search", {"pattern": "def "}) is None
    assert await sidecar.tools.peek("run_tests", {}) is None  # the workspace changed
    assert await sidecar.tools.peek("read_file", {"path": "../x"}) is None
    assert await sidecar.tools.peek("write_file", {"path": "a", "content": "b"}) is None
