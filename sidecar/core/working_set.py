"""KV-aware scheduling: which agents' contexts the GPU should hold, from the coordinator's own token accounting.

A 32B model on one A100 holds ~30-40K tokens of KV (`reference/calibration.md`), a coding agent's context grows to
tens of thousands: the GPU holds a few agents at once. vLLM alone interleaves every agent's calls, so each agent's
prefix is evicted between its turns and re-prefilled on the next (DESIGN.md, "KV is the scarce resource"). This
module decides, outside the engine, when each agent's next call may reach it:

    KVLedger           per agent: its context (prompt + output tokens of its last call), how much it grew, calls in
                       flight, when it was last active. Mutable, owned by one dispatcher; callers pass `now`. It
                       also keeps, as calls are queued, start, end and leave, the answers the policy needs on every
                       call (in-flight agents, resident set, places, the pressure's demand), so a call's cost does
                       not grow with the agents it knows; the pure functions below stay their specification.
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

import bisect
import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    """Per-agent token accounting for one upstream. Not thread-safe; no clock reads (every method takes `now`).

    Beside the accounting it keeps, incrementally as calls are queued, start, end or leave the queue and agents
    are forgotten, what the `kv` policy asks about on every call, so that no answer scans every agent it knows:
    the agents with a call in flight (`in_flight_agents`), the calls waiting per agent, the agents in order of
    last activity, the resident set (`resident`, the same answer as `resident_agents` over `snapshot`, in
    O(in flight + resident), cached until the ledger changes) and the KV the active agents ask for (`demand`,
    the same answer as `kv_pressure.demand_tokens` over `kv_pressure.active_agents`, kept as a running sum).
    Both rely on `now` never going backwards between calls (a monotonic or virtual clock); a `now` earlier than
    one seen before is handled by rebuilding what it invalidates, at O(agents) once.
    """

    def __init__(self) -> None:
        self._agents: dict[str, AgentKV] = {}
        self._waiting: dict[str, int] = {}  # calls queued and neither started nor dequeued, per agent
        self._flying: dict[str, None] = {}  # agents with a call in flight, in the order their first one started
        self._lru: dict[str, None] = {}  # agents with a finite `last_active`, oldest first (re-inserted when touched)
        self._lru_sorted = True  # False once a touch went back in time: sort `_lru` before walking it
        self._never: list[str] = []  # agents never active (`last_active` -inf), sorted by name
        self._last_touch = -math.inf
        self._version = 0  # bumped whenever an agent's accounting changes
        self._resident_key: tuple[int, int] | None = None
        self._resident: frozenset[str] = frozenset()
        self._demand = _ActiveDemand()

    # --- the accounting -------------------------------------------------------------------------------------

    def queued(self, agent: str, now: float, prompt_tokens: int | None = None) -> None:
        """A call of `agent` arrived (not yet admitted): it counts as waiting until it starts (`started`) or leaves
        the queue without starting (`dequeued`). An agent seen for the first time is recorded with its prompt
        estimate as its context, never active and not started (`first_seen` infinite); a known agent is unchanged."""
        self._waiting[agent] = self._waiting.get(agent, 0) + 1
        if agent not in self._agents:
            size = prompt_tokens if prompt_tokens is not None and prompt_tokens > 0 else 0
            self._agents[agent] = AgentKV(size, 0, 0, -math.inf, math.inf)
            bisect.insort(self._never, agent)
            self._version += 1
        self._demand.update(self, agent)

    def dequeued(self, agent: str) -> None:
        """A waiting call of `agent` left the queue without starting (its client went away)."""
        self._unwait(agent)
        self._demand.update(self, agent)

    def started(self, agent: str, now: float, prompt_tokens: int | None = None) -> None:
        """A call of `agent` was admitted (it no longer waits, if it was queued); `prompt_tokens` is the caller's
        estimate of its prompt, when known."""
        self._unwait(agent)
        state = self._agents.get(agent)
        hint = prompt_tokens if prompt_tokens is not None and prompt_tokens > 0 else None
        if state is None:
            self._agents[agent] = AgentKV(hint or 0, 0, 1, now, now)
        else:
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
        self._flying[agent] = None
        self._touch(agent, now)

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
        in_flight = max(state.in_flight - 1, 0)
        self._agents[agent] = replace(
            state,
            context_tokens=context,
            growth_tokens=growth,
            in_flight=in_flight,
            last_active=now,
            shared_tokens=shared,
            calls=state.calls + 1,
            long_tool=long_tool,
        )
        if in_flight == 0:
            self._flying.pop(agent, None)
        self._touch(agent, now)

    def forget(self, agent: str) -> None:
        """Drop an agent (its task ended). Its calls still waiting, if any, keep counting as waiting."""
        state = self._agents.pop(agent, None)
        if state is None:
            return
        self._flying.pop(agent, None)
        if agent in self._lru:
            del self._lru[agent]
        else:
            self._drop_never(agent)
        self._version += 1
        self._demand.update(self, agent)

    def snapshot(self) -> Mapping[str, AgentKV]:
        """agent -> its accounting now (a read-only view; copy it to keep it)."""
        return MappingProxyType(self._agents)

    # --- the incremental answers ----------------------------------------------------------------------------

    def in_flight_agents(self) -> Iterable[str]:
        """The agents with a call in flight (a read-only view)."""
        return self._flying.keys()

    def waiting_calls(self, agent: str) -> int:
        """How many calls of `agent` wait (queued, neither started nor dequeued)."""
        return self._waiting.get(agent, 0)

    def resident(self, capacity_tokens: int) -> frozenset[str]:
        """`resident_agents(snapshot(), capacity_tokens)`, walking the agents in flight, then the others from the
        most recently active, and stopping at the first that does not fit: O(in flight + resident), cached until
        the ledger changes or the capacity differs."""
        key = (self._version, capacity_tokens)
        if self._resident_key == key:
            return self._resident
        agents = self._agents
        own = shared = 0
        resident: list[str] = []
        for agent in self._by_residency():  # `resident_agents`' loop, with min, max and `footprint` written out
            state = agents[agent]
            context, share = state.context_tokens, state.shared_tokens
            if share > context:
                share = context
            own += context + state.growth_tokens - share
            if share > shared:
                shared = share
            if own + shared > capacity_tokens and resident:
                break
            resident.append(agent)
        self._resident_key, self._resident = key, frozenset(resident)
        return self._resident

    def places(self, capacity_tokens: int, keep: Callable[[AgentKV], float], now: float) -> frozenset[str]:
        """`KVAwareOrder.places` over `snapshot()` for a policy of this capacity whose places are kept `keep(state)`
        seconds after a call (the policy's `_keep`): the agents in flight, and the resident ones back from a call at
        most that long before `now`. O(in flight + resident)."""
        agents = self._agents
        kept = (a for a in self.resident(capacity_tokens) if now - agents[a].last_active <= keep(agents[a]))
        return frozenset(self._flying).union(kept)

    def demand(
        self,
        now: float,
        window_s: float,
        new_agent_tokens: int = DEFAULT_NEW_AGENT_TOKENS,
        small_context_tokens: int = 0,
    ) -> tuple[int, int]:
        """(KV tokens, agents) of the agents active at `now`: `kv_pressure.demand_tokens` (with `new_agent_tokens`
        and `small_context_tokens`) over `kv_pressure.active_agents(snapshot(), waiting, now, window_s)`, where
        `waiting` are the agents of the calls waiting here. A running sum, updated as agents change and expired
        lazily from the oldest activity: O(1) amortized per call while `now` does not go backwards and the other
        arguments stay the same."""
        return self._demand.judge(self, now, window_s, new_agent_tokens, small_context_tokens)

    # --- internals ------------------------------------------------------------------------------------------

    def _unwait(self, agent: str) -> None:
        count = self._waiting.get(agent, 0)
        if count > 1:
            self._waiting[agent] = count - 1
        else:
            self._waiting.pop(agent, None)

    def _touch(self, agent: str, now: float) -> None:
        """`agent`'s accounting changed and it was active at `now`: it moves to the newest end of the order."""
        backwards = now < self._last_touch
        if backwards:
            self._lru_sorted = False
        self._last_touch = max(self._last_touch, now)
        if agent in self._lru:
            del self._lru[agent]
        else:  # its first activity
            self._drop_never(agent)
        self._lru[agent] = None
        self._version += 1
        self._demand.touched(self, agent, backwards)

    def _drop_never(self, agent: str) -> None:
        index = bisect.bisect_left(self._never, agent)
        if index < len(self._never) and self._never[index] == agent:
            del self._never[index]

    def _by_residency(self) -> Iterator[str]:
        """The agents in `resident_agents`' order: in flight first, then by `last_active`, newest first, ties by
        name (never active ones last), lazily."""
        agents, flying = self._agents, self._flying
        if flying:
            yield from sorted(flying, key=lambda a: (-agents[a].last_active, a))
        if not self._lru_sorted:
            self._lru = dict.fromkeys(sorted(self._lru, key=lambda a: agents[a].last_active))
            self._lru_sorted = True
        group: list[str] = []  # a run of agents out of flight with one `last_active` (contiguous in `_lru`)
        at = math.nan
        for agent in reversed(self._lru):
            if agent in flying:
                continue
            last = agents[agent].last_active
            if last == at:
                group.append(agent)
                continue
            if len(group) == 1:
                yield group[0]
            elif group:
                yield from sorted(group)
            group, at = [agent], last
        yield from sorted(group)
        yield from self._never  # never active, so never in flight


class _ActiveDemand:
    """`KVLedger.demand`'s running sums: the agents counted active, each one's (own tokens, shared prefix), the sum
    of the own tokens and the shared prefixes by value (the largest counts once). Built at the first judgement, and
    rebuilt when `window_s`, `new_agent_tokens` or `small_context_tokens` differ from the last or `now` went
    backwards."""

    def __init__(self) -> None:
        self.window_s: float | None = None  # None: not built
        self.new_agent_tokens = DEFAULT_NEW_AGENT_TOKENS
        self.small_context_tokens = 0
        self.recent: dict[str, None] = {}  # agents active within the window at the last judgement, oldest first
        self.counted: dict[str, tuple[int, int]] = {}
        self.own = 0
        self.shares: dict[int, int] = {}  # shared prefix -> agents counted with it (> 0 only)
        self.share_heap: list[int] = []  # negated shares, lazily cleaned
        self.judged = -math.inf
        self.stale = False  # a touch went back in time: `recent` is out of order

    def judge(
        self, ledger: KVLedger, now: float, window_s: float, new_agent_tokens: int, small_context_tokens: int
    ) -> tuple[int, int]:
        settings = (window_s, new_agent_tokens, small_context_tokens)
        built = (self.window_s, self.new_agent_tokens, self.small_context_tokens)
        if settings != built or self.stale or now < self.judged:
            self._build(ledger, now, *settings)
        agents = ledger._agents
        recent = self.recent
        while recent:
            oldest = next(iter(recent))
            if now - agents[oldest].last_active <= window_s:
                break
            del recent[oldest]
            self.update(ledger, oldest)
        self.judged = now
        return self.own + self._largest_share(), len(self.counted)

    def touched(self, ledger: KVLedger, agent: str, backwards: bool) -> None:
        """`agent` was active just now (`backwards`: earlier than an activity before it)."""
        if self.window_s is None:
            return
        self.stale = self.stale or backwards
        self.recent.pop(agent, None)
        self.recent[agent] = None
        self.update(ledger, agent)

    def update(self, ledger: KVLedger, agent: str) -> None:
        """Count `agent` as it is now: active (a call in flight or waiting, or within the window at the last
        judgement) with its footprint's parts, or not at all."""
        if self.window_s is None:
            return
        if agent not in ledger._agents:
            self.recent.pop(agent, None)
        old = self.counted.pop(agent, None)
        if old is not None:
            self.own -= old[0]
            self._drop_share(old[1])
        if not (agent in ledger._flying or agent in ledger._waiting or agent in self.recent):
            return
        state = ledger._agents.get(agent)
        if state is None or state.footprint <= 0:
            part = (self.new_agent_tokens, 0)
        elif state.footprint < self.small_context_tokens:
            part = (0, 0)  # active, but not what the gates relieve (`kv_pressure.demand_tokens`)
        else:
            share = min(state.shared_tokens, state.context_tokens)
            part = (state.footprint - share, share)
        self.counted[agent] = part
        self.own += part[0]
        if part[1] > 0:
            count = self.shares.get(part[1], 0)
            self.shares[part[1]] = count + 1
            if count == 0:
                heapq.heappush(self.share_heap, -part[1])

    def _drop_share(self, share: int) -> None:
        if share <= 0:
            return
        count = self.shares[share] - 1
        if count:
            self.shares[share] = count
        else:
            del self.shares[share]
            if len(self.share_heap) > 2 * len(self.shares) + 16:  # the heap's stale entries: keep it small
                self.share_heap = [-s for s in self.shares]
                heapq.heapify(self.share_heap)

    def _largest_share(self) -> int:
        heap = self.share_heap
        while heap and -heap[0] not in self.shares:
            heapq.heappop(heap)
        return -heap[0] if heap else 0

    def _build(
        self, ledger: KVLedger, now: float, window_s: float, new_agent_tokens: int, small_context_tokens: int
    ) -> None:
        agents = ledger._agents
        self.window_s, self.new_agent_tokens, self.stale = window_s, new_agent_tokens, False
        self.small_context_tokens = small_context_tokens
        within = [a for a, s in agents.items() if now - s.last_active <= window_s]
        self.recent = dict.fromkeys(sorted(within, key=lambda a: agents[a].last_active))
        self.counted, self.own, self.shares, self.share_heap = {}, 0, {}, []
        for agent in {**ledger._waiting, **ledger._flying, **self.recent}:
            self.update(ledger, agent)


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

    def places(self, agents: Mapping[str, AgentKV], now: float, ledger: KVLedger | None = None) -> frozenset[str]:
        """Agents holding a place in the working set at `now`: a call in flight, or back from one at most `keep_s`
        ago (`long_tool_keep_s` when set and its answer runs a long tool) and still resident. `ledger`: the ledger
        `agents` is the snapshot of, whose incremental answer is the same (`KVLedger.places`) without scanning every
        agent."""
        if ledger is not None:
            return ledger.places(self.capacity_tokens, self._keep, now)
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
        ledger: KVLedger | None = None,
    ) -> Pick | None:
        """The call to start now (`key` order), or None: the queue is empty, or under `working_set` the first call in
        order whose agent holds no place does not fit yet. Calls of agents with a place always start; no call
        skips ahead of a call that waits for room (so big contexts do not starve behind small ones). Any call fits
        when no agent holds a place. `ledger`: the ledger `agents` is the snapshot of (its incremental resident
        set and places, the same answers, without scanning every agent). Without `backfill_s` one pass over the
        heads finds the call (no sort): O(heads + in flight + resident)."""
        heads = list(queue.heads())
        if not heads:
            return None
        if not self.program_order:
            resident: frozenset[str] = frozenset()
        elif ledger is not None:
            resident = ledger.resident(self.capacity_tokens)
        else:
            resident = resident_agents(agents, self.capacity_tokens)
        keys = {item.seq: self.key(item, now, agents, resident, service) for item in heads}
        best: Waiting | None
        if not self.working_set:
            best = min(heads, key=lambda item: keys[item.seq])
        elif self.backfill_s == 0:
            best = self._first_admissible(heads, keys, agents, now, ledger)
        else:
            best = self._admissible(sorted(heads, key=lambda item: keys[item.seq]), agents, now, ledger)
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

    def _first_admissible(
        self,
        heads: list[Waiting],
        keys: Mapping[int, tuple[float, ...]],
        agents: Mapping[str, AgentKV],
        now: float,
        ledger: KVLedger | None,
    ) -> Waiting | None:
        """`_admissible` over the heads in `keys` order when `backfill_s` is 0, in one pass: the first head holding a
        place, else the first head if the working set is empty, small or it fits, else None (it has waited its
        share of 0 s, so nothing behind it may start). Sorts only for a head that arrived after `now`."""
        places = self.places(agents, now, ledger)
        placed = [item for item in heads if item.agent in places]
        if placed:
            return min(placed, key=lambda item: keys[item.seq])
        first = min(heads, key=lambda item: keys[item.seq])
        if not places or self._small(first.agent, agents) or self.fits(first.agent, places, agents):
            return first
        if now - first.arrived_at >= self.backfill_s:
            return None
        return self._admissible(sorted(heads, key=lambda item: keys[item.seq]), agents, now, ledger)

    def _admissible(
        self, ordered_heads: list[Waiting], agents: Mapping[str, AgentKV], now: float, ledger: KVLedger | None = None
    ) -> Waiting | None:
        places = self.places(agents, now, ledger)
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
