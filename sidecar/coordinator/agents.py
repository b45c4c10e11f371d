"""Everything the coordinator keeps per agent and per Goose session, in one book with one bound.

`AgentBook` (one per app) holds an `AgentEntry` per agent id: what /status shows of it (requests, tokens, stage,
queue state), its tool-cache counters (the dashboard), its usage account (ledger.py), what its sidecar said
(stage, `/peek` URL, speculation counters, the answer whose tool calls it was asked to start early) and how many
real chat calls it made (speculation's "too late"). And a `SessionEntry` per session id: its owner, the stage
and `/peek` URL reported under it.

Bounded: at most `max_agents` agents and `max_sessions` sessions, the least recently seen forgotten first. An
agent with a call in flight is never forgotten (the oldest idle one goes instead), so the book can exceed its
bound only by the calls in flight, which the dispatchers' queues bound. Per-agent state kept elsewhere (each
dispatcher's attained service) is dropped with the agent: `on_forget` callbacks run with its id.

Session ownership (a session id travels in the clear, in Goose's `agent-session-id` header and the sidecar's
events, so any agent can claim another's): the first agent to report a session from its sidecar owns it.
Afterwards an event on another agent's path that carries it does not touch that session (its stage, its peek
URL), and a call identified as an agent reads the session's stage or peek URL only when it owns the session. A
call identified by nothing but its session id (no agent id at all) still joins by it: it has no other identity
to check, and with API keys on every call has one. Forgetting a session only ever makes it claimable again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sidecar.core.priority import ReportedStage

if TYPE_CHECKING:
    from sidecar.coordinator.dashboard import ModelUsage

MAX_AGENTS = 10_000
MAX_SESSIONS = 20_000
MAX_SESSIONS_PER_AGENT = 8


@dataclass
class ToolCache:
    """An agent's tool calls as its sidecar reported them, for the dashboard's hit rate."""

    tool_calls: int = 0
    cacheable_calls: int = 0
    cache_hits: int = 0


@dataclass
class AgentEntry:
    agent_id: str
    first_seen: float
    last_seen: float
    sessions: list[str] = field(default_factory=list)
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_model: str | None = None
    stage: str | None = None
    tier: str | None = None
    queued_since: float | None = None  # monotonic time it started waiting for a slot; None when not waiting
    last_wait_s: float = 0.0
    events: int = 0
    cache: ToolCache = field(default_factory=ToolCache)
    usage: dict[str, ModelUsage] = field(default_factory=dict)  # its answers' tokens per model alias (ledger.py)
    reported: ReportedStage | None = None  # the stage its sidecar reported last
    peek_url: str | None = None  # where its sidecar answers POST /peek
    sidecar_counters: dict[str, float] | None = None  # its sidecar's latest speculation counters
    real_calls: int = 0  # real chat calls seen (speculation: a late prediction is worthless)
    open_answer: tuple[str, str] | None = None  # (its sidecar's /early URL, answer id) with early starts sent

    def add_session(self, session_id: str | None) -> None:
        if session_id and session_id not in self.sessions:
            self.sessions.append(session_id)
            del self.sessions[:-MAX_SESSIONS_PER_AGENT]


@dataclass
class SessionEntry:
    owner: str  # the agent whose sidecar reported it first
    reported: ReportedStage | None = None
    peek_url: str | None = None


class AgentBook:
    """Per-agent and per-session state, bounded (see the module docstring)."""

    def __init__(self, max_agents: int = MAX_AGENTS, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_agents = max_agents
        self.max_sessions = max_sessions
        self._agents: OrderedDict[str, AgentEntry] = OrderedDict()
        self._sessions: OrderedDict[str, SessionEntry] = OrderedDict()
        self.on_forget: list[Callable[[str], None]] = []
        self.refused_sessions = 0  # claims of a session another agent owns

    # --- agents ----------------------------------------------------------------------------------------------

    def agent(self, agent_id: str, now: float) -> AgentEntry:
        """The agent's entry, created if new; either way it becomes the most recently seen."""
        entry = self._agents.get(agent_id)
        if entry is not None:
            entry.last_seen = now
            self._agents.move_to_end(agent_id)
            return entry
        entry = self._agents[agent_id] = AgentEntry(agent_id, first_seen=now, last_seen=now)
        self._evict_agents(keep=agent_id)
        return entry

    def get(self, agent_id: str) -> AgentEntry | None:
        """The agent's entry without touching it, or None."""
        return self._agents.get(agent_id)

    def __len__(self) -> int:
        return len(self._agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def recent_first(self) -> Iterator[AgentEntry]:
        return reversed(self._agents.values())

    def entries(self) -> Iterator[AgentEntry]:
        return iter(self._agents.values())

    def _evict_agents(self, keep: str) -> None:
        """Forget the least recently seen idle agents past the bound (never `keep`, the one just added)."""
        while len(self._agents) > self.max_agents:
            idle = next((a for a in self._agents.values() if not a.in_flight and a.agent_id != keep), None)
            if idle is None:
                return  # every one has a call in flight: the calls bound it
            del self._agents[idle.agent_id]
            for forget in self.on_forget:
                forget(idle.agent_id)

    # --- sessions --------------------------------------------------------------------------------------------

    def claim(self, session: str | None, agent: str) -> bool:
        """`agent`'s sidecar reports `session`: True when the session is (now) its own, False when another agent
        owns it (or there is no session)."""
        if not session:
            return False
        entry = self._sessions.get(session)
        if entry is not None and entry.owner != agent:
            self.refused_sessions += 1
            return False
        if entry is None:
            entry = self._sessions[session] = SessionEntry(agent)
        self._sessions.move_to_end(session)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return True

    def usable(self, session: str | None, agent: str) -> bool:
        """Whether a call by `agent` may use what was reported under `session` (see the module docstring)."""
        if not session:
            return False
        entry = self._sessions.get(session)
        return entry is None or entry.owner == agent or agent == session

    def owner(self, session: str) -> str | None:
        entry = self._sessions.get(session)
        return None if entry is None else entry.owner

    def session(self, session: str | None) -> SessionEntry | None:
        return self._sessions.get(session) if session else None

    @property
    def sessions_known(self) -> int:
        return len(self._sessions)

    # --- what the sidecars reported --------------------------------------------------------------------------

    def report_stage(self, agent_id: str, session: str | None, reported: ReportedStage, now: float) -> None:
        """A stage the agent's sidecar reported; also the session's when `session` is the agent's own (claimed)."""
        self.agent(agent_id, now).reported = reported
        entry = self.session(session)
        if entry is not None and entry.owner == agent_id:
            entry.reported = reported

    def latest_stage(self, agent_id: str, session: str | None) -> ReportedStage | None:
        """The most recent stage reported for the agent, or for its session when it may use it."""
        agent = self._agents.get(agent_id)
        found = [agent.reported if agent is not None else None]
        if self.usable(session, agent_id):  # never another agent's session
            entry = self.session(session)
            found.append(entry.reported if entry is not None else None)
        present = [r for r in found if r is not None]
        return max(present, key=lambda r: r.at) if present else None

    def note_peek_url(self, agent_id: str, session: str | None, url: str, now: float) -> None:
        """The agent's sidecar (and its own session's, when given) answers peeks at `url`; the latest wins."""
        self.agent(agent_id, now).peek_url = url
        entry = self.session(session)
        if entry is not None and entry.owner == agent_id:
            entry.peek_url = url

    def peek_url(self, agent_id: str, session: str | None) -> str | None:
        """The agent's sidecar's peek URL, else its session's, only if it may use that session: a call naming
        another agent's session must not make that agent's sidecar peek or start tools (streaming tool execution
        included)."""
        agent = self._agents.get(agent_id)
        if agent is not None and agent.peek_url:
            return agent.peek_url
        if not self.usable(session, agent_id):
            return None
        entry = self.session(session)
        return None if entry is None else entry.peek_url

    def peek_urls(self) -> set[str]:
        """Every sidecar peek URL known (agents' and sessions')."""
        urls = {a.peek_url for a in self._agents.values() if a.peek_url}
        return urls | {s.peek_url for s in self._sessions.values() if s.peek_url}

    def sidecar_reports(self) -> dict[str, dict[str, float]]:
        """agent -> its sidecar's latest speculation counters, for every agent whose sidecar sent them."""
        return {a.agent_id: a.sidecar_counters for a in self._agents.values() if a.sidecar_counters is not None}
