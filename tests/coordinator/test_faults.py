"""Upstream faults, injected by the real simulator: every call gets a complete answer or a clear error, no slot
leaks, and the next call works."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.coordinator.state import CoordinatorState
from sidecar.serving import free_port, serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings
from sidecar.stack import serve_coordinator
from sidecar.testing import wait_until

BODY = {"model": "large", "messages": [{"role": "user", "content": "fix the test"}], "max_tokens": 8, "stream": True}


@asynccontextmanager
async def stack(
    replicas: list[str] | None = None, **coordinator: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, CoordinatorState]]:
    settings = SimSettings(time_scale=50.0, fault_stall_s=30.0)
    async with serve_app(build_sim_app(settings)) as sim_url:
        overrides: dict[str, Any] = {"models": {"large": {"replicas": [*(replicas or []), sim_url]}}}
        overrides.update({f"coordinator.{k}": v for k, v in {"retry_backoff_s": 0.01, **coordinator}.items()})
        async with (
            serve_coordinator(load_config(env={}, overrides=overrides)) as (url, app),
            httpx.AsyncClient(base_url=url, timeout=20) as client,
        ):
            yield client, app.state.coordinator


async def no_leaks(state: CoordinatorState) -> None:
    await wait_until(lambda: state.telemetry.in_flight_total == 0)
    assert all(d.in_flight == 0 and len(d.queue) == 0 for d in state.dispatchers.values())
    assert all(r.in_flight == 0 for u in state.pool.upstreams for r in u.replicas)


def frames(body: bytes) -> list[Any]:
    out = []
    for part in body.split(b"\n\n"):
        if part.startswith(b"data: "):
            data = part.removeprefix(b"data: ")
            out.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return out


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("500", lambda r: r.status_code == 500 and r.json()["error"]["code"] == 500),
        ("503", lambda r: r.status_code == 503),
        ("error_frame", lambda r: r.status_code == 200 and "error" in frames(r.content)[-2]
         and frames(r.content)[-1] == "[DONE]"),
        ("drop", lambda r: r.status_code == 200 and "upstream stream broke" in frames(r.content)[-2]["error"]["message"]
         and frames(r.content)[-1] == "[DONE]"),
    ],
)  # fmt: skip
async def test_each_fault_ends_in_a_clear_answer_and_leaks_nothing(fault: str, check: Any) -> None:
    async with stack() as (client, state):
        response = await client.post("/v1/chat/completions", json=BODY, headers={"x-sim-fault": fault})
        assert check(response), (response.status_code, response.content[-300:])
        await no_leaks(state)
        ok = await client.post("/v1/chat/completions", json=BODY)
        assert ok.status_code == 200 and frames(ok.content)[-1] == "[DONE]"
        await no_leaks(state)


async def test_503_is_retried_before_any_byte_is_sent() -> None:
    async with stack(retries=2) as (client, state):
        response = await client.post("/v1/chat/completions", json=BODY, headers={"x-sim-fault": "503"})
        assert response.status_code == 503
        text = (await client.get("/metrics")).text
        assert 'goose_sidecar_upstream_retries_total{model="large"} 2.0' in text
        await no_leaks(state)


async def test_a_stalled_upstream_is_cut_by_the_read_timeout() -> None:
    async with stack(read_timeout_s=0.3) as (client, state):
        response = await client.post("/v1/chat/completions", json=BODY, headers={"x-sim-fault": "stall"})
        # the stall starts after the first frames, so the stream ends with an in-band error and [DONE]
        assert response.status_code in (200, 504)
        if response.status_code == 200:
            assert frames(response.content)[-1] == "[DONE]" and "error" in frames(response.content)[-2]
        await no_leaks(state)


async def test_a_dead_replica_is_never_chosen() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with stack(replicas=[dead]) as (client, state):
        for i in range(4):
            response = await client.post("/v1/chat/completions", json=BODY, headers={"x-agent-id": f"agent-{i}"})
            assert response.status_code == 200, response.content
        dead_replica = next(r for r in state.pool.upstreams[0].replicas if r.url == dead)
        assert dead_replica.served == 0 and dead_replica.healthy is False
        await no_leaks(state)


async def test_a_failing_replica_is_retried_elsewhere_then_skipped_by_its_breaker() -> None:
    """A replica that passes health checks but answers every call with 503 (a cold-starting Modal container)."""
    calls = 0

    async def cold(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        if scope["type"] != "http":
            return
        status = 200 if scope["path"] == "/health" else 503
        calls += scope["method"] == "POST"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"cold start"})

    async with serve_app(cold, lifespan="off") as cold_url, stack(replicas=[cold_url], retries=1) as (client, state):
        for i in range(12):
            response = await client.post("/v1/chat/completions", json=BODY, headers={"x-agent-id": f"agent-{i}"})
            assert response.status_code == 200, response.content
        cold_replica = next(r for r in state.pool.upstreams[0].replicas if r.url == cold_url)
        assert 1 <= calls <= 5  # tried until its breaker opened (5 consecutive failures), then skipped
        assert cold_replica.breaker.opened_at is not None or calls < 5
        await no_leaks(state)


async def test_many_concurrent_calls_with_random_faults_all_end() -> None:
    settings_faults = {"fault_500_rate": 0.1, "fault_drop_rate": 0.1, "fault_error_frame_rate": 0.1}
    settings = SimSettings(time_scale=50.0, **settings_faults)
    async with serve_app(build_sim_app(settings)) as sim_url:
        config = load_config(env={}, overrides={"models": {"large": {"replicas": [sim_url]}}})
        app = build_app(config)
        state: CoordinatorState = app.state.coordinator
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def call(i: int) -> int:
                response = await client.post("/v1/chat/completions", json=BODY, headers={"x-agent-id": f"a{i % 10}"})
                if response.status_code == 200:
                    assert frames(response.content)[-1] == "[DONE]"
                else:
                    assert response.json()["error"]["message"]
                return response.status_code

            codes = await asyncio.gather(*(call(i) for i in range(60)))
            assert set(codes) <= {200, 500, 502} and codes.count(200) >= 30
            await no_leaks(state)
