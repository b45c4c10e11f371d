"""Run a fleet-sim scenario: every condition under every seed (the same programs per seed), plus each agent alone.

`run_scenario` returns the summaries and the rendered report; it reads no clock and writes nothing, so the same
scenario and seeds give the same report byte for byte. `on_run(condition, seed)` is told before each run (the
command prints progress and its own real run time, which is not part of the report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from sidecar.bench.fleetsim.bound import schedule_bounds, throughput_bound
from sidecar.bench.fleetsim.conditions import BASELINE, BY_NAME, Condition
from sidecar.bench.fleetsim.fleet import FleetRun, FleetSim
from sidecar.bench.fleetsim.profiles import fleet_profile
from sidecar.bench.fleetsim.program import Program, make_program
from sidecar.bench.fleetsim.report import render, summarize
from sidecar.bench.fleetsim.scenario import FleetSimScenario
from sidecar.sim.profiles import Profile


@dataclass
class ScenarioResult:
    summaries: dict[str, list[dict[str, float]]]
    runs: dict[str, list[FleetRun]]
    report: str


def programs_for(scenario: FleetSimScenario, profile: Profile, seed: int) -> list[Program]:
    fleet = scenario.fleet
    prefix = fleet.system_prompt_tokens + fleet.tool_list_tokens
    max_context = min(profile.max_model_len, profile.kv_capacity_tokens)
    return [make_program(fleet, dict(profile.output_tokens), seed, i, prefix, max_context) for i in range(fleet.agents)]


def solo_times(scenario: FleetSimScenario, profile: Profile, programs: list[Program], seed: int) -> dict[str, float]:
    """Each agent's task time alone on one replica (vLLM alone: nothing else competes)."""
    times = {}
    for program in programs:
        run = FleetSim(scenario, BY_NAME[BASELINE], profile, [program], seed, replicas=1).run()
        start, end = run.agents[program.agent]
        times[program.agent] = end - start
    return times


def _solo_job(scenario: FleetSimScenario, seed: int) -> dict[str, float]:
    profile = fleet_profile(scenario.gpu.profile, scenario.gpu.profile_overrides)
    return solo_times(scenario, profile, programs_for(scenario, profile, seed), seed)


def _run_job(scenario: FleetSimScenario, name: str, seed: int) -> FleetRun:
    profile = fleet_profile(scenario.gpu.profile, scenario.gpu.profile_overrides)
    return FleetSim(scenario, BY_NAME[name], profile, programs_for(scenario, profile, seed), seed).run()


def run_scenario(
    scenario: FleetSimScenario,
    conditions: Sequence[Condition],
    seeds: Sequence[int],
    on_run: Callable[[str, int], None] = lambda name, seed: None,
    jobs: int = 1,
) -> ScenarioResult:
    """Every condition under every seed; `jobs` > 1 runs them in that many worker processes (each run is its own
    simulation, so the report is the same whatever `jobs` is)."""
    summaries: dict[str, list[dict[str, float]]] = {c.name: [] for c in conditions}
    runs: dict[str, list[FleetRun]] = {c.name: [] for c in conditions}
    tasks = [("alone", seed) for seed in seeds if scenario.bench.solo]
    tasks += [(c.name, seed) for seed in seeds for c in conditions]
    results: dict[tuple[str, int], Any] = {}
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {}
            for name, seed in tasks:
                on_run(name, seed)
                job = _solo_job if name == "alone" else _run_job
                args = (scenario, seed) if name == "alone" else (scenario, name, seed)
                futures[(name, seed)] = pool.submit(job, *args)
            results = {key: future.result() for key, future in futures.items()}
    else:
        for name, seed in tasks:
            on_run(name, seed)
            results[(name, seed)] = _solo_job(scenario, seed) if name == "alone" else _run_job(scenario, name, seed)
    for seed in seeds:
        solo = results.get(("alone", seed))
        for condition in conditions:
            run = results[(condition.name, seed)]
            runs[condition.name].append(run)
            summaries[condition.name].append(summarize(run, solo))
    profile = fleet_profile(scenario.gpu.profile, scenario.gpu.profile_overrides)
    f = scenario.fleet
    kv_total = profile.kv_capacity_tokens * scenario.gpu.replicas
    demand = f.agents * (f.context_min_tokens + f.context_max_tokens) / 2
    notes = [
        f"GPU: {scenario.gpu.replicas} x {profile.name} ({profile.kv_capacity_tokens:,} KV tokens each); "
        f"{f.agents} agents, final contexts {f.context_min_tokens:,}-{f.context_max_tokens:,} tokens: "
        f"KV oversubscribed {demand / kv_total:.1f}x at the tasks' end.",
        f"Scenario: `{scenario.name}` (sidecar/bench/fleetsim/scenarios/{scenario.name}.toml). Regenerate: "
        f"`goose-sidecar bench fleet-sim --scenario {scenario.name}"
        + (f" --seeds {','.join(map(str, seeds))}" if list(seeds) != scenario.bench.seeds else "")
        + "`.",
    ]
    notes.append(_bound_note(scenario, profile, seeds, summaries))
    notes.append(_schedule_note(scenario, profile, seeds, summaries, [results.get(("alone", s)) for s in seeds]))
    report = render(scenario.name, scenario.description, conditions, seeds, summaries, notes)
    return ScenarioResult(summaries, runs, report)


