"""`goose-sidecar deploy`: vLLM on Modal, the coordinator's config for it, and the docker-compose file of a fleet.

  deploy modal [--dry-run] [--env ENV]       run `modal deploy -m sidecar.deploy.modal_vllm` (settings:
                                             SIDECAR_MODAL_* variables, see sidecar/deploy/vllm_spec.py)
  deploy coordinator-config --workspace-name W [--environment-suffix S] [--auth | --no-auth] [--format toml|env]
  deploy coordinator-config --simulator      the same, pointing at the compose file's simulator services
  deploy compose --agents N [--simulator] [--coordinators N] [-o FILE]
  deploy k8s --agents N [--simulator] [--coordinators N] [--service-monitor] [--image IMG] [--namespace NS]
             [--api-keys-secret S] [-o FILE]
  deploy keys --agents N -o FILE [--env-file .env]   a coordinator keys file with a fresh key per agent
  deploy secrets --agents N [-o FILE]        new bearer tokens for the sidecars and the admin token, as .env lines

Exit codes: 0 done, 1 `modal deploy` failed, 2 bad usage or settings, or modal missing / not logged in.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from sidecar.config import Config

HELP = "Deploy: vLLM on Modal (32B + 7B), the coordinator config for it, docker-compose or Kubernetes for a fleet."
MODAL_MODULE = "sidecar.deploy.modal_vllm"
TOKEN_ENV = ("SIDECAR_MODAL_PROXY_KEY", "SIDECAR_MODAL_PROXY_SECRET")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="deploy_command", metavar="TARGET", required=True)

    modal = sub.add_parser("modal", help="deploy the vLLM endpoints to Modal (modal deploy)")
    modal.add_argument("--env", metavar="ENV", help="Modal environment (default: the profile's)")
    modal.add_argument("--dry-run", action="store_true", help="print the endpoints and the command, deploy nothing")

    config = sub.add_parser("coordinator-config", help="print the coordinator's [models.*] for the deployed URLs")
    target = config.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--workspace-name", metavar="W", help="your Modal workspace (URLs https://W--<label>.modal.run)"
    )
    target.add_argument("--simulator", action="store_true", help="point at the compose file's simulator services")
    config.add_argument(
        "--environment-suffix", metavar="S", help="web suffix of a non-default Modal environment (W-S--<label>)"
    )
    config.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send Modal-Key/Modal-Secret from $SIDECAR_MODAL_PROXY_KEY/$SIDECAR_MODAL_PROXY_SECRET "
        "(default: on when the app requires proxy auth, as it does unless SIDECAR_MODAL_PROXY_AUTH=0)",
    )
    config.add_argument("--format", choices=["toml", "env"], default="toml", help="goose-sidecar.toml or a .env line")
    config.add_argument("-o", "--output", metavar="FILE", help="write FILE (mode 600) instead of stdout")

    compose = sub.add_parser("compose", help="write docker-compose.yml for N agents")
    compose.add_argument("--agents", type=int, default=2, metavar="N", help="agents, each Goose + sidecar (2)")
    compose.add_argument("--simulator", action="store_true", help="add the simulator services (profile 'sim')")
    compose.add_argument(
        "--coordinators",
        type=int,
        default=1,
        metavar="N",
        help="N peer coordinators sharing each upstream's window, each agent placed on one (1; docs/deploy.md)",
    )
    compose.add_argument("-o", "--output", metavar="FILE", help="write FILE instead of stdout")

    k8s = sub.add_parser(
        "k8s",
        help="write Kubernetes manifests for N agents (Kubernetes >= 1.29)",
        description="The coordinator (Deployment, Service, probes) and per agent a Job whose Pod runs Goose with "
        "its sidecar as a native sidecar container on the Pod's loopback, sharing the agent's workspace volume. "
        "Apply with `kubectl apply -f FILE`; upstreams come from the Secret goose-sidecar-models (docs/deploy.md).",
    )
    k8s.add_argument("--agents", type=int, default=2, metavar="N", help="agents, each a Job with its own Pod (2)")
    k8s.add_argument("--simulator", action="store_true", help="add the simulator Deployments as the upstreams")
    k8s.add_argument(
        "--coordinators",
        type=int,
        default=1,
        metavar="N",
        help="N peer coordinators sharing each upstream's window, each agent placed on one (1; docs/deploy.md)",
    )
    k8s.add_argument(
        "--service-monitor", action="store_true", help="add a Prometheus Operator ServiceMonitor (needs its CRD)"
    )
    k8s.add_argument("--image", default=None, metavar="IMG", help="the goose-sidecar image (goose-sidecar:latest)")
    k8s.add_argument("--namespace", metavar="NS", help="set metadata.namespace (default: kubectl's namespace)")
    k8s.add_argument("--workspace-size", default="10Gi", metavar="SIZE", help="each agent's workspace claim (10Gi)")
    k8s.add_argument(
        "--api-keys-secret",
        metavar="NAME",
        help="each Goose's OPENAI_API_KEY from this Secret's AGENT_N_API_KEY (see `deploy keys`); default: a dummy",
    )
    k8s.add_argument("-o", "--output", metavar="FILE", help="write FILE instead of stdout")

    keys = sub.add_parser("keys", help="write a coordinator keys file with a fresh API key for each of N agents")
    keys.add_argument("--agents", type=int, required=True, metavar="N", help="agents agent-1 ... agent-N")
    keys.add_argument("-o", "--output", required=True, metavar="FILE", help="the keys file (mode 600; not replaced)")
    keys.add_argument(
        "--env-file",
        metavar="FILE",
        help="also append AGENT_N_API_KEY=... lines to this .env (what the generated compose file gives each Goose)",
    )

    tokens = sub.add_parser("secrets", help="print fresh sidecar and admin tokens for the compose fleet (.env lines)")
    tokens.add_argument("--agents", type=int, default=2, metavar="N", help="one sidecar token per agent (2)")
    tokens.add_argument("-o", "--output", metavar="FILE", help="append to FILE (created mode 600) instead of stdout")


def run(args: argparse.Namespace, config: Config) -> int:
    del config  # deployment settings are SIDECAR_MODAL_* variables, shared with `modal deploy`
    if args.deploy_command == "modal":
        return deploy_modal(args.env, dry_run=args.dry_run, env=os.environ)
    if args.deploy_command == "coordinator-config":
        return coordinator_config(args, os.environ)
    if args.deploy_command == "k8s":
        return write_kubernetes(args)
    if args.deploy_command == "keys":
        return write_keys(args.agents, Path(args.output), Path(args.env_file) if args.env_file else None)
    if args.deploy_command == "secrets":
        return write_secrets(args.agents, output=args.output)
    return write_compose(args.agents, simulator=args.simulator, output=args.output, coordinators=args.coordinators)


def write_kubernetes(args: argparse.Namespace) -> int:
    from sidecar.deploy.kubernetes import IMAGE, render_manifests

    if args.agents < 1:
        return _fail(f"--agents must be at least 1 (got {args.agents})")
    if args.coordinators < 1:
        return _fail(f"--coordinators must be at least 1 (got {args.coordinators})")
    text = render_manifests(
        args.agents,
        simulator=args.simulator,
        service_monitor=args.service_monitor,
        image=args.image or IMAGE,
        namespace=args.namespace,
        workspace_size=args.workspace_size,
        api_keys_secret=args.api_keys_secret,
        coordinators=args.coordinators,
    )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        done = f"wrote {args.output}: {args.agents} agent(s); apply with: kubectl apply -f {args.output}"
        print(done, file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def write_keys(agents: int, output: Path, env_file: Path | None) -> int:
    """A keys file for agent-1 ... agent-N (and their .env lines); never overwrites an existing keys file."""
    from sidecar.deploy.compose import agent_id, api_key_variable
    from sidecar.deploy.keys_file import env_lines, generate_keys, keys_file_text

    if agents < 1:
        print("goose-sidecar deploy keys: --agents must be at least 1", file=sys.stderr)
        return 2
    keys = generate_keys([agent_id(n) for n in range(1, agents + 1)])
    try:
        with os.fdopen(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
            f.write(keys_file_text(keys))
        if env_file is not None:
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(env_lines(keys, api_key_variable))
    except OSError as exc:
        print(f"goose-sidecar deploy keys: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {agents} keys to {output}" + (f" and {env_file}" if env_file else ""), file=sys.stderr)
    print(f"start the coordinator with --keys-file {output} (or [coordinator] keys_file)", file=sys.stderr)
    return 0


def modal_deploy_argv(environment: str | None = None) -> list[str]:
    """The command `deploy modal` runs: Modal's CLI from this interpreter, on the module (not a file path)."""
    argv = [sys.executable, "-m", "modal", "deploy", "-m", MODAL_MODULE]
    return argv + (["--env", environment] if environment else [])


