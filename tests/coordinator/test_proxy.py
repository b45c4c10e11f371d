"""The coordinator as a faithful proxy: real servers on loopback, bytes compared exactly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from sidecar.serving import serve_app
from sidecar.testing import wait_until
from tests.coordinator.conftest import Stack, stack
from tests.coordinator.scripted_upstream import COMPLETION, ERROR_FRAMES, MODEL, SSE_FRAMES

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "fix the failing test"}], "stream": True}


async def test_stream_relayed_byte_for_byte(s: Stack) -> None:
    async with s.client.stream("POST", "/v1/chat/completions", json=CHAT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join([c async for c in response.aiter_raw()])
    assert body == b"".join(SSE_FRAMES)
    assert s.state.telemetry.in_flight_total == 0


async def test_stream_is_not_buffered(s: Stack) -> None:
    """The first frame reaches the client while the upstream is still holding back the rest."""
    async with s.client.stream("POST", "/v1/chat/completions", json=CHAT, headers={"x-script": "hold"}) as response:
        chunks = response.aiter_raw()
        first = await asyncio.wait_for(chunks.__anext__(), 5)
        assert first == SSE_FRAMES[0]
        assert not s.upstream.release.is_set()
        s.upstream.release.set()
        rest = b"".join([c async for c in chunks])
    assert first + rest == b"".join(SSE_FRAMES)


async def test_in_band_error_frame_passes_unchanged(s: Stack) -> None:
    response = await s.client.post("/v1/chat/completions", json=CHAT, headers={"x-script": "sse-error"})
    assert response.status_code == 200
    assert response.content == b"".join(ERROR_FRAMES)


async def test_json_response_and_upstream_error_status_pass_through(s: Stack) -> None:
    ok = await s.client.post("/v1/chat/completions", json={**CHAT, "stream": False}, headers={"x-script": "json"})
    assert ok.status_code == 200 and ok.json() == COMPLETION
    for code in (400, 404, 500, 503):
        bad = await s.client.post("/v1/chat/completions", json=CHAT, headers={"x-script": f"status-{code}"})
        assert bad.status_code == code
        assert bad.json()["error"]["message"] == f"scripted {code}"


async def test_completions_endpoint_and_paths_without_v1(s: Stack) -> None:
    for path in ("/v1/completions", "/completions", "/agents/a1/v1/completions", "/agents/a1/completions"):
        response = await s.client.post(path, json={"model": MODEL, "prompt": "x"}, headers={"x-script": "json"})
        assert response.status_code == 200, path
    for path in ("/chat/completions", "/agents/a1/v1/chat/completions", "/agents/a1/chat/completions"):
        response = await s.client.post(path, json=CHAT)
        assert response.content == b"".join(SSE_FRAMES), path
    for path in ("/v1/models", "/models", "/agents/a1/v1/models"):
        models = await s.client.get(path)
        assert models.json()["data"][0]["id"] == MODEL, path


async def test_paths_near_the_completions_routes_answer_as_starlettes_routes_do(s: Stack) -> None:
    """A POST to a completions path is taken before Starlette's stack (app.CoordinatorApp); anything that is not
    exactly one still reaches Starlette's router and its JSON error shapes."""
    for path in ("/agents//v1/chat/completions", "/agents/a/b/v1/chat/completions", "/v1/chat/completions/x"):
        missing = await s.client.post(path, json=CHAT)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == 404, path
    wrong = await s.client.get("/agents/a1/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == 405
    assert s.upstream.received == []


async def test_client_disconnect_cancels_upstream_at_once(s: Stack) -> None:
    """The upstream sends nothing (a long prefill); the client leaves; the upstream sees its stream close."""

    async def call() -> None:
        await s.client.post("/v1/chat/completions", json=CHAT, headers={"x-script": "hang"})

    task = asyncio.create_task(call())
    await wait_until(lambda: s.upstream.in_progress == 1)
    assert s.state.telemetry.in_flight_total == 1
    task.cancel()
    await asyncio.wait_for(s.upstream.closed_early.wait(), 5)
    await wait_until(lambda: s.state.telemetry.in_flight_total == 0)
    assert all(r.in_flight == 0 for u in s.state.pool.upstreams for r in u.replicas)
    # and the next call works
    response = await s.client.post("/v1/chat/completions", json=CHAT)
    assert response.content == b"".join(SSE_FRAMES)


async def test_connection_dropped_mid_stream_ends_with_error_frame(s: Stack) -> None:
    response = await s.client.post("/v1/chat/completions", json=CHAT, headers={"x-script": "drop"})
    assert response.status_code == 200
    assert response.content.startswith(SSE_FRAMES[0] + SSE_FRAMES[1])
    tail = response.content.split(b"\n\n")
    error = json.loads(tail[-3].removeprefix(b"data: "))
    assert error["error"]["code"] == 502 and "upstream stream broke" in error["error"]["message"]
    assert tail[-2] == b"data: [DONE]"
    assert s.state.telemetry.in_flight_total == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"messages": []}).encode(), "missing required field 'model'"),
        (json.dumps({"model": MODEL}).encode(), "missing required field 'messages'"),
        (json.dumps({"model": MODEL, "messages": "hi"}).encode(), "'messages' must be a list"),
        (json.dumps({**CHAT, "priority": "urgent"}).encode(), "'priority' must be one of"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
async def test_bad_requests_are_refused_without_calling_upstream(s: Stack, body: bytes, message: str) -> None:
    response = await s.client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert s.upstream.received == []


async def test_body_over_limit_is_413() -> None:
    async with stack(max_body_bytes=2048) as st:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
        response = await st.client.post("/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == 413

        # chunked upload without content-length is cut off too
        async def gen():  # type: ignore[no-untyped-def]
            yield json.dumps(big).encode()

        response = await st.client.post("/v1/chat/completions", content=gen())
        assert response.status_code == 413
        assert st.upstream.received == []


async def test_unreachable_upstream_is_502() -> None:
    from sidecar.coordinator.app import build_app
    from sidecar.serving import free_port
    from tests.coordinator.conftest import make_config

    app = build_app(make_config(f"http://127.0.0.1:{free_port()}"))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 502
        error = response.json()["error"]
        assert "unreachable" in error["message"] and error["type"] == "BadGatewayError"
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/v1/models")).status_code == 502


async def test_upstream_timeout_is_504() -> None:
    async with stack(read_timeout_s=0.2) as st:
        response = await st.client.post(
            "/v1/chat/completions", json={**CHAT, "stream": False}, headers={"x-script": "slow"}
        )
        assert response.status_code == 504
        assert "timed out" in response.json()["error"]["message"]
        assert st.state.telemetry.in_flight_total == 0


async def test_coordinator_fields_are_stripped_and_the_rest_forwarded(s: Stack) -> None:
    body = {
        **CHAT,
        "agent_id": "agent-42",
        "priority": "hot",
        "latency_tolerance": "relaxed",
        "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "x_vendor": [1],
    }
    await s.client.post("/v1/chat/completions", json=body)
    forwarded = s.upstream.received[-1]
    assert "agent_id" not in forwarded and "latency_tolerance" not in forwarded and "priority" not in forwarded
    assert forwarded == {k: v for k, v in body.items() if k not in ("agent_id", "priority", "latency_tolerance")}
    # vLLM's own integer priority is passed through as is
    await s.client.post("/v1/chat/completions", json={**CHAT, "priority": 3})
    assert s.upstream.received[-1]["priority"] == 3


async def test_untouched_body_is_forwarded_byte_for_byte(s: Stack) -> None:
    raw = b'{"model":  "scripted-model", "messages": [{"role":"user","content":"\\u00e9"}], "stream": true}'
    await s.client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert s.upstream.bodies == [raw]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"json": {**CHAT, "agent_id": "body-agent"}, "headers": {"x-agent-id": "hdr"}}, "body-agent"),
        ({"json": CHAT, "headers": {"x-agent-id": "hdr-agent", "agent-session-id": "s1"}}, "hdr-agent"),
        ({"json": CHAT, "headers": {"agent-session-id": "sess-9"}}, "sess-9"),
        ({"json": CHAT, "headers": {}}, "anonymous"),
    ],
)
async def test_identity_precedence(s: Stack, kwargs: dict, expected: str) -> None:  # type: ignore[type-arg]
    await s.client.post("/v1/chat/completions", **kwargs)
    status = (await s.client.get("/status")).json()
    assert [a["agent_id"] for a in status["agents"]] == [expected]
    assert status["agents"][0]["requests"] == 1


