"""GPU profiles for the fleet simulation: the simulator's A100 profiles plus an H200 estimate.

`qwen2.5-coder-32b-h200` is the A100 32B profile (`sidecar/sim/profiles.py`) scaled to an H200 SXM, an ESTIMATE:
- memory: 141 GB HBM3e vs 80 GB (NVIDIA H200 and A100 datasheets, via `reference/calibration.md`); KV room for a
  BF16 32B at 0.9 utilisation ~250K tokens (calibration.md's estimate from 256 KiB per token): 15,625 blocks of 16.
- speed: 4.8 TB/s vs 2.0 TB/s of memory bandwidth (same datasheets), so every per-step and per-token time is divided
  by 2.4 ("single-stream 32B decode on an H200 is ~2.4x an A100's", calibration.md, a bandwidth-scaled estimate).
  Prefill is compute-bound and an H200 has more than 2.4x an A100's compute, so this is conservative for prefill.
- the API server's own latency (`frontend_s`) is CPU time and stays; max_num_seqs and max_num_batched_tokens keep
  the A100 profile's vLLM defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sidecar.sim.profiles import PROFILES, QWEN_32B_A100, Profile, resolve_profile

H200_BANDWIDTH_RATIO = 4.8 / 2.0  # H200 SXM vs A100-80GB SXM memory bandwidth (datasheets, calibration.md)

QWEN_32B_H200 = dataclasses.replace(
    QWEN_32B_A100,
    name="qwen2.5-coder-32b-h200",
    num_gpu_blocks=15625,
    step_overhead_s=QWEN_32B_A100.step_overhead_s / H200_BANDWIDTH_RATIO,
    weights_read_s=QWEN_32B_A100.weights_read_s / H200_BANDWIDTH_RATIO,
    per_seq_s=QWEN_32B_A100.per_seq_s / H200_BANDWIDTH_RATIO,
    kv_read_s_per_token=QWEN_32B_A100.kv_read_s_per_token / H200_BANDWIDTH_RATIO,
    prefill_s_per_token=QWEN_32B_A100.prefill_s_per_token / H200_BANDWIDTH_RATIO,
    decode_compute_s_per_token=QWEN_32B_A100.decode_compute_s_per_token / H200_BANDWIDTH_RATIO,
    sources=("NVIDIA H200 / A100 datasheets via calibration.md: bandwidth-scaled estimate of the A100 profile",),
    targets=(),
)

FLEET_PROFILES: dict[str, Profile] = {**PROFILES, QWEN_32B_H200.name: QWEN_32B_H200}


def fleet_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """A simulator profile by name (the H200 estimate too), with field overrides (as `resolve_profile`)."""
    if name != QWEN_32B_H200.name:
        return resolve_profile(name, overrides)
    if not overrides:
        return QWEN_32B_H200
    return dataclasses.replace(QWEN_32B_H200, **dict(overrides))
