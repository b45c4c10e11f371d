"""Verdicts for `goose-sidecar doctor` (pure: the command gathers the facts, these decide).

Each check ends in one `Finding`: `ok`, `warn` (works, but slower or less than it could), `fail` (something a
user would hit), `skip` (not applicable here) or `info` (a fact the operator should know that no check can
decide). The exit code is 1 when any check failed, else 0: warnings alone do not fail a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str

    def line(self) -> str:
        """One line of the report: `status  check: detail`."""
        return f"{self.status.value:<5} {self.check}: {self.detail}"


# What the coordinator's admission reads from each upstream's /metrics (sidecar.coordinator.upstream): without
# `vllm:num_requests_waiting` it treats the upstream as not vLLM and uses a fixed window.
REQUIRED_METRIC = "vllm:num_requests_waiting"
USED_METRICS = (
    ("vllm:num_requests_running",),
    ("vllm:kv_cache_usage_perc",),  # `gpu_cache_usage_perc` is gone from vLLM (0.32 exports neither alias)
    ("vllm:num_preemptions_total",),
)


def metric_names(text: str) -> set[str]:
    """The metric names in a Prometheus text exposition (samples only; comments skipped)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def metrics_finding(check: str, names: set[str]) -> Finding:
    """Whether an upstream's /metrics has what admission reads."""
    if REQUIRED_METRIC not in names:
        return Finding(
            check,
            Status.WARN,
            f"no {REQUIRED_METRIC}: not vLLM's metrics, so the coordinator uses a fixed in-flight window "
            "(scheduling.max_window) instead of adapting it",
        )
    missing = [" or ".join(group) for group in USED_METRICS if not any(name in names for name in group)]
    if missing:
        return Finding(check, Status.WARN, f"vLLM metrics without {', '.join(missing)} (admission reads them)")
    return Finding(check, Status.OK, "has the vLLM metrics admission reads (waiting, running, KV usage, preemptions)")


def inotify_finding(limit: int | None, in_use: int | None, agents: int) -> Finding:
    """Room for `agents` more sidecars (one inotify instance each) under this user's instance limit; `in_use`
    is None when the instances held cannot be counted."""
    check, sysctl = "inotify instances", "fs.inotify.max_user_instances"
    if limit is None:
        return Finding(check, Status.SKIP, f"{sysctl} not readable (not Linux?)")
    used = in_use or 0
    free = limit - used
    counted = "" if in_use is None else f", {used} in use by this user"
    if free < agents:
        return Finding(
            check,
            Status.FAIL,
            f"{sysctl} = {limit}{counted}: no room for {agents} sidecars (one each); raise it on the host, "
            f"e.g. sudo sysctl -w {sysctl}={max(1024, 2 * (used + agents))}",
        )
    return Finding(check, Status.OK, f"{sysctl} = {limit}{counted}: room for {agents} sidecars")


def exit_code(findings: Iterable[Finding]) -> int:
    return 1 if any(f.status is Status.FAIL for f in findings) else 0


def goose_env_finding(env: Mapping[str, str], coordinator: str | None) -> Finding:
    """The provider environment `goose-config` wrote, as a headless Goose will read it."""
    check = "goose config env"
    problems = []
    if env.get("GOOSE_DISABLE_KEYRING") != "1":
        problems.append("GOOSE_DISABLE_KEYRING is not 1 (Goose would ask the system keyring for the key)")
    if not env.get("OPENAI_API_KEY"):
        problems.append("no OPENAI_API_KEY (Goose then drops OPENAI_CUSTOM_HEADERS)")
    host = env.get("OPENAI_HOST", "")
    if not host:
        problems.append("no OPENAI_HOST")
    elif coordinator is not None and host.rstrip("/") != coordinator.rstrip("/"):
        problems.append(f"OPENAI_HOST is {host}, not the coordinator checked here ({coordinator})")
    if problems:
        return Finding(check, Status.FAIL, "; ".join(problems))
    return Finding(check, Status.OK, f"provider openai at {host}, keyring off")