def _median(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2]


def _cell(values: Sequence[float], fmt: str) -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(_median(values))} [{fmt.format(min(values))}..{fmt.format(max(values))}]"


def _schedule_note(
    scenario: FleetSimScenario,
    profile: Profile,
    seeds: Sequence[int],
    summaries: dict[str, list[dict[str, float]]],
    solos: Sequence[dict[str, float] | None],
) -> str:
    """The least possible makespan, mean task completion and worst slowdown (`bound.schedule_bounds`) per seed,
    and whether each of issue 16's targets (2x throughput and mean completion, worst slowdown <= 5x) is within
    them."""
    prefix = scenario.fleet.system_prompt_tokens + scenario.fleet.tool_list_tokens
    bounds = [
        schedule_bounds(programs_for(scenario, profile, seed), prefix, profile, scenario.gpu.replicas, solo)
        for seed, solo in zip(seeds, solos, strict=True)
    ]
    base = summaries.get(BASELINE, [])
    parts = [f"makespan {_cell([b.makespan_s for b in bounds], '{:,.0f}')} s"]
    mean = f"mean task completion {_cell([b.mean_completion_s for b in bounds], '{:,.0f}')} s"
    if base:
        best = [s["task_mean_s"] / b.mean_completion_s for s, b in zip(base, bounds, strict=True)]
        verdict = "feasible" if _median(best) >= 2 else "infeasible"
        mean += f" (at best {_cell(best, '{:.2f}')}x vLLM alone's: the 2x target is {verdict} in this model)"
    parts.append(mean)
    if all(solo for solo in solos):
        worst = [b.max_slowdown for b in bounds]
        verdict = "feasible" if _median(worst) <= 5 else "infeasible"
        parts.append(f"worst slowdown vs alone {_cell(worst, '{:.1f}')}x (the <= 5x target is {verdict})")
    return (
        "Least possible in this engine model, whatever the schedule (`bound.schedule_bounds`: each agent's GPU work "
        "at the bound's rate, shortest-remaining-work-first on each GPU, each task no shorter than alone): "
        + "; ".join(parts)
        + "."
    )


def _bound_note(
    scenario: FleetSimScenario, profile: Profile, seeds: Sequence[int], summaries: dict[str, list[dict[str, float]]]
) -> str:
    """The physical upper bound of throughput (`bound.py`) per seed, beside vLLM alone's."""
    prefix = scenario.fleet.system_prompt_tokens + scenario.fleet.tool_list_tokens
    bounds = [throughput_bound(programs_for(scenario, profile, seed), prefix, profile) for seed in seeds]
    tph = [b.tasks_per_gpu_hour(scenario.fleet.agents) for b in bounds]
    base = [s["tasks_per_gpu_hour"] for s in summaries.get(BASELINE, [])]
    ratio = [t / b for t, b in zip(tph, base, strict=False) if b]
    cell = f"{min(tph):.2f}" if len(tph) == 1 else f"{sorted(tph)[len(tph) // 2]:.2f} [{min(tph):.2f}..{max(tph):.2f}]"
    mid = sorted(ratio)[len(ratio) // 2] if ratio else 0.0
    verdict = f"feasible, at {2 / mid:.0%} of the bound" if mid >= 2 else "infeasible"
    vs = f" = {mid:.2f}x vLLM alone (the 2x target: {verdict})" if ratio else ""
    b = bounds[0]
    return (
        f"Physical upper bound of throughput in this engine model: {cell} tasks per GPU-hour{vs} "
        f"(every new prompt token prefilled once, every output token decoded at the best batch that fits the KV: "
        f"{b.batch} sequences at the mean decoding context of {b.mean_context_tokens:,.0f} tokens; seed {seeds[0]}: "
        f"{b.prefill_tokens:,} prefill + {b.output_tokens:,} output tokens in {b.gpu_s:,.0f} GPU-s)."
    )
