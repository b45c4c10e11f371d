"""`goose-sidecar deploy ...` as a user runs it: real subprocesses, real files, a clean environment."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from sidecar.config import load_config
from sidecar.deploy.command import modal_deploy_argv
from sidecar.deploy.compose import render_compose

ROOT = Path(__file__).resolve().parents[2]


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only PATH and a fresh HOME (no Modal profile, no GOOSE_SIDECAR_*/SIDECAR_MODAL_* leaks)."""
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_modal_deploy_runs_modals_cli_on_the_module() -> None:
    assert modal_deploy_argv() == [sys.executable, "-m", "modal", "deploy", "-m", "sidecar.deploy.modal_vllm"]
    assert modal_deploy_argv("dev")[-2:] == ["--env", "dev"]


def test_dry_run_shows_every_endpoint_and_the_command(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "deploy", "modal", "--dry-run", SIDECAR_MODAL_7B_REPLICAS="2")
    assert done.returncode == 0, done.stderr
    for function in ("vllm-32b", "vllm-7b", "vllm-7b-2"):
        assert f"function={function} " in done.stdout
    assert "modal deploy -m sidecar.deploy.modal_vllm" in done.stdout


def test_bad_settings_stop_before_modal_with_every_problem(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "deploy", "modal", SIDECAR_MODAL_32B_GPU="A200", SIDECAR_MODAL_TIMEOUT="soon")
    assert done.returncode == 2
    assert "SIDECAR_MODAL_32B_GPU" in done.stderr and "SIDECAR_MODAL_TIMEOUT" in done.stderr


def test_not_logged_in_is_a_clear_error_not_a_modal_traceback(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "deploy", "modal")
    assert done.returncode == 2
    assert "not logged in to Modal" in done.stderr and "modal setup" in done.stderr
    assert "Traceback" not in done.stderr


def test_coordinator_config_needs_the_proxy_token_when_auth_is_on(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "deploy", "coordinator-config", "--workspace-name", "acme")
    assert done.returncode == 2
    assert "SIDECAR_MODAL_PROXY_KEY" in done.stderr and "--no-auth" in done.stderr


def test_coordinator_config_toml_is_what_the_coordinator_loads(tmp_path: Path) -> None:
    token = {"SIDECAR_MODAL_PROXY_KEY": "wk-1", "SIDECAR_MODAL_PROXY_SECRET": "ws-2"}
    done = run_cli(tmp_path, "deploy", "coordinator-config", "--workspace-name", "acme", "-o", "gs.toml", **token)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "gs.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a secret
    config = load_config(path, env={})
    assert config.models["large"].replicas == ["https://acme--goose-sidecar-vllm-32b.modal.run"]
    assert config.models["small"].headers == {"Modal-Key": "wk-1", "Modal-Secret": "ws-2"}


def test_coordinator_config_without_auth_and_as_an_env_line(tmp_path: Path) -> None:
    done = run_cli(
        tmp_path,
        "deploy",
        "coordinator-config",
        "--workspace-name",
        "acme",
        "--environment-suffix",
        "dev",
        "--format",
        "env",
        SIDECAR_MODAL_PROXY_AUTH="0",
    )
    assert done.returncode == 0, done.stderr
    name, _, value = done.stdout.strip().partition("=")
    config = load_config(env={name: value})
    assert config.models["large"].replicas == ["https://acme-dev--goose-sidecar-vllm-32b.modal.run"]
    assert config.models["large"].headers == {}


def test_coordinator_config_for_the_simulator_profile(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "deploy", "coordinator-config", "--simulator", "--format", "env")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("GOOSE_SIDECAR_MODELS={")
    assert "http://simulator-32b:8000" in done.stdout and "http://simulator-7b:8000" in done.stdout


def test_compose_writes_the_generators_output(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "deploy", "compose", "--agents", "3", "-o", "docker-compose.yml")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "docker-compose.yml").read_text(encoding="utf-8") == render_compose(3)
    assert run_cli(tmp_path, "deploy", "compose", "--agents", "0").returncode == 2
