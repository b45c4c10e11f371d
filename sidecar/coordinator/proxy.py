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

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import httpx
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from sidecar.coordinator.errors import ErrorKind, ProxyError, error_body, sse_error_frame, translate_upstream_exception
from sidecar.coordinator.keys import bearer_token
from sidecar.coordinator.upstream import Upstream
from sidecar.core.identity import Identity, IdentityConflict, resolve_identity
from sidecar.core.openai_request import Endpoint, ParsedRequest, RequestError, encode_body, parse_request
from sidecar.obs import bind_request, clear_request, get_logger

if TYPE_CHECKING:
    from sidecar.coordinator.app import CoordinatorState

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
_RELAY_HEADERS = (b"content-type", b"content-length", b"content-encoding", b"retry-after")


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
            raw = await read_body(receive, headers, state.config.coordinator.max_body_bytes)
            state.telemetry.relayed_bytes.labels("request").inc(len(raw))
            parsed = _parse(raw, self.endpoint)
            identity = self._identify(scope, headers, parsed)
            bind_request(agent_id=identity.agent_id, session_id=identity.session_id)
            resolved = state.pool.resolve(parsed.model)
            if resolved is None:
                known = ", ".join(state.pool.known_models())
                raise ProxyError(
                    404, ErrorKind.UNKNOWN_MODEL, f"The model `{parsed.model}` does not exist. Served: {known}", "model"
                )
        except ProxyError as error:
            state.telemetry.error(error.kind)
            log.info("request_refused", status=error.status, kind=error.kind, reason=error.message)
            await send_error(send, error, request_id)
            return
        except anyio.get_cancelled_exc_class():
            raise
        upstream, served_name = resolved
        if served_name != parsed.model:
            body = dict(parsed.body, model=served_name)
            parsed = replace(parsed, body=body, forward_body=encode_body(body), model=served_name)
        exchange = Exchange(state, parsed, identity, upstream, request_id, headers, started)
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
        upstream: Upstream,
        request_id: str,
        headers: Headers,
        started: float,
    ) -> None:
        self.state = state
        self.parsed = parsed
        self.identity = identity
        self.upstream = upstream
        self.request_id = request_id
        self.client_headers = headers
        self.started = started
        self.status: int | None = None
        self.bytes_out = 0
        self.first_byte: float | None = None
        self.agent = state.telemetry.agent(identity.agent_id, time.monotonic())
        self.agent.add_session(identity.session_id)
        self.agent.last_model = parsed.model
        self.relayed_all = False  # the upstream's whole body reached the client

    def client_left(self) -> None:
        """The client went away. After the whole body was relayed (clients close right after [DONE]) that is
        the normal end, not an early disconnect."""
        if self.relayed_all:
            return
        self.state.telemetry.error(ErrorKind.CLIENT_DISCONNECT, self.agent)
        log.info("client_disconnected", model=self.parsed.model, bytes=self.bytes_out)

    def upstream_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept-encoding": "identity", "x-request-id": self.request_id}
        for name, value in self.client_headers.items():
            if name not in _DROP_HEADERS:
                headers[name] = value
        # The client's key is for the coordinator when keys are on; otherwise pass it through (plain proxy).
        authorization = self.client_headers.get("authorization")
        if authorization and not self.state.keys:
            headers["authorization"] = authorization
        headers.update(self.upstream.headers)
        return headers

    async def run(self, send: Send) -> None:
        state, telemetry = self.state, self.state.telemetry
        replica = state.pool.pick_replica(self.upstream)
        url = f"{replica.url}/v1/{self.parsed.endpoint}"
        model = self.parsed.model
        replica.in_flight += 1
        replica.served += 1
        self.agent.in_flight += 1
        telemetry.in_flight_total += 1
        telemetry.in_flight.labels(model).inc()
        try:
            request = state.client.build_request(
                "POST", url, content=self.parsed.forward_body, headers=self.upstream_headers()
            )
            try:
                response = await state.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                error = translate_upstream_exception(exc, replica.url)
                telemetry.error(error.kind, self.agent)
                log.warning("upstream_failed", url=replica.url, kind=error.kind, reason=error.message)
                self.status = error.status
                await send_error(send, error, self.request_id)
                return
            try:
                await self._relay(response, send)
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        finally:
            replica.in_flight -= 1
            self.agent.in_flight -= 1
            telemetry.in_flight_total -= 1
            telemetry.in_flight.labels(model).dec()
            self._account()

    async def _relay(self, response: httpx.Response, send: Send) -> None:
        telemetry = self.state.telemetry
        self.status = response.status_code
        headers = [(k, v) for k, v in response.headers.raw if k.lower() in _RELAY_HEADERS]
        headers.append((b"x-request-id", self.request_id.encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        if response.status_code >= 400:
            telemetry.error(ErrorKind.UPSTREAM_STATUS, self.agent)
        is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
        try:
            async for chunk in response.aiter_raw():
                if self.first_byte is None:
                    self.first_byte = time.perf_counter()
                self.bytes_out += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if chunk.endswith(b"data: [DONE]\n\n"):
                    self.relayed_all = True  # the client may close now, before the upstream's end of stream
            self.relayed_all = True
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

    def _account(self) -> None:
        telemetry = self.state.telemetry
        end = time.perf_counter()
        total = end - self.started
        model = self.parsed.model
        status = str(self.status) if self.status is not None else "499"  # cancelled before any answer
        telemetry.requests.labels(str(self.parsed.endpoint), model, status).inc()
        telemetry.total_requests += 1
        self.agent.requests += 1
        telemetry.relayed_bytes.labels("response").inc(self.bytes_out)
        if self.first_byte is not None:
            ttfb = self.first_byte - self.started
            telemetry.ttfb.labels(model).observe(ttfb)
            telemetry.recent_ttfb.append(ttfb)
        if self.status == 200 and self.relayed_all:
            telemetry.duration.labels(model).observe(total)
            telemetry.recent_total.append(total)
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


def _request_id(headers: Headers) -> str:
    given = headers.get("x-request-id", "")
    if 0 < len(given) <= 64 and given.replace("-", "").replace("_", "").isalnum():
        return given
    return uuid.uuid4().hex[:16]


__all__ = ["CompletionsEndpoint", "error_body", "run_until_disconnect"]
