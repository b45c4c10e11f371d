"""`python -m sidecar.bench.percall`: what the coordinator does once per call, step by step, in microseconds.

The steps a chat call passes through once, outside the relay of its bytes: the guard, parsing the body,
identifying the agent, planning (stage, tier, model), a slot from the dispatcher and its release (for one agent
and for a fleet of 2,000, whose attained service each release adds to), the telemetry hooks of one call,
per-call logging at level warning (bind the request's fields, a filtered `request` line) and the disconnect
watch around the exchange. Each runs `--calls` times in this process on the app state
`build_state` wires for one upstream (nothing is sent anywhere); the figure is the process's CPU time per call
(`time.process_time`, so other processes on a busy machine count little), the median of `--rounds` rounds. Run
it on two checkouts back to back to compare them; `scripts/bench proxy` measures the whole path over real sockets.

`--policy` picks the scheduling policy (default: the configuration's). The fleet steps on a virtual clock run a
fresh dispatcher (`make_dispatcher`, as the coordinator builds it) whose clock advances `VIRTUAL_STEP_S` per call,
so every checkout and machine sees the same ledger states however fast it runs; calls go through `submit` (the
fleet simulation's path) and each must start at once. (Under `kv` the step `slot, 2,000 agents` on the real clock
is left out: how many agents its gates count active, and whether a call then waits for good, would depend on how
fast the machine runs.)

    slot, N agents, virtual clock       N agents known, cycled, 120-token contexts: 600 of them active within the
                                        `kv` policy's 30 s window, demand 2x its capacity, below the 4x at which
                                        its gates engage (`kv`: the gates idle)
    slot, kv engaged, N agents,         `kv` only, `kv_engage_ratio` 0 (always engaged): one call of 12,000 tokens
      W waiting                         holds a place in flight, W calls of 24,000-token agents wait for room
                                        (they do not fit beside it), and the N known agents' calls (small
                                        contexts, so they never wait) start beside them
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sidecar.config import Config, load_config
from sidecar.coordinator.app import build_state, make_dispatcher
from sidecar.coordinator.dispatcher import Slot
from sidecar.coordinator.endpoint import run_until_disconnect
from sidecar.coordinator.guard import CoordinatorGuard
from sidecar.coordinator.telemetry import Answer
from sidecar.core.hosts import host_patterns
from sidecar.core.identity import resolve_identity
from sidecar.core.openai_request import Endpoint, parse_request
from sidecar.core.stages import Tier
from sidecar.core.usage import Usage
from sidecar.obs import bind_request, clear_request, configure_logging, get_logger
from sidecar.testing import FakeClock

MODEL = "default"
FLEET = 2000  # agents in the fleet step: the dispatcher's per-agent state is that large
VIRTUAL_STEP_S = 0.05  # virtual seconds per call in the fleet steps on a virtual clock
HOLDER_TOKENS = 12_000  # the engaged steps' call in flight
WAITING_TOKENS = 24_000  # the engaged steps' waiting calls: do not fit beside the holder in 35,840 x 0.9 tokens
BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "benchmark " * 40}], "stream": True, "max_tokens": 20}
).encode()  # fmt: skip  (scripts/bench proxy's request)
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/v1/chat/completions",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"content-length", b"300")],
}


def _per_call_us(step: Callable[[], object], calls: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            step()
        samples.append((time.process_time() - start) / calls * 1e6)
    return statistics.median(samples)


async def _per_call_us_async(step: Callable[[], Awaitable[object]], calls: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            await step()
        samples.append((time.process_time() - start) / calls * 1e6)
    return statistics.median(samples)


def virtual_fleet_step(
    config: Config, agents: int, calls: int, rounds: int, *, engaged: bool = False, waiting: int = 0
) -> float:
    """CPU µs per call (submit + release) of a fresh dispatcher with `agents` known agents, cycled, on a virtual
    clock (module docstring); `engaged`: the `kv` policy's gates always engaged, a holder in flight and `waiting`
    calls that wait for room. Raises RuntimeError when the dispatcher is not in the state the step names."""
    if engaged:
        scheduling = config.scheduling.model_copy(update={"kv_engage_ratio": 0.0, "kv_release_ratio": 0.0})
        config = config.model_copy(update={"scheduling": scheduling})
    clock = FakeClock(1000.0)  # moves only when told to: the ledger's states do not depend on the machine
    dispatcher = make_dispatcher(MODEL, config)
    dispatcher.clock = clock.now
    granted: list[Slot] = []
    if engaged:
        dispatcher.submit("holder", Tier.WARM, granted.append, HOLDER_TOKENS)
        if not granted:
            raise RuntimeError("the engaged step's holder did not start")
        granted.clear()
    names = itertools.cycle([f"agent-{i}" for i in range(agents)])

    def call() -> None:
        clock.advance(VIRTUAL_STEP_S)
        dispatcher.submit(next(names), Tier.WARM, granted.append)
        if not granted:
            raise RuntimeError(f"a call waited in a step where every call starts at once ({dispatcher.gate} gate)")
        granted.pop().release(120.0, 120, 0)

    for _ in range(agents):  # every agent known before the rounds
        call()
    for i in range(waiting):
        dispatcher.submit(f"waiting-{i}", Tier.WARM, granted.append, WAITING_TOKENS)
    if granted or len(dispatcher.queue) != waiting:
        raise RuntimeError(f"{len(dispatcher.queue)} calls wait, {waiting} should")
    us = _per_call_us(call, calls, rounds)
    if dispatcher.kv_engaged is not None and dispatcher.kv_engaged != engaged:
        raise RuntimeError(f"the kv gates are {'' if dispatcher.kv_engaged else 'not '}engaged in this step")
    return us


def _fleet_steps(config: Config, calls: int, rounds: int) -> list[tuple[str, float]]:
    steps = [(f"slot, {FLEET:,} agents, virtual clock", virtual_fleet_step(config, FLEET, calls, rounds))]
    if config.scheduling.policy == "kv":
        for agents, waiting in ((FLEET, 8), (FLEET, 64), (FLEET // 10, 64)):
            us = virtual_fleet_step(config, agents, calls, rounds, engaged=True, waiting=waiting)
            steps.append((f"slot, kv engaged, {agents:,} agents, {waiting} waiting", us))
    return steps


async def measure(calls: int, rounds: int, policy: str | None = None) -> list[tuple[str, float]]:
    """(step, CPU µs per call) for every step in the module docstring, in the order of a call. `policy`: the
    scheduling policy (None: the configuration's default)."""
    configure_logging("warning", "json")
    overrides: dict[str, Any] = {"models": {MODEL: {"replicas": ["http://127.0.0.1:9"]}}}
    if policy is not None:
        overrides["scheduling"] = {"policy": policy}
    config = load_config(env={}, overrides=overrides)
    async with httpx.AsyncClient() as http:
        state = build_state(config, http)
        parsed = parse_request(BODY, Endpoint.CHAT)
        identity = resolve_identity()
        telemetry, agent = state.telemetry, state.book.agent(identity.agent_id, time.monotonic())
        answer = Answer("chat/completions", MODEL, MODEL, "warm", 200, 4000, 0.001, 0.002, True, Usage(100, 0, 20))
        dispatcher = state.dispatchers[MODEL]
        log = get_logger("sidecar.bench.percall")
        results: list[tuple[str, float]] = []

        async def nothing(scope: Any, receive: Any, send: Any) -> None:
            return None

        guard = CoordinatorGuard(nothing, allowed_hosts=host_patterns([]), max_body_bytes=1 << 20)
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            return None

        async def respond(send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

        async def slot() -> None:
            (await dispatcher.acquire(identity.agent_id, Tier.WARM)).release(120.0, 120, 0)

        fleet = itertools.cycle([f"agent-{i}" for i in range(FLEET)])

        async def fleet_slot() -> None:  # each release adds to the attained service of FLEET agents
            (await dispatcher.acquire(next(fleet), Tier.WARM)).release(120.0, 120, 0)

        def hooks() -> None:
            telemetry.request_read(len(BODY))
            telemetry.call_planned(agent, None, MODEL, "explore", "warm")
            telemetry.call_started(agent, MODEL)
            telemetry.queued(agent, 1.0)
            telemetry.slot_granted(agent, MODEL, "warm", 0.0)
            telemetry.call_ended(agent, MODEL)
            telemetry.answered(agent, answer)

        def logging_off() -> None:
            clear_request()
            bind_request(request_id="0123456789abcdef")
            bind_request(agent_id=identity.agent_id, session_id=None)
            bind_request(tier="warm")
            log.info("request", status="200", model=MODEL, stream=True, ttfb_ms=1.0, duration_ms=2.0, bytes=4000)

        results.append(("guard", await _per_call_us_async(lambda: guard(SCOPE, receive, send), calls, rounds)))
        results.append(("parse", _per_call_us(lambda: parse_request(BODY, Endpoint.CHAT), calls, rounds)))
        results.append(("identify", _per_call_us(lambda: resolve_identity(header_agent_id="agent-1"), calls, rounds)))
        now = time.monotonic()
        results.append(("plan", _per_call_us(lambda: state.planner.plan(parsed, identity, None, now), calls, rounds)))
        results.append(("slot (acquire + release)", await _per_call_us_async(slot, calls, rounds)))
        if config.scheduling.policy != "kv":  # kv's gates would engage at a rate set by this machine's speed
            for _ in range(FLEET):  # every agent known before the rounds
                await fleet_slot()
            results.append((f"slot, {FLEET:,} agents", await _per_call_us_async(fleet_slot, calls, rounds)))
        results += _fleet_steps(config, calls, rounds)
        results.append(("telemetry hooks", _per_call_us(hooks, calls, rounds)))
        results.append(("logging at warning", _per_call_us(logging_off, calls, rounds)))
        watch = await _per_call_us_async(lambda: run_until_disconnect(receive, send, respond), calls, rounds)
        results.append(("disconnect watch", watch))
        return results


def report(results: list[tuple[str, float]]) -> str:
    lines = ["| step | CPU µs per call |", "|---|---|"]
    lines += [f"| {name} | {us:.2f} |" for name, us in results]
    one_agent = sum(us for name, us in results if not name.startswith("slot, "))
    lines.append(f"| total (one agent) | {one_agent:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.bench.percall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per round and step")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per step (the median is reported)")
    parser.add_argument(
        "--policy", choices=("priority", "kv"), default=None, help="scheduling policy (default: the configuration's)"
    )
    args = parser.parse_args(argv)
    print(f"policy: {args.policy or load_config(env={}).scheduling.policy}")
    print(report(asyncio.run(measure(args.calls, args.rounds, args.policy))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
