"""Admission: saturation, the adaptive in-flight window, spare capacity, Retry-After; tables and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.admission import (
    DEFAULT_LIMITS,
    AdmissionLimits,
    UpstreamMetrics,
    WindowReason,
    has_spare_capacity,
    is_stale,
    new_preemptions,
    next_window,
    retry_after_s,
    saturation,
)

NOW = 100.0


def m(
    waiting: int = 0,
    running: int = 2,
    kv: float = 0.3,
    preemptions: float = 0.0,
    age: float = 1.0,
    max_num_seqs: int | None = None,
) -> UpstreamMetrics:
    return UpstreamMetrics(waiting, running, kv, preemptions, scraped_at=NOW - age, max_num_seqs=max_num_seqs)


# ---------------------------------------------------------------------------------------------------------------
# Staleness, preemptions, saturation


@pytest.mark.parametrize(
    ("snapshot", "stale"), [(None, True), (m(age=0.0), False), (m(age=10.0), False), (m(age=10.01), True)]
)
def test_is_stale(snapshot: UpstreamMetrics | None, stale: bool) -> None:
    assert is_stale(snapshot, NOW) is stale


@pytest.mark.parametrize(
    ("prev", "now_total", "expected"),
    [
        (None, 5.0, False),
        (m(preemptions=5.0), 5.0, False),
        (m(preemptions=5.0), 6.0, True),
        (m(preemptions=9.0), 0.0, False),
    ],
)
def test_new_preemptions(prev: UpstreamMetrics | None, now_total: float, expected: bool) -> None:
    assert new_preemptions(m(preemptions=now_total), prev) is expected


@pytest.mark.parametrize(
    ("snapshot", "prev", "expected"),
    [
        (m(waiting=0, kv=0.0), None, 0.0),
        (m(waiting=0, kv=0.4), None, 0.5),  # 0.4 / 0.8
        (m(waiting=5, kv=0.4), None, 1.0),  # llm-d's queue depth 5
        (m(waiting=10, kv=0.4), None, 2.0),  # 1+: more than saturated
        (m(waiting=1, kv=0.8), None, 1.0),  # llm-d's KV 0.8
        (m(kv=0.2, preemptions=3.0), m(preemptions=2.0), 1.0),  # new preemptions: at least saturated
        (m(waiting=10, preemptions=3.0), m(preemptions=2.0), 2.0),
        (m(age=30.0), None, 1.0),  # stale: saturated
        (None, None, 1.0),
        (m(waiting=-3, kv=-0.5), None, 0.0),  # nonsense readings count as zero
    ],
)
def test_saturation(snapshot: UpstreamMetrics | None, prev: UpstreamMetrics | None, expected: float) -> None:
    assert saturation(snapshot, NOW, prev) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------------
# The window


@pytest.mark.parametrize(
    ("current", "snapshot", "prev", "full", "window", "reason"),
    [
        (8, m(), m(), True, 9, WindowReason.GROW),
        (8, m(), None, True, 9, WindowReason.GROW),
        (8, m(kv=0.79), m(), True, 9, WindowReason.GROW),
        (8, m(kv=0.1), m(), True, 16, WindowReason.GROW),  # lots of room: doubles (slow start)
        (40, m(kv=0.1), m(), True, 64, WindowReason.GROW),  # ... up to max_window
        (8, m(kv=0.1, waiting=1), m(), True, 7, WindowReason.QUEUED),
        (8, m(), m(), False, 8, WindowReason.IDLE),  # calls did not wait on the window: growing means nothing
        (8, m(kv=0.8), m(), True, 8, WindowReason.KV_HIGH),
        (8, m(kv=0.95), m(), True, 8, WindowReason.KV_HIGH),
        (10, m(waiting=1), m(), True, 9, WindowReason.QUEUED),  # down by the upstream's own queue
        (10, m(waiting=2), m(), True, 8, WindowReason.QUEUED),
        (10, m(waiting=50), m(), True, 7, WindowReason.QUEUED),  # at most the multiplicative cut (x0.7)
        (10, m(preemptions=4.0), m(preemptions=3.0), True, 7, WindowReason.PREEMPTED),
        (10, m(preemptions=4.0), m(preemptions=4.0), True, 11, WindowReason.GROW),
        (10, m(age=11.0), m(), True, 7, WindowReason.STALE),
        (10, None, None, True, 7, WindowReason.STALE),
        (2, None, None, True, 1, WindowReason.STALE),  # at least one less
        (1, None, None, True, 1, WindowReason.STALE),  # never below min_window
        (1, m(waiting=3), m(), True, 1, WindowReason.QUEUED),
        (64, m(), m(), True, 64, WindowReason.AT_MAX),
        (500, m(), m(), True, 64, WindowReason.AT_MAX),  # an out-of-range current is clamped first
        (0, m(), m(), True, 2, WindowReason.GROW),
        (16, m(max_num_seqs=16), m(), True, 16, WindowReason.AT_MAX),  # never above the engine's batch limit
        (20, m(max_num_seqs=16), m(), True, 16, WindowReason.AT_MAX),
    ],
)
def test_next_window(
    current: int,
    snapshot: UpstreamMetrics | None,
    prev: UpstreamMetrics | None,
    full: bool,
    window: int,
    reason: WindowReason,
) -> None:
    update = next_window(current, snapshot, prev, NOW, window_full=full)
    assert (update.window, update.reason) == (window, reason)


def test_the_window_finds_a_knee() -> None:
    """An upstream that queues whatever exceeds 12 concurrent calls: the window climbs to about 12 and stays near."""
    window = DEFAULT_LIMITS.initial_window
    prev = None
    history = []
    for step in range(200):
        snapshot = UpstreamMetrics(max(window - 12, 0), min(window, 12), 0.3, 0.0, scraped_at=float(step))
        window = next_window(window, snapshot, prev, float(step), window_full=True).window
        prev = snapshot
        history.append(window)
    assert max(history[50:]) <= 13 and min(history[50:]) >= 12


@pytest.mark.parametrize(
    "bad",
    [
        {"min_window": 0},
        {"min_window": 5, "initial_window": 4},
        {"initial_window": 100},
        {"decrease_factor": 1.0},
        {"decrease_factor": 0.0},
        {"increase": 0},
        {"stale_after_s": 0.0},
    ],
)
def test_limits_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(**bad)  # type: ignore[arg-type]


def test_limits_report_every_error_at_once() -> None:
    with pytest.raises(ValueError, match=r"min_window.*decrease_factor"):
        AdmissionLimits(min_window=0, decrease_factor=2.0)


_snapshots = st.one_of(
    st.none(),
    st.builds(
        UpstreamMetrics,
        waiting=st.integers(-2, 300),
        running=st.integers(0, 300),
        kv_usage=st.floats(-0.1, 1.2),
        preemptions_total=st.floats(0, 100),
        scraped_at=st.floats(NOW - 30.0, NOW),
        max_num_seqs=st.none() | st.integers(0, 300),
    ),
)


@given(st.integers(-5, 500), _snapshots, _snapshots, st.booleans())
def test_window_stays_in_bounds_and_never_grows_when_saturated(
    current: int, snapshot: UpstreamMetrics | None, prev: UpstreamMetrics | None, full: bool
) -> None:
    update = next_window(current, snapshot, prev, NOW, window_full=full)
    assert DEFAULT_LIMITS.min_window <= update.window <= DEFAULT_LIMITS.max_window
    clamped = min(max(current, DEFAULT_LIMITS.min_window), DEFAULT_LIMITS.max_window)
    if saturation(snapshot, NOW, prev) >= 1.0 or not full:
        assert update.window <= clamped
    if is_stale(snapshot, NOW):
        assert update.reason is WindowReason.STALE


# ---------------------------------------------------------------------------------------------------------------
# Spare capacity (for speculation)


@pytest.mark.parametrize(
    ("snapshot", "prev", "spare"),
    [
        (m(waiting=0, running=10, kv=0.3), m(), True),
        (m(waiting=1, running=10, kv=0.3), m(), False),
        (m(running=153, kv=0.3), m(), True),  # < 0.6 x 256 (vLLM's default max_num_seqs)
        (m(running=154, kv=0.3), m(), False),
        (m(running=5, kv=0.3, max_num_seqs=8), m(), False),  # 5 >= 0.6 x 8
        (m(running=4, kv=0.3, max_num_seqs=8), m(), True),
        (m(kv=0.6), m(), False),
        (m(kv=0.59), m(), True),
        (m(preemptions=2.0), m(preemptions=1.0), False),
        (m(preemptions=2.0), None, True),
        (m(age=10.5), m(), False),  # stale
        (None, None, False),
    ],
)
def test_has_spare_capacity(snapshot: UpstreamMetrics | None, prev: UpstreamMetrics | None, spare: bool) -> None:
    assert has_spare_capacity(snapshot, NOW, prev) is spare


@given(_snapshots, _snapshots)
def test_spare_capacity_implies_unsaturated(snapshot: UpstreamMetrics | None, prev: UpstreamMetrics | None) -> None:
    if has_spare_capacity(snapshot, NOW, prev):
        assert saturation(snapshot, NOW, prev) < 1.0


# ---------------------------------------------------------------------------------------------------------------
# Retry-After


@pytest.mark.parametrize(
    ("queue_len", "rate", "seconds"),
    [
        (10, 2.0, 5),
        (11, 2.0, 6),  # rounded up
        (0, 2.0, 1),  # at least min_s
        (1, 100.0, 1),
        (10_000, 1.0, 60),  # at most max_s
        (10, 0.0, 60),  # nothing drains: the longest wait
        (10, -1.0, 60),
        (10, math.nan, 60),
        (10, math.inf, 60),
        (-4, 1.0, 1),
    ],
)
def test_retry_after(queue_len: int, rate: float, seconds: int) -> None:
    assert retry_after_s(queue_len, rate) == seconds


def test_retry_after_bounds_are_settings() -> None:
    assert retry_after_s(100, 1.0, min_s=2, max_s=30) == 30
    assert retry_after_s(0, 1.0, min_s=2, max_s=30) == 2
    with pytest.raises(ValueError):
        retry_after_s(1, 1.0, min_s=5, max_s=1)


@given(st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True))
def test_retry_after_is_always_in_bounds(queue_len: int, rate: float) -> None:
    assert 1 <= retry_after_s(queue_len, rate) <= 60
