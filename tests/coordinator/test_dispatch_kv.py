"""The dispatcher under the `kv` policy, driven without an event loop (`submit`), as the fleet simulation drives it."""

from __future__ import annotations

from sidecar.coordinator.dispatcher import Dispatcher, Slot
from sidecar.core.ordering import PriorityOrder
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
    }
    assert view["agents"]["a"]["has_place"] is False


def test_submit_under_another_policy_keeps_no_ledger() -> None:
    clock = FakeClock()
    dispatcher = Dispatcher("m", PriorityOrder(), static_window=1, clock=clock.now)
    granted: list[Slot] = []
    dispatcher.submit("a", Tier.COLD, granted.append)
    dispatcher.submit("b", Tier.COLD, granted.append)
    assert dispatcher.kv_ledger is None and len(granted) == 1 and dispatcher.status()["working_set"] is None
    granted[0].release(10.0, 100, 0)
    assert len(granted) == 2
