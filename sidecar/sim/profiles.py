"""Latency and capacity profiles of the simulated GPU servers, as data with their sources.

A profile is everything the engine needs to time a step and size the KV cache, plus the published figures
it was calibrated against (`targets`, compared by `goose-sidecar sim --calibrate`). Every number below comes
from a published source (`sidecar.citations`, named in each profile's `sources`) or is derived from one; the
derivation is written next to it. Profiles are selected by name and overridden field by field
(`resolve_profile(name, {"num_gpu_blocks": 4096})`), e.g. from `[sim] profile_overrides`.

Step time model (see `latency.py`): a step costs `step_overhead_s` plus the larger of
- memory time: `weights_read_s` (weights streamed once per step) + `per_seq_s` per scheduled sequence
  + `kv_read_s_per_token` per context token attended to, and
- compute time: `prefill_s_per_token` per prefill token + `decode_compute_s_per_token` per decode token.
So decode is memory-bound at small batches (time grows slowly with batch size) and compute-bound past the
knee `weights_read_s / (decode_compute_s_per_token - per_seq_s)`; prefill is linear in uncached tokens.
`frontend_s` is the API server's own latency (chat template, tokenization) before a request reaches the
scheduler: it adds to time to first token but never occupies the GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar import citations

STAGES = ("explore", "plan", "code_edit", "test_analyze", "docs", "commit_msg")


@dataclass(frozen=True, slots=True)
class Target:
    """A published figure: `metric` is `decode_tok_s` (aggregate output tok/s) or `ttft_s`.

    `batch` concurrent requests with `prompt` tokens each generate `output` tokens (`ignore_eos`).
    The figure is the range [low, high] (low == high for a point figure).
    """

    metric: str
    batch: int
    prompt: int
    output: int
    low: float
    high: float
    source: str

    @property
    def label(self) -> str:
        if self.metric == "ttft_s":
            return f"TTFT, {self.prompt}-token prompt (s)"
        if self.batch == 1:
            return f"single stream tok/s, {self.prompt}-token prompt"
        return f"aggregate tok/s, batch {self.batch}"


@dataclass(frozen=True, slots=True)
class Profile:
    """One model on one GPU behind vLLM V1. Times in seconds, sizes in tokens unless named otherwise."""

    name: str
    served_model_name: str
    max_model_len: int
    num_gpu_blocks: int
    step_overhead_s: float
    weights_read_s: float
    per_seq_s: float
    kv_read_s_per_token: float
    prefill_s_per_token: float
    decode_compute_s_per_token: float
    frontend_s: float
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    # Mean output tokens per workflow stage (before the per-request jitter), see `agent.py`.
    output_tokens: Mapping[str, int] = field(default_factory=dict)
    output_jitter: float = 0.3
    # Share of tool-calling answers asked to carry more than one (independent) call (`agent.parallel_calls`); 0
    # keeps one call per answer. TraceLab's median of 2 tool calls per request (calibration.md) needs more than
    # half of them to; commits, diffs and first steps never do, so 0.65 gives that median on the sample projects.
    parallel_tool_calls: float = 0.0
    sources: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size


# Output lengths per stage. The seed (000_bc7af0ed774b52c4.txt) reports, at 20-30 tok/s on the 32B model,
# "simple 3-5 s, complex 8-15 s, test analysis 5-10 s" per call: ~100, ~250 and ~175 output tokens.
# TraceLab's real sessions average ~523 output tokens per step (calibration.md); plans and docs are the long ones.
_OUTPUT_TOKENS = {
    "explore": 90,
    "plan": 320,
    "code_edit": 260,
    "test_analyze": 180,
    "docs": 420,
    "commit_msg": 60,
}

_QWEN_SPEED = f"{citations.QWEN_SPEED}, 2048 generated tokens"
_GPUSTACK = citations.GPUSTACK
_ROOFLINE = citations.ROOFLINE
_LLMD = citations.LLMD_SIM
_SEED = citations.SEED_REPORT

QWEN_32B_A100 = Profile(
    name="qwen2.5-coder-32b-a100",
    served_model_name="Qwen/Qwen2.5-Coder-32B-Instruct",
    # Qwen2.5-Coder-32B-Instruct config.json: max_position_embeddings 32768.
    max_model_len=32768,
    # ~256 KiB of KV per token (64 layers x 8 KV heads x 128 dims x K,V x 2 bytes); one A100-80GB at 0.9
    # utilisation leaves roughly 30-40K tokens after the 65 GB of weights (calibration.md). 2240 x 16 = 35,840.
    num_gpu_blocks=2240,
    # 22.1 tok/s single stream (Qwen speed benchmark) -> 45.2 ms per decode step at batch 1; vLLM V1's CPU
    # side (scheduling, sampling, detokenizing) is a few ms of that.
    step_overhead_s=0.003,
    weights_read_s=0.042,
    # Batch 8/16/32 at ~170/320/600 tok/s (roofline estimate) -> ~0.22 ms more per sequence per step,
    # plus its KV reads.
    per_seq_s=0.00022,
    # 7B measured 84.3 -> 80.7 tok/s going from a 1- to a 6K-token prompt: ~86 ns per context token for
    # 56 KiB/token of KV; scaled by KV bytes per token (256/56) for the 32B.
    kv_read_s_per_token=3.9e-7,
    # "prefill-bound ~2.5K tok/s at 2K prompts" (GPUStack) -> 0.4 ms per prompt token.
    prefill_s_per_token=0.0004,
    # Peak ~1,950 output tok/s (GPUStack) at max_num_seqs=256 -> ~0.5 ms per decode token once compute-bound.
    decode_compute_s_per_token=0.0005,
    # llm-d-inference-sim's prefill overhead (25-40 ms) stands for the API server's own latency.
    frontend_s=0.03,
    output_tokens=_OUTPUT_TOKENS,
    sources=(_QWEN_SPEED, _GPUSTACK, _ROOFLINE, _LLMD, _SEED),
    targets=(
        Target("decode_tok_s", 1, 1, 2048, 22.1, 22.1, _QWEN_SPEED),
        Target("decode_tok_s", 1, 1, 2048, 20.0, 30.0, _SEED),
        Target("decode_tok_s", 8, 1, 512, 170.0, 170.0, _ROOFLINE),
        Target("decode_tok_s", 16, 1, 512, 320.0, 320.0, _ROOFLINE),
        Target("decode_tok_s", 32, 1, 512, 600.0, 600.0, _ROOFLINE),
        Target("decode_tok_s", 256, 1, 64, 1950.0, 1950.0, _GPUSTACK + " (peak)"),
        # llm-d's 30-34B profile is for TP=2 and conflicts with GPUStack's measured prefill rate, which the
        # profile follows; shown for reference (a 280 ms TTFT at 256 tokens would need ~1K tok/s prefill).
        Target("ttft_s", 1, 256, 1, 0.280, 0.450, _LLMD + " (30-34B, TP=2; conflicts with GPUStack)"),
        Target("ttft_s", 1, 2048, 1, 2048 / 2500, 2048 / 2500, _GPUSTACK + ": 2048 tokens at ~2.5K tok/s"),
        Target("ttft_s", 1, 8192, 1, 8192 / 2500, 8192 / 2500, _GPUSTACK + ": 8192 tokens at ~2.5K tok/s"),
    ),
)

QWEN_7B_A100 = Profile(
    name="qwen2.5-coder-7b-a100",
    served_model_name="Qwen/Qwen2.5-Coder-7B-Instruct",
    max_model_len=32768,
    # ~56 KiB of KV per token (28 layers x 4 KV heads x 128 x K,V x 2 bytes): "several hundred thousand
    # tokens" on one A100-80GB (calibration.md). 32768 x 16 = 524,288.
    num_gpu_blocks=32768,
    # 84.3 tok/s single stream (Qwen speed benchmark) -> 11.9 ms per step at batch 1.
    step_overhead_s=0.0015,
    weights_read_s=0.0100,
    # Batch 8/16/32 at ~700/1,300/2,400 tok/s (roofline estimate).
    per_seq_s=0.00003,
    # 84.3 -> 80.7 tok/s from a 1- to a 6K-token prompt (Qwen speed benchmark).
    kv_read_s_per_token=8.6e-8,
    # llm-d-inference-sim, 7-8B on A100: prefill 25-40 ms + 0.30-0.55 ms/token (the low end: the 32B
    # measures 0.4 ms/token, and a 7B is not slower than a 32B at prefill).
    prefill_s_per_token=0.0003,
    # The 32B's 0.5 ms per decode token scaled by parameter count (7.6B / 32.8B).
    decode_compute_s_per_token=0.000116,
    frontend_s=0.03,
    output_tokens=_OUTPUT_TOKENS,
    sources=(_QWEN_SPEED, _ROOFLINE, _LLMD),
    targets=(
        Target("decode_tok_s", 1, 1, 2048, 84.3, 84.3, _QWEN_SPEED),
        Target("decode_tok_s", 1, 6144, 2048, 80.7, 80.7, _QWEN_SPEED),
        Target("decode_tok_s", 8, 1, 512, 700.0, 700.0, _ROOFLINE),
        Target("decode_tok_s", 16, 1, 512, 1300.0, 1300.0, _ROOFLINE),
        Target("decode_tok_s", 32, 1, 512, 2400.0, 2400.0, _ROOFLINE),
        Target("ttft_s", 1, 256, 1, 0.100, 0.180, _LLMD + " (7-8B on A100, 256-token prompt)"),
        Target(
            "ttft_s",
            1,
            2048,
            1,
            0.025 + 0.30e-3 * 2048,
            0.040 + 0.55e-3 * 2048,
            _LLMD + ": 25-40 ms + 0.30-0.55 ms/tok",
        ),
        Target(
            "ttft_s",
            1,
            8192,
            1,
            0.025 + 0.30e-3 * 8192,
            0.040 + 0.55e-3 * 8192,
            _LLMD + ": 25-40 ms + 0.30-0.55 ms/tok",
        ),
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (QWEN_32B_A100, QWEN_7B_A100)}

_FIXED = {"name", "sources", "targets"}


class ProfileError(ValueError):
    """An unknown profile name or an override that names no field or has the wrong type."""


def resolve_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile with `overrides` applied field by field; every bad override is reported at once."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r} (known: {', '.join(sorted(PROFILES))})") from None
    if not overrides:
        return base
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in overrides.items():
        if key not in fields or key in _FIXED:
            problems.append(f"{key}: not an overridable profile field")
            continue
        current = getattr(base, key)
        try:
            changes[key] = _coerce(value, current)
        except (TypeError, ValueError) as exc:
            problems.append(f"{key}: {exc}")
    if problems:
        raise ProfileError(f"profile {name}: " + "; ".join(problems))
    profile = dataclasses.replace(base, **changes)
    _validate(profile)
    return profile


def _coerce(value: Any, current: Any) -> Any:
    if isinstance(current, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(current, int):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, str):
        return str(value)
    if isinstance(current, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {value!r}")
        return {**current, **{str(k): int(v) for k, v in value.items()}}
    raise TypeError(f"cannot override a {type(current).__name__}")


def _validate(profile: Profile) -> None:
    problems = []
    for name in ("num_gpu_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len"):
        if getattr(profile, name) < 1:
            problems.append(f"{name} must be >= 1")
    for f in dataclasses.fields(profile):
        value = getattr(profile, f.name)
        if f.name.endswith(("_s", "_per_token")) and value < 0:
            problems.append(f"{f.name} must be >= 0")
    if not 0 <= profile.parallel_tool_calls <= 1:
        problems.append("parallel_tool_calls must be between 0 and 1")
    if problems:
        raise ProfileError(f"profile {profile.name}: " + "; ".join(problems))
