"""Which agent a Goose session id belongs to, so one agent cannot move another through the session id.

A session id travels in the clear (Goose's `agent-session-id` header, the sidecar's events), so any agent can
claim another's. The first agent to report a session from its sidecar owns it; afterwards:

- an event on another agent's path that carries it does not touch that session (its stage, its peek URL);
- a call identified as an agent (key, header, body or path) reads the session's stage or peek URL only when it
  owns the session. A call identified by nothing but its session id (no agent id at all) still joins by it: it
  has no other identity to check, and with API keys on every call has one.

Bounded: the oldest session is forgotten first (`MAX_SESSIONS`), which only ever makes a session claimable again.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_SESSIONS = 20_000


class SessionOwners:
    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._owner: OrderedDict[str, str] = OrderedDict()
        self.max_sessions = max_sessions
        self.refused = 0  # claims of a session another agent owns

    def claim(self, session: str | None, agent: str) -> bool:
        """`agent` reports `session`: True when the session is (now) its own, False when another agent owns it."""
        if not session:
            return False
        owner = self._owner.get(session)
        if owner is not None and owner != agent:
            self.refused += 1
            return False
        self._owner[session] = agent
        self._owner.move_to_end(session)
        while len(self._owner) > self.max_sessions:
            self._owner.popitem(last=False)
        return True

    def usable(self, session: str | None, agent: str) -> bool:
        """Whether a call by `agent` may use what was reported under `session` (see the module docstring)."""
        if not session:
            return False
        owner = self._owner.get(session)
        return owner is None or owner == agent or agent == session

    def owner(self, session: str) -> str | None:
        return self._owner.get(session)
