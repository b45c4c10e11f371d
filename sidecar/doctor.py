"""`goose-sidecar doctor`: check, in one run, what a user would otherwise discover one failure at a time.

One line per check (`ok`, `warn`, `fail`, `skip`, `info`), then the exit code: 1 when a check failed, else 0.
Checks: ripgrep and git for the sidecar's tools; the kernel's inotify limits against the planned number of
sidecars on this host (`--agents`); the coordinator reachable (`/livez`) and ready (`/readyz`); each configured
upstream's `/metrics` having the names admission reads; native priority (configured here; whether the
upstream has it enabled is not observable from outside, so it is reported as unknown); Modal's client and
token (only when an upstream is on Modal); the Goose config `goose-config` wrote (`--goose-root`).
The verdicts are pure (`sidecar.core.doctor`); this module gathers the facts. Nothing here changes anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from sidecar.config import Config
from sidecar.core.doctor import (
    Finding,
    Status,
    exit_code,
    goose_env_finding,
    inotify_finding,
    metric_names,
    metrics_finding,
)

HELP = "Check this machine and the deployment: rg, git, inotify limits, coordinator, upstream metrics, Goose config"
INOTIFY = Path("/proc/sys/fs/inotify")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agents", type=int, default=1, metavar="N", help="sidecars planned on this host, for the inotify check (1)"
    )
    parser.add_argument(
        "--coordinator",
        metavar="URL",
        help="the coordinator to check (default: [sidecar] coordinator, else this config's [coordinator] host:port)",
    )
    parser.add_argument(
        "--goose-root",
        metavar="DIR",
        help="a GOOSE_PATH_ROOT written by goose-config, to check (default: $GOOSE_PATH_ROOT; none: skipped)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="HTTP timeout per request (5)")


def run(args: argparse.Namespace, config: Config) -> int:
    if args.agents < 1:
        print("goose-sidecar doctor: --agents must be at least 1", file=sys.stderr)
        return 2
    coordinator = (args.coordinator or config.sidecar.coordinator or _local_url(config)).rstrip("/")
    findings: list[Finding] = [tool_finding("rg"), tool_finding("git")]
    findings += inotify_findings(args.agents)
    findings += http_findings(config, coordinator, args.timeout)
    findings.append(native_priority_finding(config))
    findings.append(modal_finding(config))
    root = args.goose_root or os.environ.get("GOOSE_PATH_ROOT")
    findings += goose_findings(Path(root).expanduser() if root else None, coordinator)
    for finding in findings:
        print(finding.line())
    return exit_code(findings)


def _local_url(config: Config) -> str:
    host = config.coordinator.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{config.coordinator.port}"


def tool_finding(name: str) -> Finding:
    found = shutil.which(name)
    if found is None:
        why = {
            "rg": "search uses the slower Python fallback (same output); pip install ripgrep==14.1.0 gives a binary",
            "git": "the sidecar's git_status and git_diff answer 'git is not installed'",
        }[name]
        return Finding(name, Status.WARN, f"not on PATH: {why}")
    try:
        done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10, check=False)
        version = done.stdout.splitlines()[0] if done.stdout else "version unknown"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding(name, Status.WARN, f"{found} does not run: {exc}")
    return Finding(name, Status.OK, f"{found} ({version})")


def inotify_findings(agents: int) -> list[Finding]:
    findings = [inotify_finding(_read_int(INOTIFY / "max_user_instances"), count_inotify_instances(), agents)]
    watches = _read_int(INOTIFY / "max_user_watches")
    if watches is not None:  # one per workspace directory: the need depends on the workspaces, so a fact only
        detail = f"fs.inotify.max_user_watches = {watches}, one per workspace directory, shared by this user"
        findings.append(Finding("inotify watches", Status.INFO, detail))
    return findings


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def count_inotify_instances(proc: Path = Path("/proc")) -> int | None:
    """inotify instances held by processes of this user (the kernel counts the limit per user); None when
    /proc cannot be read. Processes whose descriptors cannot be listed are not counted."""
    if not (proc / "self" / "fd").is_dir():
        return None
    uid, total = os.getuid(), 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == "anon_inode:inotify":
                    total += 1
        except OSError:
            continue
    return total


def http_findings(config: Config, coordinator: str, timeout: float) -> list[Finding]:
    import httpx

    findings = []
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        findings += coordinator_findings(client, coordinator)
        if not config.models:
            findings.append(Finding("upstreams", Status.SKIP, "no [models.*] configured: 'up' embeds its simulator"))
        for alias, model in config.models.items():
            for url in model.replicas:
                finding = upstream_finding(client, f"upstream {alias}", url, dict(model.headers))
                findings.append(Finding(finding.check, finding.status, f"{url}/metrics {finding.detail}"))
    return findings


def coordinator_findings(client: Any, url: str) -> list[Finding]:
    import httpx

    try:
        live = client.get(f"{url}/livez")
        if live.status_code == 404:  # a coordinator from before /livez
            live = client.get(f"{url}/healthz")
    except httpx.HTTPError as exc:
        detail = f"{url} not reachable ({type(exc).__name__}); start it with 'goose-sidecar up' or pass --coordinator"
        return [Finding("coordinator", Status.FAIL, detail)]
    if live.status_code != 200:
        return [Finding("coordinator", Status.FAIL, f"{url}/livez answered {live.status_code}")]
    findings = [Finding("coordinator", Status.OK, f"{url} serves")]
    try:
        ready = client.get(f"{url}/readyz")
    except httpx.HTTPError as exc:
        return [*findings, Finding("coordinator ready", Status.FAIL, f"/readyz: {type(exc).__name__}")]
    if ready.status_code == 200:
        findings.append(Finding("coordinator ready", Status.OK, "an upstream answers"))
    elif ready.status_code == 503:
        detail = "no upstream answers yet (a cold Modal endpoint takes minutes); calls wait or fail with 502"
        findings.append(Finding("coordinator ready", Status.WARN, detail))
    else:
        findings.append(Finding("coordinator ready", Status.SKIP, f"/readyz answered {ready.status_code}"))
    return findings


def upstream_finding(client: Any, check: str, url: str, headers: dict[str, str]) -> Finding:
    import httpx

    try:
        response = client.get(f"{url}/metrics", headers=headers)
    except httpx.HTTPError as exc:
        return Finding(check, Status.FAIL, f"not reachable ({type(exc).__name__}: {exc})")
    if response.status_code != 200:
        hint = " (Modal proxy auth: set headers Modal-Key/Modal-Secret)" if response.status_code == 401 else ""
        return Finding(check, Status.FAIL, f"answered {response.status_code}{hint}")
    return metrics_finding(check, metric_names(response.text))


def native_priority_finding(config: Config) -> Finding:
    setting = config.scheduling.native_priority
    upstream = (
        "whether the upstream runs vLLM with --scheduling-policy priority is unknown from here (vLLM does not "
        "report it; under fcfs it ignores the field)"
    )
    per_model = {
        alias: setting if model.native_priority is None else model.native_priority
        for alias, model in config.models.items()
    } or {"every model": setting}
    on = sorted(alias for alias, value in per_model.items() if value)
    if not on:
        detail = "off (scheduling.native_priority, or per model): no priority is sent, the coordinator orders alone"
        return Finding("native priority", Status.INFO, detail)
    return Finding("native priority", Status.INFO, f"on for {', '.join(on)}: tiers sent as vLLM priorities; {upstream}")


def modal_finding(config: Config) -> Finding:
    on_modal = any(".modal.run" in url for m in config.models.values() for url in m.replicas)
    import importlib.util

    if importlib.util.find_spec("modal") is None:
        status = Status.WARN if on_modal else Status.SKIP
        return Finding("modal", status, "the modal client is not installed (pip install 'goose-sidecar[deploy]')")
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return Finding("modal", Status.OK, "token from MODAL_TOKEN_ID / MODAL_TOKEN_SECRET")
    if (Path.home() / ".modal.toml").is_file():
        return Finding("modal", Status.OK, "token in ~/.modal.toml")
    status = Status.WARN if on_modal else Status.SKIP
    return Finding("modal", status, "no Modal token (modal token new) - only 'deploy modal' needs one")


def goose_findings(root: Path | None, coordinator: str) -> list[Finding]:
    if root is None:
        return [Finding("goose config", Status.SKIP, "no --goose-root or $GOOSE_PATH_ROOT given")]
    config_dir = root / "config"
    findings = []
    config_yaml = config_dir / "config.yaml"
    try:
        text = config_yaml.read_text(encoding="utf-8")
    except OSError as exc:
        return [Finding("goose config", Status.FAIL, f"{config_yaml}: {exc.strerror} (run goose-sidecar goose-config)")]
    if "\nextensions:" not in f"\n{text}" or "\n  sidecar:" not in text:
        findings.append(Finding("goose config", Status.FAIL, f"{config_yaml} has no extensions.sidecar entry"))
    else:
        findings.append(Finding("goose config", Status.OK, f"{config_yaml} registers the sidecar extension"))
    provider = config_dir / "custom_providers" / "goose_sidecar.json"
    try:
        data = json.loads(provider.read_text(encoding="utf-8"))
        missing = [k for k in ("name", "engine", "base_url", "models") if k not in data]
        findings.append(
            Finding("goose provider", Status.FAIL, f"{provider} lacks {', '.join(missing)}")
            if missing
            else Finding("goose provider", Status.OK, f"{provider} parses ({data['base_url']})")
        )
    except (OSError, ValueError) as exc:
        findings.append(Finding("goose provider", Status.FAIL, f"{provider}: {exc}"))
    env_path = config_dir / "goose-sidecar.env"
    try:
        env = dict(line.split("=", 1) for line in shlex.split(env_path.read_text(encoding="utf-8"), comments=True))
    except (OSError, ValueError) as exc:
        return [*findings, Finding("goose config env", Status.FAIL, f"{env_path}: {exc}")]
    findings.append(goose_env_finding(env, coordinator))
    recipe = config_dir / "goose-sidecar-recipe.yaml"
    if not recipe.is_file():
        findings.append(Finding("goose recipe", Status.FAIL, f"{recipe} is missing"))
    return findings
