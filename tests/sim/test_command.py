"""`goose-sidecar sim` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from sidecar.serving import free_port


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
