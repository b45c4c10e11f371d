"""The dispatcher under the `kv` policy, driven without an event loop (`submit`), as the fleet simulation drives it."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random

import pytest

from sidecar.config import Config
from sidecar.coordinator.app import make_dispatcher
from sidecar.coordinator.dispatcher import Dispatcher, Slot
from sidecar.coordinator.settings import SchedulingSettings
from sidecar.core.ordering import Gate, PriorityOrder
from sidecar.core.stages import Tier
from sidecar.core.working_set import KVAwareOrder
from sidecar.testing import FakeClock


def test_submit_grants_through_the_working_set_and_the_ledger_follows_usage() -> None:
    clock = FakeClock()
    dispatcher = Dispatcher("m", KVAwareOrder(capacity_tokens=10_000, keep_s=4.0, fill=1.0), clock=clock.now)
    granted: list[Slot] = []
    dispatcher.submit("a", Tier.HOT, granted.append, prompt_tokens=6000)
    dispatcher.submit("b", Tier.HOT, granted.append, prompt_tokens=6000)
    assert [s.agent for s in granted] == ["a"]  # b does not fit beside a: it waits for room
    assert dispatcher.status()["gate"] == "working_set" and dispatcher.status()["queued"] == 1

    clock.advance(2.0)
    granted[0].release(100.0, context_tokens=6200, cached_tokens=0)
    assert [s.agent for s in granted] == ["a"]  # a is in a short tool call and keeps its place
    clock.advance(5.0)  # t = 7
    dispatcher.observe_metrics(None)  # the metrics watcher's tick pumps: a's place has expired
    assert [s.agent for s in granted] == ["a", "b"]
    ledger = dispatcher.kv_ledger
    assert ledger is not None and ledger.snapshot()["a"].context_tokens == 6200
    view = dispatcher.status()["working_set"]
    assert view["capacity_tokens"] == 10_000 and view["planned_tokens"] == 6000
    assert view["agents"]["b"] == {
        "context_tokens": 6000,
        "shared_tokens": 0,
        "in_flight": 1,
        "resident": True,
        "has_place": True,
        "long_tool": False,
    }
    assert view["agents"]["a"]["has_place"] is False


def test_a_release_that_reports_a_long_tool_frees_the_place_at_once_under_long_tool_keep_s() -> None:
    clock = FakeClock()
    policy = KVAwareOrder(capacity_tokens=10_000, keep_s=4.0, fill=1.0, long_tool_keep_s=0.0)
    dispatcher = Dispatcher("m", policy, clock=clock.now)
    granted: list[Slot] = []
    dispatcher.submit("a", Tier.HOT, granted.append, prompt_tokens=6000)
    dispatcher.submit("b", Tier.HOT, granted.append, prompt_tokens=6000)
    assert [s.agent for s in granted] == ["a"]
    clock.advance(2.0)
    granted[0].release(100.0, context_tokens=6200, cached_tokens=0, long_tool=True)  # a's answer runs the tests
    assert [s.agent for s in granted] == ["a", "b"]  # no 4 s hold: b starts in the same instant
    ledger = dispatcher.kv_ledger
    assert ledger is not None and ledger.snapshot()["a"].long_tool


def test_submit_under_another_policy_keeps_no_ledger() -> None:
    clock = FakeClock()
    dispatcher = Dispatcher("m", PriorityOrder(), static_window=1, clock=clock.now)
    granted: list[Slot] = []
    dispatcher.submit("a", Tier.COLD, granted.append)
    dispatcher.submit("b", Tier.COLD, granted.append)
    assert dispatcher.kv_ledger is None and len(granted) == 1 and dispatcher.status()["working_set"] is None
    granted[0].release(10.0, 100, 0)
    assert len(granted) == 2


# --- the engagement rule: the `kv` policy picks exactly as `priority` while the working set fits -------


Grant = tuple[float, str, str, float]


def drive(
    scheduling: dict[str, object], seed: int = 7, agents: int = 6, calls: int = 240
) -> tuple[list[Grant], Dispatcher]:
    """A small fleet through the production dispatcher (`make_dispatcher` from `[scheduling]`) on a fake clock:
    each agent asks, waits for its grant, holds the slot for a while, then runs a tool and asks again, with tiers,
    call lengths and context growth drawn from `seed`; a metrics tick every second pumps as the watcher would.
    Returns every grant as (time, agent, tier, waited) in grant order, and the dispatcher."""
    rng = random.Random(seed)
    clock = FakeClock()
    dispatcher = make_dispatcher("large", Config(scheduling=SchedulingSettings.model_validate(scheduling)))
    dispatcher.clock = clock.now
    grants: list[Grant] = []
    events: list[tuple[float, int, str, object]] = []
    order = itertools.count()
    context = {f"agent-{i}": 1500 + 300 * i for i in range(agents)}
    issued = 0

    def ask(agent: str) -> None:
        nonlocal issued
        issued += 1
        tier = rng.choice([Tier.HOT, Tier.WARM, Tier.COLD])
        dispatcher.submit(agent, tier, lambda slot: granted(slot), prompt_tokens=context[agent])

    def granted(slot: Slot) -> None:
        grants.append((round(clock.now(), 6), slot.agent, str(slot.tier), round(slot.waited_s, 6)))
        heapq.heappush(events, (clock.now() + rng.uniform(1.0, 8.0), next(order), "release", slot))

    for i, agent in enumerate(context):
        heapq.heappush(events, (0.1 * i, next(order), "ask", agent))
    heapq.heappush(events, (1.0, next(order), "tick", None))
    while events and len(grants) < calls:
        t, _, kind, what = heapq.heappop(events)
        clock.t = t
        if kind == "ask":
            assert isinstance(what, str)
            ask(what)
        elif kind == "release":
            assert isinstance(what, Slot)
            context[what.agent] += rng.randint(20, 100)
            what.release(float(context[what.agent]), context_tokens=context[what.agent], cached_tokens=1000)
            if issued < calls:
                heapq.heappush(events, (t + rng.uniform(0.1, 20.0), next(order), "ask", what.agent))
        else:
            dispatcher.observe_metrics(None)
            heapq.heappush(events, (t + 1.0, next(order), "tick", None))
    return grants, dispatcher


FITS = {"window": 2, "kv_capacity_tokens": 35_840}  # six agents of 1.5-5K tokens: the working set fits


def test_the_default_kv_policy_picks_exactly_as_priority_while_the_working_set_fits() -> None:
    priority, _ = drive({**FITS, "policy": "priority"})
    kv, dispatcher = drive({**FITS, "policy": "kv"})
    assert len(priority) == len(kv) == 240
    for i, (a, b) in enumerate(zip(priority, kv, strict=True)):
        assert a == b, f"pick {i}: priority {a}, kv {b}"
    assert dispatcher.kv_engaged is False and dispatcher.kv_pressure.changes == 0
    assert 0 < dispatcher.kv_pressure.ratio < dispatcher.kv_pressure_rule.engage_ratio
    # The comparison says something: calls waited behind the window, and the order was not arrival order.
    assert sum(1 for g in kv if g[3] > 0) > 50
    assert [g[1] for g in kv] != [g[1] for g in drive({**FITS, "policy": "fcfs"})[0]]


def test_under_kv_pressure_the_default_kv_policy_engages_and_picks_its_own_way() -> None:
    pressed = {**FITS, "kv_capacity_tokens": 4_000, "kv_correction": False, "kv_small_context_tokens": 0}
    priority, _ = drive({**pressed, "policy": "priority"})
    kv, dispatcher = drive({**pressed, "policy": "kv"})
    assert dispatcher.kv_pressure.changes >= 1 and dispatcher.status()["working_set"]["engagement_changes"] >= 1
    assert kv != priority
    always, _ = drive({**pressed, "policy": "kv", "kv_engage_ratio": 0.0, "kv_release_ratio": 0.0})
    assert always != priority


def test_the_gate_follows_the_engagement() -> None:
    clock = FakeClock()
    settings = SchedulingSettings(policy="kv", kv_capacity_tokens=10_000, kv_small_context_tokens=0, window=1)
    dispatcher = make_dispatcher("large", Config(scheduling=settings))
    dispatcher.clock = clock.now
    granted: list[Slot] = []
    dispatcher.submit("a", Tier.HOT, granted.append, prompt_tokens=6000)
    dispatcher.submit("b", Tier.HOT, granted.append, prompt_tokens=6000)
    # 12,000 tokens of 10,000: 1.2x, below the engage ratio: the window holds b, as under priority
    assert [s.agent for s in granted] == ["a"] and dispatcher.gate is Gate.WINDOW and not dispatcher.kv_engaged
    assert dispatcher.status()["gate"] == "window" and dispatcher.status()["window"] == 1
    dispatcher.submit("c", Tier.HOT, granted.append, prompt_tokens=30_000)  # 42,000: 4.2x, engaged
    assert dispatcher.kv_engaged and dispatcher.gate is Gate.WORKING_SET
    assert dispatcher.status()["gate"] == "working_set" and dispatcher.status()["window"] is None
    assert [s.agent for s in granted] == ["a"]  # b and c do not fit beside a


# --- the ledger's waiting calls: a call that leaves the queue without starting stops counting -----------


def kv_dispatcher(clock: FakeClock) -> Dispatcher:
    """Gates always engaged; 10,000 tokens of KV, so a 6,000-token agent beside another waits for room."""
    dispatcher = make_dispatcher(
        "large",
        Config(
            scheduling=SchedulingSettings(
                policy="kv", kv_capacity_tokens=10_000, kv_engage_ratio=0, kv_release_ratio=0, kv_small_context_tokens=0
            )
        ),
    )
    dispatcher.clock = clock.now
    return dispatcher


async def test_a_waiting_call_cancelled_by_its_client_stops_counting_as_demand() -> None:
    clock = FakeClock()
    dispatcher = kv_dispatcher(clock)
    holder = await dispatcher.acquire("a", Tier.HOT, prompt_tokens=6000)
    waiting = asyncio.create_task(dispatcher.acquire("b", Tier.HOT, prompt_tokens=6000))
    await asyncio.sleep(0)
    ledger = dispatcher.kv_ledger
    assert ledger is not None and ledger.waiting_calls("b") == 1 and len(dispatcher.queue) == 1
    dispatcher._judge_pressure(clock.now())
    assert dispatcher.kv_pressure.demand_tokens == 12_000 and dispatcher.kv_pressure.active_agents == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ledger.waiting_calls("b") == 0 and len(dispatcher.queue) == 0
    clock.advance(100.0)  # past the window: b never started, so nothing keeps it active
    dispatcher._judge_pressure(clock.now())
    assert dispatcher.kv_pressure.demand_tokens == 6000 and dispatcher.kv_pressure.active_agents == 1
    holder.release(10.0, 6100, 0)


async def test_a_call_cancelled_in_the_instant_it_would_start_leaves_as_a_waiting_one() -> None:
    # Its future is cancelled, then a pump picks it before its `acquire` handles the cancellation: `_start` finds
    # the waiter done and counts it as a call that left waiting (`dequeued`), not one that started.
    clock = FakeClock()
    dispatcher = kv_dispatcher(clock)
    holder = await dispatcher.acquire("a", Tier.HOT, prompt_tokens=6000)
    waiting = asyncio.create_task(dispatcher.acquire("b", Tier.HOT, prompt_tokens=6000))
    await asyncio.sleep(0)
    holder.release(10.0, 6100, 0)  # a keeps its place for keep_s: b still waits
    assert len(dispatcher.queue) == 1
    clock.advance(10.0)  # a's place has expired: the next pump starts b
    waiting.cancel()  # cancels the future it awaits at once; its handler runs at the next await
    dispatcher.observe_metrics(None)  # the metrics watcher's tick pumps
    ledger = dispatcher.kv_ledger
    assert ledger is not None and ledger.waiting_calls("b") == 0 and len(dispatcher.queue) == 0
    assert dispatcher.tiers[Tier.HOT].cancelled_waiting == 1 and "b" not in ledger.in_flight_agents()
    assert ledger.snapshot()["b"].in_flight == 0
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert dispatcher.in_flight == 0


@pytest.mark.parametrize("seed", range(4))
def test_the_dispatchers_incremental_demand_equals_the_reference_over_its_queue(seed: int) -> None:
    # Random calls through `submit` (some agents forgotten between tasks), the engagement flipping on and off:
    # after every step the demand the dispatcher judges equals `demand_tokens` over `active_agents` of the
    # ledger's snapshot and the queue's agents, so the ledger's waiting calls are exactly the queue's.
    from sidecar.core.kv_pressure import active_agents, demand_tokens

    rng = random.Random(seed)
    clock = FakeClock()
    scheduling = SchedulingSettings(
        policy="kv", kv_capacity_tokens=20_000, kv_engage_ratio=1.0, kv_release_ratio=0.5, kv_active_window_s=5.0
    )
    dispatcher = make_dispatcher("large", Config(scheduling=scheduling))
    dispatcher.clock = clock.now
    ledger = dispatcher.kv_ledger
    assert ledger is not None
    flying: list[Slot] = []
    engaged = set()
    for _ in range(400):
        clock.advance(rng.choice([0.0, 0.2, 1.0, 3.0]))
        move = rng.random()
        if move < 0.5:
            agent = f"agent-{rng.randrange(12)}"
            dispatcher.submit(agent, rng.choice(list(Tier)), flying.append, rng.choice([None, 2000, 6000, 12_000]))
        elif move < 0.9 and flying:
            slot = flying.pop(rng.randrange(len(flying)))
            slot.release(100.0, rng.choice([None, 3000, 9000]), rng.choice([None, 0, 1000]))
        elif move < 0.95:
            agent = f"agent-{rng.randrange(12)}"
            if all(s.agent != agent for s in flying):  # the AgentBook forgets only agents without a call in flight
                dispatcher.forget(agent)
        else:
            dispatcher.observe_metrics(None)
        now = clock.now()
        dispatcher._judge_pressure(now)
        snapshot, queued = ledger.snapshot(), [item.agent for item in dispatcher.queue]
        active = active_agents(snapshot, queued, now, scheduling.kv_active_window_s)
        small = scheduling.kv_small_context_tokens  # 4,096: the 2,000-token agents add no demand
        assert dispatcher.kv_pressure.demand_tokens == demand_tokens(snapshot, active, 8192, small)
        assert dispatcher.kv_pressure.active_agents == len(active)
        assert all(ledger.waiting_calls(a) == queued.count(a) for a in {*queued, *snapshot})
        engaged.add(dispatcher.kv_pressure.engaged)
    assert engaged == {True, False}  # the run saw both orders
