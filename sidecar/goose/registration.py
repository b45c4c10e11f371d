"""Goose registration for one agent: the extension entries, provider settings, custom provider and recipe.

Field names and required fields follow Goose's own types (aaif-goose/goose, `crates/goose/src/agents/
extension.rs` `ExtensionConfig`, `config/declarative_providers.rs` `DeclarativeProviderConfig`,
`recipe/mod.rs` `Recipe`): a `config.yaml` extension entry is `ExtensionConfig` plus `enabled`; a malformed
entry is skipped silently by Goose, which is why these are generated from code and tested.

- The sidecar, `stdio` (Goose starts `goose-sidecar mcp ...`) or `streamable_http` (a running
  `goose-sidecar mcp --http`), with a tool-call `timeout` longer than the test timeout (Goose's default is
  300 s and progress notifications do not extend it).
- Goose's `developer` platform extension beside it, limited to `write` and `edit` (the sidecar replaces
  reading, searching and running tests through the shell). Its `description` and `display_name` must equal
  Goose's built-in definition (`platform_extensions/mod.rs`): otherwise Goose's config migration rewrites
  the entry and drops `available_tools`.
- Over HTTP the sidecar requires a bearer token (`sidecar/toolserver/httpauth.py`): the extension entry sends
  `Authorization: Bearer ${GOOSE_SIDECAR_TOKEN}`, which Goose fills from `env_keys` (its environment, else
  `secrets.yaml`), so the token itself is never written into `config.yaml` or a recipe.
- The provider, pointed at the coordinator with the agent's identity: `GOOSE_PROVIDER=openai`,
  `OPENAI_HOST`, a dummy `OPENAI_API_KEY` (Goose ignores `OPENAI_CUSTOM_HEADERS` without one),
  `OPENAI_CUSTOM_HEADERS=X-Agent-Id=<id>`, `GOOSE_CONTEXT_LIMIT`, `GOOSE_DISABLE_SESSION_NAMING`.
  Also as a declarative custom provider (static `X-Agent-Id` header, no key), selectable with
  `GOOSE_PROVIDER=goose_sidecar`.
- A headless recipe (`goose run --recipe FILE --params task=...`).

`write_goose_config` merges into an existing `config.yaml` (and `secrets.yaml`) without touching the user's
other entries (`sidecar.goose.yamltext`), and writes the other files beside it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.goose.yamltext import dump, set_map_entry, set_top_level

EXTENSION_NAME = "sidecar"
PROVIDER_ID = "goose_sidecar"
DEVELOPER = {  # Goose's built-in definition (platform_extensions/mod.rs); must match exactly
    "name": "developer",
    "display_name": "Developer",
    "description": "Write and edit files, and execute shell commands",
}
DEFAULT_MODEL = "auto"  # the coordinator's route table picks the model per stage (DESIGN.md, Routing)
DEFAULT_CONTEXT_LIMIT = 32768  # what the vLLM deployment serves (--max-model-len, sidecar/deploy/vllm_spec.py)
DUMMY_API_KEY = "goose-sidecar"  # the coordinator identifies agents by X-Agent-Id; Goose needs some key
TOKEN_ENV = "GOOSE_SIDECAR_TOKEN"  # Goose's variable for the HTTP sidecar's bearer token (`env_keys`)


@dataclass(frozen=True)
class AgentSetup:
    """What `goose-config` is told about one agent."""

    agent_id: str
    workspace: str
    coordinator: str
    model: str = DEFAULT_MODEL
    context_limit: int = DEFAULT_CONTEXT_LIMIT
    transport: str = "stdio"  # or "http"
    sidecar_url: str = "http://127.0.0.1:8765/mcp"
    sidecar_command: tuple[str, ...] = ()  # default: this installation's goose-sidecar
    extra_args: tuple[str, ...] = ()  # more `goose-sidecar mcp` flags, e.g. --test-command
    timeout_s: int = 900  # above the sidecar's default test timeout (600 s)
    provider_timeout_s: int = 600
    env: dict[str, str] = field(default_factory=dict)
    # The agent's coordinator API key (a keys-file key, when the coordinator has --keys-file); else a dummy.
    api_key: str = DUMMY_API_KEY
    # The HTTP sidecar's bearer token, when known: goes to secrets.yaml and the env file, never config.yaml.
    sidecar_token: str | None = field(default=None, repr=False)

    @property
    def coordinator_base(self) -> str:
        return self.coordinator.rstrip("/")


def sidecar_command() -> list[str]:
    """How Goose should start this installation's sidecar: the console script, else `python -m sidecar.cli`."""
    beside = Path(sys.executable).with_name("goose-sidecar")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("goose-sidecar")
    return [found] if found else [sys.executable, "-m", "sidecar.cli"]


