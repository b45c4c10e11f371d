"""The wire contracts the sidecar, the coordinator and their clients share, each defined here once.

- Header names: what a client sends the coordinator (`AGENT_HEADER`, `PRIORITY_HEADER`, the session headers),
  what the coordinator answers with (`TIER_HEADER`, ... `SPECULATIVE_HEADER`), and what it sends upstream.
- Tool names: the sidecar's MCP tools (`ToolName`) and those whose results it caches (`CACHEABLE_TOOLS`).
- The tool event: `POST /v1/agents/{agent_id}/events`, one tool call as the sidecar reports it (never file
  contents). The sidecar builds it with `ToolEvent(...).to_wire()`; the coordinator reads it with
  `parse_tool_event(raw)`, which reports every problem at once (`EventError`). Fields on the wire:

      session_id   str | null, at most 256 characters (Goose's session id)
      seq          int >= 0, per session, from 1
      tool         str, 1 to 128 characters (a `ToolName` from the real sidecar; any name is accepted)
      ok           bool
      exit_code    int | null (sent only when the tool has one)
      paths        list of str, at most 256 (the sidecar sends at most 20)
      command      str | null, at most 4096 characters (only `run_command`)
      duration_ms  number >= 0
      ts           number | null (wall-clock seconds)
      cached       bool | null (the sidecar's tool cache answered; `cache_hit` is read as the same field)
      peek_url     str | null (where the sidecar answers `POST /peek`; checked where it is used, not here)
      speculation  object | null, at most 32 keys (the sidecar's cumulative counters)

  Unknown fields are ignored, so either side can add one before the other reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# --- headers a client sends the coordinator -----------------------------------------------------------------
AGENT_HEADER = "x-agent-id"
PRIORITY_HEADER = "x-priority"
REQUEST_ID_HEADER = "x-request-id"
SESSION_HEADER = "agent-session-id"  # Goose's, on every call (and `_meta` key of every MCP tool call)
LEGACY_SESSION_HEADER = "goose-session-id"

# --- headers the coordinator answers with (bodies stay untouched) ---------------------------------------------
TIER_HEADER = "x-goose-sidecar-tier"
STAGE_HEADER = "x-goose-sidecar-stage"
MODEL_HEADER = "x-goose-sidecar-model"  # the model alias the coordinator chose
QUEUE_MS_HEADER = "x-goose-sidecar-queue-ms"
SPECULATIVE_HEADER = "x-goose-sidecar-speculative"  # "1": answered from a speculative call

# --- headers the coordinator sends upstream on its own authority ----------------------------------------------
MODAL_SESSION_HEADER = "Modal-Session-ID"  # Modal routes a session to one replica (best effort)
VLLM_SESSION_HEADER = "X-Session-ID"  # vLLM 0.33+'s session id


class ToolName(StrEnum):
    """The sidecar's MCP tools, as Goose calls them (`<extension>__<name>`)."""

    READ_FILE = "read_file"
    LIST_DIR = "list_dir"
    SEARCH = "search"
    WRITE_FILE = "write_file"
    EDIT_FILE = "edit_file"
    RUN_TESTS = "run_tests"
    RUN_COMMAND = "run_command"
    GIT_STATUS = "git_status"
    GIT_DIFF = "git_diff"


# The tools whose results the sidecar caches: the denominator of the tool-cache hit rate.
CACHEABLE_TOOLS = frozenset({ToolName.READ_FILE, ToolName.LIST_DIR, ToolName.SEARCH, ToolName.RUN_TESTS})

MAX_SESSION_ID = 256
MAX_TOOL_NAME = 128
MAX_PATHS = 256
MAX_COMMAND = 4096
MAX_SPECULATION_KEYS = 32
SENT_PATHS = 20  # the sidecar reports at most this many of a call's paths


