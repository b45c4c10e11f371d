"""The coordinator's upstreams for a deployment, as `goose-sidecar.toml` text or a `GOOSE_SIDECAR_MODELS` line.

Pure: the caller passes the spec, the workspace and the proxy-auth token. The result is the `[models.<alias>]`
section of `sidecar/config.py` (`served_name`, `replicas`, `headers`), so `load_config` validates it as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.deploy.vllm_spec import DeploySpec, endpoint_url, endpoints

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
        entry = models.setdefault(endpoint.model.alias, {"served_name": endpoint.model.hf_model, "replicas": []})
        entry["replicas"].append(endpoint_url(workspace, endpoint.label, environment_suffix))
        if token is not None:
            entry["headers"] = {MODAL_KEY_HEADER: token[0], MODAL_SECRET_HEADER: token[1]}
    return models


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
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are a subset of TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {type(value).__name__} as TOML here")
