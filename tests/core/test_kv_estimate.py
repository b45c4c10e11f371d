"""The KV correction from vLLM's own counters: plain tables, no event loop."""

from __future__ import annotations

import pytest

from sidecar.core.kv_estimate import (
    MAX_SCALE,
    MIN_RESIDENCY,
    RECOVERY_STEP,
    EngineKV,
    KVCorrection,
    KVCorrector,
    correct,
    expected_hit,
)
from sidecar.core.working_set import AgentKV, KVLedger

CAP = 3072  # 24 blocks of 128 tokens, as the real-vLLM tier's small server


def scrape(
    usage: float = 0.0, capacity: int | None = CAP, hits: float | None = 0, queries: float | None = 0
) -> EngineKV:
    return EngineKV(usage, capacity, hits, queries)


def test_nothing_is_corrected_without_the_engines_capacity() -> None:
    after = correct(KVCorrection(scale=2.0), scrape(0.9, capacity=None), 1000, 500, 1000)
    assert after.capacity_tokens is None
    assert after.effective_capacity(35840) == 35840  # the configured capacity, as before the correction
    assert after.scale == 2.0  # kept for when the capacity shows again


@pytest.mark.parametrize(
    ("usage", "in_flight", "scale"),
    [
        (0.5, 1536, 1.0),  # the engine holds exactly what the ledger counts
        (0.5, 1024, 1.25),  # 1536 held for 1024 counted (block rounding): halfway to 1.5
        (0.25, 1536, 0.75),  # it holds less (a shared prefix the ledger counted twice): halfway to 0.5
        (0.5, 100, 1.0),  # too few tokens in flight to judge
        (0.05, 1536, 1.0),  # too few held to judge (153 tokens)
        (1.0, 256, 1.0 + 0.5 * (MAX_SCALE - 1.0)),  # 12x is an odd sample: clamped to MAX_SCALE first
    ],
)
def test_scale_moves_halfway_to_usage_times_capacity_over_the_ledgers_in_flight_tokens(
    usage: float, in_flight: int, scale: float
) -> None:
    after = correct(KVCorrection(), scrape(usage), in_flight, 0, 0)
    assert after.scale == pytest.approx(scale)
    assert after.capacity_tokens == CAP
    assert after.effective_capacity(35840) == int(CAP / after.scale)


@pytest.mark.parametrize(
    ("hits", "queries", "expected_hits", "expected_queries", "residency"),
    [
        (900, 1000, 900, 1000, 0.8 + RECOVERY_STEP),  # as expected: the prediction holds, the capacity recovers
        (850, 1000, 900, 1000, 0.8 + RECOVERY_STEP),  # within TOLERANCE: what re-rendered answers leave uncached
        (1000, 1000, 500, 1000, 0.8 + RECOVERY_STEP),  # more than expected
        (700, 1000, 900, 1000, 0.8 * (700 / 900) ** 0.5),  # a real shortfall: cut
        (225, 1000, 900, 1000, 0.8 * 0.5),  # a quarter of what was expected: x sqrt(0.25)
        (0, 1000, 900, 1000, MIN_RESIDENCY),  # nothing cached: the floor
        (225, 1000, 0, 1000, 0.8),  # the ledger expected no hits: nothing to compare
        (100, 200, 900, 1000, 0.8),  # too few tokens queried to judge
    ],
)
def test_residency_follows_the_engines_hit_ratio_against_the_expected_one(
    hits: float, queries: float, expected_hits: int, expected_queries: int, residency: float
) -> None:
    first = correct(KVCorrection(residency=0.8), scrape(hits=5000, queries=10000), 0, 0, 0)
    after = correct(first, scrape(hits=5000 + hits, queries=10000 + queries), 0, expected_hits, expected_queries)
    assert after.residency == pytest.approx(residency)
    assert after.effective_capacity(1) == int(CAP * after.residency)


