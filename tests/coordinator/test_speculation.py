"""LLM-level speculation through the real coordinator and a real scripted upstream on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sidecar.coordinator.speculation import SpeculationSettings, Speculator
from sidecar.coordinator.state import CoordinatorState
from sidecar.core.admission import UpstreamMetrics
from sidecar.testing import FakeClock, wait_until
from tests.coordinator.conftest import stack
from tests.coordinator.scripted_upstream import MODEL, SSE_FRAMES

BODY: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "fix the failing test"}],
    "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}],
    "temperature": 0,
    "stream": True,
}
AGENT = {"x-agent-id": "a1"}


def enable(state: CoordinatorState) -> Speculator:
    """Speculation on, and the upstream reported idle (the scripted upstream has no vLLM /metrics)."""
    speculator = state.speculator
    assert speculator is not None
    speculator.settings = SpeculationSettings(enabled=True)
    for d in state.dispatchers.values():
        d.metrics = UpstreamMetrics(0, 0, 0.0, 0.0, time.monotonic() + 3600, 256)
    return speculator


async def test_identical_request_is_served_from_the_speculative_call() -> None:
    async with stack() as s:
        spec = enable(s.state)
        assert spec.speculate("a1", "default", BODY)
        await wait_until(lambda: not spec.pending["a1"].task or spec.pending["a1"].done)
        same = dict(reversed(list(BODY.items())), stream_options={"include_usage": True})  # same question
        response = await s.client.post("/v1/chat/completions", json=same, headers=AGENT)
        assert response.status_code == 200
        assert response.headers["x-goose-sidecar-speculative"] == "1"
        assert response.content == b"".join(SSE_FRAMES)
        assert len(s.upstream.received) == 1  # no second upstream call
        assert spec.stats.served == 1 and spec.stats.wasted_tokens == 0


async def test_different_request_is_not_served_and_cancels_the_speculation() -> None:
    async with stack() as s:
        spec = enable(s.state)
        assert spec.speculate("a1", "default", BODY, headers={"x-script": "hold"})
        await wait_until(lambda: s.upstream.in_progress == 1)
        other = {**BODY, "messages": [{"role": "user", "content": "fix the failing test!"}]}
        response = await s.client.post("/v1/chat/completions", json=other, headers=AGENT)
        assert response.status_code == 200 and "x-goose-sidecar-speculative" not in response.headers
        assert len(s.upstream.received) == 2 and s.upstream.received[1]["messages"] == other["messages"]
        assert spec.stats.mismatched == 1 and spec.stats.served == 0
        await asyncio.wait_for(s.upstream.closed_early.wait(), 5)  # the held speculative stream was cut
        s.upstream.release.set()


async def test_request_arriving_mid_generation_streams_from_where_it_is() -> None:
    async with stack() as s:
        spec = enable(s.state)
        assert spec.speculate("a1", "default", BODY, headers={"x-script": "hold"})
        await wait_until(lambda: s.upstream.in_progress == 1)
        post = asyncio.create_task(s.client.post("/v1/chat/completions", json=BODY, headers=AGENT))
        await wait_until(lambda: spec.stats.served == 1)
        s.upstream.release.set()
        response = await asyncio.wait_for(post, 10)
        assert response.content == b"".join(SSE_FRAMES) and len(s.upstream.received) == 1


async def test_speculative_calls_are_cancelled_when_real_calls_queue() -> None:
    async with stack(scheduling={"window": 1, "native_priority": True}) as s:  # vLLM orders it last: no place held
        spec = enable(s.state)
        assert spec.speculate("a2", "default", BODY, headers={"x-script": "hang"})
        await wait_until(lambda: s.upstream.in_progress == 1)
        held = asyncio.create_task(
            s.client.post("/v1/chat/completions", json={**BODY, "seed": 1}, headers={**AGENT, "x-script": "hold"})
        )
        await wait_until(lambda: s.upstream.in_progress == 2)
        assert spec.stats.cancelled_for_real_calls == 0  # the first real call found a slot: nothing to cancel
        queued = asyncio.create_task(s.client.post("/v1/chat/completions", json={**BODY, "seed": 2}, headers=AGENT))
        await wait_until(lambda: spec.stats.cancelled_for_real_calls == 1)
        await asyncio.wait_for(s.upstream.closed_early.wait(), 5)
        assert not spec.pending
        s.upstream.release.set()
        assert (await held).status_code == 200 and (await queued).status_code == 200


async def test_a_hot_call_passing_a_full_window_cancels_speculation_that_vllm_cannot_preempt() -> None:
    async with stack(scheduling={"window": 1, "native_priority": True}) as s:
        spec = enable(s.state)
        assert spec.speculate("a2", "default", BODY, headers={"x-script": "hang"})
        await wait_until(lambda: s.upstream.in_progress == 1)
        cold = {**BODY, "seed": 1, "priority": "cold"}
        held = asyncio.create_task(s.client.post("/v1/chat/completions", json=cold, headers={"x-script": "hold"}))
        await wait_until(lambda: s.upstream.in_progress == 2)
        assert spec.stats.cancelled_for_real_calls == 0  # it found a free place
        hot = {**BODY, "seed": 2, "priority": "hot"}
        passing = asyncio.create_task(s.client.post("/v1/chat/completions", json=hot, headers={"x-script": "json"}))
        await wait_until(lambda: spec.stats.cancelled_for_real_calls == 1)  # past the full window: the engine is full
        assert s.state.dispatchers["default"].tiers["hot"].admitted == 1  # it did not wait here
        await asyncio.wait_for(s.upstream.closed_early.wait(), 5)
        assert (await passing).status_code == 200
        s.upstream.release.set()
        assert (await held).status_code == 200


async def test_without_native_priority_a_speculative_call_holds_a_place_and_gives_it_to_real_work() -> None:
    async with stack(scheduling={"window": 1}) as s:  # the upstream does not order by priority (the default)
        spec = enable(s.state)
        dispatcher = s.state.dispatchers["default"]
        assert spec.speculate("a2", "default", BODY, headers={"x-script": "hang"})
        await wait_until(lambda: s.upstream.in_progress == 1)
        assert dispatcher.speculative == 1 and "priority" not in s.upstream.received[-1]  # no pretend priority
        assert not spec.speculate("a3", "default", BODY)  # the one place is taken: held here, not sent
        real = asyncio.create_task(s.client.post("/v1/chat/completions", json={**BODY, "seed": 1}, headers=AGENT))
        await wait_until(lambda: spec.stats.cancelled_for_real_calls == 1)  # the real call queued: speculation yields
        assert (await real).status_code == 200
        await wait_until(lambda: dispatcher.speculative == 0)
        assert dispatcher.in_flight == 0 and len(s.upstream.received) == 2


async def test_no_spare_capacity_or_disabled_sends_nothing() -> None:
    async with stack() as s:
        spec = s.state.speculator
        assert spec is not None
        assert not spec.speculate("a1", "default", BODY)  # disabled by default
        spec.settings = SpeculationSettings(enabled=True)
        assert not spec.speculate("a1", "default", BODY)  # no fresh upstream metrics: not known to be idle
        enable(s.state).budget.spend(time.monotonic(), 10**9)
        assert not spec.speculate("a1", "default", BODY)  # wasted-token budget exhausted
        assert spec.stats.skipped == 3 and not s.upstream.received
        status = (await s.client.get("/status")).json()["speculation"]
        assert status["skipped_no_capacity_or_budget"] == 3
        metrics = (await s.client.get("/metrics")).text
        assert 'goose_sidecar_speculation_calls_total{outcome="skipped"} 3.0' in metrics


async def test_a_speculative_answer_older_than_max_age_is_not_served() -> None:
    clock = FakeClock(1000.0)
    async with stack() as s:
        spec = enable(s.state)
        spec.clock = clock.now
        assert spec.speculate("a1", "default", BODY)
        await wait_until(lambda: not spec.pending["a1"].task or spec.pending["a1"].done)
        clock.advance(spec.settings.max_age_s + 1)  # the files it read may have changed since
        response = await s.client.post("/v1/chat/completions", json=BODY, headers=AGENT)
        assert response.status_code == 200 and "x-goose-sidecar-speculative" not in response.headers
        assert spec.stats.expired == 1 and spec.stats.served == 0 and len(s.upstream.received) == 2


async def test_the_wasted_token_budget_refills_once_its_minute_has_passed() -> None:
    clock = FakeClock(1000.0)
    async with stack() as s:
        spec = enable(s.state)
        spec.clock = clock.now
        spec.budget.spend(clock.now(), 10**9)
        assert not spec.speculate("a1", "default", BODY)  # exhausted
        clock.advance(spec.budget.window_s - 1)
        assert not spec.speculate("a1", "default", BODY)  # still inside the window
        clock.advance(1)
        assert spec.speculate("a1", "default", BODY)  # the spend has left the window
        assert spec.stats.skipped == 2
