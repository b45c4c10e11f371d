"""Clients nobody on this team wrote, and our own fleet, through the coordinator to a real vLLM: Goose's provider
code (`goose-sdk`) and a two-agent `goose-sidecar fleet` run to its end."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import goose

from tests.vllm.conftest import coordinator
from tests.vllm.servers import SERVED, VllmServer


async def test_goose_provider_through_the_coordinator(vllm_prio2: VllmServer) -> None:
    """Goose's OpenAI provider completes, streams to its end chunk and lists the model; its tools reach vLLM (which
    needs --enable-auto-tool-choice for that), and the coordinator counts no error."""
    async with coordinator(vllm_prio2.url) as (client, _):
        provider = goose.openai_provider("dummy-key", f"{str(client.base_url).rstrip('/')}/v1")
        config = goose.ProviderModelConfig(model_name=SERVED, request_headers={"X-Agent-Id": "goose-1"})
        user = goose.ProviderMessage(role=goose.MessageRole.USER, content=[goose.MessageContent.TEXT("fix it")])
        tool = goose.ProviderTool(
            name="read_file",
            description="read a file",
            input_schema_json=json.dumps({"type": "object", "properties": {"path": {"type": "string"}}}),
        )
        completion = await provider.complete(config, "You are a coding agent.", [user], [tool])
        assert completion.content, "an empty completion"
        stream = await provider.stream(config, "You are a coding agent.", [user], [tool])
        chunks: list[str] = []
        while (chunk := await stream.next_chunk()) is not None:
            chunks.append("end" if chunk.is_end_chunk() else "error" if chunk.is_error_chunk() else "other")
            if chunk.is_end_chunk() or chunk.is_error_chunk():
                break
        assert chunks and chunks[-1] == "end", chunks
        models = [m.name if hasattr(m, "name") else str(m) for m in await provider.list_models()]
        assert SERVED in " ".join(models)
        status = (await client.get("/status")).json()
    assert "goose-1" in [a["agent_id"] for a in status["agents"]]
    assert status["totals"]["errors"] == 0


async def test_a_two_agent_fleet_runs_to_the_end(vllm_prio2: VllmServer, tmp_path: Path) -> None:
    """`goose-sidecar fleet --agents 2` (real sidecars over MCP, real projects) against vLLM through a coordinator.
    A random model rarely calls a tool, so the agents end early; what is checked is that every call succeeds."""
    output = tmp_path / "fleet.json"
    async with coordinator(vllm_prio2.url) as (client, _):
        url = str(client.base_url).rstrip("/")
        argv = [sys.executable, "-m", "sidecar.cli", "fleet", "--agents", "2", "--coordinator", url]
        argv += ["--model", SERVED, "--max-turns", "3", "--no-live", "--output", str(output)]
        argv += ["--workdir", str(tmp_path / "agents")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_SIDECAR_")}
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await process.communicate()
        status = (await client.get("/status")).json()
    text = out.decode(errors="replace")
    assert process.returncode == 0, text
    run = json.loads(output.read_text())
    summary = run["summary"]
    assert summary["agents"] == 2 and summary["calls"] >= 2 and summary["failed_calls"] == 0, text
    assert all(agent["error"] is None for agent in run["run"]["agents"]), text
    assert status["totals"]["errors"] == 0
