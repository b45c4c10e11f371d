"""The simulator over real loopback HTTP: vLLM's framing, errors, metrics, disconnects and injected faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from sidecar.serving import serve_app
from sidecar.sim.app import SimServer, build_sim_app
from sidecar.sim.settings import SimSettings
from sidecar.testing import wait_until
from tests.sim.workspace import SIDECAR_TOOLS, tool_schemas

MODEL = "Qwen/Qwen2.5-Coder-32B-Instruct"
TOOLS = tool_schemas(SIDECAR_TOOLS, "sidecar__")
LISTING = "./ (3 entries, depth 2)\npkg/\npkg/calc.py\ntests/\ntests/test_calc.py"


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    call = {"id": "c0", "type": "function", "function": {"name": "sidecar__list_dir", "arguments": '{"path": "."}'}}
    messages = [
        {"role": "user", "content": "Fix the failing tests."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c0", "content": LISTING},
    ]
    return {"model": MODEL, "messages": messages, "tools": TOOLS, "stream": stream, **extra}


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, SimServer]]:
    app = build_sim_app(SimSettings(**{"time_scale": 1000.0, "seed": 3, **settings}))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client, app.state.sim


async def sse_frames(response: httpx.Response) -> list[str]:
    frames = []
    async for line in response.aiter_lines():
        if line:
            assert line.startswith("data: "), line
            frames.append(line[len("data: ") :])
    return frames


async def test_streaming_framing_is_vllms() -> None:
    async with running() as (client, _):
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat(True, stream_options={"include_usage": True})
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            frames = await sse_frames(response)
        whole = (await client.post("/v1/chat/completions", json=chat())).json()
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    for c in chunks:
        assert set(c) <= {"id", "object", "created", "model", "choices", "usage"}
        assert c["object"] == "chat.completion.chunk" and c["model"] == MODEL and isinstance(c["created"], int)
    body, usage_chunk = chunks[:-1], chunks[-1]
    assert body[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    for c in body[:-1]:
        (choice,) = c["choices"]
        assert set(choice) == {"index", "delta", "logprobs", "finish_reason"} and choice["finish_reason"] is None
    final = body[-1]["choices"][0]
    assert final["finish_reason"] == "tool_calls" and final["stop_reason"] is None
    # Content deltas, then the call: first delta with index/id/type/name, then argument fragments.
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in body)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in body if "tool_calls" in c["choices"][0]["delta"]]
    assert set(calls[0]) == {"index", "id", "type", "function"} and calls[0]["type"] == "function"
    arguments = "".join(d["function"].get("arguments", "") for d in calls)
    # The stream carries exactly the non-streaming answer (temperature 0: same request, same answer).
    message = whole["choices"][0]["message"]
    assert content == message["content"]
    (tool_call,) = message["tool_calls"]
    assert (calls[0]["id"], calls[0]["function"]["name"], arguments) == (
        tool_call["id"],
        tool_call["function"]["name"],
        tool_call["function"]["arguments"],
    )
    assert tool_call["function"]["name"] == "sidecar__read_file"
    assert json.loads(arguments)["path"] in ("pkg/calc.py", "tests/test_calc.py")
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == whole["usage"]["completion_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 0
    assert whole["object"] == "chat.completion" and whole["choices"][0]["finish_reason"] == "tool_calls"


async def test_no_usage_chunk_unless_asked_and_text_ends_with_stop() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a commit message"}], "stream": True}
    async with running() as (client, _), client.stream("POST", "/v1/chat/completions", json=body) as response:
        frames = await sse_frames(response)
    chunks = [json.loads(f) for f in frames[:-1]]
    assert all(c["choices"] for c in chunks) and "usage" not in chunks[-1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_repeated_prompt_hits_the_prefix_cache() -> None:
    async with running() as (client, server):
        first = (await client.post("/v1/chat/completions", json=chat())).json()
        second = (await client.post("/v1/chat/completions", json=chat())).json()
        metrics = (await client.get("/metrics")).text
    prompt = first["usage"]["prompt_tokens"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == (prompt - 1) // 16 * 16
    assert first["choices"] == second["choices"]
    hits = server.engine.counters.prefix_cache_hits
    assert f'vllm:prefix_cache_hits_total{{engine="0",model_name="{MODEL}"}} {float(hits)}' in metrics


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({**chat(), "model": "gpt-4"}, 404, "The model `gpt-4` does not exist."),
        ({**chat(), "stream_options": {"include_usage": True}}, 400, "Stream options can only be defined"),
        ({**chat(), "max_tokens": 40_000}, 400, "max_tokens=40000 cannot be greater than max_model_len=32768. "),
        ({**chat(), "max_completion_tokens": 40_000}, 400, "(parameter=max_completion_tokens, value=40000)"),
        (
            {**chat(), "messages": [{"role": "user", "content": "x " * 40_000}]},
            400,
            "However, your prompt contains at least 32769 input tokens, which exceeds this limit",
        ),
        ({**chat(), "max_tokens": 0}, 400, "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"),
    ],
)
async def test_errors_have_vllms_shape(body: dict[str, Any], status: int, message: str) -> None:
    async with running(scheduling_policy="fcfs") as (client, _):
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert error["type"] == {400: "BadRequestError", 404: "NotFoundError"}[status]
    assert message in error["message"]


async def test_a_missing_field_gets_fastapis_validation_error() -> None:
    async with running() as (client, _):
        response = await client.post("/v1/chat/completions", json={"model": MODEL})
    assert response.status_code == 400
    message = "1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', 'msg': 'Field required', "
    message += "'input': '<dict of 1 items>'}"
    error = {"message": message, "type": "Bad Request", "param": "body.messages", "code": 400}
    assert response.json() == {"error": error}


async def test_invalid_json_is_a_400() -> None:
    async with running() as (client, _):
        response = await client.post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["type"] == "BadRequestError"


@pytest.mark.parametrize("policy", ["priority", "fcfs"])
async def test_every_policy_accepts_priorities(policy: str) -> None:
    """vLLM V1 accepts `priority` under fcfs too, and ignores it (no V0-style 400)."""
    async with running(scheduling_policy=policy) as (client, _):
        for priority in (-5, 2, 1_000_000):
            response = await client.post("/v1/chat/completions", json={**chat(), "priority": priority})
            assert response.status_code == 200, response.text


async def test_models_health_version_and_api_key() -> None:
    async with running(api_key="sekret") as (client, _):
        assert (await client.get("/v1/models")).status_code == 401
        models = (await client.get("/v1/models", headers={"Authorization": "Bearer sekret"})).json()
        assert [m["id"] for m in models["data"]] == [MODEL] and models["data"][0]["max_model_len"] == 32768
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/version")).json() == {"version": "0.32.0"}
        assert (await client.get("/metrics")).status_code == 200  # stays open, as in vLLM


async def test_metrics_use_vllms_names_and_labels() -> None:
    async with running() as (client, _):
        await client.post("/v1/chat/completions", json=chat())
        text = (await client.get("/metrics")).text
    labels = f'engine="0",model_name="{MODEL}"'
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
    ):
        assert f"{name}{{{labels}}}" in text, name
    assert f"vllm:time_to_first_token_seconds_count{{{labels}}} 1.0" in text
    assert 'block_size="16"' in text and 'num_gpu_blocks="2240"' in text and "vllm:cache_config_info{" in text
    assert f'kv_cache_size_tokens="{2240 * 16}"' in text  # the KV capacity the coordinator can read
    assert "gpu_cache_usage_perc" not in text  # gone from vLLM since 0.10
    for family in ("num_requests_waiting_by_reason", "prompt_tokens_cached_total", "admission_rejections_total"):
        assert f"vllm:{family}" in text, family
    assert f"vllm:request_prefill_kv_computed_tokens_count{{{labels}}} 1.0" in text
    assert f'vllm:request_success_total{{{labels[:-1]}",finished_reason="stop"' not in text  # label order
    assert 'finished_reason="stop"' in text


async def test_disconnect_aborts_and_frees_kv() -> None:
    body = chat(True, max_tokens=5000, ignore_eos=True)
    async with running(time_scale=1.0) as (client, server):
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line:
                    break  # the first chunk arrived: the request is running
            assert server.engine.num_running == 1 and server.engine.kv.usage > 0
        await wait_until(lambda: server.engine.counters.finished.get("abort") == 1, "abort")
        assert server.engine.kv.usage == 0.0 and not server.engine.has_work()


async def test_non_streaming_disconnect_frees_kv() -> None:
    async with running(time_scale=1.0, fault_stall_s=0) as (client, server):
        task = asyncio.create_task(client.post("/v1/chat/completions", json=chat(max_tokens=5000, ignore_eos=True)))
        await wait_until(lambda: server.engine.num_running == 1, "running")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: not server.engine.has_work() and server.engine.kv.usage == 0.0, "freed")


async def fault_stream(client: httpx.AsyncClient, fault: str) -> list[str]:
    headers = {"X-Sim-Fault": fault}
    async with client.stream("POST", "/v1/chat/completions", json=chat(True), headers=headers) as response:
        assert response.status_code == 200
        return await sse_frames(response)


@pytest.mark.parametrize("status", [500, 503])
async def test_fault_header_http_errors(status: int) -> None:
    async with running() as (client, server):
        response = await client.post("/v1/chat/completions", json=chat(), headers={"X-Sim-Fault": str(status)})
        assert response.status_code == status and response.json()["error"]["code"] == status
        assert server.engine.counters.steps == 0  # refused before reaching the engine


async def test_fault_error_frame_in_band_after_200() -> None:
    async with running() as (client, server):
        frames = await fault_stream(client, "error_frame")
        await wait_until(lambda: not server.engine.has_work(), "aborted")
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])
    assert set(error) == {"error"} and error["error"]["code"] == 500
    assert len(frames) > 3 and all("choices" in json.loads(f) for f in frames[:-2])
    assert server.engine.kv.usage == 0.0


async def test_fault_drop_closes_the_connection_mid_stream() -> None:
    async with running() as (client, server):
        with pytest.raises(httpx.RemoteProtocolError):
            await fault_stream(client, "drop")
        await wait_until(lambda: not server.engine.has_work() and server.engine.kv.usage == 0.0, "freed")


async def test_fault_stall_stops_sending_until_the_client_gives_up() -> None:
    async with running(fault_stall_s=60) as (client, server):
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat(True), headers={"X-Sim-Fault": "stall"}, timeout=0.5
            ) as response:
                await sse_frames(response)
        await wait_until(
            lambda: (
                server.engine.counters.finished.get("abort", 0) + server.engine.counters.finished.get("stop", 0) == 1
            ),
            "done",
        )
        assert server.engine.kv.usage == 0.0


async def test_a_short_stall_then_carries_on() -> None:
    async with running(fault_stall_s=0.05) as (client, _):
        frames = await fault_stream(client, "stall")
    assert frames[-1] == "[DONE]" and json.loads(frames[-2])["choices"][0]["finish_reason"] == "tool_calls"


async def test_fault_rates_from_settings_and_unknown_header() -> None:
    async with running(fault_503_rate=1.0) as (client, _):
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 503
        bad = await client.post("/v1/chat/completions", json=chat(), headers={"X-Sim-Fault": "meteor"})
        assert bad.status_code == 400 and "meteor" in bad.json()["error"]["message"]


async def test_completions_endpoint_streams_and_not() -> None:
    body = {"model": MODEL, "prompt": "def add(a, b):", "max_tokens": 12}
    async with running() as (client, _):
        whole = (await client.post("/v1/completions", json=body)).json()
        async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            frames = await sse_frames(response)
    assert whole["object"] == "text_completion" and whole["usage"]["completion_tokens"] == 12
    assert whole["choices"][0]["finish_reason"] == "length"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]


async def test_two_sims_in_one_process_keep_their_own_state() -> None:
    async with running() as (a, server_a), running(seed=1) as (b, server_b):
        await a.post("/v1/chat/completions", json=chat())
        text_b = (await b.get("/metrics")).text
    assert server_a.engine.counters.steps > 0 and server_b.engine.counters.steps == 0
    assert 'vllm:generation_tokens_total{engine="0",model_name="' + MODEL + '"} 0.0' in text_b


async def test_unknown_routes_answer_like_fastapi() -> None:
    async with running() as (client, _):
        missing = await client.get("/v1/nope")
        wrong_method = await client.get("/v1/chat/completions")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"detail": "Method Not Allowed"})


async def test_an_engine_crash_fails_requests_instead_of_hanging() -> None:
    async with running() as (client, server):

        def crash() -> None:
            raise RuntimeError("simulated bug")

        server.engine.step = crash  # type: ignore[method-assign,assignment]
        async with client.stream("POST", "/v1/chat/completions", json=chat(True)) as response:
            frames = await sse_frames(response)
        assert frames[-1] == "[DONE]" and "simulated bug" in json.loads(frames[-2])["error"]["message"]
        assert (await client.get("/health")).status_code == 503
        later = await client.post("/v1/chat/completions", json=chat())
        assert later.status_code == 500 and later.json()["error"]["type"] == "InternalServerError"


async def test_reset_prefix_cache_forgets_cached_blocks() -> None:
    async with running() as (client, _):
        await client.post("/v1/chat/completions", json=chat())
        assert (await client.post("/reset_prefix_cache")).status_code == 200
        again = (await client.post("/v1/chat/completions", json=chat())).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize(("fault", "outcome"), [("error_frame", 500), ("stall", 200), ("drop", "dropped")])
async def test_faults_without_streaming(fault: str, outcome: int | str) -> None:
    async with running(fault_stall_s=0.05) as (client, server):
        try:
            response = await client.post("/v1/chat/completions", json=chat(), headers={"X-Sim-Fault": fault})
            got: int | str = response.status_code
        except httpx.RemoteProtocolError:
            got = "dropped"
        assert got == outcome
        await wait_until(lambda: not server.engine.has_work() and server.engine.kv.usage == 0.0, "idle")
