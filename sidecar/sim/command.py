"""`goose-sidecar sim`: the vLLM simulator as its own server, or `--calibrate` to print its calibration table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = (
    "Run the vLLM simulator (OpenAI API, /metrics with vLLM's names); --calibrate compares it with published figures."
)

_PROFILES = ("qwen2.5-coder-32b-a100", "qwen2.5-coder-7b-a100")  # kept in step with sim.profiles.PROFILES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--host", dest="sim.host", default=s, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", dest="sim.port", type=int, default=s, help="port (default 8000)")
    parser.add_argument("--profile", dest="sim.profile", choices=_PROFILES, default=s, help="latency profile")
    parser.add_argument(
        "--served-model-name", dest="sim.served_model_names", nargs="+", default=s, help="names served (first reported)"
    )
    parser.add_argument(
        "--scheduling-policy",
        dest="sim.scheduling_policy",
        choices=["fcfs", "priority"],
        default=s,
        help="vLLM's --scheduling-policy; under fcfs a request's priority field is accepted and ignored (priority)",
    )
    parser.add_argument(
        "--time-scale", dest="sim.time_scale", type=float, default=s, help="simulated seconds per real second"
    )
    parser.add_argument("--seed", dest="sim.seed", type=int, default=s, help="seed of the synthetic agent")
    parser.add_argument("--api-key", dest="sim.api_key", default=s, help="require this bearer token on /v1/*")
    parser.add_argument(
        "--max-agent-steps",
        dest="sim.max_agent_steps",
        type=int,
        default=s,
        help="the synthetic agent answers with a final text after this many tool calls (40)",
    )
    for fault in ("500", "503", "error_frame", "drop", "stall"):
        flag = fault.replace("_", "-")
        parser.add_argument(
            f"--fault-{flag}-rate",
            dest=f"sim.fault_{fault}_rate",
            type=float,
            default=s,
            metavar="P",
            help=f"chance per request of the {fault} fault",
        )
    parser.add_argument("--fault-stall-s", dest="sim.fault_stall_s", type=float, default=s, help="stall length (s)")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="print simulated tok/s and TTFT per profile next to the published figures, then exit",
    )


def run(args: argparse.Namespace, config: Any) -> int:
    settings = config.sim
    if args.calibrate:
        return _calibrate(settings)
    import uvicorn

    from sidecar.obs import get_logger
    from sidecar.sim.app import build_sim_app
    from sidecar.sim.profiles import ProfileError

    try:
        app = build_sim_app(settings)
    except ProfileError as exc:
        print(f"goose-sidecar sim: {exc}", file=sys.stderr)
        return 2
    server = app.state.sim
    get_logger("sidecar.sim").info(
        "sim_starting",
        url=f"http://{settings.host}:{settings.port}",
        profile=server.profile.name,
        models=list(server.served.names),
        policy=settings.scheduling_policy,
        time_scale=settings.time_scale,
        kv_tokens=server.profile.kv_capacity_tokens,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=config.log.level,
        access_log=False,
        lifespan="on",
        log_config=None,
    )
    return 0


def _calibrate(settings: Any) -> int:
    from sidecar.sim.calibrate import TOLERANCE, calibrate, format_table
    from sidecar.sim.profiles import PROFILES, ProfileError, resolve_profile

    try:
        profiles = [resolve_profile(name, settings.profile_overrides.get(name)) for name in PROFILES]
    except ProfileError as exc:
        print(f"goose-sidecar sim: {exc}", file=sys.stderr)
        return 2
    rows = calibrate(profiles, progress=lambda line: print(f"calibrating {line}", file=sys.stderr, flush=True))
    print(format_table(rows))
    met = sum(row.ok for row in rows)
    print(f"\n{met} of {len(rows)} figures within {TOLERANCE:.0%} (simulated on the virtual clock).")
    return 0
