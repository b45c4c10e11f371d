"""Admission against vLLM's own queue, and what the coordinator is told (not guessed) about its upstream.

Real servers on loopback: the simulator (vLLM V1's priority policy and `max_num_seqs`) or the scripted upstream,
a real coordinator in front. Ranks and scrape counts are asserted, never timings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from sidecar.bench.ordering import Case, format_table, run_condition, simulator
from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.coordinator.command import upstream_lines
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.state import CoordinatorState
from sidecar.coordinator.upstream import parse_vllm_metrics
from sidecar.core.admission import AdmissionLimits
from sidecar.core.ordering import make_policy
from sidecar.core.stages import Tier
from sidecar.serving import free_port, serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings
from sidecar.testing import FakeClock, wait_until
from tests.coordinator.conftest import make_config
from tests.coordinator.scripted_upstream import MODEL, Upstream

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("slots", "colds"), [(2, 4), (2, 6), (4, 6)])  # the two runs, and 4 slots
async def test_a_hot_call_finishes_no_later_through_the_coordinator_than_with_vllm_alone(
    slots: int, colds: int
) -> None:
    """The issue's ordering experiment: default scheduling, the upstream declared to have native priority."""
    trials = {}
    for condition in ("direct", "default", "fcfs"):
        async with simulator(slots, time_scale=2.0) as (url, model):
            trials[condition] = await run_condition(condition, url, model, Case(slots, colds, time_scale=2.0))
    print("\n" + format_table(list(trials.values())))
    assert trials["default"].hot_rank <= trials["direct"].hot_rank, trials
    # The experiment tells ordering from none: without priority the hot call waits behind the colds (at 4 slots
    # this short hot call overtakes the two queued colds on its own, see `sidecar.bench.ordering.HOT_TOKENS`).
    assert trials["direct"].hot_rank == slots + 1, trials  # right after the colds running when it arrived
    assert trials["fcfs"].hot_rank >= trials["direct"].hot_rank + (2 if slots == 2 else 0), trials


@asynccontextmanager
async def coordinator_for(url: str, **upstream: Any) -> AsyncIterator[tuple[httpx.AsyncClient, CoordinatorState]]:
    overrides = {"models": {"large": {"replicas": [url], **upstream}}, "scheduling.metrics_interval_s": 0.1}
    app = build_app(load_config(env={}, overrides=overrides))
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client, app.state.coordinator


async def test_a_coordinator_started_before_its_upstream_adapts_at_its_first_answer_and_after_a_restart() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"  # the OpenAI base URL form, as the operator gave it
    sim = SimSettings(time_scale=20.0)
    async with coordinator_for(url, native_priority=True) as (client, state):
        dispatcher = state.dispatchers["large"]
        dispatcher.limits = dataclasses.replace(dispatcher.limits, stale_after_s=1.0)  # lost sooner than 10 s
        await wait_until(lambda: dispatcher.failed_scrapes >= 10, limit_s=30)  # the old watcher gave up after 3
        status = (await client.get("/status")).json()["scheduling"]["large"]
        assert status["upstream_state"] == "waiting_for_upstream" and status["upstream_metrics"] is None
        for generation in range(2):  # a late start, then a restart
            async with serve_app(build_sim_app(sim), port=port) as sim_url, httpx.AsyncClient() as probe:
                assert (await probe.get(f"{sim_url}/health")).status_code == 200
                answered_at, scrapes_then = time.monotonic(), dispatcher.scrapes
                await wait_until(lambda: dispatcher.admission.phase == "adaptive", limit_s=30)
                elapsed = time.monotonic() - answered_at
                # Adaptive at the first scrape that started after /health answered (one may have been in flight).
                assert dispatcher.scrapes <= scrapes_then + 2, (dispatcher.scrapes, scrapes_then)
                status = (await client.get("/status")).json()["scheduling"]["large"]
                assert status["upstream_state"] == "adaptive" and status["upstream_metrics"] is not None
                print(f"\nupstream {generation}: adaptive {elapsed:.3f} s after /health answered (loaded 2-core box)")
                answer = await client.post("/v1/chat/completions", json={**CHAT, "model": "large", "max_tokens": 2})
                assert answer.status_code == 200, answer.text
            await wait_until(lambda: dispatcher.admission.phase == "upstream_lost", limit_s=30)
            assert dispatcher.window == dispatcher.limits.initial_window


