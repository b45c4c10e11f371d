"""Settings of the simulator: `[sim]`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SimSettings(BaseModel):
    """`[sim]`: the simulator run on its own (`goose-sidecar sim`) or embedded by `up`."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    profile: str = "qwen2.5-coder-32b-a100"
    # Profile name -> {field: value}, e.g. {"qwen2.5-coder-32b-a100": {"num_gpu_blocks": 1024}}.
    profile_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Names served by a standalone sim (first one reported); empty = the profile's model name.
    served_model_names: list[str] = Field(default_factory=list)
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    seed: int = 0
    # Simulated seconds per real second (>1 runs faster than real time).
    time_scale: float = Field(1.0, gt=0)
    # The synthetic agent ends its episode with a final text after this many tool calls.
    max_agent_steps: int = Field(40, ge=1)
    # Optional bearer token for /v1/* (like vLLM's --api-key; /health and /metrics stay open).
    api_key: str | None = None
    # Fault injection: the chance per request of each fault (a request's `X-Sim-Fault` header forces one).
    fault_500_rate: float = Field(0.0, ge=0, le=1)
    fault_503_rate: float = Field(0.0, ge=0, le=1)
    fault_error_frame_rate: float = Field(0.0, ge=0, le=1)
    fault_drop_rate: float = Field(0.0, ge=0, le=1)
    fault_stall_rate: float = Field(0.0, ge=0, le=1)
    # How long a stalled response stops sending, in real seconds.
    fault_stall_s: float = Field(30.0, ge=0)
