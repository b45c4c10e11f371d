"""LLM-level speculation: send an agent's predicted next call early, serve it only for an identical request.

`Speculator.speculate(agent, alias, body)` sends `body` (the next request exactly as the agent will send it,
after routing) upstream at once, when `core.speculation.should_speculate_llm` allows: speculation enabled,
the model's dispatcher sees spare capacity (`admission.has_spare_capacity` on its last vLLM metrics), no real
call is queued there, and the wasted-token budget for the last minute has room. It never takes a dispatcher
slot; instead the dispatcher calls `cancel_model` the moment a real call has to queue (`Dispatcher.on_queue`),
so a speculative call never holds GPU room that a real call is waiting for. Where the upstream orders by native
priority (configuration says so) it is sent at vLLM's lowest priority; where it does not, vLLM would serve it on
equal terms with real work, so it is held at the coordinator instead: sent only while the model's window (and
the engine's known capacity) has a free place, which it then occupies (`Dispatcher.hold_speculative`).

`take(agent, body, stream)` is asked by the proxy for every real call: the agent's pending speculative call is
returned only when `canonical_request` of both bodies is equal and the stream flag matches (so the bytes are
exactly what the upstream would have sent for the real call, which with temperature 0 is the same answer);
otherwise it is cancelled and counted as a mismatch. `serve` relays what the speculative call has received so
far and then follows it live ("streaming from where it is"). `warm(agent, alias, body)` is the cheapest
lossless variant: the same body with `max_tokens=1`, never served, only filling the prefix cache.
A served answer took no dispatcher slot, but it is the agent's turn: under the `kv` policy the model's
dispatcher hears of it as of a call through a slot (`Dispatcher.speculative_answer_started` when it is served,
`speculative_answer_ended` with the speculative call's usage when it ends), so the ledger's context, activity
and places follow the agent as if the call had been sent when asked for.

Where the predicted body comes from: the proxy hands every finished, streamed chat answer (its request body
after routing, the SSE bytes it relayed, the headers it sent upstream) to `after_response`, after the last
byte reached the client. A background task owned here rebuilds the assistant message (`core.nextcall`); if
the answer ends in tool calls, all to the sidecar's extension, it asks the agent's sidecar (`POST peek_url`,
learnt from its events and kept in the `AgentBook`) which results it already has. When it has every one, the agent's
next request is fully known (`core.nextcall.next_request`) and is sent (`speculate`, or `warm` in mode
"warm"), unless the agent's real next call arrived meanwhile (`take` counts real calls per agent).

Speculative calls reach the upstream as real ones do, through the `UpstreamClient` (same header rules, replica
accounting and breaker feedback), never retried: a failed speculation is only dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import Send

from sidecar.coordinator.agents import AgentBook
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.early import EarlyStarter
from sidecar.coordinator.errors import ProxyError
from sidecar.coordinator.exchange import USAGE_TAIL_BYTES
from sidecar.coordinator.settings import SpeculationSettings
from sidecar.coordinator.upstream_client import UpstreamCall, UpstreamClient
from sidecar.core.longtool import AnswerToolCalls
from sidecar.core.nextcall import ToolRequest, assistant_from_sse, next_request, tool_requests
from sidecar.core.speculation import (
    TokenBudget,
    canonical_request,
    fleet_counters,
    should_speculate_llm,
)
from sidecar.core.usage import parse_usage
from sidecar.obs import get_logger

log = get_logger("sidecar.coordinator.speculation")
LOWEST_PRIORITY = 1_000_000  # vLLM serves lower values first; far below every tier's value (stages.native_priority)


@dataclass
class SpecCall:
    agent: str
    alias: str
    key: str
    stream: bool
    created: float
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def tokens(self) -> int:
        """Rough GPU tokens spent so far: the usage object when complete, else one per SSE frame."""
        text = b"".join(self.chunks[-4:]).decode(errors="ignore")
        at = text.rfind('"usage"')
        if at >= 0:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                usage, _ = json.JSONDecoder().raw_decode(text, text.find("{", at))
                return int(usage.get("total_tokens") or 0)
        return sum(c.count(b"data: ") for c in self.chunks)


@dataclass
class SpeculationStats:
    started: int = 0
    warmed: int = 0
    served: int = 0
    mismatched: int = 0
    cancelled_for_real_calls: int = 0
    expired: int = 0
    failed: int = 0
    skipped: int = 0
    wasted_tokens: int = 0
    time_saved_s: float = 0.0
    # Follow-ups of answers that ended in tool calls (the automatic source of predicted requests).
    followups: int = 0
    results_known: int = 0  # every result known: the next request was predicted
    results_unknown: int = 0  # some result not cached (or another extension's tool, or no sidecar answer)
    too_late: int = 0  # the agent's real next call came first


class Speculator:
    """Speculative calls for all agents and models; see the module docstring."""

    def __init__(
        self,
        settings: SpeculationSettings,
        upstreams: UpstreamClient,
        sidecars: httpx.AsyncClient,
        dispatchers: Mapping[str, Dispatcher],
        book: AgentBook,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`upstreams`: the way to the models; `sidecars`: the client for the sidecars' `/peek` and `/early`;
        `book`: where the sidecars' peek URLs and each agent's real calls are kept."""
        self.settings = settings
        self.upstreams = upstreams
        self.client = sidecars
        self.pool = upstreams.pool
        self.book = book
        self.dispatchers = dispatchers
        self.clock = clock
        self.budget = TokenBudget(settings.wasted_tokens_per_minute)
        self.stats = SpeculationStats()
        self.pending: dict[str, SpecCall] = {}  # agent -> its one speculative call (bounded by the book: `forget`)
        self._followups: set[asyncio.Task[None]] = set()
        # Streaming tool execution: the sidecar URLs it needs are the book's.
        self.early = EarlyStarter(settings, sidecars, book)
        for alias, dispatcher in dispatchers.items():
            dispatcher.on_queue.append(functools.partial(self.cancel_model, alias))
        book.on_forget.append(self.forget)

    def forget(self, agent: str) -> None:
        """The book forgot `agent`: its pending speculative call goes too (counted as expired)."""
        self._drop(agent, "forgotten")

    def allowed(self, alias: str) -> bool:
        """Whether a speculative call may go to `alias` now (`core.speculation.should_speculate_llm`)."""
        d = self.dispatchers[alias]
        return should_speculate_llm(
            enabled=self.settings.enabled,
            spare_capacity=d.spare_capacity(),
            waiting_real=len(d.queue),
            budget_ok=self.budget.allows(self.clock()),
        )

    def speculate(
        self,
        agent: str,
        alias: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        session: str | None = None,
    ) -> bool:
        """Send `body` now as `agent`'s predicted next call (replacing its previous one); True if sent.
        `headers`: extra request headers the agent's client would send; `session`: its Goose session id."""
        if not self.allowed(alias) or not self._place(alias):
            self.stats.skipped += 1
            return False
        self._drop(agent, "replaced")
        self.book.agent(agent, self.clock())  # known while its call is pending, so forgetting it cancels the call
        call = SpecCall(agent, alias, canonical_request(body), bool(body.get("stream")), self.clock())
        call.task = asyncio.get_running_loop().create_task(
            self._send(call, dict(body), extra=headers, session=session), name="speculative-call"
        )
        self._give_back_place_when_done(alias, call.task)
        self.pending[agent] = call
        self.stats.started += 1
        return True

    def warm(self, agent: str, alias: str, body: Mapping[str, Any]) -> bool:
        """Prefix-warming only: `body` with max_tokens=1, not streamed, never served."""
        if not self.allowed(alias) or not self._place(alias):
            self.stats.skipped += 1
            return False
        warm = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "max_completion_tokens")}
        warm["max_tokens"] = 1
        call = SpecCall(agent, alias, "", False, self.clock())
        task = asyncio.get_running_loop().create_task(self._send(call, warm, waste=True), name="prefix-warm")
        self._give_back_place_when_done(alias, task)
        self.stats.warmed += 1
        return True

    def _place(self, alias: str) -> bool:
        """Where the upstream has no native priority, a place at the coordinator for one speculative call (given
        back when the call ends); elsewhere always True (vLLM serves it after every real call it holds)."""
        upstream = next(u for u in self.pool.upstreams if u.alias == alias)
        return upstream.native_priority or self.dispatchers[alias].hold_speculative()

    def _give_back_place_when_done(self, alias: str, task: asyncio.Task[None]) -> None:
        """A done callback, not a `finally`: a task cancelled before it first runs never enters its body."""
        upstream = next(u for u in self.pool.upstreams if u.alias == alias)
        if not upstream.native_priority:
            task.add_done_callback(lambda _: self.dispatchers[alias].release_speculative())

    @property
    def followups_in_flight(self) -> int:
        """Follow-ups still deciding whether to speculate (tests and benchmarks wait for 0)."""
        return len(self._followups)

    def after_response(
        self,
        agent: str,
        alias: str,
        body: Mapping[str, Any],
        frames: list[bytes],
        headers: Mapping[str, str],
        session: str | None = None,
    ) -> None:
        """A streamed answer to `body` (sent upstream to `alias`) has fully reached `agent`: predict its next
        call in the background (module docstring). Returns at once; costs nothing when disabled."""
        if not self.settings.enabled:
            return
        url = self.book.peek_url(agent, session)
        if url is None:
            return
        if not self.allowed(alias):  # nothing could be sent: spare the parsing and the sidecar's peek
            self.stats.skipped += 1
            return
        entry = self.book.get(agent)
        seen = 0 if entry is None else entry.real_calls
        task = asyncio.get_running_loop().create_task(
            self._follow_up(agent, alias, body, frames, dict(headers), url, seen, session),
            name="speculation-follow-up",
        )
        self._followups.add(task)
        task.add_done_callback(self._followups.discard)

    async def _follow_up(
        self,
        agent: str,
        alias: str,
        body: Mapping[str, Any],
        frames: list[bytes],
        headers: dict[str, str],
        url: str,
        seen: int,
        session: str | None,
    ) -> None:
        reply = assistant_from_sse(b"".join(frames))
        if reply is None or reply.finish_reason != "tool_calls":
            return
        self.stats.followups += 1
        calls = tool_requests(reply.message, self.settings.extension)
        if calls is None:
            self.stats.results_unknown += 1
            return
        results = await self._peek(url, calls)
        if results is None:
            self.stats.results_unknown += 1
            return
        self.stats.results_known += 1
        entry = self.book.get(agent)
        if entry is None or entry.real_calls != seen:  # its next call is already here: a prediction is worthless
            self.stats.too_late += 1
            return
        predicted = next_request(body, reply.message, calls, results)
        if self.settings.mode == "warm":
            self.warm(agent, alias, predicted)
        else:
            self.speculate(agent, alias, predicted, headers, session)

    async def _peek(self, url: str, calls: list[ToolRequest]) -> list[str] | None:
        """Every call's result text from the sidecar, or None if any is not known (or the sidecar is away)."""
        ask = [{"name": c.name, "arguments": c.arguments} for c in calls]
        try:
            response = await self.client.post(
                url, json=ask, timeout=self.settings.peek_timeout_s, follow_redirects=False
            )
            answer = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("peek failed", error=str(exc))
            return None
        if not isinstance(answer, list) or len(answer) != len(calls) or not all(isinstance(t, str) for t in answer):
            return None
        return answer

    def take(self, agent: str, body: Mapping[str, Any], stream: bool) -> SpecCall | None:
        """The agent's speculative call if it was for exactly this request; else None (and it is cancelled).
        Called for every real chat call (it also counts them per agent, in the book)."""
        self.book.agent(agent, self.clock()).real_calls += 1
        call = self.pending.pop(agent, None)
        if call is None:
            return None
        if self.clock() - call.created > self.settings.max_age_s:
            self.stats.expired += 1
            self._cancel(call)
            return None
        if call.key != canonical_request(body) or call.stream != stream or call.status not in (None, 200):
            self.stats.mismatched += 1
            self._cancel(call)
            return None
        self.stats.served += 1
        self.stats.time_saved_s += self.clock() - call.created
        return call

    async def serve(self, call: SpecCall, send: Send, request_id: str) -> None:
        """Relay `call` to the client: what it has so far, then live until it ends. Meanwhile the `kv` policy's
        ledger counts it as the agent's call in flight, and then learns the turn as from a slot's release
        (`_tell_ledger`): the answer took no slot, but it is the agent's turn all the same."""
        dispatcher = self.dispatchers[call.alias]
        dispatcher.speculative_answer_started(call.agent)
        relayed = False
        try:
            await self._relay(call, send, request_id)
            relayed = True
        finally:  # also when the client left (run_until_disconnect cancels this)
            self._tell_ledger(call, dispatcher, relayed)

    def _tell_ledger(self, call: SpecCall, dispatcher: Dispatcher, relayed: bool) -> None:
        """The served answer's end, for the `kv` policy's ledger as `Exchange.run` tells it through `Slot.release`:
        the speculative call's prompt + output tokens and cached prompt tokens from its usage (None unless it
        completed with 200), and whether it runs a long tool (read only when `kv_long_tool_keep_s` is set)."""
        if dispatcher.kv_ledger is None:
            return
        ok = call.done and call.status == 200
        usage = parse_usage(b"".join(call.chunks)[-USAGE_TAIL_BYTES:]) if ok else None
        long_tool = False
        if dispatcher.reads_long_tools and ok and relayed:
            tools = AnswerToolCalls(streamed=call.stream)
            for chunk in call.chunks:
                tools.feed(chunk)
            long_tool = tools.runs_long_tool()
        context = None if usage is None else usage.prompt_tokens + usage.completion_tokens
        cached = None if usage is None else usage.cached_prompt_tokens
        dispatcher.speculative_answer_ended(call.agent, context, cached, long_tool)

    async def _relay(self, call: SpecCall, send: Send, request_id: str) -> None:
        while call.status is None and not call.done:
            call.changed.clear()
            await call.changed.wait()
        headers = [*call.headers, (b"x-request-id", request_id.encode()), (b"x-goose-sidecar-speculative", b"1")]
        await send({"type": "http.response.start", "status": call.status or 502, "headers": headers})
        sent = 0
        while True:
            while sent < len(call.chunks):
                await send({"type": "http.response.body", "body": call.chunks[sent], "more_body": True})
                sent += 1
            if call.done:
                break
            call.changed.clear()
            if sent == len(call.chunks) and not call.done:
                await call.changed.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def cancel_model(self, alias: str) -> None:
        """A real call is queueing for `alias`: cancel every speculative call on it."""
        for agent, call in list(self.pending.items()):
            if call.alias == alias and not call.done:
                del self.pending[agent]
                self.stats.cancelled_for_real_calls += 1
                self._cancel(call)

    def _drop(self, agent: str, why: str) -> None:
        call = self.pending.pop(agent, None)
        if call is not None:
            self.stats.expired += 1
            self._cancel(call)

    def _cancel(self, call: SpecCall) -> None:
        if call.task is not None and not call.task.done():
            call.task.cancel()
        wasted = call.tokens()
        self.stats.wasted_tokens += wasted
        self.budget.spend(self.clock(), wasted)

    async def _send(
        self,
        call: SpecCall,
        body: dict[str, Any],
        *,
        waste: bool = False,
        extra: Mapping[str, str] | None = None,
        session: str | None = None,
    ) -> None:
        upstream = next(u for u in self.pool.upstreams if u.alias == call.alias)
        content = json.dumps(body).encode()
        out = UpstreamCall(
            upstream,
            "chat/completions",
            UpstreamClient.body(upstream, body, content, LOWEST_PRIORITY),
            UpstreamClient.headers(upstream, call.agent, extra or {}, session=session),
            call.agent,
            retries=0,
        )
        try:
            opened = await self.upstreams.open(out)
            ok: bool | None = None
            try:
                call.status = opened.response.status
                call.headers = [
                    (k, v) for k, v in opened.response.headers if k.lower() in (b"content-type", b"content-encoding")
                ]
                call.changed.set()
                async for chunk in self.upstreams.chunks(opened):
                    call.chunks.append(chunk)
                    call.changed.set()
                ok = call.status < 500
            except ProxyError:
                ok = False
                raise
            finally:
                await self.upstreams.close(opened, ok=ok)
            if call.status != 200:
                self.stats.failed += 1
        except ProxyError as exc:
            self.stats.failed += 1
            call.status = call.status or 502
            log.info("speculative call failed", error=exc.message)
        finally:
            call.done = True
            call.changed.set()
            if waste:
                tokens = call.tokens()
                self.stats.wasted_tokens += tokens
                self.budget.spend(self.clock(), tokens)

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "enabled": self.settings.enabled,
            "started": s.started,
            "warmed": s.warmed,
            "served": s.served,
            "mismatched": s.mismatched,
            "cancelled_for_real_calls": s.cancelled_for_real_calls,
            "expired": s.expired,
            "failed": s.failed,
            "skipped_no_capacity_or_budget": s.skipped,
            "pending": len(self.pending),
            "wasted_tokens": s.wasted_tokens,
            "wasted_tokens_last_minute": self.budget.used(self.clock()),
            "time_saved_s": round(s.time_saved_s, 3),
            "mode": self.settings.mode,
            "followups": s.followups,
            "results_known": s.results_known,
            "results_unknown": s.results_unknown,
            "too_late": s.too_late,
            "sidecars_known": len(self.book.peek_urls()),
            # Tool-level speculation as the sidecars report it: test pre-runs, next-action prediction, early runs.
            **fleet_counters(self.book.sidecar_reports()),
            "stream_tools": self.early.status(),
        }

    async def aclose(self) -> None:
        await self.early.aclose()
        for task in list(self._followups):
            task.cancel()
        for task in list(self._followups):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for agent in list(self.pending):
            call = self.pending.pop(agent)
            if call.task is not None:
                call.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call.task


