"""Spill-over routing and exact LLM prefetch in the fleet simulation: the production rules, counted, deterministic."""

from __future__ import annotations

import pytest

from sidecar.bench.fleetsim.conditions import BY_NAME, Condition, select
from sidecar.bench.fleetsim.fleet import FleetRun, FleetSim
from sidecar.bench.fleetsim.loop import Loop
from sidecar.bench.fleetsim.prefetch import Prefetcher, results_known
from sidecar.bench.fleetsim.profiles import fleet_profile
from sidecar.bench.fleetsim.program import Program, Turn
from sidecar.bench.fleetsim.report import summarize
from sidecar.bench.fleetsim.run import programs_for, run_scenario
from sidecar.bench.fleetsim.scenario import FleetSimScenario, load_scenario
from sidecar.config import Config
from sidecar.coordinator.app import make_dispatcher
from sidecar.coordinator.dispatcher import Dispatcher, Slot
from sidecar.coordinator.settings import SchedulingSettings, SpeculationSettings
from sidecar.core.admission import UpstreamMetrics
from sidecar.core.prediction import Action
from sidecar.core.stages import Stage, Tier
from sidecar.sim.engine import Request

NEW = ["vllm-prefetch", "kv-prefetch", "kv-32b+7b-spill", "vllm-32b+7b-spill"]


@pytest.fixture(scope="module")
def tiny() -> FleetSimScenario:
    return load_scenario("tiny")


def _program(actions: list[Action | None], calls: int = 1) -> Program:
    turns = tuple(
        Turn(Stage.EXPLORE, Tier.WARM, 10, action, 0.3, 16, calls if action is not None else 1) for action in actions
    )
    return Program("agent-0000", 0, 0.0, 100, turns)


def test_results_are_known_for_rereads_of_unchanged_files_and_repeated_tree_tools_only() -> None:
    a = Action
    actions: list[Action | None] = [
        a.READ_SOURCE,  # first read: a miss
        a.READ_SOURCE,  # re-read, unchanged: known
        a.READ_TEST,  # first read of the test file: a miss
        a.EDIT,  # writes the source file (never known)
        a.READ_TEST,  # the test file did not change: known
        a.READ_SOURCE,  # changed by the edit: a miss
        a.RUN_TESTS,  # first run: a miss
        a.RUN_TESTS,  # nothing written since: known
        a.SEARCH,  # a new query each time: never known
        a.OTHER,  # a command may write anything: never known, and it invalidates every read
        a.READ_TEST,  # a miss after the command
        a.RUN_TESTS,  # a miss after the command
        None,  # the last answer has no tool call
    ]
    expected = [False, True, False, False, True, False, False, True, False, False, False, False, False]
    assert list(results_known(_program(actions))) == expected
    # an answer with several tool calls is never fully known (the others read other files)
    assert not any(results_known(_program(actions, calls=2)))


def test_the_new_conditions_are_deterministic(tiny: FleetSimScenario) -> None:
    conditions = select(NEW)
    first = run_scenario(tiny, conditions, [1]).report
    assert run_scenario(tiny, conditions, [1]).report == first
    assert "calls spilled over to the other model" in first and "prefetch: real calls served from one" in first


def _run(scenario: FleetSimScenario, condition: Condition, seed: int = 1) -> tuple[FleetSim, FleetRun]:
    profile = fleet_profile(scenario.gpu.profile, scenario.gpu.profile_overrides)
    sim = FleetSim(scenario, condition, profile, programs_for(scenario, profile, seed), seed)
    return sim, sim.run()


