"""The Kubernetes generator: every document valid against the Kubernetes API schemas (kubernetes-validate), the
committed file equal to the generator, the agent Pod's shape (native sidecar on loopback), and its probe command
against a real sidecar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from sidecar.deploy import compose
from sidecar.deploy.kubernetes import MIN_KUBERNETES, SIDECAR_LOCAL, manifests, render_manifests
from sidecar.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "kubernetes.yaml"
# The oldest version the manifests are for, and the newest schemas the validator ships.
VERSIONS = [MIN_KUBERNETES, kubernetes_validate.latest_version()]
CRDS = {"ServiceMonitor"}  # custom resources: no schema in the core API


def every_option() -> list[dict[str, Any]]:
    return manifests(
        3, simulator=True, service_monitor=True, namespace="fleet", image="registry.example/gs:1", api_keys_secret="k"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    docs = every_option()
    checked = 0
    for doc in docs:
        if doc["kind"] in CRDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # strict: an unknown field is an error
        checked += 1
    assert checked == len(docs) - 1


def test_the_validator_rejects_what_kubernetes_would() -> None:
    """The schema check has teeth: a misspelt field and a native sidecar's field on an old version fail it."""
    job = next(d for d in manifests(1) if d["kind"] == "Job")
    job["spec"]["template"]["spec"]["containers"][0]["workdir"] = "/workspace"  # workingDir, misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, MIN_KUBERNETES, strict=True)
    native = next(d for d in manifests(1) if d["kind"] == "Job")
    with pytest.raises(kubernetes_validate.ValidationError):  # init containers' restartPolicy is 1.28+
        kubernetes_validate.validate(native, "1.27", strict=True)


def test_the_rendered_yaml_is_the_data() -> None:
    """Parsed back by a real YAML parser, the file is exactly the documents (the renderer quotes everything)."""
    text = render_manifests(
        3, simulator=True, service_monitor=True, namespace="fleet", image="registry.example/gs:1", api_keys_secret="k"
    )
    assert [d for d in yaml.safe_load_all(text) if d is not None] == every_option()
    assert "--simulator --service-monitor --namespace fleet --image registry.example/gs:1 --api-keys-secret k" in text


def test_the_committed_file_is_the_generator_output_for_two_agents_with_simulators() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_manifests(2, simulator=True), (
        "regenerate: goose-sidecar deploy k8s --agents 2 --simulator -o kubernetes.yaml"
    )


def job_pod(n: int, docs: list[dict[str, Any]]) -> dict[str, Any]:
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == f"agent-{n}")
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("agents", [1, 4])
def test_each_agent_pod_runs_goose_beside_a_native_sidecar_on_loopback(agents: int) -> None:
    docs = manifests(agents)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Job"] == [f"agent-{n}" for n in range(1, agents + 1)]
    for n in range(1, agents + 1):
        pod = job_pod(n, docs)
        wait, config, sidecar = pod["initContainers"]
        (goose,) = pod["containers"]
        names = (wait["name"], config["name"], sidecar["name"], goose["name"])
        assert names == ("wait-for-coordinator", "goose-config", "sidecar", "goose")
        assert "http://coordinator:8080/readyz" in wait["command"][-1]
        assert "restartPolicy" not in config and sidecar["restartPolicy"] == "Always"  # runs once / runs beside
        args = sidecar["args"]
        assert args[args.index("--http") + 1] == f"127.0.0.1:{compose.SIDECAR_PORT}"
        assert args[args.index("--agent-id") + 1] == f"agent-{n}"
        assert "ports" not in sidecar  # nothing of /mcp is declared or exposed
        assert config["args"][config["args"].index("--sidecar-url") + 1] == f"{SIDECAR_LOCAL}/mcp"
        # Goose's provider settings are compose's, plus the task it is given.
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in goose["env"]}
        token = {"secretKeyRef": {"name": "goose-sidecar-tokens", "key": f"SIDECAR_{n}_TOKEN"}}
        # Compose's values, but no compose ${...}: the dummy key, and the sidecar token from the tokens Secret.
        expected = {**compose.goose_environment(n), "OPENAI_API_KEY": "goose-sidecar", "GOOSE_SIDECAR_TOKEN": token}
        assert env == {"AGENT_TASK": compose.DEFAULT_TASK, **expected}
        # The sidecar requires the same token Goose (and goose-config, which writes it into Goose's secrets) sends.
        assert sidecar["env"] == [{"name": "GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN", "valueFrom": token}]
        assert config["env"] == [{"name": "GOOSE_SIDECAR_TOKEN", "valueFrom": token}]
        assert "task=$(AGENT_TASK)" in goose["args"]
        # Goose and its sidecar share the workspace claim at the same path.
        workspace = {"name": "workspace", "mountPath": compose.WORKSPACE}
        assert workspace in sidecar["volumeMounts"] and workspace in goose["volumeMounts"]
        claim = next(v for v in pod["volumes"] if v["name"] == "workspace")["persistentVolumeClaim"]["claimName"]
        assert any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs)
        assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True


def test_api_keys_come_from_a_secret_when_one_is_named() -> None:
    goose = job_pod(2, manifests(2, api_keys_secret="agent-keys"))["containers"][0]
    (key,) = [e for e in goose["env"] if e["name"] == "OPENAI_API_KEY"]
    assert key == {
        "name": "OPENAI_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "agent-keys", "key": "AGENT_2_API_KEY"}},
    }
    assert not any("${" in str(e.get("value", "")) for e in goose["env"])  # no compose interpolation leaks in


