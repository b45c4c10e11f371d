"""The dispatcher: the one place the ordering and admission policies meet `await`. One per upstream model.

A call asks for a slot with `acquire(agent, tier)`; it starts at once when the policy's gate allows and nothing
better is waiting, else it waits in the `WaitQueue` until `_pump` picks it. Every slot is released exactly once
(`Slot.release`, idempotent) whatever happens to the call, and a call cancelled while waiting (its client left)
leaves the queue at once. Gates (from the policy): `none` (fcfs: vLLM orders), `pools` (the seed's semaphores),
`window` (an in-flight window per upstream, static or adapted from the upstream's /metrics by
`core.engine_admission`, which also decides when a call may pass a full window because vLLM's native priority
will order it ahead of worse work already inside), `working_set` (the `kv` policy: the agents whose KV fits, from
the `KVLedger` this dispatcher keeps of every call's tokens and of the calls waiting, which answers the pressure, the
resident set and the places incrementally; its pick decides, no window applies). With
`kv_correction`, the `kv` policy's capacity follows vLLM's own KV counters at every scrape (`core.kv_estimate`).
The `kv` policy's gates act only under KV pressure (`core.kv_pressure`, judged before every pick): while they are
not engaged its calls are picked by the priority policy behind the window, exactly as under `priority`, and
`gate` says which gate holds calls now.
`submit` is `acquire` without asyncio: the grant is a callback (the fleet simulation drives the dispatcher so).

Time is read through `clock` (monotonic seconds) so tests can pass a fake clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sidecar.coordinator.errors import ErrorKind, ProxyError
from sidecar.coordinator.telemetry import summary_ms
from sidecar.core.admission import (
    DEFAULT_LIMITS,
    AdmissionLimits,
    UpstreamMetrics,
    has_spare_capacity,
    retry_after_s,
    saturation,
)
from sidecar.core.engine_admission import AdmissionState, ScrapeFailure, admits, initial_state, observe
from sidecar.core.kv_estimate import EngineKV, KVCorrector
from sidecar.core.kv_pressure import ALWAYS, Pressure, PressureRule, engagement
from sidecar.core.ordering import (
    DEFAULT_HALF_LIFE_S,
    AttainedService,
    Gate,
    OrderingPolicy,
    Pick,
    Pool,
    PoolUsage,
    PriorityOrder,
    Waiting,
    WaitQueue,
)
from sidecar.core.stages import TIERS, Tier
from sidecar.core.stats import SampleWindow, rate
from sidecar.core.working_set import KVAwareOrder, KVLedger

DRAIN_WINDOW_S = 30.0


@dataclass
class TierCounters:
    waits: SampleWindow = field(default_factory=lambda: SampleWindow(2048))
    latencies: SampleWindow = field(default_factory=lambda: SampleWindow(2048))
    admitted: int = 0
    rejected: int = 0
    promoted: int = 0
    cancelled_waiting: int = 0
    max_wait: float = 0.0


@dataclass
class Slot:
    """A granted place upstream. `release(tokens)` exactly once (later calls do nothing)."""

    dispatcher: Dispatcher
    agent: str
    tier: Tier
    pool: Pool | None
    waited_s: float
    started_at: float
    released: bool = False

    def release(
        self,
        tokens: float = 0.0,
        context_tokens: int | None = None,
        cached_tokens: int | None = None,
        long_tool: bool = False,
    ) -> None:
        """`tokens`: the call's GPU work (uncached prompt + output); `context_tokens` (prompt + output tokens) and
        `cached_tokens` (prompt tokens served from the prefix cache) feed the `kv` policy's ledger (None: unknown);
        `long_tool`: the answer runs a long tool (a test run) before the agent calls again (False: not known)."""
        if not self.released:
            self.released = True
            self.dispatcher._release(self, tokens, context_tokens, cached_tokens, long_tool)


class Dispatcher:
    def __init__(
        self,
        name: str,
        policy: OrderingPolicy,
        *,
        max_queue: int = 1024,
        static_window: int | None = None,
        limits: AdmissionLimits = DEFAULT_LIMITS,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        native_priority: bool = False,
        engine_slots: int | None = None,
        kv_correction: bool = False,
        kv_pressure: PressureRule | None = None,
        clock: Callable[[], float],
    ) -> None:
        """`native_priority`: the upstream orders what it holds by vLLM's `priority` (it runs with
        `--scheduling-policy priority`; configuration says so, nothing detects it). `engine_slots`: its configured
        running capacity (`max_num_seqs`), else learned from its metrics. `kv_correction`: under the `kv` policy,
        plan with the engine's capacity and correct the estimate from its counters. `kv_pressure`: under the `kv`
        policy, when its gates engage (`core.kv_pressure`; None: always, the policy as constructed; the
        coordinator passes `[scheduling]`'s rule)."""
        self.name = name
        self.policy = policy
        self.max_queue = max_queue
        self.static_window = static_window
        self.limits = limits
        self.clock = clock
        self.native_priority = native_priority
        self.admission: AdmissionState = initial_state(limits, engine_slots)
        self.window = static_window if static_window is not None else self.admission.window
        self.window_reason = "static" if static_window is not None else str(self.admission.reason)
        self._waited = False  # a call waited on the window since the last scrape (demand for a larger one)
        self.speculative = 0  # places held by speculative calls (only where native priority is off)
        self.scrapes = 0  # metrics scrapes observed, and how many of them gave no vLLM snapshot
        self.failed_scrapes = 0
        self.queue = WaitQueue()
        self._waiters: dict[int, asyncio.Future[Slot] | Callable[[Slot], None]] = {}
        self._seq = itertools.count(1)
        self.in_flight = 0
        self.in_flight_by_tier: dict[Tier, int] = dict.fromkeys(TIERS, 0)
        self.pools = PoolUsage()
        self.service = AttainedService(half_life_s=half_life_s)
        self.tiers: dict[Tier, TierCounters] = {t: TierCounters() for t in TIERS}
        self._completions: deque[float] = deque(maxlen=4096)
        self.metrics: UpstreamMetrics | None = None
        self._prev_metrics: UpstreamMetrics | None = None
        # Called when a real call has to wait for a slot, or starts past a full window (native priority): then
        # speculation cancels its calls on this model. vLLM never preempts a running call at max_num_seqs; the
        # coordinator can, for the one kind of work that loses nothing by it.
        self.on_queue: list[Callable[[], None]] = []
        # The `kv` policy's accounting of every agent's context (None under the other policies).
        self.kv_ledger: KVLedger | None = KVLedger() if isinstance(policy, KVAwareOrder) else None
        # The `kv` policy frees a test run's place sooner (`kv_long_tool_keep_s`): only then does a call read its
        # answer's tool calls to tell `Slot.release(long_tool=...)` (`core.longtool`).
        self.reads_long_tools = isinstance(policy, KVAwareOrder) and policy.long_tool_keep_s is not None
        self.kv_corrector: KVCorrector | None = None
        if kv_correction and isinstance(policy, KVAwareOrder):
            self.kv_corrector = KVCorrector(policy.capacity_tokens)
        # Under the `kv` policy: when its gates engage, and the priority policy that picks while they do not.
        self.kv_pressure_rule = kv_pressure if kv_pressure is not None else ALWAYS
        self.kv_pressure = Pressure()
        self._priority = PriorityOrder(policy.aging_s) if isinstance(policy, KVAwareOrder) else None
        self._prompt_hints: dict[int, int] = {}

    # --- the public surface -----------------------------------------------------------------------------

    async def acquire(self, agent: str, tier: Tier, prompt_tokens: int | None = None) -> Slot:
        """Wait for a slot (FIFO-fair per the policy). Raises ProxyError 429 when the queue is full.
        `prompt_tokens`: an estimate of the call's prompt, for the `kv` policy's ledger (None: unknown)."""
        future: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        item = self._enqueue(agent, tier, future, prompt_tokens)
        try:
            return await future
        except asyncio.CancelledError:
            if self.queue.remove(item.seq) is not None:
                self._waiters.pop(item.seq, None)
                self._prompt_hints.pop(item.seq, None)
                if self.kv_ledger is not None:
                    self.kv_ledger.dequeued(agent)
                self.tiers[tier].cancelled_waiting += 1
            elif future.done() and not future.cancelled():
                future.result().release()  # granted in the same instant the caller left: give it back
            raise

    def submit(self, agent: str, tier: Tier, on_grant: Callable[[Slot], None], prompt_tokens: int | None = None) -> int:
        """`acquire` for a caller without an event loop: queue a call and return its seq; `on_grant(slot)` runs when
        it starts (possibly before this returns). `prompt_tokens`: the caller's estimate of the prompt, for the KV
        ledger. Raises ProxyError 429 when the queue is full, as `acquire` does."""
        return self._enqueue(agent, tier, on_grant, prompt_tokens).seq

    def _enqueue(
        self,
        agent: str,
        tier: Tier,
        waiter: asyncio.Future[Slot] | Callable[[Slot], None],
        prompt_tokens: int | None,
    ) -> Waiting:
        """Queue one call for `acquire` and `submit` alike (so the fleet simulation drives exactly what the proxy
        does) and pump: it may have started before this returns. Raises ProxyError 429 when the queue is full."""
        now = self.clock()
        if len(self.queue) >= self.max_queue:
            self.tiers[tier].rejected += 1
            wait = retry_after_s(len(self.queue), self.drain_rate(now))
            raise ProxyError(
                429,
                ErrorKind.QUEUE_FULL,
                f"the coordinator's queue for {self.name} is full ({len(self.queue)} calls waiting); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        item = Waiting(next(self._seq), agent, tier, now)
        if self.kv_ledger is not None:
            self.kv_ledger.queued(agent, now, prompt_tokens)
            if prompt_tokens is not None:
                self._prompt_hints[item.seq] = prompt_tokens
        if not self.queue and self._starts_alone(tier, agent):
            # Nothing waits and the gate lets it in: what `_pump` would pick for a queue of this one call, so it
            # starts without the queue's and the policy's work (the common case, every call while the upstream
            # has room).
            self._waiters[item.seq] = waiter
            self._start_now(Pick(item, tier.rank), now)
            return item
        self.queue.push(item)
        self._waiters[item.seq] = waiter
        self._pump()
        if item.seq in self.queue:  # it waits: a signal for admission, and room to make for it
            self._waited = True
            for callback in self.on_queue:
                callback()
        return item

    @property
    def gate(self) -> Gate:
        """The gate that holds calls now: the policy's, except under a `kv` policy whose gates are not engaged
        (then the window, as under `priority`)."""
        if self._priority is not None and not self.kv_pressure.engaged:
            return Gate.WINDOW
        return self.policy.gate

    @property
    def kv_engaged(self) -> bool | None:
        """Whether the `kv` policy's gates are engaged (None under the other policies)."""
        return None if self._priority is None else self.kv_pressure.engaged

    def drain_rate(self, now: float) -> float:
        return rate(self._completions, now, DRAIN_WINDOW_S)

    def saturation(self) -> float:
        """For routing spill-over: the upstream's own saturation, or 1+ while calls queue here."""
        now = self.clock()
        queued = len(self.queue) / self.limits.queue_saturated
        if self.metrics is None:
            return queued
        return max(queued, saturation(self.metrics, now, self._prev_metrics, self.limits))

    def spare_capacity(self) -> bool:
        """Whether the upstream has room beyond the real calls it holds, on its last two scrapes
        (`core.admission.has_spare_capacity`, with the engine's known running capacity): speculation's gate."""
        metrics = self.metrics
        if metrics is not None and self.admission.slots is not None:  # vLLM does not export max_num_seqs
            metrics = dataclasses.replace(metrics, max_num_seqs=self.admission.slots)
        return has_spare_capacity(metrics, self.clock(), self._prev_metrics, self.limits)

    def forget(self, agent: str) -> None:
        """Drop what this dispatcher keeps of `agent` between calls (its attained service, and under the `kv`
        policy its ledger entry): the `AgentBook` forgot it (never while a call of its is in flight)."""
        self.service = self.service.without(agent)
        if self.kv_ledger is not None:
            self.kv_ledger.forget(agent)

    def observe_metrics(self, scrape: UpstreamMetrics | ScrapeFailure | None) -> None:
        """One scrape's outcome (None: it failed, as UNREACHABLE): adapt the window (adaptive mode) and pump."""
        now = self.clock()
        self.scrapes += 1
        if isinstance(scrape, UpstreamMetrics):
            self._prev_metrics, self.metrics = self.metrics, scrape
            self._correct_kv(scrape)
        else:
            self.failed_scrapes += 1
        if self.static_window is None:
            demand = self._waited or len(self.queue) > 0 or self.in_flight >= self.window
            outcome = ScrapeFailure.UNREACHABLE if scrape is None else scrape
            self.admission = observe(
                self.admission, outcome, now, self.limits, native_priority=self.native_priority, demand=demand
            )
            self.window, self.window_reason = self.admission.window, str(self.admission.reason)
        self._waited = False
        self._pump()

    def hold_speculative(self) -> bool:
        """Take a place for one speculative call where native priority cannot put it behind real work: only
        when no real call waits here and the window (and the engine's known capacity) has room, so it never
        queues inside vLLM ahead of real work. True when taken; give it back with `release_speculative`."""
        if self.queue:
            return False
        if self.gate is Gate.WINDOW:
            limit = min(self.window, self.admission.slots or self.window)
            if self.in_flight + self.speculative >= limit:
                return False
        self.speculative += 1
        return True

    def release_speculative(self) -> None:
        self.speculative = max(self.speculative - 1, 0)
        self._pump()

    def speculative_answer_started(self, agent: str) -> None:
        """A real call of `agent` is being answered from its speculative call (`Speculator.serve`), which took no
        slot: under the `kv` policy the ledger counts it as a call started now (the agent active, in flight)
        until `speculative_answer_ended`, exactly once after this. Nothing else here: the call never queued."""
        if self.kv_ledger is not None:
            self.kv_ledger.started(agent, self.clock())

    def speculative_answer_ended(
        self, agent: str, context_tokens: int | None, cached_tokens: int | None, long_tool: bool = False
    ) -> None:
        """The answer `speculative_answer_started` announced has ended: the ledger learns the turn as from
        `Slot.release` (`context_tokens`: the speculative call's prompt + output tokens, `cached_tokens`: its
        prompt tokens from the prefix cache, None when unknown; `long_tool`: its answer runs a test run)."""
        if self.kv_ledger is not None:
            self.kv_ledger.finished(agent, self.clock(), context_tokens, cached_tokens, long_tool)
            self._pump()

    def status(self) -> dict[str, Any]:
        now = self.clock()
        by_tier = self.queue.count_by_tier()
        tiers = {}
        for tier, c in self.tiers.items():
            waits, lat = c.waits.summary(), c.latencies.summary()
            tiers[str(tier)] = {
                "queued": by_tier.get(tier, 0),
                "in_flight": self.in_flight_by_tier[tier],
                "admitted": c.admitted,
                "rejected": c.rejected,
                "promoted_by_aging": c.promoted,
                "cancelled_while_queued": c.cancelled_waiting,
                "wait_ms": summary_ms(waits),
                "max_wait_ms": round(c.max_wait * 1000, 1),
                "latency_ms": summary_ms(lat),
            }
        # The aging bounds of the order in effect: under the `kv` policy, priority's while its gates are not engaged.
        in_effect = self._priority if self._priority is not None and not self.kv_pressure.engaged else self.policy
        bounds = getattr(in_effect, "wait_bounds", None)
        return {
            "policy": str(self.policy.name),
            "gate": str(self.gate),
            "queued": len(self.queue),
            "in_flight": self.in_flight,
            "window": None if self.gate is not Gate.WINDOW else self.window,
            "window_reason": self.window_reason if self.gate is Gate.WINDOW else None,
            "native_priority": self.native_priority,
            "upstream_state": self._upstream_state(),
            "engine_slots": self.admission.slots,
            "engine_slots_source": self.admission.slots_source,
            "scrapes": self.scrapes,
            "failed_scrapes": self.failed_scrapes,
            "speculative_held": self.speculative,
            "pools_in_use": {"hot": self.pools.hot, "cold": self.pools.cold} if self.gate is Gate.POOLS else None,
            "aging_wait_bound_s": {str(t): b for t, b in bounds().items()} if bounds else None,
            "drain_per_s": round(self.drain_rate(now), 3),
            "upstream_metrics": None
            if self.metrics is None
            else {
                "waiting": self.metrics.waiting,
                "running": self.metrics.running,
                "kv_usage": self.metrics.kv_usage,
                "preemptions_total": self.metrics.preemptions_total,
                "kv_capacity_tokens": self.metrics.kv_capacity_tokens,
                "age_s": round(now - self.metrics.scraped_at, 3),
            },
            "tiers": tiers,
            "working_set": self.working_set_status(now),
        }

    def working_set_status(self, now: float) -> dict[str, Any] | None:
        """The `kv` policy's view (None under other policies): the KV capacity, the working set's estimated tokens
        against it, and per agent its estimated context, whether it is probably resident and holds a place."""
        if self.kv_ledger is None or not isinstance(self.policy, KVAwareOrder):
            return None
        from sidecar.core.working_set import footprint_of, resident_agents

        agents = self.kv_ledger.snapshot()
        policy = self.policy
        places = policy.places(agents, now)
        resident = resident_agents(agents, policy.capacity_tokens)
        return {
            "capacity_tokens": policy.capacity_tokens,
            "planned_tokens": footprint_of(agents, places),
            "fill": policy.fill,
            "keep_s": policy.keep_s,
            "long_tool_keep_s": policy.long_tool_keep_s,
            "admission": policy.working_set,
            "program_order": policy.program_order,
            "engaged": self.kv_pressure.engaged,
            "demand_tokens": self.kv_pressure.demand_tokens,
            "active_agents": self.kv_pressure.active_agents,
            "pressure_ratio": round(self.kv_pressure.ratio, 3),
            "engage_ratio": self.kv_pressure_rule.engage_ratio,
            "release_ratio": self.kv_pressure_rule.release_ratio,
            "engagement_changes": self.kv_pressure.changes,
            "agents": {
                agent: {
                    "context_tokens": s.context_tokens,
                    "shared_tokens": s.shared_tokens,
                    "in_flight": s.in_flight,
                    "resident": agent in resident,
                    "has_place": agent in places,
                    "long_tool": s.long_tool,
                }
                for agent, s in sorted(agents.items())
            },
        }

    def positions(self) -> dict[int, int]:
        """Queue position (0 = next) of each waiting call, by seq."""
        from sidecar.core.ordering import ordered

        now = self.clock()
        return {item.seq: i for i, item in enumerate(ordered(self.policy, self.queue, now, self.service.snapshot(now)))}

    # --- internals ----------------------------------------------------------------------------------------

    def _correct_kv(self, scrape: UpstreamMetrics) -> None:
        """The `kv` policy's capacity after one scrape (`core.kv_estimate`); nothing without the corrector."""
        if self.kv_corrector is None or self.kv_ledger is None or not isinstance(self.policy, KVAwareOrder):
            return
        engine = EngineKV(
            scrape.kv_usage,
            scrape.kv_capacity_tokens,
            scrape.prefix_cache_hits_total,
            scrape.prefix_cache_queries_total,
            scrape.kv_block_tokens,
        )
        self.kv_corrector.observe(engine, self.kv_ledger.snapshot())
        if self.kv_corrector.capacity != self.policy.capacity_tokens:
            self.policy = replace(self.policy, capacity_tokens=self.kv_corrector.capacity)

    def _upstream_state(self) -> str:
        if self.gate is not Gate.WINDOW:
            return "not windowed"
        return "static window" if self.static_window is not None else str(self.admission.phase)

    def _starts_alone(self, tier: Tier, agent: str) -> bool:
        """Whether a call of `agent` and `tier` that would wait alone starts at once: under gates without a pick of
        their own (none; the window, where `_pump` starts a lone call exactly when `_admits` lets it in). Under the
        `kv` policy the pressure is judged first, with this call waiting, as `_pump` would: engaged, its pick
        decides."""
        if self._priority is not None:
            self._judge_pressure(self.clock())  # the ledger counts this call waiting since `queued`
        gate = self.gate
        return gate is Gate.NONE or (gate is Gate.WINDOW and self._admits(tier))

    def _admits(self, tier: Tier) -> bool:
        if self.in_flight + self.speculative < self.window:
            return True  # `admits`' first answer, without building its counts (in_flight is their sum)
        by_rank = {t.rank: n for t, n in self.in_flight_by_tier.items()}
        by_rank[len(TIERS)] = self.speculative  # below every tier
        return admits(tier.rank, by_rank, self.window, native_priority=self.native_priority)

    def _judge_pressure(self, now: float) -> None:
        """Under the `kv` policy: whether its gates are engaged now (`core.kv_pressure.engagement`), counting the
        agents of the waiting calls (the ledger's, from `queued` until `started` or `dequeued`, so a call about to
        start alone counts too) as active. The ledger keeps the demand as a running sum (`KVLedger.demand`, the
        same answer as `next_pressure` over its snapshot and the queue's agents), so this does not grow with the
        agents it knows."""
        if self.kv_ledger is None or not isinstance(self.policy, KVAwareOrder):
            return
        rule = self.kv_pressure_rule
        policy = self.policy
        demand, active = self.kv_ledger.demand(now, rule.window_s, policy.new_agent_tokens, policy.small_context_tokens)
        self.kv_pressure = engagement(self.kv_pressure, rule, demand, active, self.policy.capacity_tokens, now)

    def _pump(self) -> None:
        self._judge_pressure(self.clock())
        gate = self.gate
        while self.queue:
            if gate is Gate.WINDOW and not self.native_priority and self.in_flight + self.speculative >= self.window:
                return  # nothing passes a full window without native priority: spare the pick
            now = self.clock()
            if self.kv_ledger is not None and isinstance(self.policy, KVAwareOrder) and self.kv_pressure.engaged:
                service = self.service.snapshot(now)
                pick = self.policy.pick_kv(self.queue, now, service, self.kv_ledger.snapshot(), self.kv_ledger)
            elif self._priority is not None:  # the `kv` policy, not engaged: exactly the priority policy's pick
                pick = self._priority.pick(self.queue, now, self.service.snapshot(now), self.pools)
            else:
                pick = self.policy.pick(self.queue, now, self.service.snapshot(now), self.pools)
            if pick is None:
                return
            if gate is Gate.WINDOW and not self._admits(pick.item.tier):
                # The policy's first choice must wait (a full window; with aging it may be a promoted worse
                # tier); a better-tier call that vLLM would order ahead of worse work inside it may still go.
                pick = self._passing(now)
                if pick is None:
                    return
            self._start_now(pick, now)

    def _start_now(self, pick: Pick, now: float) -> None:
        """Start `pick`; past a full window (native priority let it pass) speculation makes room for it."""
        past_window = self.gate is Gate.WINDOW and self.in_flight + self.speculative >= self.window
        self._start(pick, now)
        if past_window:  # the engine is full: make room for it where that loses nothing
            for callback in self.on_queue:
                callback()

    def _passing(self, now: float) -> Pick | None:
        """The best waiting call (by tier, then the policy's order) that `admits` lets past a full window."""
        if not self.native_priority:
            return None
        service = self.service.snapshot(now)
        heads = [h for h in self.queue.heads() if self._admits(h.tier)]
        if not heads:
            return None
        best = min(heads, key=lambda h: (h.tier.rank, self.policy.sort_key(h, now, service)))
        return Pick(best, best.tier.rank)

    def _start(self, pick: Pick, now: float) -> None:
        item = pick.item
        self.queue.remove(item.seq)
        waiter = self._waiters.pop(item.seq)
        if isinstance(waiter, asyncio.Future) and waiter.done():
            # Cancelled in this same instant (its `acquire` has not run its handler yet): it left while waiting.
            self._prompt_hints.pop(item.seq, None)
            if self.kv_ledger is not None:
                self.kv_ledger.dequeued(item.agent)
            self.tiers[item.tier].cancelled_waiting += 1
            return
        hint = self._prompt_hints.pop(item.seq, None)
        if self.kv_ledger is not None:
            if self.kv_corrector is not None:
                self.kv_corrector.started(self.kv_ledger.snapshot(), item.agent, hint, self.kv_ledger)
            self.kv_ledger.started(item.agent, now, hint)
        waited = now - item.arrived_at
        counters = self.tiers[item.tier]
        counters.admitted += 1
        counters.waits.add(waited)
        counters.max_wait = max(counters.max_wait, waited)
        if pick.promoted:
            counters.promoted += 1
        self.in_flight += 1
        self.in_flight_by_tier[item.tier] += 1
        if pick.pool is Pool.HOT:
            self.pools = PoolUsage(self.pools.hot + 1, self.pools.cold)
        elif pick.pool is Pool.COLD:
            self.pools = PoolUsage(self.pools.hot, self.pools.cold + 1)
        slot = Slot(self, item.agent, item.tier, pick.pool, waited, now)
        if isinstance(waiter, asyncio.Future):
            waiter.set_result(slot)
        else:
            waiter(slot)

    def _release(
        self,
        slot: Slot,
        tokens: float,
        context_tokens: int | None = None,
        cached_tokens: int | None = None,
        long_tool: bool = False,
    ) -> None:
        now = self.clock()
        if self.kv_ledger is not None:
            self.kv_ledger.finished(slot.agent, now, context_tokens, cached_tokens, long_tool)
        self.in_flight -= 1
        self.in_flight_by_tier[slot.tier] -= 1
        if slot.pool is Pool.HOT:
            self.pools = PoolUsage(self.pools.hot - 1, self.pools.cold)
        elif slot.pool is Pool.COLD:
            self.pools = PoolUsage(self.pools.hot, self.pools.cold - 1)
        if tokens > 0 and math.isfinite(tokens):
            self.service = self.service.add(slot.agent, tokens, now)
        self._completions.append(now)
        self.tiers[slot.tier].latencies.add(now - slot.started_at + slot.waited_s)
        self._pump()
