"""Tool-level speculation: pre-run the tests after an edit, on idle CPU, for exactly the state they ran on.

`TestPrerunner` watches the agent's tool calls (`observe`, called by `Sidecar.invoke` after every call). It
feeds the next-action predictor (`core.prediction`) and, after any call but a test run (mostly an edit: the
seed's table gives edit -> run tests 50%; other states once the agent's habits are learnt), when the predictor
gives the next
`run_tests` at least `min_probability`, the 1-minute load average per core is under `max_load_per_core`, no
pre-run is in progress (one at a time: one sidecar is one agent) and the result is not already cached, it
starts the test command in the background through `Tools.run_tests(..., speculative=True)`.

Exactness comes from the tool cache: the run is stored under the workspace generation it started from
(after a watcher barrier, so the edit's own events are in) and only if nothing changed while it ran; the
agent's own `run_tests` on that exact state is a hit, and one issued while the pre-run is still going shares
it (single flight). While it runs, the workspace generation is polled; any change cancels the run (its
process group is killed) so an agent never waits for a result it cannot use. Outcomes: `started`, `used`
(served to the agent, counted by `Tools`), `cancelled` (the workspace changed mid-run), `discarded`
(finished but the state had moved, so the cache refused it), `unused` (finished, valid, never asked for:
the next edit made it stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.core.prediction import Action, Predictor, action_of, state_of
from sidecar.core.speculation import cpu_idle, should_prerun_tests
from sidecar.obs import get_logger
from sidecar.toolserver.tools import ToolFailure, Tools

log = get_logger(__name__)
POLL_S = 0.02


def load_per_core() -> float:
    """The 1-minute load average divided by the CPU count (a value per core; 1.0 = all cores busy)."""
    return os.getloadavg()[0] / max(os.cpu_count() or 1, 1)


@dataclass
class PrerunStats:
    started: int = 0
    cancelled: int = 0
    discarded: int = 0
    finished: int = 0
    skipped_busy_cpu: int = 0
    errors: int = 0


class TestPrerunner:
    """Speculative test runs for one agent's workspace; see the module docstring."""

    def __init__(
        self,
        tools: Tools,
        *,
        agent: str,
        enabled: bool,
        min_probability: float,
        max_load_per_core: float,
        load: Callable[[], float] = load_per_core,
        predictor: Predictor | None = None,
    ) -> None:
        self.tools = tools
        self.agent = agent
        self.workspace = tools.jail.root
        self.enabled = enabled
        self.min_probability = min_probability
        self.max_load_per_core = max_load_per_core
        self.load = load
        self.predictor = predictor or Predictor()
        self.stats = PrerunStats()
        self.last_target: str | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def observe(
        self,
        tool: str,
        *,
        ok: bool,
        paths: list[str],
        exit_code: int | None = None,
        command: str | None = None,
        target: str | None = None,
    ) -> None:
        """One finished agent tool call: learn from it, and maybe start a pre-run."""
        action = action_of(tool, paths, command)
        self.predictor.observe(self.agent, self.workspace, action, state_of(action, ok, exit_code))
        if tool == "run_tests" and ok:
            self.last_target = target
        # After any call but a test run (an edit above all, but also e.g. a session's first listing once the
        # agent's habits are learnt): a result already known for this state is never re-run (`_run` peeks).
        if action is not Action.RUN_TESTS and ok and self.enabled:
            self.maybe_start()

    def maybe_start(self) -> bool:
        """Start a pre-run if `should_prerun_tests` says so; True when one started."""
        p = self.predictor.probability(Action.RUN_TESTS, self.agent, self.workspace)
        idle = cpu_idle(self.load(), 1, self.max_load_per_core)
        if not idle and p >= self.min_probability:
            self.stats.skipped_busy_cpu += 1
        if not should_prerun_tests(p, self.min_probability, idle=idle, running=self.running, already_known=False):
            return False
        self.stats.started += 1
        self.task = asyncio.get_running_loop().create_task(self._run(self.last_target), name="sidecar-prerun")
        return True

    async def _run(self, target: str | None) -> None:
        # Let the edit's own watcher events land first, so the generation we record is the edited state.
        await self.tools.cache.watcher.barrier()
        if await self.tools.peek("run_tests", {"target": target}) is not None:
            self.stats.started -= 1  # already known: nothing to do (counted as not started)
            return
        generation = self.tools.generation
        run = asyncio.get_running_loop().create_task(self.tools.run_tests(target, speculative=True))
        try:
            while not run.done():
                await asyncio.wait({run}, timeout=POLL_S)
                if not run.done() and self.tools.generation != generation:
                    run.cancel()
                    self.stats.cancelled += 1
                    log.info("speculative test run cancelled: the workspace changed", agent=self.agent)
                    with contextlib.suppress(asyncio.CancelledError):
                        await run
                    return
            run.result()
            self.stats.finished += 1
            if self.tools.generation != generation:
                self.stats.discarded += 1
        except ToolFailure:
            self.stats.errors += 1
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run

    async def aclose(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def counters(self) -> dict[str, float]:
        """The cumulative numbers each tool event carries to the coordinator (`core.speculation.SIDECAR_COUNTERS`);
        cheap, as it runs on every tool call."""
        s, used, accuracy = self.stats, self.tools.speculative_used, self.predictor.accuracy
        return {
            "prerun_started": s.started,
            "prerun_used": used,
            "prerun_cancelled": s.cancelled,
            "prerun_discarded": s.discarded,
            "prerun_unused": max(s.finished - s.discarded - used, 0),
            "prerun_saved_s": round(self.tools.speculative_saved_s, 3),
            "predictions": accuracy.predictions,
            "top1": accuracy.top1,
            "top3": accuracy.top3,
        }

    def as_dict(self) -> dict[str, Any]:
        c = self.counters()
        return {
            "enabled": self.enabled,
            "started": c["prerun_started"],
            "used": c["prerun_used"],
            "cancelled": c["prerun_cancelled"],
            "discarded": c["prerun_discarded"],
            "unused": c["prerun_unused"],
            "running": self.running,
            "skipped_busy_cpu": self.stats.skipped_busy_cpu,
            "errors": self.stats.errors,
            "time_saved_s": c["prerun_saved_s"],
            "prediction": self.predictor.accuracy.as_dict(),
        }
