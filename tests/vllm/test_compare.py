"""The simulator against real vLLM: one short script of requests sent to both, comparing what the coordinator and
the dashboard depend on: status codes, error bodies (shape and text), the shape of answers (fields, in order),
priority under fcfs, the metric families and their labels (with `cache_config_info`'s KV labels), and the
scheduling outcome. Not timings, not SSE frame counts, not the (random) model's text. Where the two disagree,
vLLM is right and the simulator changes (DESIGN.md, "The simulator")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.serving import serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings
from tests.vllm.helpers import COLD, HOT, USER, chat, hot_rank
from tests.vllm.servers import MAX_MODEL_LEN, SERVED, VllmServer

PROFILE = "qwen2.5-coder-32b-a100"
# The CPU server's shape (vllm_cpu.md: block size 128 on CPU; 1 GiB of KV is 8192 blocks of this model).
SHAPE = {"max_model_len": MAX_MODEL_LEN, "max_num_seqs": 2, "block_size": 128, "num_gpu_blocks": 8192}
# Labels whose values are an enumeration (the same on both) rather than a measurement.
ENUMERATED = ("reason", "finished_reason", "source", "sleep_state", "mode", "outcome", "request_type", "engine")
KV_LABELS = ("block_size", "num_gpu_blocks", "kv_cache_size_tokens", "kv_cache_max_concurrency")
KV_LABELS += ("enable_prefix_caching", "cache_dtype")

ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "unknown model": ("/v1/chat/completions", {**chat(), "model": "gpt-4"}),
    "context too long": ("/v1/chat/completions", {**chat(), "messages": [{"role": "user", "content": "x " * 9000}]}),
    "completion too long": ("/v1/completions", {"model": SERVED, "prompt": "x " * 9000, "max_tokens": 4}),
    "max_tokens too large": ("/v1/chat/completions", {**chat(), "max_tokens": MAX_MODEL_LEN + 1}),
    "max_completion_tokens too large": (
        "/v1/chat/completions",
        {"model": SERVED, "messages": USER, "max_completion_tokens": 2 * MAX_MODEL_LEN},
    ),
    "max_tokens 0": ("/v1/chat/completions", {**chat(), "max_tokens": 0}),
    "stream_options without stream": ("/v1/chat/completions", {**chat(), "stream_options": {"include_usage": True}}),
    "no messages": ("/v1/chat/completions", {"model": SERVED}),
}


@asynccontextmanager
async def simulator(policy: str) -> AsyncIterator[str]:
    settings = SimSettings(
        profile=PROFILE,
        profile_overrides={PROFILE: SHAPE},
        served_model_names=[SERVED],
        scheduling_policy=policy,  # type: ignore[arg-type]
        # The comparison is of shapes and of the order calls finish in (counted in engine steps, `hot_rank`), not
        # of timings: at four times real time a cold call still takes ~2 s, far longer than the client's polls,
        # and each scheduling run is ~20 s shorter.
        time_scale=4.0,
    )
    async with serve_app(build_sim_app(settings)) as url:
        yield url


async def script(base: str) -> dict[str, Any]:
    """The requests, against one server; returns everything the comparison looks at."""
    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        for name, (path, body) in ERRORS.items():
            response = await client.post(path, json=body)
            seen[f"error: {name}"] = (response.status_code, response.json())
        for priority in (5, -3, 1_000_000):
            response = await client.post("/v1/chat/completions", json=chat(4, priority=priority))
            seen[f"priority {priority}"] = response.status_code
        answered = await client.post("/v1/chat/completions", json=chat(4, temperature=0))
        seen["chat response shape"] = shape(answered.json())
        completed = await client.post("/v1/completions", json={"model": SERVED, "prompt": "def f(", "max_tokens": 3})
        seen["completion response shape"] = shape(completed.json())
        streamed = await client.post("/v1/chat/completions", json=chat(4, stream=True))
        seen["stream"] = (streamed.status_code, streamed.headers["content-type"].split(";")[0])
        seen["metrics"] = metric_shape((await client.get("/metrics")).text)
        seen["health"] = (await client.get("/health")).status_code
        seen["version"] = (await client.get("/version")).json()
    return seen


def shape(value: Any) -> Any:
    """A JSON value's structure: keys (in order) and leaf types, a list by its first item."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def metric_shape(text: str) -> dict[str, Any]:
    """Every `vllm:` family with its type and label names; enumerated label values; the KV labels of
    `cache_config_info`."""
    shape: dict[str, Any] = {}
    parsed = [f for f in _parse(text) if f.name.startswith("vllm:")]
    for family in parsed:
        labels = sorted({k for s in family.samples for k in s.labels if k not in ("le", "quantile")})
        values = {k: sorted({s.labels[k] for s in family.samples if k in s.labels}) for k in ENUMERATED}
        shape[family.name] = (family.type, labels, {k: v for k, v in values.items() if v})
    info = next(f for f in parsed if f.name == "vllm:cache_config_info")
    shape["cache_config_info KV"] = {k: info.samples[0].labels.get(k) for k in KV_LABELS}
    return shape


def _parse(text: str) -> list[Any]:
    return list(text_string_to_metric_families(text))


def differences(sim: dict[str, Any], real: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(sim) | set(real)):
        if key == "metrics":
            out += [f"metric {k}: sim {sim[key].get(k)} vLLM {real[key].get(k)}" for k in _diff(sim[key], real[key])]
        elif sim.get(key) != real.get(key):
            out.append(f"{key}: sim {sim.get(key)!r} vLLM {real.get(key)!r}")
    return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@pytest.mark.parametrize("policy", ["priority", "fcfs"])
async def test_the_simulator_answers_as_vllm_does(vllm_prio2: VllmServer, vllm_fcfs2: VllmServer, policy: str) -> None:
    server = vllm_prio2 if policy == "priority" else vllm_fcfs2
    real = await script(server.url)
    async with simulator(policy) as url:
        sim = await script(url)
    found = differences(sim, real)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("policy", ["priority", "fcfs"])
async def test_the_simulator_schedules_as_vllm_does(
    vllm_prio2: VllmServer, vllm_fcfs2: VllmServer, policy: str
) -> None:
    """Two slots, four long cold calls, then a short hot one: the hot call's finishing rank (priority: right after
    the two running; fcfs: last, its priority ignored)."""
    server = vllm_prio2 if policy == "priority" else vllm_fcfs2
    async with httpx.AsyncClient(timeout=300) as client:
        real_rank, real_order = await hot_rank(client, server.url, server.url, 4, 2, COLD, HOT)
        async with simulator(policy) as url:
            sim_rank, sim_order = await hot_rank(client, url, url, 4, 2, COLD, HOT)
    assert sim_rank == real_rank, f"sim {sim_order}, vLLM {real_order}"
    assert real_rank == (3 if policy == "priority" else 5)
