"""`goose-sidecar mcp`: the per-agent MCP server, over stdio (default) or streamable HTTP (`--http HOST:PORT`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "Run the per-agent MCP sidecar (cached workspace tools, stage events) over stdio or streamable HTTP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--workspace", dest="sidecar.workspace", default=s, metavar="DIR", help="workspace root (.)")
    parser.add_argument(
        "--http",
        dest="sidecar.http",
        default=s,
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (Goose type: streamable_http)",
    )
    parser.add_argument(
        "--allowed-hosts",
        dest="sidecar.allowed_hosts",
        default=s,
        type=_csv,
        metavar="H1,H2",
        help="extra Host headers accepted over HTTP besides loopback (e.g. a container name); '*' accepts any",
    )
    parser.add_argument(
        "--auth-token-file",
        dest="sidecar.auth_token_file",
        default=s,
        metavar="FILE",
        help="over HTTP, require the bearer token on this file's first line (or set "
        "GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN; never a flag, since command lines are visible to other processes)",
    )
    parser.add_argument(
        "--insecure-no-auth",
        dest="sidecar.insecure_no_auth",
        default=s,
        action="store_true",
        help="serve HTTP without a bearer token: anyone who reaches it can write files and run the tests",
    )
    parser.add_argument("--coordinator", dest="sidecar.coordinator", default=s, metavar="URL", help="events go here")
    parser.add_argument("--agent-id", dest="sidecar.agent_id", default=s, metavar="ID", help="agent id for events")
    parser.add_argument("--test-command", dest="sidecar.test_command", default=s, metavar="CMD", help="for run_tests")
    parser.add_argument(
        "--test-timeout",
        dest="sidecar.test_timeout_s",
        default=s,
        type=float,
        metavar="SECONDS",
        help="run_tests is killed (its whole process group) after this long (600)",
    )
    parser.add_argument(
        "--allow-command",
        dest="sidecar.allow_commands",
        default=s,
        action="append",
        metavar="PATTERN",
        help="allow run_command for this command line, e.g. 'git log *' (repeatable; none by default)",
    )
    parser.add_argument(
        "--peek-port",
        dest="sidecar.peek_port",
        default=s,
        type=int,
        metavar="PORT",
        help="over stdio, also serve POST /peek on 127.0.0.1:PORT (0: any free port) so the coordinator can "
        "speculate the next LLM call when tool results are already cached (over --http, /peek is always on)",
    )
    parser.add_argument(
        "--search-backend",
        dest="sidecar.search_backend",
        default=s,
        choices=["auto", "rg", "python"],
        help="search with ripgrep, the Python fallback (same output), or rg when installed (auto)",
    )
    parser.add_argument(
        "--search-timeout",
        dest="sidecar.search_timeout_s",
        default=s,
        type=float,
        metavar="SECONDS",
        help="kill a search that runs longer and answer with an error (default 3)",
    )
    parser.add_argument(
        "--cache-max-bytes",
        dest="sidecar.cache_max_bytes",
        default=s,
        type=int,
        metavar="BYTES",
        help="size of the tool-output cache, least recently used out first; 0 turns it off (64 MiB)",
    )


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def run(args: argparse.Namespace, config: Any) -> int:
    import asyncio
    import warnings

    # Watchdog warns when it re-adds a watch while directories move under it; harmless, and noisy on stderr.
    warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
    from sidecar.toolserver.watcher import InotifyLimitError, probe_inotify

    settings = config.sidecar
    try:
        probe_inotify()
        if settings.http:
            return asyncio.run(_serve_http(settings))
        return asyncio.run(_serve_stdio(settings))
    except InotifyLimitError as exc:
        print(f"goose-sidecar mcp: {exc.strerror}", file=sys.stderr)
        return 1


async def _serve_stdio(settings: Any) -> int:
    import contextlib

    from sidecar.toolserver.httpapp import build_peek_app, serve_http
    from sidecar.toolserver.sidecar import Sidecar

    sidecar = Sidecar(settings)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(sidecar)
        if settings.peek_port is not None:  # loopback only: the coordinator must run on this machine
            url = await stack.enter_async_context(serve_http(build_peek_app(sidecar), "127.0.0.1", settings.peek_port))
            sidecar.advertise_peek(url)
        await sidecar.mcp.run_stdio_async()
    return 0


def advertised_host(host: str, allowed_hosts: list[str]) -> str:
    """The host others reach an HTTP sidecar at: a wildcard bind is advertised as its first allowed host name
    (a container's service name), else loopback."""
    if host in ("0.0.0.0", "::", ""):
        named = [h for h in allowed_hosts if h != "*"]
        return named[0] if named else "127.0.0.1"
    return host


async def _serve_http(settings: Any) -> int:
    import sys

    from sidecar.obs import get_logger
    from sidecar.serving import base_url, listen_socket, serve_until_signalled
    from sidecar.toolserver.httpapp import HTTP_OPTIONS, build_http_app
    from sidecar.toolserver.httpauth import TokenError, resolve_token
    from sidecar.toolserver.sidecar import Sidecar

    try:
        token = resolve_token(settings.auth_token, settings.auth_token_file, insecure_no_auth=settings.insecure_no_auth)
    except TokenError as exc:
        print(f"goose-sidecar mcp: {exc}", file=sys.stderr)
        return 2
    host, _, port = settings.http.rpartition(":")
    host = host.strip("[]")
    sidecar = Sidecar(settings)
    app = build_http_app(sidecar, token=token)
    if token is None:
        get_logger(__name__).warning("sidecar serving HTTP without authentication (--insecure-no-auth)")
    sock = listen_socket(host, int(port))  # bound first, so port 0 works and the URL logged is the real one
    port_bound = sock.getsockname()[1]
    get_logger(__name__).info("sidecar listening", url=f"{base_url(host, port_bound)}/mcp")
    sidecar.advertise_peek(base_url(advertised_host(host, settings.allowed_hosts), port_bound))
    await serve_until_signalled(app, sock, **HTTP_OPTIONS)
    return 0
