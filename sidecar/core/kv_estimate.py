"""The engine's own word on KV: correcting the `kv` policy's estimate with vLLM's counters.

The `kv` policy's `KVLedger` counts each agent's tokens from the answers' usage. The engine holds them in blocks
(16 tokens on GPUs, 128 on vLLM's CPU backend), shares some between agents, may serve traffic the coordinator does
not see, and has a capacity the operator may have configured wrongly. vLLM says what it holds (`reference/vllm.md`):

    vllm:cache_config_info          the KV capacity in tokens (`kv_cache_size_tokens`, or blocks x block size)
    vllm:kv_cache_usage_perc        the share of blocks held by active requests: against the ledger's tokens of
                                    the agents with a call in flight, engine tokens per ledger token (`scale`)
    vllm:prefix_cache_hits_total    prompt tokens found cached, of `vllm:prefix_cache_queries_total` asked for:
                                    the engine's hit ratio against the one the ledger expected for the calls it
                                    started meanwhile (`residency`: below 1 when the engine keeps less than the
                                    ledger thinks it does)

    EngineKV                        one scrape's KV facts
    KVCorrection                    the correction in effect (a value; `correct` returns the next one)
    correct(previous, scrape, ...)  one scrape -> the next correction
    expected_hit(state, resident, ...)  the prompt tokens the ledger expects cached for an agent's next call
    KVCorrector                     the mutable side one dispatcher keeps: the correction, and what the ledger
                                    expected of the calls started since the counters' last sample

The policy then plans with `effective_capacity`: the engine's capacity x residency / scale, in ledger tokens.
Without the engine's capacity nothing is corrected (usage is a share, and a share of an unknown size says
nothing), so an upstream that does not export `cache_config_info` keeps the configured capacity and the ledger as
is. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sidecar.core.working_set import AgentKV, KVLedger, footprint_of, resident_agents

MIN_SCALE, MAX_SCALE = 0.5, 4.0
"""Bounds of `scale`. Block rounding alone gives up to one block per agent over its tokens; a value outside these
bounds means the samples are wrong (a scrape between two calls), not the ledger."""

MIN_RESIDENCY = 0.25
"""The floor of `residency`: the engine's capacity is known, so planning with less than a quarter of it would only
empty the GPU."""

SMOOTHING = 0.5
"""Weight of a new sample: each scrape moves a correction halfway, so one odd scrape cannot swing admission."""

TOLERANCE = 0.9
"""An engine hit ratio at least this share of the expected one counts as the ledger's prediction holding: what the
engine caches ends where an answer's re-rendered tokens differ from the generated ones (vLLM's CPU backend,
128-token blocks, lost ~6% so on the real-vLLM tier), and such a shortfall is no sign of a smaller cache."""

RECOVERY_STEP = 0.05
"""Residency regained per sample while the prediction holds: a cut made under a burst of evictions is undone in at
most (1 - MIN_RESIDENCY) / RECOVERY_STEP = 15 samples once the engine caches what the ledger expects again (a
multiplicative cut, an additive recovery: the capacity settles just below where predictions start to fail)."""

MIN_SAMPLE_TOKENS = 256
"""A sample needs at least this many tokens on both sides (in flight for `scale`, queried for `residency`): a
few tokens of a short call say nothing about the ledger."""


@dataclass(frozen=True)
class EngineKV:
    """One scrape's KV facts: `usage` = `vllm:kv_cache_usage_perc` (0..1), `capacity_tokens` and `block_tokens`
    from `vllm:cache_config_info` (None: not exported), the prefix-cache counters (None: not exported)."""

    usage: float
    capacity_tokens: int | None
    prefix_hits: float | None = None
    prefix_queries: float | None = None
    block_tokens: int | None = None


@dataclass(frozen=True)
class KVCorrection:
    """The correction in effect. `scale`: engine KV tokens per ledger token; `residency`: the share of the
    capacity that holds what the ledger models (1 = all of it); `capacity_tokens`: the engine's (None: not known,
    nothing corrected); `hit_ratio` / `expected_hit_ratio`: the engine's prefix-cache hit ratio over the last
    sampled interval and what the ledger expected for it; `scale_samples` / `residency_samples`: how many scrapes
    moved each; `last`: the previous scrape (for the counters' deltas)."""

    scale: float = 1.0
    residency: float = 1.0
    capacity_tokens: int | None = None
    hit_ratio: float | None = None
    expected_hit_ratio: float | None = None
    scale_samples: int = 0
    residency_samples: int = 0
    last: EngineKV | None = None

    def effective_capacity(self, configured_tokens: int) -> int:
        """The capacity the policy plans with, in ledger tokens: the engine's capacity x residency / scale, or
        `configured_tokens` while the engine's capacity is unknown. At least 1."""
        if self.capacity_tokens is None:
            return configured_tokens
        return max(1, math.floor(self.capacity_tokens * self.residency / self.scale))

    def engine_tokens(self, ledger_tokens: float) -> int:
        """Ledger tokens as the engine holds them (x scale), for display."""
        return round(ledger_tokens * self.scale)


def correct(
    previous: KVCorrection,
    scrape: EngineKV,
    in_flight_tokens: int,
    expected_hits: int,
    expected_queries: int,
) -> KVCorrection:
    """The correction after one scrape.

    `in_flight_tokens`: the ledger's tokens of the agents with a call in flight now (shared prefix once, as
    `working_set.footprint_of` counts it, without their next turn's growth). `expected_hits` / `expected_queries`:
    prompt tokens the ledger expected cached / in all, summed over the calls started since the counters were last
    sampled: the caller resets them whenever the returned `last` is `scrape` (the counters' base moved on) and
    keeps adding to them while it is an earlier scrape (too few tokens queried yet to judge).

    - No capacity in the scrape: the previous correction, but unknown capacity (nothing corrected).
    - `scale` moves `SMOOTHING` of the way to usage x capacity / in_flight_tokens when both sides have at least
      `MIN_SAMPLE_TOKENS`, within [MIN_SCALE, MAX_SCALE].
    - `residency`, when the counters advanced by at least `MIN_SAMPLE_TOKENS` queried and the ledger expected
      hits: x (engine hit ratio / expected hit ratio) ** SMOOTHING when the engine's ratio falls short of
      `TOLERANCE` x the expected one (down to MIN_RESIDENCY), else + RECOVERY_STEP (up to 1). A counter that went
      back (the engine restarted) only restarts the deltas.
    """
    if scrape.capacity_tokens is None or scrape.capacity_tokens < 1:
        return replace(previous, capacity_tokens=None, last=scrape)
    scale, scale_samples = previous.scale, previous.scale_samples
    held = scrape.usage * scrape.capacity_tokens
    if in_flight_tokens >= MIN_SAMPLE_TOKENS and held >= MIN_SAMPLE_TOKENS:
        sample = _clamp(held / in_flight_tokens, MIN_SCALE, MAX_SCALE)
        scale = _clamp(scale + SMOOTHING * (sample - scale), MIN_SCALE, MAX_SCALE)
        scale_samples += 1
    corrected = replace(
        previous, scale=scale, scale_samples=scale_samples, capacity_tokens=scrape.capacity_tokens, last=scrape
    )
    return _residency(corrected, previous.last, scrape, expected_hits, expected_queries)


def _residency(
    corrected: KVCorrection, before: EngineKV | None, now: EngineKV, expected_hits: int, expected_queries: int
) -> KVCorrection:
    if before is None or None in (before.prefix_hits, before.prefix_queries, now.prefix_hits, now.prefix_queries):
        return corrected
    assert before.prefix_hits is not None and before.prefix_queries is not None
    assert now.prefix_hits is not None and now.prefix_queries is not None
    hits, queries = now.prefix_hits - before.prefix_hits, now.prefix_queries - before.prefix_queries
    if hits < 0 or queries < 0:  # the engine restarted: its counters began again
        return corrected
    if queries < MIN_SAMPLE_TOKENS or expected_hits <= 0 or expected_queries <= 0:
        return replace(corrected, last=before)  # too little yet: keep counting from the earlier scrape
    ratio, expected = hits / queries, min(expected_hits / expected_queries, 1.0)
    if ratio >= TOLERANCE * expected:
        residency = min(corrected.residency + RECOVERY_STEP, 1.0)
    else:
        residency = max(corrected.residency * (ratio / expected) ** SMOOTHING, MIN_RESIDENCY)
    return replace(
        corrected,
        residency=residency,
        hit_ratio=ratio,
        expected_hit_ratio=expected,
        residency_samples=corrected.residency_samples + 1,
    )


def expected_hit(state: AgentKV | None, resident: bool, prompt_tokens: int, block_tokens: int | None = None) -> int:
    """Prompt tokens the ledger expects the engine to find cached for this agent's next call of `prompt_tokens`:
    its whole context when resident, else the prefix it shares with other agents (0 for an agent never seen); never
    the prompt's last token (the engine computes at least one), and in whole blocks of `block_tokens` when known
    (the engine caches full blocks only)."""
    if state is None or prompt_tokens < 1:
        return 0
    cached = state.context_tokens if resident else min(state.shared_tokens, state.context_tokens)
    cached = min(cached, prompt_tokens - 1)
    return cached - cached % block_tokens if block_tokens else cached


class KVCorrector:
    """One dispatcher's correction: call `started` before each call of the `kv` policy starts (with the ledger as
    it was) and `observe` at each scrape; `capacity` is what the policy plans with. Not thread-safe; no clock."""

    def __init__(self, configured_tokens: int) -> None:
        self.configured_tokens = configured_tokens
        self.correction = KVCorrection()
        self.expected_hits = 0
        self.expected_queries = 0

    @property
    def capacity(self) -> int:
        """The policy's capacity in ledger tokens (`KVCorrection.effective_capacity`)."""
        return self.correction.effective_capacity(self.configured_tokens)

    def started(
        self, agents: Mapping[str, AgentKV], agent: str, prompt_tokens: int | None, ledger: KVLedger | None = None
    ) -> None:
        """A call of `agent` starts; `agents` is the ledger before it, `prompt_tokens` the caller's estimate of its
        prompt (None: its last context). Counted only once the engine's capacity is known (before that the next
        scrape starts the count afresh anyway). `ledger`: the ledger `agents` is the snapshot of, whose
        incremental resident set is the same answer (`KVLedger.resident`) without scanning every agent."""
        if self.correction.capacity_tokens is None:
            return
        state = agents.get(agent)
        if ledger is not None:
            resident = agent in ledger.resident(self.capacity)
        else:
            resident = agent in resident_agents(agents, self.capacity)
        queried = prompt_tokens if prompt_tokens is not None and prompt_tokens > 0 else None
        if queried is None and state is not None:
            queried = state.context_tokens
        block = None if self.correction.last is None else self.correction.last.block_tokens
        self.expected_hits += expected_hit(state, resident, queried or 0, block)
        self.expected_queries += queried or 0

    def observe(self, scrape: EngineKV, agents: Mapping[str, AgentKV]) -> None:
        """One scrape: the next correction from it and the ledger now."""
        flying = [a for a, s in agents.items() if s.in_flight > 0]
        held = footprint_of(agents, flying) - sum(agents[a].growth_tokens for a in flying)
        self.correction = correct(self.correction, scrape, held, self.expected_hits, self.expected_queries)
        if self.correction.last is scrape:
            self.expected_hits = self.expected_queries = 0


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
