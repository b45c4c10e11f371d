"""KV-aware scheduling: which agents' contexts the GPU should hold, from the coordinator's own token accounting.

A 32B model on one A100 holds ~30-40K tokens of KV (`reference/calibration.md`), a coding agent's context grows to
tens of thousands: the GPU holds a few agents at once. vLLM alone interleaves every agent's calls, so each agent's
prefix is evicted between its turns and re-prefilled on the next (DESIGN.md, "KV is the scarce resource"). This
module decides, outside the engine, when each agent's next call may reach it:

    KVLedger           per agent: its context (prompt + output tokens of its last call), how much it grew, calls in
                       flight, when it was last active. Mutable, owned by one dispatcher; callers pass `now`.
    resident_agents    the LRU estimate of whose context is still in the prefix cache: in-flight agents first, then
                       the most recently active, while their footprints fit the KV capacity (vLLM evicts least
                       recently used blocks first, `reference/vllm.md`).
    KVAwareOrder       an ordering policy with two switches, each usable alone:
      working_set      admission: an agent holds a place in the working set while a call of its is in flight or
                       it returned from one at most `keep_s` ago and is still resident (a short tool call,
                       Continuum's time-to-live). A call of an agent with a place starts at once; any other call
                       starts only when the places' footprints plus its own fit `fill x capacity`, so a new agent
                       waits for room instead of evicting everyone, and an agent in a long tool run yields.
      program_order    an agent whose context is resident goes before one that would be re-prefilled, across
                       tiers (Continuum's program-level order; Autellix's least attained service breaks ties).
      small contexts   an agent whose footprint is below `small_context_tokens` never waits for room:
                       re-prefilling it after an eviction costs less than the wait (the low-load case).
      backfill_s       a younger call that fits may pass one waiting for room until that one has waited this long;
                       then it reserves the room: younger agents with no call in flight lose their places.
    warm_decision      prefix warming under KV pressure: re-warm an evicted agent's prefix shortly before its long
                       tool run ends, only if it fits beside the places and within a token budget.
    Starvation: program age is a fixed total order, so under `program_order` every program in time becomes the
    oldest waiting one, and a call that waits for room blocks every call behind it (no small context skips ahead of
    a big one, except under `backfill_s`, and then only until the waiting call has waited that long, when younger
    agents out of flight also give up their places to it); its wait is bounded by the tasks or tool runs of the
    places ahead of it (under `backfill_s`: of the older programs' places, plus `backfill_s` and the younger
    agents' calls in flight then). Without `program_order`
    the priority policy's aging bound orders the calls (`ordering.wait_bound_s`).

Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from sidecar.core.ordering import (
    DEFAULT_AGING_S,
    Gate,
    Pick,
    PolicyName,
    PoolUsage,
    Waiting,
    WaitQueue,
    effective_level,
    order_key,
)

DEFAULT_KEEP_S = 4.0
"""How long an agent back from a call keeps its place. TraceLab's tool calls take 0.3 s at the median and 13.6 s
at p90 (`reference/calibration.md`): 4 s keeps the place through most short tool calls and frees it during a test
run or a long command, when re-prefilling later costs less than holding the GPU's KV (20K tokens at ~2.5K tok/s,
GPUStack's prefill rate, is ~8 s)."""

DEFAULT_FILL = 0.9
"""Fraction of the KV capacity the working set may plan to use: decode growth and the shared blocks' rounding need
some slack, and vLLM preempts (recomputes) when blocks run out."""

DEFAULT_NEW_AGENT_TOKENS = 8192
"""Footprint assumed for an agent the ledger has not seen finish a call (and whose call carries no size hint)."""

_NO_SERVICE: Mapping[str, float] = MappingProxyType({})
_NO_POOLS = PoolUsage()


