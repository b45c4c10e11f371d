"""The coordinator config for a deployment: what it says, and that the coordinator's own loader accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import load_config
from sidecar.deploy.compose import compose_project, simulator_models
from sidecar.deploy.coordinator_config import modal_models, render_env, render_toml
from sidecar.deploy.vllm_spec import spec_from_env

TOKEN = ("wk-abc123", "ws-secret+/=")


def test_modal_models_one_alias_per_model_one_url_per_replica() -> None:
    spec = spec_from_env({"SIDECAR_MODAL_32B_REPLICAS": "2"})
    models = modal_models(spec, "acme", token=TOKEN)
    assert models == {
        "large": {
            "served_name": "Qwen/Qwen2.5-Coder-32B-Instruct",
            "replicas": [
                "https://acme--goose-sidecar-vllm-32b.modal.run",
                "https://acme--goose-sidecar-vllm-32b-2.modal.run",
            ],
            "headers": {"Modal-Key": "wk-abc123", "Modal-Secret": "ws-secret+/="},
            "native_priority": True,  # the deployed vllm serve has --scheduling-policy priority
            "max_num_seqs": 128,  # 64 per replica, one container per URL
        },
        "small": {
            "served_name": "Qwen/Qwen2.5-Coder-7B-Instruct",
            "replicas": ["https://acme--goose-sidecar-vllm-7b.modal.run"],
            "headers": {"Modal-Key": "wk-abc123", "Modal-Secret": "ws-secret+/="},
            "native_priority": True,
            "max_num_seqs": 128,
        },
    }
    assert "headers" not in modal_models(spec, "acme")["large"]


@pytest.mark.parametrize(
    ("env", "native", "max_num_seqs"),
    [
        ({"SIDECAR_MODAL_32B_EXTRA_ARGS": "--scheduling-policy fcfs"}, False, 64),  # extra args come last and win
        ({"SIDECAR_MODAL_32B_EXTRA_ARGS": "--scheduling-policy=fcfs"}, False, 64),
        ({"SIDECAR_MODAL_32B_MAX_CONTAINERS": "3"}, True, None),  # Modal may add engines behind the URL: learn it
    ],
)
def test_the_config_says_what_the_deployed_vllm_does(
    env: dict[str, str], native: bool, max_num_seqs: int | None
) -> None:
    large = modal_models(spec_from_env(env), "acme")["large"]
    assert large["native_priority"] is native and large.get("max_num_seqs") == max_num_seqs
    config = load_config(env={}, overrides={"models": {"large": large}})
    assert config.models["large"].native_priority is native


@pytest.mark.parametrize("token", [TOKEN, None])
def test_the_toml_loads_as_the_coordinator_config(tmp_path: Path, token: tuple[str, str] | None) -> None:
    models = modal_models(spec_from_env({"SIDECAR_MODAL_7B_ALIAS": "small.fast"}), "acme", token=token)
    path = tmp_path / "goose-sidecar.toml"
    path.write_text(render_toml(models, ["a comment", ""]), encoding="utf-8")
    config = load_config(path, env={})
    assert set(config.models) == {"large", "small.fast"}
    for alias, upstream in config.models.items():
        assert upstream.replicas == models[alias]["replicas"]
        assert upstream.served_name == models[alias]["served_name"]
        assert upstream.headers == ({"Modal-Key": TOKEN[0], "Modal-Secret": TOKEN[1]} if token else {})


def test_the_env_line_loads_as_the_coordinator_config() -> None:
    models = modal_models(spec_from_env({}), "acme", token=TOKEN)
    name, _, value = render_env(models).rstrip("\n").partition("=")
    assert " " not in value and "#" not in value  # safe unquoted in a .env file
    config = load_config(env={name: value})
    assert config.models["large"].headers["Modal-Secret"] == TOKEN[1]
    assert config.models["small"].replicas == ["https://acme--goose-sidecar-vllm-7b.modal.run"]


def test_simulator_models_point_at_the_compose_simulator_services() -> None:
    services = compose_project(1, simulator=True)["services"]
    models = simulator_models()
    assert set(models) == {"large", "small"}
    for entry in models.values():
        (url,) = entry["replicas"]
        host, port = url.removeprefix("http://").split(":")
        command = services[host]["command"]
        assert command[0] == "sim" and command[command.index("--port") + 1] == port
    config = load_config(env={"GOOSE_SIDECAR_MODELS": render_env(models).partition("=")[2].strip()})
    assert config.models["small"].replicas == ["http://simulator-7b:8000"]
    for name, entry in zip(("simulator-32b", "simulator-7b"), models.values(), strict=True):
        command = services[name]["command"]  # the priority policy the coordinator is told about
        assert entry["native_priority"] and command[command.index("--scheduling-policy") + 1] == "priority"
