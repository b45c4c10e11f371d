"""Settings of the coordinator: `[coordinator]`, `[models.<alias>]`, `[scheduling]`, `[routing]`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CoordinatorSettings(BaseModel):
    """`[coordinator]`: the HTTP server and its one shared upstream client."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = Field(8080, ge=0, le=65535)
    # Largest request body accepted (413 above). Agent contexts reach ~150K tokens (~600 KB of JSON).
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # Upstream timeouts, seconds. Read covers the gap between two streamed chunks, not the whole call;
    # 600 s matches Goose's own OPENAI_TIMEOUT default.
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0)
    write_timeout_s: float = Field(60.0, gt=0)
    pool_timeout_s: float = Field(30.0, gt=0)
    max_connections: int = Field(1024, ge=1)
    max_keepalive_connections: int = Field(256, ge=0)
    keepalive_expiry_s: float = Field(30.0, ge=0)
    # Retries before the first byte reaches the client (connection failures, upstream 502/503), with backoff.
    retries: int = Field(2, ge=0, le=10)
    retry_backoff_s: float = Field(0.25, ge=0)
    # On shutdown: stop accepting, let in-flight streams finish for up to this long, then cancel them.
    shutdown_grace_s: float = Field(30.0, ge=0)
    # Request headers larger than this in total are refused (431).
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    # Host header values accepted besides loopback and the bound address (a bare name allows any port; compose:
    # "coordinator"); "*" turns the check off. Requests under another name are answered 421 (DNS rebinding).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Optional API keys: a file of `key agent-id` lines (or JSON object key -> agent id).
    keys_file: Path | None = None
    # Optional bearer token required on /status, /metrics and /dashboard (set it through the environment,
    # GOOSE_SIDECAR_COORDINATOR_ADMIN_TOKEN, or `admin_token_file`: command lines are visible to others).
    admin_token: str | None = Field(None, repr=False)
    admin_token_file: Path | None = None
    # Log prompt and completion content (off by default; for debugging only).
    log_content: bool = False
    # Price of one GPU-hour for the dashboard's "cost saved" estimate: the seed's Modal A100 price, ~$3.50/hr
    # (000_bc7af0ed774b52c4.txt, "Cost baseline").
    dashboard_gpu_hour_usd: float = Field(3.50, ge=0)


class ModelUpstream(BaseModel):
    """`[models.<alias>]`: one model served by one or more OpenAI-compatible replicas (vLLM, the simulator)."""

    model_config = ConfigDict(extra="forbid")
    # The model name the upstream serves; discovered from its /v1/models when omitted.
    served_name: str | None = None
    replicas: list[str] = Field(min_length=1)
    # Sent on every call and metrics scrape (e.g. Modal-Key / Modal-Secret for Modal proxy auth).
    headers: dict[str, str] = Field(default_factory=dict)
    api_key: str | None = None

    @field_validator("replicas")
    @classmethod
    def _urls(cls, replicas: list[str]) -> list[str]:
        cleaned = []
        for url in replicas:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"replica URL {url!r} must start with http:// or https://")
            cleaned.append(url.rstrip("/"))
        return cleaned


class SchedulingSettings(BaseModel):
    """`[scheduling]`: how queued calls are ordered and admitted upstream."""

    model_config = ConfigDict(extra="forbid")
    # fcfs = pure passthrough (vLLM orders); pools = the seed's semaphores (hot 4, cold 2, warm either);
    # priority = strict tiers with aging, least attained service within a tier, in-flight window per upstream.
    policy: Literal["fcfs", "pools", "priority"] = "priority"
    # A waiting call rises one tier per `aging_s` waited, so cold waits at most ~3 x aging_s before it is next.
    # 60 s: on a saturated 32B a call takes 30-50 s, and a shorter aging turns cold work overdue and served ahead of
    # hot work (scripts/bench scheduling, 16 agents: hot p50 vs fcfs 1.33x at 15 s, 1.52x at 60 s, wall time equal;
    # cold max wait 71 s -> 112 s, acceptable for background work).
    aging_s: float = Field(60.0, gt=0)
    hot_pool: int = Field(4, ge=1)  # the seed's pool sizes, for the `pools` policy
    cold_pool: int = Field(2, ge=1)
    # "adaptive": sized from the upstream's /metrics (vLLM names); an integer: a fixed in-flight window.
    window: Literal["adaptive"] | int = "adaptive"
    max_window: int = Field(64, ge=1)
    metrics_interval_s: float = Field(1.0, gt=0)
    # Calls waiting per upstream before 429 + Retry-After.
    max_queue: int = Field(1024, ge=1)
    # Attained service (GPU tokens) decays with this half-life when ordering agents within a tier.
    service_half_life_s: float = Field(60.0, gt=0)
    # A stage reported by an agent's sidecar counts for this long.
    stage_ttl_s: float = Field(120.0, gt=0)
    # Stage -> tier overrides, e.g. {docs = "warm"}. Unnamed stages keep the seed's mapping.
    stage_tiers: dict[str, str] = Field(default_factory=dict)
    # Send vLLM's native integer `priority` too: "auto" sends it and stops (retrying once) if the upstream
    # answers that priority scheduling is not enabled.
    native_priority: Literal["auto", "on", "off"] = "auto"
    # The seed's request-batching experiment: hold calls until the next window boundary. 0 = off (recommended).
    batch_window_ms: float = Field(0.0, ge=0)


class RoutingSettings(BaseModel):
    """`[routing]`: which model serves which kind of work (`model: "auto"` or an alias is routed)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # Task kind or stage -> model alias. Defaults: simple -> small, complex -> large.
    routes: dict[str, str] = Field(default_factory=dict)
    default_alias: str = "large"
    # Agents that always get `default_alias` for "auto" (no routing, no spill-over).
    opt_out_agents: list[str] = Field(default_factory=list)
    # Send routed work to the other model when its own is saturated and the other idle.
    spill_over: bool = True


class SpeculationSettings(BaseModel):
    """`[speculation]`: lossless LLM-level speculation in the coordinator (off by default; only on spare capacity)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    # Tokens spent on speculative calls that were never served, per minute, before speculation pauses.
    wasted_tokens_per_minute: int = Field(20_000, ge=0)
    # A speculative call not taken within this long is dropped (the agent went elsewhere).
    max_age_s: float = Field(120.0, gt=0)
    # After an answer that ends in tool calls whose results the agent's sidecar already has: "prefetch" sends
    # the predicted next call (served if the real one is identical); "warm" only fills the prefix cache with a
    # max_tokens=1 call (never served; the cheapest variant).
    mode: Literal["prefetch", "warm"] = "prefetch"
    # The Goose extension name of the sidecar: its tools reach the model as `<extension>__<tool>`.
    extension: str = Field("sidecar", min_length=1)
    # How long to wait for a sidecar's /peek answer before giving up on one follow-up.
    peek_timeout_s: float = Field(1.0, gt=0)
