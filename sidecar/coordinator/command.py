"""The coordinator's part of `goose-sidecar up` (`sidecar.up`): its flags, how uvicorn serves it, its start-up lines."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

from sidecar.config import Config
from sidecar.coordinator.settings import CoordinatorSettings
from sidecar.serving import base_url, bounded_head, listen_socket, serve_until_signalled

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


def uvicorn_options(c: CoordinatorSettings) -> dict[str, Any]:
    """How uvicorn serves the coordinator (besides where)."""
    return {
        "log_config": None,  # logging is `sidecar.obs`'s, at its level
        "log_level": None,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": round(c.shutdown_grace_s),
        **http_protocol(c.max_header_bytes),  # headers over it never reach memory in full, before authentication
    }


def http_protocol(max_head_bytes: int) -> dict[str, Any]:
    """uvicorn's `http` option: httptools (C, a fraction of h11's CPU per relayed frame) fed at most
    `max_head_bytes` of a head (`http_protocol.py`), else h11 with its incomplete-event limit."""
    try:
        from sidecar.coordinator.http_protocol import bounded_httptools
    except ImportError:
        return bounded_head(max_head_bytes)
    return {"http": bounded_httptools(max_head_bytes)}


async def serve(config: Config) -> None:
    """Serve the coordinator for `config` (its upstreams resolved) until SIGINT/SIGTERM, after the start-up lines."""
    from sidecar.coordinator.app import build_app

    app = build_app(config)
    freeze_heap()
    c = config.coordinator
    sock = listen_socket(c.host, c.port)
    url = base_url(c.host, sock.getsockname()[1])
    for line in upstream_lines(config):
        print(line, file=sys.stderr)
    print(f"coordinator: {url}  (OpenAI base URL {url}/v1)", file=sys.stderr)
    await serve_until_signalled(app, sock, **uvicorn_options(c))


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