def sidecar_description() -> str:
    return "Cached, always-current workspace tools (read_file, search, list_dir, run_tests, edits, git)"


def stdio_extension(setup: AgentSetup) -> dict[str, Any]:
    command = list(setup.sidecar_command) or sidecar_command()
    args = [
        *command[1:],
        "mcp",
        "--workspace",
        setup.workspace,
        "--agent-id",
        setup.agent_id,
        "--coordinator",
        setup.coordinator_base,
        *setup.extra_args,
    ]
    return {
        "enabled": True,
        "type": "stdio",
        "name": EXTENSION_NAME,
        "description": sidecar_description(),
        "cmd": command[0],
        "args": args,
        "envs": dict(setup.env),
        "env_keys": [],
        "timeout": setup.timeout_s,
        "available_tools": [],
    }


def http_extension(setup: AgentSetup) -> dict[str, Any]:
    return {
        "enabled": True,
        "type": "streamable_http",
        "name": EXTENSION_NAME,
        "description": sidecar_description(),
        "uri": setup.sidecar_url,
        "headers": {"Authorization": f"Bearer ${{{TOKEN_ENV}}}"},
        "envs": {},
        "env_keys": [TOKEN_ENV],
        "timeout": setup.timeout_s,
        "available_tools": [],
    }


def sidecar_extension(setup: AgentSetup) -> dict[str, Any]:
    return http_extension(setup) if setup.transport == "http" else stdio_extension(setup)


def developer_extension() -> dict[str, Any]:
    return {"enabled": True, "type": "platform", **DEVELOPER, "bundled": True, "available_tools": ["write", "edit"]}


def recipe_extension(entry: dict[str, Any]) -> dict[str, Any]:
    """A recipe lists the same objects as config.yaml, without `enabled`."""
    return {k: v for k, v in entry.items() if k != "enabled"}


def provider_params(setup: AgentSetup) -> dict[str, Any]:
    """Non-secret settings for config.yaml (Goose reads each from the environment first)."""
    return {
        "GOOSE_PROVIDER": "openai",
        "GOOSE_MODEL": setup.model,
        "OPENAI_HOST": setup.coordinator_base,
        "OPENAI_BASE_PATH": "v1/chat/completions",
        "OPENAI_TIMEOUT": setup.provider_timeout_s,
        "GOOSE_CONTEXT_LIMIT": setup.context_limit,
        "GOOSE_DISABLE_SESSION_NAMING": True,
    }


def provider_secrets(setup: AgentSetup) -> dict[str, str]:
    found = {"OPENAI_API_KEY": setup.api_key, "OPENAI_CUSTOM_HEADERS": f"X-Agent-Id={setup.agent_id}"}
    if setup.transport == "http" and setup.sidecar_token:
        found[TOKEN_ENV] = setup.sidecar_token
    return found


def provider_env(setup: AgentSetup, goose_root: str | None = None) -> dict[str, str]:
    """Everything as environment variables, for a headless Goose (`set -a; . goose-sidecar.env`)."""
    env = {key: _env_value(value) for key, value in provider_params(setup).items()}
    env.update(provider_secrets(setup))
    env.update({"GOOSE_MODE": "auto", "GOOSE_DISABLE_KEYRING": "1", "AGENT_ID": setup.agent_id})
    if goose_root:
        env["GOOSE_PATH_ROOT"] = goose_root
    return env


def _env_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def custom_provider(setup: AgentSetup) -> dict[str, Any]:
    """A declarative provider (`custom_providers/goose_sidecar.json`): the coordinator, with the agent's id as
    a static header and no key. `base_url` ends in /v1: Goose then posts to /v1/chat/completions."""
    return {
        "name": PROVIDER_ID,
        "engine": "openai",
        "display_name": "goose-sidecar coordinator",
        "description": f"Shared inference through the goose-sidecar coordinator, as agent {setup.agent_id}",
        "api_key_env": "",
        "base_url": f"{setup.coordinator_base}/v1",
        "models": [{"name": setup.model, "context_limit": setup.context_limit}],
        "headers": {"X-Agent-Id": setup.agent_id},
        "timeout_seconds": setup.provider_timeout_s,
        "supports_streaming": True,
        "requires_auth": False,
        "dynamic_models": False,
    }


