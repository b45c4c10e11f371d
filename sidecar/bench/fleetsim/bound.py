"""The physical upper bound of a fleet's throughput in the engine model: what no scheduler can beat.

A lower bound on the GPU time of one replica's share of the fleet, from the programs alone:
- prefill once: every prompt token that is new to the engine computed exactly once (each recipe's shared prefix
  once, then every agent's task text and tool results), at the profile's prefill rate (chunked prefill is
  compute-bound, `sim.latency.step_seconds`);
- decode at the best batch: every output token decoded in a batch of `B` sequences, where `B` is the most agents
  whose mean decoding context fits the KV capacity together (the recipe's shared prefix held once), capped at
  `max_num_seqs`, each step timed by the engine's own `step_seconds`.
Tool time is free (other agents run meanwhile) and nothing is ever evicted or preempted. The bound on throughput
is the fleet's tasks over that time; the real figure is below it because batches of large contexts are smaller
than the mean, contexts are re-prefilled after evictions, and the GPU idles while the working set waits on tools.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sidecar.bench.fleetsim.program import Program
from sidecar.sim.latency import StepShape, step_seconds
from sidecar.sim.profiles import Profile


@dataclass(frozen=True)
class ThroughputBound:
    prefill_tokens: int  # prompt tokens new to the engine, each computed once
    output_tokens: int
    mean_context_tokens: float  # decode-token-weighted context while decoding
    batch: int  # sequences per decode step that fit the KV
    gpu_s: float  # the least GPU time for the whole fleet (all replicas together)

    def tasks_per_gpu_hour(self, tasks: int) -> float:
        return tasks / (self.gpu_s / 3600) if self.gpu_s else 0.0


def throughput_bound(programs: Sequence[Program], shared_prefix_tokens: int, profile: Profile) -> ThroughputBound:
    """The bound for `programs` on replicas of `profile` (module docstring)."""
    recipes = {p.recipe for p in programs}
    prefill = shared_prefix_tokens * len(recipes)
    outputs = 0
    weighted = 0.0
    for program in programs:
        context = shared_prefix_tokens + program.task_tokens
        prefill += program.task_tokens
        for turn in program.turns:
            outputs += turn.output_tokens
            weighted += turn.output_tokens * (context + turn.output_tokens / 2)
            context += turn.output_tokens + turn.result_tokens
            prefill += turn.result_tokens
    mean_context = weighted / outputs if outputs else 0.0
    own = max(mean_context - shared_prefix_tokens, 1.0)
    batch = int((profile.kv_capacity_tokens - shared_prefix_tokens) // own)
    batch = min(max(batch, 1), profile.max_num_seqs)
    decode_step = step_seconds(profile, StepShape(batch, 0, batch, round(batch * mean_context)))
    prefill_s = prefill * profile.prefill_s_per_token
    return ThroughputBound(prefill, outputs, mean_context, batch, prefill_s + outputs * decode_step / batch)


@dataclass(frozen=True)
class ScheduleBounds:
    """What no schedule can beat in this engine model (`schedule_bounds`), for the whole fleet."""

    makespan_s: float  # the last task cannot end sooner (on the fleet's clock, as `FleetRun.makespan_s`)
    mean_completion_s: float  # the least possible mean task completion time
    max_slowdown: float  # the least possible worst agent's completion / its time alone (NaN without solo times)


def agent_work_s(program: Program, bound: ThroughputBound, profile: Profile) -> float:
    """One agent's GPU time at the bound's rate: its own new prompt tokens (task text and tool results; the shared
    prefix is not charged to anyone, which keeps this a lower bound) prefilled once, its output tokens decoded in
    a batch of `bound.batch` at the bound's mean decoding context."""
    decode_step = step_seconds(
        profile, StepShape(bound.batch, 0, bound.batch, round(bound.batch * bound.mean_context_tokens))
    )
    prefill = program.task_tokens + sum(t.result_tokens for t in program.turns)
    outputs = sum(t.output_tokens for t in program.turns)
    return prefill * profile.prefill_s_per_token + outputs * decode_step / bound.batch


