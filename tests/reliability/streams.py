"""Shared by the reliability tests: what an answer was, and where a call could leave something behind.

An answer is one of three things, and anything else is a failure of the coordinator:
    complete      200, an SSE stream whose last frame is `[DONE]`, no error frame
    error_frame   200, an SSE stream that ends with an in-band `{"error": ...}` frame and `[DONE]` (vLLM's shape)
    http_<code>   an HTTP error status with vLLM's error object `{"error": {"message": ...}}`
"""

from __future__ import annotations

import gc
import json
import os
from typing import Any

from sidecar.coordinator.state import CoordinatorState
from sidecar.testing import wait_until


def frames(body: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded (`[DONE]` stays a string)."""
    out: list[Any] = []
    for part in body.split(b"\n\n"):
        if part.startswith(b"data: "):
            data = part.removeprefix(b"data: ")
            out.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return out


def classify(status: int, content_type: str, body: bytes) -> str:
    """What the client got (see the module docstring); raises AssertionError for anything unclear."""
    if status == 200 and content_type.startswith("text/event-stream"):
        got = frames(body)
        assert got and got[-1] == "[DONE]", f"stream without [DONE]: {body[-200:]!r}"
        errors = [f for f in got[:-1] if isinstance(f, dict) and "error" in f]
        if errors:
            assert errors[-1] is got[-2] and errors[-1]["error"]["message"], body[-300:]
            return "error_frame"
        return "complete"
    assert status >= 400, f"unexpected status {status}"
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"], body[:300]
    return f"http_{status}"


def in_flight(state: CoordinatorState) -> dict[str, int]:
    """Every place a call holds something: all must return to 0."""
    return {
        "telemetry": state.telemetry.in_flight_total,
        "dispatched": sum(d.in_flight for d in state.dispatchers.values()),
        "queued": sum(len(d.queue) for d in state.dispatchers.values()),
        "replicas": sum(r.in_flight for u in state.pool.upstreams for r in u.replicas),
        "agents": sum(a.in_flight for a in state.book.entries()),
    }


async def assert_released(state: CoordinatorState) -> None:
    await wait_until(lambda: not any(in_flight(state).values()))


def upstream_connections(state: CoordinatorState) -> tuple[int, int]:
    """(connections in the coordinator's upstream pool, of which busy). httpx keeps them in httpcore's pool."""
    pool = state.client._transport._pool  # type: ignore[attr-defined]  # httpx.AsyncHTTPTransport -> httpcore
    connections = list(pool.connections)
    return len(connections), sum(not c.is_idle() for c in connections)


def live(type_: type) -> int:
    gc.collect()
    return sum(isinstance(o, type_) for o in gc.get_objects())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
