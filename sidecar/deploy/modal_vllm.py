"""The Modal app serving Qwen2.5-Coder-32B and -7B with vLLM, one web endpoint per model replica.

Deploy (needs `pip install 'goose-sidecar[deploy]'` and `modal setup`):

    goose-sidecar deploy modal            # or: modal deploy -m sidecar.deploy.modal_vllm

Settings come from `SIDECAR_MODAL_*` environment variables read at deploy time (the list, with defaults, is in
`sidecar/deploy/vllm_spec.py`). Each endpoint is a web server function: Modal starts a container with the image
below, the function starts `vllm serve` in the background, and Modal forwards
`https://<workspace>--<app>-<function>.modal.run` to its port once vLLM listens (after the weights have loaded).
`/v1/*`, `/health` and `/metrics` are all on that URL; with proxy auth on (the default) every request, metrics
scrapes included, needs the `Modal-Key` and `Modal-Secret` headers of a Modal proxy auth token.

This module imports only `modal` and the stdlib-only spec, because Modal imports it again inside each container
(the `sidecar` package is mounted there, its dependencies are not).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import PurePosixPath
from typing import Any

import modal

from sidecar.deploy.vllm_spec import (
    CUDA_BASE_IMAGE,
    ENDPOINT_ENV,
    HF_CACHE_PATH,
    HF_CACHE_VOLUME,
    HF_HUB_VERSION,
    IMAGE_PYTHON,
    SPEC_ENV,
    VLLM_CACHE_PATH,
    VLLM_CACHE_VOLUME,
    DeploySpec,
    Endpoint,
    endpoints,
    spec_from_env,
    vllm_serve_argv,
)


def serve_vllm() -> None:
    """Body of every endpoint: start this container's `vllm serve` and return (Modal waits for the port).

    Runs inside the container, where `SIDECAR_MODAL_SPEC` and `SIDECAR_MODAL_ENDPOINT` say what to serve.
    Defined at module level, undecorated: Modal finds it by this name and every endpoint shares it.
    """
    spec = DeploySpec.from_json(os.environ[SPEC_ENV])
    endpoint = next(e for e in endpoints(spec) if e.function_name == os.environ[ENDPOINT_ENV])
    argv = vllm_serve_argv(endpoint.model, port=spec.port, fast_boot=spec.fast_boot)
    print("starting:", " ".join(argv), flush=True)
    subprocess.Popen(argv)


def image_options(spec: DeploySpec) -> dict[str, Any]:
    """What goes into the image: the pinned vLLM and Hugging Face client, and download/cache settings."""
    return {
        "base": CUDA_BASE_IMAGE,
        "python": IMAGE_PYTHON,
        "packages": [f"vllm=={spec.vllm_version}", f"huggingface-hub=={HF_HUB_VERSION}"],
        "env": {
            "HF_XET_HIGH_PERFORMANCE": "1",  # saturate the network on the first weight download
            "VLLM_NO_USAGE_STATS": "1",
        },
    }


def build_image(spec: DeploySpec) -> modal.Image:
    options = image_options(spec)
    return (
        modal.Image.from_registry(options["base"], add_python=options["python"])
        .entrypoint([])  # the CUDA image's entrypoint prints a banner and would wrap every command
        .uv_pip_install(*options["packages"])
        .env(options["env"])
    )


def function_options(spec: DeploySpec, endpoint: Endpoint) -> dict[str, Any]:
    """Arguments of `app.function` for one endpoint (without image, volumes and secrets)."""
    model = endpoint.model
    return {
        "name": endpoint.function_name,
        "gpu": model.gpu,
        "min_containers": model.min_containers,
        "max_containers": model.max_containers,
        "scaledown_window": spec.scaledown_window_s,
        "timeout": spec.request_timeout_s,
        "startup_timeout": spec.startup_timeout_s,
        "env": {SPEC_ENV: spec.to_json(), ENDPOINT_ENV: endpoint.function_name},
    }


def concurrency_options(endpoint: Endpoint) -> dict[str, int]:
    """`@modal.concurrent`: a full vLLM batch per container before Modal scales out (see vllm_spec)."""
    return {"max_inputs": endpoint.model.concurrency_limit, "target_inputs": endpoint.model.concurrency_target}


def web_server_options(spec: DeploySpec, endpoint: Endpoint) -> dict[str, Any]:
    """`@modal.web_server`: vLLM's port, the weight-loading budget, the URL label and proxy auth."""
    return {
        "port": spec.port,
        "startup_timeout": spec.startup_timeout_s,
        "label": endpoint.label,
        "requires_proxy_auth": spec.proxy_auth,
    }


def build_app(spec: DeploySpec) -> tuple[modal.App, dict[str, modal.Function[..., Any, Any]]]:
    """The Modal app for `spec` and its functions by name; nothing is contacted until `modal deploy`."""
    app = modal.App(spec.app_name)
    image = build_image(spec)
    volumes: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
        HF_CACHE_PATH: modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True),
        VLLM_CACHE_PATH: modal.Volume.from_name(VLLM_CACHE_VOLUME, create_if_missing=True),
    }
    secrets = [modal.Secret.from_name(spec.hf_secret)] if spec.hf_secret else []
    functions: dict[str, modal.Function[..., Any, Any]] = {}
    for endpoint in endpoints(spec):
        decorate = app.function(image=image, volumes=volumes, secrets=secrets, **function_options(spec, endpoint))
        concurrent = modal.concurrent(**concurrency_options(endpoint))
        web = modal.web_server(**web_server_options(spec, endpoint))
        functions[endpoint.function_name] = decorate(concurrent(web(serve_vllm)))
    return app, functions


# `modal deploy` looks for `app`. Settings are read here, at deploy time; containers read them back from the
# spec JSON each function carries in its environment.
spec = spec_from_env(os.environ)
app, functions = build_app(spec)
