"""Who sent a call: resolve the agent identity from what the request carries.

Precedence (DESIGN.md): body `agent_id`; header `X-Agent-Id`; path `/agents/{id}/...`; the API key (keys file
maps key -> agent); Goose's `agent-session-id` header; else `anonymous`. The session id (Goose's header) is
kept beside the agent id so a sidecar's reports, which carry the same session id, join the agent's calls.

When the caller authenticated with a key, the key decides who it is: a different claimed id is refused
(`IdentityConflict`), so one agent cannot act as another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

ANONYMOUS = "anonymous"
MAX_ID_LENGTH = 128
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")


class IdentitySource(StrEnum):
    BODY = "body"
    HEADER = "header"
    PATH = "path"
    KEY = "key"
    SESSION = "session"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Identity:
    agent_id: str
    source: IdentitySource
    session_id: str | None = None


class IdentityConflict(ValueError):
    """The request claims an identity its API key does not grant, or an id that is not well formed."""


def valid_agent_id(value: str) -> bool:
    """Ids are 1-128 printable characters from [A-Za-z0-9._:@/-], starting alphanumeric (safe in paths and logs)."""
    return 0 < len(value) <= MAX_ID_LENGTH and _VALID_ID.match(value) is not None


def resolve_identity(
    *,
    body_agent_id: str | None = None,
    header_agent_id: str | None = None,
    path_agent_id: str | None = None,
    key_agent_id: str | None = None,
    session_id: str | None = None,
) -> Identity:
    """First present wins; with a key, every claimed id must equal the key's agent."""
    claims = [
        (IdentitySource.BODY, body_agent_id),
        (IdentitySource.HEADER, header_agent_id),
        (IdentitySource.PATH, path_agent_id),
    ]
    session = session_id.strip() if session_id and session_id.strip() else None
    present = [(source, value.strip()) for source, value in claims if value is not None and value.strip()]
    for source, value in present:
        if not valid_agent_id(value):
            raise IdentityConflict(f"agent id from {source} is not valid: {value[:40]!r}")
    if key_agent_id is not None:
        for _source, value in present:
            if value != key_agent_id:
                raise IdentityConflict(f"this API key belongs to agent {key_agent_id!r}; it cannot act as {value!r}")
        return Identity(key_agent_id, IdentitySource.KEY, session)
    if present:
        source, value = present[0]
        return Identity(value, source, session)
    if session is not None and valid_agent_id(session):
        return Identity(session, IdentitySource.SESSION, session)
    return Identity(ANONYMOUS, IdentitySource.ANONYMOUS, session)
