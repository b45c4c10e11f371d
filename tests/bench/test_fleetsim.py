"""The fleet simulation: deterministic byte for byte, every task finishes, the production dispatcher is what runs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from sidecar.bench.fleetsim.bound import schedule_bounds, throughput_bound
from sidecar.bench.fleetsim.conditions import BY_NAME, CONDITIONS, Condition, select
from sidecar.bench.fleetsim.fleet import FleetSim
from sidecar.bench.fleetsim.profiles import fleet_profile
from sidecar.bench.fleetsim.program import Program
from sidecar.bench.fleetsim.report import summarize
from sidecar.bench.fleetsim.run import programs_for, run_scenario, solo_times
from sidecar.bench.fleetsim.scenario import available_scenarios, load_scenario
from sidecar.bench.fleetsim.speculation import early_safe, streamed_tools_end
from sidecar.cli import main
from sidecar.core.prediction import Action
from sidecar.core.stages import Stage
from sidecar.core.working_set import KVAwareOrder


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return load_scenario("tiny")


def test_the_same_scenario_and_seed_give_the_same_report_and_another_seed_does_not(tiny) -> None:  # type: ignore[no-untyped-def]
    conditions = select(["kv", "priority"])
    first = run_scenario(tiny, conditions, [1]).report
    assert run_scenario(tiny, conditions, [1]).report == first
    assert run_scenario(tiny, conditions, [2]).report != first
    assert "SIMULATED" in first and "| kv |" in first


def test_worker_processes_give_the_same_report(tiny) -> None:  # type: ignore[no-untyped-def]
    conditions = select(["kv"])
    assert run_scenario(tiny, conditions, [1, 2], jobs=2).report == run_scenario(tiny, conditions, [1, 2]).report


def test_the_report_is_identical_across_processes_with_different_hash_seeds() -> None:
    argv = [sys.executable, "-m", "sidecar.cli", "bench", "fleet-sim", "--scenario", "tiny", "--seeds", "1"]
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=True)
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and "| vllm |" in outputs[0]


def test_programs_are_reproducible_and_fit_the_engine(tiny) -> None:  # type: ignore[no-untyped-def]
    profile = fleet_profile(tiny.gpu.profile, tiny.gpu.profile_overrides)
    programs = programs_for(tiny, profile, 1)
    assert programs == programs_for(tiny, profile, 1) and programs != programs_for(tiny, profile, 2)
    prefix = tiny.fleet.system_prompt_tokens + tiny.fleet.tool_list_tokens
    for program in programs:
        assert tiny.fleet.turns_min <= len(program.turns) <= tiny.fleet.turns_max
        assert program.turns[0].stage is Stage.PLAN and program.turns[-1].action is None
        assert program.turns[-2].action is Action.GIT and program.turns[-1].stage is Stage.COMMIT_MSG
        total = prefix + program.final_context + program.turns[-1].output_tokens
        assert total <= min(profile.max_model_len, profile.kv_capacity_tokens)


@pytest.mark.parametrize("name", [c.name for c in CONDITIONS])
def test_every_condition_finishes_every_task_with_consistent_counts(tiny, name: str) -> None:  # type: ignore[no-untyped-def]
    profile = fleet_profile(tiny.gpu.profile, tiny.gpu.profile_overrides)
    programs: list[Program] = programs_for(tiny, profile, 1)
    sim = FleetSim(tiny, BY_NAME[name], profile, programs, 1)
    run = sim.run()
    assert all(end >= start for start, end in run.agents.values())
    assert len(run.calls) == sum(len(p.turns) for p in programs)
    assert 0 < run.prefix_hits <= run.prefix_queries
    assert run.busy_s <= run.makespan_s * run.replicas + 1e-9
    for replica in sim.replicas:
        assert not replica.engine.has_work() and replica.dispatcher.in_flight == 0
        assert len(replica.dispatcher.queue) == 0


def test_the_kv_condition_runs_the_production_dispatcher_and_its_ledger(tiny) -> None:  # type: ignore[no-untyped-def]
    profile = fleet_profile(tiny.gpu.profile, tiny.gpu.profile_overrides)
    programs = programs_for(tiny, profile, 1)
    sim = FleetSim(tiny, BY_NAME["kv"], profile, programs, 1)
    sim.run()
    dispatcher = sim.replicas[0].dispatcher
    assert isinstance(dispatcher.policy, KVAwareOrder)
    assert dispatcher.policy.capacity_tokens == profile.kv_capacity_tokens
    ledger = dispatcher.kv_ledger
    assert ledger is not None and set(ledger.snapshot()) == {p.agent for p in programs}
    # every agent but the first of each recipe found the recipe's prompt cached on its first call
    shared = [s.shared_tokens for s in ledger.snapshot().values()]
    assert sum(1 for t in shared if t > 0) >= len(programs) - tiny.fleet.recipes


def test_the_cli_runs_fleet_sim_and_plain_bench_keeps_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "fleet-sim", "--scenario", "tiny", "--seeds", "1", "--conditions", "kv"]) == 0
    out = capsys.readouterr().out
    assert "| metric | vllm | kv |" in out and "Improvement over vllm" in out
    assert main(["bench", "fleet-sim", "--list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["bench", "--list"]) == 0
    assert "scenarios:" in capsys.readouterr().out
    assert main(["bench", "fleet-sim", "--conditions", "nope"]) == 2


def test_shipped_scenarios_load() -> None:
    names = available_scenarios()
    assert {"tiny", "default", "scale", "h200", "streaming", "routing"} <= set(names)
    for name in names:
        load_scenario(name)


def test_outputs_too_long_for_the_context_are_shortened_so_every_program_fits() -> None:
    # h200: ~523-token outputs over up to 64 turns can exceed the 32K model length on their own
    scenario = load_scenario("h200")
    profile = fleet_profile(scenario.gpu.profile, scenario.gpu.profile_overrides)
    prefix = scenario.fleet.system_prompt_tokens + scenario.fleet.tool_list_tokens
    limit = min(profile.max_model_len, profile.kv_capacity_tokens)
    for program in programs_for(scenario, profile, 1):
        assert prefix + program.final_context + program.turns[-1].output_tokens <= limit


def test_no_condition_beats_the_physical_throughput_bound(tiny) -> None:  # type: ignore[no-untyped-def]
    profile = fleet_profile(tiny.gpu.profile, tiny.gpu.profile_overrides)
    programs = programs_for(tiny, profile, 1)
    prefix = tiny.fleet.system_prompt_tokens + tiny.fleet.tool_list_tokens
    bound = throughput_bound(programs, prefix, profile)
    assert bound.output_tokens == sum(t.output_tokens for p in programs for t in p.turns)
    for condition in [c for c in CONDITIONS if not c.small_model]:  # the bound is for the scenario's model
        run = FleetSim(tiny, condition, profile, programs, 1).run()
        assert run.busy_s >= bound.gpu_s  # the GPU time no schedule can go below
        assert summarize(run, None)["tasks_per_gpu_hour"] <= bound.tasks_per_gpu_hour(len(programs))


def test_the_gpu_time_splits_into_prefill_decode_and_idle_and_no_schedule_beats_the_schedule_bounds(tiny) -> None:  # type: ignore[no-untyped-def]
    profile = fleet_profile(tiny.gpu.profile, tiny.gpu.profile_overrides)
    programs = programs_for(tiny, profile, 1)
    prefix = tiny.fleet.system_prompt_tokens + tiny.fleet.tool_list_tokens
    solo = solo_times(tiny, profile, programs, 1)
    bounds = schedule_bounds(programs, prefix, profile, tiny.gpu.replicas, solo)
    throughput = throughput_bound(programs, prefix, profile)
    assert bounds.makespan_s >= max(solo.values()) and bounds.makespan_s >= throughput.gpu_s
    assert bounds.mean_completion_s >= sum(solo.values()) / len(solo) and bounds.max_slowdown >= 1.0
    # not the speculation conditions: they shorten tool time, so times alone (no speculation) do not bound them
    for condition in [BY_NAME[n] for n in ("vllm", "vllm-priority", "kv", "kv-warm")]:
        run = FleetSim(tiny, condition, profile, programs, 1).run()
        g = run.gpu
        assert g["prefill_new_s"] + g["prefill_recomputed_s"] + g["decode_s"] == pytest.approx(run.busy_s)
        # every prompt token the bound counts is computed at least once; the rest is recomputation
        assert g["prefill_new_tokens"] >= throughput.prefill_tokens
        # every output token but each call's first is decoded, except one sampled by a recompute after preemption
        decoded = sum(t.output_tokens - 1 for p in programs for t in p.turns)
        assert decoded - run.preemptions <= g["decode_tokens"] <= decoded
        summary = summarize(run, solo)
        assert summary["gpu_idle_s"] == pytest.approx(run.makespan_s - run.busy_s, abs=1e-6)
        assert sum(summary[f"decode_b{n}_share"] for n in (1, 2, 3)) == pytest.approx(1.0)
        assert run.makespan_s >= bounds.makespan_s - 1e-6
        assert summary["task_mean_s"] >= bounds.mean_completion_s - 1e-6
        assert summary["slowdown_max"] >= bounds.max_slowdown - 1e-9


def test_streamed_tool_calls_start_as_their_arguments_complete_and_never_finish_later() -> None:
    assert streamed_tools_end(0.0, 10.0, 1, 4.0) == 14.0  # one call at the end: nothing to overlap
    assert streamed_tools_end(0.0, 10.0, 4, 4.0) == 11.0  # 1 s each from 2.5, 5, 7.5, 10 s: the last ends at 11
    assert streamed_tools_end(0.0, 10.0, 2, 40.0) == 45.0  # long tools: the first 20 s starts at 5 s
    # short tools inside the stream: all but the last are done when the answer ends
    assert streamed_tools_end(9.0, 10.0, 10, 0.5) == pytest.approx(10.05)
    assert early_safe("read_file") and early_safe("run_tests") and not early_safe("edit_file")


def test_speculation_conditions_count_what_they_did_and_change_no_program(tiny) -> None:  # type: ignore[no-untyped-def]
    scenario = tiny.model_copy(
        update={
            "fleet": tiny.fleet.model_copy(update={"tool_calls_median": 2.0, "tool_calls_mean": 10.8}),
            "coordinator": tiny.coordinator.model_copy(update={"warm_min_tool_s": 1.0}),
        }
    )
    profile = fleet_profile(scenario.gpu.profile, scenario.gpu.profile_overrides)
    programs = programs_for(scenario, profile, 1)
    assert [t.output_tokens for p in programs for t in p.turns] == [
        t.output_tokens for p in programs_for(tiny, profile, 1) for t in p.turns
    ]  # the calls per answer come from a stream of their own
    assert max(t.tool_calls for p in programs for t in p.turns) > 1
    runs = {
        c: FleetSim(scenario, BY_NAME[c], profile, programs, 1).run() for c in ("kv-stream", "kv-prerun", "kv-warm")
    }
    for run in runs.values():
        assert len(run.calls) == sum(len(p.turns) for p in programs)
    stream = runs["kv-stream"].speculation
    assert stream["early_calls"] > 0 and stream["early_saved_s"] > 0
    edits = sum(1 for p in programs for t in p.turns[:-1] if t.action is Action.EDIT)
    prerun = runs["kv-prerun"].speculation
    assert prerun.get("prerun_used", 0) + prerun.get("prerun_wasted", 0) == edits > 0
    assert prerun.get("prerun_saved_s", 0) >= 0
    long_tools = sum(1 for p in programs for t in p.turns if t.action is not None and t.tool_s >= 1.0)
    warm = runs["kv-warm"].speculation
    assert sum(v for k, v in warm.items() if k.startswith("warm: ")) == long_tools
    assert warm.get("warm_calls", 0) == warm.get("warm: warm", 0)


def test_routing_sends_simple_work_to_the_small_model_and_pins_agents_to_the_large_ones(tiny) -> None:  # type: ignore[no-untyped-def]
    profile = fleet_profile(tiny.gpu.profile, tiny.gpu.profile_overrides)
    programs = programs_for(tiny, profile, 1)
    sim = FleetSim(tiny, BY_NAME["kv-32b+7b"], profile, programs, 1)
    run = sim.run()
    assert run.replicas == 2 and sim.replicas[1].engine.profile.name == tiny.gpu.small_profile
    small = {(c.agent, c.turn) for c in run.calls if c.replica == 1}
    simple = {
        (p.agent, k) for p in programs for k, t in enumerate(p.turns) if t.stage in (Stage.COMMIT_MSG, Stage.DOCS)
    }
    assert small == simple and small
    two = FleetSim(tiny, BY_NAME["kv-2x32b"], profile, programs, 1).run()
    assert two.replicas == 2 and {c.replica for c in two.calls} == {0, 1}


def _contended(tiny):  # type: ignore[no-untyped-def]
    """`tiny` cut to 12 agents whose contexts grow to 5-7K tokens of its 8,192: the KV gates engage. (scenario,
    profile, programs of seed 1)."""
    fleet = tiny.fleet.model_copy(
        update={"agents": 12, "context_min_tokens": 5000, "context_max_tokens": 7000, "turns_mean": 10, "turns_max": 16}
    )
    scenario = tiny.model_copy(update={"fleet": fleet})
    profile = fleet_profile(scenario.gpu.profile, scenario.gpu.profile_overrides)
    return scenario, profile, programs_for(scenario, profile, 1)


def test_the_kv_gates_hold_through_a_fleets_last_large_tasks(tiny) -> None:  # type: ignore[no-untyped-def]
    # 12 agents whose contexts grow to 5-7K tokens of tiny's 8,192: the gates engage, and the last tasks, two or
    # three large contexts, still need 1-2x the KV. Released at 2x they evict each other under `priority`; the
    # default rule (released at 0.5x) holds the working set to the end: fewer preemptions, more prefix-cache hits.
    # Small contexts scaled as the KV is (4,096 of an A100's 35,840 tokens, ~1,024 of tiny's 8,192): at 4,096 most
    # of these contexts' lives are "small", adding no demand and never waiting, and the tail is another fleet's.
    scenario, profile, programs = _contended(tiny)
    result = {}
    for name in ("kv", "kv-release-2x"):
        base = BY_NAME[name]
        condition = dataclasses.replace(base, scheduling={**base.scheduling, "kv_small_context_tokens": 1024})
        sim = FleetSim(scenario, condition, profile, programs, 1)
        run = sim.run()
        result[name] = (sim.replicas[0].dispatcher.kv_pressure.changes, run.preemptions, run.prefix_hits)
    (held_changes, held_preempted, held_hits), (let_changes, let_preempted, let_hits) = result.values()
    assert held_changes == 1 and let_changes == 2  # engaged once; the 2x rule also released before the end
    assert held_preempted < let_preempted and held_hits > let_hits


def test_the_fleet_reports_test_runs_to_the_ledger_and_long_tool_keep_s_acts_on_them(tiny) -> None:  # type: ignore[no-untyped-def]
    # The same contended fleet as above: with `kv_long_tool_keep_s = 0` (keep_s unchanged) an agent whose answer
    # runs the tests yields its place at once. Were the simulation not reporting test runs at release, the two runs
    # would be identical call for call.
    scenario, profile, programs = _contended(tiny)
    assert any(t.action is Action.RUN_TESTS for p in programs for t in p.turns)
    held = Condition("kv-long-tool-0", "test", {"policy": "kv", "kv_long_tool_keep_s": 0.0})
    sims = [FleetSim(scenario, c, profile, programs, 1) for c in (BY_NAME["kv"], held)]
    runs = [sim.run() for sim in sims]
    policy = sims[1].replicas[0].dispatcher.policy
    assert isinstance(policy, KVAwareOrder) and policy.long_tool_keep_s == 0.0
    starts = [[c.first_scheduled for c in run.calls] for run in runs]
    assert starts[0] != starts[1]
