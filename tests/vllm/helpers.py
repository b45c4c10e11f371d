"""Requests, metric reads and the ordering experiment shared by the tier's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sidecar.testing import wait_until
from tests.vllm.servers import SERVED

USER = [{"role": "user", "content": "Fix the failing test in tests/test_a.py."}]
READ_FILE = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file of the workspace.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
}
# vLLM's integer priorities for the coordinator's tiers (sidecar.core.stages.native_priority: hot 0, cold 2).
HOT, COLD = 0, 2
COLD_TOKENS, HOT_TOKENS = 240, 60


def chat(max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    """A chat request for the tier's model; `ignore_eos` makes the output length exactly `max_tokens`."""
    return {"model": SERVED, "messages": USER, "max_tokens": max_tokens, "ignore_eos": True, **extra}


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Prometheus text -> family name -> its samples (sample name, labels, value)."""
    return {
        f.name: [(s.name, dict(s.labels), s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


async def gauge(client: httpx.AsyncClient, base: str, name: str) -> float:
    """One gauge of a server's /metrics, summed over its series."""
    text = (await client.get(f"{base}/metrics")).text
    return sum(value for sample, _, value in families(text).get(name, []) if sample == name)


async def engine_load(client: httpx.AsyncClient, base: str) -> int:
    """Requests inside vLLM: running plus waiting."""
    running = await gauge(client, base, "vllm:num_requests_running")
    waiting = await gauge(client, base, "vllm:num_requests_waiting")
    return int(running + waiting)


async def hot_rank(
    client: httpx.AsyncClient,
    send_to: str,
    engine: str,
    colds: int,
    slots: int,
    cold_priority: Any,
    hot_priority: Any,
    held: Callable[[], Awaitable[int]] | None = None,
) -> tuple[int, list[str]]:
    """The issue's experiment: `colds` long calls sent together, then, once all of them are inside vLLM (or held by
    the coordinator: `held` counts what it queues) and vLLM runs as many as it has `slots`, one short hot call.
    Returns the rank (1-based) at which the hot call finished and the whole finishing order.

    The colds are identical and sent at once, so the ones vLLM runs start within a step or two of each other and
    the rest wait; lengths are in tokens (the engine's steps), a cold call 4x a hot one. So the outcome does not
    depend on how fast this machine is (cold calls sent one by one arrive steps apart, and a hot call shorter
    than that stagger then finishes before running cold calls that started earlier)."""
    order: list[str] = []

    async def send(name: str, body: dict[str, Any]) -> None:
        response = await client.post(f"{send_to}/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        order.append(name)

    cold = chat(COLD_TOKENS, priority=cold_priority, temperature=0)
    tasks = [asyncio.create_task(send(f"cold{i}", cold)) for i in range(colds)]

    async def arrived() -> bool:
        running = await gauge(client, engine, "vllm:num_requests_running")
        inside = await engine_load(client, engine)
        return running >= min(slots, colds) and inside + (await held() if held else 0) >= colds

    await wait_until(arrived, f"{colds} cold calls to arrive", limit_s=120)
    tasks.append(asyncio.create_task(send("hot", chat(HOT_TOKENS, priority=hot_priority, temperature=0))))
    await asyncio.gather(*tasks)
    return order.index("hot") + 1, order
