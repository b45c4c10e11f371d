from __future__ import annotations

import pytest

from sidecar.core.breaker import Breaker, BreakerPhase, backoff_s


def test_opens_after_threshold_consecutive_failures_and_recovers_through_a_trial() -> None:
    b = Breaker(threshold=3, cooldown_s=10)
    for t in range(2):
        b = b.on_failure(float(t))
        assert b.allows(float(t)) and b.phase(float(t)) is BreakerPhase.CLOSED
    b = b.on_failure(2.0)
    assert b.phase(2.0) is BreakerPhase.OPEN and not b.allows(5.0)
    assert b.phase(12.0) is BreakerPhase.HALF_OPEN and b.allows(12.0)
    b = b.on_attempt(12.0)
    assert not b.allows(12.5)  # one trial at a time
    b = b.on_success()
    assert b.phase(13.0) is BreakerPhase.CLOSED and b.failures == 0


def test_a_failed_trial_reopens_for_a_full_cooldown() -> None:
    b = Breaker(threshold=1, cooldown_s=5).on_failure(0.0)
    b = b.on_attempt(6.0).on_failure(6.0)
    assert b.phase(10.0) is BreakerPhase.OPEN and b.phase(11.0) is BreakerPhase.HALF_OPEN


def test_success_resets_the_count() -> None:
    b = Breaker(threshold=2).on_failure(0.0).on_success().on_failure(1.0)
    assert b.phase(1.0) is BreakerPhase.CLOSED


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(0, 0.0, 0.0), (1, 0.0, 0.25), (2, 0.0, 0.5), (3, 0.5, 1.5), (10, 0.0, 4.0), (10, 1.0, 8.0), (2, 7.0, 1.0)],
)
def test_backoff(attempt: int, jitter: float, expected: float) -> None:
    assert backoff_s(attempt, jitter=jitter) == expected
