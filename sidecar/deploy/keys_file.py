"""Per-agent API keys for the coordinator: a keys file for N agents (`goose-sidecar deploy keys`).

The file is the coordinator's `--keys-file` format (`sidecar.coordinator.keys`): one `KEY AGENT_ID` line per
agent. Keys are 256 random bits (`secrets.token_urlsafe`), so a key alone identifies its agent and cannot be
guessed from another's. `env_lines` gives the same keys as `AGENT_N_API_KEY=...` lines for compose's `.env`,
which the generated compose file passes to each Goose as `OPENAI_API_KEY`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence

HEADER = "# goose-sidecar API keys: KEY AGENT_ID per line (coordinator --keys-file). Keep this file secret.\n"


def generate_keys(
    agent_ids: Sequence[str], token: Callable[[], str] = lambda: secrets.token_urlsafe(32)
) -> dict[str, str]:
    """agent id -> a fresh key, in the given order; raises ValueError for a repeated id."""
    if len(set(agent_ids)) != len(agent_ids):
        raise ValueError("agent ids must be distinct")
    return {agent: token() for agent in agent_ids}


def keys_file_text(keys: Mapping[str, str]) -> str:
    """The keys file for `keys` (agent id -> key)."""
    return HEADER + "".join(f"{key} {agent}\n" for agent, key in keys.items())


def env_lines(keys: Mapping[str, str], variable: Callable[[str], str]) -> str:
    """`VARIABLE=KEY` lines, one per agent, `variable(agent_id)` naming each."""
    return "".join(f"{variable(agent)}={key}\n" for agent, key in keys.items())
