"""The docker-compose generator, the committed file it produced, and `docker-compose config` on both."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.cli import build_parser
from sidecar.deploy.compose import GOOSE_ROOT, compose_project, render_compose, sidecar_url
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
        assert f"agent-{n}-goose:{GOOSE_ROOT}" in services[f"goose-{n}"]["volumes"]
        assert services[f"goose-config-{n}"]["volumes"] == [f"agent-{n}-goose:{GOOSE_ROOT}"]
        assert services[f"goose-{n}"]["depends_on"][f"sidecar-{n}"] == {"condition": "service_healthy"}


def test_every_sidecar_requires_its_own_token_from_env_and_its_goose_sends_it() -> None:
    """No secret in the file: each sidecar's token is its own `.env` variable, empty (fail closed) without it."""
    services = compose_project(3)["services"]
    refs = set()
    for n in range(1, 4):
        ref = services[f"sidecar-{n}"]["environment"]["GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN"]
        assert ref == f"${{SIDECAR_{n}_TOKEN:-}}" == services[f"goose-{n}"]["environment"]["GOOSE_SIDECAR_TOKEN"]
        assert "--insecure-no-auth" not in services[f"sidecar-{n}"]["command"]
        refs.add(ref)
    assert len(refs) == 3
    (admin,) = [e for e in services["coordinator"]["environment"] if e.startswith("GOOSE_SIDECAR_COORDINATOR_ADMIN")]
    assert admin.endswith("=${COORDINATOR_ADMIN_TOKEN:-}")


def test_deploy_secrets_generates_every_variable_the_file_refers_to(tmp_path: Path) -> None:
    out = tmp_path / ".env"
    for _ in range(2):  # appends, never prints a secret twice
        done = subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "deploy", "secrets", "--agents", "3", "-o", str(out)],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and done.stdout == "", done.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    pairs = [line.split("=", 1) for line in out.read_text().splitlines()]
    names = [name for name, _ in pairs]
    assert names == ["COORDINATOR_ADMIN_TOKEN", "SIDECAR_1_TOKEN", "SIDECAR_2_TOKEN", "SIDECAR_3_TOKEN"] * 2
    values = [value for _, value in pairs]
    assert len(set(values)) == len(values) and all(len(v) >= 32 and shlex.quote(v) == v for v in values)
    text = render_compose(3)
    for name in names:
        assert f"${{{name}:-}}" in text


def test_simulators_are_an_optional_profile() -> None:
    services = compose_project(1, simulator=True)["services"]
    simulators = {name: s for name, s in services.items() if name.startswith("simulator")}
    assert set(simulators) == {"simulator-32b", "simulator-7b"}
    assert all(s["profiles"] == ["sim"] for s in simulators.values())
    assert not any("depends_on" in s and set(s["depends_on"]) & set(simulators) for s in services.values())


def test_every_command_is_a_goose_sidecar_subcommand_and_parses() -> None:
    parser = build_parser()
    for name, service in compose_project(2, simulator=True)["services"].items():
        if service["image"] != "goose-sidecar:local":
            continue
        args = parser.parse_args(service["command"])
        assert args.command == service["command"][0], name


@pytest.mark.parametrize("n", [1, 2])
def test_goose_config_writes_what_goose_reads(tmp_path: Path, n: int) -> None:
    """Run goose-config-N's command (its GOOSE_PATH_ROOT volume as a directory): the recipe lands where goose-N's
    command looks, registers sidecar-N's URL, and the provider environment equals goose-N's environment."""
    services = compose_project(2)["services"]
    command = list(services[f"goose-config-{n}"]["command"])
    command[command.index("--goose-root") + 1] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *command],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    goose = services[f"goose-{n}"]
    recipe_in_container = goose["command"][goose["command"].index("--recipe") + 1]
    recipe = tmp_path / Path(recipe_in_container).relative_to(GOOSE_ROOT)
    text = recipe.read_text(encoding="utf-8")
    assert "type: streamable_http" in text and f'uri: "{sidecar_url(n)}"' in text
    assert "{{ task }}" in text and goose["command"][goose["command"].index("--params") + 1].startswith("task=")
    written = dict(
        line.split("=", 1) for line in shlex.split((recipe.parent / "goose-sidecar.env").read_text(), comments=True)
    )
    assert written.pop("GOOSE_PATH_ROOT") == str(tmp_path)
    # What compose makes of `${VAR:-default}` with VAR unset (no per-agent key in .env).
    expected = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in goose["environment"].items()}
    assert expected.pop("GOOSE_PATH_ROOT") == GOOSE_ROOT
    # The sidecar's token is interpolated by compose from .env; goose-config, given none, writes none.
    assert goose["environment"]["GOOSE_SIDECAR_TOKEN"] == f"${{SIDECAR_{n}_TOKEN:-}}"
    assert expected.pop("GOOSE_SIDECAR_TOKEN") == ""
    assert expected == written
    assert "Bearer ${GOOSE_SIDECAR_TOKEN}" in text and "GOOSE_SIDECAR_TOKEN" in text


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


def test_the_coordinator_healthcheck_is_its_readiness_route() -> None:
    """Compose's healthcheck gates the agents, so it is readiness; the route must exist on the coordinator."""
    from sidecar.coordinator.app import build_app
    from tests.coordinator.conftest import make_config

    url = compose_project(1)["services"]["coordinator"]["healthcheck"]["test"][-1]
    assert url.endswith("/readyz")
    paths = {getattr(r, "path", None) for r in build_app(make_config("http://127.0.0.1:9")).routes}
    assert {"/readyz", "/livez", "/healthz"} <= paths


def test_several_coordinators_are_peers_and_each_agent_uses_the_one_that_owns_it() -> None:
    from sidecar.config import load_config
    from sidecar.core.partition import owner

    services = compose_project(8, coordinators=3)["services"]
    peers = [f"coordinator-{i}" for i in range(3)]
    assert [name for name in services if name.startswith("coordinator")] == peers
    for i, name in enumerate(peers):
        fixed = dict(e.split("=", 1) for e in services[name]["environment"] if "=" in e and "${" not in e)
        coordinator = load_config(env=fixed).coordinator  # the variables as the coordinator reads them
        assert (coordinator.peers, coordinator.index) == (3, i)
        assert services[name]["ports"] == [f"127.0.0.1:{8080 + i}:8080"]
        assert services[name]["command"][-1] == name  # the Host name agents use for it
    for n in range(1, 9):
        home = f"coordinator-{owner(f'agent-{n}', 3)}"
        sidecar, config = services[f"sidecar-{n}"]["command"], services[f"goose-config-{n}"]["command"]
        assert sidecar[sidecar.index("--coordinator") + 1] == f"http://{home}:8080"
        assert config[config.index("--coordinator") + 1] == f"http://{home}:8080"
        assert services[f"goose-{n}"]["environment"]["OPENAI_HOST"] == f"http://{home}:8080"
        assert home in services[f"goose-{n}"]["depends_on"] and services[f"sidecar-{n}"]["depends_on"] == [home]
    assert compose_project(3) == compose_project(3, coordinators=1)  # one coordinator: the file as before


def test_docker_compose_accepts_a_fleet_on_several_coordinators(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(render_compose(4, simulator=True, coordinators=2), encoding="utf-8")
    done = compose_config(path, "--profile", "sim")
    assert done.returncode == 0, done.stderr
    assert "coordinator-1:" in done.stdout and "GOOSE_SIDECAR_COORDINATOR_PEERS" in done.stdout
