"""Which waiting call starts next: queue ordering policies, by name.

    fcfs      arrival order; the dispatcher forwards at once (gate NONE): the "no priority" baseline.
    pools     the seed's two semaphores (hot pool 4, cold pool 2, warm takes either; `seed/000_bc7af0ed774b52c4.txt`,
              "Priority Scheduling"), as an admission rule: the earliest call whose tier has a free pool slot.
    priority  strict tiers with aging, least attained service per agent within a level, then FIFO (gate WINDOW:
              the upstream's in-flight window from `admission.py` says when a call may start).

Aging (priority): a call's level starts at its tier's rank (hot 0, warm 1, cold 2) and improves by one per `aging_s`
waited, down to OVERDUE (-1) after `wait_bound_s(tier, aging_s) = (rank + 1) * aging_s`. Overdue calls go first,
oldest first, so from then on only calls that arrived before it can start ahead of it: with a single slot of
service time at most d, a call starts within `wait_bound_s + d * (1 + calls queued before it)`.

Least attained service (within a level, levels 0..2): the agent that used the fewest GPU tokens recently goes first,
the program-level idea of Autellix (`reference/calibration.md`). `AttainedService` keeps that per agent, decayed
with a half-life, as an immutable value.

`WaitQueue` keeps calls bucketed by (tier, agent) in arrival order; inside a bucket the first call has both the
best level and the lowest seq, so a pick compares bucket heads only: O(tiers x agents), not O(calls).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from sidecar.core.stages import TIERS, Tier

OVERDUE = -1
"""The level of a call that has waited out its bound: ahead of every tier, FIFO."""

DEFAULT_AGING_S = 60.0
"""Seconds per one-tier promotion, the default of `[scheduling] aging_s`: cold waits at most ~3 x aging_s before it
is next. Why 60 s (measured against 15 s): the comment on `aging_s` in `sidecar/coordinator/settings.py`."""

DEFAULT_HALF_LIFE_S = 60.0
"""Half-life of attained service: a few agent turns (the seed's calls take 3-15 s), so fairness follows recent use."""

DEFAULT_HOT_POOL = 4
DEFAULT_COLD_POOL = 2
"""The seed's semaphore sizes, for the `pools` policy."""


class PolicyName(StrEnum):
    """Ordering policies selectable by name (`[scheduling] policy`)."""

    FCFS = "fcfs"
    POOLS = "pools"
    PRIORITY = "priority"
    KV = "kv"  # working-set admission and program-level order (`working_set.py`)


class Gate(StrEnum):
    """What limits how many calls run upstream at once under a policy."""

    NONE = "none"  # forward at once: no coordinator queue at all
    POOLS = "pools"  # the policy's own pools (`PoolUsage`)
    WINDOW = "window"  # the upstream's in-flight window (static or adaptive, `admission.py`)
    WORKING_SET = "working_set"  # the agents whose KV fits (`working_set.py`); the policy's pick decides


class Pool(StrEnum):
    """A slot pool of the `pools` policy."""

    HOT = "hot"
    COLD = "cold"


@dataclass(frozen=True)
class Waiting:
    """A queued call. `seq` is its arrival order (assign seq and `arrived_at` together, both non-decreasing)."""

    seq: int
    agent: str
    tier: Tier
    arrived_at: float


@dataclass(frozen=True)
class PoolUsage:
    """Calls in flight per pool (the `pools` policy's semaphores)."""

    hot: int = 0
    cold: int = 0


@dataclass(frozen=True)
class Pick:
    """A call chosen to start now.

    `level`: its effective level at `now` (OVERDUE..2). `promoted`: it was chosen while a call of a better base tier
    was waiting, which only aging allows (count these for /status). `pool`: the pool slot it takes (pools only).
    """

    item: Waiting
    level: int
    promoted: bool = False
    pool: Pool | None = None


def effective_level(tier: Tier, waited_s: float, aging_s: float) -> int:
    """`tier.rank` minus one per whole `aging_s` waited, floored at OVERDUE. A negative wait counts as zero."""
    steps = math.floor(max(waited_s, 0.0) / aging_s) if math.isfinite(aging_s) else 0
    return max(tier.rank - steps, OVERDUE)


def wait_bound_s(tier: Tier, aging_s: float) -> float:
    """Seconds after which a call of `tier` is overdue, `(rank + 1) * aging_s` (cold: 3 x aging_s).

    From then on only calls that arrived before it may start ahead of it (the module docstring gives the full bound).
    """
    return (tier.rank + 1) * aging_s


def order_key(item: Waiting, now: float, service: Mapping[str, float], aging_s: float) -> tuple[int, float, int]:
    """The priority policy's sort key; the smallest starts first.

    (level, attained service of its agent, seq) at levels 0..2; (OVERDUE, 0.0, seq) once overdue (oldest first).
    `service` maps agent -> recent GPU tokens at `now` (`AttainedService.snapshot`); a missing agent counts 0.
    """
    level = effective_level(item.tier, now - item.arrived_at, aging_s)
    if level == OVERDUE:
        return OVERDUE, 0.0, item.seq
    return level, service.get(item.agent, 0.0), item.seq


# ---------------------------------------------------------------------------------------------------------------


class WaitQueue:
    """Waiting calls of one upstream, bucketed by (tier, agent) in seq order. No I/O, no clock.

    push O(1) in arrival order (an out-of-order push is inserted in place); remove by seq O(1) (a cancelled call
    leaves at once); `heads()` yields each bucket's first call, which is all a policy needs to pick.
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[Tier, str], dict[int, Waiting]] = {}
        self._where: dict[int, tuple[Tier, str]] = {}
        self._per_tier: dict[Tier, int] = dict.fromkeys(TIERS, 0)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, seq: object) -> bool:
        return seq in self._where

    def __iter__(self) -> Iterator[Waiting]:
        """Every waiting call, bucket by bucket (use a policy's `ordered` for queue positions)."""
        for bucket in list(self._buckets.values()):
            yield from list(bucket.values())

    def push(self, item: Waiting) -> None:
        """Add a call. Raises ValueError if its seq is already waiting."""
        if item.seq in self._where:
            raise ValueError(f"seq {item.seq} is already waiting")
        key = (item.tier, item.agent)
        bucket = self._buckets.setdefault(key, {})
        if bucket and item.seq < next(reversed(bucket)):
            merged = sorted([*bucket.values(), item], key=lambda waiting: waiting.seq)
            bucket.clear()
            bucket.update((waiting.seq, waiting) for waiting in merged)
        else:
            bucket[item.seq] = item
        self._where[item.seq] = key
        self._per_tier[item.tier] += 1

    def remove(self, seq: int) -> Waiting | None:
        """Take a call out (started or cancelled); None if it is not waiting."""
        key = self._where.pop(seq, None)
        if key is None:
            return None
        bucket = self._buckets[key]
        item = bucket.pop(seq)
        if not bucket:
            del self._buckets[key]
        self._per_tier[item.tier] -= 1
        return item

    def get(self, seq: int) -> Waiting | None:
        """The waiting call with this seq, or None."""
        key = self._where.get(seq)
        return None if key is None else self._buckets[key][seq]

    def heads(self) -> Iterator[Waiting]:
        """The first (oldest) call of every (tier, agent) bucket."""
        for bucket in self._buckets.values():
            yield next(iter(bucket.values()))

    def count_by_tier(self) -> Mapping[Tier, int]:
        """How many calls wait per base tier (every tier present, zeros included)."""
        return MappingProxyType(dict(self._per_tier))

    def has_better_than(self, tier: Tier) -> bool:
        """True if a call of a strictly better base tier than `tier` is waiting."""
        return any(self._per_tier[better] for better in TIERS[: tier.rank])


# ---------------------------------------------------------------------------------------------------------------


_NO_SERVICE: Mapping[str, float] = MappingProxyType({})
_NO_POOLS_IN_USE = PoolUsage()


class OrderingPolicy(Protocol):
    """A queue ordering policy: which waiting call starts next, and the full order for /status positions."""

    @property
    def name(self) -> PolicyName: ...

    @property
    def gate(self) -> Gate: ...

    def sort_key(self, item: Waiting, now: float, service: Mapping[str, float]) -> tuple[float, ...]:
        """The order calls would start in if nothing else arrived; smallest first."""
        ...

    def pick(
        self,
        queue: WaitQueue,
        now: float,
        service: Mapping[str, float] = _NO_SERVICE,
        in_use: PoolUsage = _NO_POOLS_IN_USE,
    ) -> Pick | None:
        """The call to start now, or None (the queue is empty or, for pools, no eligible pool slot is free)."""
        ...


@dataclass(frozen=True)
class Fcfs:
    """Arrival order. Gate NONE: the dispatcher forwards every call at once and the upstream orders them."""

    @property
    def name(self) -> PolicyName:
        return PolicyName.FCFS

    @property
    def gate(self) -> Gate:
        return Gate.NONE

    def sort_key(self, item: Waiting, now: float, service: Mapping[str, float]) -> tuple[float, ...]:
        return (item.seq,)

    def pick(
        self,
        queue: WaitQueue,
        now: float,
        service: Mapping[str, float] = _NO_SERVICE,
        in_use: PoolUsage = _NO_POOLS_IN_USE,
    ) -> Pick | None:
        best = min(queue.heads(), key=lambda item: item.seq, default=None)
        return None if best is None else Pick(best, best.tier.rank)


@dataclass(frozen=True)
class Pools:
    """The seed's semaphores: hot calls take a hot slot, cold calls a cold slot, warm calls either (cold first, which
    keeps hot slots for hot work); each pool serves its waiters in arrival order. Gate POOLS: at most hot + cold run.
    """

    hot: int = DEFAULT_HOT_POOL
    cold: int = DEFAULT_COLD_POOL

    def __post_init__(self) -> None:
        if self.hot < 0 or self.cold < 0 or self.hot + self.cold < 1:
            raise ValueError(
                f"pools need non-negative sizes and at least one slot, got hot={self.hot} cold={self.cold}"
            )

    @property
    def name(self) -> PolicyName:
        return PolicyName.POOLS

    @property
    def gate(self) -> Gate:
        return Gate.POOLS

    def sort_key(self, item: Waiting, now: float, service: Mapping[str, float]) -> tuple[float, ...]:
        return (item.seq,)

    def pool_for(self, tier: Tier, in_use: PoolUsage) -> Pool | None:
        """The pool a call of `tier` would take now, or None when its pools are full."""
        hot_free = in_use.hot < self.hot
        cold_free = in_use.cold < self.cold
        if tier is Tier.HOT:
            return Pool.HOT if hot_free else None
        if tier is Tier.COLD:
            return Pool.COLD if cold_free else None
        return Pool.COLD if cold_free else (Pool.HOT if hot_free else None)

    def pick(
        self,
        queue: WaitQueue,
        now: float,
        service: Mapping[str, float] = _NO_SERVICE,
        in_use: PoolUsage = _NO_POOLS_IN_USE,
    ) -> Pick | None:
        eligible = (item for item in queue.heads() if self.pool_for(item.tier, in_use) is not None)
        best = min(eligible, key=lambda item: item.seq, default=None)
        if best is None:
            return None
        return Pick(best, best.tier.rank, pool=self.pool_for(best.tier, in_use))


@dataclass(frozen=True)
class PriorityOrder:
    """Strict tiers with aging, then least attained service per agent, then FIFO (`order_key`). Gate WINDOW."""

    aging_s: float = DEFAULT_AGING_S

    def __post_init__(self) -> None:
        if not self.aging_s > 0:
            raise ValueError(f"aging_s must be > 0 (math.inf disables aging), got {self.aging_s}")

    @property
    def name(self) -> PolicyName:
        return PolicyName.PRIORITY

    @property
    def gate(self) -> Gate:
        return Gate.WINDOW

    def sort_key(self, item: Waiting, now: float, service: Mapping[str, float]) -> tuple[float, ...]:
        return order_key(item, now, service, self.aging_s)

    def pick(
        self,
        queue: WaitQueue,
        now: float,
        service: Mapping[str, float] = _NO_SERVICE,
        in_use: PoolUsage = _NO_POOLS_IN_USE,
    ) -> Pick | None:
        best = min(queue.heads(), key=lambda item: order_key(item, now, service, self.aging_s), default=None)
        if best is None:
            return None
        level = effective_level(best.tier, now - best.arrived_at, self.aging_s)
        return Pick(best, level, promoted=level < best.tier.rank and queue.has_better_than(best.tier))

    def wait_bounds(self) -> Mapping[Tier, float]:
        """Seconds until overdue, per tier (for /status)."""
        return MappingProxyType({tier: wait_bound_s(tier, self.aging_s) for tier in TIERS})


def make_policy(
    name: str, *, aging_s: float = DEFAULT_AGING_S, hot_pool: int = DEFAULT_HOT_POOL, cold_pool: int = DEFAULT_COLD_POOL
) -> OrderingPolicy:
    """The policy registered under `name` (fcfs, pools, priority). Raises ValueError for other names."""
    if name == PolicyName.FCFS:
        return Fcfs()
    if name == PolicyName.POOLS:
        return Pools(hot=hot_pool, cold=cold_pool)
    if name == PolicyName.PRIORITY:
        return PriorityOrder(aging_s=aging_s)
    raise ValueError(f"unknown scheduling policy {name!r} (choose from {', '.join(PolicyName)})")


def ordered(
    policy: OrderingPolicy, queue: WaitQueue, now: float, service: Mapping[str, float] = _NO_SERVICE
) -> list[Waiting]:
    """Every waiting call in the order `policy` would start them if nothing arrived: index = queue position.

    O(n log n); meant for /status, not for the dispatch path. (For pools this is arrival order; pool limits may let
    a later call start earlier.)
    """
    return sorted(queue, key=lambda item: policy.sort_key(item, now, service))


# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttainedService:
    """GPU tokens each agent used recently, decayed exponentially with `half_life_s`. Immutable: `add` returns a
    new value. Entries decayed below `floor_tokens` are dropped when adding, so it stays small: at every add while
    it holds up to PRUNE_EVERY_ADD entries, beyond that once it has doubled since it was last pruned (a fleet of
    2,000 agents made every call's add and pick decay every entry: ~4 ms per call); a prune due before any entry
    can have decayed that far (`prune_after`) is skipped, since it would drop nothing.
    """

    half_life_s: float = DEFAULT_HALF_LIFE_S
    entries: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))
    floor_tokens: float = 1e-3
    pruned_size: int = field(default=0, compare=False, repr=False)  # entries left by the last prune
    # No entry decays below floor_tokens before this time (a lower bound): a prune due earlier would drop
    # nothing, so it is skipped (a fleet under PRUNE_EVERY_ADD agents decayed every entry on each add).
    prune_after: float = field(default=-math.inf, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s}")

    def get(self, agent: str, now: float) -> float:
        """The agent's tokens decayed to `now` (0.0 if unknown). Time never runs backwards: `now` before the last
        update counts as that update's time."""
        entry = self.entries.get(agent)
        if entry is None:
            return 0.0
        tokens, at = entry
        return tokens * math.exp2(-max(now - at, 0.0) / self.half_life_s)

    def add(self, agent: str, tokens: float, now: float) -> AttainedService:
        """A new value with `tokens` (>= 0) added for `agent` at `now`. Raises ValueError for negative tokens."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        size, bound = self.pruned_size, self.prune_after
        if PRUNE_EVERY_ADD < len(self.entries) < 2 * size:
            kept = _copied(self.entries)
        elif now < bound:  # what a prune keeps: every entry (the added agent's is replaced below)
            kept = _copied(self.entries)
            size = len(kept) + (agent not in kept)
        else:
            kept = {
                other: entry
                for other, entry in self.entries.items()
                if other != agent and self.get(other, now) >= self.floor_tokens
            }
            size = len(kept) + 1
            bound = min((self._floor_time(entry) for entry in kept.values()), default=math.inf)
        at = max(now, self.entries[agent][1]) if agent in self.entries else now
        kept[agent] = entry = (self.get(agent, at) + tokens, at)
        # The agent's entry only grew: the bound holds for it unless it is new, or was dropped above.
        bound = min(bound, self._floor_time(entry))
        return AttainedService(self.half_life_s, MappingProxyType(kept), self.floor_tokens, size, bound)

    def _floor_time(self, entry: tuple[float, float]) -> float:
        """A time before which this entry stays at or above floor_tokens; a millionth of a half-life early,
        so float rounding never makes it late (-inf for an entry at or under the floor already)."""
        tokens, at = entry
        if not tokens > self.floor_tokens:
            return -math.inf
        return at + self.half_life_s * (math.log2(tokens / self.floor_tokens) - 1e-6)

    def without(self, agent: str) -> AttainedService:
        """A new value that no longer knows `agent` (this one when it did not)."""
        if agent not in self.entries:
            return self
        kept = {other: entry for other, entry in self.entries.items() if other != agent}
        return AttainedService(self.half_life_s, MappingProxyType(kept), self.floor_tokens)

    def snapshot(self, now: float) -> Mapping[str, float]:
        """agent -> decayed tokens at `now`, for `order_key` and /status (each value computed when read: a pick
        reads the few agents queued, not the whole fleet)."""
        return DecayedView(self, now)


PRUNE_EVERY_ADD = 64


def _copied(entries: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """A dict of `entries`. A MappingProxyType's own `copy()` is its dict's C copy; `dict(proxy)` reads it key
    by key, ~30x slower (2,000 agents: ~0.6 ms per call under load)."""
    if isinstance(entries, MappingProxyType):
        copied = entries.copy()
        if type(copied) is dict:
            return copied
    return dict(entries)


class DecayedView(Mapping[str, float]):
    """An `AttainedService` read at one moment, as a read-only mapping agent -> decayed tokens."""

    __slots__ = ("_now", "_service")

    def __init__(self, service: AttainedService, now: float) -> None:
        self._service = service
        self._now = now

    def __getitem__(self, agent: str) -> float:
        if agent not in self._service.entries:
            raise KeyError(agent)
        return self._service.get(agent, self._now)

    def __iter__(self) -> Iterator[str]:
        return iter(self._service.entries)

    def __len__(self) -> int:
        return len(self._service.entries)
