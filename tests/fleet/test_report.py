"""The report writer: report.md (our numbers next to the seed's), results.json, runs/ and the PNG plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sidecar.fleet.bench import BenchResult, BenchRun, write_runs
from sidecar.fleet.experiments import select
from sidecar.fleet.metrics import summarize
from sidecar.fleet.plots import missing_library, write_plots
from sidecar.fleet.records import AgentRun, FleetRun, Turn
from sidecar.fleet.report import fmt, write_report
from sidecar.fleet.scenario import Scenario


def fake_run(condition: str, seed: int, slow: float) -> FleetRun:
    agents = []
    for k, tier in enumerate(("hot", "cold", "warm")):
        turns = [
            Turn(i, float(i), "large", model="Qwen/Qwen2.5-Coder-32B-Instruct", stage="code_edit", tier=tier,
                 llm_s=0.3, sim_llm_s=slow * (k + 1), prompt_tokens=1000, cached_tokens=800, completion_tokens=100,
                 tools=["sidecar__read_file"], tool_s=0.01, cache_hits=i % 2)
            for i in range(4)
        ]  # fmt: skip
        agents.append(AgentRun(f"agent-{k}", "s", "/w", turns=turns, ended_at=10.0, finished=True, solved=True))
    timeline = [{"t": t / 10, "large": {"running": 2.0, "waiting": 0.0}, "queued": {"hot": t % 2}} for t in range(20)]
    return FleetRun(condition, agents, time_scale=30.0, wall_s=10.0 * slow, timeline=timeline)


def bench_result() -> BenchResult:
    experiments = select(["priority", "routing", "semantic_cache"])
    scenario = Scenario(name="t", description="a test scenario", sim={"time_scale": 30.0})
    scenario.bench.seeds = [1, 2]
    result = BenchResult(
        scenario, experiments, {"priority": None, "routing": "no routing here", "semantic_cache": None}
    )
    result.command = "goose-sidecar bench --scenario t"
    for seed in (1, 2):
        for condition, slow in (("fcfs", 1.0), ("pools", 0.9), ("baseline", 0.8), ("kv", 0.85)):
            run = fake_run(condition, seed, slow * (1 + seed / 10))
            run.settings = {"coordinator": {"scheduling.policy": condition}, "fleet": {"model": "large"}}
            result.fleet_runs[(condition, seed)] = run
            result.runs.append(BenchRun(condition, seed, summarize(run)))
    result.runs.append(BenchRun("fcfs", 3, error="RuntimeError: boom"))
    return result


def test_report_files(tmp_path: Path) -> None:
    result = bench_result()
    write_runs(result, tmp_path)
    plots = write_plots(result, tmp_path)
    report, data = write_report(result, tmp_path, plots)

    assert {Path(p).name for p in plots} == {"latency_by_tier.png", "timeline.png", "cache.png", "speedups.png"}
    for plot in plots:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "runs").glob("*.json"))) == 8
    text = report.read_text()
    assert "goose-sidecar bench --scenario t" in text
    assert "| Hot agent latency (simulated s) |" in text
    assert "11,414 ms" in text and "9,329 ms" in text  # the seed's figures, in the same row
    assert "fcfs seed 3: RuntimeError: boom" in text.replace("`", "")
    assert "not run: no routing here" in text
    assert "exact + validated" in text
    assert "![timeline](timeline.png)" in text
    hot_row = next(line for line in text.splitlines() if line.startswith("| Hot agent latency"))
    assert "-20%" in hot_row  # priority (0.8) vs fcfs (1.0), paired by seed
    results = json.loads(data.read_text())
    assert set(results) >= {"scenario", "runs", "experiments", "semantic_cache", "availability", "command"}
    priority = results["experiments"]["priority"]
    assert priority["rows"][0]["metric"] == "latency_hot_s"
    assert priority["headlines"][1]["speedup"]["median"] == 1.25
    assert "routing" not in results["experiments"]


def test_fmt() -> None:
    assert fmt(None, "s") == "-"
    assert fmt(12.345, "s") == "12.3 s" and fmt(1.234, "s") == "1.23 s"
    assert fmt(0.123, "share") == "12%" and fmt(5000.4, "tokens") == "5,000" and fmt(3.0, "count") == "3"


def test_without_matplotlib_the_report_is_written_without_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ModuleNotFoundError
    why = missing_library()
    assert why is not None and "goose-sidecar[bench]" in why
    result = bench_result()
    plots = write_plots(result, tmp_path)
    report, _ = write_report(result, tmp_path, plots)
    assert plots == [] and "![" not in report.read_text()
