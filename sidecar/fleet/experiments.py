"""The benchmark's experiments: each is a set of paired conditions, the rows it reports, and the seed's figures.

A `Condition` is the baseline with a few switches changed: coordinator settings (dotted config keys) and fleet
options. Conditions are shared between experiments (the baseline serves several), so a bench runs each
distinct condition once per seed and every comparison is paired by seed: same projects, same simulator seed.

Baseline: the coordinator with `priority` scheduling, routing off (every call on the 32B model, which agents
ask for as `large`), no batching window, the sidecars' tool cache on, no prefetch, full context.

The seed's figures are quoted from `seed/000_bc7af0ed774b52c4.txt` (sections named in `Experiment.seed_section`);
its conditions map to ours as the row labels say. Speculation has two hooks: the sidecar's tool-level test
pre-runs (`[sidecar] speculate_tests`, passed to each sidecar) and the coordinator's LLM-level speculation
(`SPECULATION_KEY`); each joins the `speculation` condition and "everything on" as soon as this build has
its setting, with no other change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SPECULATION_KEY = "speculation.enabled"
STREAM_TOOLS_KEY = "speculation.stream_tools"

BASELINE_CONFIG: Mapping[str, Any] = {
    "scheduling.policy": "priority",
    "routing.enabled": False,
    "scheduling.batch_window_ms": 0.0,
}
BASELINE_FLEET: Mapping[str, Any] = {
    "model": "large",
    "tool_cache": True,
    "prefetch": False,
    "compress": False,
    "speculate_tests": False,
    "peek": False,
}
# Fleet options that need a setting in this build (option -> configuration key).
FLEET_REQUIRES: Mapping[str, str] = {"speculate_tests": "sidecar.speculate_tests", "peek": "sidecar.peek_port"}
# Settings that join a condition only when this build of the coordinator has them.
OPTIONAL_BASELINE: Mapping[str, Any] = {SPECULATION_KEY: False}


@dataclass(frozen=True)
class Condition:
    name: str
    label: str
    config: Mapping[str, Any] = field(default_factory=dict)
    fleet: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One table row: a metric of `metrics.summarize`, its unit, and the seed's figure per column (text)."""

    label: str
    metric: str
    unit: str  # "s", "tok/s", "tokens", "share", "count"
    seed: tuple[str, ...] = ()
    relative: bool = True  # show the change in % (off where the reference is often ~0, e.g. queue waits)


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    conditions: tuple[str, ...]  # the first is the reference the others are compared with
    rows: tuple[Row, ...]
    seed_section: str
    seed_verdict: str
    seed_columns: tuple[str, ...] = ()  # the seed's names for its columns
    requires: tuple[str, ...] = ()  # coordinator config keys this experiment needs
    offline: bool = False  # computed without a fleet (semantic caching)
    note: str = ""
    # Speedups for the summary: (without, with, metric) -> median over seeds of without / with.
    headlines: tuple[tuple[str, str, str], ...] = ()


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("baseline", "baseline (priority, all-32B, cache on)"),
        Condition("fcfs", "fcfs", config={"scheduling.policy": "fcfs"}),
        Condition("pools", "pools (the seed's semaphores)", config={"scheduling.policy": "pools"}),
        Condition("kv", "kv (KV working set)", config={"scheduling.policy": "kv"}),
        Condition("routed", "routed (32B + 7B)", config={"routing.enabled": True}, fleet={"model": "auto"}),
        Condition("batch200", "200 ms window", config={"scheduling.batch_window_ms": 200.0}),
        Condition("batch1000", "1000 ms window", config={"scheduling.batch_window_ms": 1000.0}),
        Condition("prefetch", "file prefetch", fleet={"prefetch": True}),
        Condition("compressed", "compressed context", fleet={"compress": True}),
        Condition("cache_off", "tool cache off", fleet={"tool_cache": False}),
        Condition("spec_tests", "test pre-runs only", fleet={"speculate_tests": True}),
        Condition(
            "spec_llm",
            "LLM prefetch only",
            config={SPECULATION_KEY: True, "speculation.mode": "prefetch"},
            fleet={"peek": True},
        ),
        Condition(
            "spec_warm",
            "prefix warming only",
            config={SPECULATION_KEY: True, "speculation.mode": "warm"},
            fleet={"peek": True},
        ),
        Condition(
            "speculation",
            "speculation on (pre-runs + LLM prefetch)",
            config={SPECULATION_KEY: True, "speculation.mode": "prefetch"},
            fleet={"speculate_tests": True, "peek": True},
        ),
        Condition(
            "stream_tools",
            "streaming tool execution",
            config={STREAM_TOOLS_KEY: True},
            fleet={"peek": True},
        ),
        Condition(
            "all_off",
            "everything off",
            config={"scheduling.policy": "fcfs"},
            fleet={"tool_cache": False},
        ),
        Condition(
            "all_on",
            "everything on",
            config={"routing.enabled": True},
            fleet={"model": "auto", "speculate_tests": True, "peek": True},
        ),
    )
}
# "Everything on" also turns on what this build of the coordinator has of these.
ALL_ON_OPTIONAL: Mapping[str, Any] = {SPECULATION_KEY: True}

EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "priority",
        "Priority scheduling",
        ("fcfs", "pools", "baseline", "kv"),
        (
            Row("Hot agent latency", "latency_hot_s", "s", ("11,414 ms", "9,329 ms", "-18%")),
            Row("Cold agent latency", "latency_cold_s", "s", ("15,045 ms", "3,871 ms", "-74%")),
            Row("Warm agent latency", "latency_warm_s", "s"),
            Row("Mean LLM latency", "latency_s", "s"),
            Row("Queue wait at the coordinator (mean)", "queue_wait_s", "s", relative=False),
            Row("Wall time", "wall_s", "s", ("22.33 s", "19.83 s", "-11%")),
            Row("LLM wait per agent (sum of its calls)", "llm_s_per_agent", "s"),
        ),
        "Priority Scheduling",
        "1.22x",
        ("No Priority", "With Priority"),
        note="The seed's 'With Priority' is its semaphore pools (hot 4, cold 2); ours are `pools` and `priority`. "
        "`kv` is the KV-aware policy (working-set admission and program-level order, planning with the engine's own "
        "KV capacity).",
        headlines=(
            ("fcfs", "pools", "wall_s"),
            ("fcfs", "baseline", "wall_s"),
            ("fcfs", "kv", "wall_s"),
            ("fcfs", "pools", "llm_s_per_agent"),
            ("fcfs", "baseline", "llm_s_per_agent"),
            ("fcfs", "kv", "llm_s_per_agent"),
        ),
    ),
    Experiment(
        "routing",
        "Model routing",
        ("baseline", "routed"),
        (
            Row("Wall time", "wall_s", "s", ("21.71 s", "15.00 s", "-31%")),
            Row("Avg latency", "latency_s", "s", ("11,850 ms", "8,005 ms", "-32%")),
            Row("Simple task latency", "latency_simple_s", "s", ("8,297 ms", "2,703 ms", "-67%")),
            Row("Complex task latency", "latency_complex_s", "s", ("11,451 ms", "7,729 ms", "-33%")),
            Row("LLM wait per agent (sum of its calls)", "llm_s_per_agent", "s"),
        ),
        "Model Routing",
        "1.45x",
        ("All 32B", "Smart Routing"),
        requires=("routing.enabled",),
        headlines=(("baseline", "routed", "wall_s"), ("baseline", "routed", "llm_s_per_agent")),
    ),
    Experiment(
        "batching",
        "Request batching windows",
        ("baseline", "batch200", "batch1000"),
        (
            Row("Wall time", "wall_s", "s", ("21.34 s", "20.96 s", "23.71 s")),
            Row("Avg latency", "latency_s", "s", ("11,878 ms", "11,704 ms", "12,628 ms")),
            Row("Throughput", "throughput_tps", "tok/s", ("20.3 tps", "19.3 tps", "18.5 tps")),
            Row("GPU batch size (mean while busy)", "batch_mean", "count", ("1.0", "5.5", "10.0")),
            Row("LLM wait per agent (sum of its calls)", "llm_s_per_agent", "s"),
        ),
        "Request Batching",
        "1.01x",
        ("Passthrough", "200ms window", "1000ms window"),
        requires=("scheduling.batch_window_ms",),
        note="The seed's batch size is what its accumulation layer released; ours is the simulated GPU's batch.",
        headlines=(
            ("baseline", "batch200", "wall_s"),
            ("baseline", "batch1000", "wall_s"),
            ("baseline", "batch200", "llm_s_per_agent"),
            ("baseline", "batch1000", "llm_s_per_agent"),
        ),
    ),
    Experiment(
        "prefetch",
        "File prefetch (through the sidecar cache)",
        ("baseline", "prefetch"),
        (
            Row("Wall time", "wall_s", "s", ("", "", "0%")),
            Row("Tool time (all agents)", "tool_s", "s"),
            Row("Prefetched reads", "prefetched", "count", relative=False),
            Row("Reads served from a prefetch", "prefetch_hits", "count", relative=False),
            Row("Prediction accuracy", "prefetch_accuracy", "share", ("", "42%", "")),
        ),
        "File Prefetching",
        "1.00x",
        ("No prefetch", "Prefetch"),
        headlines=(("baseline", "prefetch", "wall_s"),),
    ),
    Experiment(
        "compression",
        "Context compression",
        ("baseline", "compressed"),
        (
            Row("Avg latency", "latency_s", "s", ("7,029 ms", "7,920 ms", "+13%")),
            Row("Prompt tokens", "prompt_tokens", "tokens", ("494", "97", "-80%")),
            Row("Prefix-cached share of prompt", "prompt_cached_share", "share"),
            Row("LLM time per coding agent", "llm_s_per_coder", "s"),
            Row("Turns per coding agent", "turns_per_agent", "count"),
            Row("Coding agents that fixed every bug", "solved_share", "share"),
            Row("Wall time", "wall_s", "s"),
        ),
        "Context Compression",
        "0.89x",
        ("Full context", "Compressed"),
        headlines=(
            ("baseline", "compressed", "latency_s"),
            ("baseline", "compressed", "wall_s"),
            ("baseline", "compressed", "llm_s_per_agent"),
        ),
    ),
    Experiment(
        "semantic_cache",
        "Semantic caching (TF-IDF) vs exact validated caching",
        (),
        (),
        "Semantic Caching",
        "harmful (90% of hits false positives at 0.85)",
        offline=True,
    ),
    Experiment(
        "tool_cache",
        "Tool-output cache (sidecar)",
        ("baseline", "cache_off"),
        (
            Row("Wall time", "wall_s", "s"),
            Row("Tool time (all agents)", "tool_s", "s"),
            Row("Tool calls served from the cache", "cache_hit_rate", "share"),
            Row("Agent task time (mean)", "agent_s", "s"),
        ),
        "When Caching Might Work for Agents",
        "proposed, not measured",
        note="The seed proposed caching tool outputs instead of LLM answers; the baseline has the cache on.",
        headlines=(("cache_off", "baseline", "wall_s"),),
    ),
    Experiment(
        "speculation",
        "Speculation (LLM and tool level), with its ablation",
        ("baseline", "spec_tests", "spec_llm", "spec_warm", "speculation"),
        (
            Row("Wall time", "wall_s", "s", ("13.60 s", "7.17 s", "-47%")),
            Row("Agent task time (mean)", "agent_s", "s"),
            Row("Time per turn (agent time / LLM calls)", "turn_s", "s"),
            Row("Avg latency", "latency_s", "s"),
            Row("LLM wait per agent (sum of its calls)", "llm_s_per_agent", "s"),
            Row("Tool time (all agents)", "tool_s", "s"),
            Row("Test runs answered by a pre-run", "prerun_used", "count", relative=False),
            Row("Pre-runs started (used + cancelled + discarded + unused)", "prerun_started", "count", relative=False),
            Row("Next-action prediction accuracy (top-1)", "prediction_top1", "share", ("", "~42%", "")),
            Row("Next-action prediction accuracy (top-3)", "prediction_top3", "share", relative=False),
            Row("LLM answers served from a speculative call", "speculative_served", "count", relative=False),
            Row("Wasted speculative GPU tokens", "wasted_tokens", "tokens", relative=False),
        ),
        "Speculative Prefetching",
        "1.90x",
        ("Sequential", "Parallel (speculative)"),
        requires=("sidecar.speculate_tests", SPECULATION_KEY),
        note="Lossless: a pre-run answers `run_tests` only for the exact workspace state it ran on, a speculative "
        "LLM answer only for a byte-identical request (canonical JSON). The seed's 1.90x reused guessed answers "
        "unchecked. Its GPU-slot figures: 0.79x / 0.98x / 1.12x at 2 / 4 / 8 slots.",
        headlines=(
            ("baseline", "speculation", "agent_s"),
            ("baseline", "speculation", "wall_s"),
            ("baseline", "spec_tests", "agent_s"),
            ("baseline", "spec_llm", "agent_s"),
            ("baseline", "spec_warm", "agent_s"),
        ),
    ),
    Experiment(
        "streaming",
        "Streaming tool execution (tool calls started while their answer streams)",
        ("baseline", "stream_tools"),
        (
            Row("Agent task time (mean)", "agent_s", "s"),
            Row("Time per turn (agent time / LLM calls)", "turn_s", "s"),
            Row("Tool wait per tool-calling answer (mean)", "tool_s_per_answer", "s"),
            Row("... per answer with several calls (mean)", "tool_s_per_multi_answer", "s"),
            Row("... per answer with a test run and calls after it (mean)", "tool_s_tests_first", "s"),
            Row("Tool time (all agents)", "tool_s", "s"),
            Row("LLM wait per agent (sum of its calls)", "llm_s_per_agent", "s"),
            Row("Wall time", "wall_s", "s"),
            Row("Tool calls per tool-calling answer (median)", "calls_per_answer", "count", relative=False),
            Row("Tool calls started early", "early_started", "count", relative=False),
            Row("... whose result the agent's call took", "early_used", "count", relative=False),
            Row("... wasted (not asked for, stale or cancelled)", "early_wasted", "count", relative=False),
            Row("Agent time saved by early runs (sidecars' account)", "early_saved_s", "s", relative=False),
        ),
        "Results Summary",
        "untested ('Streaming Tool Execution ?')",
        requires=(STREAM_TOOLS_KEY,),
        note="Lossless: an early run only fills the sidecar's validated cache (read-only tools, and test runs on "
        "the exact workspace state); the agent's own call still runs and takes the result only if a fresh call "
        "would return the same. The overlap is bounded by what streams after a call completes: the calls after "
        "it in the same answer. A single call, or a slow call last in its answer, leaves nothing to overlap. "
        "Run it on a scenario whose answers carry several calls (`parallel-tools`).",
        headlines=(
            ("baseline", "stream_tools", "agent_s"),
            ("baseline", "stream_tools", "tool_s_per_answer"),
            ("baseline", "stream_tools", "tool_s_tests_first"),
        ),
    ),
    Experiment(
        "all",
        "Everything on vs everything off",
        ("all_off", "all_on"),
        (
            Row("Wall time", "wall_s", "s"),
            Row("Avg latency", "latency_s", "s"),
            Row("Hot agent latency", "latency_hot_s", "s"),
            Row("LLM wait per agent (sum of its calls)", "llm_s_per_agent", "s"),
            Row("Tool time (all agents)", "tool_s", "s"),
            Row("Agent task time (mean)", "agent_s", "s"),
        ),
        "Results Summary",
        "1.22x x 1.45x x 1.90x 'compound' (not measured together)",
        note="Off: fcfs, all-32B, tool cache off. On: priority, routing, tool cache, and speculation (tool-level "
        "test pre-runs; LLM-level once the coordinator has it).",
        headlines=(("all_off", "all_on", "wall_s"), ("all_off", "all_on", "llm_s_per_agent")),
    ),
)

