"""Fleet-simulation figures: one summary per (condition, seed), then a table of medians over seeds with their
spread, and ratios against vLLM alone paired by seed. All times are SIMULATED seconds (the virtual clock).

Percentiles are nearest-rank (deterministic, no interpolation). Output is plain text with fixed formatting, so the
same runs always render to the same bytes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.bench.fleetsim.conditions import BASELINE, Condition
from sidecar.bench.fleetsim.fleet import FleetRun
from sidecar.core.stages import TIERS


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(run: FleetRun, solo: Mapping[str, float] | None) -> dict[str, float]:
    """The figures of one run; `solo` maps agent -> its task time alone on one replica (slowdowns need it)."""
    completion = {a: end - start for a, (start, end) in run.agents.items()}
    times = list(completion.values())
    gpu_s = run.replicas * run.makespan_s
    out: dict[str, float] = {
        "makespan_s": run.makespan_s,
        "task_mean_s": statistics.fmean(times),
        "task_p50_s": percentile(times, 50),
        "task_p95_s": percentile(times, 95),
        "task_max_s": max(times),
        "tasks_per_gpu_hour": len(times) / (gpu_s / 3600) if gpu_s else math.nan,
        "gpu_hours_per_task": gpu_s / 3600 / len(times),
        "output_tok_per_gpu_s": sum(c.output_tokens for c in run.calls) / gpu_s if gpu_s else math.nan,
        "prompt_tokens_computed": float(run.prefix_queries - run.prefix_hits),
        "prompt_tokens_cached": float(run.prefix_hits),
        "prefix_hit_rate": run.prefix_hits / run.prefix_queries if run.prefix_queries else math.nan,
        "preemptions": float(run.preemptions),
        "gpu_busy_share": run.busy_s / gpu_s if gpu_s else math.nan,
        "hot_call_p50_s": percentile([c.finished - c.issued for c in run.calls if c.tier == "hot"], 50),
    }
    for tier in TIERS:
        waits = [c.first_scheduled - c.issued for c in run.calls if c.tier == tier]
        out[f"wait_{tier}_p50_s"] = percentile(waits, 50)
        out[f"wait_{tier}_p95_s"] = percentile(waits, 95)
    spec = run.speculation
    if "warm_calls" in spec or any(k.startswith("warm: ") for k in spec):
        out["warm_calls"] = spec.get("warm_calls", 0.0)
        out["warm_tokens"] = spec.get("warm_tokens_computed", 0.0)
    if "prerun_used" in spec or "prerun_wasted" in spec:
        out["prerun_used"] = spec.get("prerun_used", 0.0)
        out["prerun_wasted"] = spec.get("prerun_wasted", 0.0)
        out["prerun_wasted_cpu_s"] = spec.get("prerun_wasted_cpu_s", 0.0)
        out["prerun_saved_s"] = spec.get("prerun_saved_s", 0.0) / len(times)
    if "early_answers" in spec:
        out["early_calls"] = spec["early_calls"]
        out["early_saved_s"] = spec.get("early_saved_s", 0.0) / len(times)
    g = run.gpu
    if g:
        out["gpu_prefill_new_s"] = g["prefill_new_s"]
        out["gpu_prefill_recomputed_s"] = g["prefill_recomputed_s"]
        out["gpu_decode_s"] = g["decode_s"]
        out["gpu_idle_s"] = max(gpu_s - run.busy_s, 0.0)
        out["decode_mean_batch"] = g["decode_tokens"] / g["decode_steps"] if g["decode_steps"] else math.nan
        out["decode_mean_context"] = g["decode_context"] / g["decode_tokens"] if g["decode_tokens"] else math.nan
        for n in (1, 2, 3):
            out[f"decode_b{n}_share"] = g[f"decode_b{n}_s"] / g["decode_s"] if g["decode_s"] else math.nan
    if any(k.startswith("spilled to ") for k in spec) or "prefetch: answers_with_tools" in spec:
        out.update(_routing_and_prefetch(spec))
    moved = _moved_tokens_computed(run) if run.replicas > 1 else 0
    if moved or "spilled_calls" in out:
        out["moved_tokens_computed"] = float(moved)
    if solo:
        slowdowns = [completion[a] / solo[a] for a in completion if solo.get(a)]
        out["slowdown_p50"] = percentile(slowdowns, 50)
        out["slowdown_p95"] = percentile(slowdowns, 95)
        out["slowdown_max"] = max(slowdowns)
    return out


def _routing_and_prefetch(spec: Mapping[str, float]) -> dict[str, float]:
    """Spill-over and exact LLM prefetch counts of one run (`fleet.py`, `prefetch.py`)."""
    out = {}
    if any(k.startswith("spilled to ") for k in spec):
        out["spilled_calls"] = sum(v for k, v in spec.items() if k.startswith("spilled to "))
    if "prefetch: answers_with_tools" in spec:
        p = {k.removeprefix("prefetch: "): v for k, v in spec.items() if k.startswith("prefetch: ")}
        answers = p.get("answers_with_tools", 0.0)
        out["prefetch_known_share"] = p.get("answers_known", 0.0) / answers if answers else math.nan
        out["prefetch_started"] = p.get("started", 0.0)
        out["prefetch_served"] = p.get("served", 0.0)
        out["prefetch_attached"] = p.get("served_attached", 0.0)
        out["prefetch_skipped"] = p.get("skipped", 0.0)
        out["prefetch_cancelled"] = p.get("cancelled_for_real_calls", 0.0)
        out["prefetch_wasted_tokens"] = p.get("wasted_tokens", 0.0)
    return out


def _moved_tokens_computed(run: FleetRun) -> int:
    """Prompt tokens computed by calls on another replica than the agent's call before (the price of moving an
    agent's context between engines, each with its own prefix cache)."""
    last: dict[str, int] = {}
    moved = 0
    for call in sorted(run.calls, key=lambda c: (c.agent, c.turn)):
        if call.agent in last and last[call.agent] != call.replica:
            moved += call.prompt_tokens - call.cached_tokens
        last[call.agent] = call.replica
    return moved


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    fmt: str
    ratio: str = ""  # "lower" / "higher": show the paired ratio vs vLLM alone as an improvement factor


