"""The fleet's terminal views (rich): a live table while agents run, and the summary table after.

`FleetView` is fed by the runner's callbacks (`ready`, `turn`) and rendered by `rich.live.Live` at a few
frames per second; it holds only counters, so a callback costs microseconds on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sidecar.fleet.metrics import TIERS, llm_s, model_label
from sidecar.fleet.records import AgentRun, FleetRun, Turn

TIER_STYLE = {"hot": "bold red", "warm": "yellow", "cold": "cyan"}


@dataclass
class _Row:
    agent_id: str
    turns: int = 0
    stage: str = "-"
    tier: str = "-"
    model: str = "-"
    tool: str = "starting"
    cache_hits: int = 0
    last_llm_s: float | None = None
    state: str = "waiting"


@dataclass
class FleetView:
    title: str
    time_scale: float = 1.0
    max_turns: int = 0
    rows: dict[str, _Row] = field(default_factory=dict)
    calls_by_tier: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def ready(self, agent_ids: Sequence[str]) -> None:
        self.rows = {agent_id: _Row(agent_id) for agent_id in agent_ids}
        self.started = time.monotonic()

    def turn(self, run: AgentRun, turn: Turn) -> None:
        row = self.rows.setdefault(run.agent_id, _Row(run.agent_id))
        row.turns = len(run.turns)
        row.stage, row.tier = turn.stage or "-", turn.tier or "-"
        row.model = model_label(turn.model)
        row.tool = ", ".join(t.rsplit("__", 1)[-1] for t in turn.tools) or ("error" if turn.error else "answer")
        row.cache_hits += turn.cache_hits
        row.last_llm_s = llm_s(turn, self.time_scale)
        row.state = "error" if turn.error else "running" if turn.tools else "done"
        if turn.tier:
            self.calls_by_tier[turn.tier] = self.calls_by_tier.get(turn.tier, 0) + 1

    def finish(self, run: AgentRun) -> None:
        row = self.rows.setdefault(run.agent_id, _Row(run.agent_id))
        if run.error:
            row.state = "error"
        elif run.kind == "writer":
            row.state = "done"
        else:
            row.state = "solved" if run.solved else "done" if run.finished else "turn cap"

    def __rich__(self) -> RenderableType:
        table = Table(title=self.title, title_justify="left", expand=False)
        for name in ("agent", "turns", "stage", "tier", "model", "last tool", "last LLM (sim s)", "state"):
            table.add_column(name, justify="right" if name in ("turns", "last LLM (sim s)") else "left")
        for row in self.rows.values():
            turns = f"{row.turns}/{self.max_turns}" if self.max_turns else str(row.turns)
            table.add_row(
                row.agent_id,
                turns,
                row.stage,
                Text(row.tier, style=TIER_STYLE.get(row.tier, "")),
                row.model,
                row.tool,
                "-" if row.last_llm_s is None else f"{row.last_llm_s:.1f}",
                row.state,
            )
        elapsed = time.monotonic() - self.started
        tiers = "  ".join(f"{tier} {self.calls_by_tier.get(tier, 0)}" for tier in TIERS)
        footer = Text(f"{elapsed:.1f} s elapsed (x{self.time_scale:g} = {elapsed * self.time_scale:.0f} sim s)")
        footer.append(f"   LLM calls by tier: {tiers}")
        return Group(table, footer)


def summary_table(run: FleetRun, summary: dict[str, Any]) -> Table:
    """One fleet run's results: per tier and overall, in simulated seconds."""
    table = Table(title=f"{run.label}: results (simulated seconds)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def add(name: str, value: Any, fmt: str = "{:.2f}") -> None:
        table.add_row(name, "-" if value is None else fmt.format(value))

    add("agents (solved / finished)", f"{summary['agents']} ({_pct(summary['solved_share'])} / "
        f"{_pct(summary['finished_share'])})", "{}")  # fmt: skip
    add("wall time (s)", summary["wall_s"], "{:.1f}")
    add("LLM calls", summary["calls"], "{}")
    add("LLM latency, mean (s)", summary["latency_s"])
    add("LLM latency, median / p90 (s)", _pair(summary["latency_median_s"], summary["latency_p90_s"]), "{}")
    for tier in TIERS:
        add(f"  {tier}: mean latency (s), calls", _pair(summary[f"latency_{tier}_s"], summary[f"calls_{tier}"]), "{}")
    add("time to first token, median (s)", summary["ttft_s"])
    add("queue wait at the coordinator, mean (s)", summary["queue_wait_s"])
    add("throughput (output tokens / s)", summary["throughput_tps"], "{:.1f}")
    add(
        "prompt tokens per call (mean), prefix-cached",
        _pair(summary["prompt_tokens"], summary["prompt_cached_share"]),
        "{}",
    )
    add("tool calls, cache hits", f"{summary['tool_calls']}, {summary['cache_hits']}", "{}")
    add("tool time, total (s)", summary["tool_s"], "{:.1f}")
    add("calls by model", ", ".join(f"{k} {v}" for k, v in sorted(summary["calls_by_model"].items())), "{}")
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _pair(a: float | int | None, b: float | int | None) -> str:
    def one(v: float | int | None) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    return f"{one(a)} / {one(b)}"
