"""The coordinator's upstreams for a deployment, as `goose-sidecar.toml` text or a `GOOSE_SIDECAR_MODELS` line.

Pure: the caller passes the spec, the workspace and the proxy-auth token. The result is the `[models.<alias>]`
section of `sidecar/config.py` (`served_name`, `replicas`, `headers`, `native_priority`, `max_num_seqs`), so
`load_config` validates it as is. `native_priority` says what the deployed `vllm serve` command does
(`--scheduling-policy priority`, unless extra args override it): vLLM gives no sign of it, so the coordinator has
to be told. `max_num_seqs` is the engine's batch limit over the model's replicas, known only while each URL has
one container (`max_containers = 1`); otherwise the coordinator learns it from `/metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.deploy.vllm_spec import DeploySpec, ModelSpec, endpoint_url, endpoints, vllm_serve_argv

# Header names Modal's proxy auth checks (modal.com/docs/guide/webhook-proxy-auth).
MODAL_KEY_HEADER = "Modal-Key"
MODAL_SECRET_HEADER = "Modal-Secret"
ENV_VAR = "GOOSE_SIDECAR_MODELS"


def modal_models(
    spec: DeploySpec,
    workspace: str,
    *,
    environment_suffix: str | None = None,
    token: tuple[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """alias -> upstream for every model of `spec`: its served name, one URL per replica, auth headers.

    `token` is a Modal proxy auth token (key, secret); its headers go on every call and metrics scrape.
    Raises ValueError when a URL cannot be predicted (see `endpoint_url`).
    """
    models: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints(spec):
        model = endpoint.model
        entry = models.setdefault(model.alias, {"served_name": model.hf_model, "replicas": []})
        entry["replicas"].append(endpoint_url(workspace, endpoint.label, environment_suffix))
        if token is not None:
            entry["headers"] = {MODAL_KEY_HEADER: token[0], MODAL_SECRET_HEADER: token[1]}
        entry["native_priority"] = scheduling_policy(model) == "priority"
        if model.max_containers == 1:
            entry["max_num_seqs"] = model.max_num_seqs * model.replicas
    return models


def scheduling_policy(model: ModelSpec) -> str:
    """The `--scheduling-policy` the deployed `vllm serve` runs with (the last one given wins, as in argparse)."""
    argv = vllm_serve_argv(model)
    policy = "fcfs"  # vLLM's default (reference/vllm.md)
    for i, arg in enumerate(argv):
        if arg == "--scheduling-policy" and i + 1 < len(argv):
            policy = argv[i + 1]
        elif arg.startswith("--scheduling-policy="):
            policy = arg.partition("=")[2]
    return policy


def render_toml(models: Mapping[str, Mapping[str, Any]], comments: Sequence[str] = ()) -> str:
    """`[models."<alias>"]` tables; strings, lists of strings and string maps (all this config needs)."""
    lines = [f"# {c}" if c else "#" for c in comments]
    for alias, entry in models.items():
        lines += ["", f"[models.{_key(alias)}]"]
        for key, value in entry.items():
            lines.append(f"{_key(key)} = {_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def render_env(models: Mapping[str, Mapping[str, Any]]) -> str:
    """One `GOOSE_SIDECAR_MODELS=<json>` line for a `.env` file (compact JSON: no spaces, no quotes needed)."""
    return f"{ENV_VAR}={json.dumps(models, separators=(',', ':'))}\n"


def _key(key: str) -> str:
    bare = key.replace("-", "").replace("_", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are a subset of TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {type(value).__name__} as TOML here")