METRICS: tuple[Metric, ...] = (
    Metric("makespan_s", "makespan (s)", "{:,.0f}", "lower"),
    Metric("task_mean_s", "task completion mean (s)", "{:,.0f}", "lower"),
    Metric("task_p50_s", "task completion p50 (s)", "{:,.0f}", "lower"),
    Metric("task_p95_s", "task completion p95 (s)", "{:,.0f}", "lower"),
    Metric("task_max_s", "task completion max (s)", "{:,.0f}", "lower"),
    Metric("slowdown_p50", "slowdown vs alone p50 (x)", "{:.1f}"),
    Metric("slowdown_p95", "slowdown vs alone p95 (x)", "{:.1f}"),
    Metric("slowdown_max", "slowdown vs alone max (x)", "{:.1f}"),
    Metric("tasks_per_gpu_hour", "tasks per GPU-hour", "{:.2f}", "higher"),
    Metric("gpu_hours_per_task", "GPU-hours per task", "{:.3f}", "lower"),
    Metric("output_tok_per_gpu_s", "output tokens per GPU-second", "{:.1f}", "higher"),
    Metric("prompt_tokens_computed", "prompt tokens computed", "{:,.0f}", "lower"),
    Metric("prompt_tokens_cached", "prompt tokens from prefix cache", "{:,.0f}"),
    Metric("prefix_hit_rate", "prefix-cache hit rate (tokens)", "{:.1%}"),
    Metric("preemptions", "preemptions", "{:,.0f}"),
    Metric("gpu_busy_share", "GPU busy share", "{:.0%}"),
    Metric("gpu_prefill_new_s", "GPU-s: prefill of new prompt tokens", "{:,.0f}"),
    Metric("gpu_prefill_recomputed_s", "GPU-s: prefill recomputed (after eviction or preemption)", "{:,.0f}"),
    Metric("gpu_decode_s", "GPU-s: decode", "{:,.0f}"),
    Metric("gpu_idle_s", "GPU-s: idle", "{:,.0f}"),
    Metric("decode_mean_batch", "decode: mean batch (sequences per step)", "{:.2f}"),
    Metric("decode_mean_context", "decode: mean context per sequence (tokens)", "{:,.0f}"),
    Metric("decode_b1_share", "decode time at batch 1", "{:.0%}"),
    Metric("decode_b2_share", "decode time at batch 2", "{:.0%}"),
    Metric("decode_b3_share", "decode time at batch 3+", "{:.0%}"),
    Metric("hot_call_p50_s", "hot call latency p50 (s)", "{:.1f}", "lower"),
    Metric("warm_calls", "prefix warm-ups", "{:,.0f}"),
    Metric("warm_tokens", "warm-up prompt tokens computed (in the above)", "{:,.0f}"),
    Metric("prerun_used", "test pre-runs used", "{:,.0f}"),
    Metric("prerun_wasted", "test pre-runs wasted", "{:,.0f}"),
    Metric("prerun_wasted_cpu_s", "pre-run CPU wasted on agents' machines (s)", "{:,.0f}"),
    Metric("prerun_saved_s", "tool time saved by pre-runs per task (s)", "{:.1f}"),
    Metric("early_calls", "tool calls started early (streamed)", "{:,.0f}"),
    Metric("early_saved_s", "tool time saved by early starts per task (s)", "{:.1f}"),
    Metric("spilled_calls", "calls spilled over to the other model", "{:,.0f}"),
    Metric("moved_tokens_computed", "prompt tokens computed by calls that changed model (in the above)", "{:,.0f}"),
    Metric("prefetch_known_share", "prefetch: answers whose tool results were all cached", "{:.1%}"),
    Metric("prefetch_started", "prefetch: speculative calls sent", "{:,.0f}"),
    Metric("prefetch_served", "prefetch: real calls served from one", "{:,.0f}"),
    Metric("prefetch_attached", "prefetch: ... of them attached while it ran", "{:,.0f}"),
    Metric("prefetch_skipped", "prefetch: follow-ups skipped (no spare capacity, a queue, the budget)", "{:,.0f}"),
    Metric("prefetch_cancelled", "prefetch: cancelled when a real call queued", "{:,.0f}"),
    Metric("prefetch_wasted_tokens", "prefetch: tokens computed for calls never served (in the above)", "{:,.0f}"),
    *(Metric(f"wait_{t}_p50_s", f"queue wait {t} p50 (s)", "{:.1f}") for t in TIERS),
    *(Metric(f"wait_{t}_p95_s", f"queue wait {t} p95 (s)", "{:.1f}") for t in TIERS),
)


