"""`goose-sidecar bench`: the experiments as paired conditions over several seeds, against the simulator.

Writes `results/<timestamp>/report.md`, `results.json`, `runs/*.json` and PNG plots. The workload is a named
scenario (`scenarios/<name>.toml`, default `small`: under 10 minutes on 2 cores); `--experiments` and
`--seeds` narrow it for a quick look.

`goose-sidecar bench fleet-sim ...` runs the deterministic fleet simulation instead (`sidecar/bench/fleetsim/`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shlex
import sys
from pathlib import Path

from sidecar.config import Config, ConfigError

HELP = "Run the experiments (priority, routing, batching, caching, ...) as paired conditions; write a report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="small", help="scenario name in scenarios/ or a .toml path (small)")
    parser.add_argument("--experiments", type=_csv, help="comma-separated subset (default: the scenario's, or all)")
    parser.add_argument("--seeds", type=_ints, help="comma-separated seeds (default: the scenario's)")
    parser.add_argument("--output", type=Path, default=Path("results"), help="parent folder of the run (results)")
    parser.add_argument("--list", action="store_true", help="list scenarios and experiments, then exit")
    from sidecar.bench.fleetsim import command as fleetsim_command

    suites = parser.add_subparsers(dest="bench_suite", metavar="SUITE")
    fleetsim = suites.add_parser("fleet-sim", help=fleetsim_command.HELP, description=fleetsim_command.HELP)
    fleetsim_command.add_arguments(fleetsim)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    return [int(v) for v in _csv(value)]


def run(args: argparse.Namespace, config: Config) -> int:
    if getattr(args, "bench_suite", None) == "fleet-sim":
        from sidecar.bench.fleetsim import command as fleetsim_command

        return fleetsim_command.run(args, config)
    from sidecar.fleet.command_fleet import quiet_logs
    from sidecar.fleet.experiments import EXPERIMENTS, select
    from sidecar.fleet.scenario import available_scenarios, load_scenario

    if args.list:
        print("scenarios:", ", ".join(available_scenarios()))
        for e in EXPERIMENTS:
            print(f"  {e.name:15s} {e.title}")
        return 0
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"goose-sidecar bench: {exc}", file=sys.stderr)
        return 2
    if args.seeds:
        scenario.bench.seeds = args.seeds
    try:
        experiments = select(args.experiments or scenario.bench.experiments)
    except KeyError as exc:
        print(f"goose-sidecar bench: {exc.args[0]}", file=sys.stderr)
        return 2
    quiet_logs(args, config)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = args.output / stamp
    return asyncio.run(_run(scenario, config, experiments, outdir))


async def _run(scenario, config, experiments, outdir: Path) -> int:  # type: ignore[no-untyped-def]
    from rich.console import Console

    from sidecar.fleet.bench import BenchRun, availability, plan, run_bench, write_runs
    from sidecar.fleet.plots import missing_library, write_plots
    from sidecar.fleet.report import write_report

    console = Console(stderr=True)
    if why := missing_library():
        console.print(f"[yellow]{why}; the report and results.json are written as usual[/yellow]")
    order = plan(experiments, scenario.bench.seeds)
    for name, why in availability(experiments).items():
        if why:
            console.print(f"[yellow]skipping {name}: {why}[/yellow]")
    console.print(
        f"bench: scenario {scenario.name} ({scenario.source}), {len(order)} runs "
        f"({len(order) // max(1, len(scenario.bench.seeds))} conditions x {len(scenario.bench.seeds)} seeds)"
    )

    def start(index: int, total: int, name: str, seed: int) -> None:
        console.print(f"[{index + 1}/{total}] {name} seed {seed} ...", end=" ")

    def end(run: BenchRun) -> None:
        if run.error:
            console.print(f"[red]failed[/red] ({run.real_s:.0f} s): {run.error}")
            return
        s = run.summary
        console.print(
            f"{run.real_s:.0f} s real; wall {s['wall_s']:.0f} sim s, mean LLM {s['latency_s'] or 0:.1f} s, "
            f"{s['calls']} calls, solved {s['solved_share'] or 0:.0%}"
        )

    result = await run_bench(scenario, config, experiments, on_start=start, on_end=end)
    result.command = "goose-sidecar " + shlex.join(sys.argv[1:])
    write_runs(result, outdir)
    plots = write_plots(result, outdir)
    report, data = write_report(result, outdir, plots)
    console.print(f"bench done in {result.real_s / 60:.1f} min: {report} ({data}, {len(plots)} plots)")
    print(report.read_text(encoding="utf-8"))
    return 1 if result.runs and all(r.error for r in result.runs) else 0
