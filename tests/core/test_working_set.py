"""KV-aware scheduling: the ledger, the LRU residency estimate, working-set admission and program-level order."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from sidecar.core.ordering import Gate, PolicyName, Waiting, WaitQueue
from sidecar.core.stages import Tier
from sidecar.core.working_set import (
    AgentKV,
    KVAwareOrder,
    KVLedger,
    ProgramRank,
    WarmDecision,
    footprint_of,
    resident_agents,
    warm_decision,
)

HOT, WARM, COLD = Tier.HOT, Tier.WARM, Tier.COLD
CAP = 10_000


def kv(context: int, in_flight: int = 0, last: float = 0.0, first: float = 0.0, shared: int = 0) -> AgentKV:
    return AgentKV(context, 0, in_flight, last, first, shared, calls=1)


def queue_of(*items: Waiting) -> WaitQueue:
    queue = WaitQueue()
    for item in items:
        queue.push(item)
    return queue


@pytest.mark.parametrize(
    ("agents", "resident"),
    [
        ({}, set()),
        # the most recently active fit; the oldest does not
        ({"a": kv(4000, last=1), "b": kv(4000, last=3), "c": kv(4000, last=2)}, {"b", "c"}),
        # in flight counts first whatever its last activity
        ({"a": kv(4000, in_flight=1, last=0), "b": kv(4000, last=3), "c": kv(4000, last=2)}, {"a", "b"}),
        # one agent larger than the cache is still the one being computed
        ({"a": kv(50_000, in_flight=1)}, {"a"}),
        # a shared prefix is held once: 3 x 3000 own + 3000 shared = 12000 > CAP, 2 x 3000 + 3000 fits
        (
            {
                "a": kv(6000, last=3, shared=3000),
                "b": kv(6000, last=2, shared=3000),
                "c": kv(6000, last=1, shared=3000),
            },
            {"a", "b"},
        ),
    ],
)
def test_resident_agents_is_an_lru_estimate(agents: dict[str, AgentKV], resident: set[str]) -> None:
    assert resident_agents(agents, CAP) == frozenset(resident)


def test_footprint_counts_the_largest_shared_prefix_once() -> None:
    agents = {"a": kv(7000, shared=3000), "b": kv(5000, shared=2000)}
    assert footprint_of(agents, ["a", "b"]) == 4000 + 3000 + 3000


def test_ledger_tracks_context_growth_and_the_first_calls_shared_prefix() -> None:
    ledger = KVLedger()
    ledger.started("a", 1.0, prompt_tokens=5000)
    assert ledger.snapshot()["a"] == AgentKV(5000, 0, 1, 1.0, 1.0, 0, 0)
    ledger.finished("a", 3.0, context_tokens=5200, cached_tokens=4000)
    state = ledger.snapshot()["a"]
    assert (state.context_tokens, state.growth_tokens, state.in_flight, state.shared_tokens) == (5200, 200, 0, 4000)
    ledger.started("a", 4.0, prompt_tokens=6000)
    ledger.finished("a", 6.0, context_tokens=6300, cached_tokens=5200)  # later hits are its own prefix
    state = ledger.snapshot()["a"]
    assert (state.context_tokens, state.growth_tokens, state.shared_tokens) == (6300, 300, 4000)
    assert (state.first_seen, state.last_active, state.footprint) == (1.0, 6.0, 6600)
    ledger.finished("unknown", 7.0, 100)  # ignored
    ledger.forget("a")
    assert dict(ledger.snapshot()) == {}


def w(seq: int, agent: str, tier: Tier = WARM, at: float = 0.0) -> Waiting:
    return Waiting(seq, agent, tier, at)


POLICY = KVAwareOrder(capacity_tokens=CAP, keep_s=4.0, fill=1.0)


def test_a_returning_resident_agent_goes_before_one_that_would_be_re_prefilled() -> None:
    # b holds a place (back 1 s ago, resident); a is older but was evicted and has no place; c runs.
    agents = {"a": kv(3000, last=0.0, first=0.0), "b": kv(3000, last=9.0, first=5.0), "c": kv(3000, 1, 9.5, 2.0)}
    queue = queue_of(w(1, "a", HOT, 9.0), w(2, "b", COLD, 10.0))
    pick = POLICY.pick_kv(queue, 10.0, {}, agents)
    assert pick is not None and pick.item.agent == "b"


def test_a_new_agent_waits_for_room_and_nothing_skips_ahead_of_it() -> None:
    # a and b hold 5500 of 10000; the new agent needs 8192 (size unknown); the small known d fits.
    agents = {"a": kv(1500, 1, 9.0, 0.0), "b": kv(4000, 0, 9.0, 1.0), "d": kv(1000, 0, 0.0, 3.0)}
    queue = queue_of(w(1, "new", WARM, 1.0), w(2, "d", WARM, 2.0))
    assert POLICY.pick_kv(queue, 10.0, {}, agents) is not None  # d is older than any unseen agent
    only_new = queue_of(w(1, "new", WARM, 1.0))
    assert POLICY.pick_kv(only_new, 10.0, {}, agents) is None
    # once b's tool call outlasts keep_s it yields its place and the new agent fits beside a
    assert POLICY.pick_kv(only_new, 13.5, {}, agents) is not None


def test_a_waiting_older_program_blocks_younger_ones_until_it_fits() -> None:
    agents = {"a": kv(6000, 1, 9.0, 0.0), "old": kv(5000, 0, 0.0, 1.0), "young": kv(1000, 0, 0.0, 2.0)}
    queue = queue_of(w(1, "young", HOT, 1.0), w(2, "old", COLD, 2.0))
    assert POLICY.pick_kv(queue, 10.0, {}, agents) is None
    agents["a"] = kv(6000, 0, 9.0, 0.0)  # a's call ended 11 s ago by t=20: no place any more
    pick = POLICY.pick_kv(queue, 20.0, {}, agents)
    assert pick is not None and pick.item.agent == "old"


def test_backfill_lets_a_younger_call_that_fits_pass_until_the_older_one_has_waited_its_share() -> None:
    policy = KVAwareOrder(capacity_tokens=CAP, backfill_s=30.0)
    agents = {"a": kv(6000, 1, 9.0, 0.0), "old": kv(5000, 0, 0.0, 1.0), "young": kv(1000, 0, 0.0, 2.0)}
    queue = queue_of(w(1, "young", HOT, 1.0), w(2, "old", COLD, 2.0))
    pick = policy.pick_kv(queue, 10.0, {}, agents)
    assert pick is not None and pick.item.agent == "young"  # old has waited 8 s of its 30
    assert policy.pick_kv(queue, 32.0, {}, agents) is None  # 30 s: nothing passes it any more
    assert POLICY.pick_kv(queue, 10.0, {}, agents) is None  # without backfill nothing ever passes it


def test_backfill_reserves_room_once_the_older_one_has_waited_younger_agents_out_of_flight_lose_their_places() -> None:
    policy = KVAwareOrder(capacity_tokens=CAP, keep_s=4.0, fill=1.0, backfill_s=30.0)
    # young holds a place (back 0.5 s ago, resident); old (5,000) does not fit beside its 6,000
    agents = {"young": kv(6000, 0, 9.5, 2.0), "old": kv(5000, 0, 0.0, 1.0)}
    queue = queue_of(w(1, "old", COLD, 2.0), w(2, "young", HOT, 10.0))
    pick = policy.pick_kv(queue, 10.0, {}, agents)
    assert pick is not None and pick.item.agent == "young"  # old has waited 8 s of its 30: places hold
    agents["young"] = kv(6000, 1, 10.0, 2.0)  # young's call runs; old reaches its 30 s meanwhile
    assert policy.pick_kv(queue_of(w(1, "old", COLD, 2.0)), 33.0, {}, agents) is None  # nothing stops a call
    agents["young"] = kv(6000, 0, 33.5, 2.0)  # back from it and calling again at once
    pick = policy.pick_kv(queue, 34.0, {}, agents)
    assert pick is not None and pick.item.agent == "old"  # young's place went to the reservation
    pick = POLICY.pick_kv(queue, 34.0, {}, agents)
    assert pick is not None and pick.item.agent == "young"  # without backfill the place holds


def test_a_small_context_never_waits_for_room() -> None:
    policy = KVAwareOrder(capacity_tokens=CAP, small_context_tokens=2000)
    agents = {"a": kv(9000, 1, 9.0, 0.0), "small": kv(1500, 0, 0.0, 1.0), "big": kv(2500, 0, 0.0, 2.0)}
    pick = policy.pick_kv(queue_of(w(1, "small", WARM, 1.0)), 10.0, {}, agents)
    assert pick is not None and pick.item.agent == "small"  # 1500 < 2000: re-prefilling it is cheaper than waiting
    assert policy.pick_kv(queue_of(w(1, "big", WARM, 1.0)), 10.0, {}, agents) is None
    assert POLICY.pick_kv(queue_of(w(1, "small", WARM, 1.0)), 10.0, {}, agents) is None


@pytest.mark.parametrize(
    ("agent", "warmed", "expected"),
    [
        ("gone", 0, WarmDecision.WARM),  # evicted, fits beside the places (a, busy), within budget
        ("gone", 6_000, WarmDecision.OVER_BUDGET),  # 6,000 + 4,500 > 10% of 100,000 computed
        ("busy", 0, WarmDecision.IN_FLIGHT),
        ("fresh", 0, WarmDecision.RESIDENT),
        ("huge", 0, WarmDecision.NO_ROOM),  # evicted but 9,000 does not fit beside the places' 5,000
        ("never", 0, WarmDecision.UNKNOWN),
    ],
)
def test_prefix_warming_only_for_an_evicted_agent_that_fits_within_the_budget(
    agent: str, warmed: int, expected: WarmDecision
) -> None:
    agents = {
        "a": kv(3000, 1, 99.0, 0.0),
        "busy": kv(2000, 1, 98.0, 1.0),
        "fresh": kv(1000, 0, 95.0, 2.0),  # back 5 s ago: no place, but still resident
        "gone": kv(4500, 0, 10.0, 3.0),  # 3,000 + 2,000 + 1,000 + 4,500 > 10,000: evicted
        "huge": kv(9000, 0, 5.0, 4.0),
    }
    assert warm_decision(POLICY, agent, agents, 100.0, warmed, 100_000) is expected


def test_any_call_fits_when_no_agent_holds_a_place() -> None:
    pick = POLICY.pick_kv(queue_of(w(1, "huge", WARM)), 0.0, {}, {"huge": kv(50_000, 0, -100.0)})
    assert pick is not None and pick.item.agent == "huge"


def test_without_the_working_set_the_policy_only_orders_and_the_window_gates() -> None:
    policy = KVAwareOrder(capacity_tokens=CAP, working_set=False)
    assert policy.gate is Gate.WINDOW and policy.name is PolicyName.KV
    agents = {"a": kv(9000, 1, 9.0, 0.0)}
    pick = policy.pick_kv(queue_of(w(1, "new", WARM)), 10.0, {}, agents)
    assert pick is not None and pick.item.agent == "new"  # it does not fit, but no gate here


def test_without_program_order_calls_follow_the_priority_order() -> None:
    policy = KVAwareOrder(capacity_tokens=CAP, program_order=False, fill=1.0)
    agents = {"a": kv(1000, 0, 9.0, 0.0)}
    queue = queue_of(w(1, "a", COLD, 9.5), w(2, "b", HOT, 9.6))
    pick = policy.pick_kv(queue, 10.0, MappingProxyType({}), agents)
    assert pick is not None and pick.item.agent == "a"  # a holds a place: it starts first
    pick = policy.pick_kv(queue_of(w(2, "b", HOT, 9.6), w(3, "c", COLD, 9.0)), 10.0, {}, agents)
    assert pick is not None and pick.item.agent == "b"  # tiers, as the priority policy


def test_pick_without_a_ledger_still_picks() -> None:
    assert POLICY.pick(queue_of(w(1, "x")), 0.0) is not None
    assert POLICY.pick(WaitQueue(), 0.0) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity_tokens": 0},
        {"capacity_tokens": 1, "fill": 0},
        {"capacity_tokens": 1, "keep_s": -1},
        {"capacity_tokens": 1, "backfill_s": -1},
        {"capacity_tokens": 1, "small_context_tokens": -1},
        {"capacity_tokens": 1, "long_tool_keep_s": -1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        KVAwareOrder(**kwargs)  # type: ignore[arg-type]


def test_program_rank_orders_the_programs_waiting_for_room() -> None:
    # Neither is resident (r holds the KV); "old" started first with 3 calls done, "far" later with 9 done.
    agents = {
        "r": kv(9000, 1, 10.0, 0.0),
        "old": AgentKV(2000, 0, 0, 0.0, 1.0, calls=3),
        "far": AgentKV(2000, 0, 0, 0.0, 2.0, calls=9),
    }
    queue = queue_of(w(1, "old", HOT, 1.0), w(2, "far", HOT, 2.0))
    resident = resident_agents(agents, CAP)
    assert "old" not in resident and "far" not in resident

    def first(rank: ProgramRank) -> str:
        policy = KVAwareOrder(capacity_tokens=CAP, program_rank=rank)
        heads = sorted(queue.heads(), key=lambda i: policy.key(i, 10.0, agents, resident))
        return heads[0].agent

    assert first(ProgramRank.AGE) == "old"
    assert first(ProgramRank.PROGRESS) == "far"  # nearer its end
    # residency still comes first under every rank: a resident agent with no calls done goes before both
    agents["fresh"] = AgentKV(500, 0, 0, 9.9, 5.0, calls=0)
    resident = resident_agents(agents, CAP)
    queue.push(w(3, "fresh", COLD, 3.0))
    for rank in ProgramRank:
        assert first(rank) == "fresh"


def drive_fleet(policy: KVAwareOrder, programs: dict[str, tuple[float, int]]) -> dict[str, list[float]]:
    """A fleet on a virtual clock, driven through `pick_kv` and a real `KVLedger`: `programs` maps agent -> (when it
    starts, its calls); a call takes 1 s, a tool call 0.5 s, every third 6 s (past keep_s); a context starts at 1,000
    tokens and grows 250 per call. Returns each agent's waits, in order; fails if the fleet does not finish."""
    import heapq

    ledger, queue, seq = KVLedger(), WaitQueue(), 0
    done = dict.fromkeys(programs, 0)
    context = dict.fromkeys(programs, 1000)
    waits: dict[str, list[float]] = {a: [] for a in programs}
    asked: dict[str, float] = {}
    events = [(start, i, "ask", agent) for i, (agent, (start, _)) in enumerate(programs.items())]
    heapq.heapify(events)
    order = len(events)
    for _ in range(100_000):
        if not events:
            break
        now, _, kind, agent = heapq.heappop(events)
        if kind == "ask":
            seq += 1
            queue.push(Waiting(seq, agent, HOT, now))
            ledger.queued(agent, now, context[agent])
            asked[agent] = now
        else:
            context[agent] += 250
            ledger.finished(agent, now, context[agent])
            done[agent] += 1
            order += 1
            if done[agent] < programs[agent][1]:
                tool = 6.0 if done[agent] % 3 == 0 else 0.5
                heapq.heappush(events, (now + tool, order, "ask", agent))
            else:
                ledger.forget(agent)
        while (pick := policy.pick_kv(queue, now, {}, ledger.snapshot())) is not None:
            queue.remove(pick.item.seq)
            waits[pick.item.agent].append(now - asked.pop(pick.item.agent))
            ledger.started(pick.item.agent, now, context[pick.item.agent])
            order += 1
            heapq.heappush(events, (now + 1.0, order, "end", pick.item.agent))
        assert events or not queue, "calls wait with nothing in flight or due"
    assert done == {a: calls for a, (_, calls) in programs.items()}, "the fleet did not finish"
    return waits


