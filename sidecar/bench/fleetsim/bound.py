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

from collections.abc import Sequence
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
