"""From a recorded fleet run to the numbers the report compares (pure functions over `FleetRun`).

Clock: every duration is in simulated seconds. LLM durations come from the simulator's own clock when the
fleet had it (`Turn.sim_*`), else real seconds x `time_scale`; tool time and wall time are real seconds x
`time_scale` (see `scenarios/README.md`, "One clock"). Against a real upstream `time_scale` is 1.

Task kinds follow the seed's routing split (`seed/000_bc7af0ed774b52c4.txt`, "Model Routing": commit
messages and docs are simple, everything else complex), by the stage each call was classified in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from sidecar.core.wire import SPECULATIVE_HEADER  # the coordinator served this answer from a speculative call
from sidecar.fleet.records import FleetRun, Turn

SIMPLE_STAGES = frozenset({"commit_msg", "docs"})
TIERS = ("hot", "warm", "cold")


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(present) if present else None


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (q in [0, 1]) of a sample; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def llm_s(turn: Turn, scale: float) -> float:
    return turn.sim_llm_s if turn.sim_llm_s is not None else turn.llm_s * scale


def ttft_s(turn: Turn, scale: float) -> float:
    return turn.sim_ttft_s if turn.sim_ttft_s is not None else turn.ttft_s * scale


def model_label(model: str | None) -> str:
    """A short label for a served model name: `32B`, `7B`, else the name itself (or `?`)."""
    if not model:
        return "?"
    for size in ("32B", "14B", "7B", "3B", "1.5B"):
        if size.lower() in model.lower():
            return size
    return model.rsplit("/", 1)[-1]


def summarize(run: FleetRun) -> dict[str, Any]:
    """The run's headline numbers; a value is None when the run has nothing to measure it on."""
    scale = run.time_scale
    turns = [t for t in run.turns if t.error is None]
    lat = [llm_s(t, scale) for t in turns]
    completion = sum(t.completion_tokens or 0 for t in turns)
    wall = run.wall_s * scale
    tool_calls = sum(len(t.tools) for t in turns)
    hits = sum(t.cache_hits for t in turns)
    out: dict[str, Any] = {
        "agents": len(run.agents),
        "calls": len(turns),
        "failed_calls": sum(1 for t in run.turns if t.error is not None),
        "wall_s": wall,
        "agent_s": mean(a.duration_s * scale for a in run.agents),
        "latency_s": mean(lat),
        "latency_median_s": median(lat),
        "latency_p90_s": quantile(lat, 0.9),
        "ttft_s": median(ttft_s(t, scale) for t in turns),
        "throughput_tps": completion / wall if wall > 0 else None,
        "completion_tokens": completion,
        "prompt_tokens": mean(t.prompt_tokens for t in turns if t.prompt_tokens is not None),
        "prompt_cached_share": _share(turns),
        "queue_wait_s": mean(t.queue_wait_s * scale for t in turns if t.queue_wait_s is not None),
        "tool_s": sum(t.tool_s for t in turns) * scale,
        "tool_call_median_s": median(t.tool_s * scale / len(t.tools) for t in turns if t.tools),
        "llm_s_per_agent": mean(sum(llm_s(t, scale) for t in a.turns if t.error is None) for a in run.agents),
        "llm_s_per_coder": mean(
            sum(llm_s(t, scale) for t in a.turns if t.error is None) for a in run.agents if a.kind == "coder"
        ),
        "tool_calls": tool_calls,
        "cache_hits": hits,
        "cache_hit_rate": hits / tool_calls if tool_calls else None,
        "prefetched": sum(t.prefetched for t in turns),
        "prefetch_hits": sum(t.prefetch_hits for t in turns),
        "prefetch_accuracy": _ratio(sum(t.prefetch_hits for t in turns), sum(t.prefetched for t in turns)),
        "turns_per_agent": mean(len(a.turns) for a in run.agents if a.kind == "coder"),
        "solved_share": mean(1.0 if a.solved else 0.0 for a in run.agents if a.kind == "coder"),
        "finished_share": mean(1.0 if a.finished else 0.0 for a in run.agents if a.kind == "coder"),
        "agent_errors": sum(1 for a in run.agents if a.error),
        "batch_mean": _batch_mean(run, "large"),
        "speculative_served": sum(1 for t in turns if t.headers.get(SPECULATIVE_HEADER) == "1"),
        "turn_s": _ratio(sum(a.duration_s * scale for a in run.agents if a.kind == "coder"), _coder_turns(run)),
        "calls_per_answer": median(float(len(t.tools)) for t in turns if t.tools),
        # Tool time of a turn is the agent's wait for all of its answer's calls (run concurrently, as Goose does).
        "tool_s_per_answer": mean(t.tool_s * scale for t in turns if t.tools),
        "tool_s_per_multi_answer": mean(t.tool_s * scale for t in turns if len(t.tools) > 1),
        # Answers whose test run has other calls after it: the case streaming tool execution can overlap.
        "tool_s_tests_first": mean(
            t.tool_s * scale for t in turns if len(t.tools) > 1 and t.tools[0].endswith("run_tests")
        ),
        **_speculation(run),
        "stage_source": _most_common(t.stage_source for t in turns),
    }
    for tier in TIERS:
        out[f"latency_{tier}_s"] = mean(llm_s(t, scale) for t in turns if t.tier == tier)
        out[f"calls_{tier}"] = sum(1 for t in turns if t.tier == tier)
    simple = [llm_s(t, scale) for t in turns if t.stage in SIMPLE_STAGES]
    complex_ = [llm_s(t, scale) for t in turns if t.stage is not None and t.stage not in SIMPLE_STAGES]
    out["latency_simple_s"] = mean(simple)
    out["latency_complex_s"] = mean(complex_)
    models: dict[str, int] = {}
    for t in turns:
        label = model_label(t.model)
        models[label] = models.get(label, 0) + 1
    out["calls_by_model"] = models
    return out


