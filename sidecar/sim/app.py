"""The simulator's HTTP server: vLLM's OpenAI-compatible surface over one engine driven in real time.

Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models` (bearer-protected when
`api_key` is set, like vLLM's `--api-key`), and open `GET /health`, `GET /version`, `GET /metrics`, and
vLLM's dev-mode `POST /reset_prefix_cache`.
One engine, one driver task (started in the lifespan) and one metrics registry per app: no module state, so
several sims run in one process. A client that disconnects aborts its request, which frees its KV at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sidecar.sim.answer import deltas
from sidecar.sim.driver import Driver, Ticket
from sidecar.sim.engine import Engine, Request
from sidecar.sim.faults import HEADER, Fault, UnknownFault, pick_fault
from sidecar.sim.metrics import CONTENT_TYPE, EngineMetrics
from sidecar.sim.profiles import Profile, resolve_profile
from sidecar.sim.protocol import (
    DONE,
    ApiError,
    Job,
    ServedModel,
    chat_choice,
    chat_response,
    chunk,
    completion_choice,
    completion_response,
    decode_body,
    error_body,
    parse_chat,
    parse_completion,
    sse,
    usage,
)
from sidecar.sim.settings import SimSettings

VLLM_VERSION = "0.32.0"  # the vLLM whose surface this imitates (tests/vllm compares the two)


class SimServer:
    """Everything one simulated model server owns."""

    def __init__(self, settings: SimSettings, profile: Profile, names: tuple[str, ...]) -> None:
        self.settings = settings
        self.profile = profile
        self.engine = Engine(profile, settings.scheduling_policy)
        self.metrics = EngineMetrics(self.engine, names[0])
        self.driver = Driver(
            self.engine, settings.time_scale, on_finish=self.metrics.observe, on_step=self.metrics.step
        )
        self.metrics.extra_waiting = lambda: self.driver.num_pending
        self.served = ServedModel(
            names,
            profile,
            self.engine.max_model_len,
            settings.scheduling_policy,
            settings.seed,
            settings.max_agent_steps,
        )
        self.created = int(time.time())
        self._rng = random.Random(settings.seed)
        self._count = 0

    def next_id(self, prefix: str) -> str:
        self._count += 1
        digest = hashlib.blake2b(f"{self.settings.seed}:{self.profile.name}:{self._count}".encode(), digest_size=16)
        return f"{prefix}-{digest.hexdigest()}"

    # --- routes ---------------------------------------------------------------------------------------------

    async def chat_completions(self, http: HttpRequest) -> Response:
        return await self._complete(http, chat=True)

    async def completions(self, http: HttpRequest) -> Response:
        return await self._complete(http, chat=False)

    async def models(self, http: HttpRequest) -> Response:
        if not self._authorized(http):
            return _unauthorized()
        data: list[dict[str, Any]] = [
            {
                "id": name,
                "object": "model",
                "created": self.created,
                "owned_by": "vllm",
                "root": self.profile.served_model_name,
                "parent": None,
                "max_model_len": self.served.max_model_len,
                "permission": [],
            }
            for name in self.served.names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, http: HttpRequest) -> Response:
        return Response(status_code=503 if self.driver.failure else 200)

    async def version(self, http: HttpRequest) -> Response:
        return JSONResponse({"version": VLLM_VERSION})

    async def reset_prefix_cache(self, http: HttpRequest) -> Response:
        """vLLM's dev-mode `POST /reset_prefix_cache`: forget cached free blocks (between benchmark runs)."""
        self.engine.kv.reset_prefix_cache()
        return Response(status_code=200)

    async def metrics_text(self, http: HttpRequest) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # --- completions ----------------------------------------------------------------------------------------

    def _authorized(self, http: HttpRequest) -> bool:
        key = self.settings.api_key
        return key is None or http.headers.get("authorization") == f"Bearer {key}"

    async def _complete(self, http: HttpRequest, chat: bool) -> Response:
        if not self._authorized(http):
            return _unauthorized()
        try:
            body = decode_body(await http.body())
            job = parse_chat(body, self.served) if chat else parse_completion(body, self.served)
            fault = pick_fault(http.headers.get(HEADER), self.settings, self._rng.random())
        except ApiError as exc:
            return JSONResponse(exc.body(), exc.status)
        except UnknownFault as exc:
            return JSONResponse(error_body(400, str(exc), HEADER), 400)
        if fault is Fault.HTTP_500 or self.driver.failure:
            message = self.driver.failure or "Simulated internal server error (fault injection)."
            return JSONResponse(error_body(500, message), 500)
        if fault is Fault.HTTP_503:
            return JSONResponse(error_body(503, "Service Unavailable (fault injection)."), 503)
        generation = job.generation
        request = Request(
            request_id=self.next_id("chatcmpl" if chat else "cmpl"),
            prompt=job.prompt,
            output=generation.ids,
            finish_reason=generation.finish_reason,
            priority=job.priority,
            max_tokens=job.max_tokens,
        )
        if job.tools:
            self.metrics.tool_parse(job.stream, bool(generation.tool_calls))
        ticket = self.driver.submit(request)
        return EngineResponse(self, job, ticket, fault)


