"""Routing: the route table, model resolution with spill-over, replica choice with affinity; tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.routing import (
    LARGE,
    SMALL,
    ReplicaChoice,
    ReplicaReason,
    ReplicaState,
    RouteReason,
    RouteTable,
    SpillPolicy,
    consults_route,
    pick_replica,
    rendezvous_score,
    resolve_model,
    route_table_from,
)
from sidecar.core.stages import Stage, TaskKind

ALIASES = {SMALL: "Qwen/Qwen2.5-Coder-7B-Instruct", LARGE: "Qwen/Qwen2.5-Coder-32B-Instruct"}
S7, S32 = ALIASES[SMALL], ALIASES[LARGE]


# ---------------------------------------------------------------------------------------------------------------
# Route table


@pytest.mark.parametrize(
    ("table", "stage", "task", "alias"),
    [
        (RouteTable(), Stage.COMMIT_MSG, TaskKind.SIMPLE, SMALL),
        (RouteTable(), Stage.CODE_EDIT, TaskKind.COMPLEX, LARGE),
        (RouteTable(), None, TaskKind.SIMPLE, SMALL),
        (RouteTable(by_stage={Stage.DOCS: LARGE}), Stage.DOCS, TaskKind.SIMPLE, LARGE),  # a stage route wins
        (RouteTable(by_stage={Stage.DOCS: LARGE}), Stage.COMMIT_MSG, TaskKind.SIMPLE, SMALL),
        (RouteTable(by_task={}), Stage.COMMIT_MSG, TaskKind.SIMPLE, LARGE),  # nothing configured: large
    ],
)
def test_alias_for(table: RouteTable, stage: Stage | None, task: TaskKind, alias: str) -> None:
    assert table.alias_for(stage, task) == alias


def test_route_table_from_config() -> None:
    table = route_table_from({"simple": SMALL, "plan": SMALL, "docs": LARGE}, ALIASES)
    assert table.alias_for(Stage.PLAN, TaskKind.COMPLEX) == SMALL
    assert table.alias_for(Stage.DOCS, TaskKind.SIMPLE) == LARGE
    assert table.alias_for(Stage.EXPLORE, TaskKind.COMPLEX) == LARGE  # complex keeps its default


def test_route_table_from_reports_every_error() -> None:
    with pytest.raises(ValueError, match="unknown route key 'deploy'") as caught:
        route_table_from({"deploy": SMALL, "simple": "tiny"}, ALIASES)
    assert "unknown model alias 'tiny'" in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# Model resolution


@pytest.mark.parametrize(
    ("requested", "route", "opted_out", "load", "expected"),
    [
        # "auto" is routed
        ("auto", SMALL, False, None, (SMALL, S7, RouteReason.ROUTED)),
        ("AUTO", LARGE, False, None, (LARGE, S32, RouteReason.ROUTED)),
        (None, SMALL, False, None, (SMALL, S7, RouteReason.ROUTED)),
        ("", SMALL, False, None, (SMALL, S7, RouteReason.ROUTED)),
        # opted-out agents get the default alias for "auto", and never spill
        ("auto", SMALL, True, None, (LARGE, S32, RouteReason.OPTED_OUT)),
        ("auto", SMALL, True, {LARGE: 5.0, SMALL: 0.0}, (LARGE, S32, RouteReason.OPTED_OUT)),
        # an alias resolves to its served name, whatever the route says, and never spills
        (SMALL, LARGE, False, {SMALL: 5.0, LARGE: 0.0}, (SMALL, S7, RouteReason.ALIAS)),
        (LARGE, SMALL, True, None, (LARGE, S32, RouteReason.ALIAS)),
        # a served name is honoured
        (S32, SMALL, False, {LARGE: 5.0, SMALL: 0.0}, (LARGE, S32, RouteReason.EXPLICIT)),
        (S7, LARGE, True, None, (SMALL, S7, RouteReason.EXPLICIT)),
        # unknown names pass through unchanged (to the default alias' upstream, which answers 404 itself)
        ("gpt-4o-mini", SMALL, False, None, (LARGE, "gpt-4o-mini", RouteReason.PASSTHROUGH)),
        (
            "qwen/qwen2.5-coder-7b-instruct",
            SMALL,
            False,
            None,
            (LARGE, "qwen/qwen2.5-coder-7b-instruct", RouteReason.PASSTHROUGH),
        ),
        # spill-over: routed alias saturated, the other idle
        ("auto", LARGE, False, {LARGE: 1.0, SMALL: 0.2}, (SMALL, S7, RouteReason.SPILLED)),
        ("auto", SMALL, False, {SMALL: 3.0, LARGE: 0.0}, (LARGE, S32, RouteReason.SPILLED)),
        ("auto", LARGE, False, {LARGE: 1.0, SMALL: 0.5}, (LARGE, S32, RouteReason.ROUTED)),  # the other is not idle
        ("auto", LARGE, False, {LARGE: 0.99, SMALL: 0.0}, (LARGE, S32, RouteReason.ROUTED)),  # not saturated
        ("auto", LARGE, False, {LARGE: 2.0}, (LARGE, S32, RouteReason.ROUTED)),  # no reading: never spilled to
        ("auto", LARGE, False, {LARGE: 2.0, "medium": 0.0}, (LARGE, S32, RouteReason.ROUTED)),  # not configured
        # a route that is not configured falls back to the default alias
        ("auto", "medium", False, None, (LARGE, S32, RouteReason.ROUTED)),
    ],
)
def test_resolve_model(
    requested: str | None,
    route: str,
    opted_out: bool,
    load: dict[str, float] | None,
    expected: tuple[str, str, RouteReason],
) -> None:
    decision = resolve_model(requested, ALIASES, route, opted_out, load=load)
    assert (decision.alias, decision.served_name, decision.reason) == expected


def test_spill_can_be_turned_off() -> None:
    decision = resolve_model(
        "auto", ALIASES, LARGE, False, load={LARGE: 9.0, SMALL: 0.0}, spill=SpillPolicy(enabled=False)
    )
    assert (decision.alias, decision.reason) == (LARGE, RouteReason.ROUTED)


def test_spill_goes_to_the_least_loaded_idle_alias() -> None:
    aliases = {**ALIASES, "medium": "Qwen/Qwen2.5-Coder-14B-Instruct"}
    decision = resolve_model("auto", aliases, LARGE, False, load={LARGE: 1.5, SMALL: 0.3, "medium": 0.1})
    assert (decision.alias, decision.reason) == ("medium", RouteReason.SPILLED)
    assert "saturated" in decision.detail


@pytest.mark.parametrize(
    ("aliases", "requested", "expected"),
    [
        ({}, "auto", (None, "auto", RouteReason.PASSTHROUGH)),
        ({}, None, (None, "auto", RouteReason.PASSTHROUGH)),
        ({}, "m", (None, "m", RouteReason.PASSTHROUGH)),
        ({SMALL: S7}, "auto", (SMALL, S7, RouteReason.ROUTED)),  # one model: everything goes there
        ({SMALL: S7}, "x", (SMALL, "x", RouteReason.PASSTHROUGH)),
        # one upstream (`up --upstream URL` names it "default"): the well-known aliases name it too, not a 404
        ({"default": S7}, "large", ("default", S7, RouteReason.ALIAS)),
        ({"default": S7}, " Small ", ("default", S7, RouteReason.ALIAS)),
        ({"default": S7}, "medium", ("default", "medium", RouteReason.PASSTHROUGH)),
        ({"default": S7, "other": "o"}, "large", ("default", "large", RouteReason.PASSTHROUGH)),  # not with two
    ],
)
def test_resolve_model_with_few_models(
    aliases: dict[str, str], requested: str | None, expected: tuple[str | None, str, RouteReason]
) -> None:
    decision = resolve_model(requested, aliases, LARGE, False)
    assert (decision.alias, decision.served_name, decision.reason) == expected


# ---------------------------------------------------------------------------------------------------------------
# Replicas

URLS = [f"http://replica-{i}:8000" for i in range(4)]


def replicas(loads: list[int], healthy: list[bool] | None = None) -> list[ReplicaState]:
    flags = healthy or [True] * len(loads)
    return [ReplicaState(url, flag, in_flight=load) for url, load, flag in zip(URLS, loads, flags, strict=False)]


def preferred(agent: str, urls: list[str]) -> int:
    return max(range(len(urls)), key=lambda index: rendezvous_score(agent, urls[index]))


def test_rendezvous_score_is_stable() -> None:
    """blake2b, not Python's salted hash: the same agent maps to the same replica in every process."""
    assert rendezvous_score("agent-1", "http://a") == 0x88651CC0BF3D7828
    assert rendezvous_score("agent-1", "http://b") != rendezvous_score("agent-1", "http://a")


