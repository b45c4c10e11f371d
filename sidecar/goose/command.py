"""`goose-sidecar goose-config`: register the sidecar and the coordinator with Goose, for one agent."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

HELP = "Write or merge Goose's config (sidecar extension, provider pointed at the coordinator, recipe) for one agent"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent-id", metavar="ID", help="the agent's identity (default: [sidecar] agent_id)")
    parser.add_argument("--workspace", metavar="DIR", help="the agent's workspace (default: [sidecar] workspace)")
    parser.add_argument("--coordinator", metavar="URL", help="coordinator base URL (default: [sidecar] coordinator)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--goose-root", metavar="DIR", help="a GOOSE_PATH_ROOT to write into (default: $GOOSE_PATH_ROOT)"
    )
    where.add_argument("--config-file", metavar="FILE", help="merge into this config.yaml (e.g. ~/.config/goose/...)")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="how Goose reaches the sidecar")
    parser.add_argument(
        "--sidecar-url", metavar="URL", default="http://127.0.0.1:8765/mcp", help="for --transport http"
    )
    parser.add_argument("--model", default=None, metavar="NAME", help="model name Goose asks for")
    parser.add_argument(
        "--context-limit", type=int, default=None, metavar="TOKENS", help="GOOSE_CONTEXT_LIMIT for the model (32768)"
    )
    parser.add_argument("--timeout", type=int, default=900, metavar="SECONDS", help="Goose's per-tool-call timeout")
    parser.add_argument(
        "--sidecar-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for 'goose-sidecar mcp' (repeatable), e.g. --sidecar-arg=--allow-command='git log *'",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help="the agent's key for a coordinator started with --keys-file (one from 'goose-sidecar deploy keys'); "
        "default: a dummy key, for a coordinator without keys, which takes the agent from X-Agent-Id",
    )
    parser.add_argument("--write-examples", metavar="DIR", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, config: Any) -> int:
    from sidecar.goose import registration as gc

    if args.write_examples:
        write_examples(Path(args.write_examples))
        return 0
    settings = config.sidecar
    agent_id = args.agent_id or settings.agent_id
    coordinator = args.coordinator or settings.coordinator
    workspace = args.workspace or str(settings.workspace)
    if not agent_id or not coordinator:
        print("goose-sidecar goose-config: --agent-id and --coordinator are required", file=sys.stderr)
        return 2
    root = args.goose_root or (None if args.config_file else os.environ.get("GOOSE_PATH_ROOT"))
    if root is None and args.config_file is None:
        print("goose-sidecar goose-config: pass --goose-root DIR or --config-file FILE", file=sys.stderr)
        return 2
    if args.api_key is not None and (not args.api_key or any(c.isspace() for c in args.api_key)):
        print("goose-sidecar goose-config: --api-key must be a non-empty key without spaces", file=sys.stderr)
        return 2
    setup = gc.AgentSetup(
        agent_id=agent_id,
        workspace=str(Path(workspace).resolve()),
        coordinator=coordinator,
        model=args.model or gc.DEFAULT_MODEL,
        context_limit=args.context_limit or gc.DEFAULT_CONTEXT_LIMIT,
        transport=args.transport,
        sidecar_url=args.sidecar_url,
        extra_args=tuple(args.sidecar_arg),
        timeout_s=args.timeout,
        api_key=args.api_key or gc.DUMMY_API_KEY,
        # Over HTTP, the sidecar's token from the environment (never a flag: `ps` shows command lines).
        sidecar_token=os.environ.get("GOOSE_SIDECAR_TOKEN") or None,
    )
    try:
        written = gc.write_goose_config(
            setup,
            goose_root=Path(root).resolve() if root else None,
            config_file=Path(args.config_file).expanduser() if args.config_file else None,
        )
    except (ValueError, OSError) as exc:
        print(f"goose-sidecar goose-config: {exc}", file=sys.stderr)
        return 1
    for label, path in (
        ("config", written.config),
        ("secrets", written.secrets),
        ("custom provider", written.custom_provider),
        ("recipe", written.recipe),
        ("environment", written.env),
    ):
        if path is not None:
            print(f"{label:>16}: {path}")
    print(
        f"\nheadless run:\n  set -a; . {written.env}; set +a\n  goose run --recipe {written.recipe} --params task='...'"
    )
    return 0


EXAMPLE = {
    "agent_id": "agent-1",
    "workspace": "/workspace",
    "coordinator": "http://coordinator:8000",
    "sidecar_url": "http://sidecar-agent-1:8765/mcp",
    "sidecar_command": ("goose-sidecar",),
}


def write_examples(directory: Path) -> None:
    """Regenerate the checked-in examples in goose_config/ (a test keeps them equal to this output)."""
    for name, text in example_files().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def example_files() -> dict[str, str]:
    import json

    from sidecar.goose import registration as gc
    from sidecar.goose.yamltext import dump

    stdio = gc.AgentSetup(**EXAMPLE)  # type: ignore[arg-type]
    http = gc.AgentSetup(**EXAMPLE, transport="http")  # type: ignore[arg-type]
    header = "# Generated by `goose-sidecar goose-config` for agent-1 ({}); see goose_config/README.md.\n"
    return {
        "config.yaml": header.format("stdio") + gc.merge_config("", stdio),
        "config-http.yaml": header.format("streamable_http") + gc.merge_config("", http),
        "secrets.yaml": header.format("secrets.yaml, read when GOOSE_DISABLE_KEYRING=1") + gc.merge_secrets("", stdio),
        "provider.env": header.format("environment") + gc.env_file(gc.provider_env(stdio, "/goose")),
        "custom_providers/goose_sidecar.json": json.dumps(gc.custom_provider(stdio), indent=2) + "\n",
        "recipe.yaml": header.format("headless recipe") + dump(gc.recipe(stdio)),
    }