def _coder_turns(run: FleetRun) -> int:
    return sum(len(a.turns) for a in run.agents if a.kind == "coder")


def _speculation(run: FleetRun) -> dict[str, Any]:
    """Speculation as the coordinator's /status reported it at the end of the run (None where not reported)."""
    spec = (run.settings.get("coordinator_status") or {}).get("speculation") or {}
    runs = spec.get("test_runs") or {}
    prediction = spec.get("prediction") or {}
    early = spec.get("early_runs") or {}
    saved = early.get("time_saved_s")  # the sidecars' real seconds: on the simulator's clock like tool time
    return {
        "early_started": early.get("started"),
        "early_used": early.get("used"),
        "early_wasted": early.get("wasted"),
        "early_saved_s": None if saved is None else saved * run.time_scale,
        "prerun_started": runs.get("started"),
        "prerun_used": runs.get("used"),
        "prediction_top1": prediction.get("top1_rate"),
        "prediction_top3": prediction.get("top3_rate"),
        "wasted_tokens": spec.get("wasted_tokens"),
    }


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _share(turns: Sequence[Turn]) -> float | None:
    prompt = sum(t.prompt_tokens or 0 for t in turns if t.cached_tokens is not None)
    cached = sum(t.cached_tokens or 0 for t in turns)
    return cached / prompt if prompt else None


def _batch_mean(run: FleetRun, alias: str) -> float | None:
    """Mean number of sequences in the GPU batch while it was busy (timeline samples with running > 0)."""
    running = [s[alias]["running"] for s in run.timeline if isinstance(s.get(alias), dict) and s[alias].get("running")]
    return statistics.fmean(running) if running else None


def _most_common(values: Iterable[str | None]) -> str | None:
    counts: dict[str, int] = {}
    for value in values:
        if value:
            counts[value] = counts.get(value, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None
