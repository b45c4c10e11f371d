"""The per-call microbenchmark runs every step of a call and reports each (figures are not asserted)."""

from __future__ import annotations

import pytest

from sidecar.bench import percall
from sidecar.obs import configure_logging


def _table(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        assert percall.main(argv) == 0
    finally:
        configure_logging("info", "console")  # the suite's setting (tests/conftest.py); the bench sets warning
    return capsys.readouterr().out


def _values(table: str) -> list[float]:
    return [float(line.split("|")[2]) for line in table.splitlines()[2:] if line.startswith("| ")]


def test_every_step_is_measured_and_reported(capsys: pytest.CaptureFixture[str]) -> None:
    table = _table(["--calls", "20", "--rounds", "1", "--policy", "priority"], capsys)
    steps = ("guard", "parse", "plan", "slot (acquire + release)", "slot, 2,000 agents", "telemetry hooks")
    for step in (*steps, "slot, 2,000 agents, virtual clock", "logging at warning", "disconnect watch"):
        assert f"| {step} |" in table
    assert "| total (one agent) |" in table and "policy: priority" in table
    assert "kv engaged" not in table
    assert all(value >= 0 for value in _values(table))


def test_the_kv_policy_gets_its_idle_and_engaged_fleet_steps(capsys: pytest.CaptureFixture[str]) -> None:
    # `kv` is the default policy: no --policy runs it. Each fleet step raises when its dispatcher is not in the
    # state it names (a call waited, the gates engaged or not, fewer calls waiting): the table is only printed
    # when every step ran as named.
    table = _table(["--calls", "5", "--rounds", "1"], capsys)
    assert "policy: kv" in table
    for step in ("slot, 2,000 agents, virtual clock", "slot, kv engaged, 2,000 agents, 64 waiting"):
        assert f"| {step} |" in table
    assert "| slot, kv engaged, 200 agents, 64 waiting |" in table
    assert "| slot, 2,000 agents |" not in table  # the real clock's fleet step is left out under kv
    assert all(value >= 0 for value in _values(table))
