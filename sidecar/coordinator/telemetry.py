"""What the coordinator knows about its traffic: Prometheus metrics (per-app registry) and the /status view.

No module-level state: every app gets its own `Telemetry`, so tests and several apps in one process never
share counters. It is fed by hooks the exchange and the events handler call (`call_planned`, `queued`,
`slot_granted`, `call_ended`, `answered`, `error`, `event_reported`); the per-agent part of what it counts lives
in the app's `AgentBook` (agents.py), which bounds it.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

from sidecar import __version__
from sidecar.coordinator.agents import AgentBook, AgentEntry
from sidecar.coordinator.errors import ErrorKind
from sidecar.coordinator.upstream import Upstream
from sidecar.core.stats import SampleWindow, Summary
from sidecar.core.usage import Usage

LATENCY_WINDOW = 4096
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


def summary_ms(summary: Summary) -> dict[str, float | None]:
    """A latency summary in milliseconds for /status (None when there is no sample yet)."""
    if summary.count == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {k: round(float(getattr(summary, k)) * 1000, 1) for k in ("p50", "p95", "p99", "max")}


OTHER_LABEL = "other"

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """`metric.labels(*values)` remembered per label set: a dict lookup per call instead of `labels()`' checks,
    string conversions and lock. It holds the very children the metric holds, so never more of them than the
    metric has (its label values come from closed sets: `model_label`, aliases, tiers, statuses, error kinds)."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


@dataclass(frozen=True)
class Answer:
    """What one call came to, for `Telemetry.answered`: `alias`/`tier` served it, `model` is its metric label."""

    endpoint: str
    model: str
    alias: str
    tier: str
    status: int | None
    bytes_out: int
    ttfb_s: float | None
    total_s: float
    complete: bool
    usage: Usage | None


def model_label(model: str, upstreams: Iterable[Upstream]) -> str:
    """`model` when an upstream is configured or discovered under that name (alias or served name), else
    "other": a metric label must come from a closed set, never straight from a client."""
    for upstream in upstreams:
        if model == upstream.alias or model == upstream.configured_name or model in upstream.served_names:
            return model
    return OTHER_LABEL