def deploy_modal(environment: str | None, *, dry_run: bool, env: Mapping[str, str]) -> int:
    from sidecar.deploy.vllm_spec import SpecError, describe, spec_from_env

    try:
        spec = spec_from_env(env)
    except SpecError as exc:
        return _fail(str(exc))
    print(f"app {spec.app_name}: vLLM {spec.vllm_version}, proxy auth {'on' if spec.proxy_auth else 'off'}")
    for row in describe(spec):
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    argv = modal_deploy_argv(environment)
    if dry_run:
        print("would run:", shlex.join(argv))
        return 0
    if importlib.util.find_spec("modal") is None:
        return _fail("the Modal client is not installed: pip install 'goose-sidecar[deploy]' (or pip install modal)")
    if not _modal_logged_in():
        return _fail("not logged in to Modal: run `modal setup` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)")
    completed = subprocess.run(argv, env=dict(env), check=False)
    if completed.returncode != 0:
        print(f"goose-sidecar deploy modal: modal deploy exited {completed.returncode}", file=sys.stderr)
        return 1
    print(
        "\nnext: goose-sidecar deploy coordinator-config --workspace-name <your workspace> > goose-sidecar.toml"
        " (then goose-sidecar up --config goose-sidecar.toml)"
        + ("\n      (export SIDECAR_MODAL_PROXY_KEY / SIDECAR_MODAL_PROXY_SECRET first)" if spec.proxy_auth else ""),
        file=sys.stderr,
    )
    return 0