@pytest.mark.parametrize(
    ("loads", "healthy", "reason"),
    [
        ([0, 0, 0, 0], None, ReplicaReason.AFFINITY),
        ([2, 2, 2, 2], None, ReplicaReason.AFFINITY),
        ([2, 2, 2, 2], [True, True, True, True], ReplicaReason.AFFINITY),
    ],
)
def test_affinity_when_balanced(loads: list[int], healthy: list[bool] | None, reason: ReplicaReason) -> None:
    for agent in ("a", "b", "c", "agent-42"):
        choice = pick_replica(replicas(loads, healthy), agent)
        assert choice == ReplicaChoice(preferred(agent, URLS), URLS[preferred(agent, URLS)], reason)


@pytest.mark.parametrize(
    ("extra", "least", "keeps"),
    [
        (2, 0, True),  # within slack_calls (2)
        (3, 0, False),
        (5, 10, True),  # within 0.5 x least
        (6, 10, False),
    ],
)
def test_affinity_gives_way_to_load(extra: int, least: int, keeps: bool) -> None:
    agent = "agent-7"
    own = preferred(agent, URLS)
    loads = [least] * 4
    loads[own] = least + extra
    choice = pick_replica(replicas(loads), agent)
    assert choice is not None
    assert (choice.index == own) is keeps
    assert choice.reason is (ReplicaReason.AFFINITY if keeps else ReplicaReason.LEAST_LOADED)


