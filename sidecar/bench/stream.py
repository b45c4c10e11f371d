"""Streaming tool execution, the mechanism alone: `python -m sidecar.bench.stream`.

The fleet bench (`goose-sidecar bench --scenario parallel-tools`) measures agent time, but paired runs of one
seed diverge (tool results carry timings, so conversations and their lengths differ), which hides an effect of a
few percent. Here every answer is the same: a scripted upstream streams, token by token at `rate` tokens per
second (default 22, the 32B single-stream figure of `shared/reference/calibration.md`), the answer a coding agent
gives after an edit: a line of text, then `run_tests`, then `reads` reads of other files, with the token counts
and the tool-call deltas of the simulator (`sim.answer.deltas`, vLLM's streaming shape). The rest is the real
stack on loopback: two coordinators in front of that upstream (one with `[speculation] stream_tools`, one
without), one real sidecar over HTTP on a generated sample project whose test run takes `test_s` seconds more
than pytest's own, and a Goose-like client that streams the answer and then runs its calls concurrently over
MCP. Before each answer a source file is edited, so no test result is ever already cached.

Pairs alternate which condition goes first. Reported per condition: the agent's tool wait after the answer
(real seconds, median and min-max) and, per pair, the time saved (without - with). The ceiling is `lead_s`, the
decode time of what streams after the test run's call is seen complete (at the next call's first delta, once its
name is out): ~15 tokens of the first read's arguments, then ~34 per further read, over `rate`. Real seconds on
whatever machine runs it: on a loaded 2-core machine, read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.core.toolstream import ToolCallStream
from sidecar.fleet.chat import ChatClient, goose_body, goose_headers
from sidecar.fleet.project import generate_project, write_project
from sidecar.fleet.runner import SIDECAR_ENV
from sidecar.serving import serve_app
from sidecar.sim.answer import Answer, ToolCall, deltas, generate
from sidecar.sim.text import Dice
from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar

MODEL = "bench-model"
AGENT, SESSION = "agent-bench", "sess-bench"


def answer_frames(reads: list[str]) -> list[bytes]:
    """One SSE frame per generated token of the scripted answer (vLLM's shape), then finish, usage, [DONE]."""
    calls = [ToolCall("call-tests", "sidecar__run_tests", "{}")]
    calls += [ToolCall(f"call-read-{i}", "sidecar__read_file", json.dumps({"path": p})) for i, p in enumerate(reads)]
    answer = Answer("code_edit", "Now let me run the tests, and meanwhile read the other modules.", tuple(calls))
    generation = generate(answer, 4096, False, Dice(b"bench-stream"))

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
        return b"data: " + json.dumps({**body, "choices": [choice]}).encode() + b"\n\n"

    frames = [b"".join(frame(d) for d in token) for token in deltas(generation)]
    frames.append(frame({}, "tool_calls"))
    usage = {"prompt_tokens": 1000, "completion_tokens": len(generation.pieces), "total_tokens": 1000}
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": []}
    frames.append(b"data: " + json.dumps({**body, "usage": usage}).encode() + b"\n\n" + b"data: [DONE]\n\n")
    return frames


def lead_frames(frames: list[bytes]) -> int:
    """Frames streamed after the test run's call is complete (the coordinator sees it at the next call's start)."""
    stream = ToolCallStream()
    for index, data in enumerate(frames):
        if stream.feed(data):
            return len(frames) - index - 1
    return 0


def upstream_app(frames: list[bytes], rate: float) -> Starlette:
    async def stream() -> AsyncIterator[bytes]:
        for data in frames:
            yield data
            await asyncio.sleep(1 / rate)

    async def completions(request: Request) -> Response:
        await request.body()
        return StreamingResponse(stream(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", health),
        ]
    )


async def one_answer(chat: ChatClient, mcp: Client, tools: list[dict[str, Any]], meta: Any) -> tuple[float, float]:
    """Stream the answer, then run its calls concurrently as Goose does: (stream seconds, tool wait seconds)."""
    messages = [{"role": "user", "content": "fix the failing test"}]
    reply = await chat.complete(goose_body(MODEL, messages, tools), goose_headers(SESSION, "key", AGENT))
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            mcp.call_tool(
                c["function"]["name"].removeprefix("sidecar__"), json.loads(c["function"]["arguments"]), meta=meta
            )
            for c in reply.tool_calls
        )
    )
    if any(r.is_error for r in results):
        raise RuntimeError("a tool call failed")
    return reply.done - reply.sent, time.monotonic() - started


