"""`POST /v1/agents/{agent_id}/events`: a sidecar's report of one tool call -> the agent's stage and tier.

The event's shape is the shared contract `core.wire.ToolEvent` (the sidecar builds it from the same type).
Answers `{stage, tier}` (both null until the agent has a stage), 400 for an event that breaks the contract
(every problem named), 401/403 for a missing or another agent's API key, 413 past 64 KiB.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sidecar.coordinator.errors import error_body
from sidecar.coordinator.guard import EVENTS_MAX_BYTES, BodyTooLarge, read_body
from sidecar.coordinator.keys import bearer_token
from sidecar.coordinator.state import CoordinatorState
from sidecar.core.identity import valid_agent_id
from sidecar.core.priority import ReportedStage
from sidecar.core.speculation import sidecar_counters
from sidecar.core.stages import DEFAULT_TIER
from sidecar.core.toolactions import stage_from_tool_event
from sidecar.core.wire import EventError, ToolEvent, parse_tool_event

MAX_PEEK_URL = 512


async def handle_event(state: CoordinatorState, request: Request) -> Response:
    """Authorise, read and parse one event, then record it (`record_event`)."""
    agent_id = request.path_params["agent_id"]
    if denied := _denied(state, request, agent_id):
        return denied
    if not valid_agent_id(agent_id):
        return _error(400, "agent id in the path is not valid")
    try:
        event = parse_tool_event(await read_body(request, EVENTS_MAX_BYTES))
    except BodyTooLarge:
        return _error(413, "an event is at most 64 KiB")
    except EventError as exc:
        return _error(400, f"invalid event: {exc}")
    return JSONResponse(record_event(state, agent_id, event, time.monotonic()))


def record_event(state: CoordinatorState, agent_id: str, event: ToolEvent, now: float) -> dict[str, str | None]:
    """The event's effects: the stage it reports (the agent's, and its session's when the agent owns it), the
    sidecar's peek URL and counters, the dashboard's tool counters. Returns the agent's current stage and tier."""
    book = state.book
    # A session another agent's sidecar reported first is not this agent's to move (agents.py).
    own_session = book.claim(event.session_id, agent_id)
    session = event.session_id if own_session else None
    stage = stage_from_tool_event(event.tool, event.ok, event.exit_code, event.paths, event.command)
    if stage is not None:
        book.report_stage(agent_id, session, ReportedStage(stage, now), now)
    agent = book.agent(agent_id, now)
    state.board.tool_event(agent.cache, event.tool, event.cached, event.duration_ms)
    peek = event.peek_url
    if peek and len(peek) <= MAX_PEEK_URL and peek.startswith(("http://", "https://")):
        book.note_peek_url(agent_id, session, peek, now)
    if event.speculation is not None:
        agent.sidecar_counters = sidecar_counters(event.speculation)
    current = book.latest_stage(agent_id, event.session_id)
    tier = None if current is None else str(state.planner.stage_tiers.get(current.stage, DEFAULT_TIER))
    state.telemetry.event_reported(agent, event.session_id, None if current is None else str(current.stage), tier)
    return {"stage": agent.stage, "tier": agent.tier}


def _denied(state: CoordinatorState, request: Request, agent_id: str) -> Response | None:
    """With API keys on: None only for the key of the agent in the path."""
    if not state.keys:
        return None
    key_agent = state.keys.get(bearer_token(request.headers.get("authorization")) or "")
    if key_agent is None:
        return _error(401, "a valid API key is required (Authorization: Bearer KEY)")
    if key_agent != agent_id:
        return _error(403, f"this API key belongs to agent {key_agent!r}; it cannot report for {agent_id!r}")
    return None


def _error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json")
