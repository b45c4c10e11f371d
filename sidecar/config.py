"""Configuration: one TOML file, then `GOOSE_SIDECAR_*` environment variables, then command-line flags.

Precedence (later wins): built-in defaults < the TOML file < environment < flags.

- The file is `--config PATH`, else `$GOOSE_SIDECAR_CONFIG`, else none. A path given must exist. Nothing is
  read from the current directory: the sidecar runs in a workspace whose files belong to the repository (and to
  the model, through `write_file`), so a `goose-sidecar.toml` there could widen the command allowlist or open an
  HTTP listener at the next start. Configuration comes only from where the operator pointed.
- Environment: `GOOSE_SIDECAR_<SECTION>_<FIELD>` sets `[section] field`, e.g. `GOOSE_SIDECAR_COORDINATOR_PORT=9000`.
  Lists take JSON or comma-separated values, maps JSON or `k=v,k2=v2`. `GOOSE_SIDECAR_UPSTREAM=URL` is a shortcut
  for one upstream serving every model (like `up --upstream URL`).
- Flags: a command declares a flag with `dest="section.field"`; only flags the user actually gave override.

Validation runs once at start-up and reports every problem at once (`ConfigError.problems`).
Each section's model lives beside the code that uses it; this module only assembles them.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sidecar.coordinator.settings import (
    CoordinatorSettings,
    ModelUpstream,
    RoutingSettings,
    SchedulingSettings,
    SpeculationSettings,
)
from sidecar.sim.settings import SimSettings
from sidecar.toolserver.settings import SidecarSettings

ENV_PREFIX = "GOOSE_SIDECAR_"
DEFAULT_FILE = "goose-sidecar.toml"


class LogSettings(BaseModel):
    """`[log]`: where log lines go (always stderr, so stdio MCP keeps stdout) and how they look."""

    model_config = ConfigDict(extra="forbid")
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto = readable console on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"


class Config(BaseModel):
    """The whole configuration. Sections are optional in the file; every field has a default."""

    model_config = ConfigDict(extra="forbid")
    log: LogSettings = Field(default_factory=lambda: LogSettings())
    coordinator: CoordinatorSettings = Field(default_factory=lambda: CoordinatorSettings())
    # Model alias -> upstream. Empty means "embed the simulator" for `up`.
    models: dict[str, ModelUpstream] = Field(default_factory=dict)
    scheduling: SchedulingSettings = Field(default_factory=lambda: SchedulingSettings())
    routing: RoutingSettings = Field(default_factory=lambda: RoutingSettings())
    speculation: SpeculationSettings = Field(default_factory=lambda: SpeculationSettings())
    sim: SimSettings = Field(default_factory=lambda: SimSettings())
    sidecar: SidecarSettings = Field(default_factory=lambda: SidecarSettings())


class ConfigError(Exception):
    """Invalid configuration; `problems` lists every one found, each naming where it came from."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from file, environment and flag overrides (dotted keys), or raise ConfigError."""
    env = os.environ if env is None else env
    problems: list[str] = []
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}

    file = _find_file(path, env, problems)
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
            for key in _leaf_keys(raw):
                origin[key] = str(file)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{file}: {exc}")

    for key, value in _env_overrides(env, problems).items():
        _set_dotted(raw, key, value)
        origin[key] = _env_name(key)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
        origin[key] = "--" + key.split(".")[-1].replace("_", "-")

    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            where = _origin_of(key, origin)
            got = "" if err["type"] == "missing" else f" (got {err['input']!r})"
            problems.append(f"{key}: {err['msg']}{got}" + (f" [from {where}]" if where else ""))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _find_file(path: str | Path | None, env: Mapping[str, str], problems: list[str]) -> Path | None:
    explicit = path if path is not None else env.get(ENV_PREFIX + "CONFIG")
    if explicit:
        candidate = Path(explicit).expanduser()
        if not candidate.is_file():
            problems.append(f"config file {candidate} does not exist")
            return None
        return candidate
    return None


def ignored_file_note(path: str | Path | None, env: Mapping[str, str] | None = None) -> str | None:
    """A note for the operator when `./goose-sidecar.toml` exists but is not read (no --config given)."""
    env = os.environ if env is None else env
    if path is None and not env.get(ENV_PREFIX + "CONFIG") and Path(DEFAULT_FILE).is_file():
        return (
            f"./{DEFAULT_FILE} is not read (configuration comes only from --config or ${ENV_PREFIX}CONFIG, never "
            f"from the current directory); pass --config {DEFAULT_FILE} if you meant it"
        )
    return None


def _section_fields() -> dict[str, type[BaseModel]]:
    sections: dict[str, type[BaseModel]] = {}
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections[name] = annotation
    return sections


def _env_overrides(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """Map GOOSE_SIDECAR_* variables to dotted keys; unknown names are problems, not silently ignored."""
    sections = _section_fields()
    found: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest == "upstream":
            found["models"] = {"default": {"replicas": [value]}}
            continue
        if rest == "models":
            found["models"] = _parse_env_value(value, dict[str, Any])
            continue
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        field_name = rest[len(section) + 1 :] if section else ""
        if section is None or field_name not in sections[section].model_fields:
            problems.append(
                f"{name}: no such setting (expected {ENV_PREFIX}<SECTION>_<FIELD>, e.g. {ENV_PREFIX}COORDINATOR_PORT)"
            )
            continue
        annotation = sections[section].model_fields[field_name].annotation
        found[f"{section}.{field_name}"] = _parse_env_value(value, annotation)
    return found


def _parse_env_value(value: str, annotation: Any) -> Any:
    """Strings stay strings (pydantic coerces '8080' and 'true'); lists and maps accept JSON or a short form."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            origin = typing.get_origin(args[0]) or args[0]
    stripped = value.strip()
    if origin in (list, dict) and stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value  # pydantic reports the type mismatch with the raw text
    if origin is list:
        return [item.strip() for item in stripped.split(",") if item.strip()]
    if origin is dict:
        pairs = (item.split("=", 1) for item in stripped.split(",") if item.strip())
        return {k.strip(): v.strip() for k, v in (p if len(p) == 2 else (p[0], "") for p in pairs)}
    return value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _leaf_keys(raw: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in raw.items():
        key = f"{prefix}{k}"
        keys.extend(_leaf_keys(v, key + ".") if isinstance(v, Mapping) else [key])
    return keys


def _env_name(key: str) -> str:
    if key == "models":
        return ENV_PREFIX + "UPSTREAM/MODELS"
    return ENV_PREFIX + key.replace(".", "_").upper()


def _origin_of(key: str, origin: Mapping[str, str]) -> str:
    while key:
        if key in origin:
            return origin[key]
        key = key.rpartition(".")[0]
    return ""


def with_overrides(base: Config, overrides: Mapping[str, Any]) -> Config:
    """`base` with dotted-key overrides applied and validated; raises ConfigError listing every problem."""
    raw = base.model_dump(mode="python", exclude_unset=True)
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return Config.model_validate(raw)
    except Exception as exc:  # pydantic's ValidationError, reported like load_config does
        errors = getattr(exc, "errors", None)
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors()] if errors else [str(exc)]
        raise ConfigError(problems) from None