@dataclass(frozen=True)
class ToolEvent:
    """One tool call as the sidecar reports it; see the module docstring for the wire fields."""

    seq: int
    tool: str
    ok: bool
    session_id: str | None = None
    exit_code: int | None = None
    paths: tuple[str, ...] = ()
    command: str | None = None
    duration_ms: float = 0.0
    ts: float | None = None
    cached: bool | None = None
    peek_url: str | None = None
    speculation: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object the sidecar POSTs: every field, except the optional ones that are None."""
        event: dict[str, Any] = {
            "session_id": self.session_id,
            "seq": self.seq,
            "tool": self.tool,
            "ok": self.ok,
            "paths": list(self.paths[:SENT_PATHS]),
            "duration_ms": round(self.duration_ms, 3),
            "ts": self.ts,
            "cached": self.cached,
        }
        optional = {"exit_code": self.exit_code, "command": self.command, "peek_url": self.peek_url}
        event.update({name: value for name, value in optional.items() if value is not None})
        if self.speculation is not None:
            event["speculation"] = dict(self.speculation)
        return event


class EventError(ValueError):
    """A tool event that does not follow the contract; `problems` lists every one ("field: what is wrong")."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_tool_event(raw: bytes | str) -> ToolEvent:
    """The event in `raw` (JSON). Raises EventError naming every bad field (not JSON, not an object, a missing
    or wrongly typed field, a limit exceeded). Unknown fields are ignored."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise EventError(["body: not valid JSON"]) from None
    if not isinstance(data, dict):
        raise EventError(["body: must be a JSON object"])
    problems: list[str] = []
    fields = {name: _field(data, name, rule, problems) for name, rule in _RULES.items()}
    if problems:
        raise EventError(problems)
    fields["paths"] = tuple(fields["paths"] or ())
    fields["duration_ms"] = fields["duration_ms"] or 0.0
    return ToolEvent(**fields)


_MISSING = object()
_Rule = tuple[bool, Callable[[object], str | None]]  # (required, check: None when fine, else the problem)


def _field(data: Mapping[str, Any], name: str, rule: _Rule, problems: list[str]) -> Any:
    required, check = rule
    value = data.get(name, _MISSING)
    if value is _MISSING and name == "cached":
        value = data.get("cache_hit", _MISSING)
    if value is _MISSING:
        if required:
            problems.append(f"{name}: field required")
        return None
    problem = check(value)
    if problem is not None:
        problems.append(f"{name}: {problem}")
        return None
    return float(value) if name in ("duration_ms", "ts") and value is not None else value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(float(value))  # type: ignore[arg-type]


def _text(limit: int, *, nullable: bool = True, minimum: int = 0) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            return "must be a string"
        if not minimum <= len(value) <= limit:
            return f"must have {minimum} to {limit} characters"
        return None

    return check


def _int(*, nullable: bool, minimum: int | None = None) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if value is None and nullable:
            return None
        if not _is_int(value):
            return "must be an integer"
        return None if minimum is None or value >= minimum else f"must be >= {minimum}"  # type: ignore[operator]

    return check


def _number(*, nullable: bool, minimum: float | None = None) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if value is None and nullable:
            return None
        if not _is_number(value):
            return "must be a finite number"
        return None if minimum is None or value >= minimum else f"must be >= {minimum}"  # type: ignore[operator]

    return check


def _bool(*, nullable: bool) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if isinstance(value, bool) or (value is None and nullable) else "must be true or false"

    return check


def _paths(value: object) -> str | None:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        return "must be a list of strings"
    return None if len(value) <= MAX_PATHS else f"must have at most {MAX_PATHS} items"


def _object(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "must be an object"
    return None if len(value) <= MAX_SPECULATION_KEYS else f"must have at most {MAX_SPECULATION_KEYS} keys"


def _any_text(value: object) -> str | None:
    return None if value is None or isinstance(value, str) else "must be a string"


_RULES: dict[str, _Rule] = {
    "seq": (True, _int(nullable=False, minimum=0)),
    "tool": (True, _text(MAX_TOOL_NAME, nullable=False, minimum=1)),
    "ok": (True, _bool(nullable=False)),
    "session_id": (False, _text(MAX_SESSION_ID)),
    "exit_code": (False, _int(nullable=True)),
    "paths": (False, _paths),
    "command": (False, _text(MAX_COMMAND)),
    "duration_ms": (False, _number(nullable=False, minimum=0.0)),
    "ts": (False, _number(nullable=True)),
    "cached": (False, _bool(nullable=True)),
    "peek_url": (False, _any_text),
    "speculation": (False, _object),
}
