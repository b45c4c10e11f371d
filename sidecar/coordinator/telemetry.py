"""What the coordinator knows about its traffic: Prometheus metrics (per-app registry) and the /status view.

No module-level state: every app gets its own `Telemetry`, so tests and several apps in one process never
share counters. Agent records are bounded (least recently seen evicted) so a flood of ids cannot grow memory.
"""

from __future__ import annotations

import platform
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from sidecar import __version__
from sidecar.coordinator.errors import ErrorKind
from sidecar.coordinator.upstream import Upstream
from sidecar.core.stats import SampleWindow, Summary

MAX_AGENTS = 10_000
MAX_SESSIONS_PER_AGENT = 8
LATENCY_WINDOW = 4096
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


@dataclass
class AgentRecord:
    agent_id: str
    first_seen: float
    last_seen: float
    sessions: list[str] = field(default_factory=list)
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_model: str | None = None
    stage: str | None = None
    tier: str | None = None
    queued_since: float | None = None  # monotonic time it started waiting for a slot; None when not waiting
    last_wait_s: float = 0.0
    events: int = 0

    def add_session(self, session_id: str | None) -> None:
        if session_id and session_id not in self.sessions:
            self.sessions.append(session_id)
            del self.sessions[:-MAX_SESSIONS_PER_AGENT]


def summary_ms(summary: Summary) -> dict[str, float | None]:
    """A latency summary in milliseconds for /status (None when there is no sample yet)."""
    if summary.count == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {k: round(float(getattr(summary, k)) * 1000, 1) for k in ("p50", "p95", "p99", "max")}


OTHER_LABEL = "other"


def model_label(model: str, upstreams: Iterable[Upstream]) -> str:
    """`model` when an upstream is configured or discovered under that name (alias or served name), else
    "other": a metric label must come from a closed set, never straight from a client."""
    for upstream in upstreams:
        if model == upstream.alias or model == upstream.configured_name or model in upstream.served_names:
            return model
    return OTHER_LABEL


class Telemetry:
    def __init__(self) -> None:
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
        self.agents: OrderedDict[str, AgentRecord] = OrderedDict()
        self.recent_ttfb = SampleWindow(LATENCY_WINDOW)
        self.recent_total = SampleWindow(LATENCY_WINDOW)
        self.total_requests = 0
        self.total_errors = 0
        self.in_flight_total = 0

    def agent(self, agent_id: str, now: float) -> AgentRecord:
        record = self.agents.get(agent_id)
        if record is None:
            record = AgentRecord(agent_id, first_seen=now, last_seen=now)
            self.agents[agent_id] = record
            while len(self.agents) > MAX_AGENTS:
                oldest_id, oldest = next(iter(self.agents.items()))
                if oldest.in_flight:
                    break  # never forget an agent with a call in flight
                del self.agents[oldest_id]
        else:
            record.last_seen = now
            self.agents.move_to_end(agent_id)
        return record

    def error(self, kind: ErrorKind, record: AgentRecord | None = None) -> None:
        self.errors.labels(kind).inc()
        self.total_errors += 1
        if record is not None:
            record.errors += 1

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
            for a in reversed(self.agents.values())
        ]
        return {
            "uptime_s": round(now - self.started, 3),
            "totals": {
                "requests": self.total_requests,
                "errors": self.total_errors,
                "in_flight": self.in_flight_total,
                "agents": len(self.agents),
            },
            "latency_ms": {
                "time_to_first_byte": summary_ms(self.recent_ttfb.summary()),
                "total": summary_ms(self.recent_total.summary()),
                "window": len(self.recent_total),
            },
            "agents": agents,
        }
