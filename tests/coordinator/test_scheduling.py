"""Ordering, admission and routing across agents: the coordinator in front of the real simulator on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from sidecar.config import load_config
from sidecar.coordinator.app import make_dispatcher
from sidecar.coordinator.state import CoordinatorState
from sidecar.core.stages import Tier
from sidecar.sim.settings import SimSettings
from sidecar.stack import embedded_stack
from sidecar.testing import wait_until

FAST = {"time_scale": 50.0}


@asynccontextmanager
async def coordinator(
    scheduling: dict[str, Any] | None = None, sim: dict[str, Any] | None = None, routing: dict[str, Any] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, CoordinatorState]]:
    overrides = {f"scheduling.{k}": v for k, v in (scheduling or {}).items()}
    overrides.update({f"routing.{k}": v for k, v in (routing or {}).items()})
    config = load_config(env={}, overrides=overrides)
    async with (
        embedded_stack(config, SimSettings(**{**FAST, **(sim or {})})) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=30) as client,
    ):
        yield client, stack.app.state.coordinator


def chat(text: str, priority: str | None = None, model: str = "large", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    if priority:
        body["priority"] = priority
    return {**body, **extra}


async def test_hot_overtakes_queued_cold_calls() -> None:
    async with coordinator({"window": 1}) as (client, state):
        holder = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat("hold", "cold"), headers={"x-sim-fault": "stall"})
        )
        dispatcher = state.dispatchers["large"]
        await wait_until(lambda: dispatcher.in_flight == 1)
        finished: list[str] = []

        async def call(name: str, priority: str) -> None:
            response = await client.post(
                "/v1/chat/completions", json=chat(name, priority), headers={"x-agent-id": name}
            )
            assert response.status_code == 200
            finished.append(name)

        colds = [asyncio.create_task(call(f"cold-{i}", "cold")) for i in range(3)]
        await wait_until(lambda: len(dispatcher.queue) == 3)
        hot = asyncio.create_task(call("hot", "hot"))
        await wait_until(lambda: len(dispatcher.queue) == 4)
        positions = (await client.get("/status")).json()
        assert positions["scheduling"]["large"]["tiers"]["hot"]["queued"] == 1
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await asyncio.gather(hot, *colds)
        assert finished[0] == "hot", finished
        assert sorted(finished[1:]) == ["cold-0", "cold-1", "cold-2"]
        await wait_until(lambda: dispatcher.in_flight == 0)


async def test_cold_calls_finish_within_the_aging_bound_under_hot_pressure() -> None:
    aging = 0.3
    async with coordinator({"window": 1, "aging_s": aging}) as (client, state):
        stop = asyncio.Event()

        async def hot_agent(i: int) -> None:
            while not stop.is_set():
                await client.post("/v1/chat/completions", json=chat("edit", "hot"), headers={"x-agent-id": f"h{i}"})

        hots = [asyncio.create_task(hot_agent(i)) for i in range(4)]
        await wait_until(lambda: state.dispatchers["large"].tiers["hot"].admitted >= 4)
        response = await client.post("/v1/chat/completions", json=chat("explore", "cold"))
        stop.set()
        await asyncio.gather(*hots)
        waited_s = float(response.headers["x-goose-sidecar-queue-ms"]) / 1000
        # bound: 3 x aging to become overdue, then at most the calls queued before it (4 hot agents) run first
        longest = max(state.dispatchers["large"].tiers["hot"].latencies.summary().max or 0, 0.05)
        assert waited_s <= 3 * aging + 5 * longest + 0.5, (waited_s, longest)
        assert response.headers["x-goose-sidecar-tier"] == "cold"
        status = (await client.get("/status")).json()["scheduling"]["large"]
        assert status["aging_wait_bound_s"]["cold"] == 3 * aging
        assert status["tiers"]["cold"]["admitted"] == 1


async def test_window_adapts_when_the_simulators_queue_grows() -> None:
    sim = {"profile_overrides": {"qwen2.5-coder-32b-a100": {"max_num_seqs": 2}}, "time_scale": 5.0}
    async with coordinator({"metrics_interval_s": 0.05}, sim) as (client, state):
        dispatcher = state.dispatchers["large"]
        assert dispatcher.window == 4  # the initial window, above what this upstream can run at once
        calls = [
            asyncio.create_task(client.post("/v1/chat/completions", json=chat(f"c{i}", max_tokens=60)))
            for i in range(8)
        ]
        # vLLM's queue persists while 2 run: that plateau is the engine's capacity, and without native priority
        # the window is exactly that (nothing left to wait inside vLLM in arrival order).
        await wait_until(lambda: dispatcher.admission.slots == 2, limit_s=20)
        assert dispatcher.window == 2 and dispatcher.window_reason == "slots"
        assert (await client.get("/status")).json()["scheduling"]["large"]["engine_slots_source"] == "learned"
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await wait_until(lambda: dispatcher.in_flight == 0)


async def test_routing_sends_commit_message_work_to_the_small_model() -> None:
    async with coordinator() as (client, state):
        simple = await client.post(
            "/v1/chat/completions", json=chat("Write a commit message for the staged changes", model="auto")
        )
        assert simple.status_code == 200
        assert simple.headers["x-goose-sidecar-model"] == "small"
        assert simple.json()["model"] == state.pool.upstreams[1].served_name
        complex_ = await client.post(
            "/v1/chat/completions", json=chat("Fix the bug: the test fails with KeyError", model="auto")
        )
        assert complex_.headers["x-goose-sidecar-model"] == "large"
        explicit = await client.post("/v1/chat/completions", json=chat("Write a commit message", model="large"))
        assert explicit.headers["x-goose-sidecar-model"] == "large"


async def test_routing_opt_out_keeps_an_agent_on_the_default_model() -> None:
    async with coordinator(routing={"opt_out_agents": ["purist"]}) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json=chat("Write a commit message", model="auto"), headers={"x-agent-id": "purist"}
        )
        assert response.headers["x-goose-sidecar-model"] == "large"


async def test_full_queue_answers_429_with_retry_after() -> None:
    async with coordinator({"window": 1, "max_queue": 2}) as (client, state):
        dispatcher = state.dispatchers["large"]
        holder = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat("hold"), headers={"x-sim-fault": "stall"})
        )
        await wait_until(lambda: dispatcher.in_flight == 1)
        queued = [asyncio.create_task(client.post("/v1/chat/completions", json=chat(f"q{i}"))) for i in range(2)]
        await wait_until(lambda: len(dispatcher.queue) == 2)
        refused = await client.post("/v1/chat/completions", json=chat("one too many"))
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["error"]["type"] == "RateLimitError"
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        assert [r.status_code for r in await asyncio.gather(*queued)] == [200, 200]


async def test_a_cancelled_queued_call_leaves_the_queue() -> None:
    async with coordinator({"window": 1}) as (client, state):
        dispatcher = state.dispatchers["large"]
        holder = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat("hold"), headers={"x-sim-fault": "stall"})
        )
        await wait_until(lambda: dispatcher.in_flight == 1)
        waiting = asyncio.create_task(client.post("/v1/chat/completions", json=chat("will leave", "cold")))
        await wait_until(lambda: len(dispatcher.queue) == 1)
        waiting.cancel()
        await wait_until(lambda: len(dispatcher.queue) == 0)
        assert dispatcher.tiers["cold"].cancelled_waiting == 1
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await wait_until(lambda: dispatcher.in_flight == 0)
        assert state.telemetry.in_flight_total == 0
        ok = await client.post("/v1/chat/completions", json=chat("next"))
        assert ok.status_code == 200


async def test_sidecar_events_set_the_stage_of_the_agents_next_call() -> None:
    async with coordinator() as (client, _):
        event = {"session_id": "s-7", "seq": 1, "tool": "sidecar__run_tests", "ok": False, "exit_code": 1,
                 "paths": [], "duration_ms": 812.0, "ts": 1.0}  # fmt: skip
        answer = await client.post("/v1/agents/agent-7/events", json=event)
        assert answer.json() == {"stage": "test_analyze", "tier": "hot"}
        # the agent's next call, by its session id alone (as Goose sends it), is hot
        response = await client.post("/v1/chat/completions", json=chat("hello"), headers={"agent-session-id": "s-7"})
        assert response.headers["x-goose-sidecar-tier"] == "hot"
        assert response.headers["x-goose-sidecar-stage"] == "test_analyze"
        read = {**event, "seq": 2, "tool": "read_file", "ok": True, "paths": ["src/a.py"]}
        assert (await client.post("/v1/agents/agent-7/events", json=read)).json() == {
            "stage": "explore",
            "tier": "cold",
        }
        bad = await client.post("/v1/agents/agent-7/events", json={"tool": "x"})
        assert bad.status_code == 400 and "seq" in bad.json()["error"]["message"]
        status = (await client.get("/status")).json()
        agent = next(a for a in status["agents"] if a["agent_id"] == "agent-7")
        assert agent["stage"] == "explore" and agent["events"] == 2


async def test_sidecar_speculation_counters_are_summed_in_status_and_metrics() -> None:
    async with coordinator() as (client, _):
        base = {"seq": 1, "tool": "edit_file", "ok": True, "paths": ["a.py"], "duration_ms": 1.0}
        one = {"prerun_started": 3, "prerun_used": 2, "predictions": 10, "top1": 6, "top3": 9, "prerun_saved_s": 1.5}
        two = {"prerun_started": 1, "prerun_cancelled": 1, "predictions": 10, "top1": 2, "top3": 5,
               "prerun_used": "lots", "top2": 7, "prerun_unused": -4}  # fmt: skip
        for agent, counters in (("a-1", {"prerun_started": 1}), ("a-1", one), ("a-2", two)):
            answer = await client.post(f"/v1/agents/{agent}/events", json={**base, "speculation": counters})
            assert answer.status_code == 200, answer.text
        spec = (await client.get("/status")).json()["speculation"]
        assert spec["sidecars"] == 2  # a-1's latest report replaced its first
        assert spec["test_runs"] == {
            "started": 4, "used": 2, "cancelled": 1, "discarded": 0, "unused": 0, "time_saved_s": 1.5
        }  # fmt: skip
        assert spec["prediction"]["predictions"] == 20 and spec["prediction"]["top1_rate"] == 0.4
        assert spec["prediction"]["top3_rate"] == 0.7
        text = (await client.get("/metrics")).text
        assert "goose_sidecar_speculation_test_runs_started_total 4.0" in text
        assert "goose_sidecar_prediction_top1_hits_total 8.0" in text
        assert 'goose_sidecar_speculation_test_runs_total{outcome="used"} 2.0' in text
        bad = await client.post("/v1/agents/a-3/events", json={**base, "speculation": "nope"})
        assert bad.status_code == 400 and "speculation" in bad.json()["error"]["message"]


async def test_pools_policy_limits_hot_and_cold_slots() -> None:
    async with coordinator({"policy": "pools", "hot_pool": 1, "cold_pool": 1}) as (client, state):
        dispatcher = state.dispatchers["large"]
        stalls = [
            asyncio.create_task(
                client.post("/v1/chat/completions", json=chat(f"s{i}", "cold"), headers={"x-sim-fault": "stall"})
            )
            for i in range(2)
        ]
        await wait_until(lambda: dispatcher.in_flight == 1 and len(dispatcher.queue) == 1)
        assert dispatcher.pools.cold == 1
        hot = await client.post("/v1/chat/completions", json=chat("fix", "hot"))  # its own pool is free
        assert hot.status_code == 200
        for task in stalls:
            task.cancel()
        await asyncio.gather(*stalls, return_exceptions=True)
        await wait_until(lambda: dispatcher.in_flight == 0 and dispatcher.pools.cold == 0)


async def test_prometheus_has_queue_metrics_per_tier() -> None:
    async with coordinator() as (client, _):
        await client.post("/v1/chat/completions", json=chat("x", "hot"))
        text = (await client.get("/metrics")).text
        assert 'goose_sidecar_admitted_total{model="large",tier="hot"} 1.0' in text
        assert 'goose_sidecar_queued{model="large",tier="cold"} 0.0' in text
        assert 'goose_sidecar_window{model="large"}' in text


async def test_a_call_cancelled_in_the_instant_a_slot_frees_does_not_take_it() -> None:
    """The holder releases its slot in the same loop step as the waiter is cancelled (before the waiter's task ran
    its handler): the slot goes to the next waiter, never to the cancelled one (an error, and a lost slot)."""
    overrides = {"models": {"large": {"replicas": ["http://127.0.0.1:1"]}}, "scheduling.window": 1}
    dispatcher = make_dispatcher("large", load_config(env={}, overrides=overrides))
    held = await dispatcher.acquire("holder", Tier.HOT)
    leaving = asyncio.create_task(dispatcher.acquire("leaving", Tier.COLD))
    staying = asyncio.create_task(dispatcher.acquire("staying", Tier.COLD))
    await wait_until(lambda: len(dispatcher.queue) == 2)
    leaving.cancel()
    held.release(0.0)  # in the same step: `leaving`'s future is cancelled, its task has not run yet
    (await staying).release(0.0)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert dispatcher.in_flight == 0 and len(dispatcher.queue) == 0
    assert dispatcher.tiers[Tier.COLD].cancelled_waiting == 1
