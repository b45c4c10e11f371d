"""`goose-sidecar up`: run the coordinator; with no upstream configured, embed the simulator (32B + 7B).

The coordinator's own part (flags, how uvicorn serves it, the start-up lines) is `sidecar.coordinator.command`;
this module adds the embedded simulators, through the composition root `sidecar.stack`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from sidecar.config import Config
from sidecar.coordinator.command import HELP, add_arguments, serve
from sidecar.serving import event_loop_factory

__all__ = ["HELP", "add_arguments", "run"]


def run(args: argparse.Namespace, config: Config) -> int:
    if args.upstream:
        from sidecar.coordinator.settings import ModelUpstream

        config = config.model_copy(update={"models": {"default": ModelUpstream(replicas=args.upstream)}})
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_up(config))
    return 0


async def _up(config: Config) -> None:
    if config.models:
        await serve(config)
        return
    try:
        from sidecar.stack import in_front_of, simulators
    except ImportError:
        print(
            "goose-sidecar up: no upstream configured. Pass --upstream URL (a vLLM server) or configure "
            "[models.<alias>] in goose-sidecar.toml.",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    async with simulators(config.sim) as models:
        for m in models:
            print(f"simulator: {m.alias} = {m.served_name} at {m.url}", file=sys.stderr)
        native = config.sim.scheduling_policy == "priority"  # the simulator orders by priority exactly then
        await serve(in_front_of(config, models, native_priority=native))
