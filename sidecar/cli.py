"""`goose-sidecar`: one console script, one subcommand per role.

Each subcommand lives in its own module exposing `HELP` (one line), `add_arguments(parser)` and
`run(args, config) -> int`. Modules import their heavy dependencies inside `run`, so `--help` stays fast
and one role's missing optional dependency never breaks another. Flags that override configuration use
`dest="section.field"` with `default=argparse.SUPPRESS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from sidecar import __version__
from sidecar.config import ENV_PREFIX, Config, ConfigError, ignored_file_note, load_config

# Registered explicitly, in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "up": "sidecar.up",
    "sim": "sidecar.sim.command",
    "mcp": "sidecar.toolserver.command",
    "goose-config": "sidecar.goose.command",
    "fleet": "sidecar.fleet.command_fleet",
    "bench": "sidecar.fleet.command_bench",
    "demo": "sidecar.fleet.command_demo",
    "status": "sidecar.coordinator.status_command",
    "deploy": "sidecar.deploy.command",
    "doctor": "sidecar.doctor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goose-sidecar",
        description="Coordinator, MCP sidecar and vLLM simulator for fleets of background coding agents.",
        epilog="Configuration: --config FILE (or $GOOSE_SIDECAR_CONFIG), GOOSE_SIDECAR_<SECTION>_<FIELD> variables, "
        "then flags. Run 'goose-sidecar COMMAND --help' for a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"goose-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("sidecar."):
                continue  # a role not built yet in this checkout
            raise
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        command.add_argument(
            "--config",
            metavar="PATH",
            help="TOML configuration file (default: $GOOSE_SIDECAR_CONFIG; never read from the current directory)",
        )
        command.add_argument(
            "--log-level",
            dest="log.level",
            default=argparse.SUPPRESS,
            choices=["debug", "info", "warning", "error"],
            help="log lines at this level and above, on stderr (info)",
        )
        command.add_argument(
            "--log-format",
            dest="log.format",
            default=argparse.SUPPRESS,
            choices=["auto", "json", "console"],
            help="auto = readable on a terminal, JSON lines otherwise (auto)",
        )
        module.add_arguments(command)
        name_settings(command)
        command.set_defaults(_module=module)
    return parser


def name_settings(parser: argparse.ArgumentParser) -> None:
    """Say in each setting flag's help which environment variable sets the same thing; a flag with a fixed set
    of values keeps argparse's `{a,b,c}` so the values show, others are named after their field."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                name_settings(child)
        if "." not in action.dest or not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if action.metavar is None and action.choices is None and action.nargs != 0:
            action.metavar = action.dest.rsplit(".", 1)[1].upper()
        env = ENV_PREFIX + action.dest.replace(".", "_").upper()
        action.help = f"{action.help}; env {env}" if action.help else f"env {env}"


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys the user set with flags (dotted dests only)."""
    return {key: value for key, value in vars(args).items() if "." in key}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if note := ignored_file_note(args.config):
        print(f"goose-sidecar {args.command}: note: {note}", file=sys.stderr)
    try:
        config: Config = load_config(args.config, overrides=flag_overrides(args))
    except ConfigError as exc:
        print(f"goose-sidecar {args.command}: {exc}", file=sys.stderr)
        return 2
    from sidecar.obs import configure_logging

    configure_logging(config.log.level, config.log.format)
    try:
        return int(args._module.run(args, config) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
