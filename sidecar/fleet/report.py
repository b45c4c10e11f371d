"""The bench report: `report.md` (tables like the seed's, each row next to the seed's figure) and `results.json`.

Every cell is the median over seeds with the min-max spread in brackets; changes are paired by seed (see
`analysis.py`). Times are simulated seconds (the scenario's time scale; `scenarios/README.md`, "One clock").
The seed's figures are quoted from the silly-goose report (`sidecar.citations.SEED_REPORT`), in the section each
experiment names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sidecar import citations
from sidecar.fleet import analysis
from sidecar.fleet.bench import BenchResult
from sidecar.fleet.experiments import CONDITIONS, Experiment, Row
from sidecar.fleet.semantic import PAIRS, THRESHOLDS, CacheOutcome, evaluate_all

SEED_REPORT = citations.SEED_REPORT


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.1f} s" if abs(value) >= 10 else f"{value:.2f} s"
    if unit == "tok/s":
        return f"{value:.1f} tok/s"
    if unit == "tokens":
        return f"{value:,.0f}"
    if unit == "share":
        return f"{value:.0%}"
    return f"{value:.1f}" if value != int(value) else f"{int(value)}"


def cell(stats: dict[str, Any], unit: str) -> str:
    if stats.get("median") is None:
        return "-"
    text = fmt(stats["median"], unit)
    if stats.get("n", 0) > 1 and stats["min"] != stats["max"]:
        text += f" [{fmt(stats['min'], unit)}–{fmt(stats['max'], unit)}]"
    return text


def change_cell(stats: dict[str, Any]) -> str:
    if stats.get("median") is None:
        return "-"
    text = f"{stats['median']:+.0%}"
    if stats.get("n", 0) > 1 and stats["min"] != stats["max"]:
        text += f" [{stats['min']:+.0%}…{stats['max']:+.0%}]"
    return text


def headline(runs: list[dict[str, Any]], without: str, with_: str, metric: str) -> dict[str, Any]:
    """Median speedup (without / with) over seeds, with its spread."""
    change = analysis.paired_change(runs, without, with_, metric)
    speedups = [s for c in change["by_seed"].values() if (s := analysis.speedup(c)) is not None]
    return analysis.spread(speedups)


def experiment_table(experiment: Experiment, runs: list[dict[str, Any]]) -> list[str]:
    conditions = experiment.conditions
    reference = conditions[0]
    head = ["Metric", *(CONDITIONS[c].label for c in conditions)]
    head += [f"{CONDITIONS[c].label} vs {CONDITIONS[reference].label}" for c in conditions[1:]]
    seed_cols = _seed_columns(experiment)
    head += seed_cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in experiment.rows:
        cells = [row.label + (f" ({_unit_label(row.unit)})" if row.unit in ("s",) else "")]
        cells += [cell(analysis.condition_stats(runs, c, row.metric), row.unit) for c in conditions]
        cells += [
            change_cell(analysis.paired_change(runs, reference, c, row.metric)) if row.relative else "—"
            for c in conditions[1:]
        ]
        cells += _seed_cells(row, len(seed_cols))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _unit_label(unit: str) -> str:
    return "simulated s" if unit == "s" else unit


def _seed_columns(experiment: Experiment) -> list[str]:
    width = max((len(r.seed) for r in experiment.rows), default=0)
    if not width:
        return []
    names = list(experiment.seed_columns)
    cols = [f"Seed: {names[i]}" if i < len(names) else "Seed: change" for i in range(width)]
    return cols


def _seed_cells(row: Row, width: int) -> list[str]:
    return [row.seed[i] if i < len(row.seed) and row.seed[i] else "—" for i in range(width)]


def semantic_table(outcomes: list[CacheOutcome]) -> list[str]:
    seed = {
        "TF-IDF >= 0.85, question only": "90% of hits false (0.85, seed's queries)",
        "TF-IDF >= 0.92, in agent context": "30% hit rate, 'still risky' (0.92 + file context)",
        "exact + validated": "recommended, not measured ('exact match', 'tool outputs')",
    }
    lines = [
        "| Cache policy | Hit rate | False hits / hits | False-positive rate | Seed |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.policy} | {o.hit_rate:.0%} ({o.hits}/{o.pairs}) | {o.false_positive_share:.0%} "
            f"({o.false_hits}/{o.hits}) | {o.false_positive_rate:.0%} | {seed.get(o.policy, '—')} |"
        )
    return lines


def summary_lines(result: BenchResult, runs: list[dict[str, Any]], outcomes: list[CacheOutcome]) -> list[str]:
    lines = [
        "| Optimization | Seed | This run (speedup, median [min–max] over seeds) | Measured on |",
        "|---|---|---|---|",
    ]
    for experiment in result.experiments:
        why = result.availability.get(experiment.name)
        if experiment.offline:
            tfidf = next(o for o in outcomes if o.policy == f"TF-IDF >= {THRESHOLDS[0]:g}, in agent context")
            exact = next(o for o in outcomes if o.policy == "exact + validated")
            ours = f"{tfidf.false_positive_share:.0%} of TF-IDF hits wrong; exact validated: {exact.false_hits} wrong"
            lines.append(f"| {experiment.title} | {experiment.seed_verdict} | {ours} | {len(PAIRS)} labelled pairs |")
            continue
        if why is not None:
            lines.append(f"| {experiment.title} | {experiment.seed_verdict} | not run: {why} | — |")
            continue
        parts = []
        for without, with_, metric in experiment.headlines:
            stats = headline(runs, without, with_, metric)
            if stats["median"] is None:
                continue
            spread = f" [{stats['min']:.2f}–{stats['max']:.2f}]" if stats["n"] > 1 else ""
            what = CONDITIONS[with_].label
            if len({m for _, _, m in experiment.headlines}) > 1:
                what += f", {_metric_label(metric)}"
            parts.append(f"{what}: {stats['median']:.2f}x{spread}")
        metric_names = sorted({m for _, _, m in experiment.headlines})
        lines.append(
            f"| {experiment.title} | {experiment.seed_verdict} | {'; '.join(parts) or '-'} | "
            f"{', '.join(_metric_label(m) for m in metric_names)} |"
        )
    return lines


def _metric_label(metric: str) -> str:
    labels = {"wall_s": "wall time", "latency_s": "mean LLM latency", "llm_s_per_agent": "LLM wait per agent"}
    return labels.get(metric, metric)


def render(result: BenchResult, plots: list[str]) -> str:
    runs = [r.as_dict() for r in result.runs]
    outcomes = evaluate_all()
    s = result.scenario
    scale = s.sim.get("time_scale", 1.0)
    failed = [r for r in result.runs if r.error]
    lines = [
        f"# goose-sidecar bench: scenario `{s.name}`",
        "",
        f"Run {result.started} with `{result.command}` ({result.real_s / 60:.1f} min on "
        f"{result.environment.get('cpus')} CPUs, Python {result.environment.get('python')}).",
        f"Scenario `{s.source}`: {s.description.strip()}",
        f"Fleet: {s.fleet.agents} coding agents + {s.fleet.writers} documentation agents, up to {s.fleet.max_turns} "
        f"turns each; seeds {s.bench.seeds}; simulator time scale x{scale:g}.",
        "",
        "All times are **simulated seconds** (LLM calls on the simulator's clock; tool and wall time are real "
        f"time x{scale:g}; the coordinator's own time constants are divided by {scale:g}; see `scenarios/README.md`, "
        f"'One clock'). {_tool_note(runs)} Each cell is the median over seeds with the "
        "min–max in brackets; changes are paired seed by seed. Seed figures are quoted from "
        f"{SEED_REPORT}, in the section each table names.",
        "",
        "## Summary",
        "",
        "Speedup = reference / condition, per seed. *Wall time* is the seed's measure: the slowest agent, LLM and "
        "tools, so it carries the CPU load of the 2-core machine (x the time scale) and the agents' diverging "
        "trajectories. *LLM wait per agent* (the sum of an agent's LLM call latencies on the simulator's clock) "
        "isolates what the coordinator and the GPU decide.",
        "",
        *summary_lines(result, runs, outcomes),
        "",
    ]
    if failed:
        lines += ["**Runs that failed** (left out of every table):", ""]
        lines += [f"- `{r.condition}` seed {r.seed}: {r.error}" for r in failed]
        lines.append("")
    for experiment in result.experiments:
        lines += [f"## {experiment.title}", "", f'Seed: "{experiment.seed_section}", {experiment.seed_verdict}.', ""]
        why = result.availability.get(experiment.name)
        if experiment.offline:
            lines += semantic_table(outcomes)
            lines += ["", _semantic_note(), ""]
            continue
        if why is not None:
            lines += [f"Not run: {why}.", ""]
            continue
        lines += experiment_table(experiment, runs)
        if experiment.note:
            lines += ["", experiment.note]
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
        lines.append("")
    lines += ["## Conditions", "", "| Condition | Coordinator settings | Fleet options |", "|---|---|---|"]
    for name in sorted({r.condition for r in result.runs}):
        run = next((fr for (n, _), fr in result.fleet_runs.items() if n == name), None)
        coord = run.settings.get("coordinator", {}) if run else {}
        fleet = (run.settings.get("fleet", {}) if run else {}) or {}
        shown = {k: fleet.get(k) for k in ("model", "tool_cache", "prefetch", "compress", "speculate_tests", "peek")}
        lines.append(f"| `{name}` | {_kv(coord)} | {_kv(shown)} |")
    lines.append("")
    return "\n".join(lines)


def _tool_note(runs: list[dict[str, Any]]) -> str:
    stats = analysis.spread(
        r["summary"]["tool_call_median_s"]
        for r in runs
        if not r.get("error") and r["summary"].get("tool_call_median_s") is not None
    )
    if stats["median"] is None:
        return ""
    return (
        f"A tool call took {stats['median']:.2f} s (median over runs of each run's median) on this clock; "
        f"real agents' tool calls take 0.3 s median, 13.6 s p90 ({citations.TRACELAB})."
    )


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in values.items()) or "—"


def _semantic_note() -> str:
    return (
        f"{len(PAIRS)} labelled agent-style query pairs (`sidecar/fleet/semantic.py`); 'in agent context' scores "
        "each question after the same agent context (system prompt, file listing, one file), as a prompt cache "
        "sees it. Identical questions asked after the workspace changed are wrong hits for any text cache; the "
        "sidecar's cache is exact and validated against the files, so it cannot return them."
    )


def results_json(result: BenchResult) -> dict[str, Any]:
    runs = [r.as_dict() for r in result.runs]
    experiments: dict[str, Any] = {}
    for experiment in result.experiments:
        if experiment.offline or result.availability.get(experiment.name):
            continue
        ref = experiment.conditions[0]
        rows = []
        for row in experiment.rows:
            rows.append(
                {
                    "label": row.label,
                    "metric": row.metric,
                    "unit": row.unit,
                    "seed": list(row.seed),
                    "conditions": {c: analysis.condition_stats(runs, c, row.metric) for c in experiment.conditions},
                    "changes": {c: analysis.paired_change(runs, ref, c, row.metric) for c in experiment.conditions[1:]},
                }
            )
        experiments[experiment.name] = {
            "title": experiment.title,
            "seed_section": experiment.seed_section,
            "seed_verdict": experiment.seed_verdict,
            "rows": rows,
            "headlines": [
                {"without": a, "with": b, "metric": m, "speedup": headline(runs, a, b, m)}
                for a, b, m in experiment.headlines
            ],
        }
    return {
        "scenario": result.scenario.model_dump(),
        "started": result.started,
        "real_s": result.real_s,
        "command": result.command,
        "environment": result.environment,
        "seed_report": SEED_REPORT,
        "availability": result.availability,
        "runs": runs,
        "experiments": experiments,
        "semantic_cache": [
            {
                "policy": o.policy,
                "pairs": o.pairs,
                "hits": o.hits,
                "false_hits": o.false_hits,
                "hit_rate": o.hit_rate,
                "false_positive_share": o.false_positive_share,
                "false_positive_rate": o.false_positive_rate,
            }
            for o in evaluate_all()
        ],
    }


def write_report(result: BenchResult, outdir: Path, plots: list[str]) -> tuple[Path, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    report = outdir / "report.md"
    report.write_text(render(result, plots), encoding="utf-8")
    data = outdir / "results.json"
    data.write_text(json.dumps(results_json(result), indent=1, default=str) + "\n", encoding="utf-8")
    return report, data
