"""The sidecar: one agent's tools, cache, watcher, event reporter and speculation, composed and started together.

`Sidecar(settings)` owns the jail, the watcher, the cache, the tools and the event reporter; `async with
sidecar:` starts the watcher (before anything is cached) and the reporter. `sidecar.mcp` is the MCP server over
it (`mcpserver.py`; stdio: `await sidecar.mcp.run_stdio_async()` inside the `async with`); the HTTP apps are in
`httpapp.py`.

Every tool call goes through `Sidecar.invoke`: it runs the body, reports the call to the coordinator and lets
the test pre-runner learn from it; a failure reaches the caller as `ToolFailure`, whose message the model reads
(a filesystem error a body did not map itself included). MCP is not imported here: `mcpserver.py` turns a
`ToolFailure` into MCP's `ToolError` and finds the call's session id.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sidecar.core.toolcache import Generations
from sidecar.obs import get_logger
from sidecar.toolserver.cache import ToolCache
from sidecar.toolserver.early import EarlyRunner
from sidecar.toolserver.events import EventReporter
from sidecar.toolserver.jail import Jail, JailError
from sidecar.toolserver.mcpserver import build_mcp
from sidecar.toolserver.offload import Offload
from sidecar.toolserver.peek import peek_calls
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.speculation import TestPrerunner
from sidecar.toolserver.tools import ToolFailure, ToolOutput, Tools
from sidecar.toolserver.watcher import Watcher

log = get_logger(__name__)

Body = Callable[[], Awaitable[ToolOutput]]


class Sidecar:
    """One agent's sidecar: tools, cache, watcher, reporter and the MCP server over them."""

    def __init__(self, settings: SidecarSettings, *, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.jail = Jail(settings.workspace)
        self.gens = Generations()
        self.offload = Offload()
        self.watcher = Watcher(
            self.jail.root, self.gens, ignore_dirs=settings.ignore_dirs, on_flush=self._flushed, offload=self.offload
        )
        self.cache = ToolCache(
            self.gens,
            self.watcher,
            max_bytes=settings.cache_max_bytes,
            racy_window_ns=int(settings.racy_window_ms * 1_000_000),
        )
        self.tools = Tools(settings, jail=self.jail, cache=self.cache, gens=self.gens, offload=self.offload)
        self.agent_id = settings.agent_id or env.get("AGENT_ID") or "anonymous"
        self.reporter = EventReporter(
            settings.coordinator,
            self.agent_id,
            queue_size=settings.event_queue_size,
            timeout_s=settings.event_timeout_s,
            default_session_id=env.get("AGENT_SESSION_ID") or None,
            api_key=settings.coordinator_api_key,
        )
        self.prerunner = TestPrerunner(
            self.tools,
            agent=self.agent_id,
            enabled=settings.speculate_tests,
            min_probability=settings.speculate_min_probability,
            max_load_per_core=settings.speculate_max_load_per_core,
        )
        self.early = EarlyRunner(self.tools, max_concurrent=settings.early_max_concurrent)
        self.calls = 0
        self.peeks = 0
        self.peek_key = secrets.token_urlsafe(18)
        self._depth = 0
        self.mcp = build_mcp(self)

    def advertise_peek(self, base_url: str) -> str:
        """Serve peeks at `base_url` (no trailing /peek): its URL, key included, goes out in every event."""
        url = f"{base_url.rstrip('/')}/peek?key={self.peek_key}"
        self.reporter.peek_url = url
        return url

    async def peek(self, calls: object) -> list[str | None]:
        """Per `{name, arguments}` call, the exact text it would return now if already known, else None
        (`peek.peek_calls`; ValueError for a body that is not such a list)."""
        self.peeks += 1
        return await peek_calls(self.tools, calls)

    @property
    def generation(self) -> int:
        """Monotonic workspace generation: unchanged between two readings means no file changed in between
        (as far as the watcher and the sidecar's own writes can tell; a flush also moves it)."""
        return self.gens.current

    def changed_since(self, generation: int) -> bool:
        return self.gens.current != generation

    def _flushed(self, reason: str) -> None:
        self.cache.flush(reason)

    async def __aenter__(self) -> Sidecar:
        self._depth += 1
        if self._depth == 1:
            await self.watcher.start()
            await self.reporter.start()
            log.info("sidecar started", workspace=self.jail.root, agent_id=self.agent_id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            await self.prerunner.aclose()
            await self.early.aclose()
            await self.reporter.stop()
            await self.watcher.stop()
            self.offload.close()

    def stats(self) -> dict[str, Any]:
        return {
            "workspace": self.jail.root,
            "agent_id": self.agent_id,
            "generation": self.generation,
            "calls": self.calls,
            "peeks": self.peeks,
            "cache": self.cache.stats,
            "watcher": {
                "healthy": self.watcher.healthy,
                "events": self.watcher.events,
                "flushes": self.watcher.flushes,
                "paths_tracked": self.gens.paths_tracked(),
            },
            "events": {
                "queued": self.reporter.stats.queued,
                "sent": self.reporter.stats.sent,
                "failed": self.reporter.stats.failed,
                "dropped": self.reporter.stats.dropped,
                "last_answer": self.reporter.stats.last_answer,
            },
            "speculation": self.prerunner.as_dict(),
            "early": self.early.as_dict(),
        }

    async def invoke(
        self,
        tool: str,
        session: str | None,
        body: Body,
        *,
        target: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> str:
        """Run one tool body for Goose session `session` and report it; returns the text the model reads.

        Raises `ToolFailure` with the model's message when the body fails, also for a filesystem error the body
        let through (a path changed under it mid-call). Every call also goes to the test pre-runner
        (`speculation.py`), which learns from it and may start a speculative test run after an edit; `target`
        is `run_tests`' target, which the pre-runner reuses. `args` (every parameter, for the early-safe tools)
        matches the call with a run started early from the streamed answer (`early.py`): the body still runs,
        after joining that run.
        """
        if args is not None:
            body = await self._after_early(tool, args, body)
        self.calls += 1
        t0 = time.perf_counter()
        try:
            result = await body()
        except ToolFailure as exc:
            self._observe(tool, ok=False, paths=exc.paths, target=target)
            self._report(tool, session, t0, ok=False, paths=exc.paths)
            raise
        except (JailError, OSError) as exc:
            # A body that let a filesystem error through: still tell the model what happened and what to do,
            # never only "Error executing tool".
            log.warning("unmapped tool error", tool=tool, error=repr(exc))
            self._observe(tool, ok=False, paths=[], target=target)
            self._report(tool, session, t0, ok=False, paths=[])
            raise ToolFailure(unmapped_message(tool, exc)) from exc
        except BaseException:
            self._report(tool, session, t0, ok=False, paths=[])
            raise
        # Observed before it is reported, so the event's speculation counters already score this call.
        self._observe(
            tool, ok=True, paths=result.paths, exit_code=result.exit_code, command=result.command, target=target
        )
        self._report(
            tool,
            session,
            t0,
            ok=True,
            paths=result.paths,
            exit_code=result.exit_code,
            cached=result.cached,
            command=result.command,
        )
        return result.text

    async def _after_early(self, tool: str, args: Mapping[str, Any], body: Body) -> Callable[[], Awaitable[ToolOutput]]:
        """`body`, run after joining this call's early run (if any), with that run counted once it is done."""
        early = self.early.claim(tool, args)
        asked = await self.early.join(early) if early is not None else 0.0

        async def run() -> ToolOutput:
            output: ToolOutput | None = None
            try:
                output = await body()
                return output
            finally:
                if early is not None:
                    self.early.settle(early, asked, output)

        return run

    def _observe(self, tool: str, **fields: Any) -> None:
        try:
            self.prerunner.observe(tool, **fields)
        except Exception as exc:  # speculation must never fail a tool call
            log.warning("speculation observe failed", error=str(exc))

    def _report(self, tool: str, session: str | None, t0: float, **fields: Any) -> None:
        try:
            self.reporter.report(
                tool=tool,
                session_id=session,
                duration_ms=(time.perf_counter() - t0) * 1000,
                speculation={**self.prerunner.counters(), **self.early.counters()},
                **fields,
            )
        except Exception as exc:  # reporting must never fail a tool call
            log.warning("event not queued", error=str(exc))


def unmapped_message(tool: str, exc: JailError | OSError) -> str:
    """The model's message for a filesystem error a tool body did not map itself."""
    if isinstance(exc, JailError):
        return str(exc)
    what = exc.strerror or type(exc).__name__
    return f"{tool} failed: {what} (a file or directory changed while it was being read); retry"
