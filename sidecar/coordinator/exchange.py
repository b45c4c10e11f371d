"""One planned call relayed upstream: wait for a slot -> relay -> account, each one call (`Exchange.run`).

Fidelity: the upstream's status, content type and body bytes (SSE frames, in-band error frames, usage chunk,
`[DONE]`) reach the client unchanged and chunk by chunk, never buffered. When the upstream connection breaks
after the response started, an SSE stream gets vLLM's in-band error frame and `[DONE]` so clients end cleanly.
Whatever happens (an error, the client leaving, a cancellation), the slot, the replica's place and the in-flight
counts are given back exactly once and the call is accounted once.
"""

from __future__ import annotations

import functools
import json
import time
from typing import TYPE_CHECKING

import anyio
from starlette.datastructures import Headers
from starlette.types import Send

from sidecar.coordinator.dispatcher import Slot
from sidecar.coordinator.errors import ErrorKind, ProxyError, sse_error_frame
from sidecar.coordinator.planner import CallPlan
from sidecar.coordinator.telemetry import Answer, model_label
from sidecar.coordinator.upstream_client import Opened, UpstreamCall, UpstreamClient, forward_headers
from sidecar.core.identity import Identity
from sidecar.core.longtool import AnswerToolCalls
from sidecar.core.openai_request import ParsedRequest
from sidecar.core.stages import native_priority
from sidecar.core.usage import Usage, parse_usage
from sidecar.core.wire import MODEL_HEADER, QUEUE_MS_HEADER, REQUEST_ID_HEADER, STAGE_HEADER, TIER_HEADER
from sidecar.obs import get_logger

if TYPE_CHECKING:
    from sidecar.coordinator.early import StreamWatch
    from sidecar.coordinator.state import CoordinatorState

log = get_logger("sidecar.coordinator.exchange")

USAGE_TAIL_BYTES = 4096
_RELAY_HEADERS = (b"content-type", b"content-length", b"content-encoding", b"retry-after")
# A streamed answer is kept for speculation's follow-up (`Speculator.after_response`) up to this size.
KEEP_FRAMES_BYTES = 1024 * 1024


