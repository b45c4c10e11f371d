"""The ledger's incremental answers equal the pure functions they replace on the hot path, after every step.

`resident_agents`, `KVAwareOrder.places`, `kv_pressure.active_agents` and `demand_tokens` are the specification;
`KVLedger.resident`, `places` and `demand` keep the same answers as calls are queued, start, end, leave the queue
and agents are forgotten. Few agent names and small token counts, so ties in time, shared prefixes, unknown sizes
and capacities that cut the resident walk short all come up.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.kv_pressure import active_agents, demand_tokens
from sidecar.core.ordering import Waiting, WaitQueue
from sidecar.core.stages import Tier
from sidecar.core.working_set import KVAwareOrder, KVLedger, resident_agents

NAMES = st.sampled_from(["a", "b", "c", "d", "e", "f"])
TOKENS = st.one_of(st.integers(1, 400), st.integers(1, 400), st.none(), st.integers(-5, 0))  # half unknown
STEP = st.one_of(st.just(0.0), st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.floats(0.0, 40.0))
BACK_STEP = st.one_of(st.just(0.0), st.sampled_from([-3.0, -1.0, 1.0, 3.0]), st.floats(-40.0, 40.0))
# "start": a waiting call of the agent starts, or one never queued; calls end more often than they start, so
# agents leave the in-flight group (the walk's second part, in order of last activity, then matters)
KINDS = st.sampled_from(
    ["queued", "queued", "start", "start", "finished", "finished", "finished", "dequeued", "forget"]
)
OP = st.tuples(KINDS, NAMES, TOKENS, TOKENS)
CAPACITIES = (1, 150, 400, 900, 5000)
WINDOWS = (0.0, 2.0, 30.0)


def apply(ledger: KVLedger, waiting: Counter[str], op: tuple[str, str, int | None, int | None], now: float) -> None:
    kind, agent, tokens, cached = op
    if kind == "queued":
        ledger.queued(agent, now, tokens)
        waiting[agent] += 1
    elif kind == "start":
        ledger.started(agent, now, tokens)
        if waiting[agent]:
            waiting[agent] -= 1
    elif kind == "finished":
        # also for an agent with no call in flight, or unknown; every other answer runs a long tool (a test run)
        ledger.finished(agent, now, tokens, cached, long_tool=tokens is not None and tokens % 2 == 0)
    elif kind == "dequeued" and waiting[agent]:  # only a call that waits can leave the queue
        ledger.dequeued(agent)
        waiting[agent] -= 1
    elif kind == "forget":
        ledger.forget(agent)


def check(
    ledger: KVLedger,
    waiting: Counter[str],
    now: float,
    window_s: float,
    new_agent_tokens: int = 8192,
    small_context_tokens: int = 0,
) -> None:
    snapshot = ledger.snapshot()
    for capacity in (400, *CAPACITIES):  # 400 first: the capacity `places` asked last, so its cache answers
        assert ledger.resident(capacity) == resident_agents(snapshot, capacity)
    for keep_s, long_tool_keep_s in ((0.0, None), (4.0, None), (4.0, 0.0), (4.0, 1.0)):
        policy = KVAwareOrder(capacity_tokens=400, keep_s=keep_s, long_tool_keep_s=long_tool_keep_s)
        assert ledger.places(400, policy._keep, now) == policy.places(snapshot, now)
    assert set(ledger.in_flight_agents()) == {a for a, s in snapshot.items() if s.in_flight > 0}
    active = active_agents(snapshot, +waiting, now, window_s)
    expected = (demand_tokens(snapshot, active, new_agent_tokens, small_context_tokens), len(active))
    assert ledger.demand(now, window_s, new_agent_tokens, small_context_tokens) == expected


@settings(max_examples=400)
@given(
    st.lists(st.tuples(OP, STEP), max_size=60),
    st.sampled_from(WINDOWS),
    st.integers(0, 3),
    st.sampled_from([8192, 77]),
    st.sampled_from([0, 150]),  # 150: some known contexts below it (they add no demand), some above
)
def test_incremental_answers_equal_the_reference_after_every_step(
    steps: list[tuple[tuple[str, str, int | None, int | None], float]],
    window_s: float,
    judge_every: int,
    new_agent_tokens: int,
    small: int,
) -> None:
    # `judge_every`: how often the answers are asked for (0: after every step), so expiry catches up lazily over
    # several steps too
    ledger, waiting, now = KVLedger(), Counter[str](), 100.0
    for i, (op, step) in enumerate(steps):
        now += step
        apply(ledger, waiting, op, now)
        if judge_every == 0 or i % (judge_every + 1) == 0:
            check(ledger, waiting, now, window_s, new_agent_tokens, small)
    check(ledger, waiting, now + 1000.0, window_s, new_agent_tokens, small)  # all expired but what flies or waits
    check(ledger, waiting, now + 1000.0, window_s, 8192 + 77 - new_agent_tokens, small)  # another size: rebuilt
    check(ledger, waiting, now + 1000.0, window_s, new_agent_tokens, 150 - small)  # another threshold: rebuilt


@settings(max_examples=400)
@given(st.lists(st.tuples(OP, BACK_STEP), max_size=50), st.sampled_from(WINDOWS))
def test_a_clock_that_goes_back_still_gets_the_reference_answers(
    steps: list[tuple[tuple[str, str, int | None, int | None], float]], window_s: float
) -> None:
    # Not the dispatcher's case (its clock is monotonic, the simulation's virtual and monotone): the ledger then
    # rebuilds what the step back invalidated rather than answer wrong.
    ledger, waiting, now = KVLedger(), Counter[str](), 100.0
    for op, step in steps:
        now += step
        apply(ledger, waiting, op, now)
        check(ledger, waiting, now, window_s)


def test_expiry_and_the_cache_in_a_plain_sequence() -> None:
    # a, then b, active; the window passes for a only: the demand drops to b's, and the resident set, asked twice
    # without a change between, is one answer
    ledger = KVLedger()
    for agent, at in (("a", 0.0), ("b", 20.0)):
        ledger.queued(agent, at)
        ledger.started(agent, at, 1000)
        ledger.finished(agent, at + 1.0, 1100)
    assert ledger.demand(21.0, 30.0) == (2400, 2)  # 1,100 tokens and 100 of growth each
    assert ledger.demand(31.5, 30.0) == (1200, 1)  # a ended at 1.0: 30.5 s ago
    assert ledger.resident(1500) is ledger.resident(1500) == frozenset({"b"})
    ledger.queued("a", 32.0)  # waiting again: active again, before it starts
    assert ledger.demand(32.0, 30.0) == (2400, 2)
    ledger.dequeued("a")
    assert ledger.demand(32.0, 30.0) == (1200, 1)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(OP, STEP), max_size=40),
    st.lists(st.tuples(NAMES, st.sampled_from(list(Tier)), st.floats(0.0, 30.0)), min_size=1, max_size=8),
    st.sampled_from([0, 150]),
    st.booleans(),
    st.sampled_from([200, 700]),
)
def test_pick_kv_in_one_pass_with_the_ledger_picks_as_the_sorted_walk_over_the_snapshot(
    steps: list[tuple[tuple[str, str, int | None, int | None], float]],
    calls: list[tuple[str, Tier, float]],
    small_context_tokens: int,
    program_order: bool,
    capacity: int,
) -> None:
    ledger, waiting, now = KVLedger(), Counter[str](), 100.0
    for op, step in steps:
        now += step
        apply(ledger, waiting, op, now)
    queue = WaitQueue()
    for seq, (agent, tier, waited) in enumerate(calls, start=1):
        queue.push(Waiting(seq, agent, tier, now - waited))
    policy = KVAwareOrder(
        capacity_tokens=capacity, small_context_tokens=small_context_tokens, program_order=program_order
    )
    agents = ledger.snapshot()
    picked = policy.pick_kv(queue, now, {}, agents, ledger)
    resident = resident_agents(agents, policy.capacity_tokens) if program_order else frozenset()
    ordered = sorted(queue.heads(), key=lambda item: policy.key(item, now, agents, resident))
    assert (picked.item if picked else None) == policy._admissible(ordered, agents, now)
    assert picked == policy.pick_kv(queue, now, {}, agents)  # without the ledger: the same pick
