"""Clients nobody on this team wrote, through the coordinator: the official `openai` client and Goose's own
provider code (`goose-sdk`). Their requests and parsing are the judges of compatibility."""

from __future__ import annotations

import json

import goose
import openai

from tests.coordinator.conftest import Stack
from tests.coordinator.scripted_upstream import COMPLETION, MODEL


async def test_openai_client_streams_tool_calls_and_usage(s: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{s.url}/v1", api_key="dummy", default_headers={"X-Agent-Id": "oa-1"})
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "fix it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, args, name, usage, finish = "", "", None, None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                name = name or (call.function.name if call.function else None)
                args += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert text == "Reading the failing test — ünïcode ok."
    assert name == "read_file" and json.loads(args) == {"path": "tests/test_a.py"}
    assert finish == "tool_calls"
    assert usage is not None and usage.total_tokens == 21
    await client.close()


async def test_openai_client_non_streaming_models_and_errors(s: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{s.url}/v1", api_key="dummy", max_retries=0)
    completion = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers={"x-script": "json"}
    )
    assert completion.choices[0].message.content == COMPLETION["choices"][0]["message"]["content"]  # type: ignore[index]
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL, "auto", "default"]  # the upstream's, then routing's names
    try:
        await client.chat.completions.create(model=MODEL, messages="nope")  # type: ignore[arg-type]
    except openai.BadRequestError as exc:
        assert "'messages' must be a list" in str(exc)
    else:
        raise AssertionError("expected a 400")
    await client.close()


async def _goose_call(base_url: str) -> tuple[list[str], list[str], list[str]]:
    provider = goose.openai_provider("dummy-key", base_url)
    config = goose.ProviderModelConfig(model_name=MODEL, request_headers={"X-Agent-Id": "goose-1"})
    user = goose.ProviderMessage(role=goose.MessageRole.USER, content=[goose.MessageContent.TEXT("fix it")])
    tool = goose.ProviderTool(
        name="read_file",
        description="read a file",
        input_schema_json=json.dumps({"type": "object", "properties": {"path": {"type": "string"}}}),
    )
    completion = await provider.complete(config, "You are a coding agent.", [user], [tool])
    kinds = ["tool" if c.is_tool_request() else "text" if c.is_text() else "other" for c in completion.content]
    stream = await provider.stream(config, "You are a coding agent.", [user], [tool])
    chunks: list[str] = []
    while (chunk := await stream.next_chunk()) is not None:
        chunks.append("tool" if chunk.is_tool_chunk() else "end" if chunk.is_end_chunk() else "other")
        if chunk.is_end_chunk() or chunk.is_error_chunk():
            break
    models = [m.name if hasattr(m, "name") else str(m) for m in await provider.list_models()]
    return kinds, chunks, models


async def test_goose_provider_code_streams_completes_and_lists(s: Stack) -> None:
    # Goose drops `/v1` for non-OpenAI hosts: base_url ".../v1" posts to "/chat/completions" (served too).
    kinds, chunks, models = await _goose_call(f"{s.url}/v1")
    assert "tool" in kinds and "text" in kinds
    assert "tool" in chunks and chunks[-1] == "end"
    assert MODEL in " ".join(models)
    # Goose's headers arrived upstream as it sends them, and Goose always streams with usage.
    sent = s.upstream.received[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    status = (await s.client.get("/status")).json()
    assert "goose-1" in [a["agent_id"] for a in status["agents"]]
    # Goose closes right after [DONE]: the normal end of a stream, not counted as an early disconnect
    assert status["totals"]["errors"] == 0
