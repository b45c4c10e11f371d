"""`goose-sidecar up`: run the coordinator; with no upstream configured, embed the simulator (32B + 7B)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from sidecar.config import Config
from sidecar.coordinator.settings import CoordinatorSettings

HELP = "Start the coordinator (an OpenAI-compatible proxy); embeds the vLLM simulator when no upstream is given."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", dest="coordinator.host", default=argparse.SUPPRESS, help="bind address (127.0.0.1)")
    parser.add_argument("--port", dest="coordinator.port", type=int, default=argparse.SUPPRESS, help="port (8080)")
    parser.add_argument(
        "--upstream",
        action="append",
        metavar="URL",
        help="an OpenAI-compatible upstream (vLLM) serving every model, as http://host:port or the OpenAI base URL "
        "http://host:port/v1; repeat for replicas. Several models: [models.<alias>] in goose-sidecar.toml. "
        "Default: the embedded simulator; env GOOSE_SIDECAR_UPSTREAM",
    )
    parser.add_argument(
        "--policy",
        dest="scheduling.policy",
        default=argparse.SUPPRESS,
        choices=["fcfs", "pools", "priority"],
        help="ordering: strict tiers with aging (priority), the seed report's semaphores (pools), passthrough (fcfs)",
    )
    parser.add_argument(
        "--native-priority",
        dest="scheduling.native_priority",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="the upstream vLLM runs with --scheduling-policy priority (nothing can detect it; default off)",
    )
    parser.add_argument(
        "--keys-file", dest="coordinator.keys_file", default=argparse.SUPPRESS, help="API keys file (KEY AGENT_ID)"
    )
    parser.add_argument(
        "--admin-token-file",
        dest="coordinator.admin_token_file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="require the token on FILE's first line for /status /metrics /dashboard (or set "
        "GOOSE_SIDECAR_COORDINATOR_ADMIN_TOKEN; not a flag: command lines are visible to other processes)",
    )
    parser.add_argument(
        "--allowed-hosts",
        dest="coordinator.allowed_hosts",
        default=argparse.SUPPRESS,
        type=lambda v: [h.strip() for h in v.split(",") if h.strip()],
        metavar="H1,H2",
        help="Host headers accepted besides loopback and the bound address (e.g. a container name); '*' any",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    if args.upstream:
        from sidecar.coordinator.settings import ModelUpstream

        config = config.model_copy(update={"models": {"default": ModelUpstream(replicas=args.upstream)}})
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve(config))
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency off Windows), else asyncio's: every relayed frame
    is a socket read and a write, and uvloop's transports do them in C (asyncio's selector loop registers and
    unregisters the upstream socket with the selector on every pause and resume of reading)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@contextlib.asynccontextmanager
async def _upstreams(config: Config) -> AsyncIterator[Config]:
    if config.models:
        yield config
        return
    try:
        from sidecar.sim.embedded import run_embedded
    except ImportError:
        print(
            "goose-sidecar up: no upstream configured. Pass --upstream URL (a vLLM server) or configure "
            "[models.<alias>] in goose-sidecar.toml.",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    from sidecar.coordinator.settings import ModelUpstream

    async with run_embedded(config.sim) as models:
        native = config.sim.scheduling_policy == "priority"  # the simulator orders by priority exactly then
        upstreams = {
            m.alias: ModelUpstream(served_name=m.served_name, replicas=[m.url], native_priority=native) for m in models
        }
        for m in models:
            print(f"simulator: {m.alias} = {m.served_name} at {m.url}", file=sys.stderr)
        yield config.model_copy(update={"models": upstreams})


def uvicorn_options(c: CoordinatorSettings) -> dict[str, Any]:
    """How uvicorn serves the coordinator (besides where)."""
    return {
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": round(c.shutdown_grace_s),
        # The request head is bounded while it is parsed: a head over max_header_bytes never reaches memory in
        # full, before any authentication (httptools with the coordinator's bound; h11's own where httptools is
        # not installed).
        "backlog": ACCEPT_BACKLOG,
        **http_protocol(c.max_header_bytes),
    }


# Connections waiting to be accepted (the kernel caps it at net.core.somaxconn, 4096 by default since Linux
# 5.4): a fleet that starts at once connects all at once, and a SYN dropped from a full queue is retried after 1 s.
ACCEPT_BACKLOG = 4096


def http_protocol(max_head_bytes: int) -> dict[str, Any]:
    """uvicorn's `http` option: httptools (C) with a bounded head, else h11 (pure Python, several times the CPU
    per relayed frame) with its incomplete-event limit."""
    try:
        from sidecar.coordinator.http_protocol import bounded_httptools
    except ImportError:
        return {"http": "h11", "h11_max_incomplete_event_size": max_head_bytes}
    return {"http": bounded_httptools(max_head_bytes)}


async def _serve(config: Config) -> None:
    import uvicorn

    from sidecar.coordinator.app import build_app

    async with _upstreams(config) as resolved:
        app = build_app(resolved)
        c = resolved.coordinator
        server = uvicorn.Server(uvicorn.Config(app, host=c.host, port=c.port, **uvicorn_options(c)))
        freeze_heap()
        for line in upstream_lines(resolved):
            print(line, file=sys.stderr)
        print(f"coordinator: http://{c.host}:{c.port}  (OpenAI base URL http://{c.host}:{c.port}/v1)", file=sys.stderr)
        await server.serve()


def freeze_heap() -> None:
    """Move everything allocated so far (imports, configuration, the app: ~50,000 objects) out of the garbage
    collector's view. A full collection walks every tracked object, and each one stalled every stream in flight
    for its duration (tens of milliseconds on a loaded core); what start-up made lives until exit anyway."""
    gc.collect()
    gc.freeze()


def upstream_lines(config: Config) -> list[str]:
    """How each configured upstream was understood, for the start-up output: its base URL (a given `/v1` is
    removed), where calls, health and metrics go, and whether native priority is in effect."""
    s = config.scheduling
    lines = []
    for alias, model in config.models.items():
        native = s.native_priority if model.native_priority is None else model.native_priority
        priority = "native priority on" if native else "native priority off (no `priority` sent)"
        for url in model.replicas:
            where = f"calls {url}/v1/..., health {url}/health, metrics {url}/metrics"
            lines.append(f"upstream {alias}: {url}  ({where}; {priority})")
    return lines
