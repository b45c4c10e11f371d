"""The operator's routes: `/livez` (= `/healthz`), `/readyz`, `/status`, `/metrics`, `/dashboard`.

`/status`, `/metrics` and `/dashboard` need the admin token when one is configured (`admin_denied`); the
dashboard page also takes it as `?token=` (a browser opens a link). `status_view` is the `/status` document;
`DispatcherCollector` puts the queues into `/metrics`, read at scrape time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar import __version__
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.errors import error_body
from sidecar.coordinator.keys import bearer_token
from sidecar.coordinator.kv_view import add_kv_view
from sidecar.coordinator.state import CoordinatorState

_PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


def admin_routes(state: CoordinatorState) -> list[BaseRoute]:
    async def livez(request: Request) -> Response:
        # Liveness: the process serves. Never tied to an upstream, or an orchestrator would restart a healthy
        # coordinator while Modal scales to zero.
        return JSONResponse({"ok": True})

    async def readyz(request: Request) -> Response:
        ready = {u.alias: any(r.healthy for r in u.replicas) for u in state.pool.upstreams}
        ok = any(ready.values())
        return JSONResponse({"ok": ok, "upstreams": ready}, status_code=200 if ok else 503)

    async def status(request: Request) -> Response:
        return admin_denied(state, request) or JSONResponse(status_view(state))

    async def metrics(request: Request) -> Response:
        if denied := admin_denied(state, request):
            return denied
        return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    async def dashboard(request: Request) -> Response:
        if denied := admin_denied(state, request, query_token=True):
            return denied
        headers = {"Content-Security-Policy": state.page.csp, **_PAGE_HEADERS}
        return HTMLResponse(state.page.html, headers=headers)

    return [
        Route("/livez", livez, methods=["GET"]),
        Route("/healthz", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/dashboard", dashboard, methods=["GET"]),
    ]


def admin_denied(state: CoordinatorState, request: Request, query_token: bool = False) -> Response | None:
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


def status_view(state: CoordinatorState) -> dict[str, Any]:
    """The `/status` document: telemetry, scheduling per model, speculation, per-agent fields, the dashboard's
    sections and the upstreams' replicas."""
    now = time.monotonic()
    status = state.telemetry.status(now)
    status["version"] = __version__
    status["peer"] = {"index": state.config.coordinator.index, "peers": state.config.coordinator.peers}
    status["scheduling"] = {alias: d.status() for alias, d in state.dispatchers.items()}
    status["speculation"] = None if state.speculator is None else state.speculator.status()
    for agent in status["agents"]:
        agent_id = agent["agent_id"]
        agent["attained_service_tokens"] = round(
            sum(d.service.get(agent_id, now) for d in state.dispatchers.values()), 1
        )
        entry = state.book.get(agent_id)
        if entry is not None:
            agent.update(state.board.agent_fields(entry))
    status.update(state.board.status(now))
    add_kv_view(status, state.dispatchers, now)
    status["upstreams"] = [_upstream_view(u, now) for u in state.pool.upstreams]
    return status


def _upstream_view(u: Any, now: float) -> dict[str, Any]:
    return {
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
