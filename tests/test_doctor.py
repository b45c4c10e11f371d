"""`goose-sidecar doctor` against a real deployment on loopback: the simulator as two upstreams, a coordinator
in front of them, a Goose root written by goose-config; then the same with the coordinator gone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sidecar.cli import main
from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.serving import free_port, serve_app
from sidecar.sim.settings import SimSettings
from sidecar.stack import simulators

from .conftest import ROOT


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "doctor", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """check -> its line."""
    return {line.split(":", 1)[0][6:]: line for line in done.stdout.splitlines()}


async def test_doctor_passes_on_a_working_deployment_and_fails_without_a_coordinator(tmp_path: Path) -> None:
    async with simulators(SimSettings(time_scale=100)) as models:
        # The embedded simulator runs vLLM's priority policy, which the configuration must say (nothing detects it).
        toml = "".join(f'[models.{m.alias}]\nreplicas = ["{m.url}"]\nnative_priority = true\n' for m in models)
        (tmp_path / "goose-sidecar.toml").write_text(toml)
        config = load_config(tmp_path / "goose-sidecar.toml", env={})
        async with serve_app(build_app(config)) as url:
            root = tmp_path / "goose"
            argv = ["goose-config", "--agent-id", "agent-1", "--workspace", str(tmp_path), "--coordinator", url]
            assert main([*argv, "--goose-root", str(root)]) == 0
            common = ["--config", str(tmp_path / "goose-sidecar.toml"), "--goose-root", str(root)]
            done = await asyncio.to_thread(doctor, *common, "--coordinator", url, "--agents", "2")
            found = lines(done)
            assert done.returncode == 0, done.stdout + done.stderr
            assert found["coordinator"].startswith("ok") and found["coordinator ready"].startswith("ok")
            for m in models:  # the simulator's /metrics has every name admission reads
                assert found[f"upstream {m.alias}"].startswith(f"ok    upstream {m.alias}: {m.url}/metrics has"), found
            for check in ("goose config", "goose provider", "goose config env", "inotify instances"):
                assert found[check].startswith("ok"), found[check]
            assert "on for large, small" in found["native priority"] and "unknown" in found["native priority"]
    gone = await asyncio.to_thread(doctor, *common, "--coordinator", f"http://127.0.0.1:{free_port()}")
    found = lines(gone)
    assert gone.returncode == 1
    assert found["coordinator"].startswith("fail") and "goose-sidecar up" in found["coordinator"]
    assert found["upstream large"].startswith("fail")  # the simulators stopped too
    assert found["goose config env"].startswith("fail") and "not the coordinator" in found["goose config env"]
