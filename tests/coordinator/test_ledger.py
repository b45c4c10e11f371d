"""Per-agent usage and cost: a real coordinator charges each answered call to its agent in /status, appends it
to the JSONL usage log, and `goose-sidecar status --json` exports the same."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.coordinator.dashboard import LARGE_COST, SMALL_COST, ModelUsage
from sidecar.coordinator.ledger import UsageLedger
from sidecar.core.usage import Usage
from tests.conftest import ROOT
from tests.coordinator.conftest import stack
from tests.coordinator.scripted_upstream import MODEL

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "fix the failing test"}], "stream": True}
GPU_S = 12 * LARGE_COST.prefill_s + 9 * LARGE_COST.decode_s  # the scripted answer's usage: 12 prompt, 9 output


def status_json(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "status", "--json", "--url", url],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def test_each_call_is_charged_to_its_agent_in_status_the_log_and_status_json(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    async with stack(usage_log=str(log)) as st:  # one upstream, "default": priced as the large model
        for agent in ("a1", "a1", "a2"):
            answer = await st.client.post("/v1/chat/completions", json=CHAT, headers={"x-agent-id": agent})
            assert answer.status_code == 200
        agents = {a["agent_id"]: a for a in (await st.client.get("/status")).json()["agents"]}
        done = await asyncio.to_thread(status_json, st.url)
    a1 = agents["a1"]["usage"]
    assert a1["by_model"]["default"] == {
        "calls": 2, "calls_without_usage": 0, "prompt_tokens": 24, "cached_prompt_tokens": 0, "completion_tokens": 18
    }  # fmt: skip
    assert a1["gpu_s"] == pytest.approx(2 * GPU_S, abs=1e-3)
    assert a1["usd"] == pytest.approx(2 * GPU_S / 3600 * 3.5, abs=1e-6)
    assert agents["a2"]["usage"]["by_model"]["default"]["calls"] == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["agent_id"], x["model"], x["prompt_tokens"], x["completion_tokens"]) for x in lines] == [
        ("a1", "default", 12, 9), ("a1", "default", 12, 9), ("a2", "default", 12, 9)
    ]  # fmt: skip
    assert all(x["usage_reported"] and x["gpu_s"] == pytest.approx(GPU_S, abs=1e-6) for x in lines)
    assert done.returncode == 0, done.stderr
    exported = {a["agent_id"]: a["usage"] for a in json.loads(done.stdout)["agents"]}
    assert exported["a1"] == a1


def test_the_small_model_is_priced_at_its_own_cost_and_a_call_without_usage_is_counted() -> None:
    ledger = UsageLedger(gpu_hour_usd=3.6, small_aliases=frozenset({"small"}))
    by_model: dict[str, ModelUsage] = {}
    ledger.record(
        by_model, "a", "small", "cold", Usage(prompt_tokens=100, cached_prompt_tokens=60, completion_tokens=10)
    )
    ledger.record(by_model, "a", "small", "cold", None)
    account = ledger.account(by_model)
    assert account["by_model"]["small"]["calls"] == 2 and account["by_model"]["small"]["calls_without_usage"] == 1
    expected = 40 * SMALL_COST.prefill_s + 10 * SMALL_COST.decode_s  # prefix-cached prompt tokens are free
    assert account["gpu_s"] == pytest.approx(expected, abs=1e-3)
    assert account["usd"] == pytest.approx(expected / 1000, abs=1e-6)  # $3.60 per GPU-hour = $0.001 per GPU-s


def test_an_unwritable_log_never_fails_the_call(tmp_path: Path) -> None:
    ledger = UsageLedger(gpu_hour_usd=1.0, log_path=tmp_path / "missing" / "usage.jsonl")
    by_model: dict[str, ModelUsage] = {}
    ledger.record(by_model, "a", "large", "hot", Usage(prompt_tokens=1, cached_prompt_tokens=0, completion_tokens=1))
    assert ledger.log_errors == 1 and ledger.account(by_model)["by_model"]["large"]["calls"] == 1


def test_with_two_models_the_small_one_is_priced_as_the_small_model() -> None:
    from sidecar.config import load_config
    from sidecar.coordinator.app import build_app

    models = {"large": {"replicas": ["http://127.0.0.1:9"]}, "small": {"replicas": ["http://127.0.0.1:9"]}}
    app = build_app(load_config(env={}, overrides={"models": models}))
    assert app.state.coordinator.board.ledger.small_aliases == {"small"}
