"""`goose-sidecar bench fleet-sim`: the deterministic fleet simulation (see `sidecar/bench/fleetsim/__init__.py`).

Prints the report (markdown) on stdout; progress and the command's own real run time (not simulated, not part of
the report) on stderr. `--json PATH` also writes the per-seed figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from sidecar.config import Config, ConfigError

HELP = "Deterministic fleet simulation: the production scheduler on the simulated engine, one virtual clock."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", dest="fs_scenario", default="default", help="a scenario name (--list shows them) or a .toml path"
    )
    parser.add_argument("--conditions", dest="fs_conditions", help="comma-separated subset (vllm is always run)")
    parser.add_argument("--seeds", dest="fs_seeds", help="comma-separated seeds (default: the scenario's)")
    parser.add_argument("--json", dest="fs_json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--output", dest="fs_output", type=Path, help="also write the report (markdown) here")
    parser.add_argument("--jobs", dest="fs_jobs", type=int, default=1, help="worker processes (same report)")
    parser.add_argument("--list", dest="fs_list", action="store_true", help="list scenarios and conditions")


def run(args: argparse.Namespace, config: Config) -> int:
    from sidecar.bench.fleetsim.conditions import CONDITIONS, select
    from sidecar.bench.fleetsim.report import as_json
    from sidecar.bench.fleetsim.run import run_scenario
    from sidecar.bench.fleetsim.scenario import available_scenarios, load_scenario

    if args.fs_list:
        print("scenarios:", ", ".join(available_scenarios()))
        for c in CONDITIONS:
            print(f"  {c.name:14s} {c.title}")
        return 0
    try:
        scenario = load_scenario(args.fs_scenario)
        names = [n.strip() for n in (args.fs_conditions or "").split(",") if n.strip()]
        conditions = select(names or scenario.bench.conditions)
        seeds = [int(s) for s in args.fs_seeds.split(",")] if args.fs_seeds else scenario.bench.seeds
    except (ConfigError, KeyError, ValueError) as exc:
        print(f"goose-sidecar bench fleet-sim: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()  # the command's own run time only; the simulation never reads a clock
    cpu_started = time.process_time()

    def progress(name: str, seed: int) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s real] {name} seed {seed}", file=sys.stderr)

    result = run_scenario(scenario, conditions, seeds, on_run=progress, jobs=max(1, args.fs_jobs))
    print(result.report, end="")
    if args.fs_output:
        args.fs_output.write_text(result.report, encoding="utf-8")
    if args.fs_json:
        args.fs_json.write_text(json.dumps(as_json(result.summaries, seeds), indent=1, sort_keys=True) + "\n")
    real, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += children.ru_utime + children.ru_stime
    print(f"fleet-sim done: {real:.1f} s real run time, {cpu:.1f} s CPU (not simulated)", file=sys.stderr)
    return 0