async def test_native_priority_is_configuration_and_is_shown() -> None:
    upstream = Upstream()
    async with serve_app(upstream.app()) as url:
        for native in (False, True):
            async with coordinator_for(url, native_priority=native) as (client, _):
                response = await client.post("/v1/chat/completions", json={**CHAT, "priority": "cold"})
                assert response.status_code == 200
                sent = upstream.received[-1]
                assert sent.get("priority") == (2 if native else None), sent  # cold's vLLM priority, or nothing
                status = (await client.get("/status")).json()
                assert status["scheduling"]["large"]["native_priority"] is native
                assert status["upstreams"][0]["native_priority"] is native
                config = load_config(env={}, overrides={"models": {"large": {"replicas": [url]}}})
                assert "native priority off" in upstream_lines(config)[0]


def test_the_old_auto_setting_is_refused_clearly() -> None:
    from sidecar.config import ConfigError

    with pytest.raises(ConfigError, match="--scheduling-policy priority"):
        load_config(env={}, overrides={"scheduling.native_priority": "auto"})


async def test_the_session_id_reaches_vllm_only_where_configured() -> None:
    upstream = Upstream()
    async with serve_app(upstream.app()) as url:
        for enabled in (False, True):
            async with coordinator_for(url, session_id=enabled) as (client, _):
                await client.post("/v1/chat/completions", json=CHAT, headers={"agent-session-id": "s-42"})
                assert upstream.headers[-1].get("x-session-id") == ("s-42" if enabled else None)
                assert "session_id" not in upstream.received[-1]  # the body stays the client's


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_both_url_forms_reach_the_same_paths(suffix: str) -> None:
    upstream = Upstream()
    async with serve_app(upstream.app()) as url:
        config = make_config(url + suffix)
        assert config.models["default"].replicas == [url]
        understood = f"upstream default: {url}  (calls {url}/v1/..., health {url}/health"
        assert upstream_lines(config)[0].startswith(understood)
        app = build_app(config)
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base) as client:
            response = await client.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200  # not /v1/v1/chat/completions (a 404)
            replica = (await client.get("/status")).json()["upstreams"][0]["replicas"][0]
            assert replica["healthy"] is True and replica["url"] == url  # /health probed at the root


@pytest.mark.parametrize("bad", ["ftp://host/v1", "http:///v1", "https://"])
def test_a_url_without_scheme_or_host_is_refused(bad: str) -> None:
    from sidecar.config import ConfigError

    with pytest.raises(ConfigError, match="replica URL"):
        make_config(bad)


async def test_one_upstream_answers_the_large_and_small_aliases_and_claims_no_savings() -> None:
    upstream = Upstream()
    async with serve_app(upstream.app()) as url:
        app = build_app(make_config(url))
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base) as client:
            for alias in ("large", "small", "auto"):
                response = await client.post("/v1/chat/completions", json={**CHAT, "model": alias})
                assert response.status_code == 200
                assert upstream.received[-1]["model"] == MODEL  # the one model, not a 404 for "large"
            savings = (await client.get("/status")).json()["savings"]
            assert savings["routing"] is False and savings["gpu_s_saved"] == 0 and savings["routed"]["calls"] == 0


async def test_a_server_without_vllm_metrics_gets_the_fixed_window_and_is_still_watched() -> None:
    upstream = Upstream()  # answers /metrics with 404, as a non-vLLM OpenAI-compatible server would
    async with serve_app(upstream.app()) as url, coordinator_for(url) as (client, state):
        dispatcher = state.dispatchers["large"]
        await wait_until(lambda: dispatcher.admission.phase == "no_vllm_metrics", limit_s=30)
        assert dispatcher.window == dispatcher.limits.max_window
        scrapes = dispatcher.scrapes
        await wait_until(lambda: dispatcher.scrapes > scrapes + 2, limit_s=30)  # never given up on
        status = (await client.get("/status")).json()["scheduling"]["large"]
        assert status["upstream_state"] == "no_vllm_metrics" and status["window"] == 64


async def test_speculative_work_is_held_at_the_coordinator_without_native_priority() -> None:
    dispatcher = Dispatcher(
        "large", make_policy("priority"), limits=AdmissionLimits(initial_window=2), clock=time.monotonic
    )
    assert dispatcher.hold_speculative()  # room: it takes a place
    assert dispatcher.hold_speculative()
    assert not dispatcher.hold_speculative()  # the window is full: held back, never queued inside vLLM
    real = asyncio.create_task(dispatcher.acquire("agent", Tier.HOT))
    await wait_until(lambda: len(dispatcher.queue) == 1)  # the real call waits for the places speculation holds ...
    dispatcher.release_speculative()  # ... until one is given back (the speculator cancels on `on_queue`)
    slot = await real
    assert dispatcher.in_flight == 1 and dispatcher.speculative == 1
    assert not dispatcher.hold_speculative()  # full again
    slot.release()
    assert dispatcher.hold_speculative()