@dataclass(frozen=True)
class AgentKV:
    """One agent's accounting. `context_tokens`: prompt + output tokens of its last finished call (what the engine
    cached for it), or the size hint of its first call; `growth_tokens`: how much its context grew between its last
    two calls (the next call's new prompt tokens, roughly); `shared_tokens`: prompt tokens its first call found
    already cached (a prefix it shares with other agents: a recipe's system prompt and tools, held once);
    `last_active`: when a call of its last started or ended; `first_seen`: when its first call started (infinite
    while none has: its program has not begun); `long_tool`: the answer of its last call runs a long tool (a test
    run), as the caller of `KVLedger.finished` saw it (False: no such tool, or not known)."""

    context_tokens: int
    growth_tokens: int
    in_flight: int
    last_active: float
    first_seen: float = 0.0
    shared_tokens: int = 0
    calls: int = 0  # calls finished
    long_tool: bool = False

    @property
    def footprint(self) -> int:
        """The KV its next call needs: its context plus one more turn of growth."""
        return self.context_tokens + self.growth_tokens


def footprint_of(agents: Mapping[str, AgentKV], names: Iterable[str]) -> int:
    """KV tokens the named agents need together: each one's own tokens, plus the largest shared prefix once."""
    own = shared = 0
    for name in names:
        state = agents[name]
        share = min(state.shared_tokens, state.context_tokens)
        own += state.footprint - share
        shared = max(shared, share)
    return own + shared


class KVLedger:
    """Per-agent token accounting for one upstream. Not thread-safe; no clock reads (every method takes `now`)."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentKV] = {}

    def queued(self, agent: str, now: float, prompt_tokens: int | None = None) -> None:
        """A call of `agent` arrived (not yet admitted). An agent seen for the first time is recorded with its prompt
        estimate as its context, never active and not started (`first_seen` infinite); a known agent is unchanged."""
        if agent not in self._agents:
            size = prompt_tokens if prompt_tokens is not None and prompt_tokens > 0 else 0
            self._agents[agent] = AgentKV(size, 0, 0, -math.inf, math.inf)

    def started(self, agent: str, now: float, prompt_tokens: int | None = None) -> None:
        """A call of `agent` was admitted; `prompt_tokens` is the caller's estimate of its prompt, when known."""
        state = self._agents.get(agent)
        hint = prompt_tokens if prompt_tokens is not None and prompt_tokens > 0 else None
        if state is None:
            self._agents[agent] = AgentKV(hint or 0, 0, 1, now, now)
            return
        context, growth = state.context_tokens, state.growth_tokens
        if hint is not None:
            growth = max(hint - context, 0)
            context = max(context, hint)
        self._agents[agent] = replace(
            state,
            context_tokens=context,
            growth_tokens=growth,
            in_flight=state.in_flight + 1,
            last_active=now,
            first_seen=min(state.first_seen, now),
            long_tool=False,
        )

    def finished(
        self,
        agent: str,
        now: float,
        context_tokens: int | None = None,
        cached_tokens: int | None = None,
        long_tool: bool = False,
    ) -> None:
        """A call of `agent` ended; `context_tokens` = its prompt + output tokens, `cached_tokens` = its prompt tokens
        served from the prefix cache (usage's `cached_tokens`); None or <= 0 when unknown. `long_tool`: its answer
        runs a long tool (a test run) before the agent calls again (`KVAwareOrder.long_tool_keep_s`)."""
        state = self._agents.get(agent)
        if state is None:
            return
        context, growth, shared = state.context_tokens, state.growth_tokens, state.shared_tokens
        if context_tokens is not None and context_tokens > 0:
            growth = max(context_tokens - context, 0) if context else growth
            context = context_tokens
        if state.calls == 0 and cached_tokens is not None and cached_tokens > 0:
            shared = cached_tokens  # its first call: whatever was cached came from other agents
        self._agents[agent] = replace(
            state,
            context_tokens=context,
            growth_tokens=growth,
            in_flight=max(state.in_flight - 1, 0),
            last_active=now,
            shared_tokens=shared,
            calls=state.calls + 1,
            long_tool=long_tool,
        )

    def forget(self, agent: str) -> None:
        """Drop an agent (its task ended)."""
        self._agents.pop(agent, None)

    def snapshot(self) -> Mapping[str, AgentKV]:
        """agent -> its accounting now (a read-only view; copy it to keep it)."""
        return MappingProxyType(self._agents)