def test_too_few_queries_keep_the_earlier_scrape_as_the_base_until_enough_are_counted() -> None:
    first = correct(KVCorrection(), scrape(hits=0, queries=0), 0, 0, 0)
    second = correct(first, scrape(hits=50, queries=200), 0, 900, 1000)
    assert second.last is first.last and second.residency_samples == 0
    third = correct(second, scrape(hits=250, queries=1000), 0, 900, 1000)
    assert third.residency_samples == 1 and third.hit_ratio == pytest.approx(0.25)


def test_a_restarted_engines_counters_only_restart_the_deltas() -> None:
    first = correct(KVCorrection(residency=0.5), scrape(hits=9000, queries=10000), 0, 0, 0)
    after = correct(first, scrape(hits=10, queries=100), 0, 900, 1000)
    assert after.residency == 0.5 and after.last == scrape(hits=10, queries=100)


def test_an_engine_without_prefix_counters_corrects_only_the_scale() -> None:
    first = correct(KVCorrection(), scrape(0.5, hits=None, queries=None), 1024, 0, 0)
    after = correct(first, scrape(0.5, hits=None, queries=None), 1024, 900, 1000)
    assert after.residency == 1.0 and after.scale > first.scale > 1.0


@pytest.mark.parametrize(
    ("state", "resident", "prompt", "block", "expected"),
    [
        (None, True, 1200, None, 0),
        (AgentKV(1000, 100, 0, 0.0, shared_tokens=300), True, 1200, None, 1000),
        (AgentKV(1000, 100, 0, 0.0, shared_tokens=300), False, 1200, None, 300),
        (AgentKV(200, 0, 0, 0.0, shared_tokens=300), False, 1200, None, 200),
        (AgentKV(1000, 100, 0, 0.0), True, 1000, None, 999),  # the last prompt token is always computed
        (AgentKV(1000, 100, 0, 0.0), True, 1200, 128, 896),  # whole blocks only
        (AgentKV(1000, 100, 0, 0.0, shared_tokens=300), False, 1200, 128, 256),
        (AgentKV(1000, 100, 0, 0.0), True, 0, 128, 0),
    ],
)
def test_expected_hit(state: AgentKV | None, resident: bool, prompt: int, block: int | None, expected: int) -> None:
    assert expected_hit(state, resident, prompt, block) == expected


def test_the_corrector_counts_what_the_ledger_expected_and_resets_when_sampled() -> None:
    ledger, corrector = KVLedger(), KVCorrector(35840)
    corrector.started(ledger.snapshot(), "a", 800)  # before the engine's capacity is known: not counted
    assert corrector.expected_queries == 0
    corrector.observe(scrape(hits=0, queries=0), ledger.snapshot())
    assert corrector.capacity == CAP
    ledger.started("a", 0.0, 800)
    ledger.finished("a", 1.0, context_tokens=1000)
    corrector.started(ledger.snapshot(), "a", 1200)  # resident: its 1000 tokens are expected cached
    corrector.started(ledger.snapshot(), "b", 600)  # never seen: nothing expected
    assert (corrector.expected_hits, corrector.expected_queries) == (1000, 1800)
    ledger.started("a", 2.0, 1200)
    corrector.observe(scrape(usage=0.5, hits=500, queries=1800), ledger.snapshot())
    assert (corrector.expected_hits, corrector.expected_queries) == (0, 0)
    c = corrector.correction
    assert c.hit_ratio == pytest.approx(500 / 1800) and c.expected_hit_ratio == pytest.approx(1000 / 1800)
    assert c.residency == pytest.approx(0.5**0.5)
    assert c.scale == pytest.approx(1 + 0.5 * (1536 / 1200 - 1))  # a's 1200 tokens in flight, 1536 held
    assert corrector.capacity == int(CAP * c.residency / c.scale)


def test_residency_recovers_only_up_to_the_engines_whole_capacity() -> None:
    first = correct(KVCorrection(residency=0.98), scrape(hits=0, queries=0), 0, 0, 0)
    after = correct(first, scrape(hits=900, queries=1000), 0, 900, 1000)
    assert after.residency == 1.0 and after.effective_capacity(1) == CAP