@pytest.mark.parametrize(
    "condition",
    [
        BY_NAME["vllm-prefetch"],
        BY_NAME["kv-prefetch"],
        # every context waits for room: the working-set gate decides
        Condition("kv-prefetch-no-small", "test", {"policy": "kv", "kv_small_context_tokens": 0}, prefetch=True),
    ],
    ids=lambda c: c.name,
)
def test_prefetch_serves_only_exact_predictions_and_accounts_for_every_speculative_call(
    tiny: FleetSimScenario, condition: Condition
) -> None:
    sim, run = _run(tiny, condition)
    prefetcher = sim.prefetcher
    assert prefetcher is not None
    c = prefetcher.counts
    programs = [s.program for s in sim.agents.values()]
    assert len(run.calls) == sum(len(p.turns) for p in programs)  # every turn answered once, served or not
    # every answer was followed up or skipped at the gate; known results only where the cache rule says so
    assert c["followups"] + c.get("skipped", 0) >= len(run.calls) - len(programs)
    assert c.get("results_known", 0) + c.get("results_unknown", 0) == c["followups"]
    assert 0 < c["results_known"] <= sum(sum(results_known(p)) for p in programs)
    # every speculative call ended one way: served, cancelled for a real call, or dropped; none left anywhere
    ended = c.get("served", 0) + c.get("cancelled_for_real_calls", 0) + c.get("expired", 0)
    assert c.get("mismatched", 0) == 0 and ended == c["started"] > 0
    assert c.get("served_done", 0) + c.get("served_attached", 0) == c.get("served", 0)
    assert not prefetcher.pending and not prefetcher.by_id
    for replica in sim.replicas:
        assert replica.dispatcher.speculative == 0 and replica.dispatcher.in_flight == 0
        assert not replica.engine.has_work()
    # under `kv` every turn reached the ledger, served ones too (as `Speculator.serve` tells the coordinator's)
    ledgers = [r.dispatcher.kv_ledger for r in sim.replicas if r.dispatcher.kv_ledger is not None]
    if condition.scheduling.get("policy") == "kv":
        known = {agent: state for ledger in ledgers for agent, state in ledger.snapshot().items()}
        assert {a: k.calls for a, k in known.items()} == {p.agent: len(p.turns) for p in programs}
        assert all(k.in_flight == 0 for k in known.values())
    figures = summarize(run, None)
    assert figures["prefetch_served"] == c.get("served", 0) and figures["prefetch_started"] == c["started"]
    assert figures["prefetch_wasted_tokens"] == c.get("wasted_tokens", 0)


def test_prefetch_tokens_are_engine_tokens(tiny: FleetSimScenario) -> None:
    # a served call's prompt was looked up once, by its speculative call: the real calls' prompts plus the wasted
    # speculative ones are what the engines counted (a preempted request is looked up again)
    _, base = _run(tiny, BY_NAME["vllm"])
    _, run = _run(tiny, BY_NAME["vllm-prefetch"])
    assert sum(c.prompt_tokens for c in run.calls) == sum(c.prompt_tokens for c in base.calls)
    assert run.prefix_queries >= sum(c.prompt_tokens for c in run.calls)


def test_spill_over_moves_calls_of_any_stage_to_the_idle_model_when_the_large_one_is_saturated(
    tiny: FleetSimScenario,
) -> None:
    simple = (Stage.COMMIT_MSG, Stage.DOCS)
    for name in ("kv-32b+7b-spill", "vllm-32b+7b-spill"):
        sim, run = _run(tiny, BY_NAME[name])
        stages = {(s.program.agent, k): t.stage for s in sim.agents.values() for k, t in enumerate(s.program.turns)}
        on_small = [c for c in run.calls if c.replica == sim.small_replica]
        spilled = [c for c in on_small if stages[(c.agent, c.turn)] not in simple]
        assert len(spilled) == run.speculation["spilled to small"] > 0  # complex work, spilled
        figures = summarize(run, None)
        assert figures["spilled_calls"] == len(spilled) and figures["moved_tokens_computed"] > 0
    # without spill-over only the route table's simple work goes to the small model
    sim, run = _run(tiny, BY_NAME["kv-32b+7b"])
    assert all(stages_of(sim)[(c.agent, c.turn)] in simple for c in run.calls if c.replica == sim.small_replica)
    assert "spilled_calls" not in summarize(run, None)


def stages_of(sim: FleetSim) -> dict[tuple[str, int], Stage]:
    return {(s.program.agent, k): t.stage for s in sim.agents.values() for k, t in enumerate(s.program.turns)}