async def send_error(send: Send, error: ProxyError, request_id: str) -> None:
    """Answer with `error` in vLLM's shape (and its headers, such as Retry-After)."""
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Exchange:
    """One call relayed upstream; owns the accounting that must be released whatever happens."""

    def __init__(
        self,
        state: CoordinatorState,
        parsed: ParsedRequest,
        identity: Identity,
        plan: CallPlan,
        request_id: str,
        headers: Headers,
        started: float,
    ) -> None:
        self.state = state
        self.parsed = parsed
        self.identity = identity
        self.plan = plan
        self.upstream = plan.upstream
        self.slot: Slot | None = None
        self.tail = b""  # the last bytes relayed, where the usage chunk is
        self.usage: Usage | None = None
        self.request_id = request_id
        self.client_headers = headers
        self.started = started
        self.status: int | None = None
        self.bytes_out = 0
        self.first_byte: float | None = None
        self.agent = state.book.agent(identity.agent_id, time.monotonic())
        stage = None if plan.priority.stage is None else str(plan.priority.stage)
        state.telemetry.call_planned(self.agent, identity.session_id, plan.upstream.alias, stage, str(plan.tier))
        self.relayed_all = False  # the upstream's whole body reached the client
        # The streamed answer's bytes, kept only when speculation may predict the agent's next call from them.
        speculator = state.speculator
        keep = speculator is not None and speculator.settings.enabled and parsed.stream
        self.frames: list[bytes] | None = [] if keep and parsed.endpoint == "chat/completions" else None
        # Whether the answer runs a test run, for the `kv` policy's `kv_long_tool_keep_s` (None when unset: the
        # relay then reads nothing). Fed the relayed bytes after each is sent, as the watch below.
        self.answer_tools: AnswerToolCalls | None = None
        if plan.dispatcher.reads_long_tools and parsed.endpoint == "chat/completions":
            self.answer_tools = AnswerToolCalls(streamed=parsed.stream)
        # Streaming tool execution: reads the relayed bytes (after each is sent) to start tool calls early.
        self.watch: StreamWatch | None = None
        if speculator is not None and parsed.stream and parsed.endpoint == "chat/completions":
            self.watch = speculator.early.watch(identity.agent_id, identity.session_id)

    @functools.cached_property
    def metric_model(self) -> str:
        """The `model` label of this call's metrics: a model the coordinator serves, else "other". A name taken
        from the client is unbounded cardinality (20 calls with 256 KiB names grew /metrics to 120 MiB). Fixed
        at first use, so the in-flight gauge goes down under the label it went up under."""
        return model_label(self.parsed.model, self.state.pool.upstreams)

    async def run(self, send: Send) -> None:
        """Wait for a slot -> relay -> account; an error the coordinator answers itself goes out in vLLM's shape."""
        telemetry, model = self.state.telemetry, self.metric_model
        telemetry.call_started(self.agent, model)
        try:
            await self._wait_for_slot()
            await self._relay(await self._open(), send)
        except ProxyError as error:
            telemetry.error(error.kind, self.agent)
            self.status = error.status
            await send_error(send, error, self.request_id)
        finally:
            if self.slot is not None:
                cached = self.usage.cached_prompt_tokens if self.usage is not None else None
                self.slot.release(self._gpu_tokens(), self._context_tokens(), cached, self._long_tool())
            telemetry.call_ended(self.agent, model)
            self._account()

    def client_left(self) -> None:
        """The client went away. After the whole body was relayed (clients close right after [DONE]) that is
        the normal end, not an early disconnect."""
        if self.relayed_all:
            return
        self.state.telemetry.error(ErrorKind.CLIENT_DISCONNECT, self.agent)
        log.info("client_disconnected", model=self.parsed.model, bytes=self.bytes_out)

    # --- wait for a slot -------------------------------------------------------------------------------------

    async def _wait_for_slot(self) -> None:
        scheduling = self.state.config.scheduling
        if scheduling.batch_window_ms > 0:  # the seed's batching experiment: release at window boundaries
            window = scheduling.batch_window_ms / 1000
            await anyio.sleep(window - (time.monotonic() % window))
        self.state.telemetry.queued(self.agent, time.monotonic())
        dispatcher = self.plan.dispatcher
        hint = self._prompt_estimate() if dispatcher.kv_ledger is not None else None
        self.slot = await dispatcher.acquire(self.identity.agent_id, self.plan.tier, prompt_tokens=hint)
        self.state.telemetry.slot_granted(self.agent, self.upstream.alias, str(self.plan.tier), self.slot.waited_s)

    def _prompt_estimate(self) -> int:
        """Prompt tokens estimated from the messages' JSON at ~4 characters per token (only the `kv` policy asks)."""
        return len(json.dumps(self.parsed.body.get("messages", []), ensure_ascii=False)) // 4

    # --- relay -----------------------------------------------------------------------------------------------

    async def _open(self) -> Opened:
        """Send the call upstream (the client retries before any byte reached the client); raises ProxyError."""
        policy = self.state.config.scheduling.policy
        priority = None if policy == "fcfs" else native_priority(self.plan.tier)
        body = UpstreamClient.body(self.upstream, self.parsed.body, self.parsed.forward_body, priority)
        forwarded = forward_headers(self.client_headers, bool(self.state.keys))
        headers = UpstreamClient.headers(
            self.upstream,
            self.identity.agent_id,
            forwarded,
            request_id=self.request_id,
            session=self.identity.session_id,
        )
        call = UpstreamCall(self.upstream, str(self.parsed.endpoint), body, headers, self.identity.agent_id)
        return await self.state.upstreams.open(call)

    async def _relay(self, opened: Opened, send: Send) -> None:
        """Relay the response; the breaker hears whether the whole answer arrived. Then speculation's follow-up."""
        ok: bool | None = None
        try:
            await self._relay_body(opened, send)
            ok = self.relayed_all
        finally:
            await self.state.upstreams.close(opened, ok=ok)
        if ok:
            self._follow_up()

    def _plan_headers(self) -> list[tuple[bytes, bytes]]:
        """What the coordinator decided, for clients that want it (bodies stay untouched)."""
        plan = self.plan
        waited = 0.0 if self.slot is None else self.slot.waited_s
        return [
            (REQUEST_ID_HEADER.encode(), self.request_id.encode()),
            (TIER_HEADER.encode(), str(plan.tier).encode()),
            (STAGE_HEADER.encode(), str(plan.priority.stage or "").encode()),
            (MODEL_HEADER.encode(), (plan.route.alias or "").encode()),
            (QUEUE_MS_HEADER.encode(), f"{waited * 1000:.1f}".encode()),
        ]

    async def _relay_body(self, opened: Opened, send: Send) -> None:
        response = opened.response
        status = self.status = response.status
        headers = [(k, v) for k, v in response.headers if k.lower() in _RELAY_HEADERS]
        headers += self._plan_headers()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if status >= 400:
            self.state.telemetry.error(ErrorKind.UPSTREAM_STATUS, self.agent)
        is_sse = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
        try:
            async for chunk in self.state.upstreams.chunks(opened):
                if self.first_byte is None:
                    self.first_byte = time.perf_counter()
                self.bytes_out += len(chunk)
                self.tail = (self.tail + chunk)[-USAGE_TAIL_BYTES:]
                if self.frames is not None:
                    self.frames.append(chunk)
                    if self.bytes_out > KEEP_FRAMES_BYTES:
                        self.frames = None  # too long to be worth predicting from
                if chunk.endswith(b"data: [DONE]\n\n"):
                    self._finished(status)  # before the send: clients close right after [DONE]
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                finally:  # after the send: the client's bytes are never delayed (even if it left during it)
                    if self.watch is not None and status == 200:
                        self.watch.feed(chunk)
                    if self.answer_tools is not None:
                        self.answer_tools.feed(chunk)
            self._finished(status)
        except ProxyError as error:
            self.state.telemetry.error(ErrorKind.STREAM_BROKEN, self.agent)
            log.warning("upstream_stream_broken", reason=error.message, bytes=self.bytes_out)
            if not is_sse:
                raise _StreamCut() from error  # a JSON body cut short cannot be repaired: drop the connection
            frame = sse_error_frame(502, f"upstream stream broke: {error.message}")
            self.bytes_out += len(frame)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _finished(self, status: int) -> None:
        """The whole answer is relayed (or all but the upstream's end of stream): note its usage once."""
        if not self.relayed_all:
            self.relayed_all = True
            self.usage = parse_usage(self.tail) if status == 200 else None

    def _follow_up(self) -> None:
        """After the last byte went out: let speculation predict the agent's next call from this answer."""
        speculator = self.state.speculator
        if self.frames is None or speculator is None or self.status != 200:
            return
        speculator.after_response(
            self.identity.agent_id,
            self.upstream.alias,
            self.parsed.body,
            self.frames,
            forward_headers(self.client_headers, bool(self.state.keys)),
            self.identity.session_id,
        )

    # --- account ---------------------------------------------------------------------------------------------

    def _gpu_tokens(self) -> float:
        """GPU work of this call for least-attained-service ordering: uncached prompt plus completion tokens from
        the answer's usage object; the number of SSE frames when it has none."""
        if self.usage is not None:
            return float(self.usage.prompt_tokens - self.usage.cached_prompt_tokens + self.usage.completion_tokens)
        return float(self.tail.count(b"data: ")) if self.parsed.stream else 0.0

    def _long_tool(self) -> bool:
        """The whole answer reached the client and runs a long tool (a test run): the agent is off running it.
        Not known (False) when `kv_long_tool_keep_s` is unset, or the answer failed, was cut or not delivered."""
        tools = self.answer_tools
        return tools is not None and self.status == 200 and self.relayed_all and tools.runs_long_tool()

    def _context_tokens(self) -> int | None:
        """Prompt + completion tokens from the answer's usage (the KV the engine cached for this agent), or None."""
        if self.usage is None:
            return None
        return self.usage.prompt_tokens + self.usage.completion_tokens

    def _account(self) -> None:
        end = time.perf_counter()
        total = end - self.started
        ttfb = None if self.first_byte is None else self.first_byte - self.started
        tier = str(self.plan.tier)
        answer = Answer(
            str(self.parsed.endpoint), self.metric_model, self.upstream.alias, tier, self.status, self.bytes_out,
            ttfb, total, self.relayed_all, self.usage,
        )  # fmt: skip
        self.state.telemetry.answered(self.agent, answer)
        if self.status == 200:
            self.state.board.record_answer(self.upstream.alias, self.usage, self.agent, tier)
        log.info(
            "request",
            status=str(self.status) if self.status is not None else "499",
            model=self.metric_model,
            stream=self.parsed.stream,
            ttfb_ms=None if ttfb is None else round(ttfb * 1000, 2),
            duration_ms=round(total * 1000, 2),
            bytes=self.bytes_out,
        )


class _StreamCut(Exception):
    """A non-SSE body broke mid-way: the connection is dropped so the client sees the cut (never a 200 with half
    a JSON document that looks whole)."""
