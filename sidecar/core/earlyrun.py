"""Which tool calls the sidecar may start early (streaming tool execution, issue 19), and how they are matched.

Early-safe tools are the ones whose result the tool cache validates against the workspace as it is when the
agent asks: `read_file`, `list_dir`, `search` (read-only) and `run_tests` (cached on the exact workspace state,
as the test pre-runs are). Never a mutating tool (`write_file`, `edit_file`, `run_command`), and not the git
tools either: their results depend on `.git`, which the watcher does not see, so nothing could tell that a
result computed early is still the one a fresh call would give.

`normalize(name, arguments)` gives a call's arguments with every parameter present (defaults filled in, as
the MCP server's validation fills them for the real call), or a `Refused` saying why it is not started. It is
strict: an unknown key, a wrong type (a bool or float for an integer, a number for a string) or a value out of
the tool's bounds is refused, never coerced. A refusal only means "not started early"; the agent's real call is
untouched. `call_key` is the identity an early run and the agent's real call are matched by: the tool and its
normalized arguments as canonical JSON. `decide_start` is the whole admission of one call: well formed,
early-safe, not a duplicate of a call already started for this answer, and under the cap of concurrent runs
(a call over the cap is refused, never queued: a late start is worth nothing).

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.core.paths import Refused

_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: type  # str or int
    default: Any = _REQUIRED
    nullable: bool = False
    low: int | None = None
    high: int | None = None


# Mirrors the MCP tool signatures and their bounds in `sidecar/toolserver/mcpserver.py` (`build_mcp`).
EARLY_TOOLS: Mapping[str, tuple[Param, ...]] = {
    "read_file": (
        Param("path", str),
        Param("start_line", int, None, nullable=True, low=1),
        Param("end_line", int, None, nullable=True, low=1),
    ),
    "list_dir": (Param("path", str, "."), Param("depth", int, 2, low=1, high=10)),
    "search": (
        Param("pattern", str),
        Param("path", str, "."),
        Param("glob", str, None, nullable=True),
        Param("max_results", int, None, nullable=True, low=1, high=1000),
    ),
    "run_tests": (Param("target", str, None, nullable=True),),
}


def _check(param: Param, value: Any) -> str | None:
    """Why `value` is not acceptable for `param`, or None."""
    if value is None:
        return None if param.nullable else f"{param.name} may not be null"
    if param.kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        return f"{param.name} must be an integer"
    if param.kind is str and not isinstance(value, str):
        return f"{param.name} must be a string"
    if param.low is not None and value < param.low:
        return f"{param.name} must be at least {param.low}"
    if param.high is not None and value > param.high:
        return f"{param.name} must be at most {param.high}"
    return None


def normalize(name: str, arguments: Mapping[str, Any]) -> dict[str, Any] | Refused:
    """`arguments` with every parameter of tool `name`, or why the call is not started early."""
    params = EARLY_TOOLS.get(name)
    if params is None:
        return Refused(f"{name} is not safe to start early (only {', '.join(EARLY_TOOLS)})")
    known = {p.name for p in params}
    unknown = sorted(str(k) for k in arguments if k not in known)
    if unknown:
        return Refused(f"unknown argument {', '.join(unknown)} for {name}")
    out: dict[str, Any] = {}
    for param in params:
        if param.name not in arguments:
            if param.default is _REQUIRED:
                return Refused(f"{name} needs {param.name}")
            out[param.name] = param.default
            continue
        problem = _check(param, arguments[param.name])
        if problem is not None:
            return Refused(problem)
        out[param.name] = arguments[param.name]
    return out


def call_key(name: str, arguments: Mapping[str, Any]) -> str:
    """The identity of a call: tool name and normalized arguments as canonical JSON."""
    return json.dumps([name, dict(arguments)], sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class EarlyStart:
    """Start this call early: its key and its normalized arguments."""

    key: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NotStarted:
    """Why a call is not started early; `busy` when only the cap stood in the way."""

    reason: str
    busy: bool = False


def decide_start(call: Any, *, started: Collection[str], running: int, max_concurrent: int) -> EarlyStart | NotStarted:
    """Whether to start `call` (`{name, arguments}` as the coordinator sends it) early. `started`: the keys of the
    calls already started for this answer; `running`: early runs in progress; `max_concurrent`: the cap."""
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
        return NotStarted("not a {name, arguments} object")
    arguments = call.get("arguments", {})
    if not isinstance(arguments, Mapping):
        return NotStarted("arguments must be an object")
    normal = normalize(call["name"], arguments)
    if isinstance(normal, Refused):
        return NotStarted(normal.reason)
    key = call_key(call["name"], normal)
    if key in started:
        return NotStarted("already started")
    if running >= max_concurrent:
        return NotStarted(f"{max_concurrent} early runs are in progress", busy=True)
    return EarlyStart(key, call["name"], normal)
