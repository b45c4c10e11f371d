"""Settings of the coordinator: `[coordinator]`, `[models.<alias>]`, `[scheduling]`, `[routing]`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CoordinatorSettings(BaseModel):
    """`[coordinator]`: the HTTP server and its one shared upstream client."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = Field(8080, ge=0, le=65535)
    # Largest request body accepted (413 above). Agent contexts reach ~150K tokens (~600 KB of JSON).
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # Upstream timeouts, seconds. Read covers the gap between two streamed chunks, not the whole call;
    # 600 s matches Goose's own OPENAI_TIMEOUT default.
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0)
    write_timeout_s: float = Field(60.0, gt=0)
    pool_timeout_s: float = Field(30.0, gt=0)
    max_connections: int = Field(1024, ge=1)
    max_keepalive_connections: int = Field(256, ge=0)
    keepalive_expiry_s: float = Field(30.0, ge=0)
    # Optional API keys: a file of `key agent-id` lines (or JSON object key -> agent id).
    keys_file: Path | None = None
    # Optional bearer token required on /status, /metrics and /dashboard.
    admin_token: str | None = None
    # Log prompt and completion content (off by default; for debugging only).
    log_content: bool = False


class ModelUpstream(BaseModel):
    """`[models.<alias>]`: one model served by one or more OpenAI-compatible replicas (vLLM, the simulator)."""

    model_config = ConfigDict(extra="forbid")
    # The model name the upstream serves; discovered from its /v1/models when omitted.
    served_name: str | None = None
    replicas: list[str] = Field(min_length=1)
    # Sent on every call and metrics scrape (e.g. Modal-Key / Modal-Secret for Modal proxy auth).
    headers: dict[str, str] = Field(default_factory=dict)
    api_key: str | None = None

    @field_validator("replicas")
    @classmethod
    def _urls(cls, replicas: list[str]) -> list[str]:
        cleaned = []
        for url in replicas:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"replica URL {url!r} must start with http:// or https://")
            cleaned.append(url.rstrip("/"))
        return cleaned


class SchedulingSettings(BaseModel):
    """`[scheduling]`: how queued calls are ordered and admitted upstream."""

    model_config = ConfigDict(extra="forbid")
    policy: Literal["fcfs", "pools", "priority"] = "priority"


class RoutingSettings(BaseModel):
    """`[routing]`: which model serves which kind of work."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
