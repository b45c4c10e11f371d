"""The deployment spec: environment parsing, the exact `vllm serve` argv, endpoint names and URLs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sidecar.deploy.vllm_spec import (
    DEFAULT_MODELS,
    VLLM_VERSION,
    DeploySpec,
    ModelSpec,
    SpecError,
    endpoint_url,
    endpoints,
    spec_from_env,
    vllm_serve_argv,
)

LARGE, SMALL = DEFAULT_MODELS


def flag_value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} appears {argv.count(flag)} times in {argv}"
    return argv[argv.index(flag) + 1]


def test_defaults_serve_32b_and_7b_with_a_pinned_vllm() -> None:
    spec = spec_from_env({})
    assert [(m.hf_model, m.alias, m.gpu) for m in spec.models] == [
        ("Qwen/Qwen2.5-Coder-32B-Instruct", "large", "A100-80GB"),
        ("Qwen/Qwen2.5-Coder-7B-Instruct", "small", "A100-40GB"),
    ]
    assert spec.vllm_version == VLLM_VERSION
    assert VLLM_VERSION.count(".") == 2 and all(part.isdigit() for part in VLLM_VERSION.split("."))
    assert spec.proxy_auth is True
    assert 2 <= spec.scaledown_window_s <= 3600


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--scheduling-policy", "priority"),
        ("--tool-call-parser", "hermes"),
        ("--served-model-name", "Qwen/Qwen2.5-Coder-32B-Instruct"),
        ("--host", "0.0.0.0"),
        ("--port", "8000"),
        ("--max-model-len", "32768"),
        ("--max-num-seqs", "64"),
        ("--gpu-memory-utilization", "0.92"),
        ("--tensor-parallel-size", "1"),
    ],
)
def test_vllm_argv_flags_with_values(flag: str, value: str) -> None:
    assert flag_value(vllm_serve_argv(LARGE), flag) == value


@pytest.mark.parametrize(
    "flag", ["--enable-prefix-caching", "--enable-auto-tool-choice", "--enable-prompt-tokens-details"]
)
def test_vllm_argv_switches(flag: str) -> None:
    assert vllm_serve_argv(LARGE).count(flag) == 1


def test_vllm_argv_starts_with_the_model_and_never_protects_metrics_with_an_api_key() -> None:
    argv = vllm_serve_argv(SMALL)
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen2.5-Coder-7B-Instruct"]
    assert "--api-key" not in argv  # /health and /metrics must stay reachable; Modal's proxy auth guards the URL
    assert "--enforce-eager" not in argv


@pytest.mark.parametrize(
    ("model", "fast_boot", "expected_tail", "tp"),
    [
        (replace(LARGE, gpu="H100:2"), False, ["--tensor-parallel-size", "2"], "2"),
        (LARGE, True, ["--enforce-eager"], "1"),
        (replace(LARGE, extra_args=("--max-num-seqs", "8")), False, ["--max-num-seqs", "8"], "1"),
    ],
)
def test_vllm_argv_variants(model: ModelSpec, fast_boot: bool, expected_tail: list[str], tp: str) -> None:
    argv = vllm_serve_argv(model, fast_boot=fast_boot)
    assert argv[-len(expected_tail) :] == expected_tail  # extra args last: they override
    assert argv[argv.index("--tensor-parallel-size") + 1] == tp


def test_revision_is_pinned_when_given() -> None:
    argv = vllm_serve_argv(replace(LARGE, revision="abc123"))
    assert flag_value(argv, "--revision") == "abc123"
    assert "--revision" not in vllm_serve_argv(LARGE)


def test_environment_overrides_every_documented_setting() -> None:
    spec = spec_from_env(
        {
            "SIDECAR_MODAL_APP": "fleet-llm",
            "SIDECAR_MODAL_MODELS": "32b",
            "SIDECAR_MODAL_VLLM_VERSION": "0.10.2",
            "SIDECAR_MODAL_PROXY_AUTH": "0",
            "SIDECAR_MODAL_SCALEDOWN_WINDOW": "120",
            "SIDECAR_MODAL_STARTUP_TIMEOUT": "600",
            "SIDECAR_MODAL_TIMEOUT": "300",
            "SIDECAR_MODAL_FAST_BOOT": "true",
            "SIDECAR_MODAL_HF_SECRET": "huggingface",
            "SIDECAR_MODAL_32B_MODEL": "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
            "SIDECAR_MODAL_32B_REVISION": "deadbeef",
            "SIDECAR_MODAL_32B_ALIAS": "big",
            "SIDECAR_MODAL_32B_GPU": "H100:2",
            "SIDECAR_MODAL_32B_REPLICAS": "3",
            "SIDECAR_MODAL_32B_MIN_CONTAINERS": "1",
            "SIDECAR_MODAL_32B_MAX_CONTAINERS": "2",
            "SIDECAR_MODAL_32B_MAX_MODEL_LEN": "16384",
            "SIDECAR_MODAL_32B_MAX_NUM_SEQS": "32",
            "SIDECAR_MODAL_32B_GPU_MEMORY_UTILIZATION": "0.85",
            "SIDECAR_MODAL_32B_TARGET_INPUTS": "24",
            "SIDECAR_MODAL_32B_MAX_INPUTS": "48",
            "SIDECAR_MODAL_32B_EXTRA_ARGS": "--quantization awq --kv-cache-dtype 'fp8'",
        }
    )
    assert (spec.app_name, spec.vllm_version, spec.proxy_auth, spec.fast_boot) == ("fleet-llm", "0.10.2", False, True)
    assert (spec.scaledown_window_s, spec.startup_timeout_s, spec.request_timeout_s) == (120, 600, 300)
    assert spec.hf_secret == "huggingface"
    (m,) = spec.models
    assert m == ModelSpec(
        key="32b",
        alias="big",
        hf_model="Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
        gpu="H100:2",
        revision="deadbeef",
        replicas=3,
        min_containers=1,
        max_containers=2,
        max_model_len=16384,
        max_num_seqs=32,
        gpu_memory_utilization=0.85,
        target_inputs=24,
        max_inputs=48,
        extra_args=("--quantization", "awq", "--kv-cache-dtype", "fp8"),
    )
    assert (m.gpu_count, m.concurrency_target, m.concurrency_limit) == (2, 24, 48)


def test_concurrency_defaults_fill_a_vllm_batch_before_modal_scales_out() -> None:
    for model in DEFAULT_MODELS:
        assert model.concurrency_target == model.max_num_seqs
        assert model.concurrency_limit == 2 * model.max_num_seqs


def test_every_bad_setting_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_env(
            {
                "SIDECAR_MODAL_APP": "Bad_Name",
                "SIDECAR_MODAL_PROXY_AUTH": "maybe",
                "SIDECAR_MODAL_SCALEDOWN_WINDOW": "7200",
                "SIDECAR_MODAL_VLLM_VERSION": "latest",
                "SIDECAR_MODAL_32B_GPU": "A200",
                "SIDECAR_MODAL_32B_REPLICAS": "two",
                "SIDECAR_MODAL_7B_MIN_CONTAINERS": "3",
                "SIDECAR_MODAL_7B_TARGET_INPUTS": "500",
                "SIDECAR_MODAL_7B_EXTRA_ARGS": "--unbalanced 'quote",
            }
        )
    text = "\n".join(caught.value.problems)
    for name in [
        "SIDECAR_MODAL_APP",
        "SIDECAR_MODAL_PROXY_AUTH",
        "SIDECAR_MODAL_SCALEDOWN_WINDOW",
        "SIDECAR_MODAL_VLLM_VERSION",
        "SIDECAR_MODAL_32B_GPU",
        "SIDECAR_MODAL_32B_REPLICAS",
        "SIDECAR_MODAL_7B_MIN_CONTAINERS",
        "SIDECAR_MODAL_7B_TARGET_INPUTS",
        "SIDECAR_MODAL_7B_EXTRA_ARGS",
    ]:
        assert name in text
    assert len(caught.value.problems) == 9


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"SIDECAR_MODAL_MODELS": "70b"}, "unknown model '70b'"),
        ({"SIDECAR_MODAL_7B_ALIAS": "large"}, "'large' is used twice"),
        ({"SIDECAR_MODAL_32B_ALIAS": "auto"}, "'auto' is reserved"),
    ],
)
def test_model_selection_problems(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        spec_from_env(env)


def test_the_spec_travels_to_the_containers_as_json() -> None:
    spec = spec_from_env({"SIDECAR_MODAL_32B_EXTRA_ARGS": "--seed 1", "SIDECAR_MODAL_7B_REPLICAS": "2"})
    assert DeploySpec.from_json(spec.to_json()) == spec
    # Inside a container the JSON wins over whatever else the environment holds.
    assert spec_from_env({"SIDECAR_MODAL_SPEC": spec.to_json(), "SIDECAR_MODAL_APP": "other"}) == spec


def test_endpoints_one_per_replica_and_the_first_keeps_its_name() -> None:
    spec = spec_from_env({"SIDECAR_MODAL_32B_REPLICAS": "3"})
    assert [(e.function_name, e.label, e.index) for e in endpoints(spec)] == [
        ("vllm-32b", "goose-sidecar-vllm-32b", 0),
        ("vllm-32b-2", "goose-sidecar-vllm-32b-2", 1),
        ("vllm-32b-3", "goose-sidecar-vllm-32b-3", 2),
        ("vllm-7b", "goose-sidecar-vllm-7b", 0),
    ]


@pytest.mark.parametrize(
    ("workspace", "suffix", "url"),
    [
        ("acme", None, "https://acme--goose-sidecar-vllm-32b.modal.run"),
        ("Acme", "dev", "https://acme-dev--goose-sidecar-vllm-32b.modal.run"),
    ],
)
def test_endpoint_urls(workspace: str, suffix: str | None, url: str) -> None:
    assert endpoint_url(workspace, "goose-sidecar-vllm-32b", suffix) == url


def test_a_url_modal_would_shorten_is_refused() -> None:
    with pytest.raises(ValueError, match="shortens host names"):
        endpoint_url("a-rather-long-workspace-name-for-a-team", "goose-sidecar-vllm-32b-2")
