"""Tool-level speculation over a real workspace and real pytest runs: a pre-run is used only for the exact
state it ran on, cancelled when the workspace changes, and never marked in the text the agent reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sidecar.testing import wait_until
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from tests.toolserver.conftest import settle

SLOW_TEST = "import time\n\n\ndef test_slow():\n    time.sleep(1.5)\n"


@pytest.fixture
async def spec(make_settings: Callable[..., SidecarSettings]) -> AsyncIterator[Sidecar]:
    settle()
    async with Sidecar(make_settings(speculate_tests=True), env={}) as sc:
        sc.prerunner.load = lambda: 0.0  # the shared test machine's load must not decide these tests
        yield sc


async def edit(sc: Sidecar, path: str, before: str, after: str) -> str:
    return await sc.invoke("edit_file", None, lambda: sc.tools.edit_file(path, before, after))


async def run_tests(sc: Sidecar) -> str:
    return await sc.invoke("run_tests", None, sc.tools.run_tests)


async def prerun_done(sc: Sidecar) -> None:
    task = sc.prerunner.task
    assert task is not None, "no pre-run started"
    await asyncio.wait_for(asyncio.shield(task), 30)


async def test_prerun_result_serves_the_exact_state(spec: Sidecar) -> None:
    await edit(spec, "pkg/calc.py", "return a - b", "return b - a")
    await prerun_done(spec)
    assert spec.prerunner.stats.finished == 1
    text = await run_tests(spec)
    assert text.startswith("$ ") and "cached" not in text  # the agent reads it as its own run
    assert "1 passed" in text
    assert spec.tools.speculative_used == 1 and spec.tools.speculative_saved_s > 0
    again = await run_tests(spec)  # the second identical call is an ordinary cache hit
    assert again.startswith("[cached:") and spec.tools.speculative_used == 1
    assert spec.stats()["speculation"]["used"] == 1


async def test_one_byte_changed_after_the_prerun_is_not_used(spec: Sidecar, workspace: Path) -> None:
    await edit(spec, "pkg/calc.py", "return a - b", "return b - a")
    await prerun_done(spec)
    source = workspace / "pkg/calc.py"
    source.write_text(source.read_text().replace("a + b", "a * b"))  # add(2, 3) is now 6: the test fails
    text = await run_tests(spec)
    assert "1 failed" in text and "cached" not in text
    assert spec.tools.speculative_used == 0


async def test_change_during_the_prerun_cancels_it(spec: Sidecar, workspace: Path) -> None:
    (workspace / "tests/test_slow.py").write_text(SLOW_TEST)
    settle()
    await edit(spec, "pkg/calc.py", "return a - b", "return b - a")
    await wait_until(lambda: spec.prerunner.running)
    await asyncio.sleep(0.3)
    source = workspace / "pkg/calc.py"
    source.write_text(source.read_text().replace("a + b", "a * b"))
    await prerun_done(spec)
    assert spec.prerunner.stats.cancelled == 1 and spec.prerunner.stats.finished == 0
    text = await run_tests(spec)
    assert "1 failed" in text and spec.tools.speculative_used == 0


async def test_agent_call_during_the_prerun_waits_for_it(spec: Sidecar, workspace: Path) -> None:
    (workspace / "tests/test_slow.py").write_text(SLOW_TEST)
    settle()
    await edit(spec, "pkg/calc.py", "return a - b", "return b - a")
    await wait_until(lambda: spec.prerunner.running)
    await asyncio.sleep(0.2)
    text = await run_tests(spec)  # joins the pre-run in flight instead of starting a second one
    assert "2 passed" in text and "cached" not in text
    assert spec.tools.speculative_used == 1
    assert spec.tools.cache.admissions["stored"] >= 1
    assert spec.prerunner.stats.started == 1


async def test_busy_cpu_or_disabled_starts_nothing(
    spec: Sidecar, make_settings: Callable[..., SidecarSettings]
) -> None:
    spec.prerunner.load = lambda: 5.0
    await edit(spec, "pkg/calc.py", "return a - b", "return b - a")
    assert spec.prerunner.task is None and spec.prerunner.stats.skipped_busy_cpu == 1
    async with Sidecar(make_settings(), env={}) as off:
        off.prerunner.load = lambda: 0.0
        await edit(off, "pkg/calc.py", "return b - a", "return a - b")
        assert off.prerunner.task is None
        assert off.stats()["speculation"]["prediction"]["predictions"] == 0


async def test_predictions_are_scored(spec: Sidecar) -> None:
    spec.prerunner.load = lambda: 5.0
    await edit(spec, "pkg/calc.py", "return a - b", "return b - a")
    await run_tests(spec)  # edit -> run_tests: the seed's top-1
    report = spec.stats()["speculation"]["prediction"]
    assert report["predictions"] == 1 and report["top1"] == 1


async def test_a_learnt_habit_prerun_after_a_read_only_when_the_state_is_new(spec: Sidecar, workspace: Path) -> None:
    source = workspace / "pkg/calc.py"
    read = lambda: spec.invoke("read_file", None, lambda: spec.tools.read_file("pkg/calc.py"))  # noqa: E731
    await read()  # nothing learnt about "after a read" yet: no pre-run
    assert spec.prerunner.task is None
    await run_tests(spec)  # read -> run_tests, learnt for this agent
    await read()  # the result for this exact state is known: nothing to pre-run
    await asyncio.sleep(0.2)
    assert spec.prerunner.stats.started == 0
    source.write_text(source.read_text().replace("a + b", "a * b"))  # changed outside the sidecar's tools
    settle()
    await read()
    await prerun_done(spec)
    assert spec.prerunner.stats.started == 1 and spec.prerunner.stats.finished == 1
    text = await run_tests(spec)
    assert "1 failed" in text and spec.tools.speculative_used == 1


async def test_counters_already_score_the_call_just_made(spec: Sidecar) -> None:
    await edit(spec, "pkg/calc.py", "return a - b", "return b - a")
    await prerun_done(spec)
    await run_tests(spec)
    counters = spec.prerunner.counters()
    assert counters["prerun_started"] == 1 and counters["prerun_used"] == 1
    assert counters["predictions"] == 1 and counters["top1"] == 1  # this call already scored (observed first)
    assert counters["prerun_saved_s"] > 0
