"""Fixtures for the sidecar's shell tests: a real workspace on disk and a started sidecar over it."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar

# Files younger than the racy window (100 ms) are never cached; tests wait this long after writing fixtures.
SETTLE_S = 0.13
TEST_COMMAND = f"{sys.executable} -m pytest -q -p no:cacheprovider -p no:randomly"

SAMPLE = {
    "README.md": "# sample\n",
    "pkg/__init__.py": "",
    "pkg/calc.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
    "tests/test_calc.py": (
        "import sys\nsys.path.insert(0, '.')\nfrom pkg.calc import add\n\n\n"
        "def test_add():\n    assert add(2, 3) == 5\n"
    ),
    ".gitignore": "*.log\nbuild/\n",
    "build/out.txt": "generated\n",
    "debug.log": "noise\n",
}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def settle() -> None:
    """Let freshly written files age past the racy window so that reading them may be cached."""
    time.sleep(SETTLE_S)


async def settled(sc: Sidecar) -> None:
    """`settle`, then wait until the watcher has applied the events of what was written: an event applied while
    a tool reads (the loop serves while it does) keeps that read's result out of the cache."""
    settle()
    assert await sc.watcher.barrier()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    write_tree(root, SAMPLE)
    return root


@pytest.fixture
def make_settings(workspace: Path) -> Callable[..., SidecarSettings]:
    def make(**overrides: Any) -> SidecarSettings:
        values: dict[str, Any] = {"workspace": workspace, "test_command": TEST_COMMAND, "test_timeout_s": 60}
        values.update(overrides)
        return SidecarSettings(**values)

    return make


@pytest.fixture
async def sidecar(make_settings: Callable[..., SidecarSettings]) -> AsyncIterator[Sidecar]:
    settle()
    async with Sidecar(make_settings(), env={}) as sc:
        yield sc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Watchdog warns (RuntimeWarning "Callback with id ... already exists") when it re-adds a watch while
    # directories move under it; pytest's warnings-as-errors would turn that into a crash of watchdog's reader
    # thread, which production never sees. (The sidecar detects a dead reader and restarts the watcher anyway.)
    for item in items:
        if "tests/toolserver/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning"))
