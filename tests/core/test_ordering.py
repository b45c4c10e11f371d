"""Queue ordering: aging levels, the three policies, the wait queue, attained service; tables and properties."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.ordering import (
    OVERDUE,
    PRUNE_EVERY_ADD,
    AttainedService,
    Fcfs,
    Gate,
    Pick,
    PolicyName,
    Pool,
    Pools,
    PoolUsage,
    PriorityOrder,
    Waiting,
    WaitQueue,
    effective_level,
    make_policy,
    order_key,
    ordered,
    wait_bound_s,
)
from sidecar.core.stages import TIERS, Tier

HOT, WARM, COLD = Tier.HOT, Tier.WARM, Tier.COLD


def queue_of(*items: Waiting) -> WaitQueue:
    queue = WaitQueue()
    for item in items:
        queue.push(item)
    return queue


def w(seq: int, tier: Tier, agent: str = "a", at: float | None = None) -> Waiting:
    return Waiting(seq=seq, agent=agent, tier=tier, arrived_at=float(seq) if at is None else at)


# ---------------------------------------------------------------------------------------------------------------
# Levels and keys


@pytest.mark.parametrize(
    ("tier", "waited", "level"),
    [
        (HOT, 0.0, 0),
        (HOT, 9.99, 0),
        (HOT, 10.0, OVERDUE),
        (HOT, 1e9, OVERDUE),
        (WARM, 0.0, 1),
        (WARM, 10.0, 0),
        (WARM, 20.0, OVERDUE),
        (COLD, 0.0, 2),
        (COLD, 10.0, 1),
        (COLD, 19.9, 1),
        (COLD, 20.0, 0),
        (COLD, 30.0, OVERDUE),
        (COLD, -5.0, 2),  # a clock that went backwards: no wait
    ],
)
def test_effective_level(tier: Tier, waited: float, level: int) -> None:
    assert effective_level(tier, waited, aging_s=10.0) == level


def test_infinite_aging_never_promotes() -> None:
    assert effective_level(COLD, 1e12, math.inf) == 2


@pytest.mark.parametrize(("tier", "bound"), [(HOT, 10.0), (WARM, 20.0), (COLD, 30.0)])
def test_wait_bound(tier: Tier, bound: float) -> None:
    assert wait_bound_s(tier, 10.0) == bound
    assert effective_level(tier, bound, 10.0) == OVERDUE
    assert effective_level(tier, bound - 1e-9, 10.0) != OVERDUE


@pytest.mark.parametrize(
    ("first", "second", "service", "now"),
    [
        (w(2, HOT), w(1, COLD), {}, 2.0),  # a better tier first
        (w(1, HOT), w(2, HOT), {}, 2.0),  # FIFO within a tier and service
        (w(2, HOT, "light"), w(1, HOT, "heavy"), {"heavy": 500.0, "light": 10.0}, 2.0),  # least attained service
        (w(2, HOT, "new"), w(1, HOT, "heavy"), {"heavy": 500.0}, 2.0),  # an unknown agent has used nothing
        (w(1, COLD, at=0.0), w(2, WARM, at=12.0), {}, 12.0),  # cold aged to level 1, earlier seq
        (w(1, COLD, "heavy", at=0.0), w(2, HOT, "light", at=29.0), {"heavy": 1e6}, 30.0),  # overdue beats hot
        (w(1, HOT, "heavy", at=0.0), w(2, COLD, "light", at=0.0), {"heavy": 1e6}, 31.0),  # both overdue: FIFO
    ],
)
def test_order_key(first: Waiting, second: Waiting, service: dict[str, float], now: float) -> None:
    assert order_key(first, now, service, aging_s=10.0) < order_key(second, now, service, aging_s=10.0)


def test_order_key_of_overdue_ignores_service() -> None:
    assert order_key(w(7, COLD, "x", at=0.0), 100.0, {"x": 1e9}, 10.0) == (OVERDUE, 0.0, 7)


# ---------------------------------------------------------------------------------------------------------------
# The wait queue


def test_push_remove_get() -> None:
    queue = queue_of(w(1, HOT), w(2, COLD, "b"), w(3, HOT))
    assert len(queue) == 3 and 2 in queue and 9 not in queue
    assert queue.get(2) == w(2, COLD, "b")
    assert queue.remove(2) == w(2, COLD, "b")
    assert queue.remove(2) is None and queue.get(2) is None
    assert sorted(item.seq for item in queue) == [1, 3]
    assert dict(queue.count_by_tier()) == {HOT: 2, WARM: 0, COLD: 0}


def test_duplicate_seq_is_refused() -> None:
    queue = queue_of(w(1, HOT))
    with pytest.raises(ValueError, match="already waiting"):
        queue.push(w(1, COLD))


def test_heads_are_the_oldest_call_of_each_tier_and_agent() -> None:
    queue = queue_of(w(1, HOT, "a"), w(2, HOT, "a"), w(3, HOT, "b"), w(4, COLD, "a"), w(5, COLD, "a"))
    assert sorted(item.seq for item in queue.heads()) == [1, 3, 4]
    queue.remove(1)
    assert sorted(item.seq for item in queue.heads()) == [2, 3, 4]


def test_an_out_of_order_push_is_inserted_in_place() -> None:
    queue = queue_of(w(5, HOT), w(9, HOT))
    queue.push(w(2, HOT))  # e.g. a call re-queued after a retry
    assert next(queue.heads()).seq == 2
    assert [item.seq for item in queue] == [2, 5, 9]


@pytest.mark.parametrize(
    ("tiers", "tier", "expected"),
    [
        ([COLD], COLD, False),
        ([HOT, COLD], COLD, True),
        ([WARM], COLD, True),
        ([COLD], WARM, False),
        ([HOT], HOT, False),
    ],
)
def test_has_better_than(tiers: list[Tier], tier: Tier, expected: bool) -> None:
    queue = queue_of(*(w(i, t) for i, t in enumerate(tiers)))
    assert queue.has_better_than(tier) is expected


def test_empty_queue_picks_nothing() -> None:
    for policy in (Fcfs(), Pools(), PriorityOrder()):
        assert policy.pick(WaitQueue(), 0.0) is None


# ---------------------------------------------------------------------------------------------------------------
# Policies by name


@pytest.mark.parametrize(
    ("name", "kind", "gate"),
    [("fcfs", Fcfs, Gate.NONE), ("pools", Pools, Gate.POOLS), ("priority", PriorityOrder, Gate.WINDOW)],
)
def test_make_policy(name: str, kind: type, gate: Gate) -> None:
    policy = make_policy(name)
    assert isinstance(policy, kind)
    assert policy.name == PolicyName(name) and policy.gate is gate


def test_make_policy_passes_settings_and_refuses_unknown_names() -> None:
    assert make_policy("priority", aging_s=3.0) == PriorityOrder(aging_s=3.0)
    assert make_policy("pools", hot_pool=1, cold_pool=5) == Pools(hot=1, cold=5)
    with pytest.raises(ValueError, match="unknown scheduling policy 'lifo'"):
        make_policy("lifo")


@pytest.mark.parametrize("aging_s", [0.0, -1.0, math.nan])
def test_priority_needs_positive_aging(aging_s: float) -> None:
    with pytest.raises(ValueError, match="aging_s"):
        PriorityOrder(aging_s=aging_s)


@pytest.mark.parametrize(("hot", "cold"), [(-1, 2), (0, 0), (2, -1)])
def test_pools_need_a_slot(hot: int, cold: int) -> None:
    with pytest.raises(ValueError, match="pools"):
        Pools(hot=hot, cold=cold)


def test_fcfs_is_arrival_order() -> None:
    queue = queue_of(w(3, HOT, "x"), w(1, COLD, "y"), w(2, WARM, "z"))
    assert Fcfs().pick(queue, 3.0) == Pick(w(1, COLD, "y"), level=2)
    assert [item.seq for item in ordered(Fcfs(), queue, 3.0)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("items", "in_use", "seq", "pool"),
    [
        ([w(1, COLD), w(2, HOT)], PoolUsage(), 1, Pool.COLD),  # FIFO while both pools have room
        ([w(1, COLD), w(2, HOT)], PoolUsage(hot=0, cold=2), 2, Pool.HOT),  # cold pool full: hot goes
        ([w(1, HOT), w(2, COLD)], PoolUsage(hot=4, cold=0), 2, Pool.COLD),  # hot pool full: cold goes
        ([w(1, WARM)], PoolUsage(), 1, Pool.COLD),  # warm takes a cold slot first
        ([w(1, WARM)], PoolUsage(hot=0, cold=2), 1, Pool.HOT),  # ... or a hot one
        ([w(1, WARM), w(2, HOT)], PoolUsage(hot=4, cold=0), 1, Pool.COLD),
        ([w(1, HOT), w(2, COLD), w(3, WARM)], PoolUsage(hot=4, cold=2), None, None),  # all full
        ([w(1, HOT)], PoolUsage(hot=4, cold=0), None, None),  # hot never takes a cold slot
        ([w(1, COLD)], PoolUsage(hot=0, cold=2), None, None),  # cold never takes a hot slot
    ],
)
def test_pools(items: list[Waiting], in_use: PoolUsage, seq: int | None, pool: Pool | None) -> None:
    picked = Pools(hot=4, cold=2).pick(queue_of(*items), 10.0, in_use=in_use)
    assert (picked.item.seq if picked else None, picked.pool if picked else None) == (seq, pool)


@pytest.mark.parametrize(
    ("items", "now", "service", "seq", "promoted"),
    [
        ([w(1, COLD), w(2, WARM), w(3, HOT)], 3.0, {}, 3, False),  # hot overtakes queued cold
        ([w(1, COLD, at=0.0), w(2, WARM, at=0.0)], 5.0, {}, 2, False),
        ([w(1, COLD, at=0.0), w(2, WARM, at=9.0)], 10.0, {}, 1, True),  # cold aged to warm, earlier than the warm call
        ([w(1, COLD, at=0.0), w(2, COLD, at=9.0)], 10.0, {}, 1, False),  # aged, but overtook no better tier
        ([w(1, COLD, at=0.0), w(2, HOT, at=19.0)], 20.0, {}, 1, True),  # cold aged to hot, earlier than the hot call
        ([w(1, COLD, "a", at=0.0), w(2, HOT, "b", at=19.0)], 20.0, {"a": 9e9}, 2, False),  # ... but used much more
        ([w(1, COLD, "a", at=0.0), w(2, HOT, "b", at=29.0)], 30.0, {"a": 9e9}, 1, True),  # overdue: service no matter
        ([w(1, HOT, "heavy"), w(2, HOT, "light")], 2.0, {"heavy": 100.0, "light": 1.0}, 2, False),
        ([w(1, HOT, "heavy"), w(2, HOT, "light")], 2.0, {"heavy": 1.0, "light": 1.0}, 1, False),
    ],
)
def test_priority_pick(items: list[Waiting], now: float, service: dict[str, float], seq: int, promoted: bool) -> None:
    picked = PriorityOrder(aging_s=10.0).pick(queue_of(*items), now, service)
    assert picked is not None
    assert (picked.item.seq, picked.promoted) == (seq, promoted)
    assert picked.level == effective_level(picked.item.tier, now - picked.item.arrived_at, 10.0)


def test_priority_wait_bounds_for_status() -> None:
    assert dict(PriorityOrder(aging_s=5.0).wait_bounds()) == {HOT: 5.0, WARM: 10.0, COLD: 15.0}


def test_ordered_gives_queue_positions() -> None:
    queue = queue_of(w(1, COLD, "a", at=0.0), w(2, HOT, "b", at=1.0), w(3, HOT, "a", at=2.0), w(4, WARM, "c", at=3.0))
    positions = ordered(PriorityOrder(aging_s=100.0), queue, 4.0, {"a": 10.0})
    assert [item.seq for item in positions] == [2, 3, 4, 1]


def test_without_aging_a_steady_hot_stream_starves_cold() -> None:
    """The contrast the aging bound rules out: with aging off, cold waits as long as any hot call waits."""
    starts = simulate(
        [Arrival(0.0, COLD, "c", 1.0)] + [Arrival(0.5 * i, HOT, f"h{i % 3}", 1.0) for i in range(100)],
        PriorityOrder(aging_s=math.inf),
    )
    assert starts[0] > 50.0
    starts = simulate(
        [Arrival(0.0, COLD, "c", 1.0)] + [Arrival(0.5 * i, HOT, f"h{i % 3}", 1.0) for i in range(100)],
        PriorityOrder(aging_s=5.0),
    )
    assert starts[0] <= wait_bound_s(COLD, 5.0) + 1.0


def test_overdue_calls_escape_least_attained_service() -> None:
    """A heavy agent's call, aged to the hot level, still loses to fresh agents' hot calls on attained service;
    becoming overdue is what bounds its wait."""
    stream = [Arrival(0.5 * i, HOT, f"fresh{i}", 1.0) for i in range(100)]
    starts = simulate([Arrival(0.0, COLD, "heavy", 1.0), *stream], PriorityOrder(aging_s=5.0), used={"heavy": 1e6})
    assert wait_bound_s(COLD, 5.0) - 1.0 <= starts[0] <= wait_bound_s(COLD, 5.0) + 1.0


# ---------------------------------------------------------------------------------------------------------------
# Properties


@dataclass(frozen=True)
class Arrival:
    at: float
    tier: Tier
    agent: str
    service_s: float


def simulate(
    arrivals: list[Arrival], policy: PriorityOrder, half_life_s: float = 30.0, used: dict[str, float] | None = None
) -> dict[int, float]:
    """One upstream slot, back to back: returns each call's start time by seq (seq = index in arrival order).
    `used`: tokens each agent had used at time 0."""
    order = sorted(range(len(arrivals)), key=lambda index: arrivals[index].at)
    pending = [(seq, arrivals[index]) for seq, index in enumerate(order)]
    queue = WaitQueue()
    service = AttainedService(half_life_s=half_life_s)
    for agent, tokens in (used or {}).items():
        service = service.add(agent, tokens, 0.0)
    starts: dict[int, float] = {}
    now = 0.0
    next_arrival = 0
    while len(starts) < len(pending):
        while next_arrival < len(pending) and pending[next_arrival][1].at <= now:
            seq, arrival = pending[next_arrival]
            queue.push(Waiting(seq, arrival.agent, arrival.tier, arrival.at))
            next_arrival += 1
        picked = policy.pick(queue, now, service.snapshot(now))
        if picked is None:
            now = pending[next_arrival][1].at
            continue
        queue.remove(picked.item.seq)
        starts[picked.item.seq] = now
        duration = pending[picked.item.seq][1].service_s
        now += duration
        service = service.add(picked.item.agent, duration * 100.0, now)
    return {seq: starts[seq] for seq, _ in pending}


_arrivals = st.lists(
    st.builds(
        Arrival,
        at=st.floats(0.0, 60.0),
        tier=st.sampled_from(TIERS),
        agent=st.sampled_from(["a", "b", "c", "d"]),
        service_s=st.floats(0.1, 3.0),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_arrivals, st.floats(0.5, 20.0))
def test_aging_bound_holds_for_any_arrival_pattern(arrivals: list[Arrival], aging_s: float) -> None:
    """A call starts within its wait bound, plus one call already in service, plus one call per earlier arrival
    still waiting when it arrived (only those may go ahead of an overdue call)."""
    longest = max(arrival.service_s for arrival in arrivals)
    starts = simulate(arrivals, PriorityOrder(aging_s=aging_s))
    by_seq = sorted(arrivals, key=lambda arrival: arrival.at)
    for seq, arrival in enumerate(by_seq):
        older_waiting = sum(1 for other in range(seq) if starts[other] >= arrival.at)
        bound = wait_bound_s(arrival.tier, aging_s) + longest * (1 + older_waiting)
        assert starts[seq] - arrival.at <= bound + 1e-6


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(TIERS), st.sampled_from("abcde"), st.floats(0.0, 5.0)),
        st.tuples(st.just("remove"), st.integers(0, 80)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(
    _ops,
    st.floats(0.0, 200.0),
    st.dictionaries(st.sampled_from("abcde"), st.floats(0.0, 1e4)),
    st.floats(0.5, 30.0),
)
def test_pick_equals_the_brute_force_minimum(
    ops: list[tuple[object, ...]], later: float, service: dict[str, float], aging_s: float
) -> None:
    """Comparing bucket heads picks exactly what sorting every waiting call by order_key would."""
    queue = WaitQueue()
    clock = 0.0
    seq = 0
    for op in ops:
        if op[0] == "push":
            _, tier, agent, gap = op
            assert isinstance(tier, Tier) and isinstance(agent, str) and isinstance(gap, float)
            clock += gap
            queue.push(Waiting(seq, agent, tier, clock))
            seq += 1
        else:
            assert isinstance(op[1], int)
            queue.remove(op[1])
    now = clock + later
    policy = PriorityOrder(aging_s=aging_s)
    picked = policy.pick(queue, now, service)
    expected = min(queue, key=lambda item: order_key(item, now, service, aging_s), default=None)
    assert (picked.item if picked else None) == expected
    assert ordered(policy, queue, now, service)[:1] == ([expected] if expected else [])
    assert sum(queue.count_by_tier().values()) == len(queue)
    fcfs = Fcfs().pick(queue, now)
    assert (fcfs.item if fcfs else None) == min(queue, key=lambda item: item.seq, default=None)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(TIERS), st.booleans()), max_size=80),
    st.integers(0, 4),
    st.integers(0, 3),
)
def test_pools_respect_their_sizes_and_arrival_order(steps: list[tuple[Tier, bool]], hot: int, cold: int) -> None:
    """Each step a call arrives and, if asked, the oldest running call finishes; then calls start while they may."""
    if hot + cold == 0:
        return
    policy = Pools(hot=hot, cold=cold)
    queue = WaitQueue()
    running: list[Pool] = []
    for seq, (tier, finish) in enumerate(steps):
        queue.push(Waiting(seq, "a", tier, float(seq)))
        if finish and running:
            running.pop(0)
        while True:
            in_use = PoolUsage(hot=running.count(Pool.HOT), cold=running.count(Pool.COLD))
            picked = policy.pick(queue, float(seq), in_use=in_use)
            eligible = [item for item in queue if policy.pool_for(item.tier, in_use) is not None]
            if picked is None:
                assert eligible == []
                break
            assert picked.item == min(eligible, key=lambda item: item.seq)
            assert picked.pool is not None
            queue.remove(picked.item.seq)
            running.append(picked.pool)
            assert running.count(Pool.HOT) <= hot and running.count(Pool.COLD) <= cold


# ---------------------------------------------------------------------------------------------------------------
# Attained service


@pytest.mark.parametrize(
    ("adds", "now", "agent", "expected"),
    [
        ([], 0.0, "a", 0.0),
        ([("a", 100.0, 0.0)], 0.0, "a", 100.0),
        ([("a", 100.0, 0.0)], 60.0, "a", 50.0),  # one half-life
        ([("a", 100.0, 0.0)], 120.0, "a", 25.0),
        ([("a", 100.0, 0.0), ("a", 50.0, 60.0)], 60.0, "a", 100.0),
        ([("a", 100.0, 0.0), ("b", 50.0, 0.0)], 0.0, "b", 50.0),
        ([("a", 100.0, 10.0)], 5.0, "a", 100.0),  # asked before the last update: no decay, no growth
        ([("a", 100.0, 10.0), ("a", 100.0, 5.0)], 10.0, "a", 200.0),  # an update "in the past" lands at the last one
    ],
)
def test_attained_service(adds: list[tuple[str, float, float]], now: float, agent: str, expected: float) -> None:
    service = AttainedService(half_life_s=60.0)
    for who, tokens, at in adds:
        service = service.add(who, tokens, at)
    assert service.get(agent, now) == pytest.approx(expected)


def test_attained_service_is_a_value() -> None:
    before = AttainedService()
    after = before.add("a", 10.0, 0.0)
    assert before.get("a", 0.0) == 0.0 and after.get("a", 0.0) == 10.0
    assert dict(after.snapshot(0.0)) == {"a": 10.0}


def test_attained_service_forgets_agents_that_decayed_away() -> None:
    service = AttainedService(half_life_s=1.0).add("old", 1.0, 0.0).add("new", 1.0, 100.0)
    assert set(service.entries) == {"new"}


@pytest.mark.parametrize("half_life_s", [0.0, -1.0])
def test_attained_service_needs_a_positive_half_life(half_life_s: float) -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        AttainedService(half_life_s=half_life_s)


def test_attained_service_refuses_negative_tokens() -> None:
    with pytest.raises(ValueError, match="tokens"):
        AttainedService().add("a", -1.0, 0.0)


@given(st.lists(st.tuples(st.sampled_from("ab"), st.floats(0.0, 1e4), st.floats(0.0, 10.0)), max_size=30))
def test_attained_service_stays_between_zero_and_the_total(adds: list[tuple[str, float, float]]) -> None:
    service = AttainedService(half_life_s=5.0)
    now = 0.0
    for agent, tokens, gap in adds:
        now += gap
        service = service.add(agent, tokens, now)
    total = sum(tokens for _, tokens, _ in adds)
    for agent in "ab":
        assert 0.0 <= service.get(agent, now) <= total * (1 + 1e-9)
        assert service.get(agent, now + 5.0) == pytest.approx(service.get(agent, now) / 2)


def test_a_large_table_forgets_decayed_agents_in_batches() -> None:
    """Past PRUNE_EVERY_ADD entries the table is pruned once it has doubled: a fleet's adds stay cheap, and
    agents that decayed away are still forgotten, while every value read stays exact."""
    service = AttainedService(half_life_s=1.0)
    for i in range(200):
        service = service.add(f"old{i}", 1.0, 0.0)
    assert service.get("old7", 0.0) == 1.0 and dict(service.snapshot(0.0))["old199"] == 1.0
    for i in range(400):
        service = service.add(f"new{i}", 1.0, 100.0)
    assert not any(agent.startswith("old") for agent in service.entries)
    assert len(service.entries) == 400 and service.snapshot(100.0).get("new0") == 1.0


def _entries_pruning_every_time(adds: list[tuple[str, float, float]], half_life_s: float) -> dict[str, object]:
    """The table `AttainedService.add` keeps, computed the way it was before prunes were skipped when due to drop
    nothing: decay every entry at each add up to PRUNE_EVERY_ADD entries, then once the table has doubled."""
    entries: dict[str, tuple[float, float]] = {}
    size = 0

    def value(agent: str, now: float) -> float:
        if agent not in entries:
            return 0.0
        tokens, at = entries[agent]
        return tokens * math.exp2(-max(now - at, 0.0) / half_life_s)

    for agent, tokens, now in adds:
        if PRUNE_EVERY_ADD < len(entries) < 2 * size:
            kept = dict(entries)
        else:
            kept = {other: e for other, e in entries.items() if other != agent and value(other, now) >= 1e-3}
            size = len(kept) + 1
        at = max(now, entries[agent][1]) if agent in entries else now
        kept[agent] = (value(agent, at) + tokens, at)
        entries = kept
    return dict(entries)


@given(
    st.lists(
        st.tuples(st.integers(0, 90), st.sampled_from([0.0, 1e-3, 0.01, 1.0, 5e3]), st.floats(0.0, 8.0)),
        max_size=160,
    ),
    st.sampled_from([0.5, 1.0, 60.0]),
)
def test_skipped_prunes_keep_the_same_table(steps: list[tuple[int, float, float]], half_life_s: float) -> None:
    """A prune is skipped only while no entry can have decayed below the floor: the table (every entry, every
    value) is the one pruning at every due add keeps, across the small and the large table regimes."""
    adds, now = [], 0.0
    for agent, tokens, gap in steps:
        now += gap
        adds.append((f"agent-{agent}", tokens, now))
    service = AttainedService(half_life_s=half_life_s)
    for agent, tokens, at in adds:
        service = service.add(agent, tokens, at)
    assert dict(service.entries) == _entries_pruning_every_time(adds, half_life_s)