def resident_agents(agents: Mapping[str, AgentKV], capacity_tokens: int) -> frozenset[str]:
    """Agents whose context the engine probably still caches: in-flight ones first, then by `last_active`, newest
    first (ties by name), each resident while it and every agent before it fit `capacity_tokens` together
    (`footprint_of`). The first agent counts as resident even if it alone exceeds the capacity."""
    order = sorted(agents.items(), key=lambda kv: (kv[1].in_flight == 0, -kv[1].last_active, kv[0]))
    own = shared = 0
    resident: set[str] = set()
    for agent, state in order:
        share = min(state.shared_tokens, state.context_tokens)
        own += state.footprint - share
        shared = max(shared, share)
        if own + shared > capacity_tokens and resident:
            break
        resident.add(agent)
    return frozenset(resident)


class ProgramRank(StrEnum):
    """How `program_order` ranks the programs after residency (`KVAwareOrder.program_rank`)."""

    AGE = "age"  # oldest program first (by its first call): Continuum's program-level FCFS
    PROGRESS = "progress"  # most calls finished first (ties: oldest): the program nearest its end, when a task's
    # chance of ending grows with its turns (SWE-agent's turn counts); an estimate of shortest-remaining-work-first.
    # Its own aging: a waiting program's rank is fixed while it waits, and a program that starts later has fewer
    # calls, so, as under AGE, nothing that arrives after it passes it. (Fewest calls first, Autellix's least
    # attained service, has no such bound: it starves a long program behind a stream of new ones; not offered.)