@pytest.mark.parametrize("rank", list(ProgramRank))
def test_no_program_waits_beyond_its_bound_under_any_program_rank(rank: ProgramRank) -> None:
    # One long program (24 calls: its context grows to 7,000 of the 9,000 tokens the working set plans with) and a
    # stream of short ones (4 calls each, one arriving every second for 150 s) that keeps the KV busy throughout.
    # Under either rank the long one is first among the programs waiting for room (the oldest, the most calls
    # done), so nothing that arrives later passes it; the short programs already there when it began to wait may
    # (resident agents go first), each for at most its 4 calls of 1 s in flight plus keep_s held: 4 x (1 + keep_s).
    # A least-attained-service rank (fewest calls first) would starve it: measured 160 s, until the stream stops.
    policy = KVAwareOrder(capacity_tokens=CAP, keep_s=2.0, fill=0.9, program_rank=rank)
    programs = {"long": (0.0, 24)} | {f"s{i:03d}": (0.5 + 1.0 * i, 4) for i in range(150)}
    waits = drive_fleet(policy, programs)
    assert max(waits["long"]) > 1.0  # the KV was contended: the long program did wait for room
    assert max(waits["long"]) <= 4 * (1.0 + policy.keep_s)


def test_an_agent_whose_answer_runs_a_long_tool_keeps_its_place_only_for_long_tool_keep_s() -> None:
    ledger = KVLedger()
    ledger.started("t", 0.0, 2000)
    ledger.finished("t", 1.0, 2500, 0, long_tool=True)  # its answer runs the tests
    ledger.started("s", 0.0, 2000)
    ledger.finished("s", 1.0, 2500, 0)  # a short tool call
    agents = ledger.snapshot()
    assert agents["t"].long_tool and not agents["s"].long_tool
    assert POLICY.places(agents, 2.0) == {"t", "s"}  # unset: keep_s for both
    at_once = KVAwareOrder(capacity_tokens=CAP, keep_s=4.0, fill=1.0, long_tool_keep_s=0.0)
    assert at_once.places(agents, 2.0) == {"s"}  # the test run frees its room at once
    assert KVAwareOrder(capacity_tokens=CAP, keep_s=4.0, long_tool_keep_s=8.0).places(agents, 6.0) == {"t"}
    ledger.started("t", 12.0, 2600)  # back from the test run: the next answer's tool is not known yet
    assert not ledger.snapshot()["t"].long_tool
