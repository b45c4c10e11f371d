"""Agents as programs: one task of T turns, drawn up front from the scenario and a seed (the same seed, the same
program, whatever the condition).

A turn is one LLM call and, except after the last, one tool call. The context is what Goose resends every turn:
the recipe's system prompt and tool list (token-identical for every agent of the recipe, so prefix caching across
agents is real), the task text, then every earlier output and tool result, in order.

- Turns: a lognormal with mean `turns_mean` (SWE-agent ~26 per task; `reference/calibration.md`), clamped.
- Actions: a Markov chain over `core.prediction.Action`, from the project's own transition model (`Predictor`
  seeded with the seed's table: edit -> run tests 50%, test fails -> read source 35%, ...); states the seed's
  table does not cover use `_OTHER_ROWS` below (a workload assumption). The last tool call is a git commit.
- Stages and tiers: from each tool call as the sidecar would report it (`core.toolactions.stage_from_tool_event`, the
  seed's stage -> tier map); the first call is `plan`.
- Output lengths: lognormal (sigma `output_sigma`) around the profile's per-stage means (the seed's call lengths)
  or `output_mean_tokens` (TraceLab's ~523 per step).
- Tool times: lognormal through TraceLab's median 0.3 s and p90 13.6 s; test runs use their own median and p90.
- Tool results: sized so the task's context grows to a target drawn uniformly in [context_min, context_max],
  split across turns by per-action weights with lognormal jitter.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from sidecar.bench.fleetsim.scenario import FleetSection
from sidecar.core.prediction import START, TESTS_FAILED, TESTS_PASSED, Action, Predictor
from sidecar.core.stages import DEFAULT_STAGE_TIERS, Stage, Tier
from sidecar.core.toolactions import stage_from_tool_event

Z90 = 1.2815515655446004  # the standard normal's 90th percentile

# Next-action rows for states the seed's table leaves out (workload assumptions, not measurements).
_OTHER_ROWS: dict[str, dict[Action, float]] = {
    START: {Action.LIST: 0.3, Action.SEARCH: 0.3, Action.READ_SOURCE: 0.4},
    Action.LIST.value: {Action.READ_SOURCE: 0.6, Action.SEARCH: 0.4},
    Action.SEARCH.value: {Action.READ_SOURCE: 0.6, Action.SEARCH: 0.2, Action.EDIT: 0.2},
    Action.READ_SOURCE.value: {Action.READ_SOURCE: 0.3, Action.EDIT: 0.4, Action.SEARCH: 0.15, Action.READ_TEST: 0.15},
    Action.READ_TEST.value: {Action.EDIT: 0.5, Action.READ_SOURCE: 0.3, Action.RUN_TESTS: 0.2},
    TESTS_PASSED: {Action.READ_SOURCE: 0.5, Action.EDIT: 0.3, Action.RUN_TESTS: 0.2},
    Action.OTHER.value: {Action.READ_SOURCE: 0.5, Action.EDIT: 0.3, Action.RUN_TESTS: 0.2},
    Action.GIT.value: {Action.READ_SOURCE: 1.0},
}

# Relative size of a tool's result in the context (a test run's output and a file read are the big ones).
_RESULT_WEIGHT: dict[Action, float] = {
    Action.READ_SOURCE: 1.0,
    Action.READ_TEST: 1.0,
    Action.RUN_TESTS: 1.5,
    Action.SEARCH: 0.6,
    Action.LIST: 0.3,
    Action.EDIT: 0.3,
    Action.GIT: 0.2,
    Action.OTHER: 0.5,
}

# What the sidecar would report for each action: tool name, paths, command.
_TOOL_EVENT: dict[Action, tuple[str, tuple[str, ...], str | None]] = {
    Action.EDIT: ("edit_file", ("src/pkg/core.py",), None),
    Action.RUN_TESTS: ("run_tests", (), None),
    Action.READ_SOURCE: ("read_file", ("src/pkg/core.py",), None),
    Action.READ_TEST: ("read_file", ("tests/test_core.py",), None),
    Action.SEARCH: ("search", (), None),
    Action.LIST: ("list_dir", (), None),
    Action.GIT: ("run_command", (), "git commit -m fix"),
    Action.OTHER: ("run_command", (), "python -c pass"),
}


def tool_name(action: Action) -> str:
    """The tool the sidecar would report for `action`."""
    return _TOOL_EVENT[action][0]


def tool_event(action: Action) -> tuple[str, tuple[str, ...], str | None]:
    """What the sidecar would report for `action`: tool name, paths, command."""
    return _TOOL_EVENT[action]


@dataclass(frozen=True)
class Turn:
    """One LLM call (its stage and output length) and the tool call after it (None after the last turn)."""

    stage: Stage
    tier: Tier
    output_tokens: int
    action: Action | None
    tool_s: float
    result_tokens: int
    tool_calls: int = 1  # tool calls the answer carries (they share `tool_s`)


@dataclass(frozen=True)
class Program:
    agent: str
    recipe: int
    start_s: float
    task_tokens: int
    turns: tuple[Turn, ...]

    @property
    def final_context(self) -> int:
        return self.task_tokens + sum(t.output_tokens + t.result_tokens for t in self.turns[:-1])


def lognormal_through(rng: random.Random, median: float, p90: float) -> float:
    """A draw of the lognormal with this median and 90th percentile."""
    sigma = math.log(p90 / median) / Z90 if p90 > median else 0.0
    return median * math.exp(sigma * rng.gauss(0.0, 1.0))


def _next_action(rng: random.Random, predictor: Predictor, state: str) -> Action:
    dist = predictor.distribution(state) or _OTHER_ROWS.get(state, _OTHER_ROWS[Action.OTHER.value])
    actions = sorted(dist, key=lambda a: a.value)
    return rng.choices(actions, weights=[dist[a] for a in actions])[0]


def _tool_calls(fleet: FleetSection, seed: int, index: int, count: int) -> list[int]:
    """Tool calls per answer: a lognormal through the median and mean, rounded, in [1, tool_calls_max]. A stream of
    its own, so programs without parallel calls are drawn exactly as before."""
    if fleet.tool_calls_mean <= 1:
        return [1] * count
    rng = random.Random(f"fleet-sim:{seed}:{index}:calls")
    sigma = math.sqrt(2 * math.log(fleet.tool_calls_mean / fleet.tool_calls_median))
    draws = (fleet.tool_calls_median * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(count))
    return [min(max(round(d), 1), fleet.tool_calls_max) for d in draws]


def make_program(
    fleet: FleetSection,
    stage_output_means: dict[str, int],
    seed: int,
    index: int,
    shared_prefix_tokens: int,
    max_context: int,
) -> Program:
    """Agent `index`'s task under `seed`; every prompt plus its output fits `max_context` tokens."""
    rng = random.Random(f"fleet-sim:{seed}:{index}")
    predictor = Predictor()
    sigma = math.log(fleet.turns_max / fleet.turns_mean) / 3 if fleet.turns_max > fleet.turns_mean else 0.3
    turns = round(fleet.turns_mean * math.exp(sigma * rng.gauss(0.0, 1.0) - sigma * sigma / 2))
    turns = min(max(turns, fleet.turns_min), fleet.turns_max)
    start = rng.uniform(0.0, fleet.start_span_s) if fleet.start_span_s > 0 else 0.0

    stages: list[Stage] = [Stage.PLAN]
    actions: list[Action] = []
    state, edits = START, 0
    for k in range(turns - 1):
        action = Action.GIT if k == turns - 2 else _next_action(rng, predictor, state)
        ok = True
        if action is Action.RUN_TESTS:
            ok = rng.random() >= max(0.15, 0.8 - 0.1 * edits)
        edits += action is Action.EDIT
        tool, paths, command = _TOOL_EVENT[action]
        stage = stage_from_tool_event(tool, ok, 0 if ok else 1, paths, command) or stages[-1]
        stages.append(stage)
        actions.append(action)
        state = action.value if action is not Action.RUN_TESTS else (TESTS_PASSED if ok else TESTS_FAILED)

    outputs = []
    for stage in stages:
        mean = fleet.output_mean_tokens or stage_output_means.get(stage.value, 200) * fleet.output_scale
        mu = math.log(mean) - fleet.output_sigma**2 / 2
        outputs.append(min(max(round(math.exp(mu + fleet.output_sigma * rng.gauss(0.0, 1.0))), 8), 2048))
    tool_s = []
    for action in actions:
        if action is Action.RUN_TESTS:
            t = lognormal_through(rng, fleet.test_median_s, fleet.test_p90_s)
        else:
            t = lognormal_through(rng, fleet.tool_median_s, fleet.tool_p90_s)
        tool_s.append(round(min(t, fleet.tool_max_s), 3))

    base = shared_prefix_tokens + fleet.task_prompt_tokens
    room = max_context - 16 - base - 16 * len(actions)
    if sum(outputs) > room:  # long outputs over many turns outgrow the model's context: shorten them to fit
        factor = max(room, 8 * len(outputs)) / sum(outputs)
        outputs = [max(8, math.floor(o * factor)) for o in outputs]
    target = rng.randint(fleet.context_min_tokens, fleet.context_max_tokens)
    target = min(target, max_context - max(outputs) - 16)
    budget = max(target - base - sum(outputs[:-1]), 16 * len(actions))
    weights = [_RESULT_WEIGHT[a] * math.exp(0.5 * rng.gauss(0.0, 1.0)) for a in actions]
    total = sum(weights) or 1.0
    results = [max(16, math.floor(budget * w / total)) for w in weights]
    while results and max(results) > 16 and base + sum(outputs) + sum(results) > max_context - 16:
        i = results.index(max(results))
        results[i] = max(16, results[i] // 2)

    calls = _tool_calls(fleet, seed, index, len(actions))
    built = [
        Turn(
            stage=stages[k],
            tier=DEFAULT_STAGE_TIERS[stages[k]],
            output_tokens=outputs[k],
            action=actions[k] if k < len(actions) else None,
            tool_s=tool_s[k] if k < len(actions) else 0.0,
            result_tokens=results[k] if k < len(actions) else 0,
            tool_calls=calls[k] if k < len(actions) else 1,
        )
        for k in range(turns)
    ]
    return Program(f"agent-{index:04d}", index % fleet.recipes, start, fleet.task_prompt_tokens, tuple(built))
