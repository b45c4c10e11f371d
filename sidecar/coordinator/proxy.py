"""The completions relay: read -> parse -> identify -> resolve upstream -> send -> relay bytes unchanged.

Raw ASGI on purpose. Starlette's StreamingResponse (ASGI 2.4) only notices a client that went away when a
write fails, so a client leaving during a long prefill or while queued would keep its upstream call alive.
Here one watcher task listens for `http.disconnect` for the whole exchange and cancels it at once; cancelling
closes the upstream stream, and vLLM aborts a request whose connection closes (frees its GPU slot).

Fidelity: the upstream's status, content type and body bytes (SSE frames, in-band error frames, usage chunk,
`[DONE]`) reach the client unchanged and chunk by chunk, never buffered. When the upstream connection breaks
after the response started, an SSE stream gets vLLM's in-band error frame and `[DONE]` so clients end cleanly.
"""

from __future__ import annotations

import functools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import httpx
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from sidecar.coordinator.dispatcher import Slot
from sidecar.coordinator.errors import ErrorKind, ProxyError, error_body, sse_error_frame, translate_upstream_exception
from sidecar.coordinator.keys import bearer_token
from sidecar.coordinator.outbound import merge_headers
from sidecar.coordinator.planner import CallPlan
from sidecar.coordinator.telemetry import model_label
from sidecar.coordinator.upstream import Replica
from sidecar.core.breaker import backoff_s
from sidecar.core.identity import Identity, IdentityConflict, resolve_identity
from sidecar.core.openai_request import Endpoint, ParsedRequest, RequestError, encode_body, parse_request
from sidecar.core.stages import native_priority
from sidecar.core.usage import Usage, parse_usage
from sidecar.obs import bind_request, clear_request, get_logger

if TYPE_CHECKING:
    from sidecar.coordinator.app import CoordinatorState
    from sidecar.coordinator.early import StreamWatch

log = get_logger("sidecar.coordinator.proxy")

# Request headers that stay here: hop-by-hop ones, those httpx sets itself, and the coordinator's own.
# Everything else reaches the upstream as the client sent it. (`authorization` is decided per call.)
_DROP_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding", "authorization",
        "x-agent-id", "x-priority", "x-request-id",
    }
)  # fmt: skip
USAGE_TAIL_BYTES = 4096
_RETRY_STATUSES = frozenset({502, 503})
_RETRY_KINDS = frozenset({ErrorKind.UNREACHABLE, ErrorKind.STREAM_BROKEN})
_RELAY_HEADERS = (b"content-type", b"content-length", b"content-encoding", b"retry-after")
# A streamed answer is kept for speculation's follow-up (`Speculator.after_response`) up to this size.
KEEP_FRAMES_BYTES = 1024 * 1024


async def run_until_disconnect(receive: Receive, send: Send, work: Callable[[Send], Awaitable[None]]) -> bool:
    """Run `work(send)` until it finishes or the client disconnects (then cancel it). True if the client left
    before the response was complete (a disconnect seen after the last body message is the normal end)."""
    disconnected = False
    complete = False

    async def tracking_send(message: Message) -> None:
        nonlocal complete
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            complete = True
        await send(message)

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not complete:
                        disconnected = True
                        group.cancel_scope.cancel()
                    return

        group.start_soon(watch)
        await work(tracking_send)
        group.cancel_scope.cancel()
    return disconnected


