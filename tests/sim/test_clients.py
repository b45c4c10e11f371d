"""Real clients against the simulator: the official `openai` package and goose-sdk's OpenAI provider each run
a tool-calling conversation that fixes a real project, over loopback HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import goose
import openai
import pytest

from sidecar.serving import serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings
from tests.sim.workspace import SIDECAR_TOOLS, Executor, make_project, tool_schemas

MODEL = "Qwen/Qwen2.5-Coder-32B-Instruct"
SYSTEM = "You are a coding agent."
TASK = "Fix the failing tests."


@asynccontextmanager
async def sim(**settings: Any) -> AsyncIterator[str]:
    app = build_sim_app(SimSettings(**{"time_scale": 1000.0, "seed": 3, **settings}))
    async with serve_app(app) as url:
        yield url


def suite_passes(root: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, capture_output=True
    )
    return done.returncode == 0


async def test_openai_client_streams_a_tool_calling_episode(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    execute = Executor(root)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK}]
    async with sim() as url, openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
        for _ in range(45):
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=messages,  # type: ignore[arg-type]
                tools=tool_schemas(SIDECAR_TOOLS, "sidecar__"),  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"priority": 1},
            )
            content, calls, finish, usage = "", {}, None, None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    content += choice.delta.content or ""
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = delta.id or call["id"]
                        if delta.function is not None:
                            call["name"] += delta.function.name or ""
                            call["arguments"] += delta.function.arguments or ""
            assert usage is not None and usage.prompt_tokens_details is not None
            tool_calls = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ]
            messages.append(
                {"role": "assistant", "content": content or None, **({"tool_calls": tool_calls} if calls else {})}
            )
            if not calls:
                assert finish == "stop"
                break
            assert finish == "tool_calls"
            for c in calls.values():
                json.loads(c["arguments"])  # complete JSON once reassembled from fragments
                messages.append(
                    {"role": "tool", "tool_call_id": c["id"], "content": execute(c["name"], c["arguments"])}
                )
        else:
            raise AssertionError("the episode did not end")
    assert suite_passes(root)


async def test_openai_client_non_streaming_and_errors() -> None:
    async with (
        sim(scheduling_policy="fcfs") as url,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL]
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": TASK}],
            tools=tool_schemas(SIDECAR_TOOLS, "sidecar__"),  # type: ignore[arg-type]
        )
        (call,) = completion.choices[0].message.tool_calls or []
        assert completion.choices[0].finish_reason == "tool_calls" and call.function.name.startswith("sidecar__")
        with pytest.raises(openai.NotFoundError, match=re.escape("The model `nope` does not exist.")):
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        # Under fcfs vLLM V1 accepts a priority and ignores it.
        ignored = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"priority": 2}
        )
        assert ignored.choices[0].finish_reason in ("stop", "length", "tool_calls")


def goose_tools() -> list[goose.ProviderTool]:
    return [
        goose.ProviderTool(
            name=f"sidecar__{name}",
            description=f"The {name} tool.",
            input_schema_json=json.dumps({"type": "object", "properties": {p: {"type": "string"} for p in params}}),
        )
        for name, params in SIDECAR_TOOLS.items()
    ]


async def test_goose_provider_runs_a_tool_calling_episode(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    execute = Executor(root)
    async with sim() as url:
        # goose-sdk drops the last path segment of a non-OpenAI base URL, hence the doubled /v1.
        provider = goose.openai_provider("none", f"{url}/v1/v1")
        assert [m.name for m in await provider.list_models()] == [MODEL]
        config = goose.ProviderModelConfig(model_name=MODEL)
        tools = goose_tools()
        text = goose.MessageContent.TEXT(text=TASK)
        messages = [goose.ProviderMessage(role=goose.MessageRole.USER, content=[text])]
        stream = await provider.stream(config, SYSTEM, messages, tools)
        chunks = []
        while (chunk := await stream.next_chunk()) is not None:
            chunks.append(chunk)
        assert any(c.is_TOOL_CHUNK() for c in chunks) and chunks[-1].is_END_CHUNK()
        for _ in range(45):
            completion = await provider.complete(config, SYSTEM, messages, tools)
            requests = [c for c in completion.content if c.is_TOOL_REQUEST()]
            messages.append(goose.ProviderMessage(role=goose.MessageRole.ASSISTANT, content=completion.content))
            if not requests:
                break
            results = [
                goose.MessageContent.TOOL_RESULT(
                    id=r.id,
                    success=True,
                    content_json=json.dumps([{"type": "text", "text": execute(r.name, r.arguments_json)}]),
                )
                for r in requests
            ]
            messages.append(goose.ProviderMessage(role=goose.MessageRole.TOOL, content=results))
        else:
            raise AssertionError("the episode did not end")
        assert completion.usage is not None and (completion.usage.output_tokens or 0) > 0
    assert suite_passes(root)
