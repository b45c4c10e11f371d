"""Settings of the per-agent sidecar: `[sidecar]`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sidecar.core.toolcache import RACY_WINDOW_NS

DEFAULT_IGNORE_DIRS = [".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"]


class SidecarSettings(BaseModel):
    """`[sidecar]`: the MCP server beside one agent."""

    model_config = ConfigDict(extra="forbid")
    workspace: Path = Path(".")
    # Coordinator base URL for stage events; None disables reporting.
    coordinator: str | None = None
    # Bearer key for the events endpoint when the coordinator runs with a keys file (set it through the
    # environment, GOOSE_SIDECAR_SIDECAR_COORDINATOR_API_KEY, not a flag: command lines are visible to others).
    coordinator_api_key: str | None = None
    # Agent identity for events; else $AGENT_ID, else "anonymous" (as the coordinator names unknown agents).
    agent_id: str | None = None
    test_command: str = "python -m pytest -q"
    test_timeout_s: float = Field(600.0, gt=0)
    # `--http HOST:PORT` serves streamable HTTP at /mcp; None serves stdio.
    http: str | None = None
    # Bearer token every HTTP request but /healthz must carry (`Authorization: Bearer TOKEN`; /peek has its own
    # key). `goose-sidecar mcp --http` refuses to start without one unless `insecure_no_auth` is set: anyone who
    # reaches /mcp can write files and run the tests, i.e. run code in this workspace. Set it through the
    # environment (GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN) or a file (`auth_token_file`), never a flag: command lines
    # are visible to every process on the machine.
    auth_token: str | None = Field(None, repr=False)
    auth_token_file: Path | None = None
    insecure_no_auth: bool = False
    # Extra Host header values accepted over HTTP (containers: the service name); "*" turns the check off.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Command lines `run_command` may run (see sidecar/core/toolcommands.py); empty disables it.
    allow_commands: list[str] = Field(default_factory=list)
    command_timeout_s: float = Field(120.0, gt=0)
    # Directories whose events never invalidate (build and tool caches); `.git` internals always.
    ignore_dirs: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE_DIRS))
    cache_max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    # Files changed this recently are not cached (git's "racily clean" rule: a change within the timestamp
    # granularity of the last check may not show in the file's metadata; git's Documentation/technical/racy-git.txt).
    racy_window_ms: float = Field(RACY_WINDOW_NS / 1_000_000, ge=0)
    read_max_lines: int = Field(2000, ge=1)
    read_max_chars: int = Field(100_000, ge=1000)
    output_max_chars: int = Field(30_000, ge=1000)
    list_max_entries: int = Field(1000, ge=1)
    search_max_results: int = Field(200, ge=1)
    search_backend: Literal["auto", "rg", "python"] = "auto"
    # Every search (ripgrep, or the Python backend's worker process) is killed after this long and answered with
    # an error: a backtracking pattern on Python's `re` (look-around, back-references) may never finish. ripgrep
    # answers a whole repository in well under a second, so a few seconds only cut runaway patterns. The time
    # counts from when the search starts: a Python worker's own start-up is not counted (it has 60 s).
    search_timeout_s: float = Field(3.0, gt=0)
    # Stage events: queue bound (oldest dropped when full) and per-POST timeout.
    event_queue_size: int = Field(256, ge=1)
    event_timeout_s: float = Field(2.0, gt=0)
    # Tool-level speculation (sidecar/toolserver/speculation.py): after an edit, pre-run the tests when the
    # predictor gives run_tests at least this probability (the seed's table gives 0.5 after an edit) and the
    # 1-minute load average per core is below the threshold. Off by default: it spends CPU on guesses.
    speculate_tests: bool = False
    speculate_min_probability: float = Field(0.3, ge=0, le=1)
    speculate_max_load_per_core: float = Field(0.7, gt=0)
    # LLM-level speculation (the coordinator's): over stdio, also serve `POST /peek` (cached tool results, never
    # computed) on 127.0.0.1 at this port (0 picks a free one); None: no peek server. Over HTTP, /peek is
    # always on the HTTP app. Either way its URL (with a random key) goes to the coordinator in every event.
    peek_port: int | None = Field(None, ge=0, le=65535)
    # Streaming tool execution (`early.py`): at most this many tool calls started early (from the answer that
    # asks for them, while it streams, by the coordinator) run at once; 0 refuses every early start.
    early_max_concurrent: int = Field(4, ge=0, le=64)

    @field_validator("http")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8765 (port 0 picks a free one)")
        return value
