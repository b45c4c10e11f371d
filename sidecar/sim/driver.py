"""The real-time shell around one engine: one asyncio task steps it and hands tokens to waiting requests.

Clock: simulated time runs `time_scale` times faster than the event loop's clock. Each step ends at its
simulated end time mapped to real time; a late wake-up is made up by sleeping less on the next steps, so
throughput seen by clients stays right at high time scales. If the loop falls more than `MAX_LAG_S` behind
(a busy CPU), simulated time waits for it instead: the lag is never counted as GPU time.
A request is stamped on arrival and enters the scheduler `frontend_s` simulated seconds later.

Each submitted request gets a `Ticket`: an asyncio queue of events `("token", n)` (n tokens generated so far),
`("done", finish_reason)`, `("aborted", None)` or `("failed", message)`. `abort` frees the request's KV at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.obs import get_logger
from sidecar.sim.engine import Engine, Request, StepResult

log = get_logger(__name__)

# Late wake-ups are caught up on later steps (sleeping less) while the loop is at most this far behind the
# simulated clock, in real seconds; beyond it, simulated time waits for the loop instead.
MAX_LAG_S = 0.05

Event = tuple[str, Any]


@dataclass(eq=False)
class Ticket:
    request: Request
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)


class Driver:
    def __init__(
        self,
        engine: Engine,
        time_scale: float = 1.0,
        on_finish: Callable[[Request], None] | None = None,
        on_step: Callable[[StepResult], None] | None = None,
    ) -> None:
        self.engine = engine
        self.time_scale = time_scale
        self._on_finish = on_finish
        self._on_step = on_step
        self._tickets: dict[str, Ticket] = {}
        self._pending: list[tuple[float, int, Request]] = []  # (enters scheduler at, seq, request)
        self._seq = 0
        self._wake = asyncio.Event()
        self._anchor_real = 0.0
        self._anchor_sim = engine.now
        self.failure: str | None = None

    # --- clock ----------------------------------------------------------------------------------------------

    def _real(self) -> float:
        return asyncio.get_running_loop().time()

    def now(self) -> float:
        """Simulated now (the engine's clock when busy, real time scaled when idle)."""
        return self._anchor_sim + (self._real() - self._anchor_real) * self.time_scale

    # --- requests -------------------------------------------------------------------------------------------

    def submit(self, request: Request) -> Ticket:
        """Stamp `request.arrival` and queue it; its events arrive on the returned ticket."""
        if self.failure is not None:
            raise RuntimeError(self.failure)
        request.arrival = self.now()
        ticket = Ticket(request)
        self._tickets[request.request_id] = ticket
        heapq.heappush(self._pending, (request.arrival + self.engine.profile.frontend_s, self._seq, request))
        self._seq += 1
        self._wake.set()
        return ticket

    def abort(self, request_id: str) -> None:
        """Stop a request wherever it is (pending, waiting, running) and free its KV; idempotent."""
        ticket = self._tickets.pop(request_id, None)
        if ticket is None:
            return
        before = len(self._pending)
        self._pending = [p for p in self._pending if p[2].request_id != request_id]
        if len(self._pending) != before:
            heapq.heapify(self._pending)
        self.engine.abort(request_id)
        ticket.events.put_nowait(("aborted", None))

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    # --- the task -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Step forever (cancel to stop). A crash fails every live request and is kept in `failure`."""
        self._anchor_real, self._anchor_sim = self._real(), self.engine.now
        try:
            while True:
                await self._tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the engine must not hang clients
            self.failure = f"simulator engine failed: {exc!r}"
            log.exception("sim_engine_failed")
            for ticket in self._tickets.values():
                ticket.events.put_nowait(("failed", self.failure))
            self._tickets.clear()

    async def _tick(self) -> None:
        engine = self.engine
        if not engine.has_work():
            engine.now = max(engine.now, self.now())
        while self._pending and self._pending[0][0] <= engine.now:
            _, _, request = heapq.heappop(self._pending)
            engine.add(request)
        result = engine.step() if engine.has_work() else None
        if result is None:
            await self._idle()
            return
        deadline = self._anchor_real + (result.end - self._anchor_sim) / self.time_scale
        delay = deadline - self._real()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._real() - deadline > MAX_LAG_S:
            self._anchor_real, self._anchor_sim = self._real(), result.end  # too far behind: time waits for us
        self._deliver(result)

    async def _idle(self) -> None:
        self._wake.clear()
        timeout = None
        if self._pending:
            timeout = max(0.0, (self._pending[0][0] - self.now()) / self.time_scale)
        elif self.engine.has_work():
            timeout = 0.05  # waiting requests that cannot be scheduled yet: look again soon
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        if not self.engine.has_work():
            self._anchor_real, self._anchor_sim = self._real(), max(self.now(), self.engine.now)

    def _deliver(self, result: StepResult) -> None:
        if self._on_step is not None:
            self._on_step(result)
        for request in result.sampled:
            ticket = self._tickets.get(request.request_id)
            if ticket is not None:
                ticket.events.put_nowait(("token", request.num_output))
        for request in result.finished:
            ticket = self._tickets.pop(request.request_id, None)
            if ticket is not None:
                ticket.events.put_nowait(("done", request.finish_reason))
            if self._on_finish is not None:
                self._on_finish(request)