@pytest.mark.parametrize("native", [True, False])
async def test_a_hot_call_passes_a_full_window_only_where_vllm_will_order_it(native: bool) -> None:
    clock = FakeClock(0.0)
    dispatcher = Dispatcher(
        "large", make_policy("priority", aging_s=1.0), static_window=1, native_priority=native, clock=clock.now
    )
    running = await dispatcher.acquire("a", Tier.COLD)
    overdue = asyncio.create_task(dispatcher.acquire("b", Tier.COLD))
    await wait_until(lambda: len(dispatcher.queue) == 1)
    clock.advance(10.0)  # the waiting cold call is overdue: the policy's first choice now
    hot = asyncio.create_task(dispatcher.acquire("c", Tier.HOT))
    await asyncio.sleep(0)
    if native:  # vLLM puts it ahead of the cold call it holds: holding it here could only make it later
        slot = await asyncio.wait_for(hot, 5)
        assert dispatcher.in_flight == 2 and len(dispatcher.queue) == 1  # the overdue cold still waits here
        hot_again = asyncio.create_task(dispatcher.acquire("d", Tier.HOT))
        await wait_until(lambda: len(dispatcher.queue) == 2)  # hot work is bounded by the window too
        slot.release()
        await asyncio.wait_for(hot_again, 5)
    else:  # vLLM would serve it in arrival order: it waits here, and the overdue cold goes first
        assert not hot.done() and len(dispatcher.queue) == 2
        running.release()
        await asyncio.wait_for(overdue, 5)
        assert not hot.done()
    for task in (overdue, hot):
        task.cancel()
    await asyncio.gather(overdue, hot, return_exceptions=True)


@pytest.mark.parametrize(
    ("info", "tokens"),
    [
        ('block_size="128",kv_cache_size_tokens="65536",num_gpu_blocks="512"', 65536),  # vLLM 0.32 (vllm.md)
        ('block_size="16",enable_prefix_caching="True",num_gpu_blocks="2240"', 35840),  # blocks x block size
        ('block_size="16",num_gpu_blocks="None"', None),  # not a number: unknown, not an error
    ],
)
def test_the_kv_cache_size_is_read_from_cache_config_info(info: str, tokens: int | None) -> None:
    text = (
        '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine="0",model_name="m"} 2.0\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
        f"vllm:cache_config_info{{{info}}} 1.0\n"
    )
    snapshot = parse_vllm_metrics(text, 5.0)
    assert snapshot is not None and (snapshot.waiting, snapshot.running) == (2, 3)
    assert snapshot.kv_capacity_tokens == tokens
    assert snapshot.kv_block_tokens == int(info.split('block_size="', 1)[1].split('"', 1)[0])
    assert snapshot.prefix_cache_hits_total is None  # not exported here: unknown, never 0


def test_the_prefix_cache_counters_are_summed_over_engines() -> None:
    text = "".join(
        f'vllm:num_requests_waiting{{engine="{e}"}} 0.0\n'
        f'vllm:prefix_cache_queries_total{{engine="{e}",model_name="m"}} {100.0 * (e + 1)}\n'
        f'vllm:prefix_cache_queries_created{{engine="{e}",model_name="m"}} 1.7e9\n'
        f'vllm:prefix_cache_hits_total{{engine="{e}",model_name="m"}} {40.0 * (e + 1)}\n'
        for e in (0, 1)
    )
    snapshot = parse_vllm_metrics(text, 5.0)
    assert snapshot is not None
    assert (snapshot.prefix_cache_hits_total, snapshot.prefix_cache_queries_total) == (120.0, 300.0)


async def test_the_simulators_kv_cache_size_reaches_status() -> None:
    async with serve_app(build_sim_app(SimSettings())) as url, coordinator_for(url) as (client, state):
        await wait_until(lambda: state.dispatchers["large"].admission.phase == "adaptive", limit_s=30)
        metrics = (await client.get("/status")).json()["scheduling"]["large"]["upstream_metrics"]
        assert metrics["kv_capacity_tokens"] == 2240 * 16  # the 32B profile's blocks x 16 tokens
