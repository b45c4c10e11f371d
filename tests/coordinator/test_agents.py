"""The `AgentBook`: every per-agent and per-session record in one place with one bound, through a real
coordinator (calls, tool events with peek URLs and counters, sessions), and its table-level rules."""

from __future__ import annotations

import httpx

from sidecar.coordinator.agents import AgentBook
from sidecar.coordinator.app import build_app
from sidecar.core.priority import ReportedStage
from sidecar.core.stages import Stage
from sidecar.serving import serve_app
from tests.coordinator.conftest import make_config
from tests.coordinator.scripted_upstream import MODEL, Upstream

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "fix the failing test"}], "stream": True}
BOUND = 12
AGENTS = 60  # five times the bound


def event(session: str, n: int) -> dict[str, object]:
    return {
        "session_id": session,
        "seq": 1,
        "tool": "read_file",
        "ok": True,
        "paths": ["pkg/calc.py"],
        "cached": n % 2 == 0,
        "peek_url": f"http://sidecar-{n}:8765/peek",
        "speculation": {"test_runs_started": 1},
    }


async def test_the_book_stays_bounded_with_many_agent_ids() -> None:
    upstream = Upstream()
    book = AgentBook(max_agents=BOUND, max_sessions=BOUND)
    async with serve_app(upstream.app()) as upstream_url:
        app = build_app(make_config(upstream_url, {"policy": "kv"}), book=book)  # kv: its ledger forgets too
        state = app.state.coordinator
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            for n in range(AGENTS):
                agent, session = f"agent-{n}", f"sess-{n}"
                answer = await client.post(f"/v1/agents/{agent}/events", json=event(session, n))
                assert answer.status_code == 200 and answer.json()["stage"] == "explore"
                headers = {"x-agent-id": agent, "agent-session-id": session}
                response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
                assert response.status_code == 200
            status = (await client.get("/status")).json()
    assert len(book) == BOUND and book.sessions_known == BOUND
    assert [a["agent_id"] for a in status["agents"]] == [f"agent-{n}" for n in reversed(range(AGENTS - BOUND, AGENTS))]
    assert status["totals"]["agents"] == BOUND and status["totals"]["requests"] == AGENTS
    assert len(book.peek_urls()) <= 2 * BOUND and len(book.sidecar_reports()) == BOUND
    assert status["speculation"]["sidecars_known"] == BOUND  # the agents' own and their sessions' are the same
    for dispatcher in state.dispatchers.values():  # attained service (and the KV ledger) forgotten with the agent
        assert set(dispatcher.service.entries) <= {f"agent-{n}" for n in range(AGENTS - BOUND, AGENTS)}
        assert dispatcher.kv_ledger is not None  # the kv policy keeps one
        assert set(dispatcher.kv_ledger.snapshot()) <= {f"agent-{n}" for n in range(AGENTS - BOUND, AGENTS)}
    newest = book.get(f"agent-{AGENTS - 1}")
    assert newest is not None and newest.requests == 1 and newest.events == 1 and newest.real_calls == 1
    assert newest.cache.tool_calls == 1 and newest.stage == "explore" and newest.usage["default"].calls == 1
    assert book.get("agent-0") is None and book.owner("sess-0") is None


def test_an_agent_with_a_call_in_flight_is_never_forgotten() -> None:
    book = AgentBook(max_agents=2)
    forgotten: list[str] = []
    book.on_forget.append(forgotten.append)
    book.agent("busy", 0.0).in_flight = 1
    book.agent("a", 1.0)
    book.agent("b", 2.0)  # over the bound: the oldest idle one goes, not the busy one
    assert "busy" in book and "a" not in book and forgotten == ["a"]
    book.agent("busy", 3.0).in_flight = 1
    book.agent("b", 4.0).in_flight = 1
    book.agent("c", 5.0).in_flight = 1
    assert len(book) == 3  # every one in flight: the calls bound it until one ends
    book.agent("c", 6.0).in_flight = 0
    book.agent("d", 7.0)
    assert "c" not in book and len(book) == 3


def test_session_stages_and_peek_urls_follow_ownership() -> None:
    book = AgentBook()
    assert book.claim("s", "owner") and not book.claim("s", "intruder")
    book.report_stage("owner", "s", ReportedStage(Stage.CODE_EDIT, 1.0), 1.0)
    book.report_stage("intruder", "s", ReportedStage(Stage.EXPLORE, 2.0), 2.0)  # its own stage only
    assert book.latest_stage("s", "s") == ReportedStage(Stage.CODE_EDIT, 1.0)  # identified only by the session
    assert book.latest_stage("intruder", "s") == ReportedStage(Stage.EXPLORE, 2.0)
    book.note_peek_url("owner", "s", "http://owner/peek", 3.0)
    assert book.peek_url("nobody", "s") is None  # not its session: its calls neither peek nor start tools there
    assert book.peek_url("s", "s") == "http://owner/peek"
