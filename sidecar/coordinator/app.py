"""The coordinator's Starlette app: `build_app(config)` wires state, routes and the lifespan. No globals.

Routes (each chat/completions/models route also answers under `/agents/{agent_id}/...` and without `/v1`,
because Goose's provider code drops `/v1` for non-OpenAI hosts):
    POST /v1/chat/completions   POST /v1/completions   GET /v1/models
    GET  /healthz   GET /status   GET /metrics   GET /dashboard
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar import __version__
from sidecar.config import Config
from sidecar.coordinator.dashboard import Board, Page, load_page
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.errors import ErrorKind, ProxyError, error_body, translate_upstream_exception
from sidecar.coordinator.guard import EVENTS_MAX_BYTES, BodyTooLarge, CoordinatorGuard, read_body
from sidecar.coordinator.keys import bearer_token, load_keys
from sidecar.coordinator.outbound import redirect_guard
from sidecar.coordinator.planner import Planner
from sidecar.coordinator.proxy import CompletionsEndpoint
from sidecar.coordinator.speculation import SpeculationCollector, Speculator
from sidecar.coordinator.telemetry import Telemetry
from sidecar.coordinator.upstream import Upstream, UpstreamPool
from sidecar.core.admission import AdmissionLimits
from sidecar.core.hosts import host_patterns
from sidecar.core.identity import Identity, IdentitySource, valid_agent_id
from sidecar.core.openai_request import Endpoint
from sidecar.core.ordering import make_policy
from sidecar.core.stages import DEFAULT_TIER, stage_from_tool_event
from sidecar.obs import get_logger

log = get_logger("sidecar.coordinator.app")


class ToolEvent(BaseModel):
    """`POST /v1/agents/{id}/events`: one tool call as the sidecar reports it (no file contents)."""

    model_config = ConfigDict(extra="ignore")
    session_id: str | None = Field(None, max_length=256)
    seq: int = Field(ge=0)
    tool: str = Field(min_length=1, max_length=128)
    ok: bool
    exit_code: int | None = None
    paths: list[str] = Field(default_factory=list, max_length=256)
    command: str | None = Field(None, max_length=4096)
    duration_ms: float = Field(0.0, ge=0)
    ts: float | None = None
    # The sidecar's tool cache answered this call (None: not said). The sidecar sends it as `cached`.
    cache_hit: bool | None = Field(None, validation_alias=AliasChoices("cache_hit", "cached"))
    # Where the sidecar answers `POST /peek` (which tool results it already has), for LLM-level speculation.
    # Not validated here: a bad one must not cost the event its stage (see `_events`).
    peek_url: str | None = None
    # The sidecar's cumulative speculation counters (`core.speculation.SIDECAR_COUNTERS`): an object, else a 400
    # like any malformed field; inside it, unknown keys and bad values are dropped (`sidecar_counters`).
    speculation: dict[str, Any] | None = Field(None, max_length=32)


HEALTH_INTERVAL_S = 5.0


@dataclass
class CoordinatorState:
    config: Config
    client: httpx.AsyncClient
    pool: UpstreamPool
    telemetry: Telemetry
    dispatchers: dict[str, Dispatcher]
    planner: Planner
    board: Board
    page: Page
    keys: dict[str, str] = field(default_factory=dict)
    speculator: Speculator | None = None


def make_client(config: Config) -> httpx.AsyncClient:
    """The one shared upstream client: explicit timeouts, bounded pool, keep-alive."""
    c = config.coordinator
    limits = httpx.Limits(
        max_connections=c.max_connections,
        max_keepalive_connections=c.max_keepalive_connections,
        keepalive_expiry=c.keepalive_expiry_s,
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=c.connect_timeout_s, read=c.read_timeout_s, write=c.write_timeout_s, pool=c.pool_timeout_s
        ),
        limits=limits,
        follow_redirects=True,  # Modal answers long calls with 303 to a result URL
        trust_env=False,
        # ...but the upstream's secrets never follow a redirect to another origin (outbound.py).
        event_hooks={"request": [redirect_guard(_replica_urls(config), _secret_header_names(config))]},
    )


def _replica_urls(config: Config) -> list[str]:
    return [url for upstream in config.models.values() for url in upstream.replicas]


def _secret_header_names(config: Config) -> set[str]:
    return {name for upstream in config.models.values() for name in upstream.headers}


def build_app(config: Config, *, client: httpx.AsyncClient | None = None) -> Starlette:
    """The coordinator for `config.models` (at least one upstream). Pass `client` to control transport in tests."""
    if not config.models:
        raise ValueError("the coordinator needs at least one upstream in config.models")
    owns_client = client is None
    http = client or make_client(config)
    keys = load_keys(config.coordinator.keys_file) if config.coordinator.keys_file else {}
    config = with_admin_token_file(config)
    pool = UpstreamPool(config.models, http)
    dispatchers = {u.alias: make_dispatcher(u.alias, config) for u in pool.upstreams}
    telemetry = Telemetry()
    telemetry.registry.register(DispatcherCollector(dispatchers))
    board = Board(gpu_hour_usd=config.coordinator.dashboard_gpu_hour_usd, large_alias=config.routing.default_alias)
    planner = Planner(config, pool, dispatchers)
    state = CoordinatorState(config, http, pool, telemetry, dispatchers, planner, board, load_page(), keys)
    state.speculator = Speculator(config.speculation, http, pool, dispatchers, sessions=planner.sessions)
    telemetry.registry.register(SpeculationCollector(state.speculator))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.pool.check()
        tasks = [asyncio.create_task(state.pool.watch(HEALTH_INTERVAL_S))]
        tasks.append(asyncio.create_task(state.board.run_sampler(state.dispatchers, time.monotonic)))
        if config.scheduling.window == "adaptive" and config.scheduling.policy == "priority":
            tasks += [asyncio.create_task(_follow_metrics(state, u)) for u in state.pool.upstreams]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if state.speculator is not None:
                await state.speculator.aclose()
            if owns_client:
                await http.aclose()

    guard = Middleware(
        CoordinatorGuard,
        allowed_hosts=host_patterns(config.coordinator.allowed_hosts, bound=config.coordinator.host),
        max_body_bytes=config.coordinator.max_body_bytes,
    )
    app = Starlette(routes=_routes(state), lifespan=lifespan, middleware=[guard])
    app.state.coordinator = state
    return app


def with_admin_token_file(config: Config) -> Config:
    """`config` with `admin_token` read from `admin_token_file` (its first line) when only the file is set."""
    c = config.coordinator
    if c.admin_token is not None or c.admin_token_file is None:
        return config
    try:
        lines = c.admin_token_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the admin token file {c.admin_token_file}: {exc.strerror}") from None
    token = lines[0].strip() if lines else ""  # an empty file locks the admin routes (see _admin_denied)
    return config.model_copy(update={"coordinator": c.model_copy(update={"admin_token": token})})


def make_dispatcher(alias: str, config: Config) -> Dispatcher:
    s = config.scheduling
    policy = make_policy(s.policy, aging_s=s.aging_s, hot_pool=s.hot_pool, cold_pool=s.cold_pool)
    limits = AdmissionLimits(max_window=s.max_window, initial_window=min(4, s.max_window))
    return Dispatcher(
        alias,
        policy,
        max_queue=s.max_queue,
        static_window=None if s.window == "adaptive" else int(s.window),
        limits=limits,
        half_life_s=s.service_half_life_s,
        clock=time.monotonic,
    )


async def _follow_metrics(state: CoordinatorState, upstream: Upstream) -> None:
    """Scrape the upstream's /metrics on an interval and let its dispatcher adapt the window. An upstream
    without vLLM metrics gets a fixed window instead (stale metrics would otherwise close it)."""
    dispatcher = state.dispatchers[upstream.alias]
    interval = state.config.scheduling.metrics_interval_s
    misses = 0
    while True:
        snapshot = await state.pool.scrape(upstream)
        if snapshot is None:
            misses += 1
            if upstream.has_vllm_metrics is None and misses >= 3:
                upstream.has_vllm_metrics = False
                dispatcher.static_window = dispatcher.window = state.config.scheduling.max_window
                dispatcher.window_reason = "static: upstream has no vLLM /metrics"
                log.warning("no_vllm_metrics", alias=upstream.alias, window=dispatcher.window)
                return
        else:
            misses = 0
            upstream.has_vllm_metrics = True
        dispatcher.observe_metrics(snapshot)
        await asyncio.sleep(interval)


class DispatcherCollector:
    """Queue state per model and tier as Prometheus metrics, read at scrape time (no double bookkeeping)."""

    def __init__(self, dispatchers: dict[str, Dispatcher]) -> None:
        self.dispatchers = dispatchers

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        queued = GaugeMetricFamily("goose_sidecar_queued", "Calls waiting for a slot", labels=["model", "tier"])
        running = GaugeMetricFamily(
            "goose_sidecar_dispatched_in_flight", "Calls holding a slot", labels=["model", "tier"]
        )
        window = GaugeMetricFamily("goose_sidecar_window", "In-flight window per upstream", labels=["model"])
        counters = {
            name: CounterMetricFamily(f"goose_sidecar_{name}", help_text, labels=["model", "tier"])
            for name, help_text in (
                ("admitted", "Calls given a slot"),
                ("rejected", "Calls refused with 429 (queue full)"),
                ("promoted_by_aging", "Calls started ahead of a better tier because they waited long"),
                ("cancelled_while_queued", "Calls whose client left while they waited"),
            )
        }
        wait_p = GaugeMetricFamily(
            "goose_sidecar_queue_wait_p95_seconds", "p95 wait for a slot (recent calls)", labels=["model", "tier"]
        )
        for alias, d in self.dispatchers.items():
            window.add_metric([alias], d.window)
            by_tier = d.queue.count_by_tier()
            for tier, c in d.tiers.items():
                labels = [alias, str(tier)]
                queued.add_metric(labels, by_tier.get(tier, 0))
                running.add_metric(labels, d.in_flight_by_tier[tier])
                counters["admitted"].add_metric(labels, c.admitted)
                counters["rejected"].add_metric(labels, c.rejected)
                counters["promoted_by_aging"].add_metric(labels, c.promoted)
                counters["cancelled_while_queued"].add_metric(labels, c.cancelled_waiting)
                summary = c.waits.summary()
                wait_p.add_metric(labels, summary.p95 if summary.count and summary.p95 is not None else 0.0)
        yield from (queued, running, window, wait_p, *counters.values())


def _routes(state: CoordinatorState) -> list[BaseRoute]:
    chat = CompletionsEndpoint(state, Endpoint.CHAT)
    completions = CompletionsEndpoint(state, Endpoint.COMPLETIONS)

    async def models(request: Request) -> Response:
        return await _models(state, request)

    async def healthz(request: Request) -> Response:
        healthy = any(r.healthy for u in state.pool.upstreams for r in u.replicas)
        return JSONResponse({"ok": healthy}, status_code=200 if healthy else 503)

    async def status(request: Request) -> Response:
        if denied := _admin_denied(state, request):
            return denied
        return JSONResponse(_status(state))

    async def events(request: Request) -> Response:
        return await _events(state, request)

    async def metrics(request: Request) -> Response:
        if denied := _admin_denied(state, request):
            return denied
        return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    async def dashboard(request: Request) -> Response:
        if denied := _admin_denied(state, request, query_token=True):
            return denied
        return HTMLResponse(
            state.page.html,
            headers={
                "Content-Security-Policy": state.page.csp,
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )

    routes: list[BaseRoute] = []
    for prefix in ("", "/agents/{agent_id}"):
        for version in ("/v1", ""):
            base = prefix + version
            routes.append(Route(f"{base}/chat/completions", chat, methods=["POST"]))
            routes.append(Route(f"{base}/completions", completions, methods=["POST"]))
            routes.append(Route(f"{base}/models", models, methods=["GET"]))
    routes += [
        Route("/v1/agents/{agent_id}/events", events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/dashboard", dashboard, methods=["GET"]),
    ]
    return routes


def _admin_denied(state: CoordinatorState, request: Request, query_token: bool = False) -> Response | None:
    """None when no admin token is configured or the request carries it: `Authorization: Bearer TOKEN`, or for
    the dashboard page (a browser opens a link) `?token=TOKEN`."""
    token = state.config.coordinator.admin_token
    if token is None:
        return None
    # An empty token (compose without its .env) locks these routes rather than opening them.
    given = bearer_token(request.headers.get("authorization")) or ""
    if token and secrets.compare_digest(given.encode(), token.encode()):
        return None
    query = request.query_params.get("token", "")
    if token and query_token and secrets.compare_digest(query.encode(), token.encode()):
        return None
    hint = " or ?token=TOKEN" if query_token else ""
    body = error_body(401, f"this endpoint requires the admin token (Authorization: Bearer TOKEN{hint})")
    return Response(body, status_code=401, media_type="application/json")


async def _models(state: CoordinatorState, request: Request) -> Response:
    """One upstream: its answer unchanged. Several: the union of their model lists."""
    data: list[dict[str, Any]] = []
    seen: set[str] = set()
    for upstream in state.pool.upstreams:
        replica = state.pool.pick_replica(upstream, "models")
        try:
            response = await state.client.get(f"{replica.url}/v1/models", headers=upstream.headers)
        except httpx.HTTPError as exc:
            error = translate_upstream_exception(exc, replica.url)
            state.telemetry.error(error.kind)
            if len(state.pool.upstreams) == 1:
                return Response(error.body(), status_code=error.status, media_type="application/json")
            continue
        if len(state.pool.upstreams) == 1:
            return Response(
                response.content,
                status_code=response.status_code,
                media_type=response.headers.get("content-type", "application/json"),
            )
        if response.status_code == 200:
            for model in response.json().get("data", []):
                if isinstance(model, dict) and model.get("id") not in seen:
                    seen.add(str(model.get("id")))
                    data.append(model)
    if not data:
        error = ProxyError(502, ErrorKind.UNREACHABLE, "no upstream answered /v1/models")
        return Response(error.body(), status_code=502, media_type="application/json")
    return JSONResponse({"object": "list", "data": data})


async def _events(state: CoordinatorState, request: Request) -> Response:
    """A sidecar's report of one tool call -> the agent's stage and tier. Schema in DESIGN.md."""
    agent_id = request.path_params["agent_id"]
    if state.keys:
        key_agent = state.keys.get(bearer_token(request.headers.get("authorization")) or "")
        if key_agent is None:
            return _error(401, "a valid API key is required (Authorization: Bearer KEY)")
        if key_agent != agent_id:
            return _error(403, f"this API key belongs to agent {key_agent!r}; it cannot report for {agent_id!r}")
    if not valid_agent_id(agent_id):
        return _error(400, "agent id in the path is not valid")
    try:
        raw = await read_body(request, EVENTS_MAX_BYTES)
    except BodyTooLarge:
        return _error(413, "an event is at most 64 KiB")
    try:
        event = ToolEvent.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(400, f"invalid event: {problems}")
    stage = stage_from_tool_event(event.tool, event.ok, event.exit_code, tuple(event.paths), event.command)
    now = time.monotonic()
    planner = state.planner
    # A session another agent's sidecar reported first is not this agent's to move (sessions.py).
    own_session = planner.sessions.claim(event.session_id, agent_id)
    keys = [agent_id] + ([f"session:{event.session_id}"] if own_session else [])
    if stage is not None:
        planner.stages.report(keys, stage, now)
    current = planner.stages.latest(Identity(agent_id, IdentitySource.PATH, event.session_id))
    record = state.telemetry.agent(agent_id, now)
    record.add_session(event.session_id)
    record.events += 1
    state.board.tool_event(agent_id, event.tool, event.cache_hit, event.duration_ms)
    peek = event.peek_url
    if peek and len(peek) <= 512 and peek.startswith(("http://", "https://")) and state.speculator is not None:
        state.speculator.note_peek_url(
            [agent_id, event.session_id] if own_session and event.session_id else [agent_id], peek
        )
    if event.speculation is not None and state.speculator is not None:
        state.speculator.note_sidecar_counters(agent_id, event.speculation)
    if current is not None:
        record.stage = str(current.stage)
        record.tier = str(planner.stage_tiers.get(current.stage, DEFAULT_TIER))
    return JSONResponse({"stage": record.stage, "tier": record.tier})


def _error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json")


def _status(state: CoordinatorState) -> dict[str, Any]:
    now = time.monotonic()
    status = state.telemetry.status(now)
    status["version"] = __version__
    status["scheduling"] = {alias: d.status() for alias, d in state.dispatchers.items()}
    status["speculation"] = None if state.speculator is None else state.speculator.status()
    for agent in status["agents"]:
        agent["attained_service_tokens"] = round(
            sum(d.service.get(agent["agent_id"], now) for d in state.dispatchers.values()), 1
        )
        agent.update(state.board.agent_fields(agent["agent_id"]))
    status.update(state.board.status(now))
    status["upstreams"] = [
        {
            "alias": u.alias,
            "served_names": u.served_names,
            "in_flight": u.in_flight,
            "replicas": [
                {
                    "url": r.url,
                    "healthy": r.healthy,
                    "in_flight": r.in_flight,
                    "served": r.served,
                    "last_error": r.last_error,
                    "checked_s_ago": None if r.last_check is None else round(now - r.last_check, 3),
                }
                for r in u.replicas
            ],
        }
        for u in state.pool.upstreams
    ]
    return status