class Telemetry:
    def __init__(self, book: AgentBook) -> None:
        self.book = book
        self.started = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "goose_sidecar_requests",
            "Completed calls by endpoint, model and HTTP status",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.errors = Counter("goose_sidecar_errors", "Calls that failed, by kind", ["kind"], registry=r)
        self.in_flight = Gauge("goose_sidecar_in_flight", "Calls being relayed now", ["model"], registry=r)
        # Histograms, queue wait and token counters are labelled by the model alias that served the call (the
        # `model` of goose_sidecar_queued and goose_sidecar_window) and its tier, so hot and cold latency can be
        # graphed per GPU pool; goose_sidecar_requests keeps the model name the client asked for.
        self.ttfb = Histogram(
            "goose_sidecar_time_to_first_byte_seconds",
            "From request received to first upstream byte relayed",
            ["model", "tier"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "goose_sidecar_request_duration_seconds",
            "From request received to last byte relayed",
            ["model", "tier"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "goose_sidecar_queue_wait_seconds",
            "Time a call waited in the coordinator's queue for an upstream slot (like vllm:request_queue_time_seconds)",
            ["model", "tier"],
            buckets=_BUCKETS,
            registry=r,
        )
        # Tokens of answered calls, from their usage objects (mirroring vllm:prompt_tokens_total and
        # vllm:generation_tokens_total; cached prompt tokens are a subset of prompt tokens, hence their own name).
        self.prompt_tokens = Counter(
            "goose_sidecar_prompt_tokens", "Prompt tokens of answered calls", ["model", "tier"], registry=r
        )
        self.cached_prompt_tokens = Counter(
            "goose_sidecar_prompt_tokens_cached",
            "Prompt tokens the upstream served from its prefix cache (a part of goose_sidecar_prompt_tokens)",
            ["model", "tier"],
            registry=r,
        )
        self.generation_tokens = Counter(
            "goose_sidecar_generation_tokens", "Generated tokens of answered calls", ["model", "tier"], registry=r
        )
        Info("goose_sidecar_build", "The running goose-sidecar", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        self.relayed_bytes = Counter(
            "goose_sidecar_relayed_bytes", "Bytes relayed, by direction", ["direction"], registry=r
        )
        self.retries = Counter(
            "goose_sidecar_upstream_retries", "Calls re-sent before any byte reached the client", ["model"], registry=r
        )
        # The hooks below run on every call: they reach the children through these caches.
        self._requests = Children(self.requests)
        self._errors = Children(self.errors)
        self._in_flight = Children(self.in_flight)
        self._ttfb = Children(self.ttfb)
        self._duration = Children(self.duration)
        self._queue_wait = Children(self.queue_wait)
        self._prompt_tokens = Children(self.prompt_tokens)
        self._cached_prompt_tokens = Children(self.cached_prompt_tokens)
        self._generation_tokens = Children(self.generation_tokens)
        self._relayed_bytes = Children(self.relayed_bytes)
        self._retries = Children(self.retries)
        self.recent_ttfb = SampleWindow(LATENCY_WINDOW)
        self.recent_total = SampleWindow(LATENCY_WINDOW)
        self.total_requests = 0
        self.total_errors = 0
        self.in_flight_total = 0

    # --- hooks the exchange calls, in the order of a call -------------------------------------------------

    def request_read(self, size: int) -> None:
        self._relayed_bytes("request").inc(size)

    def call_planned(self, agent: AgentEntry, session: str | None, alias: str, stage: str | None, tier: str) -> None:
        """A call of `agent` was planned for model `alias` at `stage` and `tier`."""
        agent.add_session(session)
        agent.last_model, agent.stage, agent.tier = alias, stage, tier

    def call_started(self, agent: AgentEntry, model: str) -> None:
        """A call is in flight (waiting or relayed) under the metric label `model`, until `call_ended`."""
        agent.in_flight += 1
        self.in_flight_total += 1
        self._in_flight(model).inc()

    def queued(self, agent: AgentEntry, now: float) -> None:
        agent.queued_since = now

    def slot_granted(self, agent: AgentEntry, alias: str, tier: str, waited_s: float) -> None:
        agent.queued_since = None
        agent.last_wait_s = waited_s
        self._queue_wait(alias, tier).observe(waited_s)

    def retried(self, alias: str) -> None:
        self._retries(alias).inc()

    def call_ended(self, agent: AgentEntry, model: str) -> None:
        agent.in_flight -= 1
        agent.queued_since = None
        self.in_flight_total -= 1
        self._in_flight(model).dec()

    def answered(self, agent: AgentEntry, answer: Answer) -> None:
        """A call's outcome, once, whatever it was (`status` None: cancelled before any answer)."""
        status = str(answer.status) if answer.status is not None else "499"
        self._requests(answer.endpoint, answer.model, status).inc()
        self.total_requests += 1
        agent.requests += 1
        self._relayed_bytes("response").inc(answer.bytes_out)
        served = (answer.alias, answer.tier)
        if answer.ttfb_s is not None:
            self._ttfb(*served).observe(answer.ttfb_s)
            self.recent_ttfb.add(answer.ttfb_s)
        if answer.status == 200 and answer.complete:
            self._duration(*served).observe(answer.total_s)
            self.recent_total.add(answer.total_s)
        if answer.status == 200 and answer.usage is not None:
            self._prompt_tokens(*served).inc(answer.usage.prompt_tokens)
            self._cached_prompt_tokens(*served).inc(answer.usage.cached_prompt_tokens)
            self._generation_tokens(*served).inc(answer.usage.completion_tokens)
            agent.prompt_tokens += answer.usage.prompt_tokens
            agent.completion_tokens += answer.usage.completion_tokens

    def error(self, kind: ErrorKind, agent: AgentEntry | None = None) -> None:
        self._errors(kind).inc()
        self.total_errors += 1
        if agent is not None:
            agent.errors += 1

    def event_reported(self, agent: AgentEntry, session: str | None, stage: str | None, tier: str | None) -> None:
        """The agent's sidecar reported a tool call; `stage`/`tier` are set when the agent has a current stage."""
        agent.add_session(session)
        agent.events += 1
        if stage is not None:
            agent.stage, agent.tier = stage, tier

    def status(self, now: float) -> dict[str, Any]:
        agents = [
            {
                "agent_id": a.agent_id,
                "sessions": list(a.sessions),
                "last_seen_s_ago": round(now - a.last_seen, 3),
                "in_flight": a.in_flight,
                "requests": a.requests,
                "errors": a.errors,
                "prompt_tokens": a.prompt_tokens,
                "completion_tokens": a.completion_tokens,
                "model": a.last_model,
                "stage": a.stage,
                "tier": a.tier,
                "state": "queued" if a.queued_since is not None else "running" if a.in_flight else "idle",
                "waiting_s": None if a.queued_since is None else round(now - a.queued_since, 3),
                "last_wait_ms": round(a.last_wait_s * 1000, 1),
                "events": a.events,
            }
            for a in self.book.recent_first()
        ]
        return {
            "uptime_s": round(now - self.started, 3),
            "totals": {
                "requests": self.total_requests,
                "errors": self.total_errors,
                "in_flight": self.in_flight_total,
                "agents": len(self.book),
            },
            "latency_ms": {
                "time_to_first_byte": summary_ms(self.recent_ttfb.summary()),
                "total": summary_ms(self.recent_total.summary()),
                "window": len(self.recent_total),
            },
            "agents": agents,
        }
