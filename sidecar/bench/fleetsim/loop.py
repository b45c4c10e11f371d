"""The virtual clock: a heap of (time, seq, callback), run in time order (ties in scheduling order).

vidur's shape (`../shared/STYLE.md`): one small loop, no wall clock, no threads. Callbacks schedule their own
follow-ups with `at`; `run` stops when the heap is empty or `until()` turns true.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Loop:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.events = 0

    def clock(self) -> float:
        """The virtual now (what the coordinator's dispatcher reads instead of `time.monotonic`)."""
        return self.now

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` at `when` (never before now)."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), callback, args))

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        while self._heap and not until():
            when, _, callback, args = heapq.heappop(self._heap)
            self.now = when
            self.events += 1
            callback(*args)
