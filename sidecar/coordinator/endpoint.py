"""The completions endpoint: read -> identify -> plan -> (a speculative answer, or) the exchange.

`CompletionsEndpoint.__call__` is the chat path, one call per step: `_read` (headers and body within their
limits, parsed), `_identify` (API key, body, header, path, session), `Planner.plan` (stage, tier, model), then
`Exchange.run` (wait for a slot -> relay -> account, exchange.py), unless speculation already holds this very
request's answer.

Raw ASGI on purpose. Starlette's StreamingResponse (ASGI 2.4) only notices a client that went away when a
write fails, so a client leaving during a long prefill or while queued would keep its upstream call alive.
Here one watcher task listens for `http.disconnect` for the whole exchange and cancels it at once; cancelling
closes the upstream stream, and vLLM aborts a request whose connection closes (frees its GPU slot).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from sidecar.coordinator.errors import ErrorKind, ProxyError
from sidecar.coordinator.exchange import Exchange, send_error
from sidecar.coordinator.keys import bearer_token
from sidecar.coordinator.planner import CallPlan
from sidecar.coordinator.upstream_client import forward_headers
from sidecar.core.identity import Identity, IdentityConflict, resolve_identity
from sidecar.core.openai_request import Endpoint, ParsedRequest, RequestError, encode_body, parse_request
from sidecar.core.wire import AGENT_HEADER, LEGACY_SESSION_HEADER, PRIORITY_HEADER, REQUEST_ID_HEADER, SESSION_HEADER
from sidecar.obs import bind_request, clear_request, get_logger

if TYPE_CHECKING:
    from sidecar.coordinator.state import CoordinatorState

log = get_logger("sidecar.coordinator.endpoint")
_REQUEST_ID, _PRIORITY, _AGENT = REQUEST_ID_HEADER.encode(), PRIORITY_HEADER.encode(), AGENT_HEADER.encode()
_SESSION, _LEGACY_SESSION = SESSION_HEADER.encode(), LEGACY_SESSION_HEADER.encode()


async def run_until_disconnect(receive: Receive, send: Send, work: Callable[[Send], Awaitable[None]]) -> bool:
    """Run `work(send)` until it finishes or the client disconnects (then cancel it). True if the client left
    before the response was complete (a disconnect seen after the last body message is the normal end).

    One plain asyncio task watches `receive` and cancels the calling task (`Task.cancel`) when the client
    leaves; that cancellation is taken back (`Task.uncancel`) here, so a cancellation from outside (server
    shutdown) still propagates. An anyio task group per call cost more than everything else the coordinator
    does per call (profile in docs/benchmarks.md). The work sees one `CancelledError`, as from any asyncio
    cancellation: its `finally` blocks (slot release, closing the upstream stream) run to their end."""
    task = asyncio.current_task()
    assert task is not None, "run_until_disconnect runs in a task"
    disconnected = False
    complete = False

    async def tracking_send(message: Message) -> None:
        nonlocal complete
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            complete = True
        await send(message)

    async def watch() -> None:
        nonlocal disconnected
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not complete:
                    disconnected = True
                    task.cancel()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await work(tracking_send)
    except asyncio.CancelledError:
        if not disconnected or task.uncancel() > 0:
            raise  # not (only) ours: the server is cancelling this request
        return True
    except BaseException:
        if disconnected:
            task.uncancel()  # the work turned our cancellation into another error; it propagates
        raise
    finally:
        watcher.cancel()
    if disconnected:
        task.uncancel()  # the work swallowed our cancellation; the client still left
    return disconnected


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, at most `limit` bytes (else ProxyError 413; `declared`: its Content-Length, if any); a
    client that left cancels the call."""
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
        # One dict for the few headers read here (the first of repeated names, as `Headers.get`): `Headers.get`
        # scans the list and raises a KeyError inside for each one absent.
        first: dict[bytes, bytes] = dict(reversed(scope["headers"]))
        request_id = _request_id(_text(first.get(_REQUEST_ID)))
        clear_request()
        bind_request(request_id=request_id)
        try:
            parsed = await self._read(scope, receive, first)
            identity = self._identify(scope, first, parsed)
            bind_request(agent_id=identity.agent_id, session_id=identity.session_id)
            plan = self.state.planner.plan(parsed, identity, _text(first.get(_PRIORITY)), time.monotonic())
        except ProxyError as error:
            self.state.telemetry.error(error.kind)
            log.info("request_refused", status=error.status, kind=error.kind, reason=error.message)
            await send_error(send, error, request_id)
            return
        bind_request(tier=str(plan.tier))
        parsed = _routed(parsed, plan)
        if await self._serve_speculative(receive, send, parsed, identity, headers, request_id):
            return
        exchange = Exchange(self.state, parsed, identity, plan, request_id, headers, started)
        if await run_until_disconnect(receive, send, exchange.run):
            exchange.client_left()

    async def _read(self, scope: Scope, receive: Receive, first: dict[bytes, bytes]) -> ParsedRequest:
        """The request within its header and body limits, parsed; ProxyError 431/413/400 otherwise."""
        limits = self.state.config.coordinator
        header_bytes = sum(len(k) + len(v) for k, v in scope["headers"])
        if header_bytes > limits.max_header_bytes:
            raise ProxyError(431, ErrorKind.TOO_LARGE, f"request headers of {header_bytes} bytes exceed the limit")
        raw = await read_body(receive, _text(first.get(b"content-length")), limits.max_body_bytes)
        self.state.telemetry.request_read(len(raw))
        try:
            return parse_request(raw, self.endpoint)
        except RequestError as exc:
            raise ProxyError(400, ErrorKind.BAD_REQUEST, exc.message, exc.param) from None

    def _identify(self, scope: Scope, first: dict[bytes, bytes], parsed: ParsedRequest) -> Identity:
        """Who is calling (`core.identity.resolve_identity`); ProxyError 401 without a valid key when keys are
        on, 403 when the sources disagree."""
        keys = self.state.keys
        key_agent: str | None = None
        if keys:
            token = bearer_token(_text(first.get(b"authorization")))
            key_agent = keys.get(token) if token else None
            if key_agent is None:
                raise ProxyError(401, ErrorKind.UNAUTHORIZED, "a valid API key is required (Authorization: Bearer KEY)")
        try:
            return resolve_identity(
                body_agent_id=parsed.agent_id,
                header_agent_id=_text(first.get(_AGENT)),
                path_agent_id=scope.get("path_params", {}).get("agent_id"),
                key_agent_id=key_agent,
                session_id=_text(first.get(_SESSION)) or _text(first.get(_LEGACY_SESSION)),
            )
        except IdentityConflict as exc:
            raise ProxyError(403, ErrorKind.FORBIDDEN, str(exc), "agent_id") from None

    async def _serve_speculative(
        self,
        receive: Receive,
        send: Send,
        parsed: ParsedRequest,
        identity: Identity,
        headers: Headers,
        request_id: str,
    ) -> bool:
        """Relay the answer of the speculative call made for exactly this request, from where it is; True when
        there was one (then its own next call is predicted, in turn)."""
        speculator = self.state.speculator
        if speculator is None or self.endpoint != "chat/completions":
            return False
        hit = speculator.take(identity.agent_id, parsed.body, parsed.stream)
        if hit is None:
            return False
        left = await run_until_disconnect(receive, send, lambda s: speculator.serve(hit, s, request_id))
        if not left and hit.done and hit.status == 200 and hit.stream:
            forward = forward_headers(headers, bool(self.state.keys))
            speculator.after_response(
                identity.agent_id, hit.alias, parsed.body, hit.chunks, forward, identity.session_id
            )
        return True


def _routed(parsed: ParsedRequest, plan: CallPlan) -> ParsedRequest:
    """The request as sent upstream: under the served name of the model the plan chose (body otherwise as is)."""
    if plan.route.served_name == parsed.model:
        return parsed
    body = dict(parsed.body, model=plan.route.served_name)
    return replace(parsed, body=body, forward_body=encode_body(body), model=plan.route.served_name)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _request_id(given: str | None) -> str:
    """The client's `X-Request-Id` when it is a short plain token, else a new one."""
    given = given or ""
    if 0 < len(given) <= 64 and given.replace("-", "").replace("_", "").isalnum():
        return given
    return os.urandom(8).hex()  # 16 hex digits, as uuid4().hex[:16] gave, without building a UUID
