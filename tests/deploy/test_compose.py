"""The docker-compose generator, the committed file it produced, and `docker-compose config` on both."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sidecar.deploy.compose import compose_project, render_compose
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docker-compose.yml"


def test_the_committed_file_is_the_generator_output_for_two_agents_with_simulators() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_compose(2, simulator=True), (
        "regenerate: goose-sidecar deploy compose --agents 2 --simulator -o docker-compose.yml"
    )


@pytest.mark.parametrize("agents", [1, 3, 7])
def test_n_agents_give_n_goose_and_n_sidecar_services(agents: int) -> None:
    services = compose_project(agents)["services"]
    goose = sorted(name for name in services if name.startswith("goose-") and not name.startswith("goose-config"))
    sidecars = sorted(name for name in services if name.startswith("sidecar-"))
    assert len(goose) == len(sidecars) == agents
    assert not any(name.startswith("simulator") for name in services)
    for n in range(1, agents + 1):
        env = services[f"goose-{n}"]["environment"]
        assert env["OPENAI_CUSTOM_HEADERS"] == f"X-Agent-Id=agent-{n}"
        assert env["OPENAI_HOST"] == "http://coordinator:8080"
        assert env["OPENAI_API_KEY"]  # Goose ignores custom headers without some key
        assert (env["GOOSE_MODE"], env["GOOSE_DISABLE_KEYRING"], env["GOOSE_PROVIDER"]) == ("auto", "1", "openai")
        command = services[f"sidecar-{n}"]["command"]
        flags = dict(zip(command[1::2], command[2::2], strict=True))
        assert command[0] == "mcp"
        assert flags["--agent-id"] == f"agent-{n}"
        assert flags["--allowed-hosts"] == f"sidecar-{n}"
        assert flags["--coordinator"] == "http://coordinator:8080"
        # Goose and its sidecar see the same workspace at the same path.
        workspace = services[f"sidecar-{n}"]["volumes"][0]
        assert workspace in services[f"goose-{n}"]["volumes"]
        assert workspace.endswith(":" + flags["--workspace"]) and services[f"goose-{n}"]["working_dir"] == "/workspace"
        assert services[f"goose-{n}"]["command"][:2] == ["run", "--recipe"]
        assert services[f"goose-{n}"]["depends_on"][f"sidecar-{n}"] == {"condition": "service_healthy"}


def test_simulators_are_an_optional_profile() -> None:
    services = compose_project(1, simulator=True)["services"]
    simulators = {name: s for name, s in services.items() if name.startswith("simulator")}
    assert set(simulators) == {"simulator-32b", "simulator-7b"}
    assert all(s["profiles"] == ["sim"] for s in simulators.values())
    assert not any("depends_on" in s and set(s["depends_on"]) & set(simulators) for s in services.values())


def compose_config(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "GOOSE_SIDECAR_"))}
    return subprocess.run(
        [tool, "-f", str(path), *extra, "config"], capture_output=True, text=True, timeout=60, env=env, check=False
    )


@pytest.mark.parametrize("profile", [(), ("--profile", "sim")])
def test_docker_compose_accepts_the_committed_file(profile: tuple[str, ...]) -> None:
    done = compose_config(COMMITTED, *profile)
    assert done.returncode == 0, done.stderr
    assert "sidecar-2:" in done.stdout and "goose-2:" in done.stdout


def test_docker_compose_accepts_a_generated_fleet(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(render_compose(5), encoding="utf-8")
    done = compose_config(path)
    assert done.returncode == 0, done.stderr
    assert "goose-5:" in done.stdout and "simulator" not in done.stdout


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    # The validation above can fail: the same tool on a file with a misspelt key.
    path = tmp_path / "docker-compose.yml"
    path.write_text(render_compose(1).replace("depends_on:", "depends_onn:"), encoding="utf-8")
    assert compose_config(path).returncode != 0
