"""Streaming tool execution, the coordinator's half: start each tool call in the agent's sidecar while the
answer that asks for it is still streaming (issue 19; the seed's untested eighth optimization).

`EarlyStarter.watch(agent, session)` is asked by the relay for every streamed chat call; with
`[speculation] stream_tools` on and the agent's sidecar known (its `/peek` URL, learnt from its events and
kept in the `AgentBook`) it returns a `StreamWatch` for that answer, else None. The relay feeds the watch every
chunk right after sending it to the client (`feed`): the bytes and their timing are the client's business, the
watch only reads them (`core.toolstream.ToolCallStream`). Each complete call to the sidecar's extension
(`<extension>__<tool>`) goes to the sidecar's `POST /early` in the background (`core.toolstream.early_url`),
tagged with a fresh id for the answer; the sidecar decides what is safe to start (`toolserver/early.py`).

The agent's next chat call shows that the previous answer is over: `watch` first tells the sidecar (a start for
the new answer id with no calls), so runs the agent did not use are cancelled and counted as wasted there.

Cheap when wrong: a start is one small POST, never awaited by the relay, with the peek timeout; at most
`MAX_IN_FLIGHT` are in flight (more are dropped and counted). Counters: `calls_seen` (complete sidecar calls
detected), `starts_sent` / `starts_failed` (POSTs), `dropped`; the sidecars report what they started, used and
wasted with their events (`core.speculation.fleet_counters`, `early_runs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from sidecar.coordinator.agents import AgentBook
from sidecar.coordinator.settings import SpeculationSettings
from sidecar.core.toolstream import ToolCallStream, early_request, early_url
from sidecar.obs import get_logger

log = get_logger("sidecar.coordinator.early")
MAX_IN_FLIGHT = 256


@dataclass
class EarlyStarterStats:
    answers_watched: int = 0
    calls_seen: int = 0
    starts_sent: int = 0
    starts_failed: int = 0
    dropped: int = 0


class StreamWatch:
    """One streamed answer being relayed: finds its complete tool calls and has them started."""

    def __init__(self, starter: EarlyStarter, agent: str, url: str) -> None:
        self.starter = starter
        self.agent = agent
        self.url = url
        self.answer = uuid.uuid4().hex[:16]
        self.stream = ToolCallStream()

    def feed(self, chunk: bytes) -> None:
        """Read one relayed chunk; never raises (a broken parse only ends the watch)."""
        try:
            calls = self.stream.feed(chunk)
        except Exception as exc:  # a bug here must never touch the relay
            log.warning("stream watch failed", error=repr(exc))
            self.stream.broken = True
            return
        extension = self.starter.settings.extension
        requests = [r for r in (early_request(c, extension) for c in calls) if r is not None]
        if not requests:
            return
        self.starter.stats.calls_seen += len(requests)
        entry = self.starter.book.get(self.agent)
        if entry is not None:
            entry.open_answer = (self.url, self.answer)
        self.starter.post(self.url, self.answer, [{"name": r.name, "arguments": r.arguments} for r in requests])


class EarlyStarter:
    """Streaming tool execution for all agents; see the module docstring."""

    def __init__(self, settings: SpeculationSettings, client: httpx.AsyncClient, book: AgentBook) -> None:
        self.settings = settings
        self.client = client
        self.book = book
        self.stats = EarlyStarterStats()
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, agent: str, session: str | None) -> StreamWatch | None:
        """A watch for `agent`'s answer now starting to stream, or None (off, or no sidecar known). Also ends
        the agent's previous answer at its sidecar (this call is the agent's next one)."""
        entry = self.book.get(agent)
        previous = None if entry is None else entry.open_answer
        if entry is not None:
            entry.open_answer = None
        if not self.settings.stream_tools:
            return None
        peek = self.book.peek_url(agent, session)
        url = early_url(peek) if peek else None
        watch = StreamWatch(self, agent, url) if url else None
        if previous is not None:
            self.post(previous[0], watch.answer if watch else uuid.uuid4().hex[:16], [])
        if watch is not None:
            self.stats.answers_watched += 1
        return watch

    def post(self, url: str, answer: str, calls: list[dict[str, Any]]) -> None:
        """Send one start (or end, with no calls) in the background."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.stats.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self._post(url, {"answer": answer, "calls": calls}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        try:
            response = await self.client.post(
                url, json=body, timeout=self.settings.peek_timeout_s, follow_redirects=False
            )
            ok = response.status_code == 200
        except httpx.HTTPError as exc:
            log.debug("early start failed", error=str(exc))
            ok = False
        if ok:
            self.stats.starts_sent += 1
        else:
            self.stats.starts_failed += 1

    @property
    def in_flight(self) -> int:
        """Starts not yet answered (tests and benchmarks wait for 0)."""
        return len(self._tasks)

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "enabled": self.settings.stream_tools,
            "answers_watched": s.answers_watched,
            "calls_seen": s.calls_seen,
            "starts_sent": s.starts_sent,
            "starts_failed": s.starts_failed,
            "dropped": s.dropped,
        }

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
