from __future__ import annotations

from typing import Any

import pytest

from sidecar.core.speculation import (
    TokenBudget,
    canonical_request,
    cpu_idle,
    same_request,
    should_prerun_tests,
    should_speculate_llm,
)

BASE: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {}}}],
    "temperature": 0,
}


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (dict(BASE), True),
        ({**BASE, "stream": True, "stream_options": {"include_usage": True}}, True),
        ({**BASE, "priority": 5}, True),
        (dict(reversed(list(BASE.items()))), True),
        ({**BASE, "top_p": None}, True),
        ({**BASE, "messages": [{"role": "user", "content": "hi", "name": None}]}, True),
        ({**BASE, "model": "n"}, False),
        ({**BASE, "messages": [{"role": "user", "content": "hi "}]}, False),
        ({**BASE, "tools": []}, False),
        ({**BASE, "temperature": 0.7}, False),
        ({**BASE, "max_tokens": 10}, False),
        ({**BASE, "seed": 1}, False),
        ({**BASE, "tool_choice": "required"}, False),
        ({**BASE, "unknown_field": 1}, False),
        ({**BASE, "messages": [*BASE["messages"], {"role": "user", "content": "more"}]}, False),
    ],
)
def test_same_request(other: dict[str, Any], same: bool) -> None:
    assert same_request(BASE, other) is same


def test_canonical_is_compact_and_sorted() -> None:
    assert canonical_request({"b": 1, "a": [1, {"d": None, "c": "é"}], "stream": False}) == '{"a":[1,{"c":"é"}],"b":1}'


@pytest.mark.parametrize(
    ("load1", "cpus", "limit", "idle"),
    [(0.5, 2, 0.5, True), (1.0, 2, 0.5, False), (3.9, 8, 0.5, True), (0.0, 0, 0.5, False)],
)
def test_cpu_idle(load1: float, cpus: int, limit: float, idle: bool) -> None:
    assert cpu_idle(load1, cpus, limit) is idle


@pytest.mark.parametrize(
    ("p", "idle", "running", "known", "go"),
    [
        (0.5, True, False, False, True),
        (0.29, True, False, False, False),
        (0.5, False, False, False, False),
        (0.5, True, True, False, False),
        (0.5, True, False, True, False),
    ],
)
def test_should_prerun_tests(p: float, idle: bool, running: bool, known: bool, go: bool) -> None:
    assert should_prerun_tests(p, 0.3, idle=idle, running=running, already_known=known) is go


def test_token_budget_slides() -> None:
    budget = TokenBudget(limit=100, window_s=60)
    assert budget.allows(0.0, 100)
    budget.spend(0.0, 80)
    assert budget.allows(1.0) and not budget.allows(1.0, 30)
    budget.spend(1.0, 20)
    assert not budget.allows(2.0)
    assert budget.allows(60.5)  # the first 80 left the window
    assert budget.used(61.0) == 0
    assert not TokenBudget(limit=0).allows(0.0)


@pytest.mark.parametrize(
    ("enabled", "spare", "waiting", "budget", "go"),
    [
        (True, True, 0, True, True),
        (False, True, 0, True, False),
        (True, False, 0, True, False),
        (True, True, 1, True, False),
        (True, True, 0, False, False),
    ],
)
def test_should_speculate_llm(enabled: bool, spare: bool, waiting: int, budget: bool, go: bool) -> None:
    assert should_speculate_llm(enabled=enabled, spare_capacity=spare, waiting_real=waiting, budget_ok=budget) is go
