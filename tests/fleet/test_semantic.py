"""The semantic-caching experiment: TF-IDF arithmetic, the labelled set, and the cache metrics."""

from __future__ import annotations

import math

import pytest

from sidecar.fleet.semantic import (
    PAIRS,
    CacheOutcome,
    Pair,
    TfIdf,
    evaluate_all,
    evaluate_exact_text,
    evaluate_exact_validated,
    evaluate_threshold,
    tokens,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What does hash_password do?", ["what", "does", "hash", "password", "do", "what does", "does hash",
                                         "hash password", "password do"]),
        ("stats.py", ["stats", "py", "stats py"]),
        ("", []),
    ],
)  # fmt: skip
def test_tokens(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


def test_tfidf_by_hand() -> None:
    model = TfIdf(["a b", "a c"])
    # n = 2; "a" and "a b"... df: a=2, b=1, c=1, "a b"=1, "a c"=1; idf = ln(3 / (1 + df)) + 1
    idf_a, idf_rare = math.log(3 / 3) + 1, math.log(3 / 2) + 1
    assert model.idf["a"] == pytest.approx(idf_a)
    assert model.idf["b"] == pytest.approx(idf_rare)
    va = model.vector("a b")
    norm = math.sqrt(idf_a**2 + 2 * idf_rare**2)
    assert va["a"] == pytest.approx(idf_a / norm)
    assert model.similarity("a b", "a c") == pytest.approx((idf_a / norm) ** 2)
    assert model.similarity("a b", "a b") == pytest.approx(1.0)
    assert model.similarity("a b", "zzz") == 0.0
    assert model.similarity("", "a") == 0.0


def test_labelled_set_is_consistent() -> None:
    assert len(PAIRS) >= 40
    kinds = {p.kind for p in PAIRS}
    assert {"paraphrase", "other_symbol", "other_file", "state", "identical", "other_task"} <= kinds
    for pair in PAIRS:
        if pair.state_changed:  # identical text after the workspace changed: never the same answer
            assert pair.first == pair.second and not pair.same
        if pair.kind == "identical":
            assert pair.first == pair.second and pair.same and not pair.state_changed
        if pair.kind == "paraphrase":
            assert pair.same and pair.first != pair.second
        if pair.kind in ("other_symbol", "other_file", "other_task"):
            assert not pair.same
    assert len({(p.first, p.second, p.state_changed) for p in PAIRS}) == len(PAIRS)


def test_metrics_on_a_small_set() -> None:
    pairs = [
        Pair("x", "x", True, "identical"),
        Pair("x", "x", False, "state", True),
        Pair("a b c", "a b d", False, "other_symbol"),
        Pair("p q", "r s", True, "paraphrase"),
    ]
    exact = evaluate_exact_text(pairs)
    assert (exact.hits, exact.false_hits, exact.missed) == (2, 1, 1)
    assert exact.hit_rate == 0.5 and exact.false_positive_share == 0.5
    assert exact.false_positive_rate == 0.5  # one of the two pairs that should not hit did
    validated = evaluate_exact_validated(pairs)
    assert (validated.hits, validated.false_hits) == (1, 0)
    everything = evaluate_threshold(pairs, 0.0)
    assert (everything.hits, everything.false_hits) == (4, 2)
    assert CacheOutcome("none", 0, 0, 0, 0).false_positive_share == 0.0


def test_exact_validated_caching_is_never_wrong_and_tfidf_is() -> None:
    outcomes = {o.policy: o for o in evaluate_all()}
    assert outcomes["exact + validated"].false_hits == 0
    assert outcomes["exact + validated"].hits == sum(1 for p in PAIRS if p.kind == "identical")
    assert outcomes["exact text, unvalidated"].false_hits == sum(1 for p in PAIRS if p.state_changed)
    for threshold in (0.85, 0.92):
        question = outcomes[f"TF-IDF >= {threshold:g}, question only"]
        context = outcomes[f"TF-IDF >= {threshold:g}, in agent context"]
        assert question.false_hits > 0
        assert context.hits >= question.hits  # the shared context makes everything look alike
        assert context.false_positive_share >= 0.5
    assert outcomes["TF-IDF >= 0.85, in agent context"].hits >= outcomes["TF-IDF >= 0.92, in agent context"].hits
