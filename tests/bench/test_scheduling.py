"""The scheduling benchmark: its workload is deterministic and classifiable, and a tiny run reports every row."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.bench import scheduling as bench
from sidecar.core.conversation import classify_messages
from sidecar.core.stages import DEFAULT_STAGE_TIERS


def conversation(script: bench.Script, upto: int) -> list[dict[str, Any]]:
    """The messages an agent sends on turn `upto`, with a stand-in for the model's answers."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "s"}, {"role": "user", "content": script.task}]
    for i, turn in enumerate(script.turns[:upto]):
        assert turn.tool_call is not None
        function = {"name": turn.tool_call["name"], "arguments": json.dumps(turn.tool_call["arguments"])}
        messages.append(
            {"role": "assistant", "content": "answer", "tool_calls": [{"id": f"c{i}", "function": function}]}
        )
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": turn.tool_output})
    return messages


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scripts_are_deterministic_and_the_classifier_reads_the_intended_stage(seed: int) -> None:
    scripts = [bench.make_script(seed, i, 12) for i in range(4)]
    assert scripts == [bench.make_script(seed, i, 12) for i in range(4)]
    for script in scripts:
        assert script.turns[0].stage == "plan" and script.turns[-1].tool_call is None
        for n, turn in enumerate(script.turns):
            found = classify_messages(conversation(script, n))
            assert found is not None and str(found.stage) == turn.stage, (script.agent, n, found)
            assert str(DEFAULT_STAGE_TIERS[found.stage]) == turn.tier
            low, high = bench.OUTPUT_SECONDS[turn.stage]
            assert low * bench.DECODE_TOK_S - 1 <= turn.max_tokens <= high * bench.DECODE_TOK_S + 1
            assert 0 <= turn.think_s <= bench.THINK_CAP_S


def test_seeds_give_different_workloads() -> None:
    assert bench.make_script(1, 0, 10) != bench.make_script(2, 0, 10)


def test_every_transition_row_is_a_distribution_over_known_actions() -> None:
    for row in bench.TRANSITIONS.values():
        assert sum(row.values()) == pytest.approx(1.0)
        assert set(row) <= {*bench.STAGE_AFTER, "run_tests"}


def test_metrics_text_is_summed_over_label_sets() -> None:
    text = '# HELP x\nvllm:num_requests_running{model_name="a",engine="0"} 3.0\n'
    text += 'vllm:x_total{r="a"} 1\nvllm:x_total{r="b"} 2\n'
    assert bench.parse_metrics(text) == {"vllm:num_requests_running": 3.0, "vllm:x_total": 3.0}


async def test_a_tiny_run_reports_every_condition_and_table() -> None:
    options = bench.Options(agents=3, turns=3, seeds=(7,), time_scale=60.0)
    rows = await bench.run_benchmark(options)
    assert [r["condition"] for r in rows] == list(options.conditions)
    for row in rows:
        assert row["calls"] == 9 and row["failed_calls"] == 0 and row["agents_completed"] == 3
        assert row["classified_as_intended"] == 1.0
        assert row["wall_s"] > 0 and row["gpu"]["large"]["busy"] > 0
        assert row["slowdown_task_max"] is not None and row["slowdown_task_max"] > 0
    assert rows[0]["cold_max_wait_s"] is not None or rows[0]["cold_n"] == 0
    report = bench.format_report(rows, options)
    for condition in options.conditions:
        assert f"| {condition} |" in report
    for heading in ("### Scheduling", "| vs fcfs", "### Routing", "### Targets", "hot-tier p50 at least 2x lower"):
        assert heading in report
    json.dumps(rows)  # the --json output is plain data
