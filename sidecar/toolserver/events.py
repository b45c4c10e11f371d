"""Stage reporting: every tool call becomes an event POSTed to the coordinator, fire-and-forget.

`POST {coordinator}/v1/agents/{agent_id}/events` with the shared contract `core.wire.ToolEvent` (the
coordinator parses it with the same module): `{session_id, seq, tool, ok, exit_code?, paths, duration_ms, ts,
cached}`, for `run_command` also `command` (the command line, capped; e.g. "git commit -m fix"), `peek_url`
once the sidecar serves `/peek` (where the coordinator asks which tool results are already known), and
`speculation`: the sidecar's cumulative test pre-run and next-action prediction counters
(`core.speculation.SIDECAR_COUNTERS`). Never file contents. With an API key (the
coordinator's keys file), each POST carries `Authorization: Bearer KEY`. The coordinator answers
`{stage, tier}`; the last answer is kept in `last_answer`.

`report` only puts the event on a bounded queue (dropping the oldest when full) and returns at once; one
background task sends them in order with a short timeout. A slow, failing or absent coordinator therefore
never slows or fails a tool call: it only shows in the `sent` / `failed` / `dropped` counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from sidecar.core.wire import ToolEvent
from sidecar.obs import get_logger

log = get_logger(__name__)


@dataclass
class ReporterStats:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_answer: dict[str, Any] | None = field(default=None)


class EventReporter:
    """Sends tool events for one agent; a `None` coordinator makes `report` a no-op (still counted)."""

    def __init__(
        self,
        coordinator: str | None,
        agent_id: str,
        *,
        queue_size: int = 256,
        timeout_s: float = 2.0,
        default_session_id: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = None if not coordinator else f"{coordinator.rstrip('/')}/v1/agents/{quote(agent_id, safe='')}/events"
        self.agent_id = agent_id
        self.default_session_id = default_session_id
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.stats = ReporterStats()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._seq: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.peek_url: str | None = None  # set by the sidecar once it serves /peek

    @property
    def last_answer(self) -> dict[str, Any] | None:
        return self.stats.last_answer

    async def start(self) -> None:
        if self.url is None or self._task is not None:
            return
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), trust_env=False, headers=self.headers)
        self._task = asyncio.create_task(self._send_loop(), name="sidecar-events")

    async def stop(self, drain_s: float = 1.0) -> None:
        """Send what is queued (for at most `drain_s`), then stop."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def report(
        self,
        *,
        tool: str,
        ok: bool,
        paths: list[str],
        duration_ms: float,
        session_id: str | None = None,
        exit_code: int | None = None,
        cached: bool = False,
        command: str | None = None,
        speculation: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """Queue one event without waiting; returns it (with its `seq`)."""
        session = session_id or self.default_session_id or ""
        seq = self._seq.get(session, 0) + 1
        self._seq[session] = seq
        event = ToolEvent(
            seq=seq,
            tool=tool,
            ok=ok,
            session_id=session or None,
            exit_code=exit_code,
            paths=tuple(paths),
            command=command,
            duration_ms=duration_ms,
            ts=time.time(),
            cached=cached,
            peek_url=self.peek_url,
            speculation=speculation,
        ).to_wire()
        if self.url is None:
            return event
        while True:
            try:
                self._queue.put_nowait(event)
                break
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._queue.get_nowait()
                    self._queue.task_done()
                    self.stats.dropped += 1
        self.stats.queued += 1
        return event

    async def _send_loop(self) -> None:
        assert self._client is not None and self.url is not None
        while True:
            event = await self._queue.get()
            try:
                response = await self._client.post(self.url, json=event)
                if response.status_code >= 400:
                    self.stats.failed += 1
                    self.stats.last_error = f"HTTP {response.status_code}"
                else:
                    self.stats.sent += 1
                    with contextlib.suppress(ValueError):
                        answer = response.json()
                        if isinstance(answer, dict):
                            self.stats.last_answer = answer
            except httpx.HTTPError as exc:
                self.stats.failed += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.debug("event not delivered", error=self.stats.last_error)
            finally:
                self._queue.task_done()
