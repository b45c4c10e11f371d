"""Settings of the per-agent sidecar: `[sidecar]`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SidecarSettings(BaseModel):
    """`[sidecar]`: the MCP server beside one agent."""

    model_config = ConfigDict(extra="forbid")
    workspace: Path = Path(".")
    # Coordinator base URL for stage events; None disables reporting.
    coordinator: str | None = None
    agent_id: str | None = None
    test_command: str = "python -m pytest -q"
    test_timeout_s: float = Field(600.0, gt=0)