def _srpt_flows(jobs: list[tuple[float, float]]) -> list[float]:
    """Flow times (completion - release) of preemptive shortest-remaining-work-first on one server of rate 1, for
    `jobs` = (release, work): the schedule that minimises their total completion time (Schrage, 1968)."""
    pending = sorted(range(len(jobs)), key=lambda j: (jobs[j][0], j))
    remaining = {j: jobs[j][1] for j in range(len(jobs))}
    flows = [0.0] * len(jobs)
    ready: list[tuple[float, int]] = []
    now, i = 0.0, 0
    while i < len(pending) or ready:
        if not ready:
            now = max(now, jobs[pending[i]][0])
        while i < len(pending) and jobs[pending[i]][0] <= now:
            heapq.heappush(ready, (remaining[pending[i]], pending[i]))
            i += 1
        work, job = heapq.heappop(ready)
        next_release = jobs[pending[i]][0] if i < len(pending) else math.inf
        if now + work <= next_release:
            now += work
            flows[job] = now - jobs[job][0]
        else:
            remaining[job] = work - (next_release - now)
            now = next_release
            heapq.heappush(ready, (remaining[job], job))
    return flows


def schedule_bounds(
    programs: Sequence[Program],
    shared_prefix_tokens: int,
    profile: Profile,
    replicas: int,
    solo: Mapping[str, float] | None,
) -> ScheduleBounds:
    """Lower bounds on the makespan, the mean task completion and the worst slowdown of any schedule, in the
    engine model of `throughput_bound`. Agents are pinned to `replicas` round-robin (as the fleet pins them), so
    each replica is bounded on its own agents; each agent's GPU work is `agent_work_s`, and `solo` (agent -> its
    task time alone, when known) bounds each task from below as well.

    - makespan: a replica needs at least its agents' throughput-bound GPU time after its first agent starts, no
      work-conserving GPU doing their work as it arrives ends sooner, and no agent ends before its start plus its
      time alone;
    - mean completion: on one GPU of rate 1 doing that work, preemptive shortest-remaining-work-first gives the
      least total completion time (batching is a way of sharing that rate, so it cannot do better); when every
      agent starts at once the k-th task to end also ends no sooner than the k-th shortest time alone, so the
      bound is the sum over k of the larger of the two; with staggered starts, the larger of the two sums;
    - worst slowdown: for the k agents with the shortest times alone (any k), the last of them to end needs their
      combined work after the first of them starts (charged at the full batch's rate, which only loosens the
      bound), and its time alone is at most the k-th shortest: max over k of (that work - the spread of their
      starts) / the k-th shortest time alone, and at least 1.
    """
    makespan = mean_total = 0.0
    worst = 1.0 if solo else math.nan
    for r in range(replicas):
        mine = [p for i, p in enumerate(programs) if i % replicas == r]
        if not mine:
            continue
        bound = throughput_bound(mine, shared_prefix_tokens, profile)
        work = {p.agent: agent_work_s(p, bound, profile) for p in mine}
        start = min(p.start_s for p in mine)
        raw = _srpt_flows([(p.start_s, work[p.agent]) for p in mine])
        makespan = max(makespan, start + bound.gpu_s, *(p.start_s + f for p, f in zip(mine, raw, strict=True)))
        if solo:
            makespan = max(makespan, *(p.start_s + solo.get(p.agent, 0.0) for p in mine))
        flows = sorted(raw)
        alone = sorted(solo.get(p.agent, 0.0) for p in mine) if solo else [0.0] * len(mine)
        if all(p.start_s == start for p in mine):
            mean_total += sum(max(f, s) for f, s in zip(flows, alone, strict=True))
        else:
            mean_total += max(sum(flows), sum(alone))
        if solo:
            by_solo = sorted(mine, key=lambda p: (solo.get(p.agent, 0.0), p.agent))
            total = 0.0
            earliest, latest = math.inf, -math.inf
            for p in by_solo:
                earliest, latest = min(earliest, p.start_s), max(latest, p.start_s)
                total += work[p.agent]
                own = solo.get(p.agent, 0.0)
                if own > 0:
                    worst = max(worst, (total - (latest - earliest)) / own)
    return ScheduleBounds(makespan, mean_total / len(programs) if programs else 0.0, worst)
