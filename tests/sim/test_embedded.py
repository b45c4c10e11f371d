"""`run_embedded` (for `goose-sidecar up`) and `goose-sidecar sim` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from sidecar.serving import free_port
from sidecar.sim.embedded import EmbeddedModel, run_embedded
from sidecar.sim.settings import SimSettings


async def test_run_embedded_serves_large_and_small_in_this_loop() -> None:
    settings = SimSettings(time_scale=1000, profile_overrides={"qwen2.5-coder-7b-a100": {"num_gpu_blocks": 512}})
    async with run_embedded(settings) as models, httpx.AsyncClient(timeout=10) as client:
        assert [(m.alias, m.served_name) for m in models] == [
            ("large", "Qwen/Qwen2.5-Coder-32B-Instruct"),
            ("small", "Qwen/Qwen2.5-Coder-7B-Instruct"),
        ]
        assert all(isinstance(m, EmbeddedModel) and m.url.startswith("http://127.0.0.1:") for m in models)
        assert len({m.url for m in models}) == 2
        for model in models:
            listed = (await client.get(f"{model.url}/v1/models")).json()
            assert [m["id"] for m in listed["data"]] == [model.served_name]
            body = {"model": model.served_name, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
            answer = await client.post(f"{model.url}/v1/chat/completions", json=body)
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] <= 5
        metrics = (await client.get(f"{models[1].url}/metrics")).text
        assert 'num_gpu_blocks="512"' in metrics  # the 7B override applied to the small model only
    async with httpx.AsyncClient(timeout=1) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{models[0].url}/health")  # stopped once the block exits


def test_sim_command_serves_until_stopped() -> None:
    port = free_port()
    argv = [sys.executable, "-m", "sidecar.cli", "sim", "--port", str(port), "--profile", "qwen2.5-coder-7b-a100"]
    argv += ["--scheduling-policy", "fcfs", "--time-scale", "100", "--served-model-name", "coder", "alias"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        models = httpx.get(f"{url}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["coder", "alias"]
        body = {"model": "alias", "messages": [{"role": "user", "content": "hi"}], "priority": 1}
        accepted = httpx.post(f"{url}/v1/chat/completions", json=body)  # fcfs ignores priority, as vLLM V1
        assert accepted.status_code == 200, accepted.text
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says how it ended.
    assert process.returncode in (0, -signal.SIGTERM), err
    assert b"sim_starting" in err and b"Finished server process" in err
