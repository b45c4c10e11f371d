"""`--help` that helps: every flag of every command says what it does, shows its allowed values, and a flag that
sets a configuration field names the environment variable that sets the same field (which must exist)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from sidecar.cli import build_parser
from sidecar.config import _env_overrides


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield f"{prefix}{name}", child
                yield from commands(child, f"{prefix}{name} ")


COMMANDS = dict(commands(build_parser()))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest not in ("help", "version")]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_help_and_shows_its_values(name: str) -> None:
    parser = COMMANDS[name]
    text = parser.format_help()
    for action in options(parser):
        if action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        if action.choices is not None:
            assert "{" + ",".join(map(str, action.choices)) + "}" in text, f"{name} {action.option_strings[0]}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_setting_flags_name_a_real_environment_variable(name: str) -> None:
    for action in options(COMMANDS[name]):
        if "." not in action.dest or action.help == argparse.SUPPRESS:
            continue
        env = "GOOSE_SIDECAR_" + action.dest.replace(".", "_").upper()
        assert f"env {env}" in str(action.help), f"{name} {action.option_strings[0]}"
        problems: list[str] = []
        _env_overrides({env: "1"}, problems)
        assert problems == [], problems


def test_up_takes_a_policy() -> None:
    args = build_parser().parse_args(["up", "--policy", "fcfs"])
    assert vars(args)["scheduling.policy"] == "fcfs"
