"""Named scenario files: a `<name>.toml` found in folders searched in order (or a `.toml` path), read and
validated into a settings model, every problem raised as one ConfigError.

Shared by the fleet benchmark's scenarios (`sidecar.fleet.scenario`) and the fleet simulation's
(`sidecar.bench.fleetsim.scenario`), which differ only in their folders and their model.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from sidecar.config import ConfigError

M = TypeVar("M", bound=BaseModel)


def scenario_path(name: str, folders: Sequence[Path]) -> Path:
    """`name` itself when it ends in `.toml`; else `<name>.toml` in the first of `folders` that has it (the last
    folder's, existing or not, when none has)."""
    if Path(name).suffix == ".toml":
        return Path(name)
    for folder in folders:
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    return folders[-1] / f"{name}.toml"


def available_scenarios(folders: Sequence[Path]) -> list[str]:
    """The names of every `.toml` in `folders`, sorted, each once."""
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.toml")})


def load_scenario_file(name: str, folders: Sequence[Path], model: type[M], what: str = "scenario") -> M:
    """The scenario `name` (or a `.toml` path) as `model`; `name` defaults to the file's stem and `source` is its
    path. Raises ConfigError: an unknown name (listing the available ones), an unreadable file, or every field
    problem at once, each naming the file."""
    path = scenario_path(name, folders)
    if not path.is_file() and Path(name).suffix != ".toml":
        names = ", ".join(available_scenarios(folders))
        raise ConfigError([f"no {what} {name!r}; available: {names} (or a .toml path)"])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{what} {name!r}: {exc}"]) from None
    raw.setdefault("name", path.stem)
    raw["source"] = str(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
