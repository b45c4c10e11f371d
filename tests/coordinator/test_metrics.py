"""Prometheus: latency, queue wait and tokens by model and tier, build_info, no total beside its parts; and the
Grafana dashboard and alert rules in docs/monitoring/ load and reference only metrics that exist."""

from __future__ import annotations

import json
import re
import subprocess

from sidecar import __version__
from sidecar.core.doctor import metric_names
from sidecar.sim.settings import SimSettings
from sidecar.stack import simulators
from tests.conftest import NPM_TOOLS, ROOT, require_tool
from tests.coordinator.conftest import stack
from tests.coordinator.scripted_upstream import MODEL

MONITORING = ROOT / "docs" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"
# A hot call: the conversation's last tool result is a failing test run.
HOT = {
    "model": MODEL,
    "stream": True,
    "messages": [
        {"role": "user", "content": "make the tests pass"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "sidecar__run_tests", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "FAILED tests/test_x.py::test_a - AssertionError\n1 failed"},
    ],
}  # fmt: skip


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name{labels...}` (labels in any order, others allowed)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{labels}")


async def test_latency_queue_wait_and_tokens_by_model_and_tier() -> None:
    async with stack() as st:
        answer = await st.client.post("/v1/chat/completions", json=HOT, headers={"x-agent-id": "a1"})
        assert answer.status_code == 200
        tier = answer.headers["x-goose-sidecar-tier"]
        assert tier == "hot"
        text = (await st.client.get("/metrics")).text
    served = {"model": "default", "tier": tier}  # the alias that served it, and its tier
    assert sample(text, "goose_sidecar_request_duration_seconds_count", **served) == 1
    assert sample(text, "goose_sidecar_time_to_first_byte_seconds_count", **served) == 1
    assert sample(text, "goose_sidecar_queue_wait_seconds_count", **served) == 1
    assert sample(text, "goose_sidecar_prompt_tokens_total", **served) == 12  # the upstream's usage chunk
    assert sample(text, "goose_sidecar_generation_tokens_total", **served) == 9
    assert sample(text, "goose_sidecar_prompt_tokens_cached_total", **served) == 0
    assert sample(text, "goose_sidecar_build_info", version=__version__) == 1


async def test_no_counter_label_holds_a_total_beside_its_parts() -> None:
    async with stack() as st:
        text = (await st.client.get("/metrics")).text
    outcomes = set(re.findall(r'outcome="(\w+)"', text))
    assert not outcomes & {"started", "total", "predictions", "top1", "top3"}


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",), "summary": ("",)}


def exposed(text: str) -> set[str]:
    """The sample names of an exposition, and those its declared families would have (a labelled counter shows
    no sample before its first increment, e.g. retries)."""
    names = metric_names(text)
    for family, kind in re.findall(r"^# TYPE (\S+) (\w+)$", text, re.M):
        names |= {family} | {family + suffix for suffix in SUFFIXES.get(kind, ())}
    return names


async def existing_metrics() -> set[str]:
    """Every metric name a coordinator and the simulated vLLM expose once they have served traffic."""
    names: set[str] = set()
    async with stack() as st:
        await st.client.post("/v1/chat/completions", json=HOT)
        await st.client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
        names |= exposed((await st.client.get("/metrics")).text)
    async with simulators(SimSettings(time_scale=100)) as models:
        import httpx

        async with httpx.AsyncClient(timeout=10) as client:
            names |= exposed((await client.get(f"{models[0].url}/metrics")).text)
    return names


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:goose_sidecar_\w+|vllm:\w+)", expr))


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["title"] and board["panels"] and board["schemaVersion"] >= 30
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    assert exprs and all(panel.get("datasource") for panel in board["panels"] if panel.get("targets"))
    return exprs


def alert_exprs() -> list[str]:
    text = ALERTS.read_text(encoding="utf-8")
    node = NPM_TOOLS / "node_modules/.bin/node"
    if node.exists() and (NPM_TOOLS / "node_modules" / "yaml").exists():  # a real YAML parser, when installed
        script = (
            "const Y=require(process.argv[1]);let s='';process.stdin.on('data',d=>s+=d)"
            ".on('end',()=>process.stdout.write(JSON.stringify(Y.parse(s,{strict:true,uniqueKeys:true}))))"
        )
        done = subprocess.run(
            [str(node), "-e", script, str(NPM_TOOLS / "node_modules" / "yaml")],
            input=text, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        rules = [rule for group in json.loads(done.stdout)["groups"] for rule in group["rules"]]
        assert all({"alert", "expr", "labels", "annotations"} <= set(rule) for rule in rules)
        return [rule["expr"] for rule in rules]
    return re.findall(r"^\s+expr: (.+)$", text, re.M)


async def test_the_dashboard_and_alerts_reference_only_metrics_that_exist() -> None:
    exists = await existing_metrics()
    for kind, exprs in (("dashboard", dashboard_exprs()), ("alerts", alert_exprs())):
        assert exprs, kind
        for expr in exprs:
            missing = referenced(expr) - exists
            assert not missing, f"{kind}: {expr} uses {missing}"


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = require_tool("promtool")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
