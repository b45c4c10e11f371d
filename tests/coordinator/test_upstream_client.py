"""The one upstream client: a replica's own httpx client carries every small request to that replica (completions
go through the relay's own HTTP/1.1 client); speculative calls follow the same header rules and feed the same
circuit breaker as real ones."""

from __future__ import annotations

import asyncio
import time

import httpx

from sidecar.config import load_config
from sidecar.coordinator.agents import AgentBook
from sidecar.coordinator.app import build_app, make_client
from sidecar.coordinator.settings import SpeculationSettings
from sidecar.core.admission import UpstreamMetrics
from sidecar.core.breaker import BreakerPhase
from sidecar.serving import free_port, serve_app
from tests.coordinator.scripted_upstream import MODEL, Upstream

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "fix the failing test"}], "stream": True}


def recording(client: httpx.AsyncClient, seen: list[str]) -> httpx.AsyncClient:
    async def note(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    client.event_hooks["request"].append(note)
    return client


async def until(predicate, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_replica_with_its_own_client_gets_every_small_request_through_it() -> None:
    upstream = Upstream()
    async with serve_app(upstream.app()) as upstream_url:
        config = load_config(
            env={}, overrides={"models": {"default": {"replicas": [upstream_url]}}, "scheduling.native_priority": "off"}
        )
        own_seen: list[str] = []
        shared_seen: list[str] = []
        async with (
            recording(make_client(config), own_seen) as own,
            recording(make_client(config), shared_seen) as shared,
        ):
            app = build_app(config, client=shared, replica_clients={upstream_url: own})
            async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
                assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
                assert (await client.get("/v1/models")).status_code == 200
    assert {"GET /health", "GET /v1/models"} <= set(own_seen)
    assert shared_seen == [] and "POST /v1/chat/completions" not in own_seen  # the relay's client carried it
    assert len(upstream.received) == 1


async def test_speculative_calls_follow_the_header_rules() -> None:
    upstream = Upstream()
    async with serve_app(upstream.app()) as upstream_url:
        overrides = {
            "models": {"default": {"replicas": [upstream_url], "session_id": True, "headers": {"Modal-Key": "k"}}},
            "scheduling.native_priority": "off",
        }
        app = build_app(load_config(env={}, overrides=overrides))
        async with serve_app(app):
            speculator = speculating(app)
            forwarded = {"modal-session-id": "forged", "x-title": "t"}
            assert speculator.speculate("a1", "default", CHAT, headers=forwarded, session="sess-1")
            await until(lambda: speculator.pending["a1"].done)
            sent = upstream.headers[-1]
            assert sent["modal-session-id"] == "a1" and sent["modal-key"] == "k"  # ours replace the client's
            assert sent["x-session-id"] == "sess-1" and sent["x-title"] == "t"


def speculating(app):  # type: ignore[no-untyped-def]
    """Speculation on, the upstream reported idle (the scripted upstream has no vLLM /metrics)."""
    state = app.state.coordinator
    state.speculator.settings = SpeculationSettings(enabled=True)
    for d in state.dispatchers.values():
        d.metrics = UpstreamMetrics(0, 0, 0.0, 0.0, time.monotonic() + 3600, 256)
    return state.speculator


async def test_failed_speculative_calls_open_the_replica_breaker() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = build_app(load_config(env={}, overrides={"models": {"default": {"replicas": [dead]}}}))
    async with serve_app(app):
        speculator = speculating(app)
        replica = app.state.coordinator.pool.upstreams[0].replicas[0]
        for n in range(8):
            if replica.breaker.phase(time.monotonic()) is BreakerPhase.OPEN:
                break
            assert speculator.speculate(f"a{n}", "default", CHAT)
            await until(lambda n=n: speculator.pending[f"a{n}"].done)
        assert replica.breaker.phase(time.monotonic()) is BreakerPhase.OPEN
        assert replica.in_flight == 0 and speculator.stats.failed >= 1


async def test_a_forgotten_agent_takes_its_pending_speculation_with_it() -> None:
    upstream = Upstream()
    async with serve_app(upstream.app()) as upstream_url:
        overrides = {"models": {"default": {"replicas": [upstream_url]}}, "scheduling.native_priority": "off"}
        app = build_app(load_config(env={}, overrides=overrides), book=AgentBook(max_agents=2))
        async with serve_app(app):
            speculator = speculating(app)
            for agent in ("a1", "a2", "a3"):
                assert speculator.speculate(agent, "default", CHAT, headers={"x-script": "hold"})
            assert set(speculator.pending) == {"a2", "a3"} and speculator.stats.expired == 1
            upstream.release.set()