async def send_error(send: Send, error: ProxyError, request_id: str) -> None:
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"x-request-id", request_id.encode()))
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(receive: Receive, headers: Headers, limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProxyError(413, ErrorKind.TOO_LARGE, f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise anyio.get_cancelled_exc_class()()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ProxyError(413, ErrorKind.TOO_LARGE, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class CompletionsEndpoint:
    """ASGI endpoint for POST chat/completions and completions (any of the accepted paths)."""

    def __init__(self, state: CoordinatorState, endpoint: Endpoint) -> None:
        self.state = state
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = _request_id(headers)
        clear_request()
        bind_request(request_id=request_id)
        state = self.state
        try:
            header_bytes = sum(len(k) + len(v) for k, v in scope["headers"])
            if header_bytes > state.config.coordinator.max_header_bytes:
                raise ProxyError(431, ErrorKind.TOO_LARGE, f"request headers of {header_bytes} bytes exceed the limit")
            raw = await read_body(receive, headers, state.config.coordinator.max_body_bytes)
            state.telemetry.relayed_bytes.labels("request").inc(len(raw))
            parsed = _parse(raw, self.endpoint)
            identity = self._identify(scope, headers, parsed)
            bind_request(agent_id=identity.agent_id, session_id=identity.session_id)
            plan = state.planner.plan(parsed, identity, headers.get("x-priority"), time.monotonic())
        except ProxyError as error:
            state.telemetry.error(error.kind)
            log.info("request_refused", status=error.status, kind=error.kind, reason=error.message)
            await send_error(send, error, request_id)
            return
        bind_request(tier=str(plan.tier))
        if plan.route.served_name != parsed.model:
            body = dict(parsed.body, model=plan.route.served_name)
            parsed = replace(parsed, body=body, forward_body=encode_body(body), model=plan.route.served_name)
        speculator = getattr(state, "speculator", None)
        if speculator is not None and self.endpoint == "chat/completions":
            hit = speculator.take(identity.agent_id, parsed.body, parsed.stream)
            if hit is not None:  # the very same request, already sent: relay its answer from where it is
                left = await run_until_disconnect(receive, send, lambda s: speculator.serve(hit, s, request_id))
                if not left and hit.done and hit.status == 200 and hit.stream:  # its own next call, in turn
                    forward = forward_headers(headers, bool(state.keys))
                    speculator.after_response(
                        identity.agent_id, hit.alias, parsed.body, hit.chunks, forward, identity.session_id
                    )
                return
        exchange = Exchange(state, parsed, identity, plan, request_id, headers, started)
        disconnected = await run_until_disconnect(receive, send, exchange.run)
        if disconnected:
            exchange.client_left()

    def _identify(self, scope: Scope, headers: Headers, parsed: ParsedRequest) -> Identity:
        state = self.state
        key_agent: str | None = None
        if state.keys:
            token = bearer_token(headers.get("authorization"))
            key_agent = state.keys.get(token) if token else None
            if key_agent is None:
                raise ProxyError(401, ErrorKind.UNAUTHORIZED, "a valid API key is required (Authorization: Bearer KEY)")
        try:
            return resolve_identity(
                body_agent_id=parsed.agent_id,
                header_agent_id=headers.get("x-agent-id"),
                path_agent_id=scope.get("path_params", {}).get("agent_id"),
                key_agent_id=key_agent,
                session_id=headers.get("agent-session-id") or headers.get("goose-session-id"),
            )
        except IdentityConflict as exc:
            raise ProxyError(403, ErrorKind.FORBIDDEN, str(exc), "agent_id") from None


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
        self.error: ProxyError | None = None
        self.bytes_out = 0
        self.first_byte: float | None = None
        self.agent = state.telemetry.agent(identity.agent_id, time.monotonic())
        self.agent.add_session(identity.session_id)
        self.agent.last_model = plan.upstream.alias
        self.agent.stage = None if plan.priority.stage is None else str(plan.priority.stage)
        self.agent.tier = str(plan.tier)
        self.relayed_all = False  # the upstream's whole body reached the client
        # The streamed answer's bytes, kept only when speculation may predict the agent's next call from them.
        speculator = state.speculator
        keep = speculator is not None and speculator.settings.enabled and parsed.stream
        self.frames: list[bytes] | None = [] if keep and parsed.endpoint == "chat/completions" else None
        # Streaming tool execution: reads the relayed bytes (after each is sent) to start tool calls early.
        self.watch: StreamWatch | None = None
        if speculator is not None and parsed.stream and parsed.endpoint == "chat/completions":
            self.watch = speculator.early.watch(identity.agent_id, identity.session_id)

    def client_left(self) -> None:
        """The client went away. After the whole body was relayed (clients close right after [DONE]) that is
        the normal end, not an early disconnect."""
        if self.relayed_all:
            return
        self.state.telemetry.error(ErrorKind.CLIENT_DISCONNECT, self.agent)
        log.info("client_disconnected", model=self.parsed.model, bytes=self.bytes_out)

    def _plan_headers(self) -> list[tuple[bytes, bytes]]:
        """What the coordinator decided, for clients that want it (bodies stay untouched)."""
        plan = self.plan
        waited = 0.0 if self.slot is None else self.slot.waited_s
        return [
            (b"x-request-id", self.request_id.encode()),
            (b"x-goose-sidecar-tier", str(plan.tier).encode()),
            (b"x-goose-sidecar-stage", str(plan.priority.stage or "").encode()),
            (b"x-goose-sidecar-model", (plan.route.alias or "").encode()),
            (b"x-goose-sidecar-queue-ms", f"{waited * 1000:.1f}".encode()),
        ]

    def upstream_headers(self, replica: Replica) -> httpx.Headers:
        headers = {"content-type": "application/json", "accept-encoding": "identity", "x-request-id": self.request_id}
        headers.update(forward_headers(self.client_headers, bool(self.state.keys)))
        # Modal routes a session to one replica (best effort), keeping the agent's prefix cache warm there.
        # The coordinator's headers replace a client's of the same name in any case (outbound.py).
        headers = merge_headers(headers, {**self.upstream.headers, "Modal-Session-ID": self.identity.agent_id})
        if self.upstream.session_id and self.identity.session_id:
            headers["X-Session-ID"] = self.identity.session_id  # vLLM 0.33+'s session id (reference/vllm.md)
        # latin-1, as HTTP/1.1 reads header bytes: a client's obs-text value goes on as the bytes it sent.
        return httpx.Headers(headers, encoding="latin-1")

    @functools.cached_property
    def metric_model(self) -> str:
        """The `model` label of this call's metrics: a model the coordinator serves, else "other". A name taken
        from the client is unbounded cardinality (20 calls with 256 KiB names grew /metrics to 120 MiB). Fixed
        at first use, so the in-flight gauge goes down under the label it went up under."""
        return model_label(self.parsed.model, self.state.pool.upstreams)

    async def run(self, send: Send) -> None:
        state, telemetry = self.state, self.state.telemetry
        model = self.metric_model
        self.agent.in_flight += 1
        telemetry.in_flight_total += 1
        telemetry.in_flight.labels(model).inc()
        try:
            try:
                await self._wait_for_slot()
            except ProxyError as error:
                telemetry.error(error.kind, self.agent)
                self.status = error.status
                await send_error(send, error, self.request_id)
                return
            response, replica = await self._connect()
            if response is None:
                return await self._fail(send, replica)
            try:
                await self._relay(response, send)
                if self.relayed_all:
                    state.pool.succeeded(replica)
                    self._follow_up()
                else:
                    state.pool.failed(replica)
            finally:
                replica.in_flight -= 1
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        finally:
            if self.slot is not None:
                cached = self.usage.cached_prompt_tokens if self.usage is not None else None
                self.slot.release(self._gpu_tokens(), self._context_tokens(), cached)
            self.agent.in_flight -= 1
            self.agent.queued_since = None
            telemetry.in_flight_total -= 1
            telemetry.in_flight.labels(model).dec()
            self._account()

    async def _connect(self) -> tuple[httpx.Response | None, Replica]:
        """Send the call, retrying (with backoff, on another replica when there is one) while no byte has reached
        the client: connection failures, and 502/503 answers (a Modal replica cold-starting, a vLLM restarting).
        Timeouts are not retried (the upstream may be working on it). Returns the response to relay, or None with
        `self.error` set."""
        pool, coordinator = self.state.pool, self.state.config.coordinator
        tried: set[str] = set()
        attempt = 0
        while True:
            replica = pool.pick_replica(self.upstream, self.identity.agent_id, exclude=tried)
            replica.in_flight += 1  # a returned response keeps it; run() gives it back
            try:
                outcome = await self._send_upstream(replica)
            except BaseException:
                replica.in_flight -= 1
                raise
            if isinstance(outcome, ProxyError):
                replica.in_flight -= 1
                self.error = outcome
                pool.failed(replica)
                retryable = outcome.kind in _RETRY_KINDS
            else:
                if outcome.status_code >= 500:
                    pool.failed(replica)
                retryable = outcome.status_code in _RETRY_STATUSES
            if not retryable or attempt >= coordinator.retries:
                return (None if isinstance(outcome, ProxyError) else outcome), replica
            if not isinstance(outcome, ProxyError):
                replica.in_flight -= 1
                await outcome.aclose()
            attempt += 1
            tried.add(replica.url)
            self.state.telemetry.retries.labels(self.upstream.alias).inc()
            delay = backoff_s(attempt, coordinator.retry_backoff_s, jitter=random.random())
            log.info("upstream_retry", url=replica.url, attempt=attempt, delay_s=round(delay, 3))
            await anyio.sleep(delay)

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

    async def _wait_for_slot(self) -> None:
        scheduling = self.state.config.scheduling
        if scheduling.batch_window_ms > 0:  # the seed's batching experiment: release at window boundaries
            window = scheduling.batch_window_ms / 1000
            await anyio.sleep(window - (time.monotonic() % window))
        self.agent.queued_since = time.monotonic()
        dispatcher = self.plan.dispatcher
        hint = self._prompt_estimate() if dispatcher.kv_ledger is not None else None
        self.slot = await dispatcher.acquire(self.identity.agent_id, self.plan.tier, prompt_tokens=hint)
        self.agent.queued_since = None
        self.agent.last_wait_s = self.slot.waited_s
        self.state.telemetry.queue_wait.labels(self.upstream.alias, str(self.plan.tier)).observe(self.slot.waited_s)

    async def _send_upstream(self, replica: Replica) -> httpx.Response | ProxyError:
        """Send the call; a ProxyError when the upstream could not be reached."""
        client = self.state.client
        with_priority = self._native_priority()
        body = self.parsed.forward_body
        if with_priority is not None:
            body = encode_body(dict(self.parsed.body, priority=with_priority))
        url = f"{replica.url}/v1/{self.parsed.endpoint}"
        headers = self.upstream_headers(replica)
        try:
            return await client.send(client.build_request("POST", url, content=body, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            return translate_upstream_exception(exc, replica.url)

    def _native_priority(self) -> int | None:
        """vLLM's integer priority to add, or None: only where the upstream is configured to order by it (vLLM
        accepts and ignores it otherwise, so sending it would only pretend), only for ordering policies, never
        over the client's own."""
        if (
            not self.upstream.native_priority
            or self.state.config.scheduling.policy == "fcfs"
            or "priority" in self.parsed.body
        ):
            return None
        value = native_priority(self.plan.tier)
        return None if value == 0 else value  # 0 is vLLM's default: leave the body untouched

    async def _fail(self, send: Send, replica: Replica) -> None:
        error = self.error
        assert error is not None
        self.state.telemetry.error(error.kind, self.agent)
        log.warning("upstream_failed", url=replica.url, kind=error.kind, reason=error.message)
        self.status = error.status
        await send_error(send, error, self.request_id)

    async def _relay(self, response: httpx.Response, send: Send) -> None:
        telemetry = self.state.telemetry
        self.status = response.status_code
        headers = [(k, v) for k, v in response.headers.raw if k.lower() in _RELAY_HEADERS]
        headers += self._plan_headers()
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        if response.status_code >= 400:
            telemetry.error(ErrorKind.UPSTREAM_STATUS, self.agent)
        is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
        try:
            async for chunk in response.aiter_raw():
                if self.first_byte is None:
                    self.first_byte = time.perf_counter()
                self.bytes_out += len(chunk)
                self.tail = (self.tail + chunk)[-USAGE_TAIL_BYTES:]
                if self.frames is not None:
                    self.frames.append(chunk)
                    if self.bytes_out > KEEP_FRAMES_BYTES:
                        self.frames = None  # too long to be worth predicting from
                if chunk.endswith(b"data: [DONE]\n\n"):
                    self._finished(response.status_code)  # before the send: clients close right after [DONE]
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                finally:  # after the send: the client's bytes are never delayed (even if it left during it)
                    if self.watch is not None and response.status_code == 200:
                        self.watch.feed(chunk)
            self._finished(response.status_code)
        except httpx.HTTPError as exc:
            error = translate_upstream_exception(exc, response.request.url.host or "upstream")
            telemetry.error(ErrorKind.STREAM_BROKEN, self.agent)
            log.warning("upstream_stream_broken", reason=error.message, bytes=self.bytes_out)
            if is_sse:
                frame = sse_error_frame(502, f"upstream stream broke: {error.message}")
                self.bytes_out += len(frame)
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            else:
                raise  # a JSON body cut short cannot be repaired: drop the connection so the client sees it
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _finished(self, status: int) -> None:
        """The whole answer is relayed (or all but the upstream's end of stream): note its usage once."""
        if not self.relayed_all:
            self.relayed_all = True
            self.usage = parse_usage(self.tail) if status == 200 else None

    def _gpu_tokens(self) -> float:
        """GPU work of this call for least-attained-service ordering: uncached prompt plus completion tokens from
        the answer's usage object; the number of SSE frames when it has none."""
        if self.usage is not None:
            return float(self.usage.prompt_tokens - self.usage.cached_prompt_tokens + self.usage.completion_tokens)
        return float(self.tail.count(b"data: ")) if self.parsed.stream else 0.0

    def _prompt_estimate(self) -> int:
        """Prompt tokens estimated from the messages' JSON at ~4 characters per token (only the `kv` policy asks)."""
        return len(json.dumps(self.parsed.body.get("messages", []), ensure_ascii=False)) // 4

    def _context_tokens(self) -> int | None:
        """Prompt + completion tokens from the answer's usage (the KV the engine cached for this agent), or None."""
        if self.usage is None:
            return None
        return self.usage.prompt_tokens + self.usage.completion_tokens

    def _account(self) -> None:
        telemetry = self.state.telemetry
        end = time.perf_counter()
        total = end - self.started
        model = self.metric_model
        status = str(self.status) if self.status is not None else "499"  # cancelled before any answer
        telemetry.requests.labels(str(self.parsed.endpoint), model, status).inc()
        telemetry.total_requests += 1
        self.agent.requests += 1
        telemetry.relayed_bytes.labels("response").inc(self.bytes_out)
        served = (self.upstream.alias, str(self.plan.tier))
        if self.first_byte is not None:
            ttfb = self.first_byte - self.started
            telemetry.ttfb.labels(*served).observe(ttfb)
            telemetry.recent_ttfb.add(ttfb)
        if self.status == 200 and self.relayed_all:
            telemetry.duration.labels(*served).observe(total)
            telemetry.recent_total.add(total)
        if self.status == 200:
            self.state.board.record_answer(self.upstream.alias, self.usage, self.identity.agent_id, str(self.plan.tier))
            if self.usage is not None:
                telemetry.prompt_tokens.labels(*served).inc(self.usage.prompt_tokens)
                telemetry.cached_prompt_tokens.labels(*served).inc(self.usage.cached_prompt_tokens)
                telemetry.generation_tokens.labels(*served).inc(self.usage.completion_tokens)
                self.agent.prompt_tokens += self.usage.prompt_tokens
                self.agent.completion_tokens += self.usage.completion_tokens
        log.info(
            "request",
            status=status,
            model=model,
            stream=self.parsed.stream,
            ttfb_ms=None if self.first_byte is None else round((self.first_byte - self.started) * 1000, 2),
            duration_ms=round(total * 1000, 2),
            bytes=self.bytes_out,
        )


def _parse(raw: bytes, endpoint: Endpoint) -> ParsedRequest:
    try:
        return parse_request(raw, endpoint)
    except RequestError as exc:
        raise ProxyError(400, ErrorKind.BAD_REQUEST, exc.message, exc.param) from None


def forward_headers(client_headers: Headers, keys_on: bool) -> dict[str, str]:
    """The client's request headers that go upstream with its call (and with a speculative call made for it).
    The client's key is for the coordinator when keys are on; otherwise it is passed through (plain proxy)."""
    headers = {name: value for name, value in client_headers.items() if name not in _DROP_HEADERS}
    authorization = client_headers.get("authorization")
    if authorization and not keys_on:
        headers["authorization"] = authorization
    return headers


def _request_id(headers: Headers) -> str:
    given = headers.get("x-request-id", "")
    if 0 < len(given) <= 64 and given.replace("-", "").replace("_", "").isalnum():
        return given
    return uuid.uuid4().hex[:16]


__all__ = ["CompletionsEndpoint", "error_body", "run_until_disconnect"]
