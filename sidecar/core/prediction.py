"""Next-action prediction: a Markov model over an agent's tool calls, seeded with the seed's table.

An event (one tool call, as the sidecar reports it) is abstracted twice:
- its `Action` (what the agent did: edit, run_tests, read_source, read_test, ...), the thing predicted;
- its state (`state_of`): the action plus, for a test run, its outcome (`tests_failed` / `tests_passed`),
  the thing predicted from.

The prior is the seed's table (`seed/000_bc7af0ed774b52c4.txt`, "Speculative Prefetching"): after an edit,
run tests 50%, read the same file 20%, edit again 15%; after a failing test run, read the source 35%, read the
test 25%, edit a fix 25%. The remaining mass goes to `other`. The prior counts as `PRIOR_WEIGHT` observations,
so a few real transitions of one agent soon dominate it.

`Predictor` learns online in two scopes at once, per agent and per workspace (several agents, or several runs
of one agent, on one project); a prediction sums the prior, the workspace counts and the agent counts (the agent
counted twice: its own habits are the best evidence). Accuracy is tracked against what happened next: top-1,
top-3, and per transition (state -> actual action). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Action(StrEnum):
    EDIT = "edit"
    RUN_TESTS = "run_tests"
    READ_SOURCE = "read_source"
    READ_TEST = "read_test"
    SEARCH = "search"
    LIST = "list"
    GIT = "git"
    OTHER = "other"


TESTS_FAILED = "tests_failed"
TESTS_PASSED = "tests_passed"
START = "start"

PRIOR_WEIGHT = 10.0

SEED_TABLE: Mapping[str, Mapping[Action, float]] = MappingProxyType(
    {
        # "Edit src file -> Run tests 50% / Read same file 20% / Edit same file again 15%" (the seed).
        Action.EDIT.value: MappingProxyType(
            {Action.RUN_TESTS: 0.50, Action.READ_SOURCE: 0.20, Action.EDIT: 0.15, Action.OTHER: 0.15}
        ),
        # "Test fails -> Read source file 35% / Read test file 25% / Edit source (fix) 25%" (the seed).
        TESTS_FAILED: MappingProxyType(
            {Action.READ_SOURCE: 0.35, Action.READ_TEST: 0.25, Action.EDIT: 0.25, Action.OTHER: 0.15}
        ),
    }
)

_TEST_MARKERS = ("test_", "_test.", "tests/", "test/", "/tests", "conftest")


def is_test_path(path: str) -> bool:
    """A path that names a test file by the usual conventions (`tests/`, `test_*.py`, `*_test.py`, conftest)."""
    lowered = path.lower()
    name = lowered.rsplit("/", 1)[-1]
    return name.startswith("test_") or any(marker in lowered for marker in _TEST_MARKERS)


def action_of(tool: str, paths: Sequence[str] = (), command: str | None = None) -> Action:
    """The `Action` of one tool call (sidecar tool names, with or without Goose's `sidecar__` prefix)."""
    name = tool.rsplit("__", 1)[-1]
    if name in ("edit_file", "write_file"):
        return Action.EDIT
    if name == "run_tests":
        return Action.RUN_TESTS
    if name == "read_file":
        return Action.READ_TEST if paths and all(is_test_path(p) for p in paths) else Action.READ_SOURCE
    if name == "search":
        return Action.SEARCH
    if name == "list_dir":
        return Action.LIST
    if name.startswith("git_"):
        return Action.GIT
    if name == "run_command" and command is not None:
        words = command.split()
        if words[:1] == ["git"]:
            return Action.GIT
        if any(w in ("pytest", "unittest") for w in words):
            return Action.RUN_TESTS
    return Action.OTHER


def state_of(action: Action, ok: bool = True, exit_code: int | None = None) -> str:
    """The state an action leaves: a test run splits by outcome (a failed call or nonzero exit is a failure)."""
    if action is Action.RUN_TESTS:
        return TESTS_PASSED if ok and exit_code in (0, None) else TESTS_FAILED
    return action.value


@dataclass
class Accuracy:
    """Predictions scored against what happened next."""

    predictions: int = 0
    top1: int = 0
    top3: int = 0
    # "state->actual" -> [predictions, top-1 hits]
    transitions: dict[str, list[int]] = field(default_factory=dict)

    def score(self, state: str, ranked: Sequence[Action], actual: Action) -> None:
        self.predictions += 1
        hit1 = bool(ranked) and ranked[0] is actual
        self.top1 += hit1
        self.top3 += actual in ranked[:3]
        row = self.transitions.setdefault(f"{state}->{actual.value}", [0, 0])
        row[0] += 1
        row[1] += hit1

    def as_dict(self) -> dict[str, object]:
        n = self.predictions
        return {
            "predictions": n,
            "top1": self.top1,
            "top3": self.top3,
            "top1_rate": self.top1 / n if n else None,
            "top3_rate": self.top3 / n if n else None,
            "transitions": {k: {"n": v[0], "top1": v[1]} for k, v in sorted(self.transitions.items())},
        }


class Predictor:
    """Online Markov predictor over tool transitions, per agent and per workspace; see the module docstring."""

    def __init__(
        self, seed: Mapping[str, Mapping[Action, float]] = SEED_TABLE, prior_weight: float = PRIOR_WEIGHT
    ) -> None:
        self.seed = seed
        self.prior_weight = prior_weight
        self.counts: dict[tuple[str, str], Counter[Action]] = {}  # (scope, state) -> next actions
        self.last: dict[str, str] = {}  # agent -> its last state
        self.pending: dict[str, tuple[str, tuple[Action, ...]]] = {}  # agent -> (state, ranked) to be scored
        self.accuracy = Accuracy()

    def distribution(self, state: str, agent: str = "", workspace: str = "") -> dict[Action, float]:
        """P(next action | state), normalised; empty when nothing is known about `state`."""
        weights: dict[Action, float] = {}
        for action, p in self.seed.get(state, {}).items():
            weights[action] = weights.get(action, 0.0) + self.prior_weight * p
        for action, n in self.counts.get((f"workspace:{workspace}", state), Counter()).items():
            weights[action] = weights.get(action, 0.0) + n
        for action, n in self.counts.get((f"agent:{agent}", state), Counter()).items():
            weights[action] = weights.get(action, 0.0) + 2 * n
        total = sum(weights.values())
        return {a: w / total for a, w in weights.items()} if total > 0 else {}

    def rank(self, state: str, agent: str = "", workspace: str = "") -> tuple[Action, ...]:
        """Actions most likely first (ties by name, so the order is deterministic)."""
        dist = self.distribution(state, agent, workspace)
        return tuple(sorted(dist, key=lambda a: (-dist[a], a.value)))

    def probability(self, action: Action, agent: str = "", workspace: str = "") -> float:
        """P(the agent's next action is `action`), from its current state."""
        return self.distribution(self.last.get(agent, START), agent, workspace).get(action, 0.0)

    def observe(self, agent: str, workspace: str, action: Action, state: str) -> tuple[Action, ...]:
        """Record that `agent` did `action`, leaving `state`; scores the previous prediction, learns the
        transition, and returns the ranked prediction for the agent's next action."""
        pending = self.pending.get(agent)
        if pending is not None:
            self.accuracy.score(pending[0], pending[1], action)
        prev = self.last.get(agent, START)
        for scope in (f"agent:{agent}", f"workspace:{workspace}"):
            self.counts.setdefault((scope, prev), Counter())[action] += 1
        self.last[agent] = state
        ranked = self.rank(state, agent, workspace)
        if ranked:
            self.pending[agent] = (state, ranked)
        else:
            self.pending.pop(agent, None)
        return ranked