async def run(pairs: int, rate: float, reads: int, test_s: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    project = generate_project(7, modules=max(reads, 1), bugs=1, test_delay_s=test_s)
    workspace = write_project(project, root / "ws")
    sources = sorted(p for p in project.files if p.endswith(".py") and "/tests/" not in f"/{p}" and "__init__" not in p)
    frames = answer_frames(sources[:reads])
    out: dict[str, list[float]] = {"with": [], "without": [], "stream_s": []}
    await asyncio.sleep(0.15)  # past the cache's racy window for the files just written
    async with serve_app(upstream_app(frames, rate)) as upstream_url:
        base = {"models": {"default": {"served_name": MODEL, "replicas": [upstream_url]}}}
        on = build_app(load_config(env={}, overrides={**base, "speculation.stream_tools": True}))
        off = build_app(load_config(env={}, overrides={**base, "speculation.stream_tools": False}))
        async with serve_app(on) as on_url, serve_app(off) as off_url, httpx.AsyncClient(timeout=120) as http:
            settings = SidecarSettings(
                workspace=workspace,
                coordinator=on_url,
                agent_id=AGENT,
                test_command=f"{sys.executable} -m pytest -q -p no:cacheprovider",
                test_timeout_s=120,
            )
            sidecar = Sidecar(settings, env={})
            async with serve_http(build_http_app(sidecar)) as mcp_url, Client(f"{mcp_url}/mcp") as mcp:
                sidecar.advertise_peek(mcp_url)
                listed = await mcp.list_tools()
                tools = [
                    {"type": "function", "function": {"name": f"sidecar__{t.name}", "parameters": t.input_schema}}
                    for t in listed.tools
                ]
                meta: Any = {"agent-session-id": SESSION}
                await mcp.call_tool("list_dir", {}, meta=meta)  # its event tells `on` where the sidecar is
                speculator = on.state.coordinator.speculator
                while speculator.book.peek_url(AGENT, None) is None:  # noqa: ASYNC110 (filled by the coordinator's handler)
                    await asyncio.sleep(0.01)
                target = workspace / sources[0]
                for pair in range(pairs):
                    order = ("with", "without") if pair % 2 == 0 else ("without", "with")
                    for condition in order:
                        with target.open("a") as f:  # a changed workspace: the test run is never cached
                            f.write(f"# edit {pair} {condition}\n")
                        await asyncio.sleep(0.15)  # past the racy window, so the reads after it are cacheable
                        url = on_url if condition == "with" else off_url
                        stream_s, tool_s = await one_answer(ChatClient(http, url), mcp, tools, meta)
                        out[condition].append(tool_s)
                        out["stream_s"].append(stream_s)
                early = sidecar.early.as_dict()
    saved = [a - b for a, b in zip(out["without"], out["with"], strict=True)]
    return {
        "pairs": pairs,
        "rate_tok_s": rate,
        "reads_after_tests": reads,
        "test_s": test_s,
        "lead_s": round(lead_frames(frames) / rate, 2),
        "stream_s_median": round(statistics.median(out["stream_s"]), 3),
        "tool_wait_without_s": _spread(out["without"]),
        "tool_wait_with_s": _spread(out["with"]),
        "saved_per_answer_s": _spread(saved),
        "early": early,
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.bench.stream", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--rate", type=float, default=22.0, help="streamed tokens per second (default 22)")
    parser.add_argument("--reads", type=int, default=2, help="read calls after the test run's call (default 2)")
    parser.add_argument("--test-s", type=float, default=1.0, help="seconds a test run takes beyond pytest's own")
    args = parser.parse_args(argv)
    os.environ.update(SIDECAR_ENV)  # the test runs are the sidecar's children: plain pytest, as in the fleet
    result = asyncio.run(run(args.pairs, args.rate, args.reads, args.test_s))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
