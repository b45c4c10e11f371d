"""The operator's view: what `/status` adds for `/dashboard` and `goose-sidecar status`, and the page itself.

`Board` (one per app) keeps what the coordinator's other state does not:
- a rolling history of queued and in-flight calls per model and tier, and each upstream's KV usage and queue,
  sampled every `interval_s` for the last `span_s` (a background task of the lifespan calls `sample`);
- token usage per model, read off the answers by `UsageTap` (the `usage` object at the end of each 200 answer),
  for the GPU time estimate;
- tool-cache counters per tool, from the sidecars' events (per agent they are kept in the `AgentBook`).

Nothing here keeps prompt or file contents: only ids, model aliases, tool names, counts and durations.

GPU time saved (`estimate_savings`) is an estimate, stated on the page: every token served by a model other than
the default (large) one is priced at the large model's GPU cost per token minus the small model's, with both
costs taken from reference/calibration.md for Qwen2.5-Coder-32B and -7B on one A100-80GB at batch 8. Tool-cache
hits save agent time (wall clock), not GPU time, and are reported separately (`tool_time_saved_s`). With one
upstream (or routing off) nothing is routed, so nothing is counted as saved (`routing: false`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from sidecar.coordinator.agents import AgentEntry, ToolCache
from sidecar.core.stages import TIERS
from sidecar.core.usage import Usage
from sidecar.core.wire import CACHEABLE_TOOLS

if TYPE_CHECKING:
    from sidecar.coordinator.dispatcher import Dispatcher
    from sidecar.coordinator.ledger import UsageLedger

STATES = ("queued", "running", "idle")


@dataclass(frozen=True)
class TokenCost:
    """GPU seconds one token occupies: an uncached prompt token (prefill) and an output token (decode)."""

    prefill_s: float
    decode_s: float


# reference/calibration.md, A100-80GB BF16 vLLM. Decode: aggregate output throughput at batch 8 (roofline estimates:
# 32B ~170 tok/s, 7B ~700 tok/s), so one output token holds the GPU 1/throughput seconds. Prefill: 32B ~2.5K tok/s
# prefill-bound (GPUStack) = 0.4 ms/token; 7-8B 0.30-0.55 ms/token (llm-d-inference-sim), the low end as in the
# simulator's qwen2.5-coder-7b-a100 profile.
LARGE_COST = TokenCost(prefill_s=0.0004, decode_s=1 / 170)
SMALL_COST = TokenCost(prefill_s=0.0003, decode_s=1 / 700)
COST_BASIS = (
    "Qwen2.5-Coder-32B vs -7B on one A100-80GB at batch 8 (decode: a roofline estimate from the GPU's published "
    "bandwidth; prefill: the GPUStack benchmark): prefill 0.40 vs 0.30 ms per uncached prompt token, decode 5.9 vs "
    "1.4 ms per output token"
)


@dataclass
class ModelUsage:
    """Token usage of the 200 answers one model alias gave (from their `usage` objects)."""

    calls: int = 0
    calls_without_usage: int = 0  # streams without `stream_options.include_usage`, or cut short
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # served from vLLM's prefix cache
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "calls_without_usage": self.calls_without_usage,
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def gpu_seconds(usage: ModelUsage, cost: TokenCost) -> float:
    """Estimated GPU seconds of `usage` at `cost` (prefix-cached prompt tokens cost nothing)."""
    uncached = max(usage.prompt_tokens - usage.cached_prompt_tokens, 0)
    return uncached * cost.prefill_s + usage.completion_tokens * cost.decode_s


def estimate_savings(
    usage: Mapping[str, ModelUsage],
    large_alias: str,
    gpu_hour_usd: float,
    large: TokenCost = LARGE_COST,
    small: TokenCost = SMALL_COST,
    *,
    routing: bool = True,
) -> dict[str, Any]:
    """GPU time and money the small model saved: every model alias other than `large_alias` counts as the small
    model, and its tokens are priced at `large - small` per token. 0 when only the large model served, and when
    `routing` is False (one upstream serves everything, whatever its alias)."""
    routed = ModelUsage()
    for alias, u in usage.items():
        if alias == large_alias or not routing:
            continue
        routed.calls += u.calls
        routed.calls_without_usage += u.calls_without_usage
        routed.prompt_tokens += u.prompt_tokens
        routed.cached_prompt_tokens += u.cached_prompt_tokens
        routed.completion_tokens += u.completion_tokens
    on_small = gpu_seconds(routed, small)
    on_large = gpu_seconds(routed, large)
    saved = max(on_large - on_small, 0.0)
    return {
        "large_alias": large_alias,
        "routing": routing,
        "routed": routed.as_dict(),
        "gpu_s_on_small": round(on_small, 3),
        "gpu_s_if_large": round(on_large, 3),
        "gpu_s_saved": round(saved, 3),
        "gpu_hour_usd": gpu_hour_usd,
        "usd_saved": round(saved / 3600 * gpu_hour_usd, 4),
        "basis": COST_BASIS,
    }


@dataclass
class ToolStats:
    calls: int = 0
    hits: int = 0
    hit_ms: float = 0.0
    misses: int = 0
    miss_ms: float = 0.0

    def saved_ms(self) -> float:
        """Hits x (mean miss duration - mean hit duration): agent wall-clock time the cache saved, estimated."""
        if not self.hits or not self.misses:
            return 0.0
        return self.hits * max(self.miss_ms / self.misses - self.hit_ms / self.hits, 0.0)


def hit_rate(hits: int, total: int) -> float | None:
    return None if total == 0 else round(hits / total, 4)


def agent_order_key(agent: Mapping[str, Any]) -> tuple[int, float, int, str]:
    """The dashboard's default order: queued (longest wait first), then running, then idle; hot before cold;
    then by id."""
    state = STATES.index(agent.get("state")) if agent.get("state") in STATES else len(STATES)
    tier_names = [str(t) for t in TIERS]
    tier = tier_names.index(agent["tier"]) if agent.get("tier") in tier_names else len(tier_names)
    return (state, -(agent.get("waiting_s") or 0.0), tier, str(agent.get("agent_id", "")))


@dataclass
class History:
    """Samples `(now, {alias: {...}})` for the last `span_s`, at most one per `interval_s` (older ones dropped)."""

    interval_s: float = 2.0
    span_s: float = 300.0
    samples: deque[tuple[float, dict[str, dict[str, Any]]]] = field(default_factory=deque)

    def add(self, now: float, sample: dict[str, dict[str, Any]]) -> None:
        self.samples.append((now, sample))
        while self.samples and now - self.samples[0][0] > self.span_s:
            self.samples.popleft()

    def view(self, now: float) -> dict[str, Any]:
        """Column-wise for plotting: `ago_s` (oldest first) and, per alias, series of equal length."""
        aliases: list[str] = []
        for _, sample in self.samples:
            aliases += [a for a in sample if a not in aliases]
        models: dict[str, Any] = {}
        for alias in aliases:
            rows = [s.get(alias) for _, s in self.samples]
            models[alias] = {
                "queued": {str(t): [r["queued"][str(t)] if r else None for r in rows] for t in TIERS},
                "in_flight": {str(t): [r["in_flight"][str(t)] if r else None for r in rows] for t in TIERS},
                "kv_usage": [r["kv_usage"] if r else None for r in rows],
                "waiting": [r["waiting"] if r else None for r in rows],
            }
        return {
            "interval_s": self.interval_s,
            "span_s": self.span_s,
            "ago_s": [round(now - t, 1) for t, _ in self.samples],
            "models": models,
        }


def snapshot(dispatcher: Dispatcher) -> dict[str, Any]:
    """One history row for one model: queued and in-flight per tier, and the upstream's own KV usage and queue."""
    by_tier = dispatcher.queue.count_by_tier()
    metrics = dispatcher.metrics
    return {
        "queued": {str(t): by_tier.get(t, 0) for t in TIERS},
        "in_flight": {str(t): dispatcher.in_flight_by_tier[t] for t in TIERS},
        "kv_usage": None if metrics is None else round(metrics.kv_usage, 4),
        "waiting": None if metrics is None else metrics.waiting,
    }


