"""Run an engine over a list of requests on the virtual clock, as fast as the CPU allows (vidur-style loop).

Used by the calibration and the engine tests. Each request enters the scheduler at `arrival + frontend_s`
(the API server's own latency); requests that arrive during a step join at the next step, as in vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sidecar.sim.engine import Engine, Request, StepResult


def run_offline(
    engine: Engine,
    requests: Iterable[Request],
    on_step: Callable[[StepResult], None] | None = None,
    max_steps: int = 10_000_000,
) -> list[Request]:
    """Drive `engine` until every request has finished; returns the requests in arrival order.

    Raises RuntimeError if the engine stalls with work left (a request that can never get its blocks).
    """
    pending = sorted(requests, key=lambda r: r.arrival)
    frontend = engine.profile.frontend_s
    done = list(pending)
    nxt = 0
    for _ in range(max_steps):
        if nxt < len(pending) and not engine.has_work():
            engine.now = max(engine.now, pending[nxt].arrival + frontend)
        while nxt < len(pending) and pending[nxt].arrival + frontend <= engine.now:
            engine.add(pending[nxt])
            nxt += 1
        if not engine.has_work():
            if nxt >= len(pending):
                return done
            continue
        result = engine.step()
        if result is None:
            if nxt >= len(pending):
                raise RuntimeError("engine stalled: waiting requests can never be scheduled")
            engine.now = pending[nxt].arrival + frontend
            continue
        if on_step is not None:
            on_step(result)
    raise RuntimeError(f"no progress after {max_steps} steps")
