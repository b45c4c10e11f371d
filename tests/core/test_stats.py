"""Percentiles, the bounded sample window and event rates."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.stats import SampleWindow, Summary, percentile, rate, summarize


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(v) for v in range(1, 101)], 95, 95.05),  # numpy.percentile(range(1, 101), 95)
        ([float(v) for v in range(1, 101)], 99, 99.01),
        ([0.0, 10.0], 25, 2.5),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_refuses(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summarize() -> None:
    assert summarize([]) == Summary(0)
    assert summarize([3.0, 1.0, 2.0]) == Summary(3, 2.0, pytest.approx(2.9), pytest.approx(2.98), 3.0)


def test_sample_window_keeps_the_last_samples() -> None:
    window = SampleWindow(size=3)
    for value in (100.0, 1.0, float("nan"), 2.0, 3.0):
        window.add(value)
    assert len(window) == 3
    assert window.summary() == Summary(3, 2.0, pytest.approx(2.9), pytest.approx(2.98), 3.0)
    with pytest.raises(ValueError):
        SampleWindow(size=0)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100), st.floats(0, 100))
def test_percentiles_are_ordered_and_bounded(values: list[float], q1: float, q2: float) -> None:
    ordered = sorted(values)
    low, high = sorted((q1, q2))
    assert ordered[0] <= percentile(ordered, low) <= percentile(ordered, high) <= ordered[-1]
    assert percentile(ordered, 50) == pytest.approx(statistics.median(ordered), abs=1e-6)


@pytest.mark.parametrize(
    ("times", "now", "window", "expected"),
    [
        ([], 10.0, 5.0, 0.0),
        ([6.0, 7.0, 8.0, 9.0, 10.0], 10.0, 5.0, 1.0),
        ([5.0, 6.0], 10.0, 5.0, 0.2),  # 5.0 is out (the window is (now - window, now])
        ([9.0, 11.0], 10.0, 5.0, 0.2),  # the future is not counted
        ([1.0, 2.0], 10.0, 5.0, 0.0),
    ],
)
def test_rate(times: list[float], now: float, window: float, expected: float) -> None:
    assert rate(times, now, window) == pytest.approx(expected)


def test_rate_needs_a_window() -> None:
    with pytest.raises(ValueError):
        rate([1.0], 1.0, 0.0)
