"""The coordinator's Starlette app: `build_app(config)` wires state, routes and the lifespan. No globals.

Routes (each chat/completions/models route also answers under `/agents/{agent_id}/...` and without `/v1`,
because Goose's provider code drops `/v1` for non-OpenAI hosts):
    POST /v1/chat/completions   POST /v1/completions   GET /v1/models
    GET  /livez (= /healthz: the process serves)   GET /readyz (an upstream answers; 503 until one does)
    GET  /status   GET /metrics   GET /dashboard
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
from starlette.exceptions import HTTPException
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
from sidecar.coordinator.kv_view import KVCollector, add_kv_view
from sidecar.coordinator.ledger import UsageLedger
from sidecar.coordinator.outbound import redirect_guard
from sidecar.coordinator.planner import Planner
from sidecar.coordinator.proxy import CompletionsEndpoint
from sidecar.coordinator.speculation import SpeculationCollector, Speculator
from sidecar.coordinator.telemetry import Telemetry
from sidecar.coordinator.upstream import Upstream, UpstreamPool
from sidecar.core.admission import AdmissionLimits, UpstreamMetrics
from sidecar.core.engine_admission import Phase
from sidecar.core.hosts import host_patterns
from sidecar.core.identity import Identity, IdentitySource, valid_agent_id
from sidecar.core.openai_request import Endpoint
from sidecar.core.ordering import OrderingPolicy, make_policy
from sidecar.core.stages import DEFAULT_TIER, stage_from_tool_event
from sidecar.core.working_set import KVAwareOrder
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
    pool = UpstreamPool(config.models, http, native_priority=config.scheduling.native_priority)
    dispatchers = {u.alias: make_dispatcher(u.alias, config) for u in pool.upstreams}
    telemetry = Telemetry()
    telemetry.registry.register(DispatcherCollector(dispatchers))
    telemetry.registry.register(KVCollector(dispatchers))
    c, large = config.coordinator, config.routing.default_alias
    # The routing aliases beside the large one are priced as the small model; a lone upstream as the large one.
    small = frozenset(config.models) - {large} if large in config.models else frozenset()
    ledger = UsageLedger(c.dashboard_gpu_hour_usd, small, c.usage_log)
    board = Board(
        gpu_hour_usd=c.dashboard_gpu_hour_usd,
        large_alias=large,
        ledger=ledger,
        routing=len(pool.upstreams) > 1 and config.routing.enabled,
    )
    planner = Planner(config, pool, dispatchers)
    state = CoordinatorState(config, http, pool, telemetry, dispatchers, planner, board, load_page(), keys)
    state.speculator = Speculator(config.speculation, http, pool, dispatchers, sessions=planner.sessions)
    telemetry.registry.register(SpeculationCollector(state.speculator))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.pool.check()
        tasks = [asyncio.create_task(state.pool.watch(HEALTH_INTERVAL_S))]
        tasks.append(asyncio.create_task(state.board.run_sampler(state.dispatchers, time.monotonic)))
        if (
            config.scheduling.window == "adaptive" and config.scheduling.policy == "priority"
        ) or config.scheduling.policy == "kv":
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
    app = Starlette(
        routes=_routes(state),
        lifespan=lifespan,
        middleware=[guard],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.coordinator = state
    return app


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


def make_dispatcher(alias: str, config: Config) -> Dispatcher:
    s = config.scheduling
    model = config.models.get(alias)
    policy: OrderingPolicy
    if s.policy == "kv":
        policy = KVAwareOrder(
            capacity_tokens=s.kv_capacity_tokens,
            aging_s=s.aging_s,
            working_set=s.kv_admission,
            program_order=s.kv_program_order,
            keep_s=s.kv_keep_s,
        )
    else:
        policy = make_policy(s.policy, aging_s=s.aging_s, hot_pool=s.hot_pool, cold_pool=s.cold_pool)
    limits = AdmissionLimits(max_window=s.max_window, initial_window=min(4, s.max_window))
    native = s.native_priority if model is None or model.native_priority is None else model.native_priority
    return Dispatcher(
        alias,
        policy,
        max_queue=s.max_queue,
        static_window=None if s.window == "adaptive" else int(s.window),
        limits=limits,
        half_life_s=s.service_half_life_s,
        native_priority=native and s.policy != "fcfs",  # fcfs sends no priority, so vLLM cannot order by it
        engine_slots=None if model is None else model.max_num_seqs,
        kv_correction=s.kv_correction,
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
            scrape = await state.pool.scrape(upstream)
            if isinstance(scrape, UpstreamMetrics) and phase is not Phase.ADAPTIVE:
                # It is up: mark it healthy and learn its model names before admission opens, not at the next
                # health round (HEALTH_INTERVAL_S away), so the first calls do not go out under an alias.
                await state.pool.check(only=upstream)
            dispatcher.observe_metrics(scrape)
        except Exception as exc:  # the watcher must outlive any one bad scrape
            log.warning("metrics_scrape_failed", alias=upstream.alias, error=f"{type(exc).__name__}: {exc}")
        if dispatcher.admission.phase is not phase:
            phase = dispatcher.admission.phase
            log.info("upstream_metrics_state", alias=upstream.alias, state=str(phase), window=dispatcher.window)
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

    async def livez(request: Request) -> Response:
        # Liveness: the process serves. Never tied to an upstream, or an orchestrator would restart a healthy
        # coordinator while Modal scales to zero.
        return JSONResponse({"ok": True})

    async def readyz(request: Request) -> Response:
        ready = {u.alias: any(r.healthy for r in u.replicas) for u in state.pool.upstreams}
        ok = any(ready.values())
        return JSONResponse({"ok": ok, "upstreams": ready}, status_code=200 if ok else 503)

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
        Route("/livez", livez, methods=["GET"]),
        Route("/healthz", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
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


def _coordinator_models(state: CoordinatorState) -> list[dict[str, Any]]:
    """The names the coordinator resolves itself: `auto` (routed) and each model alias (`large`, `small`, ...),
    so clients that offer only listed models can offer routing too."""
    entries = [{"id": "auto", "object": "model", "created": 0, "owned_by": "goose-sidecar"}]
    for upstream in state.pool.upstreams:
        entry: dict[str, Any] = {"id": upstream.alias, "object": "model", "created": 0, "owned_by": "goose-sidecar"}
        if upstream.served_names:
            entry["root"] = upstream.served_names[0]
        entries.append(entry)
    return entries


async def _models(state: CoordinatorState, request: Request) -> Response:
    """The upstreams' model lists (one: its entries unchanged; several: their union), then `auto` and the aliases.
    An upstream's error answer (one upstream) passes through unchanged."""
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
        listed = _model_list(response)
        if listed is None and len(state.pool.upstreams) == 1:
            return Response(
                response.content,
                status_code=response.status_code,
                media_type=response.headers.get("content-type", "application/json"),
            )
        for model in listed or []:
            if model.get("id") not in seen:
                seen.add(str(model.get("id")))
                data.append(model)
    if not data:
        error = ProxyError(502, ErrorKind.UNREACHABLE, "no upstream answered /v1/models")
        return Response(error.body(), status_code=502, media_type="application/json")
    data += [m for m in _coordinator_models(state) if m["id"] not in seen]
    return JSONResponse({"object": "list", "data": data})


def _model_list(response: httpx.Response) -> list[dict[str, Any]] | None:
    """The entries of a 200 OpenAI model list, or None for anything else."""
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else None


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
    add_kv_view(status, state.dispatchers, now)
    status["upstreams"] = [
        {
            "alias": u.alias,
            "served_names": u.served_names,
            "native_priority": u.native_priority,
            "session_id": u.session_id,
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
