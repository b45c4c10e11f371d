"""How many calls an upstream may run at once, read from its own signals; back-pressure when queues are full.

The coordinator keeps the order of work; the upstream should only see as many calls as it can run at its throughput
knee. vLLM shows where that is in `/metrics` (`reference/vllm.md`): `num_requests_waiting` > 0 means it already
queues work itself (the coordinator gave it too much, and lost the chance to order it), KV usage near full means the
next long context preempts one, and a growing `num_preemptions_total` means that already happened (recompute).

    saturation(snapshot)        a score in [0, 1+], llm-d style: 1 or more is saturated; stale metrics count as 1.
    next_window(current, ...)   the earlier AIMD window (cut on every queued scrape and on preemptions); the
                                dispatcher now uses `engine_admission`, which cooperates with vLLM's own queue.
    has_spare_capacity(...)     room for speculative work (the conservative predicate of reference/vllm.md).
    retry_after_s(...)          `Retry-After` for a 429 from the queue's drain rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from sidecar.core.partition import ALONE, Share


@dataclass(frozen=True)
class UpstreamMetrics:
    """One scrape of an upstream's `/metrics`, stamped with the coordinator's clock at `scraped_at` (seconds).

    `kv_usage` is `vllm:kv_cache_usage_perc` (0..1); `preemptions_total` the counter `vllm:num_preemptions_total`;
    `max_num_seqs` the engine's batch limit when known; `kv_capacity_tokens` the KV cache's size in tokens from
    `vllm:cache_config_info` (its `kv_cache_size_tokens` label, else `num_gpu_blocks` x `block_size`) when shown,
    `kv_block_tokens` its `block_size`;
    `prefix_cache_hits_total` / `prefix_cache_queries_total` the counters `vllm:prefix_cache_hits_total` /
    `vllm:prefix_cache_queries_total` (prompt tokens found cached / looked up) when shown.
    """

    waiting: int
    running: int
    kv_usage: float
    preemptions_total: float
    scraped_at: float
    max_num_seqs: int | None = None
    kv_capacity_tokens: int | None = None
    kv_block_tokens: int | None = None
    prefix_cache_hits_total: float | None = None
    prefix_cache_queries_total: float | None = None


@dataclass(frozen=True)
class AdmissionLimits:
    """Thresholds of the admission policy. Defaults cite their sources; each is a setting, not a constant."""

    stale_after_s: float = 10.0  # metrics older than this count as saturated (about 5 missed 2 s scrapes)
    queue_saturated: int = 5  # llm-d's saturation detector: queue depth 5 (reference/calibration.md)
    kv_saturated: float = 0.8  # llm-d's saturation detector: KV 0.8 (reference/calibration.md)
    kv_grow_below: float = 0.8  # the window grows only below this KV usage
    # Below this KV usage (and nothing queued upstream) the window doubles instead of adding `increase`: a lightly
    # loaded upstream should not make calls wait here while the window creeps up (the fleet bench saw hot calls
    # ~11% slower than fcfs from exactly that at low load).
    fast_grow_below: float = 0.25
    min_window: int = 1
    max_window: int = 64
    initial_window: int = 4  # a 32B model on one A100 holds ~30-40K KV tokens: a few agent contexts (vllm.md)
    increase: int = 1  # added per update while the upstream has room
    decrease_factor: float = 0.7  # multiplicative cut on stale metrics or preemptions; the floor of other cuts
    spare_running_fraction: float = 0.6  # spare capacity: running < 0.6 x max_num_seqs (reference/vllm.md)
    spare_kv_below: float = 0.6  # spare capacity: KV usage < 0.6 (reference/vllm.md)
    default_max_num_seqs: int = 256  # vLLM's default on an A100-80GB (reference/vllm.md)
    # Calls allowed to wait inside vLLM beyond its running capacity when native priority orders them
    # (`engine_admission`). One is enough to keep the batch full: a slot freed in vLLM stays idle about one
    # coordinator round trip, and with 256 slots, 20 s calls and a 60 ms round trip that is 256 x 0.06 / 20 ~ 0.8
    # slots on average (vllm.md: max_num_seqs 256; the seed's calls took 3-15 s, long contexts longer).
    queue_allowance: int = 1
    # vLLM's queue counts as the engine's plateau once it is seen at this many scrapes in a row (one is often a
    # call that arrived between two engine steps).
    persist_scrapes: int = 2
    # Scrapes answered without vLLM metrics, in a row, before the upstream gets the fixed max_window.
    not_vllm_after: int = 3
    # This coordinator's part of the upstream when several share it (`core.partition`): `engine_admission` scales
    # the engine's capacity and running count to it; `engine_admission.peer_limits` scales the windows here.
    share: Share = ALONE

    def __post_init__(self) -> None:
        errors = []
        if not 1 <= self.min_window <= self.initial_window <= self.max_window:
            errors.append("need 1 <= min_window <= initial_window <= max_window")
        if not 0 < self.decrease_factor < 1:
            errors.append("decrease_factor must be in (0, 1)")
        if min(self.increase, self.queue_saturated, self.default_max_num_seqs, self.persist_scrapes) < 1:
            errors.append("increase, queue_saturated, default_max_num_seqs and persist_scrapes must be >= 1")
        if self.queue_allowance < 0 or self.not_vllm_after < 1:
            errors.append("queue_allowance must be >= 0 and not_vllm_after >= 1")
        if not (self.stale_after_s > 0 and self.kv_saturated > 0):
            errors.append("stale_after_s and kv_saturated must be > 0")
        if errors:
            raise ValueError("; ".join(errors))


DEFAULT_LIMITS = AdmissionLimits()


class WindowReason(StrEnum):
    """Why the window changed or held (a metric label)."""

    STALE = "stale"  # no fresh metrics: treated as saturated, cut
    PREEMPTED = "preempted"  # new preemptions since the previous scrape: cut
    QUEUED = "queued"  # the upstream queues calls itself: cut by its queue length
    KV_HIGH = "kv_high"  # KV nearly full: hold
    IDLE = "idle"  # the window was not what limited us: hold (growing it would mean nothing)
    GROW = "grow"  # room and demand: add
    AT_MAX = "at_max"  # room and demand, but at max_window or the engine's max_num_seqs: hold


@dataclass(frozen=True)
class WindowUpdate:
    """The next window and why."""

    window: int
    reason: WindowReason


def is_stale(snapshot: UpstreamMetrics | None, now: float, limits: AdmissionLimits = DEFAULT_LIMITS) -> bool:
    """True when there is no snapshot or it is older than `stale_after_s`."""
    return snapshot is None or now - snapshot.scraped_at > limits.stale_after_s


def new_preemptions(snapshot: UpstreamMetrics, prev: UpstreamMetrics | None) -> bool:
    """True when the preemption counter grew since `prev` (a counter that went down, a restart, is not growth)."""
    return prev is not None and snapshot.preemptions_total > prev.preemptions_total


def saturation(
    snapshot: UpstreamMetrics | None,
    now: float,
    prev: UpstreamMetrics | None = None,
    limits: AdmissionLimits = DEFAULT_LIMITS,
) -> float:
    """How full the upstream is: max(waiting / queue_saturated, kv_usage / kv_saturated), >= 0; >= 1.0 is saturated.

    Stale metrics give 1.0 (saturated, as in llm-d), new preemptions at least 1.0. Negative inputs count as 0.
    """
    if snapshot is None or is_stale(snapshot, now, limits):
        return 1.0
    score = max(max(snapshot.waiting, 0) / limits.queue_saturated, max(snapshot.kv_usage, 0.0) / limits.kv_saturated)
    return max(score, 1.0) if new_preemptions(snapshot, prev) else score


def _cap(limits: AdmissionLimits, snapshot: UpstreamMetrics | None) -> int:
    if snapshot is not None and snapshot.max_num_seqs is not None and snapshot.max_num_seqs >= limits.min_window:
        return min(limits.max_window, snapshot.max_num_seqs)
    return limits.max_window


def next_window(
    current: int,
    snapshot: UpstreamMetrics | None,
    prev_snapshot: UpstreamMetrics | None,
    now: float,
    limits: AdmissionLimits = DEFAULT_LIMITS,
    *,
    window_full: bool = True,
) -> WindowUpdate:
    """The in-flight window after one metrics scrape; always within [min_window, max_window] (and <= max_num_seqs
    when known and >= min_window). Call once per new scrape with the scrape before it as `prev_snapshot`.

    In this order: stale metrics -> cut to floor(current x decrease_factor) (at least 1 less); new preemptions -> the
    same cut; the upstream queuing (`waiting` > 0) -> down by its queue length, at least 1, at most the
    multiplicative cut; KV usage >= kv_grow_below -> hold; `window_full` False (calls did not wait on the window
    since the last update) -> hold; KV usage < fast_grow_below -> doubled; else + `increase`.
    """
    cap = _cap(limits, snapshot)
    current = min(max(current, limits.min_window), cap)
    cut = max(limits.min_window, min(current - 1, math.floor(current * limits.decrease_factor)))
    if snapshot is None or is_stale(snapshot, now, limits):
        return WindowUpdate(cut, WindowReason.STALE)
    if new_preemptions(snapshot, prev_snapshot):
        return WindowUpdate(cut, WindowReason.PREEMPTED)
    if snapshot.waiting > 0:
        return WindowUpdate(max(cut, current - snapshot.waiting), WindowReason.QUEUED)
    if snapshot.kv_usage >= limits.kv_grow_below:
        return WindowUpdate(current, WindowReason.KV_HIGH)
    if not window_full:
        return WindowUpdate(current, WindowReason.IDLE)
    step = current if snapshot.kv_usage < limits.fast_grow_below else 0
    grown = min(current + max(limits.increase, step), cap)
    return WindowUpdate(grown, WindowReason.GROW if grown > current else WindowReason.AT_MAX)


def has_spare_capacity(
    snapshot: UpstreamMetrics | None,
    now: float,
    prev: UpstreamMetrics | None = None,
    limits: AdmissionLimits = DEFAULT_LIMITS,
) -> bool:
    """Room for speculative work: fresh metrics with waiting == 0, running < spare_running_fraction x max_num_seqs
    (default_max_num_seqs when unknown), KV usage < spare_kv_below, and no new preemptions since `prev`."""
    if snapshot is None or is_stale(snapshot, now, limits):
        return False
    max_seqs = snapshot.max_num_seqs or limits.default_max_num_seqs
    return (
        snapshot.waiting == 0
        and snapshot.running < limits.spare_running_fraction * max_seqs
        and snapshot.kv_usage < limits.spare_kv_below
        and not new_preemptions(snapshot, prev)
    )


def retry_after_s(queue_len: int, drain_rate: float, *, min_s: int = 1, max_s: int = 60) -> int:
    """Whole seconds for `Retry-After` on a 429: the time to drain `queue_len` calls at `drain_rate` calls/s,
    rounded up and clamped to [min_s, max_s]. A rate that is 0, negative or not finite (nothing finished lately)
    gives max_s: there is no evidence the queue moves, so ask for the longest wait.
    """
    if max_s < min_s or min_s < 0:
        raise ValueError(f"need 0 <= min_s <= max_s, got {min_s}, {max_s}")
    if not (math.isfinite(drain_rate) and drain_rate > 0):
        return max_s
    seconds = max(queue_len, 0) / drain_rate
    return max_s if seconds >= max_s else max(math.ceil(seconds), min_s)
