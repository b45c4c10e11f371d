"""Relay fidelity through the coordinator in front of a real vLLM: answers, streams with usage, forced tool calls,
vLLM's error bodies, and a client that leaves mid-stream aborting the request inside vLLM."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from sidecar.testing import wait_until
from tests.vllm.conftest import coordinator
from tests.vllm.helpers import READ_FILE, USER, chat, engine_load, families
from tests.vllm.servers import CATALOG, MAX_MODEL_LEN, SERVED, VllmServer

# Fields that differ between any two calls (ids, clocks); everything else must come back unchanged.
VOLATILE = {"id", "created"}


def stable(body: dict[str, Any]) -> dict[str, Any]:
    """A response without its per-call ids and timestamps (tool-call ids included)."""
    out = {k: v for k, v in body.items() if k not in VOLATILE}
    for choice in out.get("choices", []):
        for call in (choice.get("message") or {}).get("tool_calls") or []:
            call.pop("id", None)
    return out


async def sse_events(response: httpx.Response) -> list[Any]:
    events = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def streamed_text(events: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


async def test_answers_come_back_unchanged(vllm_prio2: VllmServer) -> None:
    body = chat(12, temperature=0)
    async with httpx.AsyncClient(base_url=vllm_prio2.url, timeout=120) as direct:
        expected = (await direct.post("/v1/chat/completions", json=body)).json()
    async with coordinator(vllm_prio2.url) as (client, _):
        got = await client.post("/v1/chat/completions", json=body)
        assert got.status_code == 200
        assert stable(got.json()) == stable(expected)
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == [*CATALOG]


async def test_streaming_with_usage(vllm_prio2: VllmServer) -> None:
    body = chat(24, temperature=0, stream=True, stream_options={"include_usage": True})
    async with (
        httpx.AsyncClient(base_url=vllm_prio2.url, timeout=120) as direct,
        direct.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        expected = await sse_events(response)
    async with (
        coordinator(vllm_prio2.url) as (client, _),
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await sse_events(response)
    # Same text and usage; never the same number of frames (vLLM merges tokens when it falls behind).
    assert events[-1] == "[DONE]" and expected[-1] == "[DONE]"
    assert streamed_text(events) == streamed_text(expected) != ""
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"] == expected[-2]["usage"]
    assert usage["usage"]["completion_tokens"] == 24
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "read_file"}}], ids=["required", "named"]
)
async def test_forced_tool_calls_come_back_unchanged(vllm_prio2: VllmServer, tool_choice: Any) -> None:
    """A random model emits a tool call only when forced, and not with every seed: find a seed with which vLLM
    answers with a tool call directly, then the same request through the coordinator must give the same one."""
    base = {"model": SERVED, "messages": USER, "tools": [READ_FILE], "tool_choice": tool_choice, "max_tokens": 120}
    async with httpx.AsyncClient(base_url=vllm_prio2.url, timeout=120) as direct:
        for seed in range(12):
            expected = (await direct.post("/v1/chat/completions", json={**base, "seed": seed})).json()
            if expected["choices"][0]["message"].get("tool_calls"):
                break
        else:
            raise AssertionError(f"no seed made vLLM call a tool with tool_choice={tool_choice!r}")
    async with coordinator(vllm_prio2.url) as (client, _):
        got = (await client.post("/v1/chat/completions", json={**base, "seed": seed})).json()
        assert stable(got) == stable(expected)
        assert got["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "read_file"
        streamed = {**base, "seed": seed, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", "/v1/chat/completions", json=streamed) as response:
            events = await sse_events(response)
    names = [
        call["function"]["name"]
        for event in events
        if isinstance(event, dict)
        for choice in event["choices"]
        for call in choice["delta"].get("tool_calls") or []
        if call.get("function", {}).get("name")
    ]
    assert names and set(names) == {"read_file"}
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] > 0


ERRORS = {
    "unknown model": {**chat(), "model": "gpt-4"},
    "context too long": {**chat(), "messages": [{"role": "user", "content": "x " * (2 * MAX_MODEL_LEN)}]},
    "max_tokens too large": {**chat(), "max_tokens": 2 * MAX_MODEL_LEN},
}


@pytest.mark.parametrize("case", list(ERRORS))
async def test_vllms_errors_pass_through(vllm_prio2: VllmServer, case: str) -> None:
    async with httpx.AsyncClient(base_url=vllm_prio2.url, timeout=120) as direct:
        expected = await direct.post("/v1/chat/completions", json=ERRORS[case])
    assert expected.status_code in (400, 404)
    async with coordinator(vllm_prio2.url) as (client, _):
        got = await client.post("/v1/chat/completions", json=ERRORS[case])
    assert got.status_code == expected.status_code
    assert got.json() == expected.json()


async def test_a_client_that_leaves_mid_stream_is_aborted_inside_vllm(vllm_prio2: VllmServer) -> None:
    request_id = f"tier-abort-{uuid.uuid4().hex[:12]}"
    body = chat(1500, stream=True)
    async with httpx.AsyncClient(timeout=120) as probe:
        before = families((await probe.get(f"{vllm_prio2.url}/metrics")).text)
        async with coordinator(vllm_prio2.url) as (client, _):
            headers = {"x-request-id": request_id}
            async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                frames = 0
                async for line in response.aiter_lines():
                    frames += line.startswith("data: ")
                    if frames >= 3:
                        break  # leave after a few tokens of 1500

            async def aborted() -> bool:
                return f"{request_id} aborted" in vllm_prio2.log_text()

            await wait_until(aborted, f"vLLM to log the abort of {request_id}", limit_s=120)
        after = families((await probe.get(f"{vllm_prio2.url}/metrics")).text)
        assert await engine_load(probe, vllm_prio2.url) == 0
    # An abort is not a success: vLLM's finished-request counters did not move for it.
    successes = {s[1]["finished_reason"]: s[2] for s in after["vllm:request_success"] if s[0].endswith("_total")}
    previous = {s[1]["finished_reason"]: s[2] for s in before["vllm:request_success"] if s[0].endswith("_total")}
    assert successes == previous