def test_least_loaded_when_affinity_gives_way() -> None:
    agent = "agent-7"
    own = preferred(agent, URLS)
    loads = [9, 9, 9, 9]
    loads[own] = 30
    quiet = (own + 1) % 4
    loads[quiet] = 1
    choice = pick_replica(replicas(loads), agent)
    assert choice == ReplicaChoice(quiet, URLS[quiet], ReplicaReason.LEAST_LOADED)


def test_unhealthy_replicas_are_skipped() -> None:
    agent = "agent-3"
    own = preferred(agent, URLS)
    healthy = [True] * 4
    healthy[own] = False
    choice = pick_replica(replicas([0, 0, 0, 0], healthy), agent)
    assert choice is not None and choice.index != own and replicas([0] * 4, healthy)[choice.index].healthy
    assert pick_replica(replicas([0, 0], [False, False]), agent) is None
    assert pick_replica([], agent) is None


def test_waiting_counts_as_load() -> None:
    assert ReplicaState("u", in_flight=2, waiting=3).load == 5
    agent = "agent-9"
    own = preferred(agent, URLS[:2])
    states = [ReplicaState(URLS[0]), ReplicaState(URLS[1])]
    states[own] = ReplicaState(URLS[own], waiting=10)
    choice = pick_replica(states, agent)
    assert choice is not None and choice.index == 1 - own


_agents = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True)


@given(_agents, st.integers(1, 6))
def test_adding_a_replica_moves_only_agents_to_it(agents: list[str], count: int) -> None:
    urls = [f"http://r{i}" for i in range(count)]
    grown = [*urls, "http://new"]
    for agent in agents:
        before = pick_replica([ReplicaState(url) for url in urls], agent)
        after = pick_replica([ReplicaState(url) for url in grown], agent)
        assert before is not None and after is not None
        assert after.url in (before.url, "http://new")


@given(_agents, st.integers(2, 6), st.data())
def test_losing_a_replica_moves_only_its_agents(agents: list[str], count: int, data: st.DataObject) -> None:
    urls = [f"http://r{i}" for i in range(count)]
    lost = data.draw(st.integers(0, count - 1))
    for agent in agents:
        before = pick_replica([ReplicaState(url) for url in urls], agent)
        after = pick_replica([ReplicaState(url, healthy=index != lost) for index, url in enumerate(urls)], agent)
        assert before is not None and after is not None
        assert after.url != urls[lost]
        if before.url != urls[lost]:
            assert after.url == before.url


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), min_size=1, max_size=8), st.text(max_size=8))
def test_the_choice_is_healthy_and_not_much_more_loaded(states: list[tuple[int, bool]], agent: str) -> None:
    given_replicas = [ReplicaState(f"http://r{i}", healthy, in_flight=load) for i, (load, healthy) in enumerate(states)]
    choice = pick_replica(given_replicas, agent)
    healthy_loads = [replica.load for replica in given_replicas if replica.healthy]
    if not healthy_loads:
        assert choice is None
        return
    assert choice is not None
    chosen = given_replicas[choice.index]
    assert chosen.healthy and chosen.url == choice.url
    least = min(healthy_loads)
    assert chosen.load <= least + max(2, 0.5 * least)


@given(
    st.sampled_from(["", " ", "auto", "AUTO", " Auto ", SMALL, LARGE, "Large", S7, S32, "gpt-4", "other", None]),
    st.sampled_from([ALIASES, {LARGE: S32}, {"only": "served/one"}, {}]),
    st.sampled_from([SMALL, LARGE, "nowhere"]),
    st.sampled_from([None, {SMALL: 0.0, LARGE: 2.0}, {SMALL: 2.0, LARGE: 0.0}]),
    st.booleans(),
)
def test_a_route_not_consulted_changes_nothing(
    requested: str | None, aliases: dict[str, str], route: str, load: dict[str, float] | None, opted_out: bool
) -> None:
    """When `consults_route` says no, the route and the load make no difference to the decision (the planner
    skips classifying the call and reading the load then)."""
    decision = resolve_model(requested, aliases, route, opted_out, load=load)
    if not consults_route(requested, aliases):
        assert decision == resolve_model(requested, aliases, "elsewhere", opted_out, load=None)
    assert consults_route("auto", aliases) or "auto" in aliases
