"""The conditions a fleet simulation compares: each is a coordinator configuration plus vLLM's scheduling policy.

The coordinator side is the production composition (`coordinator.app.make_dispatcher` from `SchedulingSettings`),
so a condition here is exactly what an operator would configure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Condition:
    name: str
    title: str
    scheduling: dict[str, Any]  # `[scheduling]` settings for the coordinator
    engine_policy: Literal["fcfs", "priority"] = "fcfs"  # vLLM's --scheduling-policy
    native_priority: bool = False  # send the tier as vLLM's `priority` field
    warming: bool = False  # re-warm an evicted agent's prefix shortly before its long tool run ends
    test_preruns: bool = False  # run the tests after each edit while the model answers
    streaming_tools: bool = False  # start early-safe tool calls as their arguments complete in the stream
    large_replicas: int | None = None  # replicas of the scenario's model (None: the scenario's count)
    small_model: bool = False  # one more replica of the scenario's small model, for the calls routed to it
    spill: bool = False  # routing spills a call over to the other model while its own is saturated (`SpillPolicy`)
    prefetch: bool = False  # exact LLM prefetch: the predicted next call sent on spare capacity (`prefetch.py`)


CONDITIONS: tuple[Condition, ...] = (
    Condition("vllm", "vLLM alone (coordinator passthrough, fcfs)", {"policy": "fcfs"}),
    Condition(
        "vllm-priority",
        "vLLM native priority only (tiers as `priority`, no coordinator queue)",
        {"policy": "fcfs"},
        engine_policy="priority",
        native_priority=True,
    ),
    Condition("pools", "the seed's pools (hot 4, cold 2, warm either)", {"policy": "pools"}),
    Condition(
        "priority", "tiers + aging + LAS, adaptive window (kv's order while its gates are idle)", {"policy": "priority"}
    ),
    Condition(
        "kv-admission",
        "working-set admission alone",
        {"policy": "kv", "kv_admission": True, "kv_program_order": False},
    ),
    Condition(
        "kv-order",
        "program-level order alone (adaptive window)",
        {"policy": "kv", "kv_admission": False, "kv_program_order": True},
    ),
    Condition("kv", "working-set admission + program-level order", {"policy": "kv"}),
    Condition(
        "kv-always",
        "kv with its gates always engaged (kv_engage_ratio = 0)",
        {"policy": "kv", "kv_engage_ratio": 0.0, "kv_release_ratio": 0.0},
    ),
    Condition(
        "kv-release-2x",
        "kv with the gates released at 2x the KV (the first rule) instead of 0.5x",
        {"policy": "kv", "kv_release_ratio": 2.0},
    ),
    Condition(
        "kv-backfill",
        "kv + backfill: a younger call that fits may pass one waiting for room for up to 120 s",
        {"policy": "kv", "kv_backfill_s": 120.0},
    ),
    Condition(
        "kv-progress",
        "kv with the program order by progress: most calls finished first (an estimate of shortest remaining work)",
        {"policy": "kv", "kv_program_rank": "progress"},
    ),
    Condition(
        "kv-tool-hold",
        "kv holding no place through a test run its answer calls, 3 s through any other tool call",
        {"policy": "kv", "kv_long_tool_keep_s": 0.0, "kv_keep_s": 3.0},
    ),
    Condition("kv-warm", "kv + prefix warming before long tool runs end (budgeted)", {"policy": "kv"}, warming=True),
    Condition("kv-prerun", "kv + test pre-runs after each edit", {"policy": "kv"}, test_preruns=True),
    Condition(
        "vllm-prefetch",
        "vLLM alone + exact LLM prefetch (next call predicted from cached tool results, sent on spare capacity)",
        {"policy": "fcfs"},
        prefetch=True,
    ),
    Condition(
        "kv-prefetch",
        "kv + exact LLM prefetch (next call predicted from cached tool results, sent on spare capacity)",
        {"policy": "kv"},
        prefetch=True,
    ),
    Condition("kv-2x32b", "kv on two replicas of the large model (agents pinned)", {"policy": "kv"}, large_replicas=2),
    Condition(
        "kv-32b+7b",
        "kv on one large replica + one small (simple work routed to it, as the route table says)",
        {"policy": "kv"},
        small_model=True,
    ),
    Condition(
        "kv-32b+7b-spill",
        "kv-32b+7b + spill-over: a call goes to the other model while its own is saturated (production routing)",
        {"policy": "kv"},
        small_model=True,
        spill=True,
    ),
    Condition(
        "vllm-32b+7b-spill",
        "the seed's way: routing with spill-over, no coordinator queue (fcfs passthrough) on one 32B + one 7B",
        {"policy": "fcfs"},
        small_model=True,
        spill=True,
    ),
    Condition("vllm-stream", "vLLM alone + streaming tool execution", {"policy": "fcfs"}, streaming_tools=True),
    Condition("kv-stream", "kv + streaming tool execution", {"policy": "kv"}, streaming_tools=True),
)

BY_NAME = {c.name: c for c in CONDITIONS}
BASELINE = "vllm"


def select(names: list[str]) -> list[Condition]:
    """The named conditions in the canonical order, the baseline always included; KeyError for unknown names."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise KeyError(f"unknown condition(s) {', '.join(unknown)} (choose from {', '.join(BY_NAME)})")
    wanted = set(names) | {BASELINE} if names else set(BY_NAME)
    return [c for c in CONDITIONS if c.name in wanted]