def _prefetcher(dispatcher: Dispatcher, loop: Loop, sent: list[Request], aborted: list[str]) -> Prefetcher:
    return Prefetcher(
        SpeculationSettings(enabled=True),
        [dispatcher],
        send=lambda _, request: sent.append(request),
        abort=lambda _, request_id: aborted.append(request_id),
        later=lambda delay, callback: loop.at(loop.now + delay, callback),
        clock=loop.clock,
        frontend_s=0.03,
    )


def _dispatcher(loop: Loop, kv_usage: float = 0.1) -> Dispatcher:
    dispatcher = make_dispatcher("m", Config(scheduling=SchedulingSettings(policy="priority", window=2)))
    dispatcher.clock = loop.clock
    dispatcher.observe_metrics(UpstreamMetrics(0, 0, kv_usage, 0.0, scraped_at=0.0))
    return dispatcher


def test_a_speculative_call_goes_only_on_spare_capacity_and_is_cancelled_when_a_real_call_queues() -> None:
    loop, sent, aborted = Loop(), [], []  # type: ignore[var-annotated]
    busy = _prefetcher(_dispatcher(loop, kv_usage=0.9), loop, sent, aborted)  # KV 90% used: no spare capacity
    busy.after_response("a", 0, True, True, lambda: Request("a:1:spec", tuple(range(64)), (1, 2)))
    assert busy.counts == {"skipped": 1.0} and not busy.pending

    dispatcher = _dispatcher(loop)
    prefetcher = _prefetcher(dispatcher, loop, sent, aborted)
    prefetcher.after_response("a", 0, True, False, lambda: Request("x", (1,), (2,)))  # a result not cached
    assert prefetcher.counts["results_unknown"] == 1 and not prefetcher.pending
    prefetcher.after_response("a", 0, True, True, lambda: Request("a:1:spec", tuple(range(64)), (1, 2)))
    assert prefetcher.counts["started"] == 1 and dispatcher.speculative == 1  # it holds a place of the window
    loop.run()
    assert [r.request_id for r in sent] == ["a:1:spec"]  # reached the engine after the frontend's latency
    granted: list[Slot] = []
    dispatcher.submit("b", Tier.HOT, granted.append)  # takes the window's other place
    dispatcher.submit("c", Tier.HOT, granted.append)  # must queue: the speculative call gives its place up
    assert aborted == ["a:1:spec"] and prefetcher.counts["cancelled_for_real_calls"] == 1
    assert dispatcher.speculative == 0 and len(granted) == 2 and not prefetcher.pending
    assert not prefetcher.take("a", tuple(range(64)), lambda _: None)  # nothing left to serve: a normal call


def test_a_real_call_is_served_from_its_speculative_call_only_when_it_is_the_same_request() -> None:
    loop, sent, aborted = Loop(), [], []  # type: ignore[var-annotated]
    dispatcher = _dispatcher(loop)
    prefetcher = _prefetcher(dispatcher, loop, sent, aborted)
    served: list[Request] = []
    prompt = tuple(range(64))
    prefetcher.after_response("a", 0, True, True, lambda: Request("a:1:spec", prompt, (1, 2)))
    loop.run()
    assert prefetcher.take("a", prompt, served.append) and served == []  # attached while it runs
    sent[0].num_output = 2
    prefetcher.finished(sent[0])
    assert served == [sent[0]] and dispatcher.speculative == 0
    assert prefetcher.counts["served_attached"] == 1
    prefetcher.after_response("a", 0, True, True, lambda: Request("a:2:spec", (*prompt, 7), (1,)))
    loop.run()
    sent[1].first_scheduled, sent[1].num_cached_tokens, sent[1].num_output = 0.0, 48, 1  # as the engine ran it
    prefetcher.finished(sent[1])
    assert not prefetcher.take("a", (*prompt, 8), served.append)  # another request: not served, dropped
    assert prefetcher.counts["mismatched"] == 1 and len(served) == 1
    assert prefetcher.counts["wasted_tokens"] == 65 - 48 + 1  # what the engine computed for it
    assert prefetcher.budget.used(loop.now) == 65 + 1  # the budget is charged the usage total, as in the proxy
