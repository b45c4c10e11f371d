"""The Modal app, imported with the real `modal` package and inspected through Modal's own objects.

What Modal exposes before deployment: `Function.info()` (GPU, concurrency, proxy auth, volumes, timeouts,
secrets), the function's source info (what a container imports and calls), and the image's Dockerfile layers.
The decorator arguments Modal keeps to itself (web server port and label, autoscaler bounds) are checked through
the pure option builders the module passes to the decorators. Finally the container side runs for real: the
module is imported the way Modal's container entrypoint imports it, and its body starts `vllm serve` (a stand-in
executable on PATH that records its argv).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import modal
import pytest

import sidecar.deploy.modal_vllm as modal_vllm
from sidecar.deploy.vllm_spec import (
    DEFAULT_MODELS,
    HF_CACHE_PATH,
    VLLM_CACHE_PATH,
    VLLM_VERSION,
    DeploySpec,
    endpoints,
    vllm_serve_argv,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = DeploySpec(models=DEFAULT_MODELS)


def test_module_exposes_the_app_modal_deploy_looks_for() -> None:
    assert isinstance(modal_vllm.app, modal.App)
    assert modal_vllm.app.name == modal_vllm.spec.app_name
    assert set(modal_vllm.functions) == {e.function_name for e in endpoints(modal_vllm.spec)}


@pytest.mark.parametrize("endpoint", endpoints(DEFAULT), ids=lambda e: e.function_name)
def test_each_endpoint_as_modal_sees_it(endpoint: Any) -> None:
    _, functions = modal_vllm.build_app(DEFAULT)
    info = functions[endpoint.function_name].info()
    model = endpoint.model
    assert info.gpus == [(model.gpu.upper(), 1)]
    assert (info.concurrency_info.max_inputs, info.concurrency_info.target_inputs) == (
        2 * model.max_num_seqs,
        model.max_num_seqs,
    )
    assert info.web_info is not None and info.web_info.unauthenticated is False  # proxy auth by default
    assert {path: v.name for path, v in info.volumes.items()} == {
        HF_CACHE_PATH: "huggingface-cache",
        VLLM_CACHE_PATH: "vllm-cache",
    }
    assert (info.timeout, info.startup_timeout) == (DEFAULT.request_timeout_s, DEFAULT.startup_timeout_s)
    assert info.secrets == ["Secret.from_dict([SIDECAR_MODAL_SPEC, SIDECAR_MODAL_ENDPOINT])"]
    assert not info.single_use_containers


def test_a_custom_spec_changes_what_modal_gets() -> None:
    large = replace(DEFAULT_MODELS[0], gpu="H100:2", replicas=2)
    spec = DeploySpec(models=(large,), app_name="team-llm", proxy_auth=False, hf_secret="huggingface")
    app, functions = modal_vllm.build_app(spec)
    assert app.name == "team-llm"
    assert list(functions) == ["vllm-32b", "vllm-32b-2"]
    for function in functions.values():
        info = function.info()
        assert info.gpus == [("H100", 2)]
        assert info.web_info is not None and info.web_info.unauthenticated is True
        assert "modal.Secret.from_name('huggingface')" in info.secrets


@pytest.mark.parametrize("endpoint", endpoints(DEFAULT), ids=lambda e: e.function_name)
def test_decorator_arguments(endpoint: Any) -> None:
    web = modal_vllm.web_server_options(DEFAULT, endpoint)
    assert web == {
        "port": 8000,
        "startup_timeout": DEFAULT.startup_timeout_s,
        "label": f"goose-sidecar-{endpoint.function_name}",
        "requires_proxy_auth": True,
    }
    options = modal_vllm.function_options(DEFAULT, endpoint)
    assert (options["name"], options["gpu"]) == (endpoint.function_name, endpoint.model.gpu)
    assert (options["min_containers"], options["max_containers"]) == (0, 1)  # one engine per URL, scale to zero
    assert options["scaledown_window"] == DEFAULT.scaledown_window_s
    assert json.loads(options["env"]["SIDECAR_MODAL_SPEC"]) == json.loads(DEFAULT.to_json())
    assert options["env"]["SIDECAR_MODAL_ENDPOINT"] == endpoint.function_name


def test_modal_validates_the_options_when_the_module_is_built() -> None:
    # The options go through Modal's own checks at decoration time: a value outside Modal's bounds fails when the
    # module is imported (by `modal deploy` too), before any image is built.
    bad = DeploySpec(models=DEFAULT_MODELS, scaledown_window_s=1)
    with pytest.raises(modal.exception.InvalidError, match="scaledown_window"):
        modal_vllm.build_app(bad)


def dockerfile_commands(image: modal.Image) -> list[str]:
    """The Dockerfile lines Modal will build for `image`'s layers, read from the image's build closures.

    Modal keeps each layer's `dockerfile_function` in the closure of its loader (modal 1.x internals); this breaks
    loudly, not silently, if that changes. Layers whose closure has no such function (the registry base) are skipped.
    """
    from modal._image import LATEST_IMAGE_BUILDER_VERSION
    from modal._utils.async_utils import synchronizer

    commands: list[str] = []

    def walk(layer: Any) -> None:
        load = layer._load
        cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__ or ()), strict=True))
        for base in (cells.get("base_images") or {}).values():
            walk(base)
        if cells.get("dockerfile_function") is not None:
            commands.extend(cells["dockerfile_function"](LATEST_IMAGE_BUILDER_VERSION).commands)

    walk(synchronizer._translate_in(image))
    return commands


def test_the_image_pins_vllm_and_clears_the_cuda_entrypoint() -> None:
    commands = dockerfile_commands(modal_vllm.build_image(DEFAULT))
    assert "ENTRYPOINT []" in commands
    installs = [c for c in commands if "pip install" in c]
    assert len(installs) == 1 and f"vllm=={VLLM_VERSION}" in installs[0] and "huggingface-hub==" in installs[0]
    assert "ENV HF_XET_HIGH_PERFORMANCE=1" in " ".join(commands)
    options = modal_vllm.image_options(DEFAULT)
    assert options["base"].startswith("nvidia/cuda:") and options["base"].endswith("-devel-ubuntu22.04")


def test_containers_import_the_module_and_call_serve_vllm() -> None:
    _, functions = modal_vllm.build_app(DEFAULT)
    source = functions["vllm-7b"]._source_info_
    # What Modal's container entrypoint imports and looks up (modal/_runtime/user_code_imports.py).
    assert (source.module_name, source.implementation_name) == ("sidecar.deploy.modal_vllm", "serve_vllm")
    assert not source.is_serialized()


def test_the_container_body_starts_vllm_serve_with_the_deploy_time_spec(tmp_path: Path) -> None:
    spec = DeploySpec(models=(replace(DEFAULT_MODELS[1], extra_args=("--seed", "7")),), fast_boot=True)
    record = tmp_path / "argv.json"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv))\n")
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "SIDECAR_MODAL_SPEC": spec.to_json(),
        "SIDECAR_MODAL_ENDPOINT": "vllm-7b",
    }
    # As Modal's container entrypoint does: import the module by name, getattr the implementation, call it.
    code = "import importlib; importlib.import_module('sidecar.deploy.modal_vllm').serve_vllm()"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    argv = json.loads(record.read_text())
    assert argv[1:] == vllm_serve_argv(spec.models[0], fast_boot=True)[1:]
    assert argv[-3:] == ["--enforce-eager", "--seed", "7"]
