"""What the coordinator shows of KV and of why calls wait (/status `kv`, the agents' fields, /metrics), and the
`kv` policy planning with the engine's own capacity: a real coordinator in front of the real simulator."""

from __future__ import annotations

import asyncio
import contextlib

from sidecar.testing import wait_until
from tests.coordinator.test_metrics import sample
from tests.coordinator.test_scheduling import chat, coordinator


async def test_a_call_that_waits_for_room_in_the_working_set_says_so_everywhere() -> None:
    # The gates always engaged (two agents at ~1x the KV would not engage them by default, see test_status_command).
    scheduling = {"policy": "kv", "kv_capacity_tokens": 1000, "kv_correction": False, "kv_small_context_tokens": 0}
    scheduling |= {"kv_engage_ratio": 0.0, "kv_release_ratio": 0.0}
    async with coordinator(scheduling, sim={"fault_stall_s": 60.0}) as (client, state):
        dispatcher = state.dispatchers["large"]
        holder = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat("hold"), headers={"x-agent-id": "a", "x-sim-fault": "stall"})
        )
        await wait_until(lambda: dispatcher.in_flight == 1)
        big = asyncio.create_task(  # ~1,000 estimated tokens: more than 0.9 x 1,000 beside a's place
            client.post("/v1/chat/completions", json=chat("x " * 2000), headers={"x-agent-id": "b"})
        )
        await wait_until(lambda: len(dispatcher.queue) == 1)
        status = (await client.get("/status")).json()
        view = status["kv"]["large"]
        waits = view["waiting_on"]
        assert waits["gate"] == "working_set" and waits["calls"] == 1 and waits["agent"] == "b"
        assert waits["places"] == ["a"]
        assert waits["planned_tokens"] + waits["needs_tokens"] > waits["limit_tokens"] == 900
        ws = view["working_set"]
        assert ws["capacity_source"] == "configured" and ws["capacity_tokens"] == 1000 and ws["correction"] is None
        assert ws["agents"]["a"]["has_place"] and not ws["agents"]["b"]["has_place"]
        agents = {a["agent_id"]: a for a in status["agents"]}
        assert agents["b"]["waiting_on"] == "working_set" and agents["a"]["waiting_on"] is None
        assert agents["a"]["kv_resident_tokens"] == ws["agents"]["a"]["resident_tokens"] > 0
        text = (await client.get("/metrics")).text
        assert sample(text, "goose_sidecar_queued_by_gate", model="large", gate="working_set") == 1
        assert sample(text, "goose_sidecar_kv_capacity_tokens", model="large") == 1000
        assert sample(text, "goose_sidecar_kv_working_set_tokens", model="large") == ws["working_set_tokens"]
        assert sample(text, "goose_sidecar_kv_engaged", model="large") == 1 and ws["engaged"] is True
        assert sample(text, "goose_sidecar_kv_demand_tokens", model="large") == ws["demand_tokens"] > 0
        assert sample(text, "goose_sidecar_kv_agent_resident_tokens", model="large", agent="a") > 0
        holder.cancel()  # a leaves: its place frees once its call ends, and b starts
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        assert (await big).status_code == 200
        assert (await client.get("/status")).json()["kv"]["large"]["waiting_on"] is None


async def test_a_full_window_is_the_gate_a_priority_call_waits_on() -> None:
    async with coordinator({"policy": "priority", "window": 1}, sim={"fault_stall_s": 60.0}) as (client, state):
        dispatcher = state.dispatchers["large"]
        holder = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat("hold"), headers={"x-sim-fault": "stall"})
        )
        await wait_until(lambda: dispatcher.in_flight == 1)
        waiter = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat("next"), headers={"x-agent-id": "w"})
        )
        await wait_until(lambda: len(dispatcher.queue) == 1)
        view = (await client.get("/status")).json()["kv"]["large"]
        assert view["working_set"] is None  # not the kv policy
        assert view["waiting_on"] == {"gate": "window", "calls": 1, "in_flight": 1, "window": 1}
        text = (await client.get("/metrics")).text
        assert sample(text, "goose_sidecar_queued_by_gate", model="large", gate="window") == 1
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        assert (await waiter).status_code == 200


async def test_the_kv_policy_plans_with_the_engines_own_capacity() -> None:
    # The configured capacity is wrong on purpose: the simulator's vllm:cache_config_info says what it holds.
    async with coordinator({"policy": "kv", "kv_capacity_tokens": 123_456}) as (client, state):
        dispatcher = state.dispatchers["large"]
        metrics = (await client.get(f"{state.pool.upstreams[0].replicas[0].url}/metrics")).text
        engine = [line for line in metrics.splitlines() if line.startswith("vllm:cache_config_info")]
        assert engine and 'kv_cache_size_tokens="' in engine[0]
        size = int(engine[0].split('kv_cache_size_tokens="', 1)[1].split('"', 1)[0])
        for agent in ("a", "b"):
            response = await client.post(
                "/v1/chat/completions", json=chat("fix it " * 50), headers={"x-agent-id": agent}
            )
            assert response.status_code == 200
        await wait_until(lambda: dispatcher.kv_corrector is not None and dispatcher.kv_corrector.correction.last)
        ws = (await client.get("/status")).json()["kv"]["large"]["working_set"]
        assert ws["capacity_source"] == "engine" and ws["capacity_tokens"] == size != 123_456
        correction = ws["correction"]
        assert ws["usable_tokens"] <= size and 0.25 <= correction["residency"] <= 1
        assert dispatcher.policy.capacity_tokens == dispatcher.kv_corrector.capacity  # type: ignore[union-attr]
        text = (await client.get("/metrics")).text
        assert sample(text, "goose_sidecar_kv_capacity_tokens", model="large") == size
        assert sample(text, "goose_sidecar_kv_correction_scale", model="large") == correction["scale"]
