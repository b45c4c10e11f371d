"""When the `kv` policy's gates engage (`core.kv_pressure`): the active agents' demand against the capacity, with
hysteresis."""

from __future__ import annotations

import math

import pytest

from sidecar.core.kv_pressure import (
    ALWAYS,
    DEFAULT_ENGAGE_RATIO,
    DEFAULT_RELEASE_RATIO,
    Pressure,
    PressureRule,
    active_agents,
    demand_tokens,
    next_pressure,
)
from sidecar.core.working_set import AgentKV


def agent(context: int, *, in_flight: int = 0, last_active: float = 0.0, growth: int = 0, shared: int = 0) -> AgentKV:
    return AgentKV(context, growth, in_flight, last_active, shared_tokens=shared)


def test_active_agents_are_in_flight_waiting_or_recently_back() -> None:
    agents = {
        "flying": agent(1000, in_flight=1, last_active=0.0),
        "tool": agent(1000, last_active=75.0),  # back 25 s ago: in a tool call
        "quiet": agent(1000, last_active=60.0),  # back 40 s ago: gone quiet
        "queued": agent(1000, last_active=10.0),  # long ago, but a call of its waits
    }
    assert active_agents(agents, ["queued", "new"], 100.0, 30.0) == {"flying", "tool", "queued", "new"}
    assert active_agents(agents, [], 100.0, 0.0) == {"flying"}


def test_demand_counts_each_footprint_the_shared_prefix_once_and_unknown_agents_at_the_default() -> None:
    agents = {"a": agent(6000, growth=500, shared=4000), "b": agent(5000, growth=1000, shared=4000)}
    # a: 2,500 own, b: 2,000 own, the 4,000-token shared prefix once; "new" is unknown: 8,192 by default
    assert demand_tokens(agents, ["a", "b"]) == 2500 + 2000 + 4000
    assert demand_tokens(agents, ["a", "new"], new_agent_tokens=1000) == 6500 + 1000
    assert demand_tokens(agents, []) == 0


RULE = PressureRule(engage_ratio=4.0, release_ratio=2.0, window_s=30.0)


@pytest.mark.parametrize(
    ("demands", "engaged"),
    [
        # (demand in capacities, one per evaluation) -> engaged after each
        ([1.0, 3.9, 3.9, 1.0], [False, False, False, False]),  # below the engage ratio: never
        ([4.0, 3.0, 2.1, 3.9, 2.0, 3.9], [True, True, True, True, False, False]),  # hysteresis both ways
        ([5.0, 1.9, 4.1, 2.5], [True, False, True, True]),
        ([0.0, 10.0, 0.0], [False, True, False]),
    ],
)
def test_the_gates_engage_at_the_engage_ratio_and_release_only_at_the_release_ratio(
    demands: list[float], engaged: list[bool]
) -> None:
    capacity, pressure, seen = 1000, Pressure(), []
    for t, demand in enumerate(demands):
        agents = {"a": agent(round(demand * capacity), in_flight=1)} if demand else {}
        pressure = next_pressure(pressure, RULE, agents, [], capacity, float(t))
        seen.append(pressure.engaged)
        assert pressure.ratio == pytest.approx(demand)
    assert seen == engaged
    flips = sum(a != b for a, b in zip([False, *seen], seen, strict=False))
    assert pressure.changes == flips
    if flips:
        last = max(i for i in range(len(seen)) if seen[i] != ([False, *seen])[i])
        assert pressure.since == last
    else:
        assert pressure.since == -math.inf


def test_a_demand_hovering_at_one_threshold_does_not_flap() -> None:
    pressure = Pressure()
    for t in range(100):
        demand = 4000 if t % 2 else 3990  # across the engage ratio, never near the release ratio
        pressure = next_pressure(pressure, RULE, {"a": agent(demand, in_flight=1)}, [], 1000, float(t))
    assert pressure.engaged and pressure.changes == 1


def test_the_window_decides_who_counts() -> None:
    agents = {"a": agent(3000, last_active=0.0), "b": agent(3000, in_flight=1, last_active=0.0)}
    rule = PressureRule(engage_ratio=1.5, release_ratio=1.0, window_s=30.0)
    assert next_pressure(Pressure(), rule, agents, [], 4000, 20.0).engaged  # a is in a tool call: 6,000 tokens
    assert not next_pressure(Pressure(), rule, agents, [], 4000, 40.0).engaged  # a has gone quiet: 3,000


def test_always_is_engaged_whatever_the_demand() -> None:
    pressure = next_pressure(Pressure(), ALWAYS, {}, [], 1000, 0.0)
    assert pressure.engaged and pressure.demand_tokens == 0 and ALWAYS.always and not RULE.always


@pytest.mark.parametrize(
    "kwargs",
    [
        {"engage_ratio": -1.0},
        {"engage_ratio": math.inf},
        {"engage_ratio": 2.0, "release_ratio": 3.0},
        {"release_ratio": -0.1},
        {"window_s": -1.0},
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PressureRule(**kwargs)


def test_the_default_rule_holds_the_gates_until_the_active_contexts_fit_with_room() -> None:
    # A fleet's last tasks: engaged at 4x, then two or three large contexts need 1-2x the KV. Released there, they
    # would evict each other on every turn under `priority` (docs/fleet-sim.md); the default holds until 0.5x.
    rule, capacity, pressure = PressureRule(), 1000, Pressure()
    assert (rule.engage_ratio, rule.release_ratio) == (DEFAULT_ENGAGE_RATIO, DEFAULT_RELEASE_RATIO) == (4.0, 0.5)
    seen = []
    for t, demand in enumerate([4.0, 2.0, 1.5, 1.0, 0.6, 0.5, 1.0]):
        agents = {"a": agent(round(demand * capacity), in_flight=1)}
        pressure = next_pressure(pressure, rule, agents, [], capacity, float(t))
        seen.append(pressure.engaged)
    assert seen == [True, True, True, True, True, False, False]
