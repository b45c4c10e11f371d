"""Speculation decisions: when to pre-run, when two chat requests are the same request, a wasted-token budget.

Speculation here never changes an answer (DESIGN.md "Policies"): a speculative result is served only for
exactly the input it was computed from. For tool runs that is the workspace generation (the sidecar's cache
checks it); for LLM calls it is `canonical_request`: the request body as canonical JSON (sorted keys, no
whitespace), with the fields that cannot change the answer left out (`TRANSPORT_FIELDS`: streaming and our
priority hints) and `None` values dropped (an OpenAI-compatible server, vLLM included, parses an explicit
null exactly as an absent field). Everything else, unknown fields included, must match byte for byte.

Pure: callers pass load averages, probabilities, capacity verdicts and `now`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Fields that change how an answer is delivered or scheduled, never what it says.
TRANSPORT_FIELDS = frozenset({"stream", "stream_options", "priority"})


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_nulls(v) for v in value]
    return value


def canonical_request(body: Mapping[str, Any]) -> str:
    """The canonical JSON of a chat-completions body, as compared for speculation (see the module docstring)."""
    kept = {k: v for k, v in body.items() if k not in TRANSPORT_FIELDS}
    return json.dumps(_drop_nulls(kept), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def same_request(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when `a` and `b` ask the model exactly the same thing (model, messages, tools, sampling...)."""
    return canonical_request(a) == canonical_request(b)


def cpu_idle(load1: float, cpus: int, max_load_per_core: float) -> bool:
    """True when the 1-minute load average per core is below `max_load_per_core` (e.g. 0.5)."""
    return cpus > 0 and load1 / cpus < max_load_per_core


def should_prerun_tests(
    p_tests: float, min_probability: float, *, idle: bool, running: bool, already_known: bool
) -> bool:
    """Pre-run the tests: likely next (p >= min_probability), idle CPU, none running, result not already cached."""
    return idle and not running and not already_known and p_tests >= min_probability


@dataclass
class TokenBudget:
    """Wasted speculative tokens allowed per sliding window (default one minute); `limit` 0 forbids all."""

    limit: int
    window_s: float = 60.0
    spent: deque[tuple[float, int]] = field(default_factory=deque)

    def used(self, now: float) -> int:
        while self.spent and self.spent[0][0] <= now - self.window_s:
            self.spent.popleft()
        return sum(n for _, n in self.spent)

    def allows(self, now: float, tokens: int = 0) -> bool:
        """Room for `tokens` more (0: any room left at all)."""
        used = self.used(now)
        return used < self.limit and used + tokens <= self.limit

    def spend(self, now: float, tokens: int) -> None:
        if tokens > 0:
            self.spent.append((now, tokens))


def should_speculate_llm(*, enabled: bool, spare_capacity: bool, waiting_real: int, budget_ok: bool) -> bool:
    """Send a speculative call: enabled, the upstream has spare capacity (`admission.has_spare_capacity`),
    no real call is waiting for a slot, and the wasted-token budget has room."""
    return enabled and spare_capacity and waiting_real == 0 and budget_ok


# What each sidecar reports of its tool-level speculation on every tool event (cumulative since it started):
# test pre-runs by outcome, the agent time they saved, its next-action predictor's score, and the tool calls
# it started early while their answer streamed (streaming tool execution, `toolserver/early.py`).
SIDECAR_COUNTERS = (
    "prerun_started",
    "prerun_used",
    "prerun_cancelled",
    "prerun_discarded",
    "prerun_unused",
    "prerun_saved_s",
    "predictions",
    "top1",
    "top3",
    "early_started",
    "early_used",
    "early_wasted",
    "early_saved_s",
)


def sidecar_counters(raw: Mapping[str, Any] | None) -> dict[str, float]:
    """The known, finite, non-negative counters of one report; anything else is left out."""
    out: dict[str, float] = {}
    for name in SIDECAR_COUNTERS:
        value = (raw or {}).get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e15:
            out[name] = float(value)
    return out


def fleet_counters(reports: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Sum the latest report of every sidecar: pre-run outcomes, prediction accuracy (top-1 / top-3) and
    early tool runs (started, used, wasted, agent time saved)."""
    total = {name: sum(r.get(name, 0.0) for r in reports.values()) for name in SIDECAR_COUNTERS}
    n = total["predictions"]
    return {
        "sidecars": len(reports),
        "test_runs": {
            "started": int(total["prerun_started"]),
            "used": int(total["prerun_used"]),
            "cancelled": int(total["prerun_cancelled"]),
            "discarded": int(total["prerun_discarded"]),
            "unused": int(total["prerun_unused"]),
            "time_saved_s": round(total["prerun_saved_s"], 3),
        },
        "prediction": {
            "predictions": int(n),
            "top1": int(total["top1"]),
            "top3": int(total["top3"]),
            "top1_rate": total["top1"] / n if n else None,
            "top3_rate": total["top3"] / n if n else None,
        },
        "early_runs": {
            "started": int(total["early_started"]),
            "used": int(total["early_used"]),
            "wasted": int(total["early_wasted"]),
            "time_saved_s": round(total["early_saved_s"], 3),
        },
    }