def test_only_the_coordinator_and_simulators_are_services() -> None:
    docs = manifests(2, simulator=True)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == {"coordinator", "simulator-32b", "simulator-7b"}
    assert services["coordinator"]["spec"]["ports"][0]["port"] == compose.COORDINATOR_PORT
    # A Service selects the Pods of its own Deployment.
    for name, svc in services.items():
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        assert svc["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


def test_the_coordinator_reads_its_upstreams_from_a_secret_unless_it_is_given_the_simulators() -> None:
    def models_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
        coordinator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "coordinator")
        env = coordinator["spec"]["template"]["spec"]["containers"][0]["env"]
        return dict(next(e for e in env if e["name"] == "GOOSE_SIDECAR_MODELS"))

    secret = models_env(manifests(1))["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "goose-sidecar-models", "key": "GOOSE_SIDECAR_MODELS", "optional": True}
    assert yaml.safe_load(models_env(manifests(1, simulator=True))["value"]) == compose.simulator_models()


def test_the_service_monitor_scrapes_the_coordinators_metrics_port() -> None:
    docs = manifests(1, service_monitor=True)
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    service = next(d for d in docs if d["kind"] == "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    # /metrics wants the admin token; the coordinator reads it from the same key of the same Secret.
    admin = {"name": "goose-sidecar-tokens", "key": "COORDINATOR_ADMIN_TOKEN"}
    assert endpoint["authorization"] == {"credentials": admin}
    coordinator = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GOOSE_SIDECAR_COORDINATOR_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": admin}} in coordinator["env"]
    assert not any(d["kind"] == "ServiceMonitor" for d in manifests(1))  # off by default: it needs the CRD


def test_the_sidecar_probe_command_passes_against_the_real_sidecar_it_probes(tmp_path: Path) -> None:
    """The Pod's sidecar arguments, run for real (workspace and port moved here), answer the exec probe."""
    sidecar = job_pod(1, manifests(1))["initContainers"][2]
    port = free_port()
    args = [a.replace(compose.WORKSPACE, str(tmp_path)) for a in sidecar["args"]]
    args[args.index("--http") + 1] = f"127.0.0.1:{port}"
    probe = [a.replace(str(compose.SIDECAR_PORT), str(port)) for a in sidecar["startupProbe"]["exec"]["command"]]
    assert probe[:3] == ["python", "-m", "sidecar.deploy.healthcheck"]
    probe[0] = sys.executable
    before = subprocess.run(probe, capture_output=True, timeout=30, check=False)
    assert before.returncode == 1  # nothing listens yet: the probe fails, so it can tell
    env = {**os.environ, "GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN": "a-token-from-the-secret"}  # it refuses to serve without
    server = subprocess.Popen([sys.executable, "-m", "sidecar.cli", *args], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90  # start-up on a busy machine; the condition, not the time, is the test
        while subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode != 0:
            assert server.poll() is None, "the sidecar exited with the Pod's arguments"
            assert time.monotonic() < deadline, "the probe never passed against the running sidecar"
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "deploy", "k8s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_writes_the_file_and_refuses_zero_agents(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    done = run_cli("--agents", "3", "--namespace", "fleet", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "kubectl apply -f" in done.stderr
    assert out.read_text(encoding="utf-8") == render_manifests(3, namespace="fleet")
    refused = run_cli("--agents", "0")
    assert refused.returncode == 2 and "--agents must be at least 1" in refused.stderr


def test_the_simulators_run_as_compose_runs_them() -> None:
    docs = manifests(1, simulator=True)
    for name, profile, _ in compose.SIMULATORS:
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == compose.simulator_service(profile)["command"]


def test_the_coordinator_probes_pass_its_host_check_where_kubelets_default_host_would_not(tmp_path: Path) -> None:
    """The coordinator's own command, run for real: kubelet's default Host (the Pod IP) is refused, the probes'
    Host header passes, on /livez with no upstream ready yet."""
    deployment = next(d for d in manifests(1) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probe = container["livenessProbe"]["httpGet"]
    port = free_port()
    args = list(container["args"])
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    unreachable = {"large": {"replicas": [f"http://127.0.0.1:{free_port()}"]}}
    env = {**os.environ, "GOOSE_SIDECAR_MODELS": json.dumps(unreachable), "GOOSE_SIDECAR_COORDINATOR_ADMIN_TOKEN": "t"}
    server = subprocess.Popen([sys.executable, "-m", "sidecar.cli", *args], env=env, stderr=subprocess.DEVNULL)
    try:
        headers = {h["name"]: h["value"] for h in probe["httpHeaders"]}
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, "the coordinator exited with the Deployment's arguments"
            try:
                passed = httpx.get(f"http://127.0.0.1:{port}{probe['path']}", headers=headers, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the coordinator never answered"
                time.sleep(0.2)
        assert passed.status_code == 200
        pod_ip = httpx.get(f"http://127.0.0.1:{port}{probe['path']}", headers={"Host": f"10.1.2.3:{port}"}, timeout=5)
        assert pod_ip.status_code == 421
    finally:
        server.terminate()
        server.wait(timeout=30)