class Board:
    """The dashboard's own bookkeeping (see the module docstring). Per agent it keeps nothing: what it counts
    per agent is in the agent's `AgentEntry.cache`."""

    def __init__(
        self,
        *,
        gpu_hour_usd: float,
        large_alias: str,
        routing: bool = True,
        interval_s: float = 2.0,
        span_s: float = 300.0,
        ledger: UsageLedger | None = None,
    ) -> None:
        """`routing`: more than one model is configured and routing is on (else nothing counts as saved)."""
        self.gpu_hour_usd = gpu_hour_usd
        self.large_alias = large_alias
        self.ledger = ledger  # per-agent usage and cost (ledger.py); None: not kept
        self.routing = routing
        self.history = History(interval_s, span_s)
        self.usage: dict[str, ModelUsage] = {}
        self.tools: dict[str, ToolStats] = {}

    def record_answer(
        self, alias: str, usage: Usage | None, agent: AgentEntry | None = None, tier: str | None = None
    ) -> None:
        """One 200 answer of model `alias`; charged to `agent` too when it is given and a ledger is kept."""
        if self.ledger is not None and agent is not None:
            self.ledger.record(agent.usage, agent.agent_id, alias, tier or "", usage)
        u = self.usage.setdefault(alias, ModelUsage())
        u.calls += 1
        if usage is None:
            u.calls_without_usage += 1
            return
        u.prompt_tokens += usage.prompt_tokens
        u.cached_prompt_tokens += usage.cached_prompt_tokens
        u.completion_tokens += usage.completion_tokens

    def tool_event(self, agent: ToolCache, tool: str, cache_hit: bool | None, duration_ms: float) -> None:
        """One sidecar tool event of the agent whose counters are `agent`. `cache_hit` None means the sidecar
        did not say (counted as a call only)."""
        agent.tool_calls += 1
        if tool not in CACHEABLE_TOOLS and not cache_hit:
            return
        agent.cacheable_calls += 1
        # Keyed from a closed set: a tool name comes from the client (unbounded names grew /status to 8.5 MiB).
        stats = self.tools.setdefault(tool if tool in CACHEABLE_TOOLS else "other", ToolStats())
        stats.calls += 1
        if cache_hit:
            agent.cache_hits += 1
            stats.hits += 1
            stats.hit_ms += duration_ms
        elif cache_hit is False:
            stats.misses += 1
            stats.miss_ms += duration_ms

    def agent_fields(self, agent: AgentEntry) -> dict[str, Any]:
        """The dashboard's fields of one agent in /status: its tool-cache counters, its usage account."""
        a = agent.cache
        fields: dict[str, Any] = {
            "tool_calls": a.tool_calls,
            "cacheable_calls": a.cacheable_calls,
            "cache_hits": a.cache_hits,
            "cache_hit_rate": hit_rate(a.cache_hits, a.cacheable_calls),
        }
        if self.ledger is not None:
            fields["usage"] = self.ledger.account(agent.usage)
        return fields

    def sample(self, now: float, dispatchers: Mapping[str, Dispatcher]) -> None:
        self.history.add(now, {alias: snapshot(d) for alias, d in dispatchers.items()})

    async def run_sampler(self, dispatchers: Mapping[str, Dispatcher], clock: Callable[[], float]) -> None:
        """Sample forever, every `interval_s` (run as a lifespan task; cancel to stop)."""
        while True:
            self.sample(clock(), dispatchers)
            await asyncio.sleep(self.history.interval_s)

    def status(self, now: float) -> dict[str, Any]:
        """The `/status` sections this board owns: `history`, `usage`, `savings`, `tool_cache`."""
        hits = sum(t.hits for t in self.tools.values())
        calls = sum(t.calls for t in self.tools.values())
        return {
            "history": self.history.view(now),
            "usage": {alias: u.as_dict() for alias, u in self.usage.items()},
            "savings": estimate_savings(self.usage, self.large_alias, self.gpu_hour_usd, routing=self.routing),
            "agent_usage_pricing": None if self.ledger is None else self.ledger.summary(),
            "tool_cache": {
                "calls": calls,
                "hits": hits,
                "hit_rate": hit_rate(hits, calls),
                "tool_time_saved_s": round(sum(t.saved_ms() for t in self.tools.values()) / 1000, 3),
                "tools": {
                    name: {
                        "calls": t.calls,
                        "hits": t.hits,
                        "hit_rate": hit_rate(t.hits, t.calls),
                        "mean_hit_ms": None if not t.hits else round(t.hit_ms / t.hits, 2),
                        "mean_miss_ms": None if not t.misses else round(t.miss_ms / t.misses, 2),
                    }
                    for name, t in sorted(self.tools.items())
                },
            },
        }


@dataclass(frozen=True)
class Page:
    """The dashboard as one HTML document (CSS and JS inlined from `static/`) and its Content-Security-Policy."""

    html: str
    csp: str


def load_page() -> Page:
    """Assemble `static/dashboard.html` with `dashboard.css` and `dashboard.js` inlined. The CSP allows exactly
    that script (by hash), inline styles, and fetches to this origin: no CDN, nothing else loads."""
    static = resources.files("sidecar.coordinator") / "static"
    css = (static / "dashboard.css").read_text(encoding="utf-8")
    js = (static / "dashboard.js").read_text(encoding="utf-8")
    html = (static / "dashboard.html").read_text(encoding="utf-8")
    html = html.replace("/*STYLE*/", css).replace("/*SCRIPT*/", js)
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return Page(html, csp)
