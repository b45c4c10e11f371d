"""Configuration: file < environment < flags, every error reported at once with where it came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.config import ConfigError, ignored_file_note, load_config


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.coordinator.host == "127.0.0.1"
    assert config.models == {}


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[coordinator]\nport = 9001\nhost = "0.0.0.0"\n[sim]\nseed = 4\n')
    config = load_config(file, env={"GOOSE_SIDECAR_COORDINATOR_PORT": "9002"}, overrides={"sim.seed": 7})
    assert config.coordinator.port == 9002
    assert config.coordinator.host == "0.0.0.0"
    assert config.sim.seed == 7


def test_every_error_reported_at_once(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[coordinator]\nport = "eighty"\nbogus = 1\n[models.large]\nreplicas = ["ftp://x"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, env={"GOOSE_SIDECAR_NOPE": "1", "GOOSE_SIDECAR_SIM_TIME_SCALE": "-1"})
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 5, text
    assert "GOOSE_SIDECAR_NOPE: no such setting" in text
    assert "coordinator.port" in text and str(file) in text
    assert "coordinator.bogus: Extra inputs are not permitted" in text
    assert "must start with http://" in text
    assert "sim.time_scale" in text and "GOOSE_SIDECAR_SIM_TIME_SCALE" in text


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", env={})


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[coordinator\n")
    with pytest.raises(ConfigError, match=str(file)):
        load_config(file, env={})


def test_upstream_shortcut_and_list_and_map_env_values(tmp_path: Path) -> None:
    config = load_config(
        env={
            "GOOSE_SIDECAR_UPSTREAM": "http://gpu:8000/",
            "GOOSE_SIDECAR_CONFIG": "",
        }
    )
    assert config.models["default"].replicas == ["http://gpu:8000"]
    config = load_config(
        env={"GOOSE_SIDECAR_MODELS": '{"large": {"replicas": ["http://a", "http://b"], "headers": {"K": "v"}}}'}
    )
    assert config.models["large"].replicas == ["http://a", "http://b"]
    assert config.models["large"].headers == {"K": "v"}


def test_a_file_in_the_current_directory_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar runs in the workspace, whose files the repository and the model write: a goose-sidecar.toml
    there must not widen the allowlist or open a listener at the next start."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "goose-sidecar.toml").write_text(
        '[sidecar]\nallow_commands = ["sh *"]\nhttp = "0.0.0.0:8765"\nallowed_hosts = ["*"]\ninsecure_no_auth = true\n'
    )
    config = load_config(env={})
    assert config.sidecar.allow_commands == [] and config.sidecar.http is None and not config.sidecar.insecure_no_auth
    assert "is not read" in (ignored_file_note(None, env={}) or "")
    assert ignored_file_note("x.toml", env={}) is None
    assert ignored_file_note(None, env={"GOOSE_SIDECAR_CONFIG": "x.toml"}) is None
    # Named explicitly, by flag or environment, it is read.
    assert load_config("goose-sidecar.toml", env={}).sidecar.allow_commands == ["sh *"]
    assert load_config(env={"GOOSE_SIDECAR_CONFIG": "goose-sidecar.toml"}).sidecar.http == "0.0.0.0:8765"


def test_the_cli_reads_no_file_from_the_workspace_it_serves(tmp_path: Path) -> None:
    """The real command, started in a directory holding a goose-sidecar.toml, says it ignores it."""
    (tmp_path / "goose-sidecar.toml").write_text('[sidecar]\nallow_commands = ["sh *"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_SIDECAR_")}
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "deploy", "secrets", "--agents", "1"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "goose-sidecar.toml is not read" in done.stderr