async def test_path_identity_and_sessions_in_status(s: Stack) -> None:
    await s.client.post("/agents/path-agent/v1/chat/completions", json=CHAT, headers={"agent-session-id": "s-1"})
    agent = (await s.client.get("/status")).json()["agents"][0]
    assert agent["agent_id"] == "path-agent" and agent["sessions"] == ["s-1"]


async def test_keys_file_binds_key_to_agent(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# key agent\nkey-aaaaaaaaaaaaaaaa agent-a\nkey-bbbbbbbbbbbbbbbb agent-b\n")
    async with stack(keys_file=str(keys)) as st:
        no_key = await st.client.post("/v1/chat/completions", json=CHAT)
        assert no_key.status_code == 401
        auth = {"authorization": "Bearer key-aaaaaaaaaaaaaaaa"}
        ok = await st.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert ok.status_code == 200
        spoof = await st.client.post("/v1/chat/completions", json={**CHAT, "agent_id": "agent-b"}, headers=auth)
        assert spoof.status_code == 403 and "cannot act as 'agent-b'" in spoof.json()["error"]["message"]
        # the agent's key is never sent upstream
        assert all("authorization" not in h for h in st.upstream.headers)
        assert [a["agent_id"] for a in (await st.client.get("/status")).json()["agents"]] == ["agent-a"]


async def test_admin_token_guards_status_and_metrics() -> None:
    async with stack(admin_token="sekret") as st:
        for path in ("/status", "/metrics"):
            assert (await st.client.get(path)).status_code == 401
            assert (await st.client.get(path, headers={"authorization": "Bearer sekret"})).status_code == 200
        assert (await st.client.get("/healthz")).status_code == 200


async def test_metrics_and_status_count_traffic(s: Stack) -> None:
    await s.client.post("/v1/chat/completions", json=CHAT)
    await s.client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    text = (await s.client.get("/metrics")).text
    assert f'goose_sidecar_requests_total{{endpoint="chat/completions",model="{MODEL}",status="200"}} 1.0' in text
    assert 'goose_sidecar_errors_total{kind="bad_request"} 1.0' in text
    assert "goose_sidecar_time_to_first_byte_seconds_bucket" in text
    assert "goose_sidecar_in_flight" in text
    status = (await s.client.get("/status")).json()
    assert status["totals"]["requests"] == 1 and status["totals"]["errors"] == 1
    assert status["latency_ms"]["total"]["p50"] is not None
    assert status["upstreams"][0]["replicas"][0]["healthy"] is True
    assert status["upstreams"][0]["served_names"] == [MODEL]
    # the usage chunk of the answer is counted for its agent (and feeds least-attained-service ordering)
    agent = status["agents"][0]
    assert (agent["prompt_tokens"], agent["completion_tokens"]) == (12, 9)
    assert agent["attained_service_tokens"] > 20


async def test_model_names_with_several_upstreams() -> None:
    """An alias resolves to its served name; a served name is honoured; an unknown name goes unchanged to the
    default model's upstream, which answers for itself (vLLM: 404 "The model `X` does not exist.")."""
    from sidecar.config import load_config
    from sidecar.coordinator.app import build_app
    from tests.coordinator.scripted_upstream import Upstream

    a, b = Upstream(), Upstream()
    async with serve_app(a.app()) as ua, serve_app(b.app()) as ub:
        config = load_config(
            env={},
            overrides={
                "models": {
                    "large": {"replicas": [ua], "served_name": "big"},
                    "small": {"replicas": [ub], "served_name": "little"},
                },
                "scheduling.native_priority": "off",
            },
        )
        async with serve_app(build_app(config)) as url, httpx.AsyncClient(base_url=url) as client:
            await client.post("/v1/chat/completions", json={**CHAT, "model": "small"})
            assert b.received[-1]["model"] == "little" and a.received == []
            await client.post("/v1/chat/completions", json={**CHAT, "model": "big"})
            assert a.received[-1]["model"] == "big"
            await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
            assert a.received[-1]["model"] == "nope" and len(b.received) == 1
            models = (await client.get("/v1/models")).json()
            # both scripted upstreams serve the same id; then the names the coordinator resolves itself
            assert [m["id"] for m in models["data"]] == [MODEL, "auto", "large", "small"]
            assert models["data"][2]["root"] == "big"