def _modal_logged_in() -> bool:
    """Whether Modal's client has credentials (MODAL_TOKEN_ID/SECRET, or the active profile in ~/.modal.toml)."""
    from modal.config import config

    return bool(config.get("token_id") and config.get("token_secret"))


def coordinator_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sidecar.deploy.compose import simulator_models
    from sidecar.deploy.coordinator_config import modal_models, render_env, render_toml
    from sidecar.deploy.vllm_spec import SpecError, spec_from_env

    if args.simulator:
        models = simulator_models()
        comments = [
            "The coordinator's upstreams: the simulator services of docker-compose.yml (profile 'sim').",
            "native_priority = true: they run with --scheduling-policy priority (nothing can detect it).",
        ]
    else:
        try:
            spec = spec_from_env(env)
        except SpecError as exc:
            return _fail(str(exc))
        auth = spec.proxy_auth if args.auth is None else args.auth
        token = None
        if auth:
            key, secret = (env.get(name, "").strip() for name in TOKEN_ENV)
            if not (key and secret):
                return _fail(
                    f"proxy auth is on: set {TOKEN_ENV[0]} and {TOKEN_ENV[1]} to a Modal proxy auth token "
                    "(modal.com/settings/proxy-auth-tokens), or pass --no-auth if you deployed with "
                    "SIDECAR_MODAL_PROXY_AUTH=0"
                )
            token = (key, secret)
        try:
            models = modal_models(spec, args.workspace_name, environment_suffix=args.environment_suffix, token=token)
        except ValueError as exc:
            return _fail(str(exc))
        comments = [
            f"The coordinator's upstreams: Modal app {spec.app_name} in workspace {args.workspace_name}.",
            "Written by `goose-sidecar deploy coordinator-config`" + (" (holds a proxy auth secret)." if auth else "."),
            "native_priority: whether the deployed `vllm serve` runs with --scheduling-policy priority (vLLM gives",
            "no sign of it); max_num_seqs: its batch limit over the replicas (one container per URL).",
        ]
    text = render_env(models) if args.format == "env" else render_toml(models, comments)
    if args.output:
        path = Path(args.output)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def write_compose(agents: int, *, simulator: bool, output: str | None, coordinators: int = 1) -> int:
    from sidecar.deploy.compose import render_compose

    if agents < 1:
        return _fail("--agents must be at least 1")
    if coordinators < 1:
        return _fail(f"--coordinators must be at least 1 (got {coordinators})")
    text = render_compose(agents, simulator=simulator, coordinators=coordinators)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def write_secrets(agents: int, *, output: str | None) -> int:
    from sidecar.deploy.secrets import env_lines

    if agents < 1:
        return _fail("--agents must be at least 1")
    text = env_lines(agents)
    if output:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # never readable by others
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _fail(message: str) -> int:
    print(f"goose-sidecar deploy: {message}", file=sys.stderr)
    return 2
