"""The coordinator's Starlette app: `build_app(config)` wires state, routes and the lifespan. No globals.

Routes (each chat/completions/models route also answers under `/agents/{agent_id}/...` and without `/v1`,
because Goose's provider code drops `/v1` for non-OpenAI hosts):
    POST /v1/chat/completions   POST /v1/completions (endpoint.py)   GET /v1/models (models.py)
    POST /v1/agents/{agent_id}/events (events.py)
    GET  /livez (= /healthz: the process serves)   GET /readyz (an upstream answers; 503 until one does)
    GET  /status   GET /metrics   GET /dashboard (admin.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.config import Config
from sidecar.coordinator.admin import DispatcherCollector, admin_routes
from sidecar.coordinator.agents import AgentBook
from sidecar.coordinator.dashboard import Board, load_page
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.endpoint import CompletionsEndpoint
from sidecar.coordinator.errors import error_body
from sidecar.coordinator.events import handle_event
from sidecar.coordinator.guard import CoordinatorGuard
from sidecar.coordinator.h1client import H1Pool, Timeouts
from sidecar.coordinator.keys import load_keys
from sidecar.coordinator.kv_view import KVCollector
from sidecar.coordinator.ledger import UsageLedger
from sidecar.coordinator.models import list_models
from sidecar.coordinator.outbound import redirect_guard
from sidecar.coordinator.planner import Planner
from sidecar.coordinator.speculation import SpeculationCollector, Speculator
from sidecar.coordinator.state import CoordinatorState
from sidecar.coordinator.telemetry import Telemetry
from sidecar.coordinator.upstream import Upstream, UpstreamPool
from sidecar.coordinator.upstream_client import UpstreamClient
from sidecar.core.admission import DEFAULT_LIMITS, AdmissionLimits, UpstreamMetrics
from sidecar.core.engine_admission import Phase, peer_limits
from sidecar.core.hosts import host_patterns
from sidecar.core.kv_pressure import PressureRule
from sidecar.core.openai_request import Endpoint
from sidecar.core.ordering import OrderingPolicy, make_policy
from sidecar.core.partition import Share
from sidecar.core.working_set import KVAwareOrder, ProgramRank
from sidecar.obs import get_logger

log = get_logger("sidecar.coordinator.app")


HEALTH_INTERVAL_S = 5.0


def make_relay(config: Config) -> H1Pool:
    """The completions relay's client (h1client.py): the same limits and timeouts as `make_client`'s."""
    c = config.coordinator
    return H1Pool(
        max_connections=c.max_connections,
        max_keepalive=c.max_keepalive_connections,
        keepalive_expiry=c.keepalive_expiry_s,
        timeouts=Timeouts(c.connect_timeout_s, c.read_timeout_s, c.write_timeout_s, c.pool_timeout_s),
        ssl_context=httpx.create_ssl_context(trust_env=False),
    )


def make_client(config: Config) -> httpx.AsyncClient:
    """The shared httpx client for small upstream requests (health, model lists, metrics, a redirect's target):
    explicit timeouts, bounded pool, keep-alive."""
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


def build_app(
    config: Config,
    *,
    client: httpx.AsyncClient | None = None,
    replica_clients: Mapping[str, httpx.AsyncClient] | None = None,
    book: AgentBook | None = None,
) -> Starlette:
    """The coordinator for `config.models` (at least one upstream). Pass `client` to control transport in tests;
    `replica_clients` (by replica URL) gives replicas their own httpx client (the app closes neither); `book`
    keeps the per-agent records (a fresh `AgentBook` with its default bounds when not given)."""
    if not config.models:
        raise ValueError("the coordinator needs at least one upstream in config.models")
    owns_client = client is None
    http = client or make_client(config)
    state = build_state(config, http, replica_clients=replica_clients, book=book)
    upstreams, speculator = state.upstreams, state.speculator
    assert speculator is not None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await upstreams.check()
        tasks = [asyncio.create_task(upstreams.watch_health(HEALTH_INTERVAL_S))]
        tasks.append(asyncio.create_task(state.board.run_sampler(state.dispatchers, time.monotonic)))
        s = config.scheduling
        if (s.window == "adaptive" and s.policy == "priority") or s.policy == "kv":
            tasks += [asyncio.create_task(_follow_metrics(state, u)) for u in state.pool.upstreams]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await speculator.aclose()
            upstreams.relay.close()
            if owns_client:
                await http.aclose()

    allowed_hosts = host_patterns(config.coordinator.allowed_hosts, bound=config.coordinator.host)
    max_body_bytes = config.coordinator.max_body_bytes
    guard = Middleware(CoordinatorGuard, allowed_hosts=allowed_hosts, max_body_bytes=max_body_bytes)
    app = CoordinatorApp(
        routes=_routes(state),
        lifespan=lifespan,
        middleware=[guard],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.coordinator = state
    app.completions = {
        path: CoordinatorGuard(
            CompletionsEndpoint(state, endpoint), allowed_hosts=allowed_hosts, max_body_bytes=max_body_bytes
        )
        for path, endpoint in _completions_paths()
    }
    return app


class CoordinatorApp(Starlette):
    """Starlette, with the completions routes taken before its middleware stack.

    Every relayed frame is one ASGI `send`; through Starlette's stack each passed two more wrappers
    (`ServerErrorMiddleware._send`, `ExceptionMiddleware`'s sender) for nothing: the endpoint is raw ASGI,
    answers its own errors in vLLM's shape and raises no HTTPException. `completions` (exact path -> the
    guarded endpoint) is looked up first for a POST; anything else (other methods, a trailing slash, a
    `root_path`, every other route) goes through Starlette as before. The guard (Host, Origin, content type,
    body bound) still runs first; an error that escapes the endpoint reaches uvicorn, which answers 500 (or
    drops the connection once the response started), as Starlette's ServerErrorMiddleware does."""

    completions: dict[str, ASGIApp]  # set by build_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            target = self.completions.get(path)
            if target is None and path.startswith("/agents/"):
                agent, _, rest = path[8:].partition("/")
                target = self.completions.get("/agents/{agent_id}/" + rest) if agent else None
                if target is not None:
                    scope["path_params"] = {"agent_id": agent}
            if target is not None:
                scope["app"] = self
                await target(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _completions_paths() -> list[tuple[str, Endpoint]]:
    """The completions routes' paths (`_routes`' own), each with its endpoint."""
    return [
        (f"{prefix}{version}/{name}", endpoint)
        for prefix in ("", "/agents/{agent_id}")
        for version in ("/v1", "")
        for name, endpoint in (("chat/completions", Endpoint.CHAT), ("completions", Endpoint.COMPLETIONS))
    ]


def build_state(
    config: Config,
    http: httpx.AsyncClient,
    *,
    replica_clients: Mapping[str, httpx.AsyncClient] | None = None,
    book: AgentBook | None = None,
) -> CoordinatorState:
    """Everything one app holds, wired: the upstream client over the pool, a dispatcher per model, the book
    whose forgetting reaches every dispatcher, the planner, speculation, telemetry and its collectors."""
    keys = load_keys(config.coordinator.keys_file) if config.coordinator.keys_file else {}
    config = with_admin_token_file(config)
    pool = UpstreamPool(config.models, native_priority=config.scheduling.native_priority)
    book = book if book is not None else AgentBook()
    telemetry = Telemetry(book)
    upstreams = UpstreamClient(
        pool,
        http,
        make_relay(config),
        retries=config.coordinator.retries,
        retry_backoff_s=config.coordinator.retry_backoff_s,
        replica_clients=replica_clients,
        on_retry=lambda upstream: telemetry.retried(upstream.alias),
    )
    dispatchers = {u.alias: make_dispatcher(u.alias, config) for u in pool.upstreams}
    book.on_forget += [d.forget for d in dispatchers.values()]
    telemetry.registry.register(DispatcherCollector(dispatchers))
    telemetry.registry.register(KVCollector(dispatchers))
    planner = Planner(config, pool, dispatchers, book)
    speculator = Speculator(config.speculation, upstreams, http, dispatchers, book)
    telemetry.registry.register(SpeculationCollector(speculator))
    board = make_board(config, pool)
    return CoordinatorState(
        config, http, upstreams, pool, telemetry, dispatchers, planner, board, load_page(), book, keys, speculator
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes (404) and wrong methods (405) answer in the same JSON error shape as everything else."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such route: {request.method} {request.url.path} (the API is under /v1: chat/completions, models)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    body = error_body(exc.status_code, message)
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type="application/json")


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


def make_board(config: Config, pool: UpstreamPool) -> Board:
    """The dashboard's bookkeeping. The routing aliases beside the large one are priced as the small model; a lone
    upstream as the large one."""
    c, large = config.coordinator, config.routing.default_alias
    small = frozenset(config.models) - {large} if large in config.models else frozenset()
    ledger = UsageLedger(c.dashboard_gpu_hour_usd, small, c.usage_log)
    routing = len(pool.upstreams) > 1 and config.routing.enabled
    return Board(gpu_hour_usd=c.dashboard_gpu_hour_usd, large_alias=large, ledger=ledger, routing=routing)


def make_dispatcher(alias: str, config: Config) -> Dispatcher:
    s = config.scheduling
    model = config.models.get(alias)
    share = Share(config.coordinator.peers, config.coordinator.index)  # every whole-upstream figure is shared
    policy: OrderingPolicy
    if s.policy == "kv":
        policy = KVAwareOrder(
            capacity_tokens=share.of(s.kv_capacity_tokens),
            aging_s=s.aging_s,
            working_set=s.kv_admission,
            program_order=s.kv_program_order,
            keep_s=s.kv_keep_s,
            backfill_s=s.kv_backfill_s,
            small_context_tokens=s.kv_small_context_tokens,
            program_rank=ProgramRank(s.kv_program_rank),
            long_tool_keep_s=s.kv_long_tool_keep_s,
        )
    else:
        policy = make_policy(
            s.policy, aging_s=s.aging_s, hot_pool=share.of(s.hot_pool), cold_pool=share.of(s.cold_pool)
        )
    whole = AdmissionLimits(max_window=s.max_window, initial_window=min(DEFAULT_LIMITS.initial_window, s.max_window))
    limits = peer_limits(whole, share)
    native = s.native_priority if model is None or model.native_priority is None else model.native_priority
    return Dispatcher(
        alias,
        policy,
        max_queue=s.max_queue,
        static_window=None if s.window == "adaptive" else share.of(int(s.window)),
        limits=limits,
        half_life_s=s.service_half_life_s,
        native_priority=native and s.policy != "fcfs",  # fcfs sends no priority, so vLLM cannot order by it
        engine_slots=None if model is None else model.max_num_seqs,
        kv_correction=s.kv_correction,
        kv_pressure=PressureRule(s.kv_engage_ratio, s.kv_release_ratio, s.kv_active_window_s),
        clock=time.monotonic,
    )


async def _follow_metrics(state: CoordinatorState, upstream: Upstream) -> None:
    """Scrape the upstream's /metrics every `metrics_interval_s`, forever, and let its dispatcher adapt the
    window (`core.engine_admission.observe`): an upstream that starts late, restarts or comes back from zero is
    adaptive again at its first answer. A scrape that raises is logged and the next one follows. Under the `kv`
    policy each scrape also corrects its KV estimate, and its pump starts a call that waited for a working-set
    place which has since expired (`kv_keep_s` passes with no call ending, so nothing else would start it)."""
    dispatcher = state.dispatchers[upstream.alias]
    interval = state.config.scheduling.metrics_interval_s
    phase = dispatcher.admission.phase
    while True:
        try:
            scrape = await state.upstreams.scrape(upstream)
            if isinstance(scrape, UpstreamMetrics) and phase is not Phase.ADAPTIVE:
                # It is up: mark it healthy and learn its model names before admission opens, not at the next
                # health round (HEALTH_INTERVAL_S away), so the first calls do not go out under an alias.
                await state.upstreams.check(only=upstream)
            dispatcher.observe_metrics(scrape)
        except Exception as exc:  # the watcher must outlive any one bad scrape
            log.warning("metrics_scrape_failed", alias=upstream.alias, error=f"{type(exc).__name__}: {exc}")
        if dispatcher.admission.phase is not phase:
            phase = dispatcher.admission.phase
            log.info("upstream_metrics_state", alias=upstream.alias, state=str(phase), window=dispatcher.window)
        await asyncio.sleep(interval)


def _routes(state: CoordinatorState) -> list[BaseRoute]:
    """The API (each chat/completions/models route also under `/agents/{agent_id}` and without `/v1`), the
    tool events, and the admin routes."""
    chat = CompletionsEndpoint(state, Endpoint.CHAT)
    completions = CompletionsEndpoint(state, Endpoint.COMPLETIONS)

    async def models(request: Request) -> Response:
        return await list_models(state)

    async def events(request: Request) -> Response:
        return await handle_event(state, request)

    routes: list[BaseRoute] = []
    for path, endpoint in _completions_paths():  # (a POST to these is taken before the stack: CoordinatorApp)
        routes.append(Route(path, chat if endpoint is Endpoint.CHAT else completions, methods=["POST"]))
    for prefix in ("", "/agents/{agent_id}"):
        for version in ("/v1", ""):
            routes.append(Route(f"{prefix}{version}/models", models, methods=["GET"]))
    routes.append(Route("/v1/agents/{agent_id}/events", events, methods=["POST"]))
    return routes + admin_routes(state)
