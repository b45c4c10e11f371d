"""A circuit breaker per upstream replica, as a pure value: callers pass `now` and keep the returned state.

Closed: calls flow. After `threshold` consecutive failures it opens for `cooldown_s`: the replica is skipped while
another is usable. After the cooldown one trial call is let through (half-open): success closes it, failure opens
it again for another cooldown. A replica whose breaker is open is still used when no other is allowed (the call
then reports the real failure rather than the coordinator inventing one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class BreakerPhase(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Breaker:
    threshold: int = 5
    cooldown_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    def phase(self, now: float) -> BreakerPhase:
        if self.opened_at is None:
            return BreakerPhase.CLOSED
        if now - self.opened_at < self.cooldown_s:
            return BreakerPhase.OPEN
        return BreakerPhase.HALF_OPEN

    def allows(self, now: float) -> bool:
        """May a call go to this replica now? (Half-open: only while no trial call is out.)"""
        phase = self.phase(now)
        return phase is BreakerPhase.CLOSED or (phase is BreakerPhase.HALF_OPEN and not self.trial_in_flight)

    def on_attempt(self, now: float) -> Breaker:
        return replace(self, trial_in_flight=True) if self.phase(now) is BreakerPhase.HALF_OPEN else self

    def on_success(self) -> Breaker:
        return replace(self, failures=0, opened_at=None, trial_in_flight=False)

    def on_failure(self, now: float) -> Breaker:
        failures = self.failures + 1
        if self.opened_at is not None or failures >= self.threshold:
            return replace(self, failures=failures, opened_at=now, trial_in_flight=False)
        return replace(self, failures=failures, trial_in_flight=False)


def backoff_s(attempt: int, base_s: float = 0.25, cap_s: float = 4.0, jitter: float = 0.0) -> float:
    """Delay before retry number `attempt` (1-based): base x 2^(attempt-1), capped, times (1 + jitter) where the
    caller draws jitter in [0, 1) so a fleet retrying at once spreads out."""
    if attempt < 1:
        return 0.0
    return min(cap_s, base_s * 2.0 ** (attempt - 1)) * (1.0 + max(0.0, min(jitter, 1.0)))
