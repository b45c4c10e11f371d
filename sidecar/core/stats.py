"""Latency percentiles over a bounded window of samples, and event rates; pure, for /status and metrics.

Percentiles interpolate linearly between the closest ranks (numpy's default, `method="linear"`), so p50 of an even
count is the mean of the two middle samples.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of ascending `sorted_values`. Raises ValueError when empty or q is out of
    range."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True)
class Summary:
    """count, and p50/p95/p99/max (None when count is 0)."""

    count: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


def summarize(values: Iterable[float]) -> Summary:
    """Count, p50, p95, p99 and max of `values` (any order)."""
    ordered = sorted(values)
    if not ordered:
        return Summary(0)
    return Summary(len(ordered), percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99), ordered[-1])


class SampleWindow:
    """The last `size` samples (older ones fall out), summarized on demand. Memory O(size); add O(1)."""

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._samples: deque[float] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, value: float) -> None:
        """Record one sample (NaN is ignored)."""
        if not math.isnan(value):
            self._samples.append(value)

    def summary(self) -> Summary:
        """`summarize` over the samples in the window."""
        return summarize(self._samples)


def rate(times: Sequence[float], now: float, window_s: float) -> float:
    """Events per second over the trailing `window_s` seconds: those with now - window_s < t <= now, divided by
    window_s. `times` must be ascending (a log of completion times); events in the future are not counted."""
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    start = bisect.bisect_right(times, now - window_s)
    end = bisect.bisect_right(times, now)
    return max(end - start, 0) / window_s
