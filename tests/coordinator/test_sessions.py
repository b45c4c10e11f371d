"""Session ids are bound to the agent whose sidecar reported them first: over HTTP, with API keys on (the
issue's setting) and off, another agent can neither move a session's stage nor replace its peek URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.coordinator.agents import AgentBook
from sidecar.core.stages import Stage
from tests.coordinator.conftest import stack

KEY_A = "key-of-agent-a-0123456789"
KEY_B = "key-of-agent-b-0123456789"


def event(tool: str, session: str, **extra: Any) -> dict[str, Any]:
    return {"session_id": session, "seq": 1, "tool": tool, "ok": True, "paths": ["pkg/calc.py"], **extra}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"{KEY_A} agent-a\n{KEY_B} agent-b\n")
    return path


@pytest.mark.parametrize("locked", [True, False])
async def test_another_agent_cannot_move_a_session(keys: Path, locked: bool) -> None:
    options: dict[str, Any] = {"keys_file": str(keys)} if locked else {}
    async with stack(**options) as st:
        auth_a = {"Authorization": f"Bearer {KEY_A}"} if locked else {}
        auth_b = {"Authorization": f"Bearer {KEY_B}"} if locked else {}
        b_url = "http://sidecar-b:8765/peek?key=b"
        answer = await st.client.post(
            "/v1/agents/agent-b/events", json=event("edit_file", "sess-b", peek_url=b_url), headers=auth_b
        )
        assert answer.json()["tier"] == "hot"
        # Agent A, on its own path (with its own key), claims B's session: reads, and a peek URL of its own.
        forged = event("read_file", "sess-b", peek_url="http://sidecar-a:8765/peek?key=a")
        answer = await st.client.post("/v1/agents/agent-a/events", json=forged, headers=auth_a)
        assert answer.status_code == 200 and answer.json()["stage"] == "explore"  # A's own stage moved
        book = st.state.book
        # B's calls (by key or header plus session id) still see B's stage; B's tool results still come from B.
        seen = book.latest_stage("agent-b", "sess-b")
        assert seen is not None and seen.stage == Stage.CODE_EDIT
        session = book.session("sess-b")
        assert session is not None and session.peek_url == b_url and book.peek_url("agent-b", None) == b_url
        assert book.peek_url("sess-b", "sess-b") == b_url  # a call identified only by the session finds B's
        # A's call carrying B's session id reads A's stage, not B's.
        seen = book.latest_stage("agent-a", "sess-b")
        assert seen is not None and seen.stage == Stage.EXPLORE
        assert book.owner("sess-b") == "agent-b" and book.refused_sessions == 1


async def test_the_owner_keeps_joining_its_session() -> None:
    """The ordinary flow still joins: B's sidecar reports a session, a call identified only by it finds B's stage."""
    async with stack() as st:
        await st.client.post("/v1/agents/agent-b/events", json=event("edit_file", "sess-b"))
        await st.client.post("/v1/agents/agent-b/events", json=event("run_tests", "sess-b"))
        seen = st.state.book.latest_stage("sess-b", "sess-b")
        assert seen is not None


def test_session_owners_table() -> None:
    owners = AgentBook(max_sessions=3)
    assert owners.claim("s1", "a") and owners.claim("s1", "a")
    assert not owners.claim("s1", "b") and owners.refused_sessions == 1
    assert not owners.claim(None, "a") and not owners.claim("", "a")
    assert owners.usable("s1", "a") and not owners.usable("s1", "b")
    assert owners.usable("s1", "s1")  # a call identified only by its session id
    assert owners.usable("unknown", "b")  # nobody reported it: nothing of anyone's to protect
    assert not owners.usable(None, "a")
    for n in range(2, 6):
        owners.claim(f"s{n}", "x")
    assert owners.owner("s1") is None  # bounded: the oldest is forgotten (and claimable again)
    assert owners.claim("s1", "b")
