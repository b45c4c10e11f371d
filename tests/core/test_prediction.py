from __future__ import annotations

import pytest

from sidecar.core.prediction import (
    SEED_TABLE,
    START,
    TESTS_FAILED,
    TESTS_PASSED,
    Action,
    Predictor,
    action_of,
    is_test_path,
    state_of,
)


@pytest.mark.parametrize(
    ("tool", "paths", "command", "expected"),
    [
        ("edit_file", ["src/a.py"], None, Action.EDIT),
        ("sidecar__write_file", ["a.py"], None, Action.EDIT),
        ("run_tests", [], None, Action.RUN_TESTS),
        ("read_file", ["src/a.py"], None, Action.READ_SOURCE),
        ("read_file", ["tests/test_a.py"], None, Action.READ_TEST),
        ("read_file", ["test_a.py"], None, Action.READ_TEST),
        ("read_file", [], None, Action.READ_SOURCE),
        ("search", ["."], None, Action.SEARCH),
        ("list_dir", ["."], None, Action.LIST),
        ("git_diff", [], None, Action.GIT),
        ("run_command", [], "git commit -m x", Action.GIT),
        ("run_command", [], "python -m pytest -q", Action.RUN_TESTS),
        ("run_command", [], "make", Action.OTHER),
        ("unknown", [], None, Action.OTHER),
    ],
)
def test_action_of(tool: str, paths: list[str], command: str | None, expected: Action) -> None:
    assert action_of(tool, paths, command) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("tests/test_x.py", True), ("pkg/x_test.py", True), ("conftest.py", True), ("src/latest.py", False)],
)
def test_is_test_path(path: str, expected: bool) -> None:
    assert is_test_path(path) is expected


@pytest.mark.parametrize(
    ("action", "ok", "exit_code", "expected"),
    [
        (Action.RUN_TESTS, True, 0, TESTS_PASSED),
        (Action.RUN_TESTS, True, 1, TESTS_FAILED),
        (Action.RUN_TESTS, False, None, TESTS_FAILED),
        (Action.EDIT, True, None, "edit"),
    ],
)
def test_state_of(action: Action, ok: bool, exit_code: int | None, expected: str) -> None:
    assert state_of(action, ok, exit_code) == expected


@pytest.mark.parametrize(
    ("state", "action", "p"),
    [
        ("edit", Action.RUN_TESTS, 0.50),
        ("edit", Action.READ_SOURCE, 0.20),
        ("edit", Action.EDIT, 0.15),
        (TESTS_FAILED, Action.READ_SOURCE, 0.35),
        (TESTS_FAILED, Action.READ_TEST, 0.25),
        (TESTS_FAILED, Action.EDIT, 0.25),
        (START, Action.EDIT, 0.0),
    ],
)
def test_seed_prior(state: str, action: Action, p: float) -> None:
    assert Predictor().distribution(state).get(action, 0.0) == pytest.approx(p)


def test_seed_rows_sum_to_one() -> None:
    for row in SEED_TABLE.values():
        assert sum(row.values()) == pytest.approx(1.0)


def test_learns_online_per_agent_and_workspace() -> None:
    predictor = Predictor()
    # Agent a always reads the test file after an edit.
    for _ in range(10):
        predictor.observe("a", "/w", Action.EDIT, "edit")
        predictor.observe("a", "/w", Action.READ_TEST, "read_test")
    assert predictor.rank("edit", "a", "/w")[0] is Action.READ_TEST
    # Agent b on the same workspace inherits the workspace's habit, weaker than a's own.
    p_a = predictor.distribution("edit", "a", "/w")[Action.READ_TEST]
    p_b = predictor.distribution("edit", "b", "/w")[Action.READ_TEST]
    assert p_a > p_b > 0.25
    # Agent c elsewhere still sees the seed.
    assert predictor.rank("edit", "c", "/elsewhere")[0] is Action.RUN_TESTS


def test_probability_from_current_state() -> None:
    predictor = Predictor()
    assert predictor.probability(Action.RUN_TESTS, "a", "/w") == 0.0  # nothing known from START
    predictor.observe("a", "/w", Action.EDIT, "edit")
    assert predictor.probability(Action.RUN_TESTS, "a", "/w") == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("sequence", "top1", "top3", "predictions"),
    [
        # edit -> run_tests (top-1 hit), tests_failed -> read_source (top-1 hit)
        ([(Action.EDIT, "edit"), (Action.RUN_TESTS, TESTS_FAILED), (Action.READ_SOURCE, "read_source")], 2, 2, 2),
        # edit -> edit is the seed's third choice: top-3 only
        ([(Action.EDIT, "edit"), (Action.EDIT, "edit")], 0, 1, 1),
        # edit -> search: neither
        ([(Action.EDIT, "edit"), (Action.SEARCH, "search")], 0, 0, 1),
        # nothing known after a search: no prediction scored
        ([(Action.SEARCH, "search"), (Action.EDIT, "edit")], 0, 0, 0),
    ],
)
def test_accuracy(sequence: list[tuple[Action, str]], top1: int, top3: int, predictions: int) -> None:
    predictor = Predictor()
    for action, state in sequence:
        predictor.observe("a", "/w", action, state)
    acc = predictor.accuracy
    assert (acc.top1, acc.top3, acc.predictions) == (top1, top3, predictions)


def test_accuracy_per_transition() -> None:
    predictor = Predictor()
    for action, state in [(Action.EDIT, "edit"), (Action.RUN_TESTS, TESTS_FAILED), (Action.READ_TEST, "read_test")]:
        predictor.observe("a", "/w", action, state)
    report = predictor.accuracy.as_dict()
    assert report["transitions"] == {
        "edit->run_tests": {"n": 1, "top1": 1},
        "tests_failed->read_test": {"n": 1, "top1": 0},
    }
    assert report["top1_rate"] == 0.5
