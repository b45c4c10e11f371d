"""Settings of the simulator: `[sim]`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SimSettings(BaseModel):
    """`[sim]`: the simulator run on its own (`goose-sidecar sim`) or embedded by `up`."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    profile: str = "qwen2.5-coder-32b-a100"
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    seed: int = 0
    # Simulated seconds per real second (>1 runs faster than real time).
    time_scale: float = Field(1.0, gt=0)
