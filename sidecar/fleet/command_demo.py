"""`goose-sidecar demo`: the quick tour. The simulator, the coordinator and a small fleet, in about a minute.

Starts the embedded simulator (32B + 7B), the coordinator on `[coordinator] host:port` (so its dashboard has
a stable URL, printed first), and the `demo` scenario's agents, each with its own sidecar process; shows the
live view while they work and ends with the results table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from sidecar.config import Config, ConfigError

HELP = "The quick tour: simulator + coordinator + a few agents with their sidecars; dashboard URL and results."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--scenario", default="demo", help="scenario name or .toml path (demo)")
    parser.add_argument("--agents", type=int, help="coding agents (default: the scenario's)")
    parser.add_argument("--host", dest="coordinator.host", default=s, help="coordinator bind address (127.0.0.1)")
    parser.add_argument("--port", dest="coordinator.port", type=int, default=s, help="coordinator port (8080)")
    parser.add_argument(
        "--policy",
        dest="scheduling.policy",
        default=s,
        choices=["fcfs", "pools", "priority"],
        help="the coordinator's ordering (priority)",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    from sidecar.fleet.command_fleet import quiet_logs
    from sidecar.fleet.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"goose-sidecar demo: {exc}", file=sys.stderr)
        return 2
    quiet_logs(args, config)
    try:
        return asyncio.run(_run(args, config, scenario))
    except OSError as exc:
        print(f"goose-sidecar demo: {exc} (is port {config.coordinator.port} taken? try --port)", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, config: Config, scenario) -> int:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from sidecar.fleet.metrics import llm_s, model_label, summarize
    from sidecar.fleet.progress import FleetView, summary_table
    from sidecar.fleet.runner import FleetOptions, run_fleet
    from sidecar.fleet.stack import start_stack
    from sidecar.sim.settings import SimSettings

    f = scenario.fleet
    options = FleetOptions(
        agents=args.agents or f.agents,
        writers=f.writers,
        writer_turns=f.writer_turns,
        max_turns=f.max_turns,
        modules=f.modules,
        bugs=f.bugs,
        test_delay_s=f.test_s / float(scenario.sim.get("time_scale", config.sim.time_scale)),
        stagger_s=f.stagger_s,
        model="auto" if config.routing.enabled else "large",
        project_seed=scenario.bench.seeds[0],
        sidecar_settings=tuple(scenario.sidecar.items()),
        label="demo",
    )
    sim = SimSettings(**{**config.sim.model_dump(), **scenario.sim})
    err, out = Console(stderr=True), Console()
    host, port = config.coordinator.host, config.coordinator.port
    with tempfile.TemporaryDirectory(prefix="goose-demo-") as tmp:
        async with start_stack(config, sim=sim, overrides=scenario.coordinator, listen=(host, port)) as stack:
            dashboard = (
                f"[bold]dashboard: {stack.coordinator_url}/dashboard[/bold]   status: {stack.coordinator_url}/status"
            )
            err.print(dashboard, soft_wrap=True)
            err.print(
                f"simulator: {', '.join(f'{a} = {m}' for a, m in stack.models.items())} at x{sim.time_scale:g} speed; "
                f"{options.agents} coding agents (each with its own sidecar process) + {options.writers} doc agents, "
                f"policy {config.scheduling.policy}, routing {'on' if config.routing.enabled else 'off'}"
            )
            view = FleetView("demo fleet", stack.time_scale, options.max_turns)
            with Live(view, console=err, refresh_per_second=4):
                run = await run_fleet(
                    options, stack, Path(tmp), on_turn=view.turn, on_ready=view.ready, on_done=view.finish
                )
    summary = summarize(run)
    table = Table(title="agents", title_justify="left")
    for name in ("agent", "kind", "turns", "LLM time (sim s)", "tool time (sim s)", "models", "result"):
        table.add_column(name)
    for agent in run.agents:
        models = sorted({model_label(t.model) for t in agent.turns})
        result = agent.error or ("solved" if agent.solved else "finished" if agent.finished else "turn cap")
        if agent.kind == "writer" and not agent.error:
            result = "done"
        table.add_row(
            agent.agent_id,
            agent.kind,
            str(len(agent.turns)),
            f"{sum(llm_s(t, run.time_scale) for t in agent.turns):.0f}",
            f"{sum(t.tool_s for t in agent.turns) * run.time_scale:.0f}",
            ", ".join(models),
            result,
        )
    out.print(table)
    out.print(summary_table(run, summary))
    out.print(f"real time {run.wall_s:.0f} s = {run.wall_s * run.time_scale:.0f} simulated s. "
              "Next: scripts/bench (every experiment, ~10 min) or goose-sidecar fleet --help.")  # fmt: skip
    return 0 if not any(a.error for a in run.agents) else 1
