"""The per-call microbenchmark runs every step of a call and reports each (figures are not asserted)."""

from __future__ import annotations

import pytest

from sidecar.bench import percall
from sidecar.obs import configure_logging


def test_every_step_is_measured_and_reported(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        assert percall.main(["--calls", "20", "--rounds", "1"]) == 0
    finally:
        configure_logging("info", "console")  # the suite's setting (tests/conftest.py); the bench sets warning
    table = capsys.readouterr().out
    steps = ("guard", "parse", "plan", "slot (acquire + release)", "slot, 2,000 agents", "telemetry hooks")
    for step in (*steps, "logging at warning", "disconnect watch", "total (one agent)"):
        assert f"| {step} |" in table
    rows = [line.split("|")[2].strip() for line in table.splitlines()[2:]]
    assert all(float(value) >= 0 for value in rows)