def _fmt(metric: Metric, value: float) -> str:
    return "-" if value is None or math.isnan(value) else metric.fmt.format(value)


def _cell(metric: Metric, values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    mid = _fmt(metric, statistics.median(values))
    if len(values) == 1:
        return mid
    return f"{mid} [{_fmt(metric, min(values))}..{_fmt(metric, max(values))}]"


def _ratio_cell(metric: Metric, base: list[float], other: list[float]) -> str:
    """Improvement factor vs the baseline, paired by seed: base/other for lower-is-better, other/base else."""
    pairs = [(b, o) for b, o in zip(base, other, strict=True) if b and o and not (math.isnan(b) or math.isnan(o))]
    if not pairs:
        return "-"
    ratios = [b / o if metric.ratio == "lower" else o / b for b, o in pairs]
    mid = f"{statistics.median(ratios):.2f}x"
    return mid if len(ratios) == 1 else f"{mid} [{min(ratios):.2f}..{max(ratios):.2f}]"


def render(
    title: str,
    description: str,
    conditions: Sequence[Condition],
    seeds: Sequence[int],
    summaries: Mapping[str, list[dict[str, float]]],
    notes: Sequence[str] = (),
) -> str:
    """The report: conditions, the figures table (median [min..max] over seeds), the ratios vs vLLM alone."""
    lines = [f"# fleet-sim: {title}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        f"SIMULATED on one virtual clock (seconds are simulated); seeds {', '.join(map(str, seeds))}; "
        "cells are the median over seeds [min..max].",
        "",
        "| condition | what |",
        "|---|---|",
        *(f"| {c.name} | {c.title} |" for c in conditions),
        "",
    ]
    names = [c.name for c in conditions]
    lines += ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for metric in METRICS:
        if not any(metric.key in s for n in names for s in summaries[n]):
            continue
        cells = [_cell(metric, [s.get(metric.key, math.nan) for s in summaries[n]]) for n in names]
        lines.append(f"| {metric.label} | " + " | ".join(cells) + " |")
    if BASELINE in summaries:
        others = [n for n in names if n != BASELINE]
        lines += [
            "",
            f"Improvement over {BASELINE} (vLLM alone), paired by seed: >1 is better.",
            "",
            "| metric | " + " | ".join(others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for metric in METRICS:
            if not metric.ratio:
                continue
            base = [s.get(metric.key, math.nan) for s in summaries[BASELINE]]
            cells = [_ratio_cell(metric, base, [s.get(metric.key, math.nan) for s in summaries[n]]) for n in others]
            lines.append(f"| {metric.label} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def as_json(summaries: Mapping[str, list[dict[str, float]]], seeds: Sequence[int]) -> dict[str, Any]:
    return {
        "seeds": list(seeds),
        "runs": {
            name: [{k: (None if math.isnan(v) else v) for k, v in s.items()} for s in runs]
            for name, runs in summaries.items()
        },
    }
