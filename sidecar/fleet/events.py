"""The event tap: where the fleet's sidecars send their stage events, recorded and passed on to the coordinator.

Each sidecar is started with `--coordinator <tap URL>`. The tap answers `POST /v1/agents/{agent_id}/events`
by recording the event (the sidecar's own `cached` flag, `duration_ms`, `seq`) and forwarding it unchanged to
the real coordinator, whose status and body it returns, so the coordinator sees exactly what it would have seen
(`DESIGN.md`, "Events"). A coordinator that is down or has no such route only shows in the answer's status:
events are fire-and-forget for the sidecar either way. The fleet joins the recorded events to its own tool
calls by `seq` to count cache hits per turn.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class EventTap:
    def __init__(self, forward: str | None, client: httpx.AsyncClient) -> None:
        self.forward = forward.rstrip("/") if forward else None
        self.client = client
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.forwarded = 0
        self.forward_failed = 0
        self.last_answer: dict[str, Any] = {}
        self._arrived = asyncio.Condition()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/agents/{agent_id}/events", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        raw = await request.body()
        try:
            event = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "the event is not JSON"}}, 400)
        async with self._arrived:
            self.events[agent_id].append(event if isinstance(event, dict) else {"raw": event})
            self._arrived.notify_all()
        if self.forward is None:
            return JSONResponse({})
        url = f"{self.forward}/v1/agents/{quote(agent_id, safe='')}/events"
        try:
            answer = await self.client.post(url, content=raw, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            self.forward_failed += 1
            return JSONResponse({"error": {"message": f"coordinator unreachable: {exc}"}}, 502)
        if answer.status_code < 400:
            self.forwarded += 1
            try:
                body = answer.json()
                if isinstance(body, dict):
                    self.last_answer[agent_id] = body
            except ValueError:
                pass
        else:
            self.forward_failed += 1
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))

    async def wait_for(self, agent_id: str, count: int, timeout_s: float) -> bool:
        """Wait until `agent_id` has at least `count` events (True) or `timeout_s` passed (False)."""

        async def arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.events[agent_id]) >= count)

        try:
            await asyncio.wait_for(arrived(), timeout_s)
        except TimeoutError:
            return False
        return True
