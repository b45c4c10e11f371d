"""The composition root (`sidecar.stack`) and `goose-sidecar up` with the embedded simulator, as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from sidecar.config import ConfigError, load_config
from sidecar.sim.settings import SimSettings
from sidecar.stack import SimModel, embedded_stack, in_front_of, simulators
from sidecar.testing import wait_until

CHAT = {"model": "large", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


async def test_simulators_serve_large_and_small_in_this_loop() -> None:
    settings = SimSettings(time_scale=1000, profile_overrides={"qwen2.5-coder-7b-a100": {"num_gpu_blocks": 512}})
    async with simulators(settings) as models, httpx.AsyncClient(timeout=10) as client:
        assert [(m.alias, m.served_name) for m in models] == [
            ("large", "Qwen/Qwen2.5-Coder-32B-Instruct"),
            ("small", "Qwen/Qwen2.5-Coder-7B-Instruct"),
        ]
        assert all(isinstance(m, SimModel) and m.url.startswith("http://127.0.0.1:") for m in models)
        assert len({m.url for m in models}) == 2
        for model in models:
            listed = (await client.get(f"{model.url}/v1/models")).json()
            assert [m["id"] for m in listed["data"]] == [model.served_name]
            body = {"model": model.served_name, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
            answer = await client.post(f"{model.url}/v1/chat/completions", json=body)
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] <= 5
            assert model.clock() > 0  # the engine's simulated clock, which served that call
        metrics = (await client.get(f"{models[1].url}/metrics")).text
        assert 'num_gpu_blocks="512"' in metrics  # the 7B override applied to the small model only
    async with httpx.AsyncClient(timeout=1) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{models[0].url}/health")  # stopped once the block exits


def test_in_front_of_replaces_the_upstreams_and_declares_native_priority_only_when_asked() -> None:
    config = load_config(env={}, overrides={"models": {"other": {"replicas": ["http://10.0.0.1:1"]}}})
    models = [SimModel("large", "L", "http://127.0.0.1:1", float), SimModel("small", "S", "http://127.0.0.1:2", float)]
    plain = in_front_of(config, models)
    assert list(plain.models) == ["large", "small"]
    assert plain.models["small"].replicas == ["http://127.0.0.1:2"] and plain.models["small"].served_name == "S"
    assert plain.models["large"].native_priority is None
    assert in_front_of(config, models, native_priority=True).models["large"].native_priority is True
    with pytest.raises(ConfigError):
        in_front_of(config, [SimModel("large", "L", "not a url", float)])


async def test_embedded_stack_answers_through_the_coordinator_and_stops_everything() -> None:
    config = load_config(env={}, overrides={"scheduling.policy": "fcfs"})
    async with embedded_stack(config, SimSettings(time_scale=200)) as stack:
        assert stack.config.scheduling.policy == "fcfs" and set(stack.config.models) == {"large", "small"}
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            answer = await client.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == stack.models[0].served_name
        assert stack.app.state.coordinator is not None
    async with httpx.AsyncClient(timeout=1) as client:
        for url in [stack.url, *(m.url for m in stack.models)]:
            with pytest.raises(httpx.TransportError):
                await client.get(f"{url}/healthz")


async def test_up_without_an_upstream_embeds_the_simulator_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_SIDECAR_")}
    env["GOOSE_SIDECAR_SIM_TIME_SCALE"] = "200"
    argv = [sys.executable, "-m", "sidecar.cli", "up", "--port", "0"]
    process = await asyncio.create_subprocess_exec(*argv, cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stderr is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("coordinator: ")):
            line = (await process.stderr.readline()).decode()
            assert line, f"up exited before serving: {''.join(lines)}"
            lines.append(line)
        url = lines[-1].split()[1]
        assert sum(line.startswith("simulator: ") for line in lines) == 2, lines
        assert any("native priority on" in line for line in lines), lines  # the simulators run vLLM's priority
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await wait_until(lambda: _ready(client), "the coordinator to be ready")
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        process.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(process.stderr.read(), 60)).decode()
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says what stopped it.
        assert await asyncio.wait_for(process.wait(), 60) == -signal.SIGTERM
        assert "Traceback" not in rest, rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
