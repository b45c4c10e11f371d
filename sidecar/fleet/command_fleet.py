"""`goose-sidecar fleet`: run N Goose-like agents through the real stack, with a live view and a summary.

Stack (first that applies): `--coordinator URL` (a running coordinator), `--upstream URL` (vLLM; the
coordinator runs in-process), else the embedded simulator and an in-process coordinator (`--embedded`, the
default). Scheduling and routing flags configure the in-process coordinator; with `--coordinator` they are
the running coordinator's business and are refused here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from sidecar.config import Config

HELP = "Run N Goose-like agents (each with its own sidecar) through the coordinator; live view and summary."
COORDINATOR_FLAGS = ("scheduling.policy", "scheduling.batch_window_ms", "routing.enabled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--agents", type=int, default=4, help="number of coding agents (4)")
    parser.add_argument("--writers", type=int, default=0, help="documentation agents without tools (0)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--embedded", action="store_true", help="the built-in simulator (default)")
    where.add_argument("--upstream", metavar="URL", help="an OpenAI-compatible server (vLLM) serving every model")
    where.add_argument("--coordinator", metavar="URL", help="a running coordinator (goose-sidecar up)")
    parser.add_argument(
        "--policy",
        dest="scheduling.policy",
        default=s,
        choices=["fcfs", "pools", "priority"],
        help="the in-process coordinator's ordering (priority)",
    )
    parser.add_argument(
        "--routing", dest="routing.enabled", default=s, action=argparse.BooleanOptionalAction, help="model routing"
    )
    parser.add_argument(
        "--batch-window-ms",
        dest="scheduling.batch_window_ms",
        type=float,
        default=s,
        help="hold calls this long to batch them (an experiment; 0 = off)",
    )
    parser.add_argument("--time-scale", dest="sim.time_scale", type=float, default=s, help="simulator speed-up")
    parser.add_argument("--model", help="model the agents ask for (default: auto when routed, else large)")
    parser.add_argument("--max-turns", type=int, default=30, help="turn cap per agent (30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample projects (1)")
    parser.add_argument("--bugs", type=int, default=2, help="planted bugs per project (2)")
    parser.add_argument("--no-tool-cache", action="store_true", help="run the sidecars with their cache off")
    parser.add_argument("--compress", action="store_true", help="send compressed context (experiment)")
    parser.add_argument("--prefetch", action="store_true", help="prefetch predicted file reads (experiment)")
    parser.add_argument(
        "--speculate-tests", action="store_true", help="the sidecars pre-run tests after edits (tool-level speculation)"
    )
    parser.add_argument("--workdir", type=Path, help="where the agents' projects go (default: a temporary dir)")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="write every turn and the summary as JSON to this file, or to PATH/fleet.json for a directory",
    )
    parser.add_argument("--no-live", action="store_true", help="no live view (just the summary)")


def run(args: argparse.Namespace, config: Config) -> int:
    given = vars(args)
    if args.coordinator and any(key in given for key in COORDINATOR_FLAGS):
        print("goose-sidecar fleet: --policy/--routing/--batch-window-ms configure an in-process coordinator; "
              "with --coordinator, configure that coordinator instead", file=sys.stderr)  # fmt: skip
        return 2
    if args.output is not None:
        # Decided before the run, so a bad path fails in a second and not after the whole fleet has run.
        args.output = output_file(args.output)
        if args.output.is_dir():
            print(f"goose-sidecar fleet: --output {args.output} is a directory", file=sys.stderr)
            return 2
    quiet_logs(args, config)
    return asyncio.run(_run(args, config))


def output_file(given: str) -> Path:
    """The JSON file `--output PATH` means: PATH itself, or `PATH/fleet.json` for a directory (existing, or
    written with a trailing slash)."""
    path = Path(given).expanduser()
    if path.is_dir() or given.endswith(("/", "\\")):
        return path / "fleet.json"
    return path


def quiet_logs(args: argparse.Namespace, config: Config) -> None:
    """In-process servers log every call at info; keep the terminal for the views unless asked otherwise."""
    if "log.level" not in vars(args):
        from sidecar.obs import configure_logging

        configure_logging("warning", config.log.format)


def default_model(args: argparse.Namespace, config: Config) -> str:
    if args.model:
        return str(args.model)
    if args.coordinator:
        return "auto"
    if args.upstream:
        return "default"
    return "auto" if config.routing.enabled else "large"


async def _run(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console
    from rich.live import Live

    from sidecar.fleet.metrics import summarize
    from sidecar.fleet.progress import FleetView, summary_table
    from sidecar.fleet.runner import FleetOptions, run_fleet
    from sidecar.fleet.stack import start_stack

    options = FleetOptions(
        agents=args.agents,
        writers=args.writers,
        max_turns=args.max_turns,
        model=default_model(args, config),
        project_seed=args.seed,
        bugs=args.bugs,
        tool_cache=not args.no_tool_cache,
        compress=args.compress,
        prefetch=args.prefetch,
        speculate_tests=args.speculate_tests,
        label="fleet",
    )
    err, out = Console(stderr=True), Console()
    with tempfile.TemporaryDirectory(prefix="goose-fleet-") as tmp:
        workdir = args.workdir or Path(tmp)
        async with start_stack(config, coordinator_url=args.coordinator, upstream=args.upstream) as stack:
            view = FleetView(f"fleet: {args.agents} agents, model {options.model}", stack.time_scale, args.max_turns)
            err.print(
                f"coordinator {stack.coordinator_url}  (dashboard {stack.coordinator_url}/dashboard)", soft_wrap=True
            )
            live = None if args.no_live else Live(view, console=err, refresh_per_second=4, transient=False)
            if live is not None:
                live.start()
            try:
                run = await run_fleet(
                    options, stack, workdir, on_turn=view.turn, on_ready=view.ready, on_done=view.finish
                )
            finally:
                if live is not None:
                    live.stop()
        summary = summarize(run)
        out.print(summary_table(run, summary))
        if args.output:
            write_json(args.output, {"summary": summary, "run": run.to_dict()})
            err.print(f"wrote {args.output}")
    return 0 if not any(a.error for a in run.agents) else 1


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
