"""Doctor's verdicts (sidecar/core/doctor.py): plain tables."""

from __future__ import annotations

import pytest

from sidecar.core.doctor import (
    Finding,
    Status,
    exit_code,
    goose_env_finding,
    inotify_finding,
    metric_names,
    metrics_finding,
)

VLLM = """# HELP vllm:num_requests_waiting x
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:num_requests_running{model_name="m"} 1.0
vllm:kv_cache_usage_perc{model_name="m"} 0.1
vllm:num_preemptions_total{model_name="m"} 0.0
"""


@pytest.mark.parametrize(
    ("text", "status", "words"),
    [
        (VLLM, Status.OK, "has the vLLM metrics"),
        # The old name is not read: vLLM 0.32 exports only kv_cache_usage_perc, and so does the coordinator read.
        (VLLM.replace("kv_cache_usage_perc", "gpu_cache_usage_perc"), Status.WARN, "kv_cache_usage_perc"),
        (VLLM.replace("vllm:kv_cache_usage_perc", "other"), Status.WARN, "kv_cache_usage_perc"),
        ("process_cpu_seconds_total 1.0\n", Status.WARN, "fixed in-flight window"),
        ("", Status.WARN, "not vLLM's metrics"),
    ],
)
def test_metrics(text: str, status: Status, words: str) -> None:
    finding = metrics_finding("upstream", metric_names(text))
    assert finding.status is status and words in finding.detail


@pytest.mark.parametrize(
    ("limit", "in_use", "agents", "status"),
    [
        (128, 0, 128, Status.OK),
        (128, 1, 128, Status.FAIL),
        (128, None, 129, Status.FAIL),
        (1024, 500, 200, Status.OK),
        (None, None, 4, Status.SKIP),
    ],
)
def test_inotify(limit: int | None, in_use: int | None, agents: int, status: Status) -> None:
    finding = inotify_finding(limit, in_use, agents)
    assert finding.status is status
    if status is Status.FAIL:
        assert "sudo sysctl -w fs.inotify.max_user_instances=" in finding.detail


GOOD_ENV = {"GOOSE_DISABLE_KEYRING": "1", "OPENAI_API_KEY": "k", "OPENAI_HOST": "http://c:8080"}


@pytest.mark.parametrize(
    ("env", "status", "words"),
    [
        (GOOD_ENV, Status.OK, "keyring off"),
        ({**GOOD_ENV, "GOOSE_DISABLE_KEYRING": "0"}, Status.FAIL, "keyring"),
        ({k: v for k, v in GOOD_ENV.items() if k != "OPENAI_API_KEY"}, Status.FAIL, "OPENAI_CUSTOM_HEADERS"),
        ({**GOOD_ENV, "OPENAI_HOST": "http://other:1"}, Status.FAIL, "not the coordinator"),
    ],
)
def test_goose_env(env: dict[str, str], status: Status, words: str) -> None:
    finding = goose_env_finding(env, "http://c:8080/")
    assert finding.status is status and words in finding.detail


def test_only_failures_fail_the_run() -> None:
    assert exit_code([Finding("a", s, "") for s in (Status.OK, Status.WARN, Status.SKIP, Status.INFO)]) == 0
    assert exit_code([Finding("a", Status.OK, ""), Finding("b", Status.FAIL, "")]) == 1
    assert Finding("rg", Status.WARN, "missing").line() == "warn  rg: missing"
