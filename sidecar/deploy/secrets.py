"""Fresh secrets for a compose fleet, as `.env` lines: `goose-sidecar deploy secrets --agents N >> .env`.

`SIDECAR_<N>_TOKEN` is the bearer token sidecar-N requires and goose-N sends (`sidecar/toolserver/httpauth.py`);
`COORDINATOR_ADMIN_TOKEN` guards the coordinator's `/status`, `/metrics` and `/dashboard`. Each is 32 random bytes
(`secrets.token_urlsafe`), so nothing needs quoting in a `.env` file. The compose file only refers to them
(`${SIDECAR_1_TOKEN:-}`), so the committed file holds no secret and a fleet without `.env` fails closed.
"""

from __future__ import annotations

import secrets

ADMIN_TOKEN_VAR = "COORDINATOR_ADMIN_TOKEN"


def sidecar_token_var(n: int) -> str:
    return f"SIDECAR_{n}_TOKEN"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def env_lines(agents: int) -> str:
    """`.env` text with a new admin token and one new sidecar token per agent (1..agents)."""
    if agents < 1:
        raise ValueError("agents must be at least 1")
    lines = [f"{ADMIN_TOKEN_VAR}={new_token()}"]
    lines += [f"{sidecar_token_var(n)}={new_token()}" for n in range(1, agents + 1)]
    return "\n".join(lines) + "\n"