RECIPE_INSTRUCTIONS = """\
You are a background coding agent working in {workspace}.
Use the sidecar tools to read (sidecar__read_file), search (sidecar__search), list (sidecar__list_dir) and
test (sidecar__run_tests): their results are cached and always current. Edit with sidecar__edit_file or
write/edit. Run the tests after each change, and stop when they pass."""


def recipe(setup: AgentSetup, max_turns: int = 50) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "title": f"goose-sidecar agent {setup.agent_id}",
        "description": "Headless coding task with the goose-sidecar tools and the coordinator as provider",
        "instructions": RECIPE_INSTRUCTIONS.format(workspace=setup.workspace),
        "prompt": "{{ task }}",
        "parameters": [{"key": "task", "input_type": "string", "requirement": "required", "description": "What to do"}],
        "extensions": [recipe_extension(sidecar_extension(setup)), recipe_extension(developer_extension())],
        "settings": {
            "goose_provider": "openai",
            "goose_model": setup.model,
            "temperature": 0.0,
            "max_turns": max_turns,
        },
    }


def merge_config(text: str, setup: AgentSetup) -> str:
    """The user's config.yaml text with this agent's extensions and provider settings merged in."""
    text = set_map_entry(text, "extensions", EXTENSION_NAME, sidecar_extension(setup))
    text = set_map_entry(text, "extensions", DEVELOPER["name"], developer_extension())
    params = provider_params(setup)
    if _has_top_level(text, "providers"):
        # Goose's newer layout (config/migrations.rs): `active_provider` + `providers.<id>`, no flat keys.
        text = set_top_level(text, "active_provider", "openai")
        text = set_map_entry(text, "providers", "openai", {"enabled": True, "model": setup.model, "configured": True})
        params = {k: v for k, v in params.items() if k not in ("GOOSE_PROVIDER", "GOOSE_MODEL")}
    for key, value in params.items():
        text = set_top_level(text, key, value)
    return text


def merge_secrets(text: str, setup: AgentSetup) -> str:
    for key, value in provider_secrets(setup).items():
        text = set_top_level(text, key, value)
    return text


def _has_top_level(text: str, key: str) -> bool:
    return any(line.split(":", 1)[0].strip().strip("\"'") == key for line in text.splitlines() if line[:1] not in " #-")


def env_file(env: dict[str, str]) -> str:
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())


@dataclass(frozen=True)
class Written:
    config: Path
    secrets: Path | None
    custom_provider: Path
    recipe: Path
    env: Path


def write_goose_config(
    setup: AgentSetup, *, goose_root: Path | None = None, config_file: Path | None = None
) -> Written:
    """Write or merge everything for `setup`: into `GOOSE_PATH_ROOT`'s config dir, or beside `config_file`."""
    if config_file is None:
        if goose_root is None:
            raise ValueError("pass a GOOSE_PATH_ROOT or a config file")
        config_file = goose_root / "config" / "config.yaml"
    config_dir = config_file.parent
    config_dir.mkdir(parents=True, exist_ok=True)
    _write(config_file, merge_config(_read(config_file), setup))
    secrets = None
    if goose_root is not None:
        secrets = config_dir / "secrets.yaml"  # read by Goose when GOOSE_DISABLE_KEYRING is set
        _write(secrets, merge_secrets(_read(secrets), setup), mode=0o600)
    provider = config_dir / "custom_providers" / f"{PROVIDER_ID}.json"
    provider.parent.mkdir(exist_ok=True)
    _write(provider, json.dumps(custom_provider(setup), indent=2) + "\n")
    recipe_path = config_dir / "goose-sidecar-recipe.yaml"
    _write(recipe_path, dump(recipe(setup)))
    env_path = config_dir / "goose-sidecar.env"
    _write(env_path, env_file(provider_env(setup, str(goose_root) if goose_root else None)), mode=0o600)
    return Written(config_file, secrets, provider, recipe_path, env_path)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomically (temp file + rename), so Goose never reads a half-written config."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
