"""Aggregating bench runs: per-condition medians and spreads over seeds, and paired changes between conditions.

Pure functions over run summaries (`{"condition", "seed", "summary", "error"}`). Spread is min-max over seeds
(with three seeds an interquartile range would be two of the three points). A paired change compares two
conditions seed by seed: `(treatment - reference) / reference`, then the median and min-max over seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

Summary = Mapping[str, Any]


def values(runs: Iterable[Summary], condition: str, metric: str) -> dict[int, float]:
    """Seed -> the metric's value in that seed's run of `condition` (runs that failed or lack it left out)."""
    found: dict[int, float] = {}
    for run in runs:
        if run["condition"] != condition or run.get("error"):
            continue
        value = run["summary"].get(metric)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[int(run["seed"])] = float(value)
    return found


def spread(sample: Iterable[float]) -> dict[str, float | int | None]:
    data = sorted(sample)
    if not data:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(data), "min": data[0], "max": data[-1], "n": len(data)}


def condition_stats(runs: Iterable[Summary], condition: str, metric: str) -> dict[str, float | int | None]:
    return spread(values(runs, condition, metric).values())


def paired_change(runs: Iterable[Summary], reference: str, treatment: str, metric: str) -> dict[str, Any]:
    """Relative change of `metric` from `reference` to `treatment`, seed by seed (None where undefined)."""
    runs = list(runs)
    ref, treat = values(runs, reference, metric), values(runs, treatment, metric)
    changes = {seed: (treat[seed] - ref[seed]) / ref[seed] for seed in sorted(ref.keys() & treat.keys()) if ref[seed]}
    result: dict[str, Any] = dict(spread(changes.values()))
    result["by_seed"] = changes
    return result


def speedup(change: float | None) -> float | None:
    """A time's relative change as the seed's speedup: -50% -> 2.00x."""
    if change is None or change <= -1:
        return None
    return 1 / (1 + change)