class SpeculationCollector:
    """Prometheus view of `Speculator.status()`: `goose_sidecar_speculation_*`."""

    def __init__(self, speculator: Speculator) -> None:
        self.speculator = speculator

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        s = self.speculator.stats
        # A total and its parts never share a metric (a sum over the label would count calls twice): the calls
        # started have their own name, the outcome label holds disjoint outcomes only.
        yield CounterMetricFamily(
            "goose_sidecar_speculation_calls_started", "Speculative LLM calls sent upstream", s.started
        )
        calls = CounterMetricFamily(
            "goose_sidecar_speculation_calls",
            "Speculative LLM calls by outcome (skipped ones were never sent)",
            labels=["outcome"],
        )
        for outcome, value in (
            ("warmed", s.warmed),
            ("served", s.served),
            ("mismatched", s.mismatched),
            ("cancelled_for_real_calls", s.cancelled_for_real_calls),
            ("expired", s.expired),
            ("failed", s.failed),
            ("skipped", s.skipped),
        ):
            calls.add_metric([outcome], value)
        yield calls
        followups = CounterMetricFamily(
            "goose_sidecar_speculation_followups",
            "Answers ending in tool calls, by whether every result was already known to the sidecar",
            labels=["outcome"],
        )
        for outcome, value in (
            ("results_known", s.results_known),
            ("results_unknown", s.results_unknown),
            ("too_late", s.too_late),
        ):
            followups.add_metric([outcome], value)
        yield followups
        yield CounterMetricFamily(
            "goose_sidecar_speculation_wasted_tokens", "Tokens spent on speculative calls never served", s.wasted_tokens
        )
        yield CounterMetricFamily(
            "goose_sidecar_speculation_time_saved_seconds", "Agent time saved by served speculation", s.time_saved_s
        )
        fleet = fleet_counters(self.speculator.book.sidecar_reports())
        yield CounterMetricFamily(
            "goose_sidecar_speculation_test_runs_started",
            "Speculative test runs started in the sidecars (as the sidecars report them)",
            fleet["test_runs"]["started"],
        )
        runs = CounterMetricFamily(
            "goose_sidecar_speculation_test_runs",
            "Speculative test runs in the sidecars, by outcome (as the sidecars report them)",
            labels=["outcome"],
        )
        for outcome in ("used", "cancelled", "discarded", "unused"):
            runs.add_metric([outcome], fleet["test_runs"][outcome])
        yield runs
        yield CounterMetricFamily(
            "goose_sidecar_speculation_test_time_saved_seconds",
            "Agent time saved by speculative test runs (as the sidecars report it)",
            fleet["test_runs"]["time_saved_s"],
        )
        # Three names, not one label: top-3 hits include the top-1 hits, and both are a part of the predictions.
        for name, key, help_text in (
            ("goose_sidecar_predictions", "predictions", "Next-action predictions made in the sidecars"),
            ("goose_sidecar_prediction_top1_hits", "top1", "Predictions whose first choice was the next action"),
            ("goose_sidecar_prediction_top3_hits", "top3", "Predictions with the next action among the first three"),
        ):
            yield CounterMetricFamily(name, help_text, fleet["prediction"][key])
        # Started, used and wasted: used and wasted are parts of started, so each is its own name.
        for outcome in ("started", "used", "wasted"):
            yield CounterMetricFamily(
                f"goose_sidecar_speculation_early_runs_{outcome}",
                f"Tool calls the sidecars started while their answer streamed: {outcome} (as the sidecars report)",
                fleet["early_runs"][outcome],
            )
        yield CounterMetricFamily(
            "goose_sidecar_speculation_early_time_saved_seconds",
            "Agent time saved by tool calls started while their answer streamed (as the sidecars report it)",
            fleet["early_runs"]["time_saved_s"],
        )
        starter = self.speculator.early.stats
        for name, help_text, value in (
            ("calls_seen", "Complete sidecar tool calls seen in streamed answers", starter.calls_seen),
            ("starts_sent", "Early starts sent to the sidecars for those calls", starter.starts_sent),
            ("starts_failed", "Early starts a sidecar did not accept", starter.starts_failed),
            ("dropped", "Early starts not sent: too many POSTs to sidecars already in flight", starter.dropped),
        ):
            yield CounterMetricFamily(f"goose_sidecar_speculation_early_{name}", help_text, value)
