"""Admission that cooperates with vLLM's queue: plain tables over `observe` and `admits`, no event loop."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sidecar.core.admission import AdmissionLimits, UpstreamMetrics
from sidecar.core.engine_admission import (
    AdmissionState,
    Phase,
    Reason,
    ScrapeFailure,
    admits,
    initial_state,
    observe,
    target_window,
)

NOW = 100.0
LIMITS = AdmissionLimits()  # initial 4, max 64, allowance 1, persist 2 scrapes, not vLLM after 3


def m(waiting: int = 0, running: int = 0, kv: float = 0.1, age: float = 0.0) -> UpstreamMetrics:
    return UpstreamMetrics(waiting, running, kv, 0.0, scraped_at=NOW - age)


def adaptive(window: int = 4, **fields: object) -> AdmissionState:
    return replace(AdmissionState(window=window, phase=Phase.ADAPTIVE), **fields)  # type: ignore[arg-type]


def run(state: AdmissionState, scrapes: list[UpstreamMetrics | ScrapeFailure], native: bool = True) -> AdmissionState:
    for scrape in scrapes:
        state = observe(state, scrape, NOW, native_priority=native, demand=True)
    return state


def test_a_persistent_queue_teaches_the_engine_capacity_once() -> None:
    # The case: 2 sequence slots, 4 calls admitted. Scrape after scrape shows the same two waiting.
    first = run(initial_state(), [m(waiting=2, running=2)])
    assert (first.window, first.reason, first.slots) == (4, Reason.QUEUED_ONCE, None)  # one scrape: not yet
    learned = run(first, [m(waiting=2, running=2)])
    assert (learned.slots, learned.slots_source) == (2, "learned")
    assert (learned.window, learned.reason) == (3, Reason.SLOTS)  # slots + one call waiting inside vLLM
    later = run(learned, [m(waiting=2, running=2)] * 10)
    assert later.window == 3  # the same queue is one signal: no new cut at every scrape (was 4 -> 2 -> 1)


def test_without_native_priority_nothing_is_left_to_wait_inside_vllm() -> None:
    state = run(initial_state(), [m(waiting=2, running=2)] * 3, native=False)
    assert (state.slots, state.window) == (2, 2)


def test_the_plateau_rises_when_more_run_and_ignores_kv_bound_queues() -> None:
    state = run(initial_state(), [m(waiting=1, running=2)] * 2)
    assert state.slots == 2
    assert run(state, [m(waiting=0, running=5)]).slots == 5  # more ran: the capacity was higher
    kv_bound = run(initial_state(), [m(waiting=3, running=2, kv=0.9)] * 3)
    assert kv_bound.slots is None  # KV, not max_num_seqs, held it: nothing learned
    assert (kv_bound.window, kv_bound.reason) == (3, Reason.KV_BOUND)  # what runs now, plus the allowance


@pytest.mark.parametrize(
    ("state", "snapshot", "demand", "window", "reason"),
    [
        (adaptive(4), m(), True, 8, Reason.GROW),  # lots of KV room: doubles while calls wait on it
        (adaptive(4), m(kv=0.5), True, 5, Reason.GROW),  # + increase above fast_grow_below
        (adaptive(4), m(), False, 4, Reason.IDLE),  # nobody waited: growing would mean nothing
        (adaptive(4), m(kv=0.85), True, 4, Reason.KV_HIGH),  # KV nearly full: hold
        (adaptive(40), m(), True, 64, Reason.GROW),  # up to max_window
        (adaptive(64), m(), True, 64, Reason.AT_MAX),
        (adaptive(9, learned_slots=8), m(running=8), False, 9, Reason.SLOTS),  # known capacity: its target
        (adaptive(2, learned_slots=8), m(running=2), True, 9, Reason.SLOTS),  # straight to it on demand
        (adaptive(2, learned_slots=8), m(running=2), False, 2, Reason.SLOTS),  # not above demand
        (adaptive(12, learned_slots=8), m(running=8), False, 9, Reason.SLOTS),  # never above it
        (adaptive(9, learned_slots=8), m(running=8, kv=0.85), True, 9, Reason.KV_HIGH),
        (adaptive(4, configured_slots=16), m(), True, 17, Reason.SLOTS),  # configured wins, no learning needed
    ],
)
def test_window_from_fresh_metrics(
    state: AdmissionState, snapshot: UpstreamMetrics, demand: bool, window: int, reason: Reason
) -> None:
    update = observe(state, snapshot, NOW, native_priority=True, demand=demand)
    assert (update.window, update.reason, update.phase) == (window, reason, Phase.ADAPTIVE)


def test_an_upstream_that_appears_late_is_adaptive_at_its_first_answer() -> None:
    waiting = run(initial_state(), [ScrapeFailure.UNREACHABLE] * 50)  # vLLM loading for minutes
    assert (waiting.phase, waiting.window) == (Phase.WAITING, 4)  # held, never given up on, never cut
    first = run(waiting, [m(running=1)])
    assert first.phase is Phase.ADAPTIVE and first.reason is Reason.GROW


def test_a_lost_upstream_starts_again_as_at_start_up() -> None:
    known = run(initial_state(), [m(waiting=4, running=8)] * 2)
    assert known.slots == 8 and known.window == 9
    missed = run(known, [ScrapeFailure.UNREACHABLE] * 3)  # within stale_after_s of the last answer (NOW)
    assert missed == known  # a slow scrape under load is not a lost engine
    later = NOW + LIMITS.stale_after_s + 1
    lost = observe(known, ScrapeFailure.UNREACHABLE, later, native_priority=True, demand=True)
    assert (lost.phase, lost.reason, lost.window, lost.slots) == (Phase.LOST, Reason.LOST, 4, None)
    assert run(lost, [ScrapeFailure.UNREACHABLE] * 20).window == 4  # scale to zero: held, not cut
    back = run(lost, [m(running=0)])
    assert back.phase is Phase.ADAPTIVE
    old = m(waiting=4, running=8, age=LIMITS.stale_after_s + 1)
    stale = observe(replace(known, last_seen=None), old, NOW, native_priority=True, demand=True)
    assert stale.phase is Phase.LOST  # an old snapshot is no snapshot


def test_configured_capacity_survives_a_restart() -> None:
    state = initial_state(configured_slots=2)
    assert state.window == 2  # never more than the engine runs, even before the first scrape
    seen = run(state, [m(running=2)])
    lost = observe(seen, ScrapeFailure.UNREACHABLE, NOW + LIMITS.stale_after_s + 1, native_priority=True, demand=True)
    assert lost.phase is Phase.LOST and lost.slots == 2 and lost.window <= 3


def test_a_server_without_vllm_metrics_gets_the_fixed_max_window_and_can_still_turn_out_to_be_vllm() -> None:
    two = run(initial_state(), [ScrapeFailure.NOT_VLLM] * 2)
    assert two.phase is Phase.WAITING and two.window == 4
    three = run(two, [ScrapeFailure.NOT_VLLM])
    assert (three.phase, three.window, three.reason) == (Phase.NO_VLLM_METRICS, 64, Reason.NO_VLLM_METRICS)
    assert run(three, [ScrapeFailure.UNREACHABLE]).phase is Phase.NO_VLLM_METRICS  # down for a while: no flapping
    vllm = run(three, [m(running=1)])
    assert vllm.phase is Phase.ADAPTIVE and vllm.window == 8  # from the initial window (4), doubled on demand
    later = NOW + LIMITS.stale_after_s + 1
    adaptive_then_not = observe(vllm, ScrapeFailure.NOT_VLLM, later, native_priority=True, demand=True)
    assert adaptive_then_not.phase is Phase.LOST  # first lost, then counted like any other start


@pytest.mark.parametrize(
    ("rank", "in_flight", "window", "native", "expected"),
    [
        (2, {0: 0, 1: 0, 2: 3}, 4, False, True),  # room in the window
        (2, {0: 0, 1: 0, 2: 4}, 4, True, False),  # cold behind cold: vLLM would not put it first
        (0, {0: 0, 1: 0, 2: 4}, 4, True, True),  # hot past cold: vLLM orders it ahead of the waiting colds
        (0, {0: 0, 1: 0, 2: 4}, 4, False, False),  # ... but not where vLLM serves in arrival order
        (1, {0: 0, 1: 1, 2: 3}, 4, True, True),  # warm past cold
        (0, {0: 4, 1: 0, 2: 2}, 4, True, False),  # hot work is bounded by the window too
        (0, {0: 3, 1: 0, 2: 2}, 4, True, True),
        (0, {0: 4, 1: 0, 2: 0}, 4, True, False),  # nothing worse to pass
        (1, {0: 2, 1: 2, 2: 1}, 4, True, False),  # warm counts the hot calls ahead of it
        (2, {0: 0, 1: 0, 2: 0, 3: 4}, 4, True, True),  # speculative places (rank 3) are passed like any worse
    ],
)
def test_admits(rank: int, in_flight: dict[int, int], window: int, native: bool, expected: bool) -> None:
    assert admits(rank, in_flight, window, native_priority=native) is expected


def test_target_window_stays_in_range() -> None:
    assert target_window(1000, LIMITS, True) == LIMITS.max_window
    assert target_window(0, LIMITS, False) == LIMITS.min_window
    assert target_window(2, AdmissionLimits(queue_allowance=0), True) == 2


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="queue_allowance"):
        AdmissionLimits(queue_allowance=-1)
    with pytest.raises(ValueError, match="persist_scrapes"):
        AdmissionLimits(persist_scrapes=0)
