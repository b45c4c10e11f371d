"""Streaming tool execution: start the tool calls of an answer while it is still streaming (issue 19).

The coordinator sees each tool call of a streamed answer complete long before the answer ends
(`core.toolstream`) and asks the agent's sidecar to start it (`POST /early`, `start(answer, calls)`). The
agent's own call, when it comes, finds the result computed or joins the computation.

What is started: only calls `core.earlyrun.normalize` accepts (read-only tools, and `run_tests`; never a
mutating tool), at most `max_concurrent` at once (a call over the cap is refused, not queued), one per distinct
call, nothing already known to the cache (counted `known`), nothing for an answer already over.

Lossless by construction: an early run only calls the tool body (`Tools`) the way the agent's call would,
which stores its result in the validated tool cache (`cache.py`; a tree result only if nothing changed while
it was computed, a file result with its stamps) and never hands anything to the agent itself. The agent's real
call always runs its own tool body (`Sidecar.invoke`): it first joins a matching early run still in progress
(`claim` + `join`), then the body takes the cached result only if the cache still finds it valid for the
workspace as it is at that moment, and computes afresh otherwise. A test run started early is cached on the
exact workspace state it started from (as a pre-run is) and rendered as the agent's own run on first use; it is
cancelled (process group killed) as soon as the workspace changes under it.

Outcomes per started run: `used` (the agent's call got its result: a cache hit or a joined run), `wasted`
(anything else: not asked for by the time the answer is over, asked for but stale, failed or cancelled;
`cancelled` counts those stopped while running). An answer is over when the coordinator reports a later one
for this agent (`start` with another answer id, possibly with no calls: the agent's next LLM call shows which
of the previous answer's calls it ran). `saved_s` is the agent time saved: per used run, the part of its
computation that happened before the agent asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.core.earlyrun import NotStarted, call_key, decide_start
from sidecar.obs import get_logger
from sidecar.toolserver.tools import ToolFailure, ToolOutput, Tools

log = get_logger(__name__)
POLL_S = 0.02
MAX_ANSWER_ID = 64
CLOSED_ANSWERS = 64  # answer ids remembered as over, so a late start for one is refused
MAX_CALLS = 64  # one answer's tool calls per request; more is refused
MAX_BYTES = 1024 * 1024


@dataclass
class EarlyStats:
    started: int = 0
    used: int = 0
    wasted: int = 0
    cancelled: int = 0
    known: int = 0  # the result was already cached: nothing to compute
    refused: int = 0  # not early-safe, bad arguments, a duplicate, or an answer already over
    busy: int = 0  # refused because `max_concurrent` runs were in progress
    saved_s: float = 0.0


@dataclass
class EarlyRun:
    """One call started early: what, for which answer, and when it ran."""

    key: str
    tool: str
    args: dict[str, Any]
    answer: str
    started: float
    task: asyncio.Task[None] | None = None
    generation: int | None = None  # the workspace generation it computed on (None until it starts computing)
    finished: float | None = None
    known: bool = False
    ok: bool = False
    cancelled: bool = False


class EarlyRunner:
    """Early tool runs for one sidecar; see the module docstring."""

    def __init__(self, tools: Tools, *, max_concurrent: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.tools = tools
        self.max_concurrent = max_concurrent
        self.clock = clock
        self.stats = EarlyStats()
        self.pending: dict[str, EarlyRun] = {}  # call key -> the run, until the agent claims it or its answer ends
        self.answer: str | None = None  # the answer the pending runs belong to
        self._closed: deque[str] = deque(maxlen=CLOSED_ANSWERS)

    @property
    def running(self) -> int:
        return sum(1 for run in self.pending.values() if run.task is not None and not run.task.done())

    def start(self, answer: str, calls: object) -> list[str]:
        """Start what can be started of `calls` (`[{name, arguments}]`) for `answer`; one outcome per call:
        "started" (accepted: whether it was already known to the cache is decided in the run, and counted),
        or a refusal that says why.
        Any other answer's pending runs end first (that answer is over). Raises ValueError for a malformed body."""
        if not isinstance(answer, str) or not answer or len(answer) > MAX_ANSWER_ID:
            raise ValueError(f"answer must be a non-empty string of at most {MAX_ANSWER_ID} characters")
        if not isinstance(calls, list):
            raise ValueError("calls must be a list of {name, arguments} objects")
        if answer in self._closed:
            self.stats.refused += len(calls)
            return ["refused: that answer is over"] * len(calls)
        if self.answer != answer:
            self.end_answer()
            self.answer = answer
        return [self._start_one(answer, call) for call in calls]

    def _start_one(self, answer: str, call: object) -> str:
        verdict = decide_start(call, started=self.pending, running=self.running, max_concurrent=self.max_concurrent)
        if isinstance(verdict, NotStarted):
            if verdict.busy:
                self.stats.busy += 1
            else:
                self.stats.refused += 1
            return f"refused: {verdict.reason}"
        run = EarlyRun(verdict.key, verdict.name, verdict.arguments, answer, self.clock())
        run.task = asyncio.get_running_loop().create_task(self._run(run), name=f"sidecar-early-{run.tool}")
        self.pending[run.key] = run
        return "started"

    async def _run(self, run: EarlyRun) -> None:
        try:
            if await self.tools.peek(run.tool, run.args) is not None:
                run.known = True
                self.stats.known += 1
                return
            self.stats.started += 1
            run.generation = self.tools.generation
            run.started = self.clock()  # saved time counts from here: accepting it computed nothing
            if run.tool == "run_tests":
                await self._run_tests(run)
            else:
                await self._call(run)
            run.ok = not run.cancelled
        except ToolFailure:
            pass  # the agent's own call meets the same failure and reads its message
        except asyncio.CancelledError:
            run.cancelled = True
            raise
        except Exception as exc:  # an early run must never disturb the sidecar
            log.warning("early run failed", tool=run.tool, error=repr(exc))
        finally:
            run.finished = self.clock()

    async def _call(self, run: EarlyRun) -> ToolOutput:
        tools, a = self.tools, run.args
        if run.tool == "read_file":
            return await tools.read_file(a["path"], a["start_line"], a["end_line"])
        if run.tool == "list_dir":
            return await tools.list_dir(a["path"], a["depth"])
        if run.tool == "search":
            return await tools.search(a["pattern"], a["path"], a["glob"], a["max_results"])
        raise AssertionError(f"not an early-safe tool: {run.tool}")  # `normalize` admits no other

    async def _run_tests(self, run: EarlyRun) -> None:
        """The test run on the state it started from; cancelled the moment the workspace changes."""
        task = asyncio.get_running_loop().create_task(
            self.tools.run_tests(run.args["target"], speculative=True, early=True)
        )
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_S)
                if not task.done() and self.tools.generation != run.generation:
                    run.cancelled = True
                    task.cancel()
            if not run.cancelled:
                task.result()
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ToolFailure):
                await task

    def claim(self, tool: str, args: Mapping[str, Any]) -> EarlyRun | None:
        """The agent's real call `tool(**args)` (every parameter present): its early run, if one was started."""
        return self.pending.pop(call_key(tool, args), None)

    async def join(self, run: EarlyRun) -> float:
        """Wait for a claimed run still in progress (a run whose workspace changed is cancelled instead);
        returns when the agent asked (for `settle`)."""
        asked = self.clock()
        task = run.task
        if task is not None and not task.done():
            if run.generation is not None and self.tools.generation != run.generation:
                task.cancel()
            await asyncio.wait({task})  # never raises the run's outcome; a cancelled caller stops waiting
        return asked

    def settle(self, run: EarlyRun, asked: float, output: ToolOutput | None) -> None:
        """Count a claimed run: used if the agent's call got its result (a cache hit, or the test run rendered
        as its own), wasted otherwise."""
        if run.known:
            return
        if output is not None and run.ok and (output.cached or output.speculative) and run.finished is not None:
            self.stats.used += 1
            self.stats.saved_s += max(min(asked, run.finished) - run.started, 0.0)
        else:
            self._waste(run)

    def end_answer(self) -> None:
        """The current answer is over: every run not claimed by now was not used (cancelled if still running)."""
        if self.answer is not None:
            self._closed.append(self.answer)
        for run in self.pending.values():
            if run.task is not None and not run.task.done():
                run.task.cancel()
                run.cancelled = True
            if not run.known:
                self._waste(run)
        self.pending.clear()

    def _waste(self, run: EarlyRun) -> None:
        if run.generation is None:
            return  # never started computing (known, or ended before): nothing was spent
        self.stats.wasted += 1
        if run.cancelled:
            self.stats.cancelled += 1

    async def aclose(self) -> None:
        tasks = [run.task for run in self.pending.values() if run.task is not None]
        self.end_answer()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def counters(self) -> dict[str, float]:
        """The cumulative numbers each tool event carries (`core.speculation.SIDECAR_COUNTERS`)."""
        s = self.stats
        return {
            "early_started": s.started,
            "early_used": s.used,
            "early_wasted": s.wasted,
            "early_saved_s": round(s.saved_s, 3),
        }

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "max_concurrent": self.max_concurrent,
            "started": s.started,
            "used": s.used,
            "wasted": s.wasted,
            "cancelled": s.cancelled,
            "known": s.known,
            "refused": s.refused,
            "busy": s.busy,
            "running": self.running,
            "pending": len(self.pending),
            "time_saved_s": round(s.saved_s, 3),
        }


def early_route(runner: EarlyRunner, key: str) -> Route:
    """`POST /early?key=KEY` with `{"answer": id, "calls": [{name, arguments}]}`: start those calls early for
    that answer (`EarlyRunner.start`); answers one outcome per call. The key is the sidecar's peek key (it
    travels only inside the `peek_url` of its events); without it, 404 as for `/peek`."""

    async def early(request: Request) -> Response:
        given = request.query_params.get("key", "")
        if not secrets.compare_digest(given.encode(), key.encode()):
            return JSONResponse({"error": "not found"}, status_code=404)
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return JSONResponse({"error": f"a start is at most {MAX_BYTES} bytes"}, status_code=413)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("expected an object {answer, calls}")
            calls = body.get("calls", [])
            if isinstance(calls, list) and len(calls) > MAX_CALLS:
                raise ValueError(f"at most {MAX_CALLS} calls per start")
            return JSONResponse(runner.start(body.get("answer"), calls))  # type: ignore[arg-type]
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return Route("/early", early, methods=["POST"])
