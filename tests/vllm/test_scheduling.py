"""Scheduling against the real engine: the ordering experiment of issue 14, admission tracking vLLM's metrics,
a coordinator started before vLLM, and both forms of the upstream URL."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sidecar.testing import wait_until
from tests.vllm.conftest import coordinator
from tests.vllm.helpers import COLD, HOT, chat, hot_rank
from tests.vllm.servers import CATALOG, SERVED, EarlyCoordinator, VllmServer, adapted


async def status(client: httpx.AsyncClient) -> dict:
    return (await client.get("/status")).json()  # type: ignore[no-any-return]


async def queued(client: httpx.AsyncClient) -> int:
    return sum(entry["queued"] for entry in (await status(client))["scheduling"].values())


async def _ordering(server: VllmServer, colds: int, slots: int) -> tuple[int, int, list[str], list[str]]:
    async with httpx.AsyncClient(timeout=300) as client:
        direct, direct_order = await hot_rank(client, server.url, server.url, colds, slots, COLD, HOT)
    # The default configuration for a vLLM started with --scheduling-policy priority, as the Modal app and the
    # generated configs declare it.
    async with coordinator(server.url, native_priority=True) as (through, _):
        url = str(through.base_url).rstrip("/")
        rank, order = await hot_rank(through, url, server.url, colds, slots, "cold", "hot", lambda: queued(through))
    return direct, rank, direct_order, order


async def test_hot_call_finishes_no_later_through_the_coordinator_at_two_slots(vllm_prio2: VllmServer) -> None:
    """vLLM with native priority at --max-num-seqs 2: 4 cold calls, then a hot one (issue 14, finding 1)."""
    direct, rank, direct_order, order = await _ordering(vllm_prio2, colds=4, slots=2)
    assert direct == 3, direct_order  # vLLM's own priority queue puts the hot call right after the running two
    assert rank <= direct, f"through the coordinator {order}, direct {direct_order}"


async def test_hot_call_finishes_no_later_through_the_coordinator_at_four_slots(vllm_prio4: VllmServer) -> None:
    """The same at --max-num-seqs 4 with 6 cold calls."""
    direct, rank, direct_order, order = await _ordering(vllm_prio4, colds=6, slots=4)
    assert direct == 5, direct_order
    assert rank <= direct, f"through the coordinator {order}, direct {direct_order}"


async def test_adaptive_admission_tracks_vllms_metrics(vllm_prio2: VllmServer) -> None:
    """/status shows what vLLM reports: its 2 running requests under load, none after; the window is adaptive,
    not static. The calls are long (many metric scrapes) so the busy state cannot be missed."""
    async with coordinator(vllm_prio2.url) as (client, _):
        calls = [asyncio.create_task(client.post("/v1/chat/completions", json=chat(400))) for _ in range(3)]

        async def busy() -> bool:
            assert not all(call.done() for call in calls), "the calls ended before /status showed them running"
            metrics = (await status(client))["scheduling"]["default"]["upstream_metrics"]
            return bool(metrics) and metrics["running"] == 2

        await wait_until(busy, "/status to show vLLM running 2 requests", limit_s=120)
        for response in await asyncio.gather(*calls):
            assert response.status_code == 200

        async def idle() -> bool:
            metrics = (await status(client))["scheduling"]["default"]["upstream_metrics"]
            return bool(metrics) and metrics["running"] == 0 and metrics["waiting"] == 0

        await wait_until(idle, "/status to show vLLM idle", limit_s=120)
        entry = (await status(client))["scheduling"]["default"]
        assert adapted({"scheduling": {"default": entry}}), entry
        assert 1 <= entry["window"] <= 64


async def test_a_coordinator_started_before_vllm_adapts(early_coordinator: EarlyCoordinator) -> None:
    """`goose-sidecar up` was running before its vLLM was launched (minutes before it was healthy): once vLLM
    answers /health, /status shows its metrics and an adaptive window (issue 14 target: within 5 s)."""
    early = early_coordinator
    assert early.upstream_healthy_at is not None and early.started_at < early.upstream.launched_at

    async def seen() -> bool:
        return early.adapted_at is not None

    await wait_until(seen, f"the early coordinator to adapt; last /status: {early.last_status}", limit_s=20)
    assert early.adapted_at is not None
    delay = early.adapted_at - early.upstream_healthy_at
    print(f"early coordinator: adapted {delay:.1f} s after vLLM's first /health 200")


@pytest.mark.parametrize("suffix", ["", "/v1"])
async def test_both_upstream_url_forms_work(vllm_prio2: VllmServer, suffix: str) -> None:
    """`--upstream http://host:port` and the OpenAI base-URL form `.../v1` reach the same vLLM."""
    async with coordinator(vllm_prio2.url + suffix) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat(4))
        assert response.status_code == 200, response.text
        assert response.json()["model"] == SERVED
        models = await client.get("/v1/models")
        assert [m["id"] for m in models.json()["data"]] == [*CATALOG]

        async def ready() -> bool:
            return adapted(await status(client))

        await wait_until(ready, "adaptive admission on the upstream", limit_s=30)