@dataclass(frozen=True)
class KVAwareOrder:
    """Working-set admission and program-level order (module docstring). Gate WORKING_SET when `working_set`, else
    WINDOW (the dispatcher's in-flight window limits, this policy only orders). `capacity_tokens`: the model's KV
    capacity in tokens (vLLM: num_gpu_blocks x block_size, `vllm:cache_config_info`)."""

    capacity_tokens: int
    aging_s: float = DEFAULT_AGING_S
    working_set: bool = True
    program_order: bool = True
    keep_s: float = DEFAULT_KEEP_S
    fill: float = DEFAULT_FILL
    new_agent_tokens: int = DEFAULT_NEW_AGENT_TOKENS
    backfill_s: float = 0.0
    small_context_tokens: int = 0
    program_rank: ProgramRank = ProgramRank.AGE
    long_tool_keep_s: float | None = None

    def __post_init__(self) -> None:
        errors = []
        if self.capacity_tokens < 1:
            errors.append(f"capacity_tokens must be >= 1, got {self.capacity_tokens}")
        if not self.aging_s > 0:
            errors.append(f"aging_s must be > 0, got {self.aging_s}")
        if self.keep_s < 0:
            errors.append(f"keep_s must be >= 0, got {self.keep_s}")
        if self.backfill_s < 0:
            errors.append(f"backfill_s must be >= 0, got {self.backfill_s}")
        if self.long_tool_keep_s is not None and self.long_tool_keep_s < 0:
            errors.append(f"long_tool_keep_s must be >= 0 or None, got {self.long_tool_keep_s}")
        if self.small_context_tokens < 0:
            errors.append(f"small_context_tokens must be >= 0, got {self.small_context_tokens}")
        if not 0 < self.fill <= 1:
            errors.append(f"fill must be in (0, 1], got {self.fill}")
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def name(self) -> PolicyName:
        return PolicyName.KV

    @property
    def gate(self) -> Gate:
        return Gate.WORKING_SET if self.working_set else Gate.WINDOW

    def sort_key(self, item: Waiting, now: float, service: Mapping[str, float]) -> tuple[float, ...]:
        """Without the ledger (queue positions in /status): the priority order."""
        return order_key(item, now, service, self.aging_s)

    def pick(
        self,
        queue: WaitQueue,
        now: float,
        service: Mapping[str, float] = _NO_SERVICE,
        in_use: PoolUsage = _NO_POOLS,
    ) -> Pick | None:
        """Without the ledger: `pick_kv` with nothing known about any agent."""
        return self.pick_kv(queue, now, service, MappingProxyType({}))

    def places(self, agents: Mapping[str, AgentKV], now: float) -> frozenset[str]:
        """Agents holding a place in the working set at `now`: a call in flight, or back from one at most `keep_s`
        ago (`long_tool_keep_s` when set and its answer runs a long tool) and still resident."""
        resident = resident_agents(agents, self.capacity_tokens)
        return frozenset(
            a for a, s in agents.items() if s.in_flight > 0 or (now - s.last_active <= self._keep(s) and a in resident)
        )

    def _keep(self, state: AgentKV) -> float:
        """How long `state`'s agent keeps its place after a call: a test run (median 10 s, p90 60 s in the fleet
        simulation's workload) outlasts a 4 s hold anyway, so holding the KV through its first seconds only idles
        it; `long_tool_keep_s` frees it sooner for the agents waiting for room (0: as the call ends, in the same
        pick, where a `keep_s` of 0 still holds the place through the instant its call ends)."""
        if state.long_tool and self.long_tool_keep_s is not None:
            return self.long_tool_keep_s if self.long_tool_keep_s > 0 else -math.inf
        return self.keep_s

    def key(
        self,
        item: Waiting,
        now: float,
        agents: Mapping[str, AgentKV],
        resident: frozenset[str],
        service: Mapping[str, float] = _NO_SERVICE,
    ) -> tuple[float, ...]:
        """The order calls start in, smallest first. With `program_order`: agents whose context is resident first,
        then older programs (by the agent's first call; agents never seen after every known one, in arrival order),
        then tier level, then arrival. Program age is a fixed total order, so it is its own aging: every program
        becomes the oldest waiting one. Without `program_order`: the priority policy's `order_key` (tiers, aging,
        least attained service)."""
        if not self.program_order:
            return order_key(item, now, service, self.aging_s)
        known = agents.get(item.agent)
        age = known.first_seen if known is not None else math.inf  # not started yet: after every started program
        level = effective_level(item.tier, now - item.arrived_at, self.aging_s)
        here = 0 if item.agent in resident else 1
        if self.program_rank is ProgramRank.AGE:
            return (here, age, level, item.seq)
        calls = known.calls if known is not None else 0  # PROGRESS
        return (here, -calls, age, level, item.seq)

    def pick_kv(
        self,
        queue: WaitQueue,
        now: float,
        service: Mapping[str, float],
        agents: Mapping[str, AgentKV],
    ) -> Pick | None:
        """The call to start now (`key` order), or None: the queue is empty, or under `working_set` the first call in
        order whose agent holds no place does not fit yet. Calls of agents with a place always start; no call
        skips ahead of a call that waits for room (so big contexts do not starve behind small ones). Any call fits
        when no agent holds a place."""
        heads = list(queue.heads())
        if not heads:
            return None
        resident = resident_agents(agents, self.capacity_tokens) if self.program_order else frozenset()
        ordered_heads = sorted(heads, key=lambda item: self.key(item, now, agents, resident, service))
        best: Waiting | None = ordered_heads[0]
        if self.working_set:
            best = self._admissible(ordered_heads, agents, now)
        if best is None:
            return None
        level = effective_level(best.tier, now - best.arrived_at, self.aging_s)
        return Pick(best, level, promoted=level < best.tier.rank and queue.has_better_than(best.tier))

    def fits(self, agent: str, places: frozenset[str], agents: Mapping[str, AgentKV]) -> bool:
        """True when `agent`'s next call fits beside the places: `fill x capacity` tokens for all of them."""
        if agent in agents and agents[agent].context_tokens > 0:
            return footprint_of(agents, [*places, agent]) <= self.fill * self.capacity_tokens
        return footprint_of(agents, places) + self.new_agent_tokens <= self.fill * self.capacity_tokens

    def _reserved(
        self, ordered_heads: list[Waiting], places: frozenset[str], agents: Mapping[str, AgentKV], now: float
    ) -> tuple[frozenset[str], float]:
        """Backfill's reservation: the places left, and the reserving program's age (infinite: none). Once a program's
        call has waited `backfill_s` for room (the oldest such program, unless it fits now), every younger agent
        with no call in flight loses its place (its next call waits like any other), so the room it needs frees as
        soon as the younger agents' calls in flight end: its wait is bounded by `backfill_s`, plus those calls,
        plus the places of older programs (bounded the same way), not by how long the younger agents keep calling
        back within `keep_s`."""
        starved = [
            item
            for item in ordered_heads
            if item.agent not in places
            and now - item.arrived_at >= self.backfill_s
            and not self._small(item.agent, agents)
        ]
        if not starved:
            return places, math.inf
        oldest = min(self._age(item.agent, agents) for item in starved)
        head = min((i for i in starved if self._age(i.agent, agents) == oldest), key=lambda i: i.seq)
        if self.fits(head.agent, places, agents):
            return places, math.inf
        kept = frozenset(a for a in places if agents[a].in_flight > 0 or agents[a].first_seen <= oldest)
        return kept, oldest

    def _small(self, agent: str, agents: Mapping[str, AgentKV]) -> bool:
        """True when `agent`'s known context is below `small_context_tokens`: re-prefilling it after an eviction
        costs less than a wait for room (4,096 tokens are ~1.6 s of prefill on a 32B A100), so it never waits."""
        state = agents.get(agent)
        return state is not None and 0 < state.footprint < self.small_context_tokens

    def _age(self, agent: str, agents: Mapping[str, AgentKV]) -> float:
        known = agents.get(agent)
        return known.first_seen if known is not None else math.inf

    def _admissible(self, ordered_heads: list[Waiting], agents: Mapping[str, AgentKV], now: float) -> Waiting | None:
        places = self.places(agents, now)
        reserved_for = math.inf  # under a reservation: no younger program may start beside the places (small may)
        if self.backfill_s > 0:
            places, reserved_for = self._reserved(ordered_heads, places, agents, now)
        for item in ordered_heads:
            if item.agent in places:
                return item
        if not places:  # anything fits an empty working set; under a reservation, the oldest first
            return next(i for i in ordered_heads if self._age(i.agent, agents) <= reserved_for)
        for item in ordered_heads:
            if self._small(item.agent, agents):
                return item
            if self._age(item.agent, agents) > reserved_for:
                continue
            if self.fits(item.agent, places, agents):
                return item
            if now - item.arrived_at >= self.backfill_s:
                return None  # it has waited its share: nothing behind it may take the room it waits for
        return None