class EngineResponse(Response):
    """Waits for the engine (streaming or not) while watching for the client going away."""

    def __init__(self, server: SimServer, job: Job, ticket: Ticket, fault: Fault) -> None:
        super().__init__(status_code=200)
        self.server = server
        self.job = job
        self.ticket = ticket
        self.fault = fault
        self.created = int(time.time())
        self.gone = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(self._watch(receive))
        try:
            if self.job.stream:
                await self._stream(send)
            else:
                await self._whole(send)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.server.driver.abort(self.ticket.request.request_id)  # no-op once finished

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                self.server.driver.abort(self.ticket.request.request_id)
                return

    async def _stall(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.gone.wait(), self.server.settings.fault_stall_s)

    async def _outcome(self) -> tuple[str, Any]:
        """Wait for the request's last event: done, aborted or failed."""
        while True:
            event = await self.ticket.events.get()
            if event[0] != "token":
                return event

    # --- non-streaming ---

    async def _whole(self, send: Send) -> None:
        outcome = await self._outcome()
        if outcome[0] == "aborted":
            return
        if outcome[0] == "failed":
            await _send_json(send, 500, error_body(500, str(outcome[1])))
            return
        if self.fault is Fault.STALL:
            await self._stall()
            if self.gone.is_set():
                return
        if self.fault is Fault.ERROR_FRAME:
            await _send_json(send, 500, error_body(500, "Simulated engine error (fault injection)."))
            return
        request, job = self.ticket.request, self.job
        build = chat_response if job.chat else completion_response
        finish = job.generation.api_finish_reason
        body = _json(
            build(job, request.request_id, self.created, request.num_output, request.num_cached_tokens, finish)
        )
        if self.fault is Fault.DROP:
            await send(_start(200, "application/json", len(body)))
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return  # the server closes the connection mid-body
        await send(_start(200, "application/json", len(body)))
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # --- streaming ---

    async def _stream(self, send: Send) -> None:
        job, request = self.job, self.ticket.request
        generation = job.generation
        total = len(generation.pieces)
        per_token = deltas(generation) if job.chat else [[{"content": p}] if p else [] for p in generation.pieces]
        mid_stream = self.fault in (Fault.ERROR_FRAME, Fault.DROP, Fault.STALL)
        strike = min(total - 1, max(1, total // 2)) if mid_stream else -1
        await send(_start(200, "text/event-stream; charset=utf-8"))
        sent = 0
        while True:
            kind, value = await self.ticket.events.get()
            if kind == "aborted":
                return
            if kind == "failed":
                await _body(send, sse(error_body(500, str(value))) + DONE, done=True)
                return
            if kind == "done":
                break
            frames = b""
            while sent < value:
                if sent == 0 and job.chat:
                    frames += chunk(
                        job, request.request_id, self.created, [chat_choice({"role": "assistant", "content": ""})]
                    )
                if sent == strike:
                    await _body(send, frames)
                    frames = b""
                    if self.fault is Fault.ERROR_FRAME:
                        self.server.driver.abort(request.request_id)
                        error = error_body(500, "Simulated engine error (fault injection).")
                        await _body(send, sse(error) + DONE, done=True)
                        return
                    if self.fault is Fault.DROP:
                        self.server.driver.abort(request.request_id)
                        return  # the server closes the connection mid-stream
                    await self._stall()
                    if self.gone.is_set():
                        return
                    strike = -1
                frames += self._token_frames(sent, per_token[sent], sent == total - 1)
                sent += 1
            if frames:
                await _body(send, frames)
        tail = b""
        if job.include_usage:
            tail += chunk(
                job,
                request.request_id,
                self.created,
                [],
                usage=usage(len(job.prompt), sent, request.num_cached_tokens, job),
            )
        await _body(send, tail + DONE, done=True)

    def _token_frames(self, index: int, token_deltas: list[dict[str, Any]], last: bool) -> bytes:
        job, rid = self.job, self.ticket.request.request_id
        if not job.chat:
            text = "".join(d.get("content", "") for d in token_deltas)
            finish = job.generation.api_finish_reason if last else None
            if not text and not last:
                return b""
            return chunk(job, rid, self.created, [completion_choice(text, finish)])
        frames = b""
        if not last:
            for delta in token_deltas:
                frames += chunk(job, rid, self.created, [chat_choice(delta)])
            return frames
        finish = job.generation.api_finish_reason
        if len(token_deltas) == 1 and set(token_deltas[0]) == {"content"}:
            return chunk(job, rid, self.created, [chat_choice(token_deltas[0], finish)])
        for delta in token_deltas:
            frames += chunk(job, rid, self.created, [chat_choice(delta)])
        final: dict[str, Any] = {} if finish == "tool_calls" else {"content": ""}
        return frames + chunk(job, rid, self.created, [chat_choice(final, finish)])


def _start(status: int, content_type: str, length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", content_type.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _body(send: Send, data: bytes, done: bool = False) -> None:
    if data or done:
        await send({"type": "http.response.body", "body": data, "more_body": not done})


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


async def _send_json(send: Send, status: int, obj: Any) -> None:
    body = _json(obj)
    await send(_start(status, "application/json", len(body)))
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _http_error(request: HttpRequest, exc: Exception) -> Response:
    """Unknown routes and methods answer as FastAPI (vLLM's server) does: `{"detail": "Not Found"}`."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def _unauthorized() -> Response:
    return JSONResponse({"error": "Unauthorized"}, 401)


def build_sim_app(settings: SimSettings, profile: str | None = None) -> Starlette:
    """A simulator app for `profile` (default `settings.profile`); its engine runs while the app's lifespan does.

    The served names are `settings.served_model_names` for the default profile when given, else the
    profile's model name. Raises `ProfileError` for an unknown profile or a bad override.
    """
    name = profile or settings.profile
    resolved = resolve_profile(name, settings.profile_overrides.get(name))
    names = tuple(settings.served_model_names) if profile is None and settings.served_model_names else ()
    server = SimServer(settings, resolved, names or (resolved.served_model_name,))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(server.driver.run(), name=f"sim-engine-{resolved.name}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/version", server.version, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
        Route("/reset_prefix_cache", server.reset_prefix_cache, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.sim = server
    return app
