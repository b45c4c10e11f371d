"""Explicit priority values and all sources together, in the design's precedence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.priority import ParsedPriority, ReportedStage, parse_priority, resolve_priority
from sidecar.core.stages import (
    TIERS,
    Source,
    Stage,
    Tier,
    native_priority,
    stage_tiers_from,
)
from tests.core.messages import PYTEST_FAIL, TASK, turn, user

# ---------------------------------------------------------------------------------------------------------------
# Explicit priority values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hot", ParsedPriority(Tier.HOT)),
        (" COLD ", ParsedPriority(Tier.COLD)),
        ("Warm", ParsedPriority(Tier.WARM)),
        ("code_edit", ParsedPriority(Tier.HOT, stage=Stage.CODE_EDIT)),
        ("docs", ParsedPriority(Tier.COLD, stage=Stage.DOCS)),
        (0, ParsedPriority(Tier.HOT, native=0)),
        (-5, ParsedPriority(Tier.HOT, native=-5)),
        (1, ParsedPriority(Tier.WARM, native=1)),
        (2, ParsedPriority(Tier.COLD, native=2)),
        (100, ParsedPriority(Tier.COLD, native=100)),
        ("-1", ParsedPriority(Tier.HOT, native=-1)),
        ("1", ParsedPriority(Tier.WARM, native=1)),
        (None, None),
        ("", None),
        ("urgent", None),
        (True, None),
        (1.0, None),
        ({"tier": "hot"}, None),
        ("1.5", None),
    ],
)
def test_parse_priority(value: object, expected: ParsedPriority | None) -> None:
    assert parse_priority(value) == expected


def test_parse_priority_stage_names_follow_the_mapping() -> None:
    assert parse_priority("docs", stage_tiers_from({"docs": "hot"})) == ParsedPriority(Tier.HOT, stage=Stage.DOCS)


@given(st.sampled_from(TIERS))
def test_native_priority_round_trips(tier: Tier) -> None:
    assert parse_priority(native_priority(tier)) == ParsedPriority(tier, native=native_priority(tier))


# ---------------------------------------------------------------------------------------------------------------
# All sources together, in DESIGN.md's precedence

FAILING = [user(TASK), *turn("sidecar__run_tests", PYTEST_FAIL)]  # classifier: test_analyze (hot)
READING = [user(TASK), *turn("sidecar__read_file", "x", path="a.py")]  # classifier: explore (cold)
FRESH_DOCS = ReportedStage(Stage.DOCS, at=95.0)  # fresh at now=100 with ttl 30
STALE_DOCS = ReportedStage(Stage.DOCS, at=10.0)


@pytest.mark.parametrize(
    ("body", "header", "reported", "messages", "expected"),
    [
        # body first
        ("cold", "hot", FRESH_DOCS, FAILING, (Tier.COLD, Source.BODY, Stage.DOCS, Source.REPORTED, None)),
        (2, None, None, FAILING, (Tier.COLD, Source.BODY, Stage.TEST_ANALYZE, Source.TOOLS, 2)),
        (-3, None, None, [], (Tier.HOT, Source.BODY, None, Source.DEFAULT, -3)),
        ("commit_msg", "hot", None, FAILING, (Tier.WARM, Source.BODY, Stage.COMMIT_MSG, Source.BODY, None)),
        # header next; an unknown body value counts as absent
        (None, "hot", FRESH_DOCS, READING, (Tier.HOT, Source.HEADER, Stage.DOCS, Source.REPORTED, None)),
        ("urgent", "cold", None, FAILING, (Tier.COLD, Source.HEADER, Stage.TEST_ANALYZE, Source.TOOLS, None)),
        (None, "1", None, [], (Tier.WARM, Source.HEADER, None, Source.DEFAULT, 1)),
        (None, "explore", None, FAILING, (Tier.COLD, Source.HEADER, Stage.EXPLORE, Source.HEADER, None)),
        # a fresh report next, over the conversation
        (None, None, FRESH_DOCS, FAILING, (Tier.COLD, Source.REPORTED, Stage.DOCS, Source.REPORTED, None)),
        (None, "", FRESH_DOCS, FAILING, (Tier.COLD, Source.REPORTED, Stage.DOCS, Source.REPORTED, None)),
        # a stale report is ignored
        (None, None, STALE_DOCS, FAILING, (Tier.HOT, Source.TOOLS, Stage.TEST_ANALYZE, Source.TOOLS, None)),
        (None, None, None, READING, (Tier.COLD, Source.TOOLS, Stage.EXPLORE, Source.TOOLS, None)),
        (
            None,
            None,
            None,
            [user("please fix it")],
            (Tier.HOT, Source.KEYWORDS, Stage.CODE_EDIT, Source.KEYWORDS, None),
        ),
        # nothing at all: warm
        (None, None, STALE_DOCS, [], (Tier.WARM, Source.DEFAULT, None, Source.DEFAULT, None)),
    ],
)
def test_resolve_priority(
    body: object,
    header: str | None,
    reported: ReportedStage | None,
    messages: list[dict[str, Any]],
    expected: tuple[Tier, Source, Stage | None, Source, int | None],
) -> None:
    got = resolve_priority(body, header, reported, now=100.0, ttl=30.0, messages=messages)
    assert (got.tier, got.source, got.stage, got.stage_source, got.native) == expected
    assert got.reason


def test_resolve_priority_uses_the_configured_mapping() -> None:
    tiers = stage_tiers_from({"explore": "warm"})
    got = resolve_priority(None, None, None, 0.0, 30.0, READING, stage_tiers=tiers)
    assert got.tier is Tier.WARM


@pytest.mark.parametrize(("age", "fresh"), [(0.0, True), (30.0, True), (30.01, False), (-5.0, True)])
def test_report_freshness(age: float, fresh: bool) -> None:
    assert ReportedStage(Stage.PLAN, at=100.0).is_fresh(100.0 + age, ttl=30.0) is fresh


_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
_content = _scalar | st.lists(st.dictionaries(st.sampled_from(["type", "text"]), _scalar, max_size=2), max_size=3)
_function = st.fixed_dictionaries({}, optional={"name": _scalar, "arguments": _scalar | st.just('{"path": "a.md"}')})
_call = st.fixed_dictionaries({}, optional={"id": _scalar, "function": _function | _scalar})
_message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "tool", "system"]) | _scalar,
        "content": _content,
        "tool_calls": st.lists(_call, max_size=3) | _scalar,
        "tool_call_id": _scalar,
    },
)


@settings(deadline=None)  # a wall-clock deadline fails on a loaded machine without any bug
@given(st.lists(_message, max_size=6))
def test_arbitrary_json_never_raises(messages: Sequence[Mapping[str, object]]) -> None:
    found = resolve_priority(None, None, None, 0.0, 30.0, messages)
    assert found.tier in TIERS