DEFAULT_WARM_SHARE = 0.1
"""Prefix warming may compute at most this share of the prompt tokens the real calls computed: a warm-up that
finds its prefix evicted again before the agent returns is pure cost, so it is budgeted, not free."""


class WarmDecision(StrEnum):
    """Whether to re-warm an agent's prefix now, shortly before its long tool run is expected to end, and why not."""

    WARM = "warm"
    UNKNOWN = "unknown agent"
    IN_FLIGHT = "a call of it is in flight"
    RESIDENT = "its prefix is still resident"
    NO_ROOM = "the working set has no room for it"
    OVER_BUDGET = "the warming budget is spent"


def warm_decision(
    policy: KVAwareOrder,
    agent: str,
    agents: Mapping[str, AgentKV],
    now: float,
    warmed_tokens: int,
    computed_tokens: int,
    share: float = DEFAULT_WARM_SHARE,
) -> WarmDecision:
    """Prefix warming under KV pressure (issue 16): WARM only when `agent` is known, has no call in flight, is
    probably evicted (`resident_agents`), fits beside the working set's places now (`KVAwareOrder.fits`, so a
    warm-up never evicts an agent holding a place), and its context keeps the tokens spent warming within `share`
    of the prompt tokens the real calls computed (`warmed_tokens`, `computed_tokens`: the caller's counts).
    A warm-up that starts takes the agent's place in the working set, so its real call finds its prefix."""
    state = agents.get(agent)
    if state is None or state.context_tokens <= 0:
        return WarmDecision.UNKNOWN
    if state.in_flight:
        return WarmDecision.IN_FLIGHT
    if agent in resident_agents(agents, policy.capacity_tokens):
        return WarmDecision.RESIDENT
    if warmed_tokens + state.context_tokens > share * computed_tokens:
        return WarmDecision.OVER_BUDGET
    if not policy.fits(agent, policy.places(agents, now), agents):
        return WarmDecision.NO_ROOM
    return WarmDecision.WARM
