"""Step time of one engine step from the batch it runs (the latency model behind the engine).

Contract: `step_seconds` is a pure function of the profile and the step's shape, positive for any non-empty
step, non-decreasing in every count. See `profiles.py` for the model and where each constant comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.sim.profiles import Profile


@dataclass(frozen=True, slots=True)
class StepShape:
    """What one step computes: sequences scheduled, their new tokens, and the context they attend to."""

    num_seqs: int
    prefill_tokens: int  # tokens of prompts (or recomputed outputs) computed in this step
    decode_tokens: int  # one per sequence that is generating
    context_tokens: int  # sum over sequences of the tokens in KV after this step (attention reads)


def step_seconds(profile: Profile, shape: StepShape) -> float:
    """Overhead plus the larger of memory time and compute time (memory-bound, then compute-bound)."""
    memory = (
        profile.weights_read_s + profile.per_seq_s * shape.num_seqs + profile.kv_read_s_per_token * shape.context_tokens
    )
    compute = (
        profile.prefill_s_per_token * shape.prefill_tokens + profile.decode_compute_s_per_token * shape.decode_tokens
    )
    return profile.step_overhead_s + max(memory, compute)
