"""API keys: a file mapping key -> agent id. Lines `KEY AGENT_ID` (blank lines and `#` comments ignored),
or a JSON object {"key": "agent-id"}. Loaded once at start-up; a malformed file is a start-up error."""

from __future__ import annotations

import json
from pathlib import Path

from sidecar.core.identity import valid_agent_id


class KeysFileError(ValueError):
    pass


def load_keys(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeysFileError(f"cannot read keys file {path}: {exc}") from None
    keys: dict[str, str] = {}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeysFileError(f"{path}: not valid JSON: {exc}") from None
        pairs = [(str(k), str(v)) for k, v in data.items()]
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise KeysFileError(f"{path}:{number}: expected 'KEY AGENT_ID'")
            pairs.append((parts[0], parts[1]))
    for key, agent in pairs:
        if len(key) < 16:
            raise KeysFileError(f"{path}: key for {agent!r} is shorter than 16 characters")
        if not valid_agent_id(agent):
            raise KeysFileError(f"{path}: {agent!r} is not a valid agent id")
        keys[key] = agent
    return keys


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
