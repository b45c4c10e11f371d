"""The bench's PNG plots (matplotlib, Agg backend: no display needed).

- `latency_by_tier.png`: mean LLM latency per tier under each scheduling policy (median over seeds, min-max bars);
- `timeline.png`: one seed's run under fcfs and under priority: the 32B GPU's batch and waiting requests, and
  the coordinator's queue by tier, over simulated time;
- `cache.png`: the sidecar's tool-cache hit rate per condition, and the semantic-cache experiment's hit rate
  and wrong-hit share per policy;
- `speedups.png`: this run's speedup per experiment next to the seed's.
Each function returns the path it wrote, or None when the bench has no data for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar.fleet import analysis
from sidecar.fleet.bench import BenchResult
from sidecar.fleet.experiments import CONDITIONS
from sidecar.fleet.metrics import TIERS
from sidecar.fleet.semantic import evaluate_all

SEED_SPEEDUPS = {"priority": 1.22, "routing": 1.45, "batching": 1.01, "prefetch": 1.00, "compression": 0.89}
SEED_SPEEDUPS["speculation"] = 1.90
TIER_COLORS = {"hot": "#d62728", "warm": "#ff7f0e", "cold": "#1f77b4"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def missing_library() -> str | None:
    """Why no plots can be drawn (matplotlib absent: it is the optional `bench` extra), or None."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return "matplotlib is not installed, so no plots (pip install 'goose-sidecar[bench]' adds it)"
    return None


def write_plots(result: BenchResult, outdir: Path) -> list[str]:
    """The PNG files written into `outdir`; none when matplotlib is missing (`missing_library` says why)."""
    if missing_library() is not None:
        return []
    written = []
    for plot in (latency_by_tier, timeline, cache, speedups):
        path = plot(result, outdir)
        if path is not None:
            written.append(str(path))
    return written


def latency_by_tier(result: BenchResult, outdir: Path) -> Path | None:
    runs = [r.as_dict() for r in result.runs]
    policies = [c for c in ("fcfs", "pools", "baseline") if any(r["condition"] == c for r in runs)]
    if not policies:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(policies)
    for i, policy in enumerate(policies):
        medians, low, high = [], [], []
        for tier in TIERS:
            stats = analysis.condition_stats(runs, policy, f"latency_{tier}_s")
            m = stats["median"] or 0.0
            medians.append(m)
            low.append(m - (stats["min"] if stats["min"] is not None else m))
            high.append((stats["max"] if stats["max"] is not None else m) - m)
        xs = [t + (i - (len(policies) - 1) / 2) * width for t in range(len(TIERS))]
        label = "priority" if policy == "baseline" else policy
        ax.bar(xs, medians, width, yerr=[low, high], capsize=3, label=label)
    ax.set_xticks(range(len(TIERS)), [f"{t} calls" for t in TIERS])
    ax.set_ylabel("mean LLM call latency (simulated s)")
    ax.set_title("LLM latency by priority tier, per scheduling policy (median over seeds, min–max)")
    ax.legend(title="policy")
    return _save(fig, outdir / "latency_by_tier.png")


def timeline(result: BenchResult, outdir: Path) -> Path | None:
    seed = result.scenario.bench.seeds[0]
    shown = [
        (name, run)
        for name in ("fcfs", "baseline")
        if (run := result.fleet_runs.get((name, seed))) is not None and run.timeline
    ]
    if not shown:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 3.2 * len(shown)), sharex=True, squeeze=False)
    for ax, (name, run) in zip(axes[:, 0], shown, strict=True):
        t = [s["t"] * run.time_scale for s in run.timeline]
        running = [(s.get("large") or {}).get("running", 0) for s in run.timeline]
        waiting = [(s.get("large") or {}).get("waiting", 0) for s in run.timeline]
        ax.plot(t, running, color="black", label="32B GPU batch (running)")
        ax.plot(t, waiting, color="gray", linestyle="--", label="32B waiting in vLLM")
        for tier in TIERS:
            queued = [(s.get("queued") or {}).get(tier, 0) for s in run.timeline]
            if any(queued):
                ax.plot(t, queued, color=TIER_COLORS[tier], label=f"queued at coordinator: {tier}")
        label = "priority" if name == "baseline" else name
        ax.set_title(f"{label} (seed {seed})")
        ax.set_ylabel("requests")
        ax.legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("time since the fleet started (simulated s)")
    fig.suptitle("GPU batch and queues over time")
    return _save(fig, outdir / "timeline.png")


def cache(result: BenchResult, outdir: Path) -> Path | None:
    runs = [r.as_dict() for r in result.runs]
    names = [c for c in CONDITIONS if any(r["condition"] == c for r in runs)]
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates = [analysis.condition_stats(runs, c, "cache_hit_rate")["median"] or 0.0 for c in names]
    left.barh([CONDITIONS[c].label for c in names], [r * 100 for r in rates], color="#2ca02c")
    left.set_xlabel("tool calls served from the sidecar cache (%)")
    left.set_title("Sidecar tool-cache hit rate per condition (median over seeds)")
    outcomes = evaluate_all()
    labels = [o.policy for o in outcomes]
    ys = range(len(outcomes))
    right.barh([y + 0.2 for y in ys], [o.hit_rate * 100 for o in outcomes], 0.4, label="hit rate")
    right.barh([y - 0.2 for y in ys], [o.false_positive_share * 100 for o in outcomes], 0.4, label="wrong hits / hits")
    right.set_yticks(list(ys), labels, fontsize="small")
    right.set_xlabel("% (of labelled pairs / of hits)")
    right.set_title("Semantic vs exact validated caching")
    right.legend()
    return _save(fig, outdir / "cache.png")


def speedups(result: BenchResult, outdir: Path) -> Path | None:
    from sidecar.fleet.report import headline

    runs = [r.as_dict() for r in result.runs]
    labels, ours, seeds = [], [], []
    for experiment in result.experiments:
        if experiment.offline or result.availability.get(experiment.name) or not experiment.headlines:
            continue
        without, with_, metric = experiment.headlines[-1]
        stats = headline(runs, without, with_, metric)
        if stats["median"] is None:
            continue
        labels.append(experiment.name if with_ == "baseline" else f"{experiment.name}\n{with_}")
        ours.append(stats["median"])
        seeds.append(SEED_SPEEDUPS.get(experiment.name))
    if not labels:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], ours, 0.4, label="this run (median over seeds)")
    ax.bar([x + 0.2 for x in xs], [s or 0 for s in seeds], 0.4, label="the seed (if it measured it)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), labels, fontsize="small")
    ax.set_ylabel("speedup (x, higher is better)")
    ax.set_title("Speedup per optimization: this bench vs the seed report")
    ax.legend()
    return _save(fig, outdir / "speedups.png")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