BY_NAME: dict[str, Experiment] = {e.name: e for e in EXPERIMENTS}


def select(names: list[str] | None) -> list[Experiment]:
    """The experiments named (all when None or empty); raises KeyError naming the unknown ones."""
    if not names:
        return list(EXPERIMENTS)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise KeyError(f"unknown experiments: {', '.join(unknown)} (known: {', '.join(BY_NAME)})")
    return [e for e in EXPERIMENTS if e.name in names]


def condition_settings(condition: Condition, supported: Mapping[str, bool]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The coordinator overrides and fleet options of a condition, keeping only keys this build supports."""
    config = {**BASELINE_CONFIG, **OPTIONAL_BASELINE, **condition.config}
    if condition.name == "all_on":
        config.update(ALL_ON_OPTIONAL)
    config = {k: v for k, v in config.items() if supported.get(k, False)}
    fleet = {**BASELINE_FLEET, **condition.fleet}
    fleet = {k: v for k, v in fleet.items() if k not in FLEET_REQUIRES or supported.get(FLEET_REQUIRES[k], False)}
    return config, fleet


def needed_conditions(experiments: list[Experiment], available: Mapping[str, bool]) -> list[str]:
    """The distinct conditions the runnable experiments need, in first-use order."""
    names: list[str] = []
    for experiment in experiments:
        if experiment.offline or not available.get(experiment.name, False):
            continue
        names += [c for c in experiment.conditions if c not in names]
    return names
